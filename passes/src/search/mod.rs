//! Choosing the program: schedule-in-the-loop search over the saturated e-graph.
//!
//! Under any per-op sum, decomposing a collective never pays (the pieces cost more than
//! the whole); only a schedule sees that the pieces run beside compute. So the choice is
//! made by the scheduler's predicted step time (`egraph-anchors.md` §2.9, §5.2: costs that
//! are not additive need extraction in the loop):
//!
//! 1. **Seeds**: the program as sharded, the DAG-aware greedy extraction under the
//!    cost model's per-op times ([`crate::saturate::extract`]), and for every union of
//!    rulesets and every fixed strategy's rule set the program using those rules wherever
//!    they apply ([`seeds`]).
//! 2. **Local search** from the fastest seed ([`local`]): moves that change related
//!    classes together ([`moves`]; last in each pass, a layer's choices set to another
//!    seed's, [`layer_moves`]), each kept when the predicted step gets strictly faster,
//!    until a pass keeps none or the budget runs out.
//! 3. **A template of adjacent layers.** On a model with many layers, the search runs on
//!    three adjacent middle layers cut out as a graph of their own ([`window`]), so one
//!    layer's communication overlapping the next layer's compute is visible and an
//!    evaluation costs a fraction of a millisecond. It is then replayed on the whole
//!    model's e-graph: the seed it started from is made again there (seeds are defined by
//!    rule names), and each move it kept is applied through the whole model's move of the
//!    same key ([`moves::MoveKey`]: a ruleset, a rule, a rule at a position of a layer
//!    known by a name-blind signature, [`signature`], or a seed on the layers of one layer
//!    signature). Three layers, not two: the edges of
//!    a window do not look like the model (its first ops read an input where the model
//!    reads the previous layer's residual; its last values have no consumers, where the
//!    model's next layer adds e-nodes to their classes), so only a middle layer and its
//!    two boundaries — the pair of adjacent layers the overlap is for — match the model.
//! 4. **Never slower.** The whole model's candidates — the sharded program (no overlap
//!    at all, `--strategy none`), the greedy extraction and the search's program — are
//!    each scheduled in full with the memory limit, and the fastest that fits is chosen.
//!    (`weft::compile`'s `choose_best` then adds the fixed strategies as candidates.)

mod layer_moves;
mod local;
mod moves;
mod provenance;
mod seeds;
mod signature;
#[cfg(test)]
mod tests;
mod window;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use weft_ir::Graph;

use crate::cost::CostModel;
use crate::saturate::extract::{Tables, greedy, rules_used};
use crate::saturate::{SaturateError, SaturateOptions, SaturationReport, saturate};
use crate::schedule::ScheduleOptions;

pub use local::{Step, StopReason};
pub use window::layer_window;

use local::{Budget, Evaluator, climb, rule_savings};
use signature::Signatures;

/// Limits and settings of the search.
#[derive(Clone, Debug)]
pub struct SearchOptions {
    pub saturate: SaturateOptions,
    /// Evaluations (schedules) the local search may make; the deterministic limit.
    pub max_evaluations: usize,
    /// A safety net on the local search's wall time; when it ends the search, the result
    /// depends on the machine's speed, and the stop reason says so.
    pub time_limit: Duration,
    /// Communication streams per rank (see [`ScheduleOptions::comm_streams`]).
    pub comm_streams: u32,
    /// The per-rank memory limit the chosen program must fit.
    pub max_memory: Option<u64>,
    /// Models with at least this many layers are searched on a window of three adjacent
    /// layers and the search replayed on the whole model; smaller ones are searched whole.
    pub window_from_layers: u32,
}

impl Default for SearchOptions {
    fn default() -> SearchOptions {
        SearchOptions {
            saturate: SaturateOptions::default(),
            max_evaluations: 400,
            time_limit: Duration::from_secs(5),
            comm_streams: 1,
            max_memory: None,
            window_from_layers: 8,
        }
    }
}

/// Why the search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Saturate(#[from] SaturateError),
    /// No candidate could be scheduled: the program as sharded's reason, and the
    /// candidates tried.
    #[error("{0}")]
    NoCandidate(String),
}

