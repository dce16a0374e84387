//! A fixed strategy's program: the sharded graph saturated with the strategy's rules only,
//! the program that applies them wherever they apply, and the kernel configuration each
//! of its communicating ops gets from the strategy's spec.
//!
//! The extraction is not a cost-driven choice: a peer system applies its decomposition
//! wherever its pattern matches (PyTorch's pass rewrites every all_gather→mm it finds,
//! TokenWeave splits every layer), so the program prefers the rewritten form of every
//! value, as `extract_rewritten` does. What the strategy asked for and did not get — a
//! rule that never matched, one that matched but whose result the program does not use,
//! a phase that stopped at a limit, a chunk count the shapes do not allow — is said in
//! [`FixedProgram::notes`], never dropped.

use std::collections::{BTreeMap, HashMap, HashSet};

use egg::Id;

use crate::saturate::fast_extract::FastExtractor;
use weft_ir::{Graph, NodeId, Op, TensorType};

use super::Strategy;
use super::spec::{Chunking, StrategySpec, spec};
use crate::cost::imposed::{FusedSplit, KernelChoice};
use crate::cost::{CostModel, OpCost};
use crate::saturate::{
    PreferRewritten, SaturateError, SaturateOptions, Saturated, WNode, extract_with, saturate,
};
use crate::schedule::{ScheduleError, TaskCosts};

/// Why a fixed strategy's program could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StrategyError {
    /// `best` is a search, not a fixed program.
    #[error(
        "--strategy {0} is not a fixed strategy (fixed: none, megatron-sp, async-tp, tokenweave, flux, comet)"
    )]
    NotFixed(Strategy),
    #[error("--strategy {strategy}: {source}")]
    Saturate {
        strategy: Strategy,
        source: SaturateError,
    },
    #[error("--strategy {strategy}: node `{node}`: {reason}")]
    Node {
        strategy: Strategy,
        node: String,
        reason: String,
    },
}

/// A fixed strategy's program and how to price it.
#[derive(Debug)]
pub struct FixedProgram {
    pub strategy: Strategy,
    /// The per-device program (verified by extraction; the sharded graph for `none`).
    pub graph: Graph,
    /// The rules whose results the program uses, with how many applications, by name.
    pub rules_used: Vec<(String, u64)>,
    /// What the strategy asked for and did not get, and what this build lacks.
    pub notes: Vec<String>,
    /// The scheduler's costs: the cost model with the spec's kernel configuration imposed.
    pub costs: StrategyCosts,
}

/// The cost model with a fixed kernel configuration per op (by node name); any op not
/// listed keeps the model's own choice.
#[derive(Clone, Debug)]
pub struct StrategyCosts {
    model: CostModel,
    choices: HashMap<String, KernelChoice>,
}

impl StrategyCosts {
    /// The configuration imposed on node `name` ([`KernelChoice::FREE`] when none is).
    pub fn choice(&self, name: &str) -> KernelChoice {
        self.choices
            .get(name)
            .copied()
            .unwrap_or(KernelChoice::FREE)
    }

    /// The cost model underneath.
    pub fn model(&self) -> &CostModel {
        &self.model
    }
}

impl TaskCosts for StrategyCosts {
    fn cost(&self, graph: &Graph, node: NodeId) -> Result<OpCost, ScheduleError> {
        let n = graph.node(node);
        let inputs: Vec<&TensorType> = n.inputs.iter().map(|&v| &graph.value(v).ty).collect();
        let outputs: Vec<&TensorType> = n.outputs.iter().map(|&v| &graph.value(v).ty).collect();
        self.model
            .op_cost_with(&n.op, &inputs, &outputs, &graph.dims, &self.choice(&n.name))
            .map_err(|e| ScheduleError::Cost {
                node: n.name.clone(),
                reason: e.to_string(),
            })
    }

    fn contention_slowdown(&self, comm: &OpCost) -> f64 {
        self.model.contention_slowdown(comm)
    }
}

