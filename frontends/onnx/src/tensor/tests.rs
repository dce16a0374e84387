//! Protos are built with `prost`, encoded, and decoded again through the public entry
//! point, so the wire format is exercised as well as the conversion.

use prost::Message;
use weft_ir::{DType, round_to};

use super::*;
use crate::proto::StringStringEntryProto;

fn proto(name: &str, data_type: DataType, dims: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: data_type as i32,
        dims: dims.to_vec(),
        ..TensorProto::default()
    }
}

fn decode(p: &TensorProto) -> Result<(String, Tensor), OnnxTensorError> {
    decode_tensor_proto(&p.encode_to_vec())
}

fn ok(p: &TensorProto) -> Tensor {
    let (name, t) = decode(p).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(name, p.name);
    t
}

fn err(p: &TensorProto) -> String {
    match decode(p) {
        Ok((_, t)) => panic!("expected an error, got {t:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn float_from_typed_field_and_raw_data() {
    let values = [1.5f32, -2.25, 0.0, f32::MAX, 1e-40, -0.0];
    let mut p = proto("x", DataType::Float, &[2, 3]);
    p.float_data = values.to_vec();
    let t = ok(&p);
    assert_eq!((t.dtype(), t.shape()), (DType::F32, &[2usize, 3][..]));
    assert_eq!(t.as_f32(), Some(&values[..]));

    let mut p = proto("x", DataType::Float, &[2, 3]);
    p.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(ok(&p).as_f32(), Some(&values[..]));
}

#[test]
fn double_is_read_as_f32() {
    let values = [0.1f64, -3.0, 1e300];
    let want: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    let mut p = proto("d", DataType::Double, &[3]);
    p.double_data = values.to_vec();
    let t = ok(&p);
    assert_eq!(t.dtype(), DType::F32);
    assert_eq!(t.as_f32(), Some(&want[..]));
    assert_eq!(want[2], f32::INFINITY);

    let mut p = proto("d", DataType::Double, &[3]);
    p.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(ok(&p).as_f32(), Some(&want[..]));
}

#[test]
fn half_floats_from_int32_bits_and_raw_data() {
    let values = [1.0f32, -2.5, 65504.0, 6.1035156e-5, 0.0];
    let f16_bits: Vec<u16> = values
        .iter()
        .map(|&v| half::f16::from_f32(v).to_bits())
        .collect();
    let mut p = proto("h", DataType::Float16, &[5]);
    p.int32_data = f16_bits.iter().map(|&b| i32::from(b)).collect();
    let t = ok(&p);
    assert_eq!(t.dtype(), DType::F16);
    assert_eq!(t.as_f32(), Some(&values[..]));
    // Writers that sign-extend (bits as i16) give the same values: only the low 16 bits count.
    p.int32_data = f16_bits.iter().map(|&b| i32::from(b as i16)).collect();
    assert_eq!(ok(&p).as_f32(), Some(&values[..]));
    p.int32_data.clear();
    p.raw_data = f16_bits.iter().flat_map(|b| b.to_le_bytes()).collect();
    assert_eq!(ok(&p).as_f32(), Some(&values[..]));

    let values = [1.0f32, -3.0e38, 0.0078125];
    let bf16_bits: Vec<u16> = values
        .iter()
        .map(|&v| half::bf16::from_f32(v).to_bits())
        .collect();
    let want: Vec<f32> = values.iter().map(|&v| round_to(DType::Bf16, v)).collect();
    let mut p = proto("b", DataType::Bfloat16, &[3]);
    p.int32_data = bf16_bits.iter().map(|&b| i32::from(b)).collect();
    let t = ok(&p);
    assert_eq!(t.dtype(), DType::Bf16);
    assert_eq!(t.as_f32(), Some(&want[..]));
    p.int32_data.clear();
    p.raw_data = bf16_bits.iter().flat_map(|b| b.to_le_bytes()).collect();
    assert_eq!(ok(&p).as_f32(), Some(&want[..]));
}

#[test]
fn f8e4m3fn_decodes_every_byte() {
    assert_eq!(f8e4m3fn_to_f32(0x00), 0.0);
    assert!(f8e4m3fn_to_f32(0x80).is_sign_negative());
    assert_eq!(f8e4m3fn_to_f32(0x01), 2f32.powi(-9)); // smallest subnormal
    assert_eq!(f8e4m3fn_to_f32(0x08), 2f32.powi(-6)); // smallest normal
    assert_eq!(f8e4m3fn_to_f32(0x38), 1.0);
    assert_eq!(f8e4m3fn_to_f32(0x7e), 448.0);
    assert_eq!(f8e4m3fn_to_f32(0xfe), -448.0);
    assert!(f8e4m3fn_to_f32(0x7f).is_nan());
    assert!(f8e4m3fn_to_f32(0xff).is_nan());
    // Positive bytes increase strictly, and every value is one Weft's f8e4m3 holds.
    for b in 0u8..0x7e {
        assert!(f8e4m3fn_to_f32(b) < f8e4m3fn_to_f32(b + 1), "{b:#x}");
    }
    for b in (0u8..=0xff).filter(|b| b & 0x7f != 0x7f) {
        let v = f8e4m3fn_to_f32(b);
        assert_eq!(round_to(DType::F8e4m3, v), v, "{b:#x}");
        assert_eq!(f8e4m3fn_to_f32(b ^ 0x80), -v);
    }

    let bytes = [0x38u8, 0xb8, 0x7e, 0x01, 0x7f];
    let mut p = proto("q", DataType::Float8e4m3fn, &[5]);
    p.raw_data = bytes.to_vec();
    let t = ok(&p);
    assert_eq!(t.dtype(), DType::F8e4m3);
    let v = t.as_f32().unwrap();
    assert_eq!(&v[..4], &[1.0, -1.0, 448.0, 2f32.powi(-9)]);
    assert!(v[4].is_nan());
    p.raw_data.clear();
    p.int32_data = bytes.iter().map(|&b| i32::from(b)).collect();
    assert_eq!(ok(&p).as_f32().unwrap()[..4], v[..4]);
}

#[test]
fn integer_types_from_typed_fields_and_raw_data() {
    type Case = (DataType, DType, Vec<i64>, Vec<u8>);
    let cases: Vec<Case> = vec![
        (DataType::Int64, DType::I64, vec![i64::MIN, -1, i64::MAX], {
            [i64::MIN, -1, i64::MAX]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        }),
        (DataType::Int32, DType::I32, vec![i32::MIN.into(), 7], {
            [i32::MIN, 7].iter().flat_map(|v| v.to_le_bytes()).collect()
        }),
    ];
    for (data_type, dtype, values, raw) in cases {
        let n = values.len() as i64;
        let mut p = proto("i", data_type, &[n]);
        match data_type {
            DataType::Int64 => p.int64_data = values.clone(),
            _ => p.int32_data = values.iter().map(|&v| v as i32).collect(),
        }
        let t = ok(&p);
        assert_eq!(t.dtype(), dtype, "{data_type:?}");
        assert_eq!(t.as_i64(), Some(&values[..]), "{data_type:?} typed");

        let mut p = proto("i", data_type, &[n]);
        p.raw_data = raw;
        assert_eq!(ok(&p).as_i64(), Some(&values[..]), "{data_type:?} raw");
    }
}

/// Weft has no 8-, 16- or unsigned integer types: such tensors are refused by name, from
/// typed fields and raw data alike, rather than widened to i32 or i64.
#[test]
fn narrow_and_unsigned_integers_are_refused() {
    for data_type in [
        DataType::Int8,
        DataType::Int16,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
    ] {
        let mut p = proto("n", data_type, &[2]);
        match data_type {
            DataType::Uint32 | DataType::Uint64 => p.uint64_data = vec![1, 2],
            _ => p.int32_data = vec![1, 2],
        }
        let e = err(&p);
        let want = format!("data type {} is not supported", data_type.onnx_name());
        assert!(e.contains(&want) && e.contains("does not widen"), "{e}");
        let mut p = proto("n", data_type, &[2]);
        p.raw_data = vec![1; 16];
        assert!(err(&p).contains(&want), "{}", err(&p));
    }
}

#[test]
fn bool_and_scalar() {
    let mut p = proto("b", DataType::Bool, &[4]);
    p.raw_data = vec![0, 1, 1, 0];
    let t = ok(&p);
    assert_eq!(t.as_bool(), Some(&[false, true, true, false][..]));
    p.raw_data.clear();
    p.int32_data = vec![1, 0, 0, 1];
    assert_eq!(ok(&p).as_bool(), Some(&[true, false, false, true][..]));

    // No dims: a scalar with one element.
    let mut p = proto("s", DataType::Float, &[]);
    p.float_data = vec![3.0];
    let t = ok(&p);
    assert_eq!((t.shape(), t.as_f32()), (&[][..], Some(&[3.0f32][..])));
    // A zero in the dims: no elements anywhere.
    let p = proto("e", DataType::Int64, &[2, 0, 3]);
    assert_eq!(ok(&p).numel(), 0);
}

#[test]
fn element_count_and_dims_are_checked() {
    let mut p = proto("x", DataType::Float, &[2, 3]);
    p.float_data = vec![1.0; 5];
    let e = err(&p);
    assert!(e.contains("need 6 elements but float_data holds 5"), "{e}");
    p.float_data.clear();
    p.raw_data = vec![0; 23];
    let e = err(&p);
    assert!(
        e.contains("raw_data has 23 bytes") && e.contains("need 24"),
        "{e}"
    );
    p.float_data = vec![1.0; 6];
    assert!(err(&p).contains("both raw_data and float_data"));

    let p = proto("x", DataType::Float, &[2, -3]);
    assert!(err(&p).contains("negative"));
    // Overflows even though a zero dim makes the true count 0.
    let p = proto("x", DataType::Float, &[1 << 40, 1 << 40, 0]);
    assert!(err(&p).contains("overflows"));
    let p = proto("x", DataType::Float, &[1 << 62, 1 << 62]);
    assert!(err(&p).contains("overflows"));
}

#[test]
fn unsupported_data_and_types_are_clear_errors() {
    let mut p = proto("s", DataType::String, &[1]);
    p.string_data = vec![b"hello".to_vec()];
    let e = err(&p);
    assert!(
        e.contains(r#"tensor "s": data type STRING is not supported"#),
        "{e}"
    );
    let p = proto("c", DataType::Complex64, &[1]);
    assert!(err(&p).contains("COMPLEX64 is not supported"));
    let mut p = proto("z", DataType::Float, &[1]);
    p.data_type = 99;
    assert!(err(&p).contains("unknown data_type code 99"));
    p.data_type = 0;
    assert!(err(&p).contains("data_type is not set"));

    let mut p = proto("w", DataType::Float, &[1024]);
    p.data_location = crate::proto::DATA_LOCATION_EXTERNAL;
    p.external_data = vec![StringStringEntryProto {
        key: "location".into(),
        value: "weights.bin".into(),
    }];
    let e = err(&p);
    assert!(
        e.contains("\"weights.bin\"")
            && e.contains("external tensors are not supported for inputs"),
        "{e}"
    );
    p.data_location = 7;
    assert!(err(&p).contains("external"));
    p.external_data.clear();
    assert!(err(&p).contains("unknown data_location 7"));
}

#[test]
fn truncated_and_corrupt_bytes_are_errors() {
    let mut p = proto("truncated", DataType::Float, &[4, 4]);
    p.raw_data = (0..16u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let bytes = p.encode_to_vec();
    assert!(decode_tensor_proto(&bytes).is_ok());
    // raw_data is encoded last; cutting into it must fail, not read short.
    let raw_start = bytes.len() - p.raw_data.len();
    for cut in raw_start - 1..bytes.len() {
        assert!(decode_tensor_proto(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    // Any other prefix either decodes as a smaller valid proto or errors, never panics.
    for cut in 0..bytes.len() {
        let _ = decode_tensor_proto(&bytes[..cut]);
    }
    assert!(decode_tensor_proto(&[0xff; 16]).is_err());
    assert!(decode_tensor_proto(&[0x0a, 0x80]).is_err()); // varint cut short
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut p = proto("fuzz", DataType::Int32, &[3, 2]);
    p.raw_data = vec![7; 24];
    let base = p.encode_to_vec();
    // A deterministic xorshift stream of byte flips and random buffers.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..5000 {
        let mut bytes = base.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() % bytes.len() as u64) as usize;
            bytes[i] = next() as u8;
        }
        let _ = decode_tensor_proto(&bytes);
        let random: Vec<u8> = (0..next() % 64).map(|_| next() as u8).collect();
        let _ = decode_tensor_proto(&random);
    }
}
