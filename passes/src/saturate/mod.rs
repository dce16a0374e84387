//! Equality saturation over a sharded graph with `egg`.
//!
//! The sharded graph becomes an e-graph ([`convert`]); exact rewrites ([`rules`]) add
//! every equivalent way to compute it — collectives decomposed, element-wise ops and
//! norms moved onto shards, GEMMs fused with their collectives, tokens split — in phases
//! (`collective`, then `fusion`, then `split`), repeated in rounds until a round adds
//! nothing, each phase with explicit node, iteration and
//! time limits and a reported stop reason. [`extract`] then picks one program under a
//! per-op cost model the caller gives ([`NodeCost`]), counting each shared value once
//! (a DAG cost, see [`mod@extract`]), and turns it back into an IR graph that `weft run`
//! executes.

mod analysis;
mod convert;
pub mod extract;
pub mod fast_extract;
pub(crate) mod lang;
mod rounds;
pub mod rules;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use egg::{CostFunction, Id, RecExpr};
use weft_ir::Graph;

pub use analysis::{Meta, WEGraph, WeftAnalysis};
/// The e-graph library, for custom cost functions.
pub use egg;
pub use extract::{Extraction, NodeCost, extract};
pub use lang::{Head, WNode};
pub use rounds::{PHASES, RoundsReport};
pub use rules::{Guards, RULES, RuleDef};

/// Why saturation or extraction failed.
#[derive(Debug, thiserror::Error)]
pub enum SaturateError {
    #[error("node `{node}`: {reason}")]
    Unsupported { node: String, reason: String },
    #[error("unknown rule `{name}` (rules: {known})")]
    UnknownRule { name: String, known: String },
    /// A rule named twice in a selection (egg would hold it twice and only print a line).
    #[error("rule `{0}` is named twice; name each rule once")]
    DuplicateRule(String),
    #[error("extraction failed: {0}")]
    Extraction(String),
    /// `explain` was asked about a rule that matched nothing in this graph.
    #[error("rule `{0}` never applied to this model, so there is nothing to explain")]
    NeverApplied(String),
    /// `explain` was given an e-graph saturated without explanations.
    #[error("explain needs an e-graph saturated with explanations (saturate_with_explanations)")]
    NoExplanations,
}

/// Limits and choices for a saturation run.
#[derive(Clone, Debug)]
pub struct SaturateOptions {
    /// E-nodes at which a phase stops (egg checks between rules, so a phase may overshoot
    /// by one rule's batch). The count is the e-graph's, so it bounds the whole run.
    pub node_limit: usize,
    /// Iterations of one phase in one round.
    pub iter_limit: usize,
    /// Time of one phase in one round; a run takes at most `max_rounds` × phases × this.
    pub time_limit: Duration,
    /// How many times the phases may run in order (`collective`, `fusion`, `split`):
    /// a later phase's results (token-split halves) are new sites for an earlier
    /// phase's rules, so the phases repeat until a round adds nothing, a limit stops a
    /// phase, or this many rounds have run.
    pub max_rounds: usize,
    /// Rules to run, by name; all of them when empty.
    pub rules: Vec<String>,
    pub guards: Guards,
}

impl Default for SaturateOptions {
    fn default() -> SaturateOptions {
        SaturateOptions {
            node_limit: 500_000,
            iter_limit: 8,
            time_limit: Duration::from_secs(10),
            max_rounds: 4,
            rules: Vec::new(),
            guards: Guards::default(),
        }
    }
}

/// One rule's activity in a phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleStats {
    pub name: &'static str,
    pub matches: usize,
    pub applied: usize,
}

/// One phase of saturation, in one round.
#[derive(Clone, Debug)]
pub struct PhaseReport {
    pub ruleset: &'static str,
    /// The round it ran in, from 1.
    pub round: usize,
    pub stop_reason: String,
    pub iterations: usize,
    pub nodes: usize,
    pub classes: usize,
    pub elapsed: Duration,
    pub rules: Vec<RuleStats>,
}

/// What saturation did.
#[derive(Clone, Debug)]
pub struct SaturationReport {
    pub phases: Vec<PhaseReport>,
    pub nodes: usize,
    pub classes: usize,
    pub elapsed: Duration,
    /// Merges of classes with different types: an unsound rule (never expected).
    pub unsound: Vec<String>,
    /// Rules asked for by name that never applied.
    pub not_fired: Vec<&'static str>,
    /// How many rounds of phases ran, and why no further one did.
    pub rounds: RoundsReport,
}

/// A saturated e-graph and its root.
#[derive(Debug)]
pub struct Saturated {
    pub egraph: WEGraph,
    pub root: Id,
    names: HashMap<Id, String>,
    /// The e-nodes the graph itself gave, before any rule ran.
    initial: Vec<WNode>,
    pub report: SaturationReport,
}

