//! ONNX `TensorProto` → [`weft_ir::Tensor`].
//!
//! Every ONNX element type with a Weft counterpart is read, from `raw_data` or from the
//! typed field the spec assigns to it (see [`TensorProto`]):
//!
//! | ONNX | Weft |
//! | --- | --- |
//! | FLOAT | f32 |
//! | DOUBLE | f32 (values rounded to f32: Weft has no f64) |
//! | FLOAT16, BFLOAT16, FLOAT8E4M3FN | f16, bf16, f8e4m3 (exact) |
//! | INT64 | i64 |
//! | INT32 | i32 |
//! | BOOL | bool (any non-zero byte or value is `true`) |
//!
//! INT8, INT16, UINT8, UINT16, UINT32 and UINT64 are refused ([`OnnxTensorError::NarrowInteger`]):
//! Weft has no integer types but i64 and i32, and holding them in a wider type would
//! silently change what the model computes (wrap-around, the output's dtype).
//!
//! Nothing here panics on any input: truncated or corrupt bytes, inconsistent dims and
//! out-of-range values are all [`OnnxTensorError`]s.

use prost::Message;
use weft_ir::{DType, Tensor, TensorError};

use crate::proto::{DATA_LOCATION_EXTERNAL, DataType, TensorProto};

/// Why a `TensorProto` could not be read. Messages quote the tensor's name (`""` when it
/// has none) because a model or input directory holds many tensors.
#[derive(Debug, thiserror::Error)]
pub enum OnnxTensorError {
    #[error("not a valid ONNX TensorProto: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error(
        "tensor {name:?}: its data is stored in an external file{}; external tensors are not \
         supported for inputs (store the data in the .pb file itself, as raw_data)",
        location.as_deref().map(|l| format!(" ({l:?})")).unwrap_or_default()
    )]
    ExternalData {
        name: String,
        location: Option<String>,
    },
    #[error("tensor {name:?}: unknown data_location {location} (expected 0, DEFAULT)")]
    UnknownDataLocation { name: String, location: i32 },
    #[error("tensor {name:?}: data_type is not set")]
    NoDataType { name: String },
    #[error("tensor {name:?}: unknown data_type code {code}")]
    UnknownDataType { name: String, code: i32 },
    #[error("tensor {name:?}: data type {} is not supported; Weft reads FLOAT, DOUBLE, FLOAT16, \
             BFLOAT16, FLOAT8E4M3FN, INT64, INT32 and BOOL tensors", data_type.onnx_name())]
    UnsupportedDataType { name: String, data_type: DataType },
    #[error("tensor {name:?}: data type {} is not supported: Weft's integer types are INT64 and \
             INT32, and it does not widen {} silently (wrap-around and the output's type would \
             change)", data_type.onnx_name(), data_type.onnx_name())]
    NarrowInteger { name: String, data_type: DataType },
    #[error("tensor {name:?}: dims {dims:?}: {reason}")]
    BadDims {
        name: String,
        dims: Vec<i64>,
        reason: &'static str,
    },
    #[error("tensor {name:?}: both raw_data and {field} hold elements; a tensor keeps them in one")]
    AmbiguousData { name: String, field: &'static str },
    #[error(
        "tensor {name:?}: dims {dims:?} need {want} elements but {field} holds {got} \
         (and raw_data is empty)"
    )]
    ElementCount {
        name: String,
        dims: Vec<i64>,
        field: &'static str,
        want: usize,
        got: usize,
    },
    #[error(
        "tensor {name:?}: raw_data has {got} bytes but dims {dims:?} of {data_type} need {want}"
    )]
    RawDataLength {
        name: String,
        dims: Vec<i64>,
        data_type: &'static str,
        want: u128,
        got: usize,
    },
    #[error("tensor {name:?}: {source}")]
    Tensor { name: String, source: TensorError },
}

/// Decodes a serialized `TensorProto` (an ONNX test-data `.pb` file, say) into its name
/// (empty when the proto has none) and its tensor.
pub fn decode_tensor_proto(bytes: &[u8]) -> Result<(String, Tensor), OnnxTensorError> {
    let proto = TensorProto::decode(bytes)?;
    let tensor = tensor_from_proto(&proto)?;
    Ok((proto.name, tensor))
}

