//! Extraction: choosing one program from a saturated e-graph.
//!
//! A program is a choice of one e-node per e-class reachable from the root, and its cost
//! is the sum of its chosen e-nodes' own costs, **each class counted once** however many
//! consumers it has (a DAG cost). egg's tree extractor minimises a tree cost instead,
//! which counts a shared value once per consumer: the residual stream is read by about a
//! dozen ops per layer, so its cost is multiplied at every layer and deep models compare
//! numbers far past f64 precision, and a rewrite that reuses an already-paid-for value is
//! charged for it again.
//!
//! Exact DAG extraction is NP-hard, so this is a greedy heuristic with a guarantee:
//!
//! 1. Each e-node's own cost is asked of a [`NodeCost`] once.
//! 2. A fixpoint computes, per class, `min over its nodes of own + Σ cost(child) /
//!    consumers(child)`: a shared child's cost is amortised over the classes that consume
//!    it. Rounds start from two counts of consumers — every class with an e-node reading
//!    the class (the sharing some choice could reach), and the original program's readers
//!    — and recount them in the previous round's choice while that gets cheaper. Each
//!    round is linear in the e-graph (a worklist revisits only parents of classes whose
//!    cost fell), so 80 layers stay cheap; cost sets per class (the exact greedy-DAG
//!    variant) would grow with depth.
//! 3. Amortised costs can fall around a cycle of the e-graph (a token split's
//!    `concat(slice(x), …)` lives in `x`'s own class): a new pick that would reach its
//!    own class within a few steps of the current choices is refused inside the
//!    fixpoint, and any longer cycle in the chosen program is found by a depth-first
//!    walk, its closing e-node banned and the round repeated; bans only grow, so this
//!    ends.
//! 4. Every candidate program is priced by its true DAG cost, and the original program
//!    (each class's earliest original e-node) is one of the candidates: extraction never
//!    returns a program costlier than the one it was given.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use egg::Id;
use weft_ir::{DimBindings, Occupancy, Op, TensorType};

use super::analysis::Meta;
use super::lang::{Head, WNode};
use super::{SaturateError, Saturated};

/// The predicted time of one op, in microseconds, given concrete per-device types.
///
/// Called once per e-node whose op runs (not for graph inputs, weights and constants,
/// which are present before the program starts, nor for tuple projections and the root,
/// which are bookkeeping). A cost must be finite and non-negative; an `Err` (or a
/// non-finite cost) makes that e-node unchoosable, and the [`Extraction`] reports it.
pub trait NodeCost {
    fn node_cost(
        &self,
        op: &Op,
        inputs: &[&TensorType],
        outputs: &[&TensorType],
        dims: &DimBindings,
    ) -> Result<f64, String>;
}

impl<F> NodeCost for F
where
    F: Fn(&Op, &[&TensorType], &[&TensorType], &DimBindings) -> Result<f64, String>,
{
    fn node_cost(
        &self,
        op: &Op,
        inputs: &[&TensorType],
        outputs: &[&TensorType],
        dims: &DimBindings,
    ) -> Result<f64, String> {
        self(op, inputs, outputs, dims)
    }
}

/// An extracted program and what its choice was based on.
#[derive(Debug)]
pub struct Extraction {
    /// The chosen program, verified.
    pub graph: weft_ir::Graph,
    /// Its DAG cost (each chosen e-node's own cost once), µs.
    pub cost_us: f64,
    /// The original program's DAG cost under the same model, µs.
    pub original_cost_us: f64,
    /// Whether no candidate beat the original program, so its choice (each class's
    /// earliest original e-node) was returned.
    pub kept_original: bool,
    /// Amortisation rounds run (each a fixpoint; cycle-breaking repeats included).
    pub rounds: usize,
    /// Why e-nodes could not be priced (so were never chosen): `op: reason`, each distinct
    /// reason once, the first few.
    pub uncosted: Vec<String>,
    /// How many e-nodes could not be priced in all.
    pub uncosted_count: usize,
    /// The rule applications whose result the chosen program uses, counted per rule (by
    /// name, sorted): an application counts when an e-node no rule-free program has is
    /// chosen in the class it created. Empty when the original program was kept.
    pub rules_used: Vec<(String, u64)>,
}

