//! Communication volume of a sharded graph, per collective.
//!
//! `bytes` are NCCL's message sizes, per device: an all-reduce or reduce-scatter counts
//! its input, an all-gather its (whole) output, an all-to-all its input; a fused GEMM +
//! reduce-scatter or all-gather + GEMM counts the collective inside it. `wire_bytes`
//! are what each device sends with ring algorithms over `n` devices: `2(n-1)/n` of the
//! message for an all-reduce, `(n-1)/n` for the others — so an all-reduce and the
//! reduce-scatter plus all-gather that replace it send the same. `all_slice` moves
//! nothing and is not listed.

use weft_ir::{DimError, Graph, Op};

/// One collective of the graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectiveCost {
    pub node: String,
    /// `all_reduce`, `all_gather`, `reduce_scatter`, `all_to_all`, or a fused
    /// `matmul_reduce_scatter` / `all_gather_matmul`.
    pub kind: &'static str,
    pub axis: String,
    pub bytes: u64,
    pub wire_bytes: u64,
}

/// All collectives of a graph and their totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommReport {
    pub collectives: Vec<CollectiveCost>,
    pub total_bytes: u64,
    pub total_wire_bytes: u64,
    /// Attention ops in the graph (fused, or spelled out around a softmax), taken as its
    /// layer count (at least 1).
    pub layers: u64,
    /// `total_bytes / layers`: the embedding's and the head's collectives included.
    pub bytes_per_layer: u64,
}

/// The collectives of `graph` (a sharded graph) and the bytes each moves. Every figure
/// is checked: one past `u64` is [`DimError::Overflow`], never wrapped or saturated.
pub fn comm_report(graph: &Graph) -> Result<CommReport, DimError> {
    let overflow = |what: &str| DimError::Overflow(format!("the bytes {what}"));
    let mut collectives = Vec::new();
    let mut layers = 0u64;
    for (_, node) in graph.nodes() {
        if matches!(node.op, Op::Attention { .. } | Op::Softmax { .. }) {
            layers += 1;
        }
        let bytes_of = |v| graph.value(v).ty.size_bytes(&graph.dims);
        let times = |bytes: Result<u64, DimError>, n: u64| {
            bytes?
                .checked_mul(n)
                .ok_or_else(|| overflow(&format!("of `{}`", node.name)))
        };
        let (kind, axis, bytes) = match &node.op {
            Op::AllReduce { axis, .. } => ("all_reduce", axis, bytes_of(node.inputs[0])),
            Op::ReduceScatter { axis, .. } => ("reduce_scatter", axis, bytes_of(node.inputs[0])),
            Op::AllGather { axis, .. } => ("all_gather", axis, bytes_of(node.outputs[0])),
            Op::AllToAll { axis, .. } => ("all_to_all", axis, bytes_of(node.inputs[0])),
            // Fused GEMM + collective (after saturation): the collective inside.
            Op::MatMulReduceScatter { axis, .. } => {
                let n = graph.mesh.axis_size(axis).unwrap_or(1);
                (
                    "matmul_reduce_scatter",
                    axis,
                    times(bytes_of(node.outputs[0]), n),
                )
            }
            Op::AllGatherMatMul { axis, .. } => {
                let n = graph.mesh.axis_size(axis).unwrap_or(1);
                (
                    "all_gather_matmul",
                    axis,
                    times(bytes_of(node.inputs[0]), n),
                )
            }
            _ => continue,
        };
        let bytes = bytes?;
        let n = graph.mesh.axis_size(axis).unwrap_or(1).max(1);
        // bytes·(n-1)/n, in 128 bits so the product cannot wrap; the share is at most `bytes`.
        let share = (u128::from(bytes) * u128::from(n - 1) / u128::from(n)) as u64;
        let wire_bytes = if kind == "all_reduce" {
            share
                .checked_mul(2)
                .ok_or_else(|| overflow(&format!("`{}` sends", node.name)))?
        } else {
            share
        };
        collectives.push(CollectiveCost {
            node: node.name.clone(),
            kind,
            axis: axis.clone(),
            bytes,
            wire_bytes,
        });
    }
    let sum = |f: fn(&CollectiveCost) -> u64, what: &str| {
        collectives
            .iter()
            .try_fold(0u64, |acc, c| acc.checked_add(f(c)))
            .ok_or_else(|| overflow(what))
    };
    let total_bytes = sum(|c| c.bytes, "in all messages")?;
    let total_wire_bytes = sum(|c| c.wire_bytes, "sent in all")?;
    let layers = layers.max(1);
    Ok(CommReport {
        collectives,
        total_bytes,
        total_wire_bytes,
        layers,
        bytes_per_layer: total_bytes / layers,
    })
}
