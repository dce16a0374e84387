use std::io::Cursor;

use prost::Message;
use weft_frontend_onnx::proto::{DataType, TensorProto};
use weft_ir::DType;

use super::*;

/// One tensor of every dtype, with awkward values (negative zero, extremes, subnormals).
fn every_dtype() -> Vec<(String, Tensor)> {
    let f = |dtype, shape: Vec<usize>, v: Vec<f32>| Tensor::from_f32(dtype, shape, v).unwrap();
    vec![
        (
            "f32".into(),
            f(
                DType::F32,
                vec![2, 3],
                vec![
                    1.5,
                    -0.0,
                    f32::MAX,
                    f32::MIN_POSITIVE / 4.0,
                    -7.25,
                    f32::INFINITY,
                ],
            ),
        ),
        (
            "f16".into(),
            f(DType::F16, vec![3], vec![65504.0, -6.1035156e-5, 0.333]),
        ),
        (
            "bf16".into(),
            f(DType::Bf16, vec![2, 2], vec![1.0, -3.0e38, 0.1, 1e-30]),
        ),
        (
            "f8e4m3".into(),
            f(
                DType::F8e4m3,
                vec![4],
                vec![448.0, -0.5, 2f32.powi(-9), 3.3],
            ),
        ),
        (
            "i64".into(),
            Tensor::from_i64(DType::I64, vec![3], vec![i64::MIN, 0, i64::MAX]).unwrap(),
        ),
        (
            "i32".into(),
            Tensor::from_i64(
                DType::I32,
                vec![1, 2],
                vec![i32::MIN.into(), i32::MAX.into()],
            )
            .unwrap(),
        ),
        (
            "bool".into(),
            Tensor::from_bool(vec![2, 1, 2], vec![true, false, false, true]).unwrap(),
        ),
        ("scalar".into(), f(DType::F32, vec![], vec![42.0])),
        (
            "empty".into(),
            Tensor::from_i64(DType::I64, vec![0, 5], vec![]).unwrap(),
        ),
    ]
}

#[test]
fn npz_round_trip_every_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.npz");
    let arrays = every_dtype();
    write_npz(&path, &arrays).unwrap();
    let back = read_tensor_file(&path).unwrap();
    assert_eq!(back.len(), arrays.len());
    for ((name, t), (back_name, b)) in arrays.iter().zip(&back) {
        assert_eq!(name, back_name);
        assert_eq!(t.shape(), b.shape(), "{name}");
        // bf16 and f8e4m3 come back as f32 holding the same numbers.
        let want = match t.dtype() {
            DType::Bf16 | DType::F8e4m3 => DType::F32,
            d => d,
        };
        assert_eq!(b.dtype(), want, "{name}");
        assert_eq!(t.data(), b.data(), "{name}");
    }
    // Deterministic: the same arrays give the same bytes.
    let again = dir.path().join("again.npz");
    write_npz(&again, &arrays).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&again).unwrap()
    );
}

#[test]
fn npz_entries_are_stored_npy_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.npz");
    write_npz(&path, &every_dtype()[..2]).unwrap();
    let mut zip = ZipArchive::new(File::open(&path).unwrap()).unwrap();
    let names: Vec<String> = zip.file_names().map(|n| n.unwrap().into_owned()).collect();
    assert_eq!(names, ["f32.npy", "f16.npy"]);
    let mut entry = zip.by_index(0).unwrap();
    assert_eq!(entry.compression(), CompressionMethod::Stored);
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes).unwrap();
    // What np.save writes: magic, version 1.0, a header padded so the data is 64-aligned.
    assert!(bytes.starts_with(b"\x93NUMPY\x01\x00"));
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + header_len) % 64, 0);
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'shape': (2, 3"),
        "{header}"
    );
    assert_eq!(bytes.len(), 10 + header_len + 6 * 4);
}

#[test]
fn npz_with_deflated_entries() {
    // np.savez_compressed: the same layout with deflated entries.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("compressed.npz");
    let arrays = every_dtype();
    let mut zip = ZipWriter::new(File::create(&path).unwrap());
    for (name, t) in &arrays {
        let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        zip.start_file(format!("{name}.npy"), options).unwrap();
        zip.write_all(&npy::encode(t).unwrap()).unwrap();
    }
    zip.finish().unwrap();
    let back = read_tensor_file(&path).unwrap();
    let names: Vec<_> = back.iter().map(|(n, _)| n.as_str()).collect();
    let want: Vec<_> = arrays.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, want);
    assert_eq!(back[0].1, arrays[0].1);
}