/// Rounds after the first from each starting count of consumers (each recounts them in
/// the previous choice); a start's rounds also stop when one finds nothing cheaper.
const REFINE_ROUNDS: usize = 4;
/// Cycle-breaking repeats allowed per round before giving up on that round's choice.
const MAX_BAN_REPEATS: usize = 64;
/// Steps along the current choices within which a new pick is checked for closing a cycle.
const SHORT_CYCLE: usize = 6;
/// How many uncosted e-nodes are named in the report.
const UNCOSTED_NAMED: usize = 5;

/// One e-node of a class: its children (canonical, as dense indices) and own cost
/// (`None`: the cost model could not price it, so it is never chosen).
pub(crate) struct Alternative {
    pub(crate) children: Vec<usize>,
    pub(crate) own: Option<f64>,
}

/// Dense per-class tables over the canonical classes, in id order (deterministic).
pub(crate) struct Tables<'a> {
    pub(crate) sat: &'a Saturated,
    /// Canonical class ids, sorted.
    pub(crate) classes: Vec<Id>,
    pub(crate) index: HashMap<Id, usize>,
    /// Per class: its e-nodes, in the class's order.
    pub(crate) nodes: Vec<Vec<Alternative>>,
    /// Per class: the dense indices of classes with an e-node that consumes it.
    parents: Vec<Vec<usize>>,
    pub(crate) root: usize,
    /// Per class: its position in a post-order of the whole e-graph from the root
    /// (children first; back edges of cycles ignored; unreachable classes last).
    rank: Vec<usize>,
}

impl<'a> Tables<'a> {
    pub(crate) fn new(sat: &'a Saturated, cost: &dyn NodeCost) -> (Tables<'a>, Vec<String>, usize) {
        let eg = &sat.egraph;
        let mut classes: Vec<Id> = eg.classes().map(|c| c.id).collect();
        classes.sort();
        let index: HashMap<Id, usize> = classes.iter().enumerate().map(|(i, &c)| (c, i)).collect();
        let mut nodes = Vec::with_capacity(classes.len());
        let mut edges: Vec<(usize, usize)> = Vec::new();
        let mut uncosted = Vec::new();
        let mut uncosted_count = 0;
        for (ci, &class) in classes.iter().enumerate() {
            let mut list = Vec::new();
            for node in &eg[class].nodes {
                let children: Vec<usize> =
                    node.children.iter().map(|&c| index[&eg.find(c)]).collect();
                for &c in &children {
                    edges.push((c, ci));
                }
                let own = match own_cost(sat, class, node, cost) {
                    Ok(c) => Some(c),
                    Err(reason) => {
                        uncosted_count += 1;
                        // Each distinct reason once (one missing profile field would
                        // otherwise be told once per op).
                        if uncosted.len() < UNCOSTED_NAMED && !uncosted.contains(&reason) {
                            uncosted.push(reason);
                        }
                        None
                    }
                };
                list.push(Alternative { children, own });
            }
            nodes.push(list);
        }
        edges.sort_unstable();
        edges.dedup();
        let mut parents = vec![Vec::new(); classes.len()];
        for (c, p) in edges {
            parents[c].push(p);
        }
        let root = index[&eg.find(sat.root)];
        let rank = post_order_ranks(&nodes, root);
        (
            Tables {
                sat,
                classes,
                index,
                nodes,
                parents,
                root,
                rank,
            },
            uncosted,
            uncosted_count,
        )
    }

