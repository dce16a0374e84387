//! Seeds: coherent programs that apply a set of rules wherever they apply.
//!
//! Overlap needs rules in combination — an all-reduce split into reduce-scatter and
//! all-gather pays only once the GEMM before it absorbs the reduce-scatter and the GEMM
//! after it the all-gather, with the norm and residual add moved onto the shard between
//! them — and every piece alone makes the step slower, so a hill climb from the greedy
//! program never reaches it. Seeds start the search there: for a set of rules, the
//! program that uses their rewritten forms everywhere (a tree extraction where an
//! original e-node costs 1, an e-node one of the rules built 0.001, and one another rule
//! built is avoided), the way a peer system applies its fixed decomposition.

use std::collections::{HashMap, HashSet};

use egg::{CostFunction, Id};

use crate::saturate::fast_extract::FastExtractor;

use crate::saturate::WNode;
use crate::saturate::extract::Tables;

/// Cost of an e-node built by a rule outside the set (an original one costs 1).
const AVOIDED: f64 = 1e6;

struct PreferRules {
    original: HashSet<WNode>,
    /// The top e-node of each application, by the rule that built it.
    built_by: HashMap<WNode, &'static str>,
    unpriced: HashSet<WNode>,
    allowed: Vec<&'static str>,
}

impl CostFunction<crate::saturate::WNode> for PreferRules {
    type Cost = f64;

    fn cost<C>(&mut self, enode: &WNode, mut costs: C) -> f64
    where
        C: FnMut(Id) -> f64,
    {
        let own = if self.unpriced.contains(enode) {
            f64::INFINITY
        } else if self.original.contains(enode) {
            1.0
        } else {
            match self.built_by.get(enode) {
                Some(rule) if !self.allowed.contains(rule) => AVOIDED,
                _ => 0.001,
            }
        };
        // The dearest child rather than the sum: a value two pieces share is not
        // counted twice (the residual stream would otherwise dominate).
        own + enode
            .children
            .iter()
            .fold(0.0, |m: f64, &c| m.max(costs(c)))
    }
}

/// The choice that applies `allowed` rules wherever they apply, over `tables`.
pub(crate) fn prefer_rules(tables: &Tables<'_>, allowed: &[&'static str]) -> Vec<Option<usize>> {
    let sat = tables.sat;
    let eg = &sat.egraph;
    let canonical = |n: &WNode| WNode {
        head: n.head,
        children: n.children.iter().map(|&c| eg.find(c)).collect(),
    };
    let mut built_by = HashMap::new();
    for (rule, _, new, built) in &eg.analysis.applications {
        let node = built.as_ref().unwrap_or_else(|| eg.id_to_node(*new));
        built_by.entry(canonical(node)).or_insert(*rule);
    }
    let mut unpriced = HashSet::new();
    for (c, &class) in tables.classes.iter().enumerate() {
        for (n, alt) in eg[class].nodes.iter().zip(&tables.nodes[c]) {
            if alt.own.is_none() {
                unpriced.insert(n.clone());
            }
        }
    }
    let extractor = FastExtractor::new(
        eg,
        PreferRules {
            original: sat.original_enodes(),
            built_by,
            unpriced,
            allowed: allowed.to_vec(),
        },
    );
    tables
        .classes
        .iter()
        .enumerate()
        .map(|(c, &class)| {
            let cost = extractor.find_best_cost(class)?;
            if !cost.is_finite() {
                return None;
            }
            let best = extractor.find_best_node(class);
            eg[class]
                .nodes
                .iter()
                .position(|n| n == best)
                .filter(|&k| tables.nodes[c][k].own.is_some())
        })
        .collect()
}

/// The seeds' rule sets: every non-empty union of rulesets (in phase order), so that
/// combinations such as `collective` + `fusion` (Megatron-SP with fused GEMM +
/// collective kernels) are starting points. Each with its name.
pub(crate) fn ruleset_unions() -> Vec<(String, Vec<&'static str>)> {
    let mut sets: Vec<&'static str> = Vec::new();
    for r in crate::saturate::RULES {
        if !sets.contains(&r.ruleset) {
            sets.push(r.ruleset);
        }
    }
    let mut out = Vec::new();
    for mask in 1u32..(1 << sets.len()) {
        let chosen: Vec<&str> = (0..sets.len())
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| sets[i])
            .collect();
        let rules = crate::saturate::RULES
            .iter()
            .filter(|r| chosen.contains(&r.ruleset))
            .map(|r| r.name)
            .collect();
        out.push((
            format!("every `{}` rule applied", chosen.join("` + `")),
            rules,
        ));
    }
    out
}

/// Every seed's rule set: the ruleset unions, then each fixed strategy's rules (a peer's
/// decomposition as a starting point, so the search refines what a peer would do; the
/// strategy's kernel configuration is not imposed here, the cost model chooses).
pub(crate) fn seed_rule_sets() -> Vec<(String, Vec<&'static str>)> {
    let mut out = ruleset_unions();
    for s in crate::strategy::Strategy::FIXED {
        if let Some(spec) = crate::strategy::spec::spec(s)
            && !spec.rules.value.is_empty()
        {
            out.push((format!("`{s}`'s rules applied"), spec.rules.value.to_vec()));
        }
    }
    out
}