/// The bytes of a `.npy` file with `header` (a dict literal) and `data`, built by hand as
/// the format specifies.
fn npy_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut text = header.to_owned();
    while (10 + text.len() + 1) % 64 != 0 {
        text.push(' ');
    }
    text.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((text.len() as u16).to_le_bytes());
    out.extend(text.as_bytes());
    out.extend(data);
    out
}

#[test]
fn hand_written_npy_of_each_read_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let le =
        |v: &[f64], f: fn(f64) -> Vec<u8>| -> Vec<u8> { v.iter().flat_map(|&x| f(x)).collect() };
    let cases: Vec<(&str, Vec<u8>, DType, Vec<f64>)> = vec![
        (
            "<f4",
            le(&[1.5, -2.0], |x| (x as f32).to_le_bytes().to_vec()),
            DType::F32,
            vec![1.5, -2.0],
        ),
        (
            "<f8",
            le(&[0.1, 1e300], |x| x.to_le_bytes().to_vec()),
            DType::F32,
            vec![0.1f32 as f64, f64::INFINITY],
        ),
        (
            "<f2",
            vec![0x00, 0x3c, 0x00, 0xc0],
            DType::F16,
            vec![1.0, -2.0],
        ),
        (
            "<i8",
            le(&[-5.0, 9.0], |x| (x as i64).to_le_bytes().to_vec()),
            DType::I64,
            vec![-5.0, 9.0],
        ),
        (
            "<i4",
            le(&[-5.0, 9.0], |x| (x as i32).to_le_bytes().to_vec()),
            DType::I32,
            vec![-5.0, 9.0],
        ),
        ("|b1", vec![1, 0], DType::Bool, vec![1.0, 0.0]),
    ];
    for (descr, data, dtype, values) in cases {
        let path = dir.path().join("x.npy");
        let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (2,), }}");
        std::fs::write(&path, npy_file(&header, &data)).unwrap();
        let mut read = read_tensor_file(&path).unwrap_or_else(|e| panic!("{descr}: {e}"));
        assert_eq!(read.len(), 1);
        let (name, t) = read.remove(0);
        assert_eq!(name, "x");
        assert_eq!((t.dtype(), t.shape()), (dtype, &[2usize][..]), "{descr}");
        assert_eq!(t.to_f64_vec(), values, "{descr}");
    }
}

#[test]
fn npy_written_by_npyz() {
    use npyz::WriterBuilder;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.npy");
    let mut bytes = Vec::new();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&[2, 2])
        .writer(&mut bytes)
        .begin_nd()
        .unwrap();
    w.extend([1i64, 2, 3, 4]).unwrap();
    w.finish().unwrap();
    std::fs::write(&path, bytes).unwrap();
    let t = read_tensor_file(&path).unwrap().remove(0);
    assert_eq!(t.0, "weights");
    assert_eq!(
        t.1,
        Tensor::from_i64(DType::I64, vec![2, 2], vec![1, 2, 3, 4]).unwrap()
    );
}