    /// The chosen program's classes reachable from the root, depth first; `Err` with the
    /// (class, node) pairs that close a cycle.
    pub(crate) fn walk(&self, choice: &[Option<usize>]) -> Result<Vec<usize>, Vec<(usize, usize)>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let mut mark = vec![Mark::New; self.classes.len()];
        let mut order = Vec::new();
        let mut closing = Vec::new();
        let mut stack: Vec<(usize, bool)> = vec![(self.root, false)];
        while let Some((c, expanded)) = stack.pop() {
            if expanded {
                mark[c] = Mark::Done;
                order.push(c);
                continue;
            }
            if mark[c] != Mark::New {
                continue;
            }
            mark[c] = Mark::Open;
            stack.push((c, true));
            let Some(k) = choice[c] else {
                // No choosable node: reported by the caller as an extraction failure.
                continue;
            };
            for &child in self.nodes[c][k].children.iter().rev() {
                match mark[child] {
                    Mark::Open => closing.push((c, k)),
                    Mark::New => stack.push((child, false)),
                    Mark::Done => {}
                }
            }
        }
        if closing.is_empty() {
            Ok(order)
        } else {
            closing.sort_unstable();
            closing.dedup();
            Err(closing)
        }
    }

    /// The true DAG cost of an acyclic choice: each reachable class's own cost once.
    pub(crate) fn dag_cost(&self, choice: &[Option<usize>], reachable: &[usize]) -> Option<f64> {
        reachable
            .iter()
            .map(|&c| choice[c].and_then(|k| self.nodes[c][k].own))
            .sum()
    }

    /// Consumers per class within an acyclic choice.
    fn consumers_in(&self, choice: &[Option<usize>], reachable: &[usize]) -> Vec<usize> {
        let mut n = vec![0usize; self.classes.len()];
        for &c in reachable {
            if let Some(k) = choice[c] {
                let mut kids = self.nodes[c][k].children.clone();
                kids.sort_unstable();
                kids.dedup();
                for child in kids {
                    n[child] += 1;
                }
            }
        }
        n
    }

    /// One amortised fixpoint: per class the node minimising `own + Σ cost(child) /
    /// consumers(child)`, with `banned` nodes excluded.
    fn amortised_choice(
        &self,
        consumers: &[usize],
        banned: &HashSet<(usize, usize)>,
    ) -> Vec<Option<usize>> {
        let n = self.classes.len();
        let mut cost = vec![f64::INFINITY; n];
        let mut choice: Vec<Option<usize>> = vec![None; n];
        // Lowest rank first: children before parents wherever the e-graph is acyclic, so
        // a class is mostly visited once its children have settled (first in, first out
        // would send a wave up the whole residual stream for every late change).
        let mut queued = vec![true; n];
        let mut work: BinaryHeap<Reverse<(usize, usize)>> =
            (0..n).map(|c| Reverse((self.rank[c], c))).collect();
        let mut pops = 0usize;
        while let Some(Reverse((_, c))) = work.pop() {
            pops += 1;
            queued[c] = false;
            let mut best = cost[c];
            let mut pick = choice[c];
            for (k, alt) in self.nodes[c].iter().enumerate() {
                let Some(own) = alt.own else { continue };
                if banned.contains(&(c, k)) {
                    continue;
                }
                let total = alt.children.iter().fold(own, |sum, &child| {
                    sum + cost[child] / consumers[child].max(1) as f64
                });
                // Strictly cheaper by a relative margin, so costs that fall around a
                // cycle converge instead of creeping forever, and ties keep the first.
                // A new pick must not close a short cycle through the current choices.
                if total < best * (1.0 - 1e-9)
                    && (choice[c] == Some(k) || !self.reaches(&choice, &alt.children, c))
                {
                    best = total;
                    pick = Some(k);
                }
            }
            if pick != choice[c] || best < cost[c] {
                cost[c] = best;
                choice[c] = pick;
                for &p in &self.parents[c] {
                    if !queued[p] {
                        queued[p] = true;
                        work.push(Reverse((self.rank[p], p)));
                    }
                }
            }
        }
        tracing::debug!(pops, classes = n, "extraction: fixpoint");
        choice
    }

    /// Whether `target` is reached from `from` within [`SHORT_CYCLE`] steps along the
    /// current choices: picking an e-node with these children would close a cycle. The
    /// cycles amortisation creates are short (a token split's `concat(slice(x), …)` in
    /// `x`'s class is two steps), so checking them here saves a repeat of the fixpoint
    /// per cycle; longer ones are found by the walk and banned.
    fn reaches(&self, choice: &[Option<usize>], from: &[usize], target: usize) -> bool {
        let mut frontier: Vec<usize> = from.to_vec();
        for _ in 0..SHORT_CYCLE {
            if frontier.contains(&target) {
                return true;
            }
            let mut next = Vec::new();
            for &c in &frontier {
                if let Some(k) = choice[c] {
                    next.extend_from_slice(&self.nodes[c][k].children);
                }
            }
            next.sort_unstable();
            next.dedup();
            frontier = next;
            if frontier.is_empty() {
                return false;
            }
        }
        frontier.contains(&target)
    }

    /// One round: the amortised choice under `consumers`, with the e-nodes that close a
    /// cycle added to `banned` and the fixpoint repeated until the choice is acyclic
    /// (`None` when that takes too many repeats or the root cannot be priced). Bans are
    /// kept across rounds: an e-node that closed a cycle under one amortisation tends to
    /// under the next, and banning restricts only the greedy's candidates (the original
    /// program is priced on its own).
    fn round(
        &self,
        consumers: &[usize],
        banned: &mut HashSet<(usize, usize)>,
        rounds: &mut usize,
    ) -> Option<Candidate> {
        for _ in 0..MAX_BAN_REPEATS {
            *rounds += 1;
            let choice = self.amortised_choice(consumers, banned);
            match self.walk(&choice) {
                Ok(reachable) => {
                    return self.dag_cost(&choice, &reachable).map(|cost| Candidate {
                        choice,
                        reachable,
                        cost,
                    });
                }
                Err(closing) => {
                    tracing::debug!(
                        cycles = closing.len(),
                        "extraction: banning e-nodes that close cycles"
                    );
                    banned.extend(closing);
                }
            }
        }
        None
    }

    /// The original program: per class its earliest original e-node. Children of an
    /// original node were added before it, so their earliest nodes come earlier still:
    /// this choice is acyclic.
    pub(crate) fn original_choice(&self) -> Vec<Option<usize>> {
        let eg = &self.sat.egraph;
        let mut choice: Vec<Option<(usize, usize)>> = vec![None; self.classes.len()];
        for (order, n) in self.sat.initial.iter().enumerate() {
            let canon = WNode {
                head: n.head,
                children: n.children.iter().map(|&c| eg.find(c)).collect(),
            };
            let Some(class) = eg.lookup(canon.clone()) else {
                continue;
            };
            let c = self.index[&class];
            if choice[c].is_some() {
                continue;
            }
            if let Some(k) = eg[class].nodes.iter().position(|m| *m == canon) {
                choice[c] = Some((order, k));
            }
        }
        choice.into_iter().map(|x| x.map(|(_, k)| k)).collect()
    }
}

