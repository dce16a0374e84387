//! `weft compile`: a model, a mesh and a hardware profile to an execution plan.
//!
//! The pipeline, each stage verified by the pass that ran it:
//! 1. load and raise the model (`load_model`, `to_stage(Raised)`);
//! 2. shard it over the mesh (Megatron TP, DP, EP, Ulysses SP; `passes::shard`);
//! 3. choose the program (`--strategy best`, `passes::search`): saturate the e-graph with
//!    the exact rewrite rules, seed with the sharded program and the DAG-aware greedy
//!    extraction under the hardware's cost model, and search with the scheduler's
//!    predicted step time as the objective; never slower than the sharded program;
//! 4. (a fixed `--strategy` builds that peer system's decomposition instead);
//! 5. segment it into layers, schedule it per rank on a compute and a communication stream
//!    with the minimal cross-stream events, and plan its memory (`passes::schedule`);
//! 6. record where it came from (source hash, dims, mesh, profile, rules applied) in a
//!    [`Plan`], which `verify_plan` checks before it is returned.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use weft_hardware::Profile;
use weft_ir::{Graph, Mesh};
use weft_passes::cost::CostModel;
use weft_passes::schedule::{ScheduleOptions, ScheduleOrder, TaskCosts, makespan, schedule};
use weft_passes::search::{Candidate, SearchOptions, layer_window, search};
use weft_passes::strategy::{FixedProgram, Strategy, StrategyError, fixed_program};
use weft_plan::{
    CompileOptions, HardwareRef, MeshAxis, PLAN_FORMAT, PLAN_VERSION, Plan, RuleCount, SourceModel,
};

use crate::plan_io::{rebase_external_paths, sha256_file, sha256_hex};
use crate::{LoadOptions, Stage, load_model, to_stage_allowing};

/// What to compile.
#[derive(Clone, Debug)]
pub struct CompileRequest {
    pub model: PathBuf,
    pub dims: BTreeMap<String, u64>,
    /// `None`: one device.
    pub mesh: Option<Mesh>,
    pub sp_norms: bool,
    pub profile: Profile,
    /// Per-rank memory limit, bytes.
    pub max_memory: Option<u64>,
    /// How the program is decided: Weft's search (`best`) or a peer's fixed decomposition.
    pub strategy: weft_passes::strategy::Strategy,
    /// Model-changing rewrites to apply before sharding (`--allow`; none by default).
    pub allow: weft_passes::model_change::AllowOptions,
    /// Where the plan will be written: external weight paths in its program are made
    /// relative to this file's folder. `None`: next to the model.
    pub plan_path: Option<PathBuf>,
}

/// A compiled plan, with the program it schedules and what the compiler has to say.
#[derive(Debug)]
pub struct Compiled {
    pub plan: Plan,
    /// The chosen per-device program (as `plan.program` holds it in JSON).
    pub program: Graph,
    /// Things the user should know: ops computed whole on a mesh axis, a memory limit
    /// met only by giving up a faster priority rule, extraction keeping the original.
    pub notes: Vec<String>,
    /// Wall time of each stage, in pipeline order (`benches/compile.rs` reports them).
    pub stages: Vec<StageTime>,
    /// How the program was chosen.
    pub choice: Choice,
}

/// How the program was chosen: by which strategy, among which whole-model candidates,
/// and (for `best`) what the search did.
#[derive(Clone, Debug)]
pub struct Choice {
    pub strategy: Strategy,
    /// The candidate that won (`search`, `greedy extraction`, `as sharded`, or the fixed
    /// strategy's name).
    pub chosen_by: String,
    /// Every whole-model candidate with its predicted step time (or why it cannot run).
    pub candidates: Vec<weft_passes::search::Candidate>,
    /// The search's trajectory and stop reason (`best` only).
    pub search: Option<weft_passes::search::SearchReport>,
}

