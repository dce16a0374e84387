//! The phases, repeated in rounds.
//!
//! Saturation runs its rulesets as phases in a fixed order: `collective` (all-reduce ⇄
//! reduce-scatter + all-gather, element-wise ops and norms onto the shard), `fusion`
//! (GEMM + collective, element-wise chains, TokenWeave's fused kernel) and `split`
//! (token splits). Run once, a later phase's results are never seen by an earlier
//! phase's rules: the halves `token-split-*` makes (`all_reduce(x[:m/2])`, whose
//! `x[:m/2]` is `matmul(a[:m/2], w)` by `slice-of-concat`) would never be decomposed into
//! reduce-scatter + all-gather nor fused with their GEMM, so a program that splits the
//! tokens *and* overlaps each half's reduction with its GEMM was not in the search space.
//!
//! Why rounds rather than one merged ruleset: the phases are a blow-up guard as much as
//! an order. Run together, the split rules would cut every value the collective rules
//! are still building (and the fusion rules would fuse every half of every
//! not-yet-moved op) within one egg iteration budget, and the iteration limit that
//! bounds one family would be spent by another. Repeating the phases keeps each
//! family's limits as they were — per phase and per round — while letting a later
//! phase's results feed an earlier one. The blow-up limits stay what bounds the work:
//!
//! - the **node limit** is the e-graph's total, so it bounds the whole run;
//! - a phase that stops on its **node, iteration or time limit** ends the rounds (a
//!   phase is never run past a limit it hit by being run again);
//! - the rules' own **guards** ([`super::Guards`]: `split_depth`, `min_rows`,
//!   `max_fused_steps`) are what make the rounds converge: a half is not split again
//!   (depth 1 by default), so the second round only decomposes and fuses the halves the
//!   first made;
//! - and `max_rounds` bounds the rounds, reported when it is what stopped them.
//!
//! A round is needed again only when a phase after the first changed the e-graph: the
//! first phase ran to saturation (no limit hit) and every later phase saw its results,
//! so if only the first phase applied anything, every phase has seen every change.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use egg::{Runner, SimpleScheduler, StopReason};

use super::analysis::WEGraph;
use super::rules::{self, RuleDef};
use super::{PhaseReport, RuleStats, SaturateOptions};

/// The phases, in the order they run within a round.
pub const PHASES: [&str; 3] = ["collective", "fusion", "split"];

/// How many rounds ran and why no further one did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundsReport {
    pub rounds: usize,
    /// `fixpoint`, `round limit (n)`, or the phase and limit that ended the rounds.
    pub stop_reason: String,
}

/// Runs the phases of `selected` over `egraph` in rounds; every phase run is reported.
pub(super) fn run(
    egraph: &mut WEGraph,
    selected: &[RuleDef],
    options: &SaturateOptions,
) -> (Vec<PhaseReport>, RoundsReport) {
    let phases: Vec<(&'static str, Vec<RuleDef>)> = PHASES
        .iter()
        .map(|&ruleset| {
            let defs: Vec<RuleDef> = selected
                .iter()
                .filter(|r| r.ruleset == ruleset)
                .copied()
                .collect();
            (ruleset, defs)
        })
        .filter(|(_, defs)| !defs.is_empty())
        .collect();
    let mut reports = Vec::new();
    if phases.is_empty() || options.max_rounds == 0 {
        let stop_reason = if phases.is_empty() {
            "no rules".to_owned()
        } else {
            "round limit (0)".to_owned()
        };
        return (
            reports,
            RoundsReport {
                rounds: 0,
                stop_reason,
            },
        );
    }
    let mut round = 0;
    let stop_reason = loop {
        round += 1;
        let mut later_changed = false;
        let mut limit_hit = None;
        for (k, (ruleset, defs)) in phases.iter().enumerate() {
            let report = run_phase(egraph, ruleset, defs, options, round);
            let applied: usize = report.rules.iter().map(|r| r.applied).sum();
            if k > 0 && applied > 0 {
                later_changed = true;
            }
            let saturated = report.stop_reason == "saturated";
            if !saturated && limit_hit.is_none() {
                limit_hit = Some(format!(
                    "phase {ruleset} stopped on a limit in round {round}: {}",
                    report.stop_reason
                ));
            }
            reports.push(report);
            if limit_hit.is_some() {
                break;
            }
        }
        if let Some(why) = limit_hit {
            break why;
        }
        if !later_changed {
            break "fixpoint".to_owned();
        }
        if round >= options.max_rounds {
            break format!("round limit ({})", options.max_rounds);
        }
    };
    tracing::debug!(round, %stop_reason, "saturation rounds done");
    (
        reports,
        RoundsReport {
            rounds: round,
            stop_reason,
        },
    )
}

/// One phase: egg's runner over the phase's rules, within the options' limits.
fn run_phase(
    egraph: &mut WEGraph,
    ruleset: &'static str,
    defs: &[RuleDef],
    options: &SaturateOptions,
    round: usize,
) -> PhaseReport {
    let (rewrites, counters): (Vec<_>, Vec<_>) = defs
        .iter()
        .map(|d| rules::EggRule::rewrite(*d, options.guards.clone()))
        .unzip();
    let phase_start = Instant::now();
    // egg's default `BackoffScheduler` bans a rule for some iterations once its matches
    // pass a threshold (1000, doubling with each ban): on a deep model a rule with many
    // sites would silently not run until the iteration limit ends the phase. The simple
    // scheduler applies every match every iteration; the node, iteration and time limits
    // bound the work, and the report names the limit hit.
    let runner = Runner::default()
        .with_scheduler(SimpleScheduler)
        .with_egraph(std::mem::take(egraph))
        .with_node_limit(options.node_limit)
        .with_iter_limit(options.iter_limit)
        .with_time_limit(options.time_limit)
        .run(&rewrites);
    let stop_reason = match &runner.stop_reason {
        Some(StopReason::Saturated) => "saturated".to_owned(),
        Some(StopReason::IterationLimit(n)) => format!("iteration limit ({n})"),
        Some(StopReason::NodeLimit(n)) => format!("node limit ({n})"),
        Some(StopReason::TimeLimit(t)) => format!("time limit ({t:.1} s)"),
        Some(StopReason::Other(s)) => s.clone(),
        None => "not run".to_owned(),
    };
    let mut applied: HashMap<egg::Symbol, usize> = HashMap::new();
    for it in &runner.iterations {
        for (name, n) in &it.applied {
            *applied.entry(*name).or_default() += n;
        }
    }
    let rules = defs
        .iter()
        .zip(&counters)
        .map(|(d, counter)| RuleStats {
            name: d.name,
            matches: counter.load(Ordering::Relaxed),
            applied: applied
                .get(&egg::Symbol::from(d.name))
                .copied()
                .unwrap_or(0),
        })
        .collect();
    let iterations = runner.iterations.len();
    *egraph = runner.egraph;
    tracing::debug!(ruleset, round, %stop_reason, nodes = egraph.total_size(), "phase done");
    PhaseReport {
        ruleset,
        round,
        stop_reason,
        iterations,
        nodes: egraph.total_size(),
        classes: egraph.number_of_classes(),
        elapsed: phase_start.elapsed(),
        rules,
    }
}
