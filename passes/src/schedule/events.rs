//! The minimal set of cross-stream events, by a stream-aware reduction with vector
//! clocks.
//!
//! Tasks are visited in issue order (a topological order: a task starts after its
//! predecessors end). Each task carries a vector clock `vc[s]` = how many tasks of
//! stream `s` are known to finish before it starts (the tasks before it on its own
//! stream included). A dependency `u → t` is already implied when `vc[stream(u)] >
//! pos(u)`. For a task `t`:
//!
//! 1. start from the clock of the previous task on `t`'s stream (stream order);
//! 2. of the dependencies on each other stream keep only the latest (the earlier ones
//!    finish before it, by that stream's order) and drop those the stream order already
//!    implies;
//! 3. drop every remaining candidate that another candidate implies (its clock covers
//!    it). "Implies" is a strict partial order (two tasks cannot each finish before the
//!    other starts), so what remains are its maximal elements: no kept event is implied
//!    by the others or by stream order, and every dependency is implied by what is kept.
//!
//! The kept dependencies become events: the predecessor records one (shared by all who
//! wait on it) and `t` waits on it. This is transitive reduction restricted to what
//! streams do not already order, in O(tasks × streams) time and memory.

use weft_plan::EventId;

use super::ScheduleError;
use super::dag::TaskDag;
use super::simulate::Timeline;

/// Happens-before on one rank: stream positions, clocks and the events that realise it.
#[derive(Clone, Debug)]
pub struct HappensBefore {
    pub streams: usize,
    /// Each DAG task's position on its stream.
    pub pos: Vec<u32>,
    /// Each DAG task's clock at its start, `streams` entries per task.
    pub vc: Vec<u32>,
    /// Events each DAG task waits on.
    pub waits: Vec<Vec<EventId>>,
    /// The event each DAG task records.
    pub record: Vec<Option<EventId>>,
}

impl HappensBefore {
    /// The clock of DAG task `t` at its start.
    pub fn clock(&self, t: u32) -> &[u32] {
        let s = self.streams;
        &self.vc[t as usize * s..(t as usize + 1) * s]
    }

    /// Whether `u` finishes before `t` starts (`u != t`), given `u`'s stream.
    pub fn before(&self, u: u32, u_stream: u32, t: u32) -> bool {
        self.clock(t)[u_stream as usize] > self.pos[u as usize]
    }
}

/// Computes stream positions, clocks and the minimal events for `timeline`.
pub fn happens_before(dag: &TaskDag, timeline: &Timeline) -> Result<HappensBefore, ScheduleError> {
    let n = dag.tasks.len();
    let streams = dag.num_streams as usize;
    let mut extra: Vec<Vec<u32>> = vec![Vec::new(); n];
    for &(before, after) in &timeline.extra {
        extra[after as usize].push(before);
    }
    let mut hb = HappensBefore {
        streams,
        pos: vec![0; n],
        vc: vec![0; n * streams],
        waits: vec![Vec::new(); n],
        record: vec![None; n],
    };
    let mut issued = vec![false; n];
    let mut count = vec![0u32; streams];
    let mut last_on: Vec<Option<u32>> = vec![None; streams];
    let mut events = 0u32;
    let stream_of = |t: u32| dag.tasks[t as usize].stream as usize;
    for &t in &timeline.issue {
        let s = stream_of(t);
        hb.pos[t as usize] = count[s];
        count[s] += 1;
        let mut clock = vec![0u32; streams];
        if let Some(prev) = last_on[s] {
            clock.copy_from_slice(hb.clock(prev));
            clock[s] = hb.pos[prev as usize] + 1;
        }
        // The latest dependency on each other stream.
        let mut latest: Vec<Option<u32>> = vec![None; streams];
        for u in dag.preds(t).chain(extra[t as usize].iter().copied()) {
            if !issued[u as usize] {
                return Err(ScheduleError::Events(format!(
                    "task {t} was issued before its dependency {u}"
                )));
            }
            let su = stream_of(u);
            if su == s {
                continue;
            }
            if latest[su].is_none_or(|l| hb.pos[l as usize] < hb.pos[u as usize]) {
                latest[su] = Some(u);
            }
        }
        let candidates: Vec<u32> = latest
            .iter()
            .flatten()
            .copied()
            .filter(|&u| clock[stream_of(u)] <= hb.pos[u as usize])
            .collect();
        let kept: Vec<u32> = candidates
            .iter()
            .copied()
            .filter(|&c| {
                !candidates.iter().any(|&d| {
                    d != c && after_end(&hb, d, stream_of(d))[stream_of(c)] > hb.pos[c as usize]
                })
            })
            .collect();
        for &u in &kept {
            let done_clock = after_end(&hb, u, stream_of(u));
            for (c, d) in clock.iter_mut().zip(done_clock) {
                *c = (*c).max(d);
            }
            let event = *hb.record[u as usize].get_or_insert_with(|| {
                events += 1;
                EventId(events - 1)
            });
            hb.waits[t as usize].push(event);
        }
        hb.waits[t as usize].sort_unstable();
        clock[s] = hb.pos[t as usize];
        hb.vc[t as usize * streams..(t as usize + 1) * streams].copy_from_slice(&clock);
        issued[t as usize] = true;
        last_on[s] = Some(t);
    }
    Ok(hb)
}

/// The clock of what is known once `u` (on stream `su`) has finished.
fn after_end(hb: &HappensBefore, u: u32, su: usize) -> Vec<u32> {
    let mut c = hb.clock(u).to_vec();
    c[su] = hb.pos[u as usize] + 1;
    c
}