/// Builds `strategy`'s program for the sharded graph `sharded`, priced by `cost`.
pub fn fixed_program(
    strategy: Strategy,
    sharded: &Graph,
    cost: &CostModel,
) -> Result<FixedProgram, StrategyError> {
    let spec = spec(strategy).ok_or(StrategyError::NotFixed(strategy))?;
    let mut notes = Vec::new();
    if let Some(p) = spec.pending {
        notes.push(format!("--strategy {strategy}: {p}"));
    }
    let mut rules: Vec<&'static str> = spec.rules.value.to_vec();
    let (graph, rules_used) = loop {
        // Each attempt's notes; only the last attempt's are kept.
        let mut attempt = Vec::new();
        let (graph, used) = rewritten_program(spec, &rules, sharded, &mut attempt)?;
        // A kernel the hardware cannot run (TokenWeave's needs NVLink SHARP): the
        // strategy runs without the rule that makes it, and says so.
        let unpriced = graph.nodes().find_map(|(id, n)| {
            if matches!(n.op.occupancy(), weft_ir::Occupancy::Source) {
                return None;
            }
            cost.node_cost(&graph, id).err().map(|e| (n.op.name(), e))
        });
        match unpriced {
            Some((op, e)) => {
                let Some(rule) = HARDWARE_KERNELS
                    .iter()
                    .find(|(kernel_op, rule)| *kernel_op == op && rules.contains(rule))
                    .map(|(_, rule)| *rule)
                else {
                    notes.extend(attempt);
                    break (graph, used);
                };
                notes.push(format!(
                    "--strategy {strategy}: rule `{rule}` left out: its kernel cannot run here \
                     ({e})"
                ));
                rules.retain(|r| *r != rule);
            }
            None => {
                notes.extend(attempt);
                break (graph, used);
            }
        }
    };
    if !spec.rules.value.is_empty() && rules_used.is_empty() {
        notes.push(format!(
            "--strategy {strategy}: none of its rules applies to this model, so its program \
             is the sharded program unchanged"
        ));
    }
    let choices = kernel_choices(spec, &graph, cost, &mut notes)?;
    Ok(FixedProgram {
        strategy,
        graph,
        rules_used,
        notes,
        costs: StrategyCosts {
            model: cost.clone(),
            choices,
        },
    })
}

/// Rules whose kernel needs a hardware feature some profiles lack, by the op they make:
/// where the cost model cannot price that op on the profile, a fixed strategy runs without
/// the rule (and notes it) rather than failing.
const HARDWARE_KERNELS: &[(&str, &str)] = &[(
    "reduce_scatter_add_norm_all_gather",
    "tokenweave-fused-rs-norm-ag",
)];

