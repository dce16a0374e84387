//! Collective calls: a task that communicates says which call it is (kind, axis, group,
//! sequence number); on each rank a group's calls are numbered 0, 1, 2, … in issue order
//! and ordered by happens-before (one communicator runs one call at a time); and every
//! rank of a group issues the same calls in the same order, each with the same kernel
//! configuration, or NCCL deadlocks.

use std::collections::BTreeMap;

use weft_ir::Occupancy;

use super::{Order, RankFacts, Verifier, task_label};
use crate::{KernelConfig, Plan, PlanRule, RankPlan};

/// A communicator: a mesh axis and the ranks of one group along it.
pub(crate) type GroupKey = (String, Vec<u32>);

/// One collective call on a rank: its task, kind and the task's nodes.
#[derive(Debug)]
pub(crate) struct Call {
    pub task: usize,
    pub kind: String,
    pub nodes: Vec<String>,
    /// The task's kernel: the ranks of one call must run it alike (algorithm, protocol,
    /// message, chunk count), or NCCL hangs.
    pub kernel: KernelConfig,
}

/// A rank's calls per group, in issue order.
pub(crate) type Calls = Vec<(GroupKey, Vec<Call>)>;

pub(super) fn on_rank(v: &mut Verifier<'_>, plan: &Plan, rp: &RankPlan, order: &Order) -> Calls {
    let r = Some(rp.rank);
    let mut groups: BTreeMap<GroupKey, Vec<Call>> = BTreeMap::new();
    for (t, task) in rp.tasks.iter().enumerate() {
        let comms: Vec<(&str, &str, &str)> = task
            .nodes
            .iter()
            .filter_map(|n| {
                let node = v.program.node(v.node_by_name[n.as_str()]);
                match node.op.occupancy() {
                    Occupancy::Comm(c) | Occupancy::Both(c) => {
                        Some((n.as_str(), c.kind.name(), c.axis))
                    }
                    Occupancy::Source | Occupancy::View | Occupancy::Compute => None,
                }
            })
            .collect();
        let problem = match (comms.as_slice(), &task.collective) {
            ([], None) => None,
            ([], Some(c)) => Some(format!(
                "says it is {} call #{} over `{}`, but none of its nodes communicates",
                c.kind, c.seq, c.axis
            )),
            ([(node, ..)], None) => Some(format!(
                "communicates (`{node}`) but names no collective call"
            )),
            ([(node, kind, axis)], Some(c)) => {
                let group = crate::mesh::group(&plan.mesh, rp.rank, axis);
                if c.kind != *kind || c.axis != *axis {
                    Some(format!(
                        "says it is {} over `{}`, but `{node}` is {kind} over `{axis}`",
                        c.kind, c.axis
                    ))
                } else if group.as_ref() != Some(&c.group) {
                    Some(format!(
                        "names group {:?}, but its group along `{axis}` is {}",
                        c.group,
                        group.map_or_else(
                            || "none (no such mesh axis)".to_owned(),
                            |g| format!("{g:?}")
                        )
                    ))
                } else {
                    let calls = groups.entry((c.axis.clone(), c.group.clone())).or_default();
                    if c.seq != calls.len() as u64 {
                        Some(format!(
                            "is call #{} of group `{axis}` {:?}, but it is the group's call #{} on this rank in issue order",
                            c.seq,
                            c.group,
                            calls.len()
                        ))
                    } else {
                        if let Some(prev) = calls.last().map(|c| c.task)
                            && !order.happens_before(prev, t)
                        {
                            let m = format!(
                                "{} and {} are consecutive calls of group `{axis}` {:?} but may run at once \
                                 (a communicator runs its calls one at a time, in order)",
                                task_label(rp, prev),
                                task_label(rp, t),
                                c.group
                            );
                            v.err(r, PlanRule::Collectives, m);
                        }
                        calls.push(Call {
                            task: t,
                            kind: kind.to_string(),
                            nodes: task.nodes.clone(),
                            kernel: task.kernel.clone(),
                        });
                        None
                    }
                }
            }
            (many, _) => Some(format!(
                "runs {} communicating nodes; a task makes at most one collective call",
                many.len()
            )),
        };
        if let Some(p) = problem {
            v.err(
                r,
                PlanRule::Collectives,
                format!("{} {p}", task_label(rp, t)),
            );
        }
    }
    groups.into_iter().collect()
}

/// Every rank of a group issues the same calls (kind and nodes) in the same order.
pub(super) fn across_ranks(v: &mut Verifier<'_>, plan: &Plan, facts: &[RankFacts]) {
    let mut seen: BTreeMap<&GroupKey, (u32, &Vec<Call>)> = BTreeMap::new();
    for (rank, f) in facts.iter().enumerate().filter(|(_, f)| f.complete) {
        for (key, calls) in &f.calls {
            let Some(&(first, theirs)) = seen.get(key) else {
                seen.insert(key, (rank as u32, calls));
                continue;
            };
            let differ = calls
                .iter()
                .zip(theirs)
                .position(|(a, b)| (&a.kind, &a.nodes) != (&b.kind, &b.nodes))
                .or((calls.len() != theirs.len()).then(|| calls.len().min(theirs.len())));
            if let Some(i) = differ {
                let show = |rp: &RankPlan, c: Option<&Call>| {
                    c.map_or_else(
                        || "nothing (its calls end)".to_owned(),
                        |c| format!("{} in {}", c.kind, task_label(rp, c.task)),
                    )
                };
                let m = format!(
                    "group `{}` {:?} disagrees at call #{i}: rank {first} issues {}, rank {rank} issues {} \
                     (the ranks would deadlock)",
                    key.0,
                    key.1,
                    show(&plan.ranks[first as usize], theirs.get(i)),
                    show(&plan.ranks[rank], calls.get(i))
                );
                v.err(Some(rank as u32), PlanRule::Collectives, m);
            } else if let Some(i) = calls
                .iter()
                .zip(theirs)
                .position(|(a, b)| a.kernel != b.kernel)
            {
                let m = format!(
                    "group `{}` {:?} configures call #{i} differently: rank {first} runs {} as {:?}, \
                     rank {rank} runs {} as {:?} (the ranks of one call must run one kernel \
                     configuration, or they deadlock)",
                    key.0,
                    key.1,
                    task_label(&plan.ranks[first as usize], theirs[i].task),
                    theirs[i].kernel,
                    task_label(&plan.ranks[rank], calls[i].task),
                    calls[i].kernel
                );
                v.err(Some(rank as u32), PlanRule::Collectives, m);
            }
        }
    }
    // A rank whose group members never call at all: each member must list the group.
    for (rank, f) in facts.iter().enumerate().filter(|(_, f)| f.complete) {
        for ((axis, group), calls) in &f.calls {
            for &peer in group {
                let Some(pf) = facts.get(peer as usize).filter(|pf| pf.complete) else {
                    continue;
                };
                let has = pf.calls.iter().any(|(k, _)| k.0 == *axis && k.1 == *group);
                if !has && !calls.is_empty() {
                    let m = format!(
                        "group `{axis}` {group:?}: this rank makes {} call(s), rank {peer} none",
                        calls.len()
                    );
                    v.err(Some(rank as u32), PlanRule::Collectives, m);
                }
            }
        }
    }
}