impl Choice {
    /// `weft compile --explain-choice`: the candidates, and the search's trajectory (every
    /// evaluation: what was tried, the predicted step, whether it was kept).
    pub fn explain(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "strategy {}: chose {}", self.strategy, self.chosen_by);
        let _ = writeln!(
            s,
            "candidates (the whole model scheduled in full, unless on the search's window):"
        );
        let width = self
            .candidates
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(0);
        for c in &self.candidates {
            match &c.predicted_us {
                Ok(t) => {
                    let _ = writeln!(s, "  {:<width$} {:>14.3} µs", c.name, t);
                }
                Err(e) => {
                    let _ = writeln!(s, "  {:<width$} cannot run: {e}", c.name);
                }
            }
        }
        if let Some(r) = &self.search {
            let _ = writeln!(s, "search over {}", r.scope);
            if let Some(rep) = r.replicated {
                let _ = writeln!(
                    s,
                    "  replayed on the whole model ({} layers): {} kept move(s) applied through \
                     their counterparts, {} without one",
                    rep.layers, rep.moves, rep.missing
                );
            }
            let _ = writeln!(
                s,
                "  stopped: {}; {} evaluations in {:.1} ms; ended at {:.3} µs over its scope",
                r.stop,
                r.evaluations,
                r.elapsed.as_secs_f64() * 1e3,
                r.scope_us
            );
            for step in &r.trajectory {
                let outcome = match &step.outcome {
                    Ok(t) => format!("{t:>12.3} µs"),
                    Err(e) => format!("cannot run: {e}"),
                };
                let _ = writeln!(
                    s,
                    "  #{:<4} {} {}  {}",
                    step.evaluation,
                    if step.accepted { "kept  " } else { "      " },
                    outcome,
                    step.what
                );
            }
        }
        s
    }
}

/// How long one stage of [`compile`] took.
#[derive(Clone, Debug)]
pub struct StageTime {
    /// `load+raise`, `shard`, then `saturate` and `search` (`best`: the whole model's
    /// saturation; then extraction, the schedule-in-the-loop search and the candidates'
    /// full schedules) or `strategy` (a fixed strategy's program), `schedule` or
    /// `plan+verify`.
    pub stage: &'static str,
    pub elapsed: std::time::Duration,
}

/// Records stage boundaries.
struct Stopwatch {
    last: std::time::Instant,
    stages: Vec<StageTime>,
}

impl Stopwatch {
    fn new() -> Stopwatch {
        Stopwatch {
            last: std::time::Instant::now(),
            stages: Vec::new(),
        }
    }

    /// Ends `stage` now.
    /// Ends a stage now, reported as `first` for `first_time` of it and `rest` for the
    /// remainder.
    fn lap_split(&mut self, first: &'static str, first_time: Duration, rest: &'static str) {
        let now = std::time::Instant::now();
        let total = now - self.last;
        let first_time = first_time.min(total);
        self.stages.push(StageTime {
            stage: first,
            elapsed: first_time,
        });
        self.stages.push(StageTime {
            stage: rest,
            elapsed: total - first_time,
        });
        self.last = now;
    }

    fn lap(&mut self, stage: &'static str) {
        let now = std::time::Instant::now();
        self.stages.push(StageTime {
            stage,
            elapsed: now - self.last,
        });
        self.last = now;
    }
}

/// Why a model could not be compiled.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CompileError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Load(#[from] crate::LoadError),
    #[error("{}: {reason}", .model.display())]
    Stage { model: PathBuf, reason: String },
    #[error("{}: cannot read it to record its hash: {source}", .model.display())]
    Hash {
        model: PathBuf,
        source: std::io::Error,
    },
}