/// The program that applies `rules` (the spec's, or fewer) wherever they apply, and the
/// rule applications it uses; notes for phases that hit a limit and for rules that did not
/// fire or are not used.
fn rewritten_program(
    spec: &StrategySpec,
    rules: &[&'static str],
    sharded: &Graph,
    notes: &mut Vec<String>,
) -> Result<(Graph, Vec<(String, u64)>), StrategyError> {
    let strategy = spec.strategy;
    let sat_err = |source| StrategyError::Saturate { strategy, source };
    if rules.is_empty() {
        return Ok((sharded.clone(), Vec::new()));
    }
    let options = SaturateOptions {
        rules: rules.iter().map(|r| (*r).to_owned()).collect(),
        ..SaturateOptions::default()
    };
    let sat = saturate(sharded, &options).map_err(sat_err)?;
    for phase in &sat.report.phases {
        if phase.stop_reason != "saturated" {
            notes.push(format!(
                "--strategy {strategy}: the `{}` phase stopped at its {}, so its rules may \
                 not have applied everywhere",
                phase.ruleset, phase.stop_reason
            ));
        }
    }
    let used = rules_in_rewritten_program(&sat);
    let graph = extract_with(&sat, sharded, PreferRewritten::of(&sat)).map_err(sat_err)?;
    report_rules(spec, rules, &sat, &used, notes);
    Ok((graph, used.into_iter().collect()))
}

/// Notes for the spec's rules that never matched, or matched but are not used.
fn report_rules(
    spec: &StrategySpec,
    rules: &[&'static str],
    sat: &Saturated,
    used: &BTreeMap<String, u64>,
    notes: &mut Vec<String>,
) {
    let strategy = spec.strategy;
    for rule in rules {
        if sat.report.not_fired.contains(rule) {
            notes.push(format!(
                "--strategy {strategy}: rule `{rule}` did not fire: nothing in this model \
                 matches it"
            ));
        } else if !used.contains_key(*rule) {
            notes.push(format!(
                "--strategy {strategy}: rule `{rule}` applied in the e-graph, but the program \
                 that prefers rewritten forms uses none of its results (another rule's form \
                 of the same values was taken)"
            ));
        }
    }
}

/// The rule applications the rewritten program (as [`extract_with`] with
/// [`PreferRewritten`] builds it) uses, per rule: an application counts when the program
/// chooses an e-node no rule-free program has in a class it joined to the matched one (as
/// `Extraction::rules_used` counts) or in a class it created — so a reduce-scatter the
/// all-reduce split made counts although the all-gather it joined is not used.
fn rules_in_rewritten_program(sat: &Saturated) -> BTreeMap<String, u64> {
    let eg = &sat.egraph;
    let extractor = FastExtractor::new(eg, PreferRewritten::of(sat));
    let original = sat.original_enodes();
    let mut rewritten: HashSet<Id> = HashSet::new();
    let mut seen: HashSet<Id> = HashSet::new();
    let mut stack = vec![eg.find(sat.root)];
    while let Some(class) = stack.pop() {
        if !seen.insert(class) {
            continue;
        }
        let node = extractor.find_best_node(class);
        let canonical = WNode {
            head: node.head,
            children: node.children.iter().map(|&c| eg.find(c)).collect(),
        };
        if !original.contains(&canonical) {
            rewritten.insert(class);
        }
        stack.extend(canonical.children.iter().copied());
    }
    // One count per application whose classes (created, or joined to the matched one) the
    // program uses, each (rule, first such class) once: egg re-applies a match in later
    // iterations, and an application that changes nothing is not recorded.
    let mut counted: HashSet<(&'static str, Id)> = HashSet::new();
    for (rule, made) in &eg.analysis.built {
        if let Some(class) = made
            .iter()
            .map(|&c| eg.find(c))
            .find(|c| rewritten.contains(c))
        {
            counted.insert((rule, class));
        }
    }
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for (rule, _) in counted {
        *counts.entry(rule.to_owned()).or_insert(0) += 1;
    }
    counts
}

/// The kernel configuration the spec imposes on each communicating node of `graph`.
fn kernel_choices(
    spec: &StrategySpec,
    graph: &Graph,
    cost: &CostModel,
    notes: &mut Vec<String>,
) -> Result<HashMap<String, KernelChoice>, StrategyError> {
    let strategy = spec.strategy;
    let mut choices = HashMap::new();
    for (_, node) in graph.nodes() {
        let occupancy = node.op.occupancy();
        let Some(collective) = occupancy.collective() else {
            continue;
        };
        let fused = matches!(
            node.op,
            Op::MatMulReduceScatter { .. } | Op::AllGatherMatMul { .. }
        );
        let choice = if fused {
            let inputs: Vec<&TensorType> =
                node.inputs.iter().map(|&v| &graph.value(v).ty).collect();
            let outputs: Vec<&TensorType> =
                node.outputs.iter().map(|&v| &graph.value(v).ty).collect();
            let split = cost
                .fused_split(&node.op, &inputs, &outputs, &graph.dims)
                .map_err(|e| StrategyError::Node {
                    strategy,
                    node: node.name.clone(),
                    reason: e.to_string(),
                })?;
            let chunks = match spec.chunks.value.of(collective.kind) {
                Chunking::NoFusion => {
                    notes.push(format!(
                        "--strategy {strategy}: node `{}` is a fused GEMM + collective, which \
                         this strategy does not make; the cost model chooses its chunks",
                        node.name
                    ));
                    None
                }
                Chunking::PerRank => Some(fit_chunks(
                    strategy,
                    &node.name,
                    split,
                    split.group_size,
                    "one per rank",
                    notes,
                )),
                Chunking::Tiles { rows } => Some(fit_chunks(
                    strategy,
                    &node.name,
                    split,
                    split.shard_len.div_ceil(rows.max(1)).max(1),
                    "one per tile",
                    notes,
                )),
            };
            KernelChoice {
                chunks,
                comm_sms: spec.fused_sms(collective.kind).imposed(),
            }
        } else {
            KernelChoice {
                chunks: None,
                comm_sms: spec.collective_sms(collective.kind).imposed(),
            }
        };
        if choice != KernelChoice::FREE {
            choices.insert(node.name.clone(), choice);
        }
    }
    Ok(choices)
}

/// `want` chunks when the op can take them, else the largest count below it that it can
/// (1 always can), with a note.
fn fit_chunks(
    strategy: Strategy,
    node: &str,
    split: FusedSplit,
    want: u64,
    why: &str,
    notes: &mut Vec<String>,
) -> u64 {
    if split.allows(want) {
        return want;
    }
    let got = (1..want).rev().find(|&c| split.allows(c)).unwrap_or(1);
    notes.push(format!(
        "--strategy {strategy}: node `{node}` should run in {want} chunks ({why}), but its split \
         dim ({} rows per rank over {} ranks) does not divide into them; it runs in {got}",
        split.shard_len, split.group_size
    ));
    got
}
