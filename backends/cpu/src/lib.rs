//! # weft-backend-cpu — the reference executor
//!
//! Runs IR graphs on the CPU, exactly and deterministically: every op in f32 with the
//! narrow dtypes' rounding emulated, matrix products through the `gemm` crate, attention
//! blockwise. A graph with a mesh runs as one thread per rank; the threads share nothing
//! but the simulated collectives ([`collectives`]), whose reduction order is fixed, so
//! the same inputs and rank count give bit-identical outputs.
//!
//! This executor is the oracle every other stage (sharding, rewrites, the CUDA backend)
//! is checked against.

mod collective_matmul;
pub mod collectives;
mod error;
mod exec;
pub mod external;
pub mod kernels;
pub mod materialize;
pub mod memory;
pub mod mesh_coords;
mod plan_exec;
mod plan_sync;
pub mod progress;
mod tokenweave;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use error::ExecError;
pub use exec::{Session, input_type, random_input, run, run_programs, run_ranks};
pub use plan_exec::{run_plan, run_plan_unverified};
pub use progress::{Phase, Progress};

/// How to run a graph.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Folder that external weight paths are relative to (the model file's folder).
    pub base_dir: PathBuf,
    /// How long a rank waits for its peers at a collective before reporting them.
    pub timeout: Duration,
    /// Threads each rank's matrix products may use (1 = none besides the rank's own).
    pub threads: usize,
    /// Where to report progress of long work; `None` reports nothing.
    pub progress: Option<Progress>,
    /// Chunk count per fused GEMM + reduce-scatter node (by node name), as a plan's
    /// `KernelConfig::Pipelined { chunks }` gives it: the op no longer carries one (every
    /// count computes the same value). A node not listed runs in 1 chunk — the whole GEMM,
    /// then its reduce-scatter.
    pub chunks: BTreeMap<String, u64>,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            base_dir: PathBuf::from("."),
            timeout: Duration::from_secs(30),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            progress: None,
            chunks: BTreeMap::new(),
        }
    }
}

/// Named tensors, the graph's inputs or outputs.
pub type Tensors = BTreeMap<String, weft_ir::Tensor>;
