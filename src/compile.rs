//! `weft compile`: a model, a mesh and a hardware profile to an execution plan.
//!
//! The pipeline, each stage verified by the pass that ran it:
//! 1. load and raise the model (`load_model`, `to_stage(Raised)`);
//! 2. shard it over the mesh (Megatron TP, DP, EP, Ulysses SP; `passes::shard`);
//! 3. saturate the e-graph with the exact rewrite rules (`passes::saturate`);
//! 4. extract one program by DAG-aware greedy extraction under the cost model of the
//!    chosen hardware (`passes::cost::CostModel`; the search issue replaces this choice);
//! 5. segment it into layers, schedule it per rank on a compute and a communication stream
//!    with the minimal cross-stream events, and plan its memory (`passes::schedule`);
//! 6. record where it came from (source hash, dims, mesh, profile, rules applied) in a
//!    [`Plan`], which `verify_plan` checks before it is returned.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use weft_hardware::Profile;
use weft_ir::{Graph, Mesh};
use weft_passes::cost::CostModel;
use weft_passes::saturate::{SaturateOptions, extract, saturate};
use weft_passes::schedule::{ScheduleOptions, ScheduleOrder, TaskCosts, schedule};
use weft_passes::strategy::{FixedProgram, Strategy, StrategyError, fixed_program};
use weft_plan::{
    CompileOptions, HardwareRef, MeshAxis, PLAN_FORMAT, PLAN_VERSION, Plan, RuleCount, SourceModel,
};

use crate::plan_io::{rebase_external_paths, sha256_file, sha256_hex};
use crate::{LoadOptions, Stage, load_model, to_stage};

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
    /// met only by giving up the critical-path order, extraction keeping the original.
    pub notes: Vec<String>,
    /// Wall time of each stage, in pipeline order (`benches/compile.rs` reports them).
    pub stages: Vec<StageTime>,
}

/// How long one stage of [`compile`] took.
#[derive(Clone, Debug)]
pub struct StageTime {
    /// `load+raise`, `shard`, `saturate`, `extract` (or `strategy` for a fixed strategy:
    /// both at once), `schedule` or `plan+verify`.
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
    let (graph, _) = to_stage(graph, Stage::Raised).map_err(|e| fail(e.to_string()))?;
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
    let (program, rules_used, fixed_costs) = match request.strategy {
        Strategy::Best => {
            let sat = saturate(&sharded, &SaturateOptions::default())
                .map_err(|e| fail(format!("equality saturation failed: {e}")))?;
            watch.lap("saturate");
            let chosen = extract(&sat, &sharded, &cost).map_err(|e| fail(e.to_string()))?;
            watch.lap("extract");
            if chosen.uncosted_count > 0 {
                notes.push(format!(
                    "{} e-node(s) the cost model cannot price were never chosen: {}",
                    chosen.uncosted_count,
                    chosen.uncosted.join("; ")
                ));
            }
            (chosen.graph, chosen.rules_used, None)
        }
        fixed => {
            let program = fixed_strategy_program(fixed, &sharded, &cost, &mut notes)
                .map_err(|e| fail(e.to_string()))?;
            watch.lap("strategy");
            (program.graph, program.rules_used, Some(program.costs))
        }
    };
    // A fixed strategy's program is priced with its own kernel configuration.
    let task_costs: &dyn TaskCosts = match &fixed_costs {
        Some(costs) => costs,
        None => &cost,
    };
    let layers = weft_ir::layers::segment_layers(&program);
    let layer_of = program.nodes().map(|(id, _)| layers.of(id)).collect();
    let streams = comm_streams(&program.mesh);
    // Without --max-memory the limit is the device's own memory: a plan that cannot fit
    // on the hardware it was made for is not a plan.
    let capacity = request.profile.device.memory_capacity.value.0;
    let limit = request.max_memory.unwrap_or(capacity);
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
        let e = e.to_string();
        match request.max_memory {
            Some(_) => fail(e),
            None => fail(format!(
                "{e}: {} has {capacity} bytes of memory per device ({}); shard over more \
                 devices, or give --max-memory to plan for another limit",
                request.profile.name, request.profile.device.gpu
            )),
        }
    })?;
    watch.lap("schedule");
    if scheduled.order == ScheduleOrder::ProgramOrder {
        notes.push(
            "the critical-path order does not fit --max-memory; tasks are issued in program \
             order instead (slower, smaller)"
                .to_owned(),
        );
    }
    let plan_path = request.plan_path.clone().unwrap_or_else(|| model.clone());
    let stored = rebase_external_paths(&program, model, &plan_path)
        .map_err(|e| fail(format!("cannot place external weight paths: {e}")))?;
    let program_json: serde_json::Value = serde_json::from_str(&crate::json::to_json(&stored))
        .map_err(|e| fail(format!("cannot store the program: {e}")))?;
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
        model_changing_rewrites: Vec::new(),
        program_sha256: weft_plan::program_digest(&program_json),
        program: program_json,
        ranks: scheduled.ranks,
        prediction: scheduled.prediction,
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
