//! Deadlock across ranks: a collective call completes only when every member of its
//! group has issued it, so the calls of one group with one sequence number act as a
//! single step shared by those ranks. Joining each rank's stream order and waits through
//! these shared steps must leave no cycle — else some ranks wait on each other forever
//! (each group's order can agree on every rank while two groups are issued in crossing
//! orders, e.g. `tp` then `dp` on one rank and `dp` then `tp` on a peer).

use std::collections::{BTreeMap, VecDeque};

use super::{RankFacts, Verifier, task_label};
use crate::{Plan, PlanRule};

fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// Checks the whole plan; run only when every rank passed its own checks and the groups'
/// call orders agree (the merge assumes call `k` of a group is the same step on every
/// member).
pub(super) fn across_ranks(v: &mut Verifier<'_>, plan: &Plan, facts: &[RankFacts]) {
    let mut offset = Vec::with_capacity(plan.ranks.len());
    let mut total = 0usize;
    for rp in &plan.ranks {
        offset.push(total);
        total += rp.tasks.len();
    }
    let mut parent: Vec<usize> = (0..total).collect();
    let mut first: BTreeMap<(&str, &[u32], usize), usize> = BTreeMap::new();
    for (r, f) in facts.iter().enumerate() {
        for ((axis, group), calls) in &f.calls {
            for (k, call) in calls.iter().enumerate() {
                let me = offset[r] + call.task;
                let rep = *first
                    .entry((axis.as_str(), group.as_slice(), k))
                    .or_insert(me);
                let (a, b) = (find(&mut parent, rep), find(&mut parent, me));
                parent[b] = a;
            }
        }
    }
    // Edges between merged steps: each task after its stream predecessor and recorders.
    let mut succs: Vec<Vec<usize>> = vec![Vec::new(); total];
    let mut indegree = vec![0usize; total];
    for (r, rp) in plan.ranks.iter().enumerate() {
        let mut recorder = vec![usize::MAX; rp.tasks.len()];
        for (t, task) in rp.tasks.iter().enumerate() {
            if let Some(e) = task.record {
                recorder[e.0 as usize] = t;
            }
        }
        let mut last_on = vec![usize::MAX; rp.streams.len()];
        for (t, task) in rp.tasks.iter().enumerate() {
            let s = task.stream.0 as usize;
            let mut preds: Vec<usize> = task.waits.iter().map(|e| recorder[e.0 as usize]).collect();
            if last_on[s] != usize::MAX {
                preds.push(last_on[s]);
            }
            last_on[s] = t;
            let to = find(&mut parent, offset[r] + t);
            for p in preds {
                let from = find(&mut parent, offset[r] + p);
                if from != to {
                    succs[from].push(to);
                    indegree[to] += 1;
                }
            }
        }
    }
    let roots: Vec<usize> = (0..total).filter(|&x| find(&mut parent, x) == x).collect();
    let mut ready: VecDeque<usize> = roots
        .iter()
        .copied()
        .filter(|&x| indegree[x] == 0)
        .collect();
    let mut done = 0;
    while let Some(x) = ready.pop_front() {
        done += 1;
        for &s in &succs[x] {
            indegree[s] -= 1;
            if indegree[s] == 0 {
                ready.push_back(s);
            }
        }
    }
    if done == roots.len() {
        return;
    }
    // Name the stuck collective calls: the steps the ranks would wait in.
    let mut stuck = Vec::new();
    for (r, rp) in plan.ranks.iter().enumerate() {
        for (t, task) in rp.tasks.iter().enumerate() {
            let root = find(&mut parent, offset[r] + t);
            if indegree[root] > 0 && task.collective.is_some() && stuck.len() < 8 {
                stuck.push(format!("rank {r} {}", task_label(rp, t)));
            }
        }
    }
    let m = format!(
        "the ranks' collective calls wait on each other in a cycle (groups issued in crossing orders): {}",
        stuck.join("; ")
    );
    v.err(None, PlanRule::Deadlock, m);
}