/// The rules selected by name (all when `names` is empty).
pub fn select_rules(names: &[String]) -> Result<Vec<RuleDef>, SaturateError> {
    if names.is_empty() {
        return Ok(RULES.to_vec());
    }
    if let Some((_, n)) = names
        .iter()
        .enumerate()
        .find(|(i, n)| names[..*i].contains(n))
    {
        return Err(SaturateError::DuplicateRule(n.clone()));
    }
    names
        .iter()
        .map(|n| {
            RULES
                .iter()
                .find(|r| r.name == n.as_str())
                .copied()
                .ok_or_else(|| SaturateError::UnknownRule {
                    name: n.clone(),
                    known: RULES.iter().map(|r| r.name).collect::<Vec<_>>().join(", "),
                })
        })
        .collect()
}

/// Saturates `graph` (a sharded graph) with the selected rules, phase by phase.
pub fn saturate(graph: &Graph, options: &SaturateOptions) -> Result<Saturated, SaturateError> {
    saturate_impl(graph, options, false)
}

/// [`saturate`], with egg's explanations recorded so that [`explain`] can be asked about
/// this same run (slower; saturating again to explain would repeat every warning).
pub fn saturate_with_explanations(
    graph: &Graph,
    options: &SaturateOptions,
) -> Result<Saturated, SaturateError> {
    saturate_impl(graph, options, true)
}

/// egg's explanation of the first application of `rule` in `sat` (from
/// [`saturate_with_explanations`]): the chain of rewrites proving the matched term equal
/// to the term the rule built, with IR op names. Terms are shown to a depth of four (the
/// rest is `…`): a residual stream expands exponentially as a tree.
pub fn explain(sat: &mut Saturated, rule: &str) -> Result<String, SaturateError> {
    select_rules(&[rule.to_owned()])?;
    if !sat.egraph.are_explanations_enabled() {
        return Err(SaturateError::NoExplanations);
    }
    let ops = sat.egraph.analysis.ops.clone();
    let Some(&(_, a, b, _)) = sat
        .egraph
        .analysis
        .applications
        .iter()
        .find(|(name, _, _, _)| *name == rule)
    else {
        return Err(SaturateError::NeverApplied(rule.to_owned()));
    };
    let mut explanation = sat.egraph.explain_id_equivalence(a, b);
    let mut out = String::new();
    for step in explanation.make_flat_explanation() {
        out.push_str(&flat_text(&ops, step, 0));
        out.push('\n');
    }
    Ok(out)
}

fn flat_text(ops: &lang::OpTable, t: &egg::FlatTerm<WNode>, depth: usize) -> String {
    let head = match t.node.head {
        Head::Op(i) => ops.label(i),
        Head::Proj(k) => format!("proj{k}"),
        Head::Root => "outputs".to_owned(),
    };
    let body = if t.children.is_empty() {
        head
    } else if depth >= 4 {
        format!("({head} …)")
    } else {
        let kids: Vec<String> = t
            .children
            .iter()
            .map(|c| flat_text(ops, c, depth + 1))
            .collect();
        format!("({head} {})", kids.join(" "))
    };
    match (&t.forward_rule, &t.backward_rule) {
        (Some(r), _) => format!("(Rewrite=> {r} {body})"),
        (_, Some(r)) => format!("(Rewrite<= {r} {body})"),
        _ => body,
    }
}

fn saturate_impl(
    graph: &Graph,
    options: &SaturateOptions,
    explanations: bool,
) -> Result<Saturated, SaturateError> {
    let start = Instant::now();
    let selected = select_rules(&options.rules)?;
    let (mut egraph, root, names) = convert::to_egraph(graph, explanations)?;
    let initial: Vec<WNode> = egraph
        .classes()
        .flat_map(|c| c.nodes.iter().cloned())
        .collect();
    let (phases, rounds) = rounds::run(&mut egraph, &selected, options);
    let mut applied_total: HashMap<&'static str, usize> = HashMap::new();
    for stats in phases.iter().flat_map(|p| &p.rules) {
        *applied_total.entry(stats.name).or_default() += stats.applied;
    }
    let not_fired = if options.rules.is_empty() {
        Vec::new()
    } else {
        selected
            .iter()
            .filter(|r| applied_total.get(r.name).copied().unwrap_or(0) == 0)
            .map(|r| r.name)
            .collect()
    };
    // Reported, not warned here: the caller says it to the user once, in its own terms
    // (`weft dump` warns; a fixed strategy makes it a plan note).
    let report = SaturationReport {
        nodes: egraph.total_size(),
        classes: egraph.number_of_classes(),
        elapsed: start.elapsed(),
        unsound: egraph.analysis.unsound.clone(),
        not_fired,
        phases,
        rounds,
    };
    Ok(Saturated {
        root: egraph.find(root),
        egraph,
        names,
        initial,
        report,
    })
}

