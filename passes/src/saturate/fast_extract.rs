//! Tree-cost extraction that scales with depth.
//!
//! egg's `Extractor` finds each class's cheapest e-node by sweeping every class until a
//! sweep changes nothing; a cost moves up one level per sweep, so on a model whose residual
//! stream is hundreds of ops deep the sweeps are as many as the levels and the work is
//! quadratic (80 layers of Llama-3-70B: seconds; 160: most of a minute). This computes the
//! same fixpoint with a worklist: classes are visited children first (a depth-first
//! post-order of the whole e-graph, back edges of cycles ignored), and a class is visited
//! again only when a child's cost fell. Same answer for the monotone cost functions Weft
//! uses (an e-node's cost never below its dearest child's), near-linear work.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use egg::{CostFunction, Id};

use super::analysis::WEGraph;
use super::lang::WNode;

/// The cheapest e-node of every class under a cost function.
#[allow(missing_debug_implementations)] // holds the cost function's costs, not always Debug
pub struct FastExtractor<'a, CF: CostFunction<WNode>> {
    egraph: &'a WEGraph,
    index: HashMap<Id, usize>,
    best: Vec<Option<(CF::Cost, usize)>>,
    classes: Vec<Id>,
}

impl<'a, CF> FastExtractor<'a, CF>
where
    CF: CostFunction<WNode>,
    CF::Cost: PartialOrd + Clone,
{
    /// Prices every class of `egraph` under `cf`.
    pub fn new(egraph: &'a WEGraph, mut cf: CF) -> Self {
        let mut classes: Vec<Id> = egraph.classes().map(|c| c.id).collect();
        classes.sort();
        let index: HashMap<Id, usize> = classes.iter().enumerate().map(|(i, &c)| (c, i)).collect();
        let n = classes.len();
        let kids: Vec<Vec<Vec<usize>>> = classes
            .iter()
            .map(|&c| {
                egraph[c]
                    .nodes
                    .iter()
                    .map(|node| {
                        node.children
                            .iter()
                            .map(|&ch| index[&egraph.find(ch)])
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let mut parents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (p, nodes) in kids.iter().enumerate() {
            for list in nodes {
                for &c in list {
                    if parents[c].last() != Some(&p) {
                        parents[c].push(p);
                    }
                }
            }
        }
        let rank = post_order(n, &[], |c, out| {
            for list in &kids[c] {
                out.extend_from_slice(list);
            }
        });
        let mut best: Vec<Option<(CF::Cost, usize)>> = vec![None; n];
        let mut queued = vec![true; n];
        let mut work: BinaryHeap<Reverse<(usize, usize)>> =
            (0..n).map(|c| Reverse((rank[c], c))).collect();
        // A safety bound: costs only fall, and each fall re-queues the parents.
        let mut budget = n.saturating_mul(64).max(1024);
        while let Some(Reverse((_, c))) = work.pop() {
            queued[c] = false;
            if budget == 0 {
                break;
            }
            budget -= 1;
            let class = classes[c];
            let mut pick: Option<(CF::Cost, usize)> = best[c].clone();
            for (k, node) in egraph[class].nodes.iter().enumerate() {
                if kids[c][k].iter().any(|&ch| best[ch].is_none()) {
                    continue;
                }
                let cost = cf.cost(node, |id| {
                    let ch = index[&egraph.find(id)];
                    best[ch]
                        .as_ref()
                        .map(|(cost, _)| cost.clone())
                        .expect("priced above")
                });
                if pick.as_ref().is_none_or(|(p, _)| cost < *p) {
                    pick = Some((cost, k));
                }
            }
            let improved = match (&pick, &best[c]) {
                (Some((new, _)), Some((old, _))) => new < old,
                (Some(_), None) => true,
                _ => false,
            };
            if improved {
                best[c] = pick;
                for &p in &parents[c] {
                    if !queued[p] {
                        queued[p] = true;
                        work.push(Reverse((rank[p], p)));
                    }
                }
            }
        }
        FastExtractor {
            egraph,
            index,
            best,
            classes,
        }
    }

    /// The cheapest e-node of `class`. Panics, as egg's does, for a class no e-node of
    /// which could be priced (a class whose every e-node reads itself).
    pub fn find_best_node(&self, class: Id) -> &'a WNode {
        let c = self.index[&self.egraph.find(class)];
        let (_, k) = self.best[c]
            .as_ref()
            .expect("every class has a priced e-node");
        &self.egraph[self.classes[c]].nodes[*k]
    }

    /// The cost of `class`'s cheapest e-node, `None` when none could be priced.
    pub fn find_best_cost(&self, class: Id) -> Option<CF::Cost> {
        let c = self.index[&self.egraph.find(class)];
        self.best[c].as_ref().map(|(cost, _)| cost.clone())
    }
}

/// A depth-first post-order rank of every class (children first, back edges of cycles
/// ignored), from each class of `starts` in order and then from every class not reached,
/// in index order. `children(c, out)` appends class `c`'s children (every e-node's, in
/// order). Shared by this extractor and the greedy DAG extraction.
pub(crate) fn post_order(
    n: usize,
    starts: &[usize],
    mut children: impl FnMut(usize, &mut Vec<usize>),
) -> Vec<usize> {
    let mut rank = vec![usize::MAX; n];
    let mut seen = vec![false; n];
    let mut next = 0;
    let mut kids = Vec::new();
    for start in starts.iter().copied().chain(0..n) {
        if seen[start] {
            continue;
        }
        let mut stack: Vec<(usize, bool)> = vec![(start, false)];
        while let Some((c, expanded)) = stack.pop() {
            if expanded {
                rank[c] = next;
                next += 1;
                continue;
            }
            if seen[c] {
                continue;
            }
            seen[c] = true;
            stack.push((c, true));
            kids.clear();
            children(c, &mut kids);
            for &ch in kids.iter().rev() {
                if !seen[ch] {
                    stack.push((ch, false));
                }
            }
        }
    }
    rank
}
