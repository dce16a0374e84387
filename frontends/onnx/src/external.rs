//! ONNX external data: initializers whose bytes live in a file beside the model.
//!
//! The location is checked when the model is read (a relative path inside the model's
//! folder, an offset and length inside the file, a length that matches the tensor), but
//! the bytes are not read: the initializer becomes an [`Init::Raw`] reference that an
//! executor reads when it runs, so importing a large model copies no weights.

use std::path::{Component, Path};

use weft_ir::{DType, Init};

use crate::proto::{DataType, TensorProto};

/// The dtype, dims and raw-data reference of an external initializer.
pub fn locate(t: &TensorProto, model: &Path) -> Result<(DType, Vec<u64>, Init), String> {
    let get = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    };
    let location = get("location").ok_or("external data without a `location`")?;
    let rel = Path::new(location);
    let escapes = rel.is_absolute()
        || location.contains('\0')
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if location.is_empty() || escapes {
        return Err(format!(
            "external data location {location:?} must be a relative path inside the model's folder (no `..`, not absolute)"
        ));
    }
    let number = |key: &str| -> Result<Option<u64>, String> {
        get(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("external data `{key}` = {v:?} is not a whole number"))
            })
            .transpose()
    };
    let (offset, length) = (number("offset")?.unwrap_or(0), number("length")?);
    let dtype = match DataType::try_from(t.data_type) {
        Ok(DataType::Float) => DType::F32,
        Ok(DataType::Float16) => DType::F16,
        Ok(DataType::Bfloat16) => DType::Bf16,
        Ok(DataType::Float8e4m3fn) => DType::F8e4m3,
        Ok(DataType::Int64) => DType::I64,
        Ok(DataType::Int32) => DType::I32,
        Ok(DataType::Bool) => DType::Bool,
        Ok(other) => {
            return Err(format!(
                "external data of type {} is not supported",
                other.onnx_name()
            ));
        }
        Err(_) => return Err(format!("unknown data_type code {}", t.data_type)),
    };
    let dims: Vec<u64> = t
        .dims
        .iter()
        .map(|&d| u64::try_from(d).map_err(|_| format!("negative dim {d}")))
        .collect::<Result<_, _>>()?;
    let need = dims
        .iter()
        .try_fold(dtype.size_bytes(), |acc, &d| acc.checked_mul(d))
        .ok_or("the tensor is too large to address")?;
    if let Some(len) = length
        && len != need
    {
        return Err(format!(
            "external data `length` is {len} bytes, but {dtype}{dims:?} needs {need}"
        ));
    }
    let file = model.parent().unwrap_or(Path::new("")).join(rel);
    let size = std::fs::metadata(&file)
        .map_err(|e| format!("cannot open external data file `{}`: {e}", file.display()))?
        .len();
    let end = offset
        .checked_add(need)
        .ok_or("offset + length overflows")?;
    if end > size {
        return Err(format!(
            "external data `{}` has {size} bytes, but the tensor needs bytes {offset}..{end}",
            file.display()
        ));
    }
    Ok((
        dtype,
        dims,
        Init::Raw {
            path: location.to_owned(),
            offset,
        },
    ))
}
