//! The search's moves: groups of related e-class choices changed together.
//!
//! Changing one class at a time cannot find what overlap needs: splitting an all-reduce
//! pays only when both of its halves are consumed by pieces that can run apart, a token
//! split pays only when both halves flow through several ops, and a change in layer 17
//! that is not also made in layer 18 breaks the symmetry a schedule of identical layers
//! gains from. So a move is a set of (class, e-node) picks, built from the rule
//! applications the e-graph recorded, grouped four ways, coarse to fine:
//!
//! 1. every application of one ruleset (`collective`, `fusion`, `split`, ...);
//! 2. every application of one rule;
//! 3. a token-split chain: the split applications connected through the classes they
//!    touch (a split matmul, its halves' all-reduces, the slices and concats), tied
//!    across layers by their signatures;
//! 4. one rule at one position of a layer, tied across layers by signature.
//!
//! A fifth family, one layer's choices set to a seed's, is made in
//! [`super::layer_moves`] (it needs the seeds, and comes last in a pass).
//!
//! Applying a move picks its e-nodes; applying it again where all of them are already
//! picked reverts those classes to the program's original e-nodes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use egg::Id;

use crate::saturate::extract::Tables;
use crate::saturate::{Head, RULES, WNode};

use super::signature::Signatures;

/// A group of picks made together.
#[derive(Clone, Debug)]
pub(crate) struct Move {
    /// What it does, for `--explain-choice`.
    pub(crate) label: String,
    /// (class, e-node) pairs, sorted.
    pub(crate) picks: Vec<(usize, usize)>,
    /// For a move over every site of one rule: that rule.
    pub(crate) rule: Option<&'static str>,
    /// What the move is, independent of the e-graph it was made on: the same key names
    /// the corresponding move of another e-graph of the same layers.
    pub(crate) key: MoveKey,
    /// Whether applying it where all its picks are made reverts its classes to the
    /// original e-nodes (the rule moves); a layer move is not (its revert is the layer
    /// move to the program as sharded).
    pub(crate) revertible: bool,
}