/// Compiles `request` to a verified plan.
pub fn compile(request: &CompileRequest) -> Result<Compiled, CompileError> {
    let model = &request.model;
    let fail = |reason: String| CompileError::Stage {
        model: model.clone(),
        reason,
    };
    let started = std::time::Instant::now();
    let mut watch = Stopwatch::new();
    let source_hash = sha256_file(model).map_err(|source| CompileError::Hash {
        model: model.clone(),
        source,
    })?;
    let graph = load_model(
        model,
        &LoadOptions {
            dims: request.dims.clone(),
        },
    )?;
    let format = if graph_is_onnx(model) { "onnx" } else { "json" };
    let (graph, _) =
        to_stage_allowing(graph, Stage::Raised, &request.allow).map_err(|e| fail(e.to_string()))?;
    if !graph.mesh.axes().is_empty() {
        return Err(fail(format!(
            "it declares the mesh `{}` (it is already sharded); `weft compile` takes a \
             single-device model and shards it with --mesh",
            graph.mesh
        )));
    }
    // Refused before sharding (which can take a while on a large model), naming the mesh
    // and the machine; the cost model checks the same again for the sharded mesh.
    if let Some(mesh) = &request.mesh {
        let machine = request.profile.total_devices().map_or(0, u64::from);
        if mesh.num_devices() > machine {
            return Err(fail(format!(
                "the mesh `{mesh}` needs {} devices but the hardware profile `{}` has {machine}",
                mesh.num_devices(),
                request.profile.name
            )));
        }
    }
    watch.lap("load+raise");
    let mut notes = Vec::new();
    let sharded = match &request.mesh {
        Some(mesh) => {
            let options = weft_passes::shard::ShardOptions {
                mesh: mesh.clone(),
                sp_norms: request.sp_norms,
            };
            let (sharded, warnings) = weft_passes::shard::shard_with_warnings(&graph, &options)
                .map_err(|e| fail(format!("cannot shard over {mesh}: {e}")))?;
            notes.extend(warnings.iter().map(|w| w.to_string()));
            sharded
        }
        None => graph,
    };
    watch.lap("shard");
    // The cost model refuses a mesh larger than the machine before any search.
    let cost = CostModel::new(&request.profile, &sharded.mesh).map_err(|e| fail(e.to_string()))?;
    // Without --max-memory the limit is the device's own memory: a plan that cannot fit
    // on the hardware it was made for is not a plan.
    let capacity = request.profile.device.memory_capacity.value.0;
    let limit = request.max_memory.unwrap_or(capacity);
    let streams = comm_streams(&sharded.mesh);
    let no_fit = |e: String| match request.max_memory {
        Some(_) => fail(e),
        None => fail(format!(
            "{e}: {} has {capacity} bytes of memory per device ({}); shard over more \
             devices, or give --max-memory to plan for another limit",
            request.profile.name, request.profile.device.gpu
        )),
    };
    let chosen = match request.strategy {
        Strategy::Best => {
            let chosen =
                choose_best(&sharded, &cost, streams, limit, &mut notes).map_err(|e| match e {
                    BestError::NoFit(e) => no_fit(e),
                    BestError::Other(e) => fail(format!("choosing the program failed: {e}")),
                })?;
            // The search's stage split in two: the whole model's saturation, and the
            // rest (extraction, the search, the candidates' schedules).
            watch.lap_split("saturate", chosen.saturate_time, "search");
            chosen
        }
        fixed => {
            let program = fixed_strategy_program(fixed, &sharded, &cost, &mut notes)
                .map_err(|e| fail(e.to_string()))?;
            watch.lap("strategy");
            Chosen {
                program: program.graph,
                rules_used: program.rules_used,
                costs: Some(program.costs),
                choice: Choice {
                    strategy: fixed,
                    chosen_by: fixed.name().to_owned(),
                    candidates: Vec::new(),
                    search: None,
                },
                provenance: BTreeMap::new(),
                saturate_time: Duration::ZERO,
            }
        }
    };
    let Chosen {
        program,
        rules_used,
        costs: fixed_costs,
        choice,
        provenance,
        saturate_time: _,
    } = chosen;
    // A fixed strategy's program is priced with its own kernel configuration.
    let task_costs: &dyn TaskCosts = match &fixed_costs {
        Some(costs) => costs,
        None => &cost,
    };
    let layers = weft_ir::layers::segment_layers(&program);
    let layer_of = program.nodes().map(|(id, _)| layers.of(id)).collect();
    let scheduled = schedule(
        &program,
        task_costs,
        &ScheduleOptions {
            comm_streams: streams,
            max_memory: Some(limit),
            layer_of,
        },
    )
    .map_err(|e| {
        let memory = matches!(
            e,
            weft_passes::schedule::ScheduleError::MemoryInfeasible { .. }
        );
        let e = e.to_string();
        match request.max_memory {
            Some(_) => fail(e),
            None if !memory => fail(e),
            None => fail(format!(
                "{e}: {} has {capacity} bytes of memory per device ({}); shard over more \
                 devices, or give --max-memory to plan for another limit",
                request.profile.name, request.profile.device.gpu
            )),
        }
    })?;
    watch.lap("schedule");
    notes.extend(priority_notes(&scheduled));
    let plan_path = request.plan_path.clone().unwrap_or_else(|| model.clone());
    let stored = rebase_external_paths(&program, model, &plan_path)
        .map_err(|e| fail(format!("cannot place external weight paths: {e}")))?;
    let program_json: serde_json::Value = serde_json::from_str(&crate::json::to_json(&stored))
        .map_err(|e| fail(format!("cannot store the program: {e}")))?;
    let (schedule_priority, schedule_priorities) = (scheduled.order, scheduled.tried.clone());
    let plan = Plan {
        format: PLAN_FORMAT.to_owned(),
        version: PLAN_VERSION,
        compiler: format!("weft {}", env!("CARGO_PKG_VERSION")),
        source: SourceModel {
            path: model.display().to_string(),
            format: format.to_owned(),
            sha256: source_hash,
        },
        dims: program.dims.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        mesh: program
            .mesh
            .axes()
            .iter()
            .map(|a| MeshAxis {
                name: a.name.clone(),
                size: a.size,
            })
            .collect(),
        hardware: HardwareRef {
            name: request.profile.name.clone(),
            sha256: sha256_hex(request.profile.to_json().as_bytes()),
        },
        options: CompileOptions {
            sp_norms: request.sp_norms,
            max_memory_bytes: Some(limit),
            strategy: request.strategy.name().to_owned(),
        },
        rules_applied: rules_used
            .iter()
            .map(|(rule, count)| RuleCount {
                rule: rule.clone(),
                count: *count,
            })
            .collect(),
        model_changing_rewrites: program.model_changes.clone(),
        program_sha256: weft_plan::program_digest(&program_json),
        program: program_json,
        ranks: scheduled.ranks,
        prediction: scheduled.prediction,
        choice: choice_summary(
            &choice,
            &program,
            &layers,
            &provenance,
            as_sharded_spans(&sharded, &cost, streams),
            schedule_priority,
            schedule_priorities,
        ),
    };
    weft_plan::verify_plan(&plan, &program).map_err(|e| {
        fail(format!(
            "the scheduler produced a plan that does not verify: {e}"
        ))
    })?;
    watch.lap("plan+verify");
    tracing::info!(
        elapsed = ?started.elapsed(),
        tasks = plan.ranks.first().map_or(0, |r| r.tasks.len()),
        predicted_us = plan.prediction.predicted_us,
        "compiled"
    );
    Ok(Compiled {
        plan,
        program,
        notes,
        stages: watch.stages,
        choice,
    })
}

