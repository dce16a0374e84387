//! External weight files (`.npy`, `.safetensors`): checked when the model is read, so
//! a missing file or a shape mismatch is reported by `weft check`, not halfway through
//! a run. Only headers are read; the data stays on disk until something executes.

use std::fs::File;
use std::path::{Component, Path, PathBuf};

use weft_ir::{DType, Graph, Init, Mesh, Op, Placement, Sharding};

use crate::error::{ErrorKind, JsonError, base_dir};

/// Resolves an external path against the model's folder. Absolute paths are refused so
/// that a model file means the same thing wherever it is copied with its weights.
pub fn resolve(model_path: &Path, rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel);
    if p.is_absolute() || p.components().any(|c| matches!(c, Component::Prefix(_))) {
        return Err(format!(
            "external path `{rel}` is absolute; write it relative to the model file"
        ));
    }
    Ok(base_dir(model_path).join(p))
}

/// Checks every external weight of `graph` against its file's header.
pub fn check_external(graph: &Graph, model_path: &Path) -> Result<(), JsonError> {
    for (_, node) in graph.nodes() {
        let (Op::Weight { dtype, shape, init } | Op::Constant { dtype, shape, init }) = &node.op
        else {
            continue;
        };
        let Some(rel) = init.external_path() else {
            continue;
        };
        let fail = |msg: String| {
            JsonError::file(
                ErrorKind::ExternalData,
                model_path,
                format!("node `{}`: {msg}", node.name),
            )
        };
        let path = resolve(model_path, rel).map_err(fail)?;
        let local = shape.eval(&graph.dims).map_err(|e| fail(e.to_string()))?;
        // The file holds the whole tensor; a sharded graph declares each device's piece.
        let dims = node
            .outputs
            .first()
            .map_or(Ok(local.clone()), |&v| {
                whole_shape(&local, &graph.value(v).sharding, &graph.mesh)
            })
            .map_err(fail)?;
        let (found_dtype, found_shape) = match init {
            Init::Npy { .. } => npy_header(&path),
            Init::Safetensors { tensor, .. } => safetensors_header(&path, tensor),
            Init::Raw { offset, .. } => {
                let need = dims
                    .iter()
                    .try_fold(dtype.size_bytes(), |acc, &d| acc.checked_mul(d))
                    .and_then(|n| n.checked_add(*offset));
                check_raw_len(&path, need).map_err(fail)?;
                continue;
            }
            _ => continue,
        }
        .map_err(fail)?;
        if found_dtype != *dtype || found_shape != dims {
            let declared = if dims == local {
                format!("{dtype}{shape} = {dtype}{dims:?}")
            } else {
                format!("{dtype}{shape} per device, {dtype}{dims:?} whole")
            };
            return Err(fail(format!(
                "`{}` holds {}{:?} but the node declares {declared}",
                path.display(),
                found_dtype,
                found_shape
            )));
        }
    }
    Ok(())
}

/// The whole tensor's shape of a value whose per-device piece has shape `local`: each dim
/// times the sizes of the mesh axes it is split over (the layout the executor
/// materialises a device's piece from).
fn whole_shape(local: &[u64], sharding: &Sharding, mesh: &Mesh) -> Result<Vec<u64>, String> {
    let mut dims = local.to_vec();
    for axis in mesh.axes() {
        if let Placement::Split(d) = sharding.placement(&axis.name)
            && let Some(dim) = dims.get_mut(d)
        {
            *dim = dim
                .checked_mul(axis.size)
                .ok_or_else(|| format!("the whole tensor's dim {d} overflows 64 bits"))?;
        }
    }
    Ok(dims)
}

/// Checks that a raw data file holds at least `need` bytes (the end of the tensor's data).
pub fn check_raw_len(path: &Path, need: Option<u64>) -> Result<(), String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot open `{}`: {e}", path.display()))?
        .len();
    match need {
        Some(n) if n <= size => Ok(()),
        Some(n) => Err(format!(
            "`{}` has {size} bytes, but the tensor's data ends at byte {n}",
            path.display()
        )),
        None => Err(format!(
            "the tensor in `{}` is too large to address",
            path.display()
        )),
    }
}

