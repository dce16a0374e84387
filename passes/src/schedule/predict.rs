//! The step's predicted figures.
//!
//! - `predicted_us`: the latest task end (every rank runs the same schedule).
//! - `baseline_us`: the same tasks with every stream serialised in one queue — no
//!   overlap, so no contention: the sum of all task times.
//! - `bound_us`: what no schedule can beat: the largest of the compute stream's summed
//!   time, each communication stream's summed time, and the critical path (all without
//!   contention). Each task takes at least its own time, a stream runs one task at a
//!   time, and a task starts after its predecessors end, so `bound ≤ predicted`; and the
//!   simulation's rates always sum to at least 1 (see [`super::simulate`]), so
//!   `predicted ≤ baseline`.
//! - `exposed_comm_us`: time during which some communication stream is busy and the
//!   compute stream is not, plus, for each fused (GEMM + collective) task on the compute
//!   stream, the part of its communication its own pipeline does not hide: its time
//!   beyond its GEMM alone, `min(comm, max(0, time − compute))`.
//! - `overlap_efficiency`: `1 - exposed / total`, where `total` is the time some
//!   communication stream is busy plus the fused tasks' communication time; 1 when there
//!   is no communication.

use weft_plan::{Prediction, RankPlan};

use super::dag::TaskDag;
use super::simulate::Timeline;

/// The prediction for `timeline` on every rank of `ranks`.
pub fn predict(dag: &TaskDag, timeline: &Timeline, ranks: &[RankPlan]) -> Prediction {
    let predicted_us = timeline.end.iter().copied().fold(0.0, f64::max);
    let baseline_us: f64 = dag.tasks.iter().map(|t| t.cost.time_us).sum();
    let mut per_stream = vec![0.0f64; dag.num_streams as usize];
    for t in &dag.tasks {
        per_stream[t.stream as usize] += t.cost.time_us;
    }
    let bound_us = per_stream
        .iter()
        .copied()
        .fold(dag.critical_path_us, f64::max);
    // The three figures add the same durations in different orders (the simulation step
    // by step, the baseline in task order), so where they are equal in exact arithmetic
    // rounding can break `bound ≤ predicted ≤ baseline` by a few ulps: such a difference
    // is snapped. A larger one is a real fault and is left for the tests to find.
    // The bound is at most the baseline in exact arithmetic too (a stream's sum or the
    // critical path is part of the sum of all tasks), so it is snapped first: otherwise a
    // bound a few ulps above the baseline would raise `predicted` past the baseline and be
    // lowered back below the bound.
    let bound_us = snap_down(bound_us, baseline_us);
    let predicted_us = snap_down(snap_up(predicted_us, bound_us), baseline_us);

    let intervals = |comm: bool| -> Vec<(f64, f64)> {
        let mut v: Vec<(f64, f64)> = (0..dag.tasks.len())
            .filter(|&t| (dag.tasks[t].stream != 0) == comm)
            .map(|t| (timeline.start[t], timeline.end[t]))
            .filter(|(s, e)| e > s)
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        union(v)
    };
    let comm = intervals(true);
    let compute = intervals(false);
    let busy: f64 = comm.iter().map(|(s, e)| e - s).sum();
    let hidden = intersection(&comm, &compute);
    // Never negative (rounding could make it -0.0 or below when all is hidden).
    let mut exposed_comm_us = if busy > hidden { busy - hidden } else { 0.0 };
    let mut total_comm = busy;
    // Fused tasks carry their communication on the compute stream.
    for t in dag
        .tasks
        .iter()
        .filter(|t| t.stream == 0 && t.cost.comm_us > 0.0)
    {
        let c = &t.cost;
        total_comm += c.comm_us;
        exposed_comm_us += (c.time_us - c.compute_us).max(0.0).min(c.comm_us);
    }
    let overlap_efficiency = if total_comm > 0.0 {
        (1.0 - exposed_comm_us / total_comm).clamp(0.0, 1.0)
    } else {
        1.0
    };
    Prediction {
        predicted_us,
        baseline_us,
        bound_us,
        exposed_comm_us,
        overlap_efficiency,
        peak_memory_bytes: ranks.iter().map(|r| r.memory.peak_bytes).collect(),
    }
}

/// Relative difference treated as rounding: far above the ~1e-16 of one addition, far
/// below any duration the cost model tells apart.
const ROUNDING: f64 = 1e-9;

/// `x`, raised to `floor` when below it by rounding only.
fn snap_up(x: f64, floor: f64) -> f64 {
    if x < floor && floor - x <= ROUNDING * floor {
        floor
    } else {
        x
    }
}

/// `x`, lowered to `ceiling` when above it by rounding only.
fn snap_down(x: f64, ceiling: f64) -> f64 {
    if x > ceiling && x - ceiling <= ROUNDING * ceiling {
        ceiling
    } else {
        x
    }
}

/// Merges intervals sorted by start into disjoint ones.
fn union(sorted: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(sorted.len());
    for (s, e) in sorted {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Total length of the intersection of two sorted, disjoint interval lists.
fn intersection(a: &[(f64, f64)], b: &[(f64, f64)]) -> f64 {
    let (mut i, mut j, mut total) = (0, 0, 0.0);
    while i < a.len() && j < b.len() {
        let lo = a[i].0.max(b[j].0);
        let hi = a[i].1.min(b[j].1);
        if hi > lo {
            total += hi - lo;
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    total
}
