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
pub use weft_ir as ir;
pub use weft_passes as passes;

pub mod inputs;
pub mod memory;
pub mod progress;
mod report;
pub mod saturation;
pub mod tensor_io;
pub mod zoo;
pub use report::{CheckReport, CollectiveEntry, CommSummary};

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LoadError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Json(#[from] json::JsonError),
    #[error(transparent)]
    Onnx(#[from] weft_frontend_onnx::OnnxError),
    #[error("{}: unknown model type; Weft reads `.json` (docs/json-format.md) and `.onnx` models", .0.display())]
    UnknownFormat(PathBuf),
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

/// Runs the passes that take a parsed graph to `stage`, verifying after each.
pub fn to_stage(
    graph: ir::Graph,
    stage: Stage,
) -> Result<(ir::Graph, Vec<passes::PassReport>), passes::PassError> {
    match stage {
        Stage::Parsed => Ok((graph, Vec::new())),
        Stage::Raised => passes::PassManager::new()
            .with(passes::RaisePatterns::default())
            .with(passes::DeadCodeElimination)
            .run(graph),
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

/// Loads and verifies a model, choosing the frontend by the file's extension.
pub fn load_model(path: &Path, options: &LoadOptions) -> Result<ir::Graph, LoadError> {
    let start = std::time::Instant::now();
    let graph = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => Ok(json::load_with(
            path,
            &json::LoadOptions {
                dims: options.dims.clone(),
            },
        )?),
        Some("onnx") => Ok(weft_frontend_onnx::load(
            path,
            &weft_frontend_onnx::ImportOptions {
                dims: options.dims.clone(),
                ..Default::default()
            },
        )?),
        _ => Err(LoadError::UnknownFormat(path.to_owned())),
    }?;
    tracing::info!(
        path = %path.display(),
        nodes = graph.num_nodes(),
        elapsed = ?start.elapsed(),
        "model loaded and verified"
    );
    Ok(graph)
}