/// What the search looked at and why it stopped.
#[derive(Clone, Debug)]
pub struct SearchReport {
    /// What was searched: the whole program, or which window of how many layers.
    pub scope: String,
    /// Every evaluation, seeds first.
    pub trajectory: Vec<Step>,
    pub stop: StopReason,
    pub evaluations: usize,
    /// The predicted step time of what the search ended on, over its scope (the window's
    /// three layers, or the whole program), µs.
    pub scope_us: f64,
    /// Over the same scope: the predicted step of the program as sharded and of the greedy
    /// extraction (the first two seeds), µs, when they could be scheduled; so a candidate
    /// priced on the scope can be set against the one that won on the whole model.
    pub scope_seeds_us: [Option<f64>; 2],
    /// Wall time of the local search (seeds and moves), without saturation.
    pub elapsed: Duration,
    /// With a window: how the window's search was replayed on the whole model.
    pub replicated: Option<Replicated>,
    /// Per rule the search's program uses: how much slower its scope is predicted with
    /// every use of that rule put back to the original ops (µs), or why that program
    /// cannot be scheduled.
    pub rule_savings: Vec<(String, Result<f64, String>)>,
}

/// How a window's search reached the whole model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replicated {
    /// Moves the window kept that were replayed through their whole-model counterpart.
    pub moves: usize,
    /// Moves the window kept that have no counterpart in the whole model's e-graph (not
    /// replayed).
    pub missing: usize,
    /// Layers of the model (the window is three of them).
    pub layers: u32,
}

/// A whole-model candidate and its predicted step time (or why it cannot run).
#[derive(Clone, Debug)]
pub struct Candidate {
    pub name: String,
    pub predicted_us: Result<f64, String>,
}

/// The chosen program and how it was chosen.
#[derive(Debug)]
pub struct Searched {
    pub graph: Graph,
    pub predicted_us: f64,
    /// Which candidate won: `search`, `greedy extraction` or `as sharded`.
    pub chosen: &'static str,
    pub candidates: Vec<Candidate>,
    pub report: SearchReport,
    /// The whole model's saturation.
    pub saturation: SaturationReport,
    /// Rule applications the chosen program uses, by rule.
    pub rules_used: Vec<(String, u64)>,
    /// E-nodes the cost model could not price (never chosen), a few named.
    pub uncosted: Vec<String>,
    pub uncosted_count: usize,
    /// By node name: the rule that made each rewritten node of the chosen program.
    pub provenance: std::collections::BTreeMap<String, String>,
}

/// The fastest whole-model candidate so far: its name, program, predicted step, and its
/// choice in the e-graph with its nodes' classes and reachable classes (`None` for the
/// sharded program itself).
type Winner<'c> = (
    &'static str,
    Graph,
    f64,
    Option<(&'c [Option<usize>], HashMap<String, egg::Id>, Vec<usize>)>,
);

