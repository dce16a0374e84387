//! What a run of this executor needs in memory, known before anything is allocated, so
//! a run that cannot fit is refused with the figures instead of aborting halfway.
//!
//! All simulated ranks share this process: the total is every rank's peak
//! ([`weft_ir::peak_memory`] under this executor's element sizes) plus the caller's
//! logical inputs and the reassembled logical outputs.

use weft_ir::{DType, DimError, Graph, MemoryEstimate, Placement, ValueId, peak_memory};

/// Bytes one element of `dtype` takes here: every float dtype is computed and held as
/// `f32`, integers as `i64`, bools as one byte.
pub fn host_bytes(dtype: DType) -> u64 {
    match dtype {
        DType::F32 | DType::F16 | DType::Bf16 | DType::F8e4m3 => 4,
        DType::I64 | DType::I32 => 8,
        DType::Bool => 1,
    }
}

/// The memory of one run, in parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunEstimate {
    /// One rank's peak (the ranks of an SPMD graph are alike).
    pub per_rank: MemoryEstimate,
    pub ranks: u64,
    /// The whole inputs the caller passes in.
    pub logical_inputs: u128,
    /// The whole outputs reassembled from the ranks' pieces.
    pub logical_outputs: u128,
}

impl RunEstimate {
    /// Bytes the process needs at least.
    pub fn total(&self) -> u128 {
        self.per_rank.total() * u128::from(self.ranks) + self.logical_inputs + self.logical_outputs
    }
}

/// The memory a run of `graph` needs; an error only when a value's size does not fit
/// in 64 bits or a dim is unbound.
pub fn estimate(graph: &Graph) -> Result<RunEstimate, DimError> {
    let logical = |v: ValueId| -> Result<u128, DimError> {
        let value = graph.value(v);
        let pieces: u128 = value
            .sharding
            .entries()
            .filter(|(_, p)| matches!(p, Placement::Split(_)))
            .filter_map(|(axis, _)| graph.mesh.axis_size(axis))
            .map(u128::from)
            .product();
        let numel = value.ty.shape.numel(&graph.dims);
        let local = u128::from(numel.map_err(|e| e.of_value(&value.name))?);
        Ok(local * pieces * u128::from(host_bytes(value.ty.dtype)))
    };
    let mut logical_inputs = 0;
    for v in graph.inputs() {
        logical_inputs += logical(v)?;
    }
    let mut logical_outputs = 0;
    for &v in &graph.outputs {
        logical_outputs += logical(v)?;
    }
    Ok(RunEstimate {
        per_rank: peak_memory(graph, host_bytes)?,
        ranks: graph.mesh.num_devices(),
        logical_inputs,
        logical_outputs,
    })
}
