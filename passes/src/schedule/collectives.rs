//! Collective calls per rank, and the cross-rank check that they cannot deadlock.
//!
//! The program is SPMD, so every rank runs rank 0's schedule; what differs is each
//! communicating task's group (the ranks that share every coordinate but the axis's)
//! and its sequence number within that group's calls. NCCL deadlocks when the ranks of
//! a group issue its calls in different orders, or when waits form a cycle across
//! groups of different axes (rank A waits in a `tp` call for rank B, which waits in a
//! `dp` call issued first on its side...). [`verify_collective_order`] checks both on
//! any set of rank plans, not just the replicated ones this module makes.

use std::collections::HashMap;

use weft_ir::{Graph, Mesh};
use weft_plan::{CollectiveCall, RankPlan, Task};

use super::ScheduleError;
use super::dag::TaskDag;
use super::simulate::Timeline;

/// Ranks on a mesh ([`Mesh::coords`]'s row-major numbering), in the plan's `u32`.
#[derive(Clone, Debug)]
pub struct MeshGrid {
    mesh: Mesh,
}

impl MeshGrid {
    /// The grid of `mesh`; fails when its devices cannot be numbered in `u32`.
    pub fn new(mesh: &Mesh) -> Result<MeshGrid, ScheduleError> {
        let total = mesh
            .axes()
            .iter()
            .try_fold(1u64, |acc, a| acc.checked_mul(a.size))
            .unwrap_or(u64::MAX);
        if total > u64::from(u32::MAX) {
            return Err(ScheduleError::TooManyRanks(total));
        }
        Ok(MeshGrid { mesh: mesh.clone() })
    }

    /// The number of ranks.
    pub fn ranks(&self) -> u32 {
        self.mesh.num_devices() as u32
    }

    /// `rank`'s coordinate on each axis.
    pub fn coords(&self, rank: u32) -> Vec<u64> {
        self.mesh.coords(u64::from(rank))
    }

    /// The ranks of `rank`'s group along axis `axis` (by index), in axis order.
    pub fn group(&self, rank: u32, axis: usize) -> Vec<u32> {
        let name = &self.mesh.axes()[axis].name;
        self.mesh
            .group(u64::from(rank), name)
            .map_or_else(Vec::new, |(members, _)| {
                members.into_iter().map(|r| r as u32).collect()
            })
    }
}

/// Every rank's plan: `template` (rank 0's tasks, buffers and memory) with each rank's
/// coordinates and collective calls.
pub fn replicate(
    graph: &Graph,
    dag: &TaskDag,
    timeline: &Timeline,
    grid: &MeshGrid,
    template: RankPlan,
) -> Result<Vec<RankPlan>, ScheduleError> {
    let axes = graph.mesh.axes();
    let mut ranks = Vec::with_capacity(grid.ranks() as usize);
    for rank in 0..grid.ranks() {
        let mut plan = template.clone();
        plan.rank = rank;
        plan.coords = grid.coords(rank);
        let mut seq = vec![0u64; axes.len()];
        for (task, &t) in plan.tasks.iter_mut().zip(&timeline.issue) {
            if let Some((kind, axis)) = dag.tasks[t as usize].collective {
                task.collective = Some(CollectiveCall {
                    kind: kind.name().to_owned(),
                    axis: axes[axis].name.clone(),
                    group: grid.group(rank, axis),
                    seq: seq[axis],
                });
                seq[axis] += 1;
            }
        }
        ranks.push(plan);
    }
    Ok(ranks)
}

/// A call's identity across ranks: axis, group and sequence number.
type CallKey = (String, Vec<u32>, u64);