/// Converts a decoded `TensorProto` into a tensor; see the module docs for the dtypes.
pub fn tensor_from_proto(p: &TensorProto) -> Result<Tensor, OnnxTensorError> {
    let name = || p.name.clone();
    if p.data_location == DATA_LOCATION_EXTERNAL || !p.external_data.is_empty() {
        let location = p.external_data.iter().find(|e| e.key == "location");
        return Err(OnnxTensorError::ExternalData {
            name: name(),
            location: location.map(|e| e.value.clone()),
        });
    }
    if p.data_location != 0 {
        return Err(OnnxTensorError::UnknownDataLocation {
            name: name(),
            location: p.data_location,
        });
    }
    let data_type = match DataType::try_from(p.data_type) {
        Ok(DataType::Undefined) => return Err(OnnxTensorError::NoDataType { name: name() }),
        Ok(t) => t,
        Err(_) => {
            return Err(OnnxTensorError::UnknownDataType {
                name: name(),
                code: p.data_type,
            });
        }
    };
    let (shape, numel) = shape_of(p)?;
    let r = Reader {
        p,
        shape,
        numel,
        data_type,
    };
    use DataType as T;
    #[rustfmt::skip] // a table: one element type a line
    let tensor = match data_type {
        T::Float => r.floats(DType::F32, 4, "float_data", &p.float_data, |v| v, |b| f32::from_bits(b as u32)),
        // Weft has no f64: DOUBLE values are rounded to the nearest f32.
        T::Double => r.floats(DType::F32, 8, "double_data", &p.double_data, |v| v as f32, |b| f64::from_bits(b) as f32),
        // 16- and 8-bit floats sit in int32_data as bit patterns in the low bits.
        T::Float16 => r.floats(DType::F16, 2, "int32_data", &p.int32_data, |v| f16(v as u16), |b| f16(b as u16)),
        T::Bfloat16 => r.floats(DType::Bf16, 2, "int32_data", &p.int32_data, |v| bf16(v as u16), |b| bf16(b as u16)),
        T::Float8e4m3fn => r.floats(DType::F8e4m3, 1, "int32_data", &p.int32_data, |v| f8e4m3fn_to_f32(v as u8), |b| f8e4m3fn_to_f32(b as u8)),
        T::Int64 => r.ints(DType::I64, 8, "int64_data", &p.int64_data),
        T::Int32 => r.ints(DType::I32, 4, "int32_data", &p.int32_data),
        T::Int16 | T::Int8 | T::Uint16 | T::Uint8 | T::Uint32 | T::Uint64 =>
            Err(OnnxTensorError::NarrowInteger { name: name(), data_type }),
        T::Bool => r.elements(1, "int32_data", &p.int32_data, |v| v != 0, |b| b != 0)
            .and_then(|v| r.build(Tensor::from_bool(r.shape.clone(), v))),
        data_type => Err(OnnxTensorError::UnsupportedDataType { name: name(), data_type }),
    };
    tensor
}

/// The shape and element count, checked: no negative dims, and a count that fits in
/// `usize` even multiplied out left to right (as `Tensor` does).
fn shape_of(p: &TensorProto) -> Result<(Vec<usize>, usize), OnnxTensorError> {
    let bad = |reason| OnnxTensorError::BadDims {
        name: p.name.clone(),
        dims: p.dims.clone(),
        reason,
    };
    let mut numel = 1usize;
    let mut shape = Vec::with_capacity(p.dims.len());
    for &d in &p.dims {
        let d = usize::try_from(d).map_err(|_| bad("a dimension is negative or too large"))?;
        numel = numel
            .checked_mul(d)
            .ok_or_else(|| bad("the element count overflows"))?;
        shape.push(d);
    }
    Ok((shape, numel))
}

/// Reads the elements of one proto, wherever they are stored.
struct Reader<'a> {
    p: &'a TensorProto,
    shape: Vec<usize>,
    numel: usize,
    data_type: DataType,
}

