//! Local search with the scheduler's makespan as the objective.
//!
//! A choice (one e-node per e-class) is priced by building its program and scheduling
//! it on every rank (`schedule`): the predicted step time sees what a per-op sum cannot,
//! communication hidden under concurrent compute and the contention between them. From
//! the best seed, each move ([`super::moves`]) is tried in a fixed order and kept when it
//! makes the step strictly faster; passes repeat until one keeps nothing, or the budget
//! of evaluations (or, as a safety net, of time) runs out. No randomness: the same input
//! gives the same trajectory.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use egg::Id;

use weft_ir::Graph;

use crate::saturate::extract::{Tables, build_with_classes};
use crate::schedule::{ScheduleOptions, TaskCosts, makespan, schedule};

use super::moves::Move;

/// Why the search stopped.
#[derive(Clone, Debug, PartialEq)]
pub enum StopReason {
    /// A whole pass over the moves kept none: a local optimum.
    Converged { passes: usize },
    /// The budget of evaluations was spent.
    EvaluationLimit(usize),
    /// The time budget was spent (the result then depends on the machine's speed).
    TimeLimit(Duration),
    /// There was nothing to search: no rule applied anywhere.
    NoMoves,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Converged { passes } => {
                write!(
                    f,
                    "converged (a pass over every move kept none; {passes} passes)"
                )
            }
            StopReason::EvaluationLimit(n) => write!(f, "evaluation limit ({n})"),
            StopReason::TimeLimit(t) => write!(f, "time limit ({:.0} ms)", t.as_secs_f64() * 1e3),
            StopReason::NoMoves => f.write_str("no rule applied, so there was nothing to choose"),
        }
    }
}

/// One evaluation of the search, for `--explain-choice`.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// 1-based evaluation count.
    pub evaluation: usize,
    /// What was tried: a seed, or a move applied or reverted.
    pub what: String,
    /// The predicted step time, µs, or why the choice could not be scheduled.
    pub outcome: Result<f64, String>,
    /// Whether the search kept it.
    pub accepted: bool,
}

/// Prices choices by scheduling their programs.
pub(crate) struct Evaluator<'t, 'a> {
    pub(crate) tables: &'t Tables<'a>,
    pub(crate) template: &'t Graph,
    pub(crate) costs: &'t dyn TaskCosts,
    pub(crate) options: ScheduleOptions,
    pub(crate) evaluations: usize,
}

impl Evaluator<'_, '_> {
    /// The predicted step time of `choice`'s program, µs.
    pub(crate) fn evaluate(&mut self, choice: &[Option<usize>]) -> Result<f64, String> {
        self.evaluations += 1;
        Ok(self.program(choice)?.1)
    }

    /// `choice`'s program and its predicted step time.
    pub(crate) fn program(&self, choice: &[Option<usize>]) -> Result<(Graph, f64), String> {
        self.built(choice).map(|b| (b.graph, b.predicted_us))
    }

    /// `choice`'s program, what [`build_with_classes`] and [`Tables::walk`] said of it,
    /// and its predicted step time: what the chosen program's provenance needs, so it is
    /// not built twice.
    pub(crate) fn built(&self, choice: &[Option<usize>]) -> Result<Built, String> {
        let reachable = self.tables.walk(choice).map_err(|closing| {
            format!(
                "the choice is cyclic ({} e-node(s) close a cycle)",
                closing.len()
            )
        })?;
        let (graph, classes) = build_with_classes(self.tables, choice, &reachable, self.template)
            .map_err(|e| e.to_string())?;
        // With a memory limit the program is scheduled in full (the plan's own check);
        // without one, only its makespan is simulated.
        let t = if self.options.max_memory.is_some() {
            // Layers too, so a memory limit that breaks names the layer.
            let layers = weft_ir::segment_layers(&graph);
            let options = ScheduleOptions {
                layer_of: graph.nodes().map(|(id, _)| layers.of(id)).collect(),
                ..self.options.clone()
            };
            schedule(&graph, self.costs, &options)
                .map_err(|e| e.to_string())?
                .prediction
                .predicted_us
        } else {
            makespan(&graph, self.costs, self.options.comm_streams).map_err(|e| e.to_string())?
        };
        Ok(Built {
            graph,
            classes,
            reachable,
            predicted_us: t,
        })
    }
}

/// A choice's program, as [`Evaluator::built`] made it.
pub(crate) struct Built {
    pub(crate) graph: Graph,
    /// Each computed node's e-class, by node name.
    pub(crate) classes: HashMap<String, Id>,
    /// The classes the program reaches, in post-order ([`Tables::walk`]).
    pub(crate) reachable: Vec<usize>,
    pub(crate) predicted_us: f64,
}

/// Budget of a search.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    pub(crate) evaluations: usize,
    pub(crate) time: Duration,
}

/// Where a climb ended.
pub(crate) struct Climb {
    pub(crate) choice: Vec<Option<usize>>,
    pub(crate) predicted_us: f64,
    pub(crate) stop: StopReason,
    /// The moves kept, in order: (index into the moves, whether it was a revert).
    pub(crate) kept: Vec<(usize, bool)>,
}