/// The compile's note when a faster priority rule was left out because its memory plan
/// did not fit (which rule won, and every figure, is in the plan and `weft inspect`).
fn priority_notes(scheduled: &weft_passes::schedule::Scheduled) -> Vec<String> {
    let too_big: Vec<String> = scheduled
        .tried
        .iter()
        .filter(|t| t.fits_memory == Some(false))
        .map(|t| format!("{} ({:.1} µs)", t.priority, t.predicted_us))
        .collect();
    if too_big.is_empty() {
        return Vec::new();
    }
    let used_us = scheduled
        .tried
        .iter()
        .find(|t| t.priority == scheduled.order)
        .map_or(scheduled.prediction.predicted_us, |t| t.predicted_us);
    vec![format!(
        "list scheduling by {} does not fit --max-memory; tasks are issued by {} instead \
         ({used_us:.1} µs, slower, smaller)",
        too_big.join(", "),
        scheduled.order
    )]
}

/// The plan's record of the choice: the winner, the as-sharded step, the rewrites per
/// layer (from the search's provenance of each node), the as-sharded program's layer
/// spans, the search's ablation of each rule, and the scheduler's priority rules.
fn choice_summary(
    choice: &Choice,
    program: &Graph,
    layers: &weft_ir::Layers,
    provenance: &BTreeMap<String, String>,
    as_sharded_spans: Vec<weft_plan::LayerSpanUs>,
    schedule_priority: ScheduleOrder,
    schedule_priorities: Vec<weft_plan::PriorityTried>,
) -> weft_plan::ChoiceSummary {
    let mut per_layer: BTreeMap<Option<u32>, BTreeMap<String, u64>> = BTreeMap::new();
    for (id, node) in program.nodes() {
        if let Some(rule) = provenance.get(&node.name) {
            *per_layer
                .entry(layers.of(id))
                .or_default()
                .entry(rule.clone())
                .or_insert(0) += 1;
        }
    }
    weft_plan::ChoiceSummary {
        chosen_by: choice.chosen_by.clone(),
        as_sharded_us: choice
            .candidates
            .iter()
            .find(|c| c.name == "as sharded")
            .and_then(|c| c.predicted_us.as_ref().ok().copied()),
        layer_rewrites: per_layer
            .into_iter()
            .map(|(layer, rules)| weft_plan::LayerRewrites {
                layer,
                rewrites: rules
                    .into_iter()
                    .map(|(rule, count)| RuleCount { rule, count })
                    .collect(),
            })
            .collect(),
        as_sharded_layer_spans_us: as_sharded_spans,
        rule_savings: choice
            .search
            .iter()
            .flat_map(|search| {
                search
                    .rule_savings
                    .iter()
                    .map(|(rule, outcome)| weft_plan::RuleSaving {
                        rule: rule.clone(),
                        saved_us: outcome.as_ref().ok().copied(),
                        scope: search.scope.clone(),
                        note: outcome.as_ref().err().cloned(),
                    })
            })
            .collect(),
        schedule_priority,
        schedule_priorities,
    }
}