impl Reader<'_> {
    /// The elements from `raw_data` (cut into `width`-byte little-endian chunks, each
    /// zero-extended to 64 bits and converted by `bits`) or else from the typed field
    /// `typed` (each converted by `conv`), after checking that there are exactly as many as
    /// the dims say. A tensor may not use both.
    fn elements<S: Copy, E>(
        &self,
        width: usize,
        field: &'static str,
        typed: &[S],
        conv: impl Fn(S) -> E,
        bits: impl Fn(u64) -> E,
    ) -> Result<Vec<E>, OnnxTensorError> {
        let p = self.p;
        if p.raw_data.is_empty() {
            if typed.len() != self.numel {
                return Err(OnnxTensorError::ElementCount {
                    name: p.name.clone(),
                    dims: p.dims.clone(),
                    field,
                    want: self.numel,
                    got: typed.len(),
                });
            }
            return Ok(typed.iter().map(|&v| conv(v)).collect());
        }
        if !typed.is_empty() {
            return Err(OnnxTensorError::AmbiguousData {
                name: p.name.clone(),
                field,
            });
        }
        let want = self.numel as u128 * width as u128;
        if p.raw_data.len() as u128 != want {
            return Err(OnnxTensorError::RawDataLength {
                name: p.name.clone(),
                dims: p.dims.clone(),
                data_type: self.data_type.onnx_name(),
                want,
                got: p.raw_data.len(),
            });
        }
        Ok(p.raw_data
            .chunks_exact(width)
            .map(|c| bits(le_bits(c)))
            .collect())
    }

    fn floats<S: Copy>(
        &self,
        dtype: DType,
        width: usize,
        field: &'static str,
        typed: &[S],
        conv: impl Fn(S) -> f32,
        bits: impl Fn(u64) -> f32,
    ) -> Result<Tensor, OnnxTensorError> {
        let values = self.elements(width, field, typed, conv, bits)?;
        self.build(Tensor::from_f32(dtype, self.shape.clone(), values))
    }

    /// Signed integers of a `width`-byte element type, from its typed field (which holds
    /// exactly that type, so every value is in range) or sign-extended from `raw_data`.
    fn ints<S: Copy + Into<i64>>(
        &self,
        dtype: DType,
        width: usize,
        field: &'static str,
        typed: &[S],
    ) -> Result<Tensor, OnnxTensorError> {
        let shift = 64 - 8 * width as u32;
        let values = self.elements(width, field, typed, Into::into, |b| {
            ((b << shift) as i64) >> shift
        })?;
        self.build(Tensor::from_i64(dtype, self.shape.clone(), values))
    }

    fn build(&self, t: Result<Tensor, TensorError>) -> Result<Tensor, OnnxTensorError> {
        t.map_err(|source| OnnxTensorError::Tensor {
            name: self.p.name.clone(),
            source,
        })
    }
}

/// A chunk of at most 8 `raw_data` bytes as a little-endian integer, zero-extended.
fn le_bits(chunk: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    for (b, c) in bytes.iter_mut().zip(chunk) {
        *b = *c;
    }
    u64::from_le_bytes(bytes)
}

fn f16(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

fn bf16(bits: u16) -> f32 {
    half::bf16::from_bits(bits).to_f32()
}

/// Decodes an f8e4m3fn byte: 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits;
/// exponent 0 is subnormal; no infinities, and only S.1111.111 (0x7f, 0xff) is NaN, which
/// makes ±448 the largest finite values.
pub fn f8e4m3fn_to_f32(bits: u8) -> f32 {
    let exp = i32::from((bits >> 3) & 0xf);
    let man = f32::from(bits & 0x7);
    if exp == 0xf && bits & 0x7 == 0x7 {
        return f32::NAN;
    }
    // All products below are exact: small integers times powers of two.
    let magnitude = if exp == 0 {
        man * 2f32.powi(-9)
    } else {
        (8.0 + man) * 2f32.powi(exp - 10)
    };
    if bits & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

#[cfg(test)]
mod tests;
