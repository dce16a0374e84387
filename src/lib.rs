//! # weft — compiler for distributed ML model graphs
//!
//! This facade ties the workspace together for the `weft` CLI and for embedders:
//! [`load_model`] picks a frontend by file type, and the crates are re-exported as
//! [`ir`], [`passes`] and [`json`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use weft_backend_cpu as cpu;
pub use weft_frontend_json as json;
pub use weft_frontend_onnx as onnx;
pub use weft_hardware as hardware;
pub use weft_ir as ir;
pub use weft_passes as passes;
pub use weft_plan as plan;

pub mod compile;
pub mod inputs;
pub mod inspect;
pub mod ladder_sweep;
pub mod memory;
pub mod plan_io;
pub mod progress;
mod report;
pub mod saturation;
pub mod tensor_io;
pub mod training;
pub mod validation;
pub mod zoo;
pub use report::{CheckReport, CollectiveEntry, CommSummary, FallbackEntry};

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LoadError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Json(#[from] json::JsonError),
    #[error(transparent)]
    Onnx(#[from] weft_frontend_onnx::OnnxError),
    #[error("{}: unknown model type: neither its content nor its extension says Weft JSON (docs/json-format.md) or ONNX", .0.display())]
    UnknownFormat(PathBuf),
    #[error("{}: is a directory, not a model file (give a `.json` or `.onnx` file)", .0.display())]
    Directory(PathBuf),
}

/// The model formats Weft reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Onnx,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Json => "Weft JSON",
            Format::Onnx => "ONNX",
        }
    }
}

/// The format of the model at `path`: by content when the first bytes say (a JSON model
/// is an object, `{`; an ONNX model is a protobuf `ModelProto` whose first field is
/// `ir_version`, tag byte 0x08), else by extension. A file whose extension names the other
/// format is read by its content, with a warning. `None`: neither says.
fn sniff_format(path: &Path) -> Option<Format> {
    let by_name = match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("json") => Some(Format::Json),
        Some(e) if e.eq_ignore_ascii_case("onnx") => Some(Format::Onnx),
        _ => None,
    };
    let mut head = [0u8; 64];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    let text = head[..n]
        .strip_prefix(b"\xef\xbb\xbf")
        .unwrap_or(&head[..n]);
    let by_content = match text.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Some(Format::Json),
        _ if text.first() == Some(&0x08) => Some(Format::Onnx),
        _ => None,
    };
    match (by_name, by_content) {
        (Some(named), Some(found)) if named != found => {
            tracing::warn!(
                path = %path.display(),
                "the file's extension says {} but it holds {}: read as {}",
                named.name(),
                found.name(),
                found.name()
            );
            Some(found)
        }
        (named, found) => found.or(named),
    }
}

/// How far a loaded model is taken before it is used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stage {
    /// As the frontend produced it.
    Parsed,
    /// With decomposed patterns (attention, RMSNorm, rotary embedding, SiLU) raised to IR ops and dead
    /// nodes removed.
    #[default]
    Raised,
}

/// Runs the passes that take a parsed graph to `stage`, verifying after each. No
/// model-changing rewrite runs: see [`to_stage_allowing`].
pub fn to_stage(
    graph: ir::Graph,
    stage: Stage,
) -> Result<(ir::Graph, Vec<passes::PassReport>), passes::PassError> {
    to_stage_allowing(graph, stage, &passes::model_change::AllowOptions::default())
}

/// [`to_stage`] with the model-changing rewrites `allow` asks for (`--allow`), applied
/// to the raised graph before dead-code elimination, so that new weights the model file
/// holds under their documented names (docs/rewrites.md), unused by the source model,
/// are still there to be read. Asking for one at `Stage::Parsed` is refused: the parsed
/// graph is the frontend's, unchanged.
pub fn to_stage_allowing(
    graph: ir::Graph,
    stage: Stage,
    allow: &passes::model_change::AllowOptions,
) -> Result<(ir::Graph, Vec<passes::PassReport>), passes::PassError> {
    match stage {
        Stage::Parsed if allow.is_empty() => Ok((graph, Vec::new())),
        Stage::Parsed => Err(passes::PassError::Refused {
            pass: "model-change",
            reason: format!(
                "--allow {} changes the raised graph; the parsed stage is the frontend's, \
                 unchanged (use --stage raised or later)",
                allow.names().join(",")
            ),
        }),
        Stage::Raised => {
            let mut manager = passes::PassManager::new().with(passes::RaisePatterns::default());
            if !allow.is_empty() {
                manager = manager.with(passes::model_change::ModelChangePass {
                    options: allow.clone(),
                });
            }
            manager.with(passes::DeadCodeElimination).run(graph)
        }
    }
}

/// Shards a single-device graph over `mesh` (`tp=4`, `tp=2,dp=2`): the SPMD graph every
/// device runs, with explicit collectives (see `passes/src/shard/`).
pub fn shard(graph: &ir::Graph, mesh: &ir::Mesh) -> Result<ir::Graph, passes::shard::ShardError> {
    let options = passes::shard::ShardOptions {
        mesh: mesh.clone(),
        sp_norms: false,
    };
    passes::shard::shard(graph, &options)
}

/// Options that apply whatever the model's format.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Values for symbolic dims that replace the model's own.
    pub dims: BTreeMap<String, u64>,
}

/// Loads and verifies a model, choosing the frontend by the file's content (or, when the
/// first bytes do not tell, its extension).
pub fn load_model(path: &Path, options: &LoadOptions) -> Result<ir::Graph, LoadError> {
    let start = std::time::Instant::now();
    if path.is_dir() {
        return Err(LoadError::Directory(path.to_owned()));
    }
    let graph = match sniff_format(path) {
        Some(Format::Json) => Ok(json::load_with(
            path,
            &json::LoadOptions {
                dims: options.dims.clone(),
            },
        )?),
        Some(Format::Onnx) => Ok(weft_frontend_onnx::load(
            path,
            &weft_frontend_onnx::ImportOptions {
                dims: options.dims.clone(),
                ..Default::default()
            },
        )?),
        None => Err(LoadError::UnknownFormat(path.to_owned())),
    }?;
    tracing::info!(
        path = %path.display(),
        nodes = graph.num_nodes(),
        elapsed = ?start.elapsed(),
        "model loaded and verified"
    );
    Ok(graph)
}