/// Each class's position in a depth-first post-order over every e-node's children from
/// `root` (a child is ranked before its parent unless the edge closes a cycle); classes
/// the root does not reach come after.
fn post_order_ranks(nodes: &[Vec<Alternative>], root: usize) -> Vec<usize> {
    super::fast_extract::post_order(nodes.len(), &[root], |c, out| {
        for alt in &nodes[c] {
            out.extend_from_slice(&alt.children);
        }
    })
}

/// The own cost of one e-node, µs: 0 for sources, projections and the root.
fn own_cost(sat: &Saturated, class: Id, node: &WNode, cost: &dyn NodeCost) -> Result<f64, String> {
    let eg = &sat.egraph;
    let Head::Op(i) = node.head else {
        return Ok(0.0);
    };
    let op = eg.analysis.ops.get(i);
    if matches!(op.occupancy(), Occupancy::Source) {
        return Ok(0.0);
    }
    let inputs: Vec<&TensorType> = node
        .children
        .iter()
        .map(|&c| {
            eg[c]
                .data
                .ty()
                .ok_or_else(|| format!("{}: an input is not a tensor", op.name()))
        })
        .collect::<Result<_, _>>()?;
    let outputs: Vec<&TensorType> = match &eg[class].data {
        Meta::Value { ty, .. } => vec![ty],
        Meta::Tuple(items) => items.iter().map(|(t, _)| t).collect(),
        Meta::Root | Meta::Invalid(_) => {
            return Err(format!("{}: its class holds no typed value", op.name()));
        }
    };
    let t = cost
        .node_cost(op, &inputs, &outputs, &eg.analysis.dims)
        .map_err(|e| format!("{}: {e}", op.name()))?;
    if !t.is_finite() || t < 0.0 {
        return Err(format!("{}: the cost model gave {t} µs", op.name()));
    }
    Ok(t)
}