fn open(path: &Path) -> Result<File, String> {
    File::open(path).map_err(|e| format!("cannot open `{}`: {e}", path.display()))
}

/// Dtype and shape from a `.npy` header (little-endian, C order).
pub fn npy_header(path: &Path) -> Result<(DType, Vec<u64>), String> {
    let file = open(path)?;
    let npy = npyz::NpyFile::new(std::io::BufReader::new(file))
        .map_err(|e| format!("`{}` is not a readable .npy file: {e}", path.display()))?;
    if npy.order() != npyz::Order::C {
        return Err(format!(
            "`{}` is stored in Fortran order; save it in C order",
            path.display()
        ));
    }
    let dtype = match npy.dtype() {
        npyz::DType::Plain(t) => {
            let little = t.endianness() != npyz::Endianness::Big;
            match (t.type_char(), t.size_field(), little) {
                (npyz::TypeChar::Float, 4, true) => DType::F32,
                (npyz::TypeChar::Float, 2, true) => DType::F16,
                (npyz::TypeChar::Int, 8, true) => DType::I64,
                (npyz::TypeChar::Int, 4, true) => DType::I32,
                (npyz::TypeChar::Bool, 1, _) => DType::Bool,
                _ => {
                    return Err(format!(
                        "`{}` has numpy dtype `{}`, which Weft does not read",
                        path.display(),
                        t
                    ));
                }
            }
        }
        other => {
            return Err(format!(
                "`{}` has a structured dtype ({other:?}); only plain arrays are read",
                path.display()
            ));
        }
    };
    Ok((dtype, npy.shape().to_vec()))
}

/// Dtype and shape of one tensor of a `.safetensors` file (header only, memory-mapped).
pub fn safetensors_header(path: &Path, tensor: &str) -> Result<(DType, Vec<u64>), String> {
    let file = open(path)?;
    // Only the length prefix and the JSON header are read; the tensor data is not.
    let mut reader = std::io::BufReader::new(file);
    let (_, meta) = read_safetensors_metadata(&mut reader).map_err(|e| {
        format!(
            "`{}` is not a readable .safetensors file: {e}",
            path.display()
        )
    })?;
    let info = meta.info(tensor).ok_or_else(|| {
        let mut names: Vec<String> = meta.tensors().into_keys().collect();
        names.sort();
        format!(
            "`{}` has no tensor `{tensor}` (it has: {})",
            path.display(),
            names.join(", ")
        )
    })?;
    use safetensors::Dtype as S;
    let dtype = match info.dtype {
        S::F32 => DType::F32,
        S::F16 => DType::F16,
        S::BF16 => DType::Bf16,
        S::F8_E4M3 => DType::F8e4m3,
        S::I64 => DType::I64,
        S::I32 => DType::I32,
        S::BOOL => DType::Bool,
        other => {
            return Err(format!(
                "tensor `{tensor}` of `{}` has dtype {other:?}, which Weft does not read",
                path.display()
            ));
        }
    };
    Ok((dtype, info.shape.iter().map(|&d| d as u64).collect()))
}

fn read_safetensors_metadata(
    reader: &mut impl std::io::Read,
) -> Result<(usize, safetensors::tensor::Metadata), String> {
    let mut len = [0u8; 8];
    reader.read_exact(&mut len).map_err(|e| e.to_string())?;
    let n = u64::from_le_bytes(len);
    if n > 100 * 1024 * 1024 {
        return Err(format!("header length {n} is implausible"));
    }
    let mut header = vec![0u8; n as usize];
    reader.read_exact(&mut header).map_err(|e| e.to_string())?;
    let meta: safetensors::tensor::Metadata =
        serde_json::from_slice(&header).map_err(|e| e.to_string())?;
    Ok((n as usize, meta))
}