#[test]
fn npy_errors_name_the_file_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.npy");
    let read_err = |bytes: Vec<u8>| {
        std::fs::write(&path, bytes).unwrap();
        read_tensor_file(&path).unwrap_err()
    };
    let header = |descr: &str, fortran: &str, shape: &str| {
        format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}")
    };
    let e = read_err(npy_file(&header(">f4", "False", "(1,)"), &[0; 4]));
    assert!(matches!(e, TensorIoError::UnsupportedDtype { .. }));
    assert!(
        e.to_string()
            .contains("x.npy: unsupported dtype '>f4': big-endian"),
        "{e}"
    );
    let e = read_err(npy_file(&header("<c8", "False", "(1,)"), &[0; 8]));
    assert!(
        e.to_string().contains("'<c8'") && e.to_string().contains("Weft reads float32"),
        "{e}"
    );
    let e = read_err(npy_file(&header("<f4", "True", "(2, 3)"), &[0; 24]));
    assert!(matches!(e, TensorIoError::FortranOrder { .. }), "{e}");
    // Fortran order with one long dim is the same layout as C order.
    assert!(
        read_tensor_file(&{
            std::fs::write(&path, npy_file(&header("<f4", "True", "(1, 3)"), &[0; 12])).unwrap();
            path.clone()
        })
        .is_ok()
    );
    let e = read_err(npy_file(&header("<f4", "False", "(2, 3)"), &[0; 20]));
    assert!(
        e.to_string()
            .contains("the data is 20 bytes, but shape [2, 3] of '<f4' needs 24"),
        "{e}"
    );
    let e = read_err(npy_file(
        &header("<f4", "False", "(4294967296, 4294967296, 0)"),
        &[],
    ));
    assert!(e.to_string().contains("overflows"), "{e}");
    let e = read_err(npy_file(&header("<u8", "False", "(1,)"), &[0xff; 8]));
    assert!(e.to_string().contains("does not widen"), "{e}");
    let e = read_err(b"not numpy at all".to_vec());
    assert!(e.to_string().contains("not a .npy file"), "{e}");
    // A huge declared header length is an error, not an allocation.
    let e = read_err(b"\x93NUMPY\x02\x00\xff\xff\xff\xff{".to_vec());
    assert!(e.to_string().contains("ends inside the .npy header"), "{e}");
    // Every prefix of a valid file is an error, never a panic.
    let good = npy_file(
        &header("<i4", "False", "(3,)"),
        &[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0],
    );
    for cut in 0..good.len() {
        assert!(
            read_err(good[..cut].to_vec()).to_string().contains("x.npy"),
            "cut {cut}"
        );
    }
}

#[test]
fn missing_and_unknown_files() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["missing.npy", "missing.npz", "missing.pb"] {
        let e = read_tensor_file(&dir.path().join(name)).unwrap_err();
        assert!(matches!(e, TensorIoError::NotFound { .. }), "{e}");
        assert!(e.to_string().contains(name), "{e}");
    }
    let e = read_tensor_file(&dir.path().join("inputs.csv")).unwrap_err();
    assert!(matches!(e, TensorIoError::UnknownFormat { .. }), "{e}");
}

#[test]
fn corrupted_npz_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.npz");
    write_npz(&path, &every_dtype()).unwrap();
    let good = std::fs::read(&path).unwrap();
    let bad = dir.path().join("bad.npz");

    std::fs::write(&bad, b"PK\x03\x04 definitely not a zip").unwrap();
    let e = read_tensor_file(&bad).unwrap_err();
    assert!(matches!(e, TensorIoError::BadArchive { .. }), "{e}");
    assert!(e.to_string().starts_with(&bad.display().to_string()), "{e}");

    // Truncated: the central directory at the end is gone.
    std::fs::write(&bad, &good[..good.len() / 2]).unwrap();
    assert!(read_tensor_file(&bad).is_err());

    // A flipped byte inside an entry's data fails its CRC.
    let mut flipped = good.clone();
    let npy_start = good.windows(6).position(|w| w == b"\x93NUMPY").unwrap();
    let header_len = u16::from_le_bytes([good[npy_start + 8], good[npy_start + 9]]) as usize;
    flipped[npy_start + 10 + header_len + 1] ^= 0x55; // inside the first array's data
    std::fs::write(&bad, &flipped).unwrap();
    let e = read_tensor_file(&bad).unwrap_err();
    assert!(e.to_string().contains("array \"f32.npy\""), "{e}");

    // An entry that is not a .npy file.
    let mut zip = ZipWriter::new(File::create(&bad).unwrap());
    zip.start_file("notes.txt", SimpleFileOptions::default())
        .unwrap();
    zip.write_all(b"hello").unwrap();
    zip.finish().unwrap();
    let e = read_tensor_file(&bad).unwrap_err();
    assert!(
        e.to_string()
            .contains("array \"notes.txt\": not a .npy file"),
        "{e}"
    );

    // Flips anywhere never panic.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..300 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut bytes = good.clone();
        bytes[(state % good.len() as u64) as usize] = (state >> 32) as u8;
        let _ = read_npz_bytes(&bytes);
    }
}

/// Reads `.npz` bytes through the same code path as a file.
fn read_npz_bytes(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, TensorIoError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.npz");
    std::fs::write(&path, bytes).unwrap();
    read_tensor_file(&path)
}

