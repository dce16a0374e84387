//! Reading external weight files (`.npy`, `.safetensors`) into tensors.

use std::path::Path;

use weft_ir::{DType, Tensor};

fn check_shape(path: &Path, found: &[usize], want: &[usize]) -> Result<(), String> {
    if found == want {
        Ok(())
    } else {
        Err(format!(
            "`{}` has shape {found:?}, expected {want:?}",
            path.display()
        ))
    }
}

/// The whole file, its buffer allocated fallibly (a file too large for memory is an
/// error naming it, not an abort).
fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| format!("cannot read `{}`: {e}", path.display());
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    let len = file.metadata().map_err(cannot)?.len();
    let len = usize::try_from(len).map_err(|_| format!("`{}` is too large", path.display()))?;
    let mut bytes =
        weft_ir::alloc::try_with_capacity(len).map_err(|e| format!("`{}`: {e}", path.display()))?;
    file.read_to_end(&mut bytes).map_err(cannot)?;
    Ok(bytes)
}

/// A `.npy` file as a tensor of `dtype` and shape `shape`.
pub fn read_npy(path: &Path, dtype: DType, shape: &[usize]) -> Result<Tensor, String> {
    let bytes = read_file(path)?;
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| format!("`{}`: {e}", path.display()))?;
    let found: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    check_shape(path, &found, shape)?;
    let bad = |e: std::io::Error| format!("`{}`: {e}", path.display());
    let t = match dtype {
        DType::F32 => Tensor::from_f32(dtype, found, npy.into_vec::<f32>().map_err(bad)?),
        DType::F16 => Tensor::from_f32(
            dtype,
            found,
            npy.into_vec::<half::f16>()
                .map_err(bad)?
                .into_iter()
                .map(f32::from)
                .collect(),
        ),
        DType::I64 => Tensor::from_i64(dtype, found, npy.into_vec::<i64>().map_err(bad)?),
        DType::I32 => Tensor::from_i64(
            dtype,
            found,
            npy.into_vec::<i32>()
                .map_err(bad)?
                .into_iter()
                .map(i64::from)
                .collect(),
        ),
        DType::Bool => Tensor::from_bool(found, npy.into_vec::<bool>().map_err(bad)?),
        DType::Bf16 | DType::F8e4m3 => {
            return Err(format!(
                "`{}`: numpy has no {dtype} arrays; use safetensors",
                path.display()
            ));
        }
    };
    t.map_err(|e| e.to_string())
}

/// Tensor `name` of a `.safetensors` file as a tensor of `dtype` and shape `shape`.
pub fn read_safetensors(
    path: &Path,
    name: &str,
    dtype: DType,
    shape: &[usize],
) -> Result<Tensor, String> {
    let bytes = read_file(path)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("`{}`: {e}", path.display()))?;
    let view = st
        .tensor(name)
        .map_err(|e| format!("`{}`: tensor `{name}`: {e}", path.display()))?;
    check_shape(path, view.shape(), shape)?;
    let data = view.data();
    let chunks = |n: usize| data.chunks_exact(n);
    let shape = shape.to_vec();
    use safetensors::Dtype as S;
    let t = match (view.dtype(), dtype) {
        (S::F32, DType::F32) => Tensor::from_f32(
            dtype,
            shape,
            chunks(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        (S::F16, DType::F16) => Tensor::from_f32(
            dtype,
            shape,
            chunks(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        (S::BF16, DType::Bf16) => Tensor::from_f32(
            dtype,
            shape,
            chunks(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        (S::F8_E4M3, DType::F8e4m3) => Tensor::from_f32(
            dtype,
            shape,
            data.iter().map(|&b| f8e4m3_to_f32(b)).collect(),
        ),
        (S::I64, DType::I64) => Tensor::from_i64(
            dtype,
            shape,
            chunks(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8-byte chunk")))
                .collect(),
        ),
        (S::I32, DType::I32) => Tensor::from_i64(
            dtype,
            shape,
            chunks(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
        ),
        (S::BOOL, DType::Bool) => Tensor::from_bool(shape, data.iter().map(|&b| b != 0).collect()),
        (found, _) => {
            return Err(format!(
                "`{}`: tensor `{name}` is {found:?}, the graph declares {dtype}",
                path.display()
            ));
        }
    };
    t.map_err(|e| e.to_string())
}

/// `numel(shape)` raw little-endian elements of `dtype` at byte `offset` of `path` (ONNX
/// external data). Only those bytes are read.
pub fn read_raw(path: &Path, offset: u64, dtype: DType, shape: &[usize]) -> Result<Tensor, String> {
    use std::io::{Read, Seek, SeekFrom};
    let numel: usize = shape.iter().product();
    let len = numel
        .checked_mul(dtype.size_bytes() as usize)
        .ok_or_else(|| format!("`{}`: tensor too large", path.display()))?;
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot open `{}`: {e}", path.display()))?;
    // A shape larger than the file is refused before its buffer is allocated.
    let size = file
        .metadata()
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?
        .len();
    if u128::from(offset) + len as u128 > u128::from(size) {
        return Err(format!(
            "`{}` has {size} bytes, but {numel} {dtype} elements at offset {offset} need {}",
            path.display(),
            u128::from(offset) + len as u128
        ));
    }
    let mut bytes = weft_ir::alloc::try_filled(len, 0u8).map_err(|e| e.to_string())?;
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(|e| {
            format!(
                "`{}`: cannot read {len} bytes at offset {offset}: {e}",
                path.display()
            )
        })?;
    let shape = shape.to_vec();
    let c = |n: usize| bytes.chunks_exact(n);
    let t = match dtype {
        DType::F32 => Tensor::from_f32(
            dtype,
            shape,
            c(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
        DType::F16 => Tensor::from_f32(
            dtype,
            shape,
            c(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        ),
        DType::Bf16 => Tensor::from_f32(
            dtype,
            shape,
            c(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        ),
        DType::F8e4m3 => Tensor::from_f32(
            dtype,
            shape,
            bytes.iter().map(|&b| f8e4m3_to_f32(b)).collect(),
        ),
        DType::I64 => Tensor::from_i64(
            dtype,
            shape,
            c(8).map(|b| i64::from_le_bytes(b.try_into().expect("8-byte chunk")))
                .collect(),
        ),
        DType::I32 => Tensor::from_i64(
            dtype,
            shape,
            c(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
                .collect(),
        ),
        DType::Bool => Tensor::from_bool(shape, bytes.iter().map(|&b| b != 0).collect()),
    };
    t.map_err(|e| e.to_string())
}

/// Decodes one f8e4m3fn byte (bias 7, 3 mantissa bits, exponent 0 subnormal, S.1111.111 NaN).
pub fn f8e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((b >> 3) & 0xf) as i32;
    let man = (b & 7) as f32;
    if exp == 0xf && b & 7 == 7 {
        return f32::NAN;
    }
    let v = if exp == 0 {
        man / 8.0 * 2f32.powi(-6)
    } else {
        (1.0 + man / 8.0) * 2f32.powi(exp - 7)
    };
    sign * v
}
