//! Kernel facts the ranks of a collective must agree on, or they hang.
//!
//! A fused GEMM + collective pipelined in `chunks` pieces issues one collective call per
//! chunk: two ranks with different chunk counts issue different numbers of calls, and
//! NCCL waits forever for the calls one of them never makes. So every rank runs each
//! node with the same chunk count. A collective's configuration must also describe the
//! call it configures: its `group_size` is the task's group along the node's axis and
//! its `message_bytes` is the IR's message size for the node
//! ([`weft_ir::occupancy::message_bytes`], [`weft_ir::occupancy::fused_collective_bytes`];
//! for an all-to-all of padded expert blocks, its expected payload,
//! [`weft_ir::occupancy::payload_bytes`]), divided by the chunk count for a pipelined kernel (whose configuration is that of each
//! chunk's call).

use std::collections::BTreeMap;

use weft_ir::occupancy::{fused_collective_bytes, message_bytes, payload_bytes};
use weft_ir::{Node, Occupancy};

use super::{RankFacts, Verifier, task_label};
use crate::{CollectiveConfig, KernelConfig, Plan, PlanRule, RankPlan};

/// Each configured collective's `group_size` and `message_bytes` match its node (node
/// names already checked).
pub(super) fn on_rank(v: &mut Verifier<'_>, plan: &Plan, rp: &RankPlan) {
    for (t, task) in rp.tasks.iter().enumerate() {
        let (config, chunks) = match &task.kernel {
            KernelConfig::Collective(c) | KernelConfig::CommNorm { collective: c, .. } => (c, 1),
            KernelConfig::Pipelined {
                collective, chunks, ..
            } => (collective, *chunks),
            KernelConfig::View
            | KernelConfig::Gemm { .. }
            | KernelConfig::MemoryBound { .. }
            | KernelConfig::Unconfigured { .. } => continue,
        };
        let comm: Vec<&Node> = task
            .nodes
            .iter()
            .map(|n| v.program.node(v.node_by_name[n.as_str()]))
            .filter(|n| n.op.occupancy().communicates())
            .collect();
        // A collective kernel on a task without exactly one communicating node is the
        // collectives rule's finding already.
        let [node] = comm.as_slice() else { continue };
        if let Some(p) = check_config(v, plan, rp, node, config, chunks) {
            let m = format!("{}'s collective kernel {p}", task_label(rp, t));
            v.err(Some(rp.rank), PlanRule::Kernel, m);
        }
    }
}

/// What is wrong with `config` as the configuration of `node`'s collective on `rp`.
fn check_config(
    v: &Verifier<'_>,
    plan: &Plan,
    rp: &RankPlan,
    node: &Node,
    config: &CollectiveConfig,
    chunks: u64,
) -> Option<String> {
    let occupancy = node.op.occupancy();
    let c = occupancy.collective()?;
    let Some(group) = crate::mesh::group(&plan.mesh, rp.rank, c.axis) else {
        return Some(format!(
            "configures `{}` over `{}`, which the mesh lacks",
            node.name, c.axis
        ));
    };
    let group_size = group.len() as u64;
    if config.group_size != group_size {
        return Some(format!(
            "has group_size {}, but `{}` communicates over `{}` in a group of {group_size} ranks {group:?}",
            config.group_size, node.name, c.axis
        ));
    }
    let bytes = |value: Option<&weft_ir::ValueId>| -> Result<u64, String> {
        match value {
            None => Ok(0),
            Some(&id) => {
                let value = v.program.value(id);
                value
                    .ty
                    .size_bytes(&v.program.dims)
                    .map_err(|e| format!("`{}`'s size: {e}", value.name))
            }
        }
    };
    let sizes = bytes(node.inputs.first()).and_then(|i| Ok((i, bytes(node.outputs.first())?)));
    let (input, output) = match sizes {
        Ok(s) => s,
        Err(e) => return Some(format!("cannot be checked: {e}")),
    };
    let expected = match occupancy {
        Occupancy::Both(_) => fused_collective_bytes(&node.op, input, output, group_size),
        Occupancy::Comm(_) => payload_bytes(&node.op, message_bytes(c.kind, input, output)),
        Occupancy::Source | Occupancy::View | Occupancy::Compute => None,
    };
    // A pipelined kernel makes one call per chunk: its configuration is one chunk's.
    match expected {
        Some(bytes) if config.message_bytes.checked_mul(chunks) == Some(bytes) => None,
        Some(bytes) if chunks == 1 => Some(format!(
            "has message_bytes {}, but `{}`'s {} moves a {bytes}-byte message",
            config.message_bytes,
            node.name,
            c.kind.name()
        )),
        Some(bytes) => Some(format!(
            "has message_bytes {} per chunk, but `{}`'s {} moves a {bytes}-byte message in \
             {chunks} chunks",
            config.message_bytes,
            node.name,
            c.kind.name()
        )),
        None => Some(format!(
            "configures `{}`, whose message size overflows 64 bits",
            node.name
        )),
    }
}

/// Every rank runs each node with the same chunk count (ranks with broken structure are
/// left out: their own errors come first).
pub(super) fn chunks_across_ranks(v: &mut Verifier<'_>, plan: &Plan, facts: &[RankFacts]) {
    // Node → (first rank that runs it, its task there, its chunk count).
    let mut first: BTreeMap<&str, (usize, usize, Option<u64>)> = BTreeMap::new();
    for (rank, _) in facts.iter().enumerate().filter(|(_, f)| f.complete) {
        let rp = &plan.ranks[rank];
        for (t, task) in rp.tasks.iter().enumerate() {
            let chunks = task.kernel.chunks();
            for node in &task.nodes {
                let Some(&(r0, t0, c0)) = first.get(node.as_str()) else {
                    first.insert(node.as_str(), (rank, t, chunks));
                    continue;
                };
                if c0 != chunks {
                    let show =
                        |c: Option<u64>| c.map_or_else(|| "none".to_owned(), |c| c.to_string());
                    let m = format!(
                        "`{node}` runs in {} chunk(s) on rank {r0} ({}) but {} on rank {rank} ({}): \
                         the ranks would issue different numbers of collective calls and deadlock",
                        show(c0),
                        task_label(&plan.ranks[r0], t0),
                        show(chunks),
                        task_label(rp, t)
                    );
                    v.err(Some(rank as u32), PlanRule::Collectives, m);
                }
            }
        }
    }
}