/// Rank 0's span of each layer in a schedule of the program as sharded (empty when it
/// cannot be scheduled: the choice summary then has no baseline spans, and says so by
/// their absence).
fn as_sharded_spans(
    sharded: &Graph,
    cost: &CostModel,
    streams: u32,
) -> Vec<weft_plan::LayerSpanUs> {
    let layers = weft_ir::layers::segment_layers(sharded);
    let layer_of = sharded.nodes().map(|(id, _)| layers.of(id)).collect();
    let Ok(s) = schedule(
        sharded,
        cost,
        &ScheduleOptions {
            comm_streams: streams,
            max_memory: None,
            layer_of,
        },
    ) else {
        return Vec::new();
    };
    let mut spans: BTreeMap<u32, (f64, f64)> = BTreeMap::new();
    if let Some(rank) = s.ranks.first() {
        for t in &rank.tasks {
            if let Some(l) = t.layer {
                let e = spans.entry(l).or_insert((f64::INFINITY, f64::NEG_INFINITY));
                e.0 = e.0.min(t.start_us);
                e.1 = e.1.max(t.end_us);
            }
        }
    }
    let mut previous_end: Option<f64> = None;
    spans
        .into_iter()
        .map(|(layer, (a, b))| {
            let advance_us = b - previous_end.unwrap_or(a);
            previous_end = Some(b);
            weft_plan::LayerSpanUs {
                layer,
                span_us: b - a,
                advance_us,
            }
        })
        .collect()
}

/// What decided the program, with what the plan needs from it.
struct Chosen {
    program: Graph,
    rules_used: Vec<(String, u64)>,
    /// A fixed strategy's imposed kernel configuration (`None`: the cost model's own).
    costs: Option<weft_passes::strategy::StrategyCosts>,
    choice: Choice,
    /// By node name, the rule that made each rewritten node (the search's programs).
    provenance: BTreeMap<String, String>,
    /// How long saturating the whole model took (`best`; zero for a fixed strategy).
    saturate_time: Duration,
}

/// Why `best` found no program.
enum BestError {
    /// No candidate fits the memory limit (the program as sharded's reason).
    NoFit(String),
    Other(String),
}