/// Chooses the program for `sharded` (see the module documentation).
pub fn search(
    sharded: &Graph,
    cost: &CostModel,
    options: &SearchOptions,
) -> Result<Searched, SearchError> {
    let sat = saturate(sharded, &options.saturate)?;
    crate::saturate::refuse_unsound_pub(&sat)?;
    let (tables, uncosted, uncosted_count) = Tables::new(&sat, cost);
    let greedy_full = greedy(&tables, &uncosted)?;
    let original = tables.original_choice();
    let layers = weft_ir::segment_layers(sharded);
    let budget = Budget {
        evaluations: options.max_evaluations,
        time: options.time_limit,
    };
    let whole_options = ScheduleOptions {
        comm_streams: options.comm_streams,
        max_memory: options.max_memory,
        layer_of: Vec::new(),
    };
    let started = Instant::now();
    let mut trajectory = Vec::new();
    let window = (layers.count() >= options.window_from_layers.max(3))
        .then(|| {
            let first = layers.count() / 2 - 1;
            layer_window(sharded, &layers, first, first + 2).map(|w| (first, w))
        })
        .transpose();
    // A model whose middle layers cannot be cut out is searched whole (and says so).
    let (window, window_note) = match window {
        Ok(w) => (w, None),
        Err(reason) => (None, Some(reason)),
    };
    let (searched_choice, stop, evaluations, scope_us, scope, replicated, savings) = match window {
        Some((first, window_graph)) => {
            let wsat = saturate(&window_graph, &options.saturate)?;
            crate::saturate::refuse_unsound_pub(&wsat)?;
            let (wtables, wuncosted, _) = Tables::new(&wsat, cost);
            let wgreedy = greedy(&wtables, &wuncosted)?;
            let woriginal = wtables.original_choice();
            let mut eval = Evaluator {
                tables: &wtables,
                template: &window_graph,
                costs: cost,
                // Memory is checked on the whole model: a window holds three layers' weights.
                options: ScheduleOptions {
                    comm_streams: options.comm_streams,
                    max_memory: None,
                    layer_of: Vec::new(),
                },
                evaluations: 0,
            };
            let list = seed_list("the window", &wtables, &wgreedy.best.choice, &woriginal);
            let scoped = search_scope(
                &mut eval,
                list,
                &woriginal,
                budget,
                &mut trajectory,
                (Some(1), first),
            )?;
            let (climbed, moves, start_seed, savings) = (
                scoped.climbed,
                scoped.moves,
                scoped.start_seed,
                scoped.savings,
            );
            let sigs = Signatures::new(&tables);
            // The same search replayed on the whole model: its starting seed made there
            // (seeds are defined by rule names, not by e-classes), then each kept move's
            // counterpart (a move of the same key) applied as the window applied it.
            // The `k`th seed of the list, made on the whole model.
            let whole_seed = |k: usize| match k {
                0 => Some(original.clone()),
                1 => Some(greedy_full.best.choice.clone()),
                k => rule_seeds_one(&tables, &greedy_full.best.choice, &original, k - 2),
            };
            let mut replayed =
                whole_seed(start_seed).unwrap_or_else(|| greedy_full.best.choice.clone());
            let full_moves = moves::moves(&tables, &sigs);
            let by_key: std::collections::HashMap<&moves::MoveKey, &moves::Move> =
                full_moves.iter().map(|m| (&m.key, m)).collect();
            let (mut replayed_moves, mut missing) = (0, 0);
            for &(mi, reverting) in &climbed.kept {
                // A layer move's counterpart is made when it is needed: it takes its
                // seed made on the whole model.
                let layer_move = match moves[mi].key {
                    moves::MoveKey::Layer(signature, k) => whole_seed(k).and_then(|seed| {
                        layer_moves::layer_move_for(&tables, &sigs, sharded, signature, &seed)
                    }),
                    _ => None,
                };
                match layer_move
                    .as_ref()
                    .or_else(|| by_key.get(&moves[mi].key).copied())
                {
                    Some(fm) => {
                        replayed = local::replay(&tables, &replayed, fm, reverting, &original);
                        replayed_moves += 1;
                    }
                    None => missing += 1,
                }
            }
            (
                replayed,
                climbed.stop,
                eval.evaluations,
                climbed.predicted_us,
                format!(
                    "layers {first}..={} of {} (the search's window of three adjacent layers)",
                    first + 2,
                    layers.count()
                ),
                Some(Replicated {
                    moves: replayed_moves,
                    missing,
                    layers: layers.count(),
                }),
                savings,
            )
        }
        None => {
            let mut eval = Evaluator {
                tables: &tables,
                template: sharded,
                costs: cost,
                options: whole_options.clone(),
                evaluations: 0,
            };
            let list = seed_list("the program", &tables, &greedy_full.best.choice, &original);
            let scoped = search_scope(
                &mut eval,
                list,
                &original,
                budget,
                &mut trajectory,
                (None, 0),
            )?;
            let (climbed, savings) = (scoped.climbed, scoped.savings);
            let scope = match window_note {
                Some(reason) => format!("the whole program ({reason})"),
                None => "the whole program".to_owned(),
            };
            (
                climbed.choice,
                climbed.stop,
                eval.evaluations,
                climbed.predicted_us,
                scope,
                None,
                savings,
            )
        }
    };
    let elapsed = started.elapsed();
    // The whole model's candidates, each scheduled in full with the memory limit.
    let whole = Evaluator {
        tables: &tables,
        template: sharded,
        costs: cost,
        options: whole_options.clone(),
        evaluations: 0,
    };
    let mut candidates = Vec::new();
    let mut best: Option<Winner<'_>> = None;
    let sharded_layers = ScheduleOptions {
        layer_of: sharded.nodes().map(|(id, _)| layers.of(id)).collect(),
        ..whole_options.clone()
    };
    let as_sharded = crate::schedule::schedule(sharded, cost, &sharded_layers)
        .map(|s| s.prediction.predicted_us)
        .map_err(|e| e.to_string());
    candidates.push(Candidate {
        name: "as sharded".to_owned(),
        predicted_us: as_sharded.clone(),
    });
    if let Ok(t) = as_sharded {
        best = Some(("as sharded", sharded.clone(), t, None));
    }
    let search_name = if replicated.is_some() {
        "search (replayed)"
    } else {
        "search"
    };
    let whole_choices: [(&'static str, &[Option<usize>]); 2] = [
        ("greedy extraction", &greedy_full.best.choice),
        (search_name, &searched_choice),
    ];
    for (name, choice) in whole_choices {
        let outcome = whole.built(choice);
        candidates.push(Candidate {
            name: name.to_owned(),
            predicted_us: outcome
                .as_ref()
                .map(|b| b.predicted_us)
                .map_err(Clone::clone),
        });
        if let Ok(b) = outcome
            && best
                .as_ref()
                .is_none_or(|w| b.predicted_us < w.2 * (1.0 - 1e-9))
        {
            best = Some((
                name,
                b.graph,
                b.predicted_us,
                Some((choice, b.classes, b.reachable)),
            ));
        }
    }
    let Some((chosen, graph, predicted_us, choice)) = best else {
        // The program as sharded's reason first: it is the one a user can act on (a
        // memory limit names the layer and buffer that break it).
        let first = candidates
            .iter()
            .find_map(|c| c.predicted_us.as_ref().err())
            .cloned()
            .unwrap_or_default();
        let names: Vec<&str> = candidates.iter().map(|c| c.name.as_str()).collect();
        return Err(SearchError::NoCandidate(format!(
            "{first} (no candidate program could be scheduled: {})",
            names.join(", ")
        )));
    };
    let scope_seeds_us = [0, 1].map(|i| {
        trajectory
            .get(i)
            .and_then(|s: &Step| s.outcome.as_ref().ok().copied())
    });
    let (graph, rules, provenance) = match choice {
        Some((choice, classes, reachable)) => {
            let provenance = provenance::provenance(&tables, choice, &reachable, classes);
            (graph, rules_used(&tables, choice, &reachable), provenance)
        }
        None => (graph, Vec::new(), Default::default()),
    };
    Ok(Searched {
        graph,
        predicted_us,
        chosen,
        candidates,
        report: SearchReport {
            scope,
            trajectory,
            stop,
            evaluations,
            scope_us,
            scope_seeds_us,
            elapsed,
            replicated,
            rule_savings: savings,
        },
        saturation: sat.report.clone(),
        rules_used: rules,
        uncosted,
        uncosted_count,
        provenance,
    })
}

/// What the search did over one scope (a window, or the whole program).
struct Scoped {
    climbed: local::Climb,
    /// The moves it climbed over (a kept move is an index into them).
    moves: Vec<moves::Move>,
    /// Which seed it started from (an index into the seed list).
    start_seed: usize,
    savings: Vec<(String, Result<f64, String>)>,
}

/// The search over `eval`'s scope: the seeds evaluated, the climb from the fastest over
/// the scope's moves, and the ablation of each rule the result uses.
fn search_scope(
    eval: &mut Evaluator<'_, '_>,
    list: Vec<(String, Vec<Option<usize>>)>,
    original: &[Option<usize>],
    budget: Budget,
    trajectory: &mut Vec<Step>,
    (only_layer, first_layer): (Option<u32>, u32),
) -> Result<Scoped, SearchError> {
    let seed_choices = list.clone();
    let (start, start_us, start_seed) = seeds(eval, list, trajectory)?;
    let sigs = Signatures::new(eval.tables);
    let mut moves = moves::moves(eval.tables, &sigs);
    moves.extend(layer_moves::layer_moves(
        eval.tables,
        &sigs,
        eval.template,
        &seed_choices,
        only_layer,
        first_layer,
    ));
    let climbed = climb(eval, start, start_us, &moves, original, budget, trajectory);
    let savings = rule_savings(
        eval,
        &climbed.choice,
        climbed.predicted_us,
        &moves,
        original,
    );
    Ok(Scoped {
        climbed,
        moves,
        start_seed,
        savings,
    })
}

/// Every seed, in the order [`seeds`] evaluates them: `scope` as sharded, its greedy
/// extraction, then the rule-set seeds (the replay relies on this order).
fn seed_list(
    scope: &str,
    tables: &Tables<'_>,
    greedy: &[Option<usize>],
    original: &[Option<usize>],
) -> Vec<(String, Vec<Option<usize>>)> {
    let mut list = vec![
        (format!("{scope} as sharded"), original.to_vec()),
        (format!("{scope}'s greedy extraction"), greedy.to_vec()),
    ];
    list.extend(rule_seeds(tables, greedy, original));
    list
}

/// The rule-set seeds ([`seeds`]), each with cycles repaired toward `greedy`.
fn rule_seeds(
    tables: &Tables<'_>,
    greedy: &[Option<usize>],
    original: &[Option<usize>],
) -> Vec<(String, Vec<Option<usize>>)> {
    seeds::seed_rule_sets()
        .into_iter()
        .map(|(name, rules)| {
            let mut choice = seeds::prefer_rules(tables, &rules);
            local::repair_cycles(tables, &mut choice, greedy, original);
            (format!("{name} wherever it applies"), choice)
        })
        .collect()
}

/// The `k`th rule-set seed alone (see [`rule_seeds`]).
fn rule_seeds_one(
    tables: &Tables<'_>,
    greedy: &[Option<usize>],
    original: &[Option<usize>],
    k: usize,
) -> Option<Vec<Option<usize>>> {
    let (_, rules) = seeds::seed_rule_sets().into_iter().nth(k)?;
    let mut choice = seeds::prefer_rules(tables, &rules);
    local::repair_cycles(tables, &mut choice, greedy, original);
    Some(choice)
}

/// Evaluates the seeds and returns the fastest (the first on a tie), with its index.
fn seeds(
    eval: &mut Evaluator<'_, '_>,
    seeds: Vec<(String, Vec<Option<usize>>)>,
    steps: &mut Vec<Step>,
) -> Result<(Vec<Option<usize>>, f64, usize), SearchError> {
    let mut best: Option<(Vec<Option<usize>>, f64, usize)> = None;
    let mut reasons = Vec::new();
    for (index, (name, choice)) in seeds.into_iter().enumerate() {
        let outcome = eval.evaluate(&choice);
        let accepted =
            matches!(outcome, Ok(t) if best.as_ref().is_none_or(|b| t < b.1 * (1.0 - 1e-9)));
        steps.push(Step {
            evaluation: eval.evaluations,
            what: format!("seed: {name}"),
            outcome: outcome.clone(),
            accepted,
        });
        match outcome {
            Ok(t) if accepted => best = Some((choice, t, index)),
            Ok(_) => {}
            Err(e) => reasons.push(if reasons.is_empty() {
                e
            } else {
                format!("{name}: {e}")
            }),
        }
    }
    // The first seed's reason (the program as sharded: the one a user can act on).
    best.ok_or_else(|| {
        let first = reasons.first().cloned().unwrap_or_default();
        SearchError::NoCandidate(format!(
            "{first} (and none of the other {} seed programs could be scheduled)",
            reasons.len().saturating_sub(1)
        ))
    })
}