impl Saturated {
    /// Every named class's name (its earliest original value's), computed once per call:
    /// for labelling many classes, call this once rather than [`Saturated::name_of`] each.
    pub(crate) fn class_names(&self) -> HashMap<Id, &str> {
        let mut out: HashMap<Id, (Id, &str)> = HashMap::new();
        for (id, n) in &self.names {
            let class = self.egraph.find(*id);
            let e = out.entry(class).or_insert((*id, n.as_str()));
            if *id < e.0 {
                *e = (*id, n.as_str());
            }
        }
        out.into_iter().map(|(c, (_, n))| (c, n)).collect()
    }

    /// The e-nodes the graph itself gave (before any rule ran), with their children
    /// canonical: an e-node not in this set is one a rule built.
    pub(crate) fn original_enodes(&self) -> std::collections::HashSet<WNode> {
        let eg = &self.egraph;
        self.initial
            .iter()
            .map(|n| WNode {
                head: n.head,
                children: n.children.iter().map(|&c| eg.find(c)).collect(),
            })
            .collect()
    }
}

/// Extracts the program that uses rewritten forms wherever there are any: what the rules
/// built, for inspecting them and for proving each rule by execution.
pub fn extract_rewritten(sat: &Saturated, template: &Graph) -> Result<Graph, SaturateError> {
    let cost = PreferRewritten {
        original: sat.original_enodes(),
    };
    extract_with(sat, template, cost)
}

/// Original nodes cost 1, nodes a rule built 0.001, projections nothing, plus the dearest
/// child: a max rather than a sum, so a value two pieces share is not counted twice.
#[derive(Debug)]
pub(crate) struct PreferRewritten {
    original: std::collections::HashSet<WNode>,
}

impl PreferRewritten {
    /// The preference for the rewritten forms of `sat` (what [`extract_rewritten`] uses).
    pub(crate) fn of(sat: &Saturated) -> PreferRewritten {
        PreferRewritten {
            original: sat.original_enodes(),
        }
    }
}

impl CostFunction<WNode> for PreferRewritten {
    type Cost = f64;

    fn cost<C>(&mut self, enode: &WNode, mut costs: C) -> f64
    where
        C: FnMut(Id) -> f64,
    {
        // A projection is bookkeeping, not an op: free, so a multi-output kernel's second
        // result (TokenWeave's residual) is preferred to recomputing it.
        let own = if matches!(enode.head, Head::Proj(_)) {
            0.0
        } else if self.original.contains(enode) {
            1.0
        } else {
            0.001
        };
        own + enode
            .children
            .iter()
            .fold(0.0, |m: f64, &c| m.max(costs(c)))
    }
}

/// [`refuse_unsound`], for the search.
pub(crate) fn refuse_unsound_pub(sat: &Saturated) -> Result<(), SaturateError> {
    refuse_unsound(sat)
}

/// No program from an e-graph in which a rule merged classes that differ can be trusted.
fn refuse_unsound(sat: &Saturated) -> Result<(), SaturateError> {
    match sat.report.unsound.first() {
        Some(first) => Err(SaturateError::Extraction(format!(
            "a rule merged classes that differ, so no program from this e-graph can be trusted: {first}"
        ))),
        None => Ok(()),
    }
}

/// Extracts with any (monotone) cost function: an acyclic term by construction, rebuilt
/// as an IR graph and verified.
pub fn extract_with<C>(sat: &Saturated, template: &Graph, cost: C) -> Result<Graph, SaturateError>
where
    C: CostFunction<WNode>,
    C::Cost: PartialOrd + Clone,
{
    refuse_unsound(sat)?;
    let extractor = fast_extract::FastExtractor::new(&sat.egraph, cost);
    let mut expr: RecExpr<WNode> = RecExpr::default();
    let mut classes: Vec<Id> = Vec::new();
    let mut memo: HashMap<Id, Id> = HashMap::new();
    // Post-order over the chosen nodes, each class emitted once (shared values stay shared).
    let mut stack: Vec<(Id, bool)> = vec![(sat.root, false)];
    let mut on_path: std::collections::HashSet<Id> = std::collections::HashSet::new();
    while let Some((class, expanded)) = stack.pop() {
        let class = sat.egraph.find(class);
        if memo.contains_key(&class) {
            continue;
        }
        let node = extractor.find_best_node(class).clone();
        if expanded {
            let children = node
                .children
                .iter()
                .map(|&c| memo[&sat.egraph.find(c)])
                .collect();
            let at = expr.add(WNode {
                head: node.head,
                children,
            });
            classes.push(class);
            memo.insert(class, at);
            on_path.remove(&class);
            continue;
        }
        if !on_path.insert(class) {
            return Err(SaturateError::Extraction(format!(
                "the chosen program is cyclic at class {class}"
            )));
        }
        stack.push((class, true));
        for &c in node.children.iter().rev() {
            let c = sat.egraph.find(c);
            if !memo.contains_key(&c) {
                if on_path.contains(&c) {
                    return Err(SaturateError::Extraction(format!(
                        "the chosen program is cyclic at class {c}"
                    )));
                }
                stack.push((c, false));
            }
        }
    }
    convert::to_graph(&expr, &sat.egraph, &classes, &sat.names, template)
}
