//! Ids equal their positions and every reference is in range; events are dense
//! (`0..n`), each recorded by exactly one task and waited on only by other streams, by
//! tasks issued after the recorder (`tasks` is the issue order).

use super::{Verifier, task_label};
use crate::{PlanRule, RankPlan};

/// Returns whether the rank's structure is sound enough for the other checks.
pub(super) fn check(v: &mut Verifier<'_>, rp: &RankPlan) -> bool {
    let r = Some(rp.rank);
    let before = v.out.len();
    for (i, s) in rp.streams.iter().enumerate() {
        if s.id.0 as usize != i {
            v.err(
                r,
                PlanRule::Ids,
                format!("stream {i} (`{}`) has id {}", s.name, s.id.0),
            );
        }
    }
    for (i, b) in rp.buffers.iter().enumerate() {
        if b.id.0 as usize != i {
            v.err(r, PlanRule::Ids, format!("buffer {i} has id {}", b.id.0));
        }
        for (what, t) in [("producer", b.producer), ("last reader", b.last_reader)] {
            if let Some(t) = t.filter(|t| t.0 as usize >= rp.tasks.len()) {
                let m = format!("buffer {i}: {what} task {} does not exist", t.0);
                v.err(r, PlanRule::Ids, m);
            }
        }
    }
    if let Some(t) = rp.memory.peak_at.filter(|t| t.0 as usize >= rp.tasks.len()) {
        let m = format!("the memory summary's peak task {} does not exist", t.0);
        v.err(r, PlanRule::Ids, m);
    }
    let mut recorders: Vec<Vec<usize>> = Vec::new();
    for (i, task) in rp.tasks.iter().enumerate() {
        if task.id.0 as usize != i {
            v.err(r, PlanRule::Ids, format!("task {i} has id {}", task.id.0));
        }
        if task.stream.0 as usize >= rp.streams.len() {
            let m = format!("task {i}: stream {} does not exist", task.stream.0);
            v.err(r, PlanRule::Ids, m);
        }
        for b in task.reads.iter().chain(&task.writes) {
            if b.0 as usize >= rp.buffers.len() {
                let m = format!("task {i}: buffer {} does not exist", b.0);
                v.err(r, PlanRule::Ids, m);
            }
        }
        if let Some(e) = task.record {
            let e = e.0 as usize;
            if e >= rp.tasks.len() {
                let m = format!("task {i} records event {e}, more events than tasks");
                v.err(r, PlanRule::Events, m);
                continue;
            }
            if recorders.len() <= e {
                recorders.resize(e + 1, Vec::new());
            }
            recorders[e].push(i);
        }
    }
    if v.out.len() > before {
        return false;
    }
    for (e, by) in recorders.iter().enumerate() {
        match by.as_slice() {
            [_] => {}
            [] => {
                let m = format!(
                    "event {e} is recorded by no task (events are numbered 0..n without gaps)"
                );
                v.err(r, PlanRule::Events, m);
            }
            many => {
                let names: Vec<String> = many.iter().map(|&t| task_label(rp, t)).collect();
                let m = format!(
                    "event {e} is recorded by several tasks: {}",
                    names.join(", ")
                );
                v.err(r, PlanRule::Events, m);
            }
        }
    }
    for (i, task) in rp.tasks.iter().enumerate() {
        for e in &task.waits {
            match recorders.get(e.0 as usize).and_then(|by| by.first()) {
                None => {
                    let m = format!(
                        "{} waits on event {}, which no task records",
                        task_label(rp, i),
                        e.0
                    );
                    v.err(r, PlanRule::Events, m);
                }
                Some(&by) if rp.tasks[by].stream == task.stream => {
                    let m = format!(
                        "{} waits on event {} recorded by {} of its own stream (stream order \
                         already orders them; a wait on a later task of the same stream hangs)",
                        task_label(rp, i),
                        e.0,
                        task_label(rp, by)
                    );
                    v.err(r, PlanRule::Events, m);
                }
                Some(_) => {}
            }
        }
    }
    v.out.len() == before
}

/// Every waited event's recorder comes earlier in `tasks` than the waiter: `tasks` is the
/// issue order, and on a GPU a `cudaStreamWaitEvent` issued before the matching
/// `cudaEventRecord` waits for nothing. Runs on a rank whose ids are sound; a violation
/// does not stop the other checks (a cycle of waits, always also a violation here, is
/// still reported as the deadlock it is).
pub(super) fn issue_order(v: &mut Verifier<'_>, rp: &RankPlan) {
    let mut recorder = vec![usize::MAX; rp.tasks.len()];
    for (i, task) in rp.tasks.iter().enumerate() {
        if let Some(e) = task.record {
            recorder[e.0 as usize] = i;
        }
    }
    for (i, task) in rp.tasks.iter().enumerate() {
        for e in &task.waits {
            let by = recorder[e.0 as usize];
            if by > i {
                let m = format!(
                    "{} waits on event {}, which {} records later in issue order (`tasks` is \
                     the order work is issued, and a wait issued before its event's record \
                     waits for nothing, as `cudaStreamWaitEvent` does)",
                    task_label(rp, i),
                    e.0,
                    task_label(rp, by)
                );
                v.err(Some(rp.rank), PlanRule::Events, m);
            }
        }
    }
}