/// A move's identity across e-graphs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum MoveKey {
    Ruleset(&'static str),
    Rule(&'static str),
    Chain(Vec<(&'static str, u64)>),
    Position(&'static str, u64),
    /// A layer move ([`super::layer_moves`]): the layers of one signature set to the
    /// choices of one seed (its index in the seed list).
    Layer(u64, usize),
}

/// A token-split chain's identity: its (rule, position signature) pairs, sorted.
type ChainKey = Vec<(&'static str, u64)>;

/// One application of a rule, as a pick.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Site {
    rule: &'static str,
    class: usize,
    node: usize,
}

/// Every move over `tables`' e-graph, coarse to fine, each once, in a deterministic order.
pub(crate) fn moves(tables: &Tables<'_>, sigs: &Signatures) -> Vec<Move> {
    let eg = &tables.sat.egraph;
    let names = tables.sat.class_names();
    let mut sites: BTreeSet<Site> = BTreeSet::new();
    for (rule, matched, new, built) in &eg.analysis.applications {
        let (rule, matched) = (*rule, *matched);
        let class = eg.find(matched);
        let built = built.as_ref().unwrap_or_else(|| eg.id_to_node(*new));
        let canonical = WNode {
            head: built.head,
            children: built.children.iter().map(|&c| eg.find(c)).collect(),
        };
        let Some(&c) = tables.index.get(&class) else {
            continue;
        };
        let Some(k) = eg[class].nodes.iter().position(|n| *n == canonical) else {
            continue;
        };
        if tables.nodes[c][k].own.is_none() {
            continue;
        }
        sites.insert(Site {
            rule,
            class: c,
            node: k,
        });
    }
    let ruleset_of = |rule: &str| {
        RULES
            .iter()
            .find(|r| r.name == rule)
            .map_or("other", |r| r.ruleset)
    };
    let mut out = Vec::new();
    let mut push =
        |label: String, picks: Vec<(usize, usize)>, rule: Option<&'static str>, key: MoveKey| {
            let mut picks = picks;
            picks.sort_unstable();
            picks.dedup();
            if !picks.is_empty() {
                out.push(Move {
                    label,
                    picks,
                    rule,
                    key,
                    revertible: true,
                });
            }
        };
    // 1. Per ruleset.
    let mut by_set: BTreeMap<&str, Vec<(usize, usize)>> = BTreeMap::new();
    for s in &sites {
        by_set
            .entry(ruleset_of(s.rule))
            .or_default()
            .push((s.class, s.node));
    }
    for (set, picks) in by_set {
        let n = picks.len();
        push(
            format!("every `{set}` rule everywhere ({n} sites)"),
            picks,
            None,
            MoveKey::Ruleset(set),
        );
    }
    // 2. Per rule.
    let mut by_rule: BTreeMap<&str, Vec<(usize, usize)>> = BTreeMap::new();
    for s in &sites {
        by_rule.entry(s.rule).or_default().push((s.class, s.node));
    }
    for (rule, picks) in &by_rule {
        push(
            format!("`{rule}` everywhere ({} sites)", picks.len()),
            picks.clone(),
            Some(*rule),
            MoveKey::Rule(rule),
        );
    }
    // 3. Token-split chains, tied by signature.
    let split: Vec<&Site> = sites
        .iter()
        .filter(|s| ruleset_of(s.rule) == "split")
        .collect();
    let mut chains: BTreeMap<ChainKey, Vec<(usize, usize)>> = BTreeMap::new();
    for component in connected(tables, &split) {
        let mut key: ChainKey = component
            .iter()
            .map(|s| (s.rule, sigs.class[s.class]))
            .collect();
        key.sort_unstable();
        key.dedup();
        chains
            .entry(key)
            .or_default()
            .extend(component.iter().map(|s| (s.class, s.node)));
    }
    for (key, picks) in chains {
        if key.len() > 1 {
            push(
                format!(
                    "token-split chain of {} rewrites at {} ({} sites)",
                    key.len(),
                    label_with(tables, &names, picks[0].0),
                    picks.len()
                ),
                picks,
                None,
                MoveKey::Chain(key),
            );
        }
    }
    // 4. One rule at one position, tied by signature.
    let mut by_position: BTreeMap<(&str, u64), Vec<(usize, usize)>> = BTreeMap::new();
    for s in &sites {
        by_position
            .entry((s.rule, sigs.class[s.class]))
            .or_default()
            .push((s.class, s.node));
    }
    let mut positions: Vec<_> = by_position.into_iter().collect();
    // Ordered by where the position first appears (class ids grow with the program).
    positions.sort_by_key(|((rule, _), picks)| (picks.iter().map(|p| p.0).min(), *rule));
    for ((rule, sig), picks) in positions {
        if by_rule
            .get(rule)
            .is_some_and(|all| all.len() == picks.len())
        {
            continue; // the same as family 2
        }
        push(
            format!(
                "`{rule}` at {} ({} sites)",
                label_with(tables, &names, picks[0].0),
                picks.len()
            ),
            picks,
            None,
            MoveKey::Position(rule, sig),
        );
    }
    out
}

/// The split sites grouped by the classes they share (the matched class and the
/// children of the built e-node), by union-find.
fn connected<'s>(tables: &Tables<'_>, sites: &[&'s Site]) -> Vec<Vec<&'s Site>> {
    let mut parent: Vec<usize> = (0..sites.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut owner: BTreeMap<usize, usize> = BTreeMap::new();
    for (i, s) in sites.iter().enumerate() {
        let mut touched = vec![s.class];
        touched.extend_from_slice(&tables.nodes[s.class][s.node].children);
        for c in touched {
            match owner.get(&c) {
                Some(&j) => {
                    let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                    parent[a.max(b)] = a.min(b);
                }
                None => {
                    owner.insert(c, i);
                }
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<&Site>> = BTreeMap::new();
    for (i, s) in sites.iter().enumerate() {
        let r = root(&mut parent, i);
        groups.entry(r).or_default().push(s);
    }
    groups.into_values().collect()
}

/// How a class reads in a move's label: its op and, for an original value, its name
/// (`names`: the e-graph's class names, computed once by the caller).
fn label_with(tables: &Tables<'_>, names: &HashMap<Id, &str>, class: usize) -> String {
    let eg = &tables.sat.egraph;
    let id = tables.classes[class];
    let op = eg[id]
        .nodes
        .iter()
        .find_map(|n| match n.head {
            Head::Op(i) => Some(eg.analysis.ops.label(i)),
            _ => None,
        })
        .unwrap_or_else(|| "a projection".to_owned());
    match names.get(&eg.find(id)) {
        Some(name) => format!("`{name}` ({op})"),
        None => op,
    }
}