#[test]
fn write_npz_errors() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tensor::from_bool(vec![1], vec![true]).unwrap();
    let arrays = vec![("a".to_owned(), t.clone()), ("a".to_owned(), t)];
    let e = write_npz(&dir.path().join("x.npz"), &arrays).unwrap_err();
    assert!(e.to_string().contains(r#"two arrays are named "a""#), "{e}");
    let e = write_npz(&dir.path().join("no/such/dir/x.npz"), &arrays[..1]).unwrap_err();
    assert!(e.to_string().contains("x.npz"), "{e}");
}

fn pb(name: &str, values: &[f32]) -> Vec<u8> {
    TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..TensorProto::default()
    }
    .encode_to_vec()
}

#[test]
fn pb_files_and_input_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("input_0.pb"), pb("tokens", &[1.0, 2.0])).unwrap();
    std::fs::write(d.join("input_1.pb"), pb("", &[3.0])).unwrap();
    std::fs::write(d.join("input_3.pb"), pb("skipped", &[4.0])).unwrap(); // after a gap
    std::fs::write(d.join("output_0.pb"), pb("out", &[5.0])).unwrap();

    let named = read_tensor_file(&d.join("input_0.pb")).unwrap();
    assert_eq!(named[0].0, "tokens");
    let unnamed = read_tensor_file(&d.join("input_1.pb")).unwrap();
    assert_eq!(unnamed[0].0, "input_1");

    let inputs = read_input_dir(d).unwrap();
    assert_eq!(inputs.len(), 2);
    assert_eq!(inputs[0].as_f32(), Some(&[1.0f32, 2.0][..]));
    assert_eq!(inputs[1].as_f32(), Some(&[3.0f32][..]));

    std::fs::write(d.join("input_2.pb"), b"\xff\xff\xff").unwrap();
    let e = read_input_dir(d).unwrap_err();
    assert!(
        e.to_string()
            .contains("input_2.pb: not a valid ONNX TensorProto"),
        "{e}"
    );

    let empty = tempfile::tempdir().unwrap();
    let e = read_input_dir(empty.path()).unwrap_err();
    assert!(matches!(e, TensorIoError::NoInputs { .. }), "{e}");
    let e = read_input_dir(&d.join("nowhere")).unwrap_err();
    assert!(matches!(e, TensorIoError::NotFound { .. }), "{e}");
    let e = read_input_dir(&d.join("output_0.pb")).unwrap_err();
    assert!(matches!(e, TensorIoError::NotADirectory { .. }), "{e}");
}

#[test]
fn npz_names_keep_non_npy_suffixes() {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let t = Tensor::from_bool(vec![1], vec![true]).unwrap();
    for name in ["a.npy", "b"] {
        zip.start_file(name, SimpleFileOptions::default()).unwrap();
        zip.write_all(&npy::encode(&t).unwrap()).unwrap();
    }
    let bytes = zip.finish().unwrap().into_inner();
    let names: Vec<_> = read_npz_bytes(&bytes)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["a", "b"]);
}

/// Output names come from the model; as `.npz` entry names they are paths in the archive,
/// so one that would be unpacked outside the archive's folder is refused, and nothing is
/// written.
#[test]
fn npz_entry_names_that_escape_the_archive_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.npz");
    let tensor = every_dtype().remove(0).1;
    for bad in [
        "../../etc/x",
        "/abs",
        "a/../b",
        "a//b",
        ".",
        "a\\b",
        "",
        "a\0b",
    ] {
        let err = write_npz(&path, &[(bad.to_owned(), tensor.clone())]).unwrap_err();
        assert!(
            err.to_string().contains("cannot store an array named"),
            "{bad:?}: {err}"
        );
        assert!(!path.exists(), "{bad:?}: a file was written");
    }
    // A `/` inside a name is a folder in the archive, which numpy reads back by that name.
    write_npz(&path, &[("model/logits".to_owned(), tensor)]).unwrap();
    let zip = ZipArchive::new(File::open(&path).unwrap()).unwrap();
    let names: Vec<String> = zip.file_names().map(|n| n.unwrap().into_owned()).collect();
    assert_eq!(names, ["model/logits.npy"]);
}