/// Hill-climbs from `start` (already evaluated at `start_us`) over `moves`, recording
/// every evaluation in `steps`.
pub(crate) fn climb(
    eval: &mut Evaluator<'_, '_>,
    start: Vec<Option<usize>>,
    start_us: f64,
    moves: &[Move],
    original: &[Option<usize>],
    budget: Budget,
    steps: &mut Vec<Step>,
) -> Climb {
    let started = Instant::now();
    let mut current = start;
    let mut current_us = start_us;
    let mut kept_moves: Vec<(usize, bool)> = Vec::new();
    if moves.is_empty() {
        return Climb {
            choice: current,
            predicted_us: current_us,
            stop: StopReason::NoMoves,
            kept: kept_moves,
        };
    }
    let mut passes = 0;
    loop {
        passes += 1;
        let mut kept = false;
        for (mi, m) in moves.iter().enumerate() {
            if eval.evaluations >= budget.evaluations {
                return Climb {
                    choice: current,
                    predicted_us: current_us,
                    stop: StopReason::EvaluationLimit(budget.evaluations),
                    kept: kept_moves,
                };
            }
            if started.elapsed() >= budget.time {
                return Climb {
                    choice: current,
                    predicted_us: current_us,
                    stop: StopReason::TimeLimit(budget.time),
                    kept: kept_moves,
                };
            }
            let Some((mut next, reverting)) = apply(&current, m, original) else {
                continue;
            };
            repair_cycles(eval.tables, &mut next, &current, original);
            if next == current {
                continue;
            }
            let outcome = eval.evaluate(&next);
            let accepted = matches!(outcome, Ok(t) if t < current_us * (1.0 - 1e-9));
            steps.push(Step {
                evaluation: eval.evaluations,
                what: format!("{} {}", if reverting { "revert" } else { "apply" }, m.label),
                outcome: outcome.clone(),
                accepted,
            });
            if accepted {
                kept_moves.push((mi, reverting));
                current = next;
                current_us = outcome.unwrap_or(current_us);
                kept = true;
            }
        }
        if !kept {
            return Climb {
                choice: current,
                predicted_us: current_us,
                stop: StopReason::Converged { passes },
                kept: kept_moves,
            };
        }
    }
}

/// A move's picks can close a cycle through classes it did not touch (a token split's
/// `concat(slice(x))` sits in `x`'s own class): the classes whose e-nodes close one are
/// put back to their e-node in `fallback`, then in `original`, a few times over.
pub(crate) fn repair_cycles(
    tables: &Tables<'_>,
    choice: &mut [Option<usize>],
    fallback: &[Option<usize>],
    original: &[Option<usize>],
) {
    for _ in 0..8 {
        let Err(closing) = tables.walk(choice) else {
            return;
        };
        for (c, k) in closing {
            choice[c] = if fallback[c].is_some() && fallback[c] != Some(k) {
                fallback[c]
            } else {
                original[c]
            };
        }
    }
}

/// `current` with `m` applied (its picks made), or reverted to the original e-nodes when
/// every pick is already made; `None` when that changes nothing.
fn apply(
    current: &[Option<usize>],
    m: &Move,
    original: &[Option<usize>],
) -> Option<(Vec<Option<usize>>, bool)> {
    let reverting = m.revertible && m.picks.iter().all(|&(c, k)| current[c] == Some(k));
    let next = with_move(current, m, reverting, original);
    (next != current).then_some((next, reverting))
}

/// `choice` with `m`'s picks made, or (`reverting`) its classes put back to `original`
/// where they have an original e-node.
fn with_move(
    choice: &[Option<usize>],
    m: &Move,
    reverting: bool,
    original: &[Option<usize>],
) -> Vec<Option<usize>> {
    let mut next = choice.to_vec();
    for &(c, k) in &m.picks {
        if reverting {
            if original[c].is_some() {
                next[c] = original[c];
            }
        } else {
            next[c] = Some(k);
        }
    }
    next
}

/// What each rule used by `choice` saves over its scope: the predicted step with every
/// site of that rule put back to the original e-nodes, minus the step of `choice` (an
/// ablation; the pieces of an overlap need each other, so savings need not add up).
pub(crate) fn rule_savings(
    eval: &Evaluator<'_, '_>,
    choice: &[Option<usize>],
    choice_us: f64,
    moves: &[Move],
    original: &[Option<usize>],
) -> Vec<(String, Result<f64, String>)> {
    let mut out = Vec::new();
    for m in moves {
        let Some(rule) = m.rule else { continue };
        let used: Vec<usize> = m
            .picks
            .iter()
            .filter(|&&(c, k)| choice[c] == Some(k))
            .map(|&(c, _)| c)
            .collect();
        if used.is_empty() || eval.tables.walk(choice).is_err() {
            continue;
        }
        let reachable = eval.tables.walk(choice).unwrap_or_default();
        if !used.iter().any(|c| reachable.contains(c)) {
            continue;
        }
        let mut without = choice.to_vec();
        for c in used {
            if original[c].is_some() {
                without[c] = original[c];
            }
        }
        repair_cycles(eval.tables, &mut without, choice, original);
        let outcome = eval.program(&without).map(|(_, t)| t - choice_us);
        out.push((rule.to_owned(), outcome));
    }
    out
}

/// `choice` with `m` applied as the climb did (`reverting`: put back to `original`),
/// cycles repaired toward the choice before it; for replaying a window's kept moves on
/// the whole model's e-graph.
pub(crate) fn replay(
    tables: &Tables<'_>,
    choice: &[Option<usize>],
    m: &Move,
    reverting: bool,
    original: &[Option<usize>],
) -> Vec<Option<usize>> {
    let mut next = with_move(choice, m, reverting, original);
    repair_cycles(tables, &mut next, choice, original);
    next
}
