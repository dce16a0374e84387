//! Tensor files for `weft run`: numpy `.npy`/`.npz` and ONNX `TensorProto` `.pb`.
//!
//! These are the formats model inputs and reference outputs already come in: numpy's
//! own, and the `input_N.pb` files of ONNX test-data directories. Outputs are written as
//! `.npz`, which `np.load` opens directly.
//!
//! Every function here reads untrusted files: a bad file gives a [`TensorIoError`] that
//! names the file (and the array inside an `.npz`), never a panic.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use weft_frontend_onnx::{OnnxTensorError, decode_tensor_proto};
use weft_ir::{Tensor, TensorError};
use zip::result::ZipError;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

mod npy;
#[cfg(test)]
mod tests;

use npy::NpyError;

/// Why tensors could not be read or written. Each message starts with the file (and, in
/// an `.npz`, the array) it is about.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum TensorIoError {
    #[error("{}: no such file or directory", .path.display())]
    NotFound { path: PathBuf },
    #[error("{}: cannot {action}: {source}", .path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    #[error(
        "{}: unknown tensor file type; Weft reads .npy, .npz and .pb (an ONNX TensorProto)",
        .path.display()
    )]
    UnknownFormat { path: PathBuf },
    #[error("{}: not a directory", .path.display())]
    NotADirectory { path: PathBuf },
    #[error(
        "{}: no input_0.pb; an ONNX test-data directory holds input_0.pb, input_1.pb, …",
        .dir.display()
    )]
    NoInputs { dir: PathBuf },
    #[error("{}: {reason}", at(.path, .entry))]
    BadNpy {
        path: PathBuf,
        entry: Option<String>,
        reason: String,
    },
    #[error("{}: unsupported dtype '{descr}': {reason}", at(.path, .entry))]
    UnsupportedDtype {
        path: PathBuf,
        entry: Option<String>,
        descr: String,
        reason: &'static str,
    },
    #[error(
        "{}: Fortran-order arrays are not supported; save a C-order copy \
         (np.ascontiguousarray)",
        at(.path, .entry)
    )]
    FortranOrder {
        path: PathBuf,
        entry: Option<String>,
    },
    #[error("{}: not a valid .npz archive: {source}", .path.display())]
    BadArchive { path: PathBuf, source: ZipError },
    #[error("{}: cannot write the .npz archive: {source}", .path.display())]
    WriteArchive { path: PathBuf, source: ZipError },
    #[error("{}: two arrays are named {name:?}", .path.display())]
    DuplicateName { path: PathBuf, name: String },
    #[error("{}: cannot store an array named {name:?}: {reason}", .path.display())]
    EntryName {
        path: PathBuf,
        name: String,
        reason: &'static str,
    },
    #[error("{}: {source}", .path.display())]
    Onnx {
        path: PathBuf,
        // Boxed: it is the largest error by far, and every Result here carries the size.
        source: Box<OnnxTensorError>,
    },
    #[error("{}: {source}", at(.path, .entry))]
    Tensor {
        path: PathBuf,
        entry: Option<String>,
        source: TensorError,
    },
}

/// `file` or `file: array "x.npy"`, for messages.
fn at(path: &Path, entry: &Option<String>) -> String {
    match entry {
        Some(entry) => format!("{}: array {entry:?}", path.display()),
        None => path.display().to_string(),
    }
}

impl NpyError {
    fn at(self, path: &Path, entry: Option<&str>) -> TensorIoError {
        let (path, entry) = (path.to_owned(), entry.map(str::to_owned));
        match self {
            NpyError::Malformed(reason) => TensorIoError::BadNpy {
                path,
                entry,
                reason,
            },
            NpyError::UnsupportedDtype { descr, reason } => TensorIoError::UnsupportedDtype {
                path,
                entry,
                descr,
                reason,
            },
            NpyError::FortranOrder => TensorIoError::FortranOrder { path, entry },
            NpyError::Tensor(source) => TensorIoError::Tensor {
                path,
                entry,
                source,
            },
        }
    }
}

fn io_error(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> TensorIoError {
    move |source| match source.kind() {
        io::ErrorKind::NotFound => TensorIoError::NotFound {
            path: path.to_owned(),
        },
        _ => TensorIoError::Io {
            path: path.to_owned(),
            action,
            source,
        },
    }
}

/// Reads the named tensors in a file, choosing the format by extension:
///
/// - `.npy`: one array, named after the file stem;
/// - `.npz` (`np.savez` or `np.savez_compressed`): every array, in archive order, named
///   as `np.load` names them (the entry name without `.npy`);
/// - `.pb`: one ONNX `TensorProto`, named by the proto or else after the file stem.
///
/// numpy dtypes read: float32, float16, float64 (rounded to f32), int64, int32, bool;
/// little-endian, C order. 8- and 16-bit and unsigned integers are refused, not widened. ONNX types: see [`weft_frontend_onnx::tensor`].
pub fn read_tensor_file(path: &Path) -> Result<Vec<(String, Tensor)>, TensorIoError> {
    let stem = || {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let ext = path
        .extension()
        .and_then(OsStr::to_str)
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("npy") => {
            let bytes = std::fs::read(path).map_err(io_error(path, "read"))?;
            let tensor = npy::decode(&bytes).map_err(|e| e.at(path, None))?;
            Ok(vec![(stem(), tensor)])
        }
        Some("npz") => read_npz(path),
        Some("pb") => {
            let bytes = std::fs::read(path).map_err(io_error(path, "read"))?;
            let (name, tensor) =
                decode_tensor_proto(&bytes).map_err(|source| TensorIoError::Onnx {
                    path: path.to_owned(),
                    source: Box::new(source),
                })?;
            Ok(vec![(if name.is_empty() { stem() } else { name }, tensor)])
        }
        _ => Err(TensorIoError::UnknownFormat {
            path: path.to_owned(),
        }),
    }
}

fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>, TensorIoError> {
    let bad_archive = |source| TensorIoError::BadArchive {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_error(path, "read"))?;
    let mut archive = ZipArchive::new(BufReader::new(file)).map_err(bad_archive)?;
    let mut arrays = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(bad_archive)?;
        if entry.is_dir() {
            continue;
        }
        let entry_name = entry.name().map_err(bad_archive)?.into_owned();
        // Read no more than the entry declares, growing the buffer only as data arrives:
        // a corrupt size field must not make us allocate it up front. Deflated entries
        // are inflated and CRC-checked by `zip` as they are read.
        let mut bytes = Vec::new();
        let declared = entry.size();
        (&mut entry)
            .take(declared.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| TensorIoError::BadNpy {
                path: path.to_owned(),
                entry: Some(entry_name.clone()),
                reason: format!("cannot read it from the archive: {e}"),
            })?;
        let tensor = npy::decode(&bytes).map_err(|e| e.at(path, Some(&entry_name)))?;
        let name = entry_name
            .strip_suffix(".npy")
            .unwrap_or(&entry_name)
            .to_owned();
        arrays.push((name, tensor));
    }
    Ok(arrays)
}