/// A candidate program: its acyclic choice, reachable classes and DAG cost.
pub(crate) struct Candidate {
    pub(crate) choice: Vec<Option<usize>>,
    pub(crate) reachable: Vec<usize>,
    pub(crate) cost: f64,
}

/// Extracts the program with the least DAG cost found under `cost` (see the module
/// documentation), never costlier than the original program.
pub fn extract(
    sat: &Saturated,
    template: &weft_ir::Graph,
    cost: &dyn NodeCost,
) -> Result<Extraction, SaturateError> {
    super::refuse_unsound(sat)?;
    let (tables, uncosted, uncosted_count) = Tables::new(sat, cost);
    let greedy = greedy(&tables, &uncosted)?;
    let graph = build(
        &tables,
        &greedy.best.choice,
        &greedy.best.reachable,
        template,
    )?;
    let rules_used = rules_used(&tables, &greedy.best.choice, &greedy.best.reachable);
    Ok(Extraction {
        graph,
        rules_used,
        cost_us: greedy.best.cost,
        original_cost_us: greedy.original_cost,
        kept_original: greedy.kept_original,
        rounds: greedy.rounds,
        uncosted,
        uncosted_count,
    })
}

/// What the greedy DAG extraction found: the cheapest candidate and the original's cost.
pub(crate) struct Greedy {
    pub(crate) best: Candidate,
    pub(crate) original_cost: f64,
    pub(crate) kept_original: bool,
    pub(crate) rounds: usize,
}

/// The greedy DAG extraction over `tables` (see the module documentation): never costlier
/// than the original program.
pub(crate) fn greedy(tables: &Tables<'_>, uncosted: &[String]) -> Result<Greedy, SaturateError> {
    let t0 = std::time::Instant::now();
    let original = tables.original_choice();
    let reachable = tables.walk(&original).map_err(|_| {
        SaturateError::Extraction("the original program is cyclic in the e-graph".into())
    })?;
    let original_cost = tables.dag_cost(&original, &reachable).ok_or_else(|| {
        SaturateError::Extraction(format!(
            "the cost model cannot price the original program: {}",
            uncosted.join("; ")
        ))
    })?;
    let mut best = Candidate {
        choice: original,
        reachable,
        cost: original_cost,
    };
    let mut kept_original = true;
    let mut rounds = 0;
    // Two starting points for the consumer counts: every class with an e-node reading a
    // class (the sharing some choice could reach), and the original program's readers.
    // From each, later rounds recount consumers in the last choice while that choice
    // gets cheaper.
    let starts = [
        tables.parents.iter().map(Vec::len).collect::<Vec<usize>>(),
        tables.consumers_in(&best.choice, &best.reachable),
    ];
    let mut banned: HashSet<(usize, usize)> = HashSet::new();
    for mut consumers in starts {
        let mut last = f64::INFINITY;
        for _ in 0..=REFINE_ROUNDS {
            let Some(candidate) = tables.round(&consumers, &mut banned, &mut rounds) else {
                break;
            };
            tracing::debug!(cost_us = candidate.cost, "extraction: a round's program");
            if candidate.cost >= last {
                break;
            }
            last = candidate.cost;
            consumers = tables.consumers_in(&candidate.choice, &candidate.reachable);
            if candidate.cost < best.cost {
                best = candidate;
                kept_original = false;
            }
        }
    }
    tracing::debug!(
        rounds,
        ms = t0.elapsed().as_secs_f64() * 1e3,
        cost_us = best.cost,
        original_us = original_cost,
        "extraction done"
    );
    Ok(Greedy {
        best,
        original_cost,
        kept_original,
        rounds,
    })
}

