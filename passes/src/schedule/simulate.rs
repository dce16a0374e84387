//! List scheduling, simulated in time.
//!
//! Every stream runs one task at a time, in the order it starts them. Whenever a stream
//! is free it starts, among its ready tasks (all predecessors finished), the one with
//! the highest priority (bottom level; ties to the earlier program node); when several
//! streams are free at one instant, the stream with the highest-priority candidate
//! starts first (which matters when two candidates exclude each other, below). The
//! simulation advances from one task end to the next; between two such instants the set
//! of running tasks is fixed, so progress is exact:
//!
//! - a communication task progresses at rate 1 (its own `time_us`);
//! - a compute (or fused) task progresses at rate `1 / s`, where `s` is the largest
//!   contention slowdown of the communication tasks running beside it (1 when none): it
//!   runs `s` times slower for exactly the overlapped part.
//!
//! Communication is not slowed by compute (the cost model's slowdown describes what the
//! communication kernel takes from compute, not the reverse).
//!
//! Two properties follow and the tests check them: whenever tasks remain, at least one
//! runs (a free stream with a ready task starts it), and while several run their rates
//! sum to at least 1; so the predicted end never exceeds the sum of all task times (the
//! serial baseline). Each task takes at least its own time and starts after its
//! predecessors end, so the end is never below the critical path or any stream's sum.
//!
//! **One order per communicator.** Collectives of one mesh axis share a communicator,
//! and NCCL needs every rank to issue them in the same order. Calls of one axis on one
//! stream are ordered by the stream; a fused task on the compute stream and a collective
//! of the same axis on a communication stream are not, so a collective does not start
//! while the previous call of its axis runs on another stream, and that order becomes an
//! explicit dependency (`extra`), turned into an event like any other.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::ScheduleError;
use super::dag::TaskDag;

/// The simulated schedule of one rank.
#[derive(Clone, Debug)]
pub struct Timeline {
    /// Start and end of each DAG task, µs.
    pub start: Vec<f64>,
    pub end: Vec<f64>,
    /// DAG tasks in the order they started (the plan's issue order).
    pub issue: Vec<u32>,
    /// Dependencies added to keep each axis's calls in one order: `(before, after)`.
    pub extra: Vec<(u32, u32)>,
}

/// A priority that orders by `total_cmp` (priorities are finite sums of checked costs).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Prio(f64);
impl Eq for Prio {}
impl PartialOrd for Prio {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Prio {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A running task: which, and how much of its own time is left.
#[derive(Clone, Copy, Debug)]
struct Running {
    task: u32,
    left_us: f64,
}

/// Runs list scheduling on `dag`.
pub fn simulate(dag: &TaskDag) -> Result<Timeline, ScheduleError> {
    let n = dag.tasks.len();
    let streams = dag.num_streams as usize;
    let mut waiting: Vec<u32> = (0..n as u32).map(|t| dag.preds(t).count() as u32).collect();
    let mut ready: Vec<BinaryHeap<(Prio, Reverse<u32>)>> = vec![BinaryHeap::new(); streams];
    for (t, &w) in waiting.iter().enumerate() {
        if w == 0 {
            let task = &dag.tasks[t];
            ready[task.stream as usize].push((Prio(task.priority), Reverse(t as u32)));
        }
    }
    let mut running: Vec<Option<Running>> = vec![None; streams];
    let mut done = vec![false; n];
    // Per mesh axis: the last collective started and its stream.
    let mut axis_last: Vec<Option<(u32, u32)>> = Vec::new();
    let mut timeline = Timeline {
        start: vec![0.0; n],
        end: vec![0.0; n],
        issue: Vec::with_capacity(n),
        extra: Vec::new(),
    };
    let mut finished = 0usize;
    let mut now = 0.0f64;
    let mut blocked: Vec<(Prio, Reverse<u32>)> = Vec::new();

    // Marks `t` finished at `now` and readies its successors.
    let finish = |t: u32,
                  now: f64,
                  timeline: &mut Timeline,
                  done: &mut Vec<bool>,
                  waiting: &mut Vec<u32>,
                  ready: &mut Vec<BinaryHeap<(Prio, Reverse<u32>)>>| {
        timeline.end[t as usize] = now;
        done[t as usize] = true;
        for s in dag.succs(t) {
            waiting[s as usize] -= 1;
            if waiting[s as usize] == 0 {
                let task = &dag.tasks[s as usize];
                ready[task.stream as usize].push((Prio(task.priority), Reverse(s)));
            }
        }
    };

    while finished < n {
        // Start what can start now, the highest priority first across the free streams;
        // zero-time tasks finish at once and may ready more.
        loop {
            let mut best: Option<(Prio, Reverse<u32>, usize)> = None;
            for s in 0..streams {
                if running[s].is_some() {
                    continue;
                }
                let mut found = None;
                while let Some(entry) = ready[s].pop() {
                    let axis_free = match dag.tasks[entry.1.0 as usize].collective {
                        Some((_, axis)) => match axis_last.get(axis).copied().flatten() {
                            Some((last, last_stream)) => {
                                last_stream == s as u32 || done[last as usize]
                            }
                            None => true,
                        },
                        None => true,
                    };
                    if axis_free {
                        found = Some(entry);
                        break;
                    }
                    blocked.push(entry);
                }
                ready[s].extend(blocked.drain(..));
                if let Some(entry) = found {
                    // Only the best of all streams starts this round; the others go back.
                    match best {
                        Some((p, i, _)) if (p, i) >= (entry.0, entry.1) => ready[s].push(entry),
                        Some((p, i, other)) => {
                            ready[other].push((p, i));
                            best = Some((entry.0, entry.1, s));
                        }
                        None => best = Some((entry.0, entry.1, s)),
                    }
                }
            }
            let Some((_, Reverse(t), s)) = best else {
                break;
            };
            let task = &dag.tasks[t as usize];
            if let Some((_, axis)) = task.collective {
                if axis_last.len() <= axis {
                    axis_last.resize(axis + 1, None);
                }
                if let Some((last, last_stream)) = axis_last[axis]
                    && last_stream != s as u32
                {
                    timeline.extra.push((last, t));
                }
                axis_last[axis] = Some((t, s as u32));
            }
            timeline.start[t as usize] = now;
            timeline.issue.push(t);
            if task.cost.time_us == 0.0 {
                finish(t, now, &mut timeline, &mut done, &mut waiting, &mut ready);
                finished += 1;
            } else {
                running[s] = Some(Running {
                    task: t,
                    left_us: task.cost.time_us,
                });
            }
        }
        if finished == n {
            break;
        }
        // Advance to the next end.
        let slow = running
            .iter()
            .flatten()
            .map(|r| dag.tasks[r.task as usize].slowdown)
            .fold(1.0, f64::max);
        let rate = |t: u32| {
            if dag.tasks[t as usize].class.slowed_by_comm() {
                1.0 / slow
            } else {
                1.0
            }
        };
        let step = running
            .iter()
            .flatten()
            .map(|r| r.left_us / rate(r.task))
            .fold(f64::INFINITY, f64::min);
        if !step.is_finite() {
            return Err(ScheduleError::Stalled(n - finished));
        }
        now += step;
        for slot in running.iter_mut() {
            let Some(r) = slot else { continue };
            let needed = r.left_us / rate(r.task);
            if needed <= step {
                let t = r.task;
                *slot = None;
                finish(t, now, &mut timeline, &mut done, &mut waiting, &mut ready);
                finished += 1;
            } else {
                r.left_us -= step * rate(r.task);
            }
        }
    }
    Ok(timeline)
}