/// `--strategy best`: the search ([`weft_passes::search`]), then every fixed strategy as
/// a further candidate. A model searched whole has each fixed strategy's program scheduled
/// in full (with the memory limit), so `best` is never predicted slower than any of them;
/// a model searched on a window of layers has each priced on that same window — a fixed
/// strategy decomposes every layer alike — and the fastest there is built for the whole
/// model and scheduled in full (so for the others "never slower" rests on the window's
/// ranking holding for the whole model). Their notes (rules that did not fire) are not the
/// user's concern here and are dropped.
/// How much slower than the whole-model winner a fixed strategy may be on the search's
/// window and still be built and scheduled in full. A window's first layer reads its input
/// whole and its last writes its output whole, so a strategy that keeps the residual
/// stream split across layer boundaries (TokenWeave) pays a conversion at each edge that
/// the whole model does not: on Llama-3-70B at `tp=8`, 1,024 tokens, `h100-sxm-8`,
/// TokenWeave's window of three layers (1,792.9 µs) extrapolates to 47.8 ms over 80 layers
/// where its whole-model plan is 41.8 ms — 14 % — and the search's winner (1,704.4 µs on
/// the window, 5 % less) is 44.5 ms in full. `tests/it/search.rs` pins that case.
const WINDOW_MARGIN: f64 = 0.20;

fn choose_best(
    sharded: &Graph,
    cost: &CostModel,
    streams: u32,
    limit: u64,
    notes: &mut Vec<String>,
) -> Result<Chosen, BestError> {
    use weft_passes::search::SearchError;
    let searched = search(
        sharded,
        cost,
        &SearchOptions {
            comm_streams: streams,
            max_memory: Some(limit),
            ..SearchOptions::default()
        },
    )
    .map_err(|e| match e {
        SearchError::NoCandidate(m) => BestError::NoFit(m),
        e => BestError::Other(e.to_string()),
    })?;
    if searched.uncosted_count > 0 {
        notes.push(format!(
            "{} e-node(s) the cost model cannot price were never chosen: {}",
            searched.uncosted_count,
            searched.uncosted.join("; ")
        ));
    }
    let whole = ScheduleOptions {
        comm_streams: streams,
        max_memory: Some(limit),
        layer_of: Vec::new(),
    };
    let mut candidates = searched.candidates.clone();
    let mut best_us = searched.predicted_us;
    let mut winner: Option<(Strategy, FixedProgram)> = None;
    let mut scratch = Vec::new();
    let mut full = |s: Strategy, candidates: &mut Vec<Candidate>| -> Option<(FixedProgram, f64)> {
        let outcome = fixed_strategy_program(s, sharded, cost, &mut scratch)
            .map_err(|e| e.to_string())
            .and_then(|p| {
                schedule(&p.graph, &p.costs, &whole)
                    .map(|sch| (p, sch.prediction.predicted_us))
                    .map_err(|e| e.to_string())
            });
        candidates.push(Candidate {
            name: format!("strategy {s}"),
            predicted_us: outcome.as_ref().map(|(_, t)| *t).map_err(Clone::clone),
        });
        outcome.ok()
    };
    let layers = weft_ir::layers::segment_layers(sharded);
    let window = searched.report.replicated.and_then(|_| {
        let first = layers.count() / 2 - 1;
        layer_window(sharded, &layers, first, first + 2).ok()
    });
    let fixed = Strategy::FIXED.into_iter().filter(|&s| s != Strategy::None);
    match window {
        Some(window) => {
            let mut on_window: Vec<(Strategy, f64)> = Vec::new();
            for s in fixed {
                let mut ignored = Vec::new();
                let t = fixed_strategy_program(s, &window, cost, &mut ignored)
                    .map_err(|e| e.to_string())
                    .and_then(|p| makespan(&p.graph, &p.costs, streams).map_err(|e| e.to_string()));
                candidates.push(Candidate {
                    name: format!("strategy {s}, on the search's window"),
                    predicted_us: t.clone(),
                });
                if let Ok(t) = t {
                    on_window.push((s, t));
                }
            }
            // A fixed strategy is built in full when, on the window, it comes within
            // WINDOW_MARGIN of the program that won on the whole model (the window's own
            // time for it: the search's result, or its as-sharded or greedy seed). Not
            // only when it beats it: a window's edges misprice a layout that crosses layer
            // boundaries (docs/search.md, "Fixed strategies on a window").
            let report = &searched.report;
            let winner_on_window = match searched.chosen {
                "as sharded" => report.scope_seeds_us[0],
                "greedy extraction" => report.scope_seeds_us[1],
                _ => Some(report.scope_us),
            };
            on_window.sort_by(|a, b| a.1.total_cmp(&b.1));
            for (s, tw) in on_window {
                if winner_on_window.is_some_and(|w| tw > w * (1.0 + WINDOW_MARGIN)) {
                    break;
                }
                if let Some((p, t)) = full(s, &mut candidates)
                    && t < best_us * (1.0 - 1e-9)
                {
                    best_us = t;
                    winner = Some((s, p));
                }
            }
        }
        None => {
            for s in fixed {
                if let Some((p, t)) = full(s, &mut candidates)
                    && t < best_us * (1.0 - 1e-9)
                {
                    best_us = t;
                    winner = Some((s, p));
                }
            }
        }
    }
    tracing::debug!(best_us, "best: chosen");
    Ok(match winner {
        Some((s, p)) => Chosen {
            program: p.graph,
            rules_used: p.rules_used,
            costs: Some(p.costs),
            choice: Choice {
                strategy: Strategy::Best,
                chosen_by: format!("strategy {s} (faster than the search's program)"),
                candidates,
                search: Some(searched.report),
            },
            provenance: BTreeMap::new(),
            saturate_time: searched.saturation.elapsed,
        },
        None => Chosen {
            program: searched.graph,
            rules_used: searched.rules_used,
            costs: None,
            choice: Choice {
                strategy: Strategy::Best,
                chosen_by: searched.chosen.to_owned(),
                candidates,
                search: Some(searched.report),
            },
            provenance: searched.provenance,
            saturate_time: searched.saturation.elapsed,
        },
    })
}