/// Checks that (1) on every axis, every rank of a group issues the group's calls with
/// the same kinds, nodes and sequence numbers 0, 1, 2, …, and every member of the group
/// takes part; and (2) the calls' happens-before on every rank (stream order and events)
/// has no cycle across ranks, so no rank can wait in one call for a peer waiting in
/// another.
pub fn verify_collective_order(ranks: &[RankPlan]) -> Result<(), ScheduleError> {
    // (1) Identical sequences per group.
    // Per (axis, group): the calls (kind, nodes) of its first member seen, and the
    // members that made them.
    type Calls<'a> = Vec<(&'a str, &'a [String])>;
    type Seen<'a> = (Calls<'a>, Vec<u32>);
    let mut groups: HashMap<(&str, &[u32]), Seen<'_>> = HashMap::new();
    for plan in ranks {
        let mut per_axis: HashMap<(&str, &[u32]), Calls<'_>> = HashMap::new();
        for task in &plan.tasks {
            let Some(call) = &task.collective else {
                continue;
            };
            if !call.group.contains(&plan.rank) {
                return Err(mismatch(
                    call,
                    format!(
                        "rank {}'s call `{}` names a group without it",
                        plan.rank,
                        task.nodes.join(",")
                    ),
                ));
            }
            let calls = per_axis.entry((&call.axis, &call.group)).or_default();
            if call.seq != calls.len() as u64 {
                return Err(mismatch(
                    call,
                    format!(
                        "rank {}'s call `{}` has sequence number {} but is its group's call {}",
                        plan.rank,
                        task.nodes.join(","),
                        call.seq,
                        calls.len()
                    ),
                ));
            }
            calls.push((&call.kind, &task.nodes));
        }
        for (key, calls) in per_axis {
            let entry = groups
                .entry(key)
                .or_insert_with(|| (calls.clone(), Vec::new()));
            if entry.0 != calls {
                let at = entry.0.iter().zip(&calls).position(|(a, b)| a != b);
                let detail = match at {
                    Some(i) => format!(
                        "call {i} is {} `{}` on rank {} but {} `{}` on an earlier member",
                        calls[i].0,
                        calls[i].1.join(","),
                        plan.rank,
                        entry.0[i].0,
                        entry.0[i].1.join(",")
                    ),
                    None => format!(
                        "rank {} makes {} calls, an earlier member {}",
                        plan.rank,
                        calls.len(),
                        entry.0.len()
                    ),
                };
                return Err(ScheduleError::CollectiveMismatch {
                    axis: key.0.to_owned(),
                    group: key.1.to_vec(),
                    detail,
                });
            }
            entry.1.push(plan.rank);
        }
    }
    for ((axis, group), (_, members)) in &groups {
        let mut members = members.clone();
        members.sort_unstable();
        let mut expected = group.to_vec();
        expected.sort_unstable();
        if members != expected {
            return Err(ScheduleError::CollectiveMismatch {
                axis: (*axis).to_owned(),
                group: group.to_vec(),
                detail: format!("only ranks {members:?} make the group's calls"),
            });
        }
    }

    // (2) No cycle in the calls' happens-before across ranks.
    let mut ids: HashMap<CallKey, u32> = HashMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut edges: Vec<(u32, u32)> = Vec::new();
    for plan in ranks {
        rank_call_edges(plan, &mut ids, &mut names, &mut edges)?;
    }
    let n = names.len();
    let mut indegree = vec![0u32; n];
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); n];
    for &(a, b) in &edges {
        out[a as usize].push(b);
        indegree[b as usize] += 1;
    }
    let mut stack: Vec<u32> = (0..n as u32)
        .filter(|&i| indegree[i as usize] == 0)
        .collect();
    let mut seen = 0usize;
    while let Some(i) = stack.pop() {
        seen += 1;
        for &j in &out[i as usize] {
            indegree[j as usize] -= 1;
            if indegree[j as usize] == 0 {
                stack.push(j);
            }
        }
    }
    if seen < n {
        let stuck: Vec<&str> = (0..n)
            .filter(|&i| indegree[i] > 0)
            .take(4)
            .map(|i| names[i].as_str())
            .collect();
        return Err(ScheduleError::CollectiveDeadlock(format!(
            "calls wait on each other in a cycle across ranks, among: {}",
            stuck.join("; ")
        )));
    }
    Ok(())
}

fn mismatch(call: &CollectiveCall, detail: String) -> ScheduleError {
    ScheduleError::CollectiveMismatch {
        axis: call.axis.clone(),
        group: call.group.clone(),
        detail,
    }
}

/// Adds, for one rank, an edge from each call to every call that must start after it:
/// for each stream, the latest call on it that finishes before this one starts (by
/// stream order and events, from vector clocks).
fn rank_call_edges(
    plan: &RankPlan,
    ids: &mut HashMap<CallKey, u32>,
    names: &mut Vec<String>,
    edges: &mut Vec<(u32, u32)>,
) -> Result<(), ScheduleError> {
    let streams = plan.streams.len();
    let bad = |task: &Task, why: String| {
        ScheduleError::Events(format!("rank {}, task {}: {why}", plan.rank, task.id.0))
    };
    let mut count = vec![0u32; streams];
    let mut last_clock: Vec<Option<Vec<u32>>> = vec![None; streams];
    // Per event: the clock once its recorder has finished.
    let mut recorded: HashMap<u32, Vec<u32>> = HashMap::new();
    // Per stream: (position, call id) of its calls so far, in order.
    let mut calls_on: Vec<Vec<(u32, u32)>> = vec![Vec::new(); streams];
    for task in &plan.tasks {
        let s = task.stream.0 as usize;
        if s >= streams {
            return Err(bad(task, format!("stream {s} does not exist")));
        }
        let pos = count[s];
        count[s] += 1;
        let mut clock = last_clock[s].clone().unwrap_or_else(|| vec![0; streams]);
        for e in &task.waits {
            let done = recorded.get(&e.0).ok_or_else(|| {
                bad(
                    task,
                    format!("waits on event {} before any task records it", e.0),
                )
            })?;
            for (c, d) in clock.iter_mut().zip(done) {
                *c = (*c).max(*d);
            }
        }
        if let Some(call) = &task.collective {
            let key = (call.axis.clone(), call.group.clone(), call.seq);
            let next = names.len() as u32;
            let id = *ids.entry(key).or_insert(next);
            if id == next {
                names.push(format!(
                    "{} `{}` on {} group {:?}",
                    call.kind,
                    task.nodes.join(","),
                    call.axis,
                    call.group
                ));
            }
            for (s2, calls) in calls_on.iter().enumerate() {
                let limit = clock[s2];
                let before = calls.partition_point(|&(p, _)| p < limit);
                if before > 0 {
                    edges.push((calls[before - 1].1, id));
                }
            }
            calls_on[s].push((pos, id));
        }
        let mut after = clock;
        after[s] = pos + 1;
        if let Some(e) = task.record
            && recorded.insert(e.0, after.clone()).is_some()
        {
            return Err(bad(task, format!("event {} is recorded twice", e.0)));
        }
        last_clock[s] = Some(after);
    }
    Ok(())
}