/// Which rule applications the choice uses: see [`Extraction::rules_used`].
pub(crate) fn rules_used(
    tables: &Tables<'_>,
    choice: &[Option<usize>],
    reachable: &[usize],
) -> Vec<(String, u64)> {
    let eg = &tables.sat.egraph;
    let original = tables.sat.original_enodes();
    let canonical = |node: &WNode| WNode {
        head: node.head,
        children: node.children.iter().map(|&ch| eg.find(ch)).collect(),
    };
    // Classes where the chosen e-node is one a rule built, with that e-node.
    let mut rewritten: HashMap<Id, WNode> = HashMap::new();
    for &c in reachable {
        let class = tables.classes[c];
        let Some(k) = choice[c] else { continue };
        let node = canonical(&eg[class].nodes[k]);
        if !original.contains(&node) {
            rewritten.insert(eg.find(class), node);
        }
    }
    let mut seen: HashSet<(&'static str, Id)> = HashSet::new();
    let mut counts: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for (rule, _, new, built) in &eg.analysis.applications {
        let new = eg.find(*new);
        let Some(chosen) = rewritten.get(&new) else {
            continue;
        };
        // A rule that built an e-node of its own counts only when that e-node is the
        // one chosen: another rule's form of the same class (a fused kernel where a token
        // split was also built) is not this rule's doing. A rule that only joined
        // existing classes (a slice folded into its half) counts by its class.
        let used = match built.as_ref().map(canonical) {
            Some(b) if !original.contains(&b) => b == *chosen,
            _ => true,
        };
        if used && seen.insert((rule, new)) {
            *counts.entry((*rule).to_owned()).or_insert(0) += 1;
        }
    }
    counts.into_iter().collect()
}

/// The IR graph of an acyclic choice (`reachable` in post-order: children first).
pub(crate) fn build(
    tables: &Tables<'_>,
    choice: &[Option<usize>],
    reachable: &[usize],
    template: &weft_ir::Graph,
) -> Result<weft_ir::Graph, SaturateError> {
    build_with_classes(tables, choice, reachable, template).map(|(g, _)| g)
}

/// [`build`], with each computed node's e-class by node name.
pub(crate) fn build_with_classes(
    tables: &Tables<'_>,
    choice: &[Option<usize>],
    reachable: &[usize],
    template: &weft_ir::Graph,
) -> Result<(weft_ir::Graph, HashMap<String, Id>), SaturateError> {
    let eg = &tables.sat.egraph;
    let mut expr: egg::RecExpr<WNode> = egg::RecExpr::default();
    let mut at: HashMap<usize, Id> = HashMap::new();
    let mut classes = Vec::with_capacity(reachable.len());
    for &c in reachable {
        let class = tables.classes[c];
        let k = choice[c].ok_or_else(|| {
            SaturateError::Extraction(format!("class {class} has no choosable e-node"))
        })?;
        let node = &eg[class].nodes[k];
        let children = node
            .children
            .iter()
            .map(|&ch| at[&tables.index[&eg.find(ch)]])
            .collect();
        let id = expr.add(WNode {
            head: node.head,
            children,
        });
        at.insert(c, id);
        classes.push(class);
    }
    super::convert::to_graph_with_classes(&expr, eg, &classes, &tables.sat.names, template)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use egg::{CostFunction, Extractor};
    use weft_ir::{DType, Graph, Shape};

    use super::*;
    use crate::saturate::{SaturationReport, convert};

    /// Per-op costs by name, µs: the one place the test's numbers live.
    fn by_name(op: &Op) -> f64 {
        match op.name() {
            "exp" => 10.0,
            "tanh" => 6.0,
            _ => 1.0,
        }
    }

    /// `s = exp(x)` feeds output `o1 = relu(s)`; output `a` is `neg(tanh(x))`, and
    /// output `a2 = sigmoid(s)` is made equal to it by hand (the second of two equal
    /// outputs comes out as a copy, a free reshape). Each alone: `neg(tanh)` costs
    /// 7, `sigmoid(exp)` 11, so a tree cost keeps `neg(tanh)`; but `exp` is paid for by
    /// `o1` anyway, so the DAG costs are 10+1+6+1 = 18 and 10+1+1 = 12.
    fn shared() -> (Saturated, Graph) {
        let mut g = Graph::new("shared");
        let t = || Shape::new([4u64, 4]);
        let x = g
            .add(
                "x",
                Op::Input {
                    dtype: DType::F32,
                    shape: t(),
                },
                &[],
            )
            .unwrap();
        let s = g.add("s", Op::Exp, &[x]).unwrap();
        let o1 = g.add("o1", Op::Relu, &[s]).unwrap();
        let th = g.add("t", Op::Tanh, &[x]).unwrap();
        let a = g.add("a", Op::Neg, &[th]).unwrap();
        let a2 = g.add("a2", Op::Sigmoid, &[s]).unwrap();
        g.outputs = vec![o1, a, a2];
        let (mut egraph, root, names) = convert::to_egraph(&g, false).unwrap();
        // `a` and `a2` made equal, as a rule would have.
        let class = |n: &str| *names.iter().find(|(_, v)| v.as_str() == n).unwrap().0;
        let initial = egraph
            .classes()
            .flat_map(|c| c.nodes.iter().cloned())
            .collect();
        egraph.union(class("a"), class("a2"));
        egraph.rebuild();
        let sat = Saturated {
            root: egraph.find(root),
            egraph,
            names,
            initial,
            report: SaturationReport {
                phases: Vec::new(),
                nodes: 0,
                classes: 0,
                elapsed: Duration::ZERO,
                unsound: Vec::new(),
                not_fired: Vec::new(),
                rounds: crate::saturate::RoundsReport {
                    rounds: 0,
                    stop_reason: "not run".into(),
                },
            },
        };
        (sat, g)
    }

    fn cost(op: &Op, _: &[&TensorType], _: &[&TensorType], _: &DimBindings) -> Result<f64, String> {
        Ok(by_name(op))
    }

    fn ops(g: &Graph) -> Vec<&'static str> {
        let mut v: Vec<_> = g.nodes().map(|(_, n)| n.op.name()).collect();
        v.sort_unstable();
        v
    }

    /// A tree-additive cost, as egg's extractor sums it.
    struct Tree<'a>(&'a Saturated);

    impl CostFunction<WNode> for Tree<'_> {
        type Cost = f64;
        fn cost<C: FnMut(Id) -> f64>(&mut self, enode: &WNode, mut costs: C) -> f64 {
            let own = match enode.head {
                Head::Op(i) => {
                    let op = self.0.egraph.analysis.ops.get(i);
                    if matches!(op.occupancy(), Occupancy::Source) {
                        0.0
                    } else {
                        by_name(op)
                    }
                }
                Head::Proj(_) | Head::Root => 0.0,
            };
            enode.children.iter().fold(own, |sum, &c| sum + costs(c))
        }
    }

    #[test]
    fn a_shared_value_is_counted_once() {
        let (sat, g) = shared();
        // The tree cost counts `exp` again for `sigmoid` and keeps `neg(tanh)`.
        let tree = Extractor::new(&sat.egraph, Tree(&sat));
        let a = sat.egraph.find(sat.egraph[sat.root].nodes[0].children[1]);
        let tree_pick = tree.find_best_node(a).head;
        let Head::Op(i) = tree_pick else {
            panic!("an op")
        };
        assert_eq!(sat.egraph.analysis.ops.get(i).name(), "neg");
        let got = extract(&sat, &g, &cost).unwrap();
        assert_eq!(got.original_cost_us, 18.0);
        assert_eq!(got.cost_us, 12.0);
        assert!(!got.kept_original);
        assert_eq!(
            ops(&got.graph),
            ["exp", "input", "relu", "reshape", "sigmoid"]
        );
    }

    #[test]
    fn the_original_is_kept_when_nothing_is_cheaper() {
        let (sat, g) = shared();
        // `sigmoid` dear: the original program is the cheapest.
        let dear = |op: &Op, _: &[&TensorType], _: &[&TensorType], _: &DimBindings| {
            Ok(if op.name() == "sigmoid" {
                100.0
            } else {
                by_name(op)
            })
        };
        let got = extract(&sat, &g, &dear).unwrap();
        assert!(got.kept_original);
        assert_eq!(got.cost_us, got.original_cost_us);
        assert_eq!(
            ops(&got.graph),
            ["exp", "input", "neg", "relu", "reshape", "tanh"]
        );
    }

    #[test]
    fn an_op_the_model_cannot_price_is_never_chosen_and_is_reported() {
        let (sat, g) = shared();
        let refuse = |op: &Op, _: &[&TensorType], _: &[&TensorType], _: &DimBindings| {
            if op.name() == "sigmoid" {
                Err("no sigmoid here".to_owned())
            } else {
                Ok(by_name(op))
            }
        };
        let got = extract(&sat, &g, &refuse).unwrap();
        assert_eq!(got.uncosted_count, 1);
        assert_eq!(got.uncosted, ["sigmoid: no sigmoid here"]);
        assert!(!ops(&got.graph).contains(&"sigmoid"));
        // An original op it cannot price: a clear error, no program.
        let refuse_exp = |op: &Op, _: &[&TensorType], _: &[&TensorType], _: &DimBindings| {
            if op.name() == "exp" {
                Err("no exp here".to_owned())
            } else {
                Ok(by_name(op))
            }
        };
        let err = extract(&sat, &g, &refuse_exp).unwrap_err();
        assert!(err.to_string().contains("exp: no exp here"), "{err}");
    }

    /// `s = exp(x)` read by three outputs and by `t = tanh(s)`, and `sigmoid(t)` made
    /// equal to `s`: amortised over its four readers, `s` through `sigmoid(tanh(s))`
    /// would cost `2 + cost(s)/4`, a fixpoint of 2.7 against `exp`'s 10, and a cycle.
    #[test]
    fn a_choice_never_closes_a_cycle() {
        let mut g = Graph::new("cycle");
        let x = g
            .add(
                "x",
                Op::Input {
                    dtype: DType::F32,
                    shape: Shape::new([4u64, 4]),
                },
                &[],
            )
            .unwrap();
        let s = g.add("s", Op::Exp, &[x]).unwrap();
        let t = g.add("t", Op::Tanh, &[s]).unwrap();
        let s2 = g.add("s2", Op::Sigmoid, &[t]).unwrap();
        let o1 = g.add("o1", Op::Relu, &[s]).unwrap();
        let o2 = g.add("o2", Op::Neg, &[s]).unwrap();
        g.outputs = vec![o1, o2, s, s2];
        let (mut egraph, root, names) = convert::to_egraph(&g, false).unwrap();
        let class = |n: &str| *names.iter().find(|(_, v)| v.as_str() == n).unwrap().0;
        let initial = egraph
            .classes()
            .flat_map(|c| c.nodes.iter().cloned())
            .collect();
        egraph.union(class("s"), class("s2"));
        egraph.rebuild();
        let sat = Saturated {
            root: egraph.find(root),
            egraph,
            names,
            initial,
            report: SaturationReport {
                phases: Vec::new(),
                nodes: 0,
                classes: 0,
                elapsed: Duration::ZERO,
                unsound: Vec::new(),
                not_fired: Vec::new(),
                rounds: crate::saturate::RoundsReport {
                    rounds: 0,
                    stop_reason: "not run".into(),
                },
            },
        };
        let got = extract(&sat, &g, &cost).unwrap();
        // exp 10 + relu 1 + neg 1, as the original.
        assert_eq!(got.original_cost_us, 12.0);
        assert_eq!(got.cost_us, 12.0);
        // Two rounds from each start, none repeated to ban a cycle: the fixpoint never
        // picked `sigmoid(tanh(s))` for `s`.
        assert_eq!(got.rounds, 4);
        assert_eq!(ops(&got.graph), ["exp", "input", "neg", "relu", "reshape"]);
    }
}