/// The program of the fixed strategy `strategy` (`none`, `megatron-sp`, … — every
/// strategy but `best`): the peer system's decomposition of `sharded`, with the kernel
/// configuration its spec imposes (`weft_passes::strategy`, docs/strategies.md). What the
/// strategy asked for and did not get is added to `notes` (`weft compile` prints them as
/// warnings).
pub fn fixed_strategy_program(
    strategy: Strategy,
    sharded: &Graph,
    cost: &CostModel,
    notes: &mut Vec<String>,
) -> Result<FixedProgram, StrategyError> {
    let program = fixed_program(strategy, sharded, cost)?;
    notes.extend(program.notes.iter().cloned());
    Ok(program)
}

/// Communication streams per rank at most: one per mesh axis (so collectives of
/// different axes, say tensor- and expert-parallel, can run at once), at least one. The
/// scheduler creates a stream only for an axis that has collectives, so an axis without
/// any (a `dp` axis of an inference step) gets no empty stream.
fn comm_streams(mesh: &Mesh) -> u32 {
    u32::try_from(mesh.axes().len()).unwrap_or(u32::MAX).max(1)
}

/// Whether `weft::load_model` read the file as ONNX (by the same sniffing).
fn graph_is_onnx(path: &Path) -> bool {
    matches!(crate::sniff_format(path), Some(crate::Format::Onnx))
}

/// Reads a plan file and the program it carries (parsed and verified by the JSON
/// frontend; external weights resolve next to the plan).
pub fn read_plan(path: &Path) -> miette::Result<(Plan, Graph)> {
    use miette::{IntoDiagnostic, WrapErr};
    let text = std::fs::read_to_string(path)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read the plan `{}`", path.display()))?;
    let plan =
        Plan::from_json_str(&text).map_err(|e| miette::miette!("{}: {e}", path.display()))?;
    // The program is parsed from its compact re-serialisation, so an error's line and
    // column point into that text: the name says so. It keeps the plan's folder, which
    // external weight paths are relative to.
    let program_text = serde_json::to_string(&plan.program).into_diagnostic()?;
    let file = path
        .file_name()
        .map_or_else(|| "plan".to_owned(), |f| f.to_string_lossy().into_owned());
    let label = path.with_file_name(format!("{file} (its `program`, as compact JSON)"));
    let program = crate::json::parse_str(&program_text, &label)
        .map_err(|e| miette::miette!("the plan's program is not a valid Weft JSON model: {e}"))?;
    Ok((plan, program))
}
