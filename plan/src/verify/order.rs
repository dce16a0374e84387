//! Happens-before over one rank's tasks, by vector clocks over its streams.
//!
//! A task starts after the task before it on its stream and after the recorder of every
//! event it waits on; nothing else orders tasks. Each task's clock holds, per stream, how
//! many of that stream's tasks are certainly complete when it starts; `a` happens before
//! `b` exactly when `b`'s clock counts `a` complete.

use std::collections::VecDeque;

use crate::RankPlan;

/// The happens-before relation of one rank (ids already checked in range).
#[derive(Debug)]
pub(crate) struct Order {
    /// Each task's position on its stream.
    pos: Vec<u32>,
    stream: Vec<usize>,
    /// Per task, per stream: tasks of that stream complete before the task starts.
    before: Vec<Vec<u32>>,
    /// Per task, its direct predecessors (stream predecessor, then event recorders).
    preds: Vec<Vec<usize>>,
    /// Per task, its position in one topological order of the relation: `a` happens
    /// before `b` only if `topo[a] < topo[b]`.
    topo: Vec<u32>,
}

impl Order {
    /// Builds the relation, or returns a cycle of tasks (each waits on the next's
    /// predecessor chain: the rank would hang).
    pub fn new(rp: &RankPlan) -> Result<Order, Vec<usize>> {
        let n = rp.tasks.len();
        let streams = rp.streams.len();
        let mut recorder = vec![usize::MAX; n];
        for (i, t) in rp.tasks.iter().enumerate() {
            if let Some(e) = t.record {
                recorder[e.0 as usize] = i;
            }
        }
        let mut last_on = vec![usize::MAX; streams];
        let mut pos = vec![0u32; n];
        let mut count = vec![0u32; streams];
        let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, t) in rp.tasks.iter().enumerate() {
            let s = t.stream.0 as usize;
            if last_on[s] != usize::MAX {
                preds[i].push(last_on[s]);
            }
            last_on[s] = i;
            pos[i] = count[s];
            count[s] += 1;
            preds[i].extend(t.waits.iter().map(|e| recorder[e.0 as usize]));
        }
        let mut succs: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut indegree = vec![0usize; n];
        for (i, p) in preds.iter().enumerate() {
            indegree[i] = p.len();
            for &q in p {
                succs[q].push(i);
            }
        }
        let stream: Vec<usize> = rp.tasks.iter().map(|t| t.stream.0 as usize).collect();
        let mut before = vec![Vec::new(); n];
        let mut topo = vec![0u32; n];
        let mut ready: VecDeque<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut done = 0;
        while let Some(i) = ready.pop_front() {
            let mut clock = vec![0u32; streams];
            for &p in &preds[i] {
                for (c, &pc) in clock.iter_mut().zip(&before[p]) {
                    *c = (*c).max(pc);
                }
                // The predecessor itself is complete.
                let ps = stream[p];
                clock[ps] = clock[ps].max(pos[p] + 1);
            }
            before[i] = clock;
            topo[i] = u32::try_from(done).unwrap_or(u32::MAX);
            done += 1;
            for &s in &succs[i] {
                indegree[s] -= 1;
                if indegree[s] == 0 {
                    ready.push_back(s);
                }
            }
        }
        if done < n {
            return Err(find_cycle(&preds, &indegree));
        }
        Ok(Order {
            pos,
            stream,
            before,
            preds,
            topo,
        })
    }

    /// Whether `a` completes before `b` starts in every execution that honours the plan.
    pub fn happens_before(&self, a: usize, b: usize) -> bool {
        a != b && self.before[b][self.stream[a]] > self.pos[a]
    }

    /// `t`'s position in a topological order of happens-before.
    pub fn topo_pos(&self, t: usize) -> u32 {
        self.topo[t]
    }

    /// The tasks `t` directly waits for (its stream predecessor and event recorders).
    pub fn preds(&self, t: usize) -> &[usize] {
        &self.preds[t]
    }
}

/// A cycle among the tasks Kahn's walk could not release (those with indegree left),
/// in execution order.
fn find_cycle(preds: &[Vec<usize>], indegree: &[usize]) -> Vec<usize> {
    let stuck = |t: usize| indegree[t] > 0;
    let Some(start) = (0..preds.len()).find(|&t| stuck(t)) else {
        return Vec::new();
    };
    // Walk back along stuck predecessors until a task repeats: that loop is a cycle.
    let mut seen = vec![usize::MAX; preds.len()];
    let mut path = Vec::new();
    let mut t = start;
    while seen[t] == usize::MAX {
        seen[t] = path.len();
        path.push(t);
        match preds[t].iter().copied().find(|&p| stuck(p)) {
            Some(p) => t = p,
            None => return path,
        }
    }
    let mut cycle = path.split_off(seen[t]);
    cycle.reverse();
    cycle
}
