//! Communication volume of a sharded graph, per communicating op.
//!
//! Which ops communicate, and over which axis, is [`Op::occupancy`]'s answer; the byte
//! figures are the IR's shared formulas (`ir/src/occupancy.rs`): `bytes` is NCCL's
//! message size per device ([`message_bytes`]; for a fused GEMM + collective, the
//! collective inside it, [`fused_collective_bytes`]), the buffer the executor moves;
//! `payload_bytes` what that message carries ([`payload_bytes`]: the message itself, but
//! for an all-to-all of padded expert blocks the expected payload under uniform routing,
//! `1/groups` of the buffer), which is what the cost model prices; and `wire_bytes` what
//! each device sends of the payload with ring algorithms over `n` devices ([`ring_wire_bytes`]: `2(n-1)/n` of the
//! message for an all-reduce, `(n-1)/n` for all-gather, reduce-scatter and all-to-all,
//! the whole message for a send or a broadcast, nothing for a receive) — so an all-reduce
//! and the reduce-scatter plus all-gather that replace it send the same. Local ops that
//! name an axis but move nothing (`all_slice`, `sharded_gather`) are not listed.

use weft_ir::occupancy::{fused_collective_bytes, message_bytes, payload_bytes, ring_wire_bytes};
use weft_ir::{CollectiveKind, DimError, Graph, Occupancy, segment_layers};

/// One communicating op of the graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectiveCost {
    pub node: String,
    /// The op's name: `all_reduce`, `all_gather`, `reduce_scatter`, `all_to_all`,
    /// `send`, `recv`, `broadcast`, or a fused `matmul_reduce_scatter` /
    /// `all_gather_matmul`.
    pub kind: &'static str,
    /// The collective it performs (the one inside, for a fused op).
    pub collective: CollectiveKind,
    pub axis: String,
    pub bytes: u64,
    /// What the message carries: `bytes`, except for padded expert blocks.
    pub payload_bytes: u64,
    /// What each device sends of the payload (ring algorithms).
    pub wire_bytes: u64,
    /// The layer the op belongs to (`ir/src/layers.rs`); `None` in the embedding or head.
    pub layer: Option<u32>,
}

/// All communicating ops of a graph and their totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommReport {
    pub collectives: Vec<CollectiveCost>,
    pub total_bytes: u64,
    pub total_payload_bytes: u64,
    pub total_wire_bytes: u64,
    /// The graph's layer count by segmentation of its residual stream
    /// ([`weft_ir::segment_layers`]); 0 for a graph without attention.
    pub layers: u64,
    /// `total_bytes` over the layer count (over 1 when there are no layers): the
    /// embedding's and the head's collectives included.
    pub bytes_per_layer: u64,
}

/// The communicating ops of `graph` (a sharded graph) and the bytes each moves. Every
/// figure is checked: one past `u64` is [`DimError::Overflow`], never wrapped or
/// saturated.
pub fn comm_report(graph: &Graph) -> Result<CommReport, DimError> {
    let overflow = |what: &str| DimError::Overflow(format!("the bytes {what}"));
    let layers = segment_layers(graph);
    let mut collectives = Vec::new();
    for (id, node) in graph.nodes() {
        let occupancy = node.op.occupancy();
        let collective = match occupancy {
            Occupancy::Comm(c) | Occupancy::Both(c) => c,
            Occupancy::Source | Occupancy::View | Occupancy::Compute => continue,
        };
        let bytes_of = |v| graph.value(v).ty.size_bytes(&graph.dims);
        // A send produces nothing; a receive reads nothing.
        let input = node.inputs.first().map_or(Ok(0), |&v| bytes_of(v))?;
        let output = node.outputs.first().map_or(Ok(0), |&v| bytes_of(v))?;
        let n = graph.mesh.axis_size(collective.axis).unwrap_or(1).max(1);
        let bytes = match occupancy {
            Occupancy::Both(_) => fused_collective_bytes(&node.op, input, output, n)
                .ok_or_else(|| overflow(&format!("of `{}`", node.name)))?,
            Occupancy::Source | Occupancy::View | Occupancy::Compute | Occupancy::Comm(_) => {
                message_bytes(collective.kind, input, output)
            }
        };
        let payload = payload_bytes(&node.op, bytes)
            .ok_or_else(|| overflow(&format!("of `{}` (zero expert groups)", node.name)))?;
        let wire_bytes = ring_wire_bytes(collective.kind, payload, n)
            .ok_or_else(|| overflow(&format!("`{}` sends", node.name)))?;
        collectives.push(CollectiveCost {
            node: node.name.clone(),
            kind: node.op.name(),
            collective: collective.kind,
            axis: collective.axis.to_owned(),
            bytes,
            payload_bytes: payload,
            wire_bytes,
            layer: layers.of(id),
        });
    }
    let sum = |f: fn(&CollectiveCost) -> u64, what: &str| {
        collectives
            .iter()
            .try_fold(0u64, |acc, c| acc.checked_add(f(c)))
            .ok_or_else(|| overflow(what))
    };
    let total_bytes = sum(|c| c.bytes, "in all messages")?;
    let total_payload_bytes = sum(|c| c.payload_bytes, "carried in all messages")?;
    let total_wire_bytes = sum(|c| c.wire_bytes, "sent in all")?;
    let count = u64::from(layers.count());
    Ok(CommReport {
        collectives,
        total_bytes,
        total_payload_bytes,
        total_wire_bytes,
        layers: count,
        bytes_per_layer: total_bytes / count.max(1),
    })
}