/// Reads an ONNX test-data directory's inputs: `input_0.pb`, `input_1.pb`, … in order,
/// up to the first index with no file. Errors if there is no `input_0.pb`.
pub fn read_input_dir(dir: &Path) -> Result<Vec<Tensor>, TensorIoError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(TensorIoError::NotADirectory {
                path: dir.to_owned(),
            });
        }
        Err(e) => return Err(io_error(dir, "read")(e)),
    }
    let mut tensors = Vec::new();
    loop {
        let path = dir.join(format!("input_{}.pb", tensors.len()));
        if !path.try_exists().map_err(io_error(&path, "read"))? {
            break;
        }
        // A .pb file holds exactly one tensor.
        tensors.extend(read_tensor_file(&path)?.into_iter().map(|(_, t)| t));
    }
    if tensors.is_empty() {
        return Err(TensorIoError::NoInputs {
            dir: dir.to_owned(),
        });
    }
    Ok(tensors)
}

/// Why `name` cannot be an `.npz` entry name, if it cannot. Entry names are paths inside
/// the archive, and a model chooses its output names: an output named `../../x` would be
/// unpacked outside the folder of whoever unzips the file. A `/` inside a name is kept
/// (numpy reads `a/b.npy` back as `a/b`), but a name may not start with `/`, no part may
/// be empty, `.` or `..`, and no backslash or NUL may appear.
pub fn npz_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("the name is empty")
    } else if name.contains('\\') || name.contains('\0') {
        Some("a backslash or NUL in an entry name is a path hazard inside a zip archive")
    } else if name.starts_with('/') {
        Some("an absolute path would be unpacked outside the folder the archive is unpacked in")
    } else if name
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        Some("a path part that is empty, `.` or `..` would point outside the array's own entry")
    } else {
        None
    }
}

/// Refuses names [`write_npz`] cannot store (see [`npz_name_problem`]), so a caller can
/// check before a long run rather than after it.
pub fn check_npz_names<'a>(
    path: &Path,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), TensorIoError> {
    for name in names {
        if let Some(reason) = npz_name_problem(name) {
            return Err(TensorIoError::EntryName {
                path: path.to_owned(),
                name: name.to_owned(),
                reason,
            });
        }
    }
    Ok(())
}

/// Writes arrays as numpy's `np.savez` does: a zip of uncompressed `NAME.npy` entries, in
/// the order given, so `np.load(path)[NAME]` reads each back.
///
/// dtypes: f32 `<f4`, f16 `<f2`, i64 `<i8`, i32 `<i4`, bool `|b1`. bf16 and f8e4m3 are
/// written as `<f4`: numpy has no such dtypes, and their values are exactly f32 values, so
/// reading the file back gives f32 tensors with the same numbers. Entries carry the zip
/// epoch (1980-01-01) as their time, so the same arrays always give the same bytes.
pub fn write_npz(path: &Path, arrays: &[(String, Tensor)]) -> Result<(), TensorIoError> {
    check_npz_names(path, arrays.iter().map(|(name, _)| name.as_str()))?;
    let mut seen = HashSet::new();
    if let Some((name, _)) = arrays.iter().find(|(name, _)| !seen.insert(name)) {
        return Err(TensorIoError::DuplicateName {
            path: path.to_owned(),
            name: name.clone(),
        });
    }
    let write_archive = |source| TensorIoError::WriteArchive {
        path: path.to_owned(),
        source,
    };
    let file = File::create(path).map_err(io_error(path, "create"))?;
    let mut zip = ZipWriter::new(BufWriter::new(file));
    for (name, tensor) in arrays {
        let bytes = npy::encode(tensor).map_err(io_error(path, "write"))?;
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .large_file(bytes.len() as u64 >= u64::from(u32::MAX));
        zip.start_file(format!("{name}.npy"), options)
            .map_err(write_archive)?;
        zip.write_all(&bytes).map_err(io_error(path, "write"))?;
    }
    let mut out = zip.finish().map_err(write_archive)?;
    // Flush here: dropping a BufWriter would swallow a late write error.
    out.flush().map_err(io_error(path, "write"))
}
