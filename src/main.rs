//! The `weft` command-line tool.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use miette::{IntoDiagnostic, Report, WrapErr};
use weft::{CheckReport, LoadOptions, load_model};

/// The hardware profile whose cost model prices ops for `dump --stage extracted` when no
/// `--hw` is given.
const EXTRACT_PROFILE: &str = "h100-sxm-8";

/// Weft: a compiler for distributed ML model graphs.
///
/// Logs go to stderr; set RUST_LOG (for example RUST_LOG=debug or RUST_LOG=weft=trace)
/// to see more.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum HwCommand {
    /// One line per built-in profile: name, device count, GPU, description.
    List,
    /// Every constant of a profile with its unit, confidence (estimates marked) and source.
    Show {
        /// A built-in profile name (see `weft hw list`) or the path of a profile JSON file.
        #[arg(value_name = "NAME|FILE")]
        profile: String,
        /// Print the profile as JSON, in the file format `weft hw show FILE` reads back.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse and verify a model, then summarise it: ops by kind, parameters, FLOPs.
    Check {
        /// The model file: Weft JSON (docs/json-format.md) or ONNX, told apart by content.
        model: PathBuf,
        /// Print the summary as one JSON object (keys: params, param_bytes, flops, ops, …;
        /// for a sharded graph, with `--mesh` or from a file that declares its mesh, also
        /// comm_bytes_total, comm_bytes_per_layer and collectives).
        #[arg(long)]
        json: bool,
        /// Shard the model over this device mesh first, e.g. `--mesh tp=4` or
        /// `--mesh tp=2,ep=4` (axes: `tp` Megatron tensor parallelism, `dp` batch split,
        /// `ep` expert parallelism, `sp` Ulysses sequence parallelism; docs/sharding.md).
        #[arg(long, value_name = "SPEC", value_parser = parse_mesh)]
        mesh: Option<weft::ir::Mesh>,
        /// With `--mesh`: Megatron sequence parallelism for norms — each norm runs on the
        /// device's sequence shard, between a reduce-scatter and an all-gather.
        #[arg(long, requires = "mesh")]
        sp_norms: bool,
        /// Override a symbolic dim of the model, e.g. `--dim seq=4096` (repeatable).
        #[arg(long = "dim", value_name = "NAME=VALUE", value_parser = parse_dim)]
        dims: Vec<(String, u64)>,
        #[command(flatten)]
        allow: AllowArgs,
    },
    /// Compile a model to an execution plan: shard it over a mesh, choose a program under
    /// the hardware's cost model, schedule it per rank on compute and communication
    /// streams, plan its memory (docs/plan-format.md).
    Compile(CompileArgs),
    /// Summarise a plan: predicted step time, the no-overlap baseline, a lower bound,
    /// exposed communication, overlap efficiency, peak memory per rank, rules applied.
    Inspect {
        /// A plan written by `weft compile -o`.
        plan: PathBuf,
        /// One JSON object (keys predicted_us, baseline_us, bound_us, exposed_comm_us,
        /// overlap_efficiency, peak_memory_bytes, rules_applied, model_changing_rewrites, …).
        #[arg(long)]
        json: bool,
        /// Print the whole plan as text instead: every task of every rank and stream with
        /// its times, events and kernel configuration.
        #[arg(long, conflicts_with = "json")]
        tasks: bool,
    },
    /// Execute a model, or a plan, on the CPU reference executor (one thread per simulated
    /// rank; for a plan, one thread per stream of each rank, honouring its events).
    Run(RunArgs),
    /// Hardware profiles: list the built-in ones, or show one's constants with their sources
    /// (docs/hardware.md).
    Hw {
        #[command(subcommand)]
        command: HwCommand,
    },
    /// List the e-graph rewrite rules: name, ruleset, exactness, source paper, what it does.
    Rules {
        /// One JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a model's IR as text, JSON or Graphviz DOT.
    Dump {
        /// With `--stage saturated|extracted`: only these rules (comma-separated names, see
        /// `weft rules`); all by default.
        #[arg(long, value_delimiter = ',', value_name = "RULE,...")]
        rules: Vec<String>,
        /// With `--stage saturated|extracted`: stop a phase at this many e-nodes (at least 1).
        #[arg(long, value_name = "N", value_parser = parse_positive)]
        node_limit: Option<usize>,
        /// With `--stage saturated|extracted`: stop a phase after this many iterations (at
        /// least 1).
        #[arg(long, value_name = "N", value_parser = parse_positive)]
        iter_limit: Option<usize>,
        /// With `--stage saturated`: also print egg's explanation of one application of
        /// this rule (the rewrite chain proving the matched term equal to the new one).
        #[arg(long, value_name = "RULE")]
        explain: Option<String>,
        /// With `--stage extracted`: the hardware whose cost model chooses the program, a
        /// built-in profile (`weft hw list`) or a profile file (default `h100-sxm-8`).
        #[arg(long, value_name = "NAME|FILE")]
        hw: Option<String>,
        /// The model file: Weft JSON (docs/json-format.md) or ONNX, told apart by content.
        model: PathBuf,
        /// Output format: `text` (one op per line), `json` (Weft's exchange format), `dot`
        /// (Graphviz). `--stage saturated` prints a report: `text` or `json`.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Write to this file instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Which stage to print: `parsed` (as the frontend read it), `raised` (decomposed
        /// attention, RMSNorm, rotary embedding, SiLU and MoE raised to IR ops, dead nodes
        /// removed), `sharded` (the per-device graph for `--mesh`, with collectives and
        /// each value's sharding; the default when `--mesh` is given), `saturated` (the
        /// e-graph report: nodes, classes, iterations, stop reasons, per-rule match and
        /// apply counts) or `extracted` (the program extraction picks, runnable by `weft
        /// run`; chosen by DAG-aware greedy extraction under the cost model of `h100-sxm-8`).
        #[arg(long, value_enum)]
        stage: Option<StageArg>,
        /// Shard the model over this device mesh first, e.g. `--mesh tp=4` or
        /// `--mesh tp=2,ep=4` (axes: `tp` Megatron tensor parallelism, `dp` batch split,
        /// `ep` expert parallelism, `sp` Ulysses sequence parallelism; docs/sharding.md).
        #[arg(long, value_name = "SPEC", value_parser = parse_mesh)]
        mesh: Option<weft::ir::Mesh>,
        /// With `--mesh`: Megatron sequence parallelism for norms — each norm runs on the
        /// device's sequence shard, between a reduce-scatter and an all-gather.
        #[arg(long, requires = "mesh")]
        sp_norms: bool,
        /// Override a symbolic dim of the model, e.g. `--dim seq=4096` (repeatable).
        #[arg(long = "dim", value_name = "NAME=VALUE", value_parser = parse_dim)]
        dims: Vec<(String, u64)>,
        #[command(flatten)]
        allow: AllowArgs,
    },
}

/// Opt-in model-changing rewrites (docs/rewrites.md, "Model-changing rewrites"); shared by
/// `check`, `dump` and `compile`, so their effect on parameters, FLOPs and communication
/// is visible before planning.
#[derive(Debug, Default, clap::Args)]
struct AllowArgs {
    /// Apply these model-changing rewrites (comma-separated): `ladder` (ladder residual,
    /// ICML 2025) and `dcca` (BigMac, AAAI 2025). They change what the model computes and
    /// need weights trained for them; every output says they were applied.
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    allow: Vec<weft::passes::model_change::AllowName>,
    /// With `--allow ladder`: the layers to convert, `A..B` (0-based, inclusive), `all`
    /// (the default) or, for `compile`, `auto` (a sweep of the number of converted upper
    /// layers, reporting each one's predicted step).
    #[arg(long, value_name = "A..B|all|auto")]
    ladder_layers: Option<weft::passes::model_change::LadderLayers>,
    /// With `--allow dcca`: the downscale ratio r, as `0.25` or `1/4` (default 0.25, the
    /// paper's).
    #[arg(long, value_name = "R", value_parser = weft::passes::model_change::parse_ratio)]
    dcca_ratio: Option<(u64, u64)>,
    /// With `--allow dcca`: seed for the new weights the model does not hold (the result is
    /// then marked `untrained`).
    #[arg(long, value_name = "S")]
    dcca_seed: Option<u64>,
}

impl AllowArgs {
    /// `--dcca-seed` draws the new weights the model does not hold; when it holds them
    /// all (the record is not `untrained`), the seed was not used, and the user is told
    /// rather than left to think it was.
    fn warn_unused(&self, changes: &[weft::ir::ModelChange]) {
        if let Some(seed) = self.dcca_seed
            && changes.iter().any(|c| c.rule == "dcca" && !c.untrained)
        {
            tracing::warn!(
                "--dcca-seed {seed} was not used: every new DCCA weight was read from the model"
            );
        }
    }

    /// The options these flags ask for; an option of a rewrite not allowed is refused
    /// rather than ignored.
    fn options(&self) -> miette::Result<weft::passes::model_change::AllowOptions> {
        use weft::passes::model_change::{AllowName, AllowOptions, DccaOptions, LadderOptions};
        let mut out = AllowOptions::default();
        for name in &self.allow {
            match name {
                AllowName::Ladder => out.ladder = Some(LadderOptions::default()),
                AllowName::Dcca => out.dcca = Some(DccaOptions::default()),
            }
        }
        let refuse = |flag: &str, name: &str| {
            miette::miette!("{flag} is an option of the `{name}` rewrite; add `--allow {name}`")
        };
        if let Some(layers) = &self.ladder_layers {
            let ladder = out
                .ladder
                .as_mut()
                .ok_or_else(|| refuse("--ladder-layers", "ladder"))?;
            ladder.layers = layers.clone();
        }
        if let Some(ratio) = self.dcca_ratio {
            out.dcca
                .as_mut()
                .ok_or_else(|| refuse("--dcca-ratio", "dcca"))?
                .ratio = ratio;
        }
        if let Some(seed) = self.dcca_seed {
            out.dcca
                .as_mut()
                .ok_or_else(|| refuse("--dcca-seed", "dcca"))?
                .seed = seed;
        }
        Ok(out)
    }
}

/// Arguments of `weft compile`.
#[derive(Debug, clap::Args)]
struct CompileArgs {
    /// The model file: Weft JSON (docs/json-format.md) or ONNX, told apart by content.
    model: PathBuf,
    /// The hardware: a built-in profile (`weft hw list`) or a profile JSON file.
    #[arg(long, value_name = "NAME|FILE")]
    hw: String,
    /// Shard the model over this device mesh first, e.g. `--mesh tp=8` or
    /// `--mesh tp=2,ep=4` (axes: `tp`, `dp`, `ep`, `sp`; docs/sharding.md). Without it
    /// the plan is for one device.
    #[arg(long, value_name = "SPEC", value_parser = parse_mesh)]
    mesh: Option<weft::ir::Mesh>,
    /// With `--mesh`: Megatron sequence parallelism for norms.
    #[arg(long, requires = "mesh")]
    sp_norms: bool,
    /// Override a symbolic dim of the model, e.g. `--dim seq=4096` (repeatable).
    #[arg(long = "dim", value_name = "NAME=VALUE", value_parser = parse_dim)]
    dims: Vec<(String, u64)>,
    /// Write the plan (JSON, docs/plan-format.md) to this file. Without it, only the
    /// summary is printed.
    #[arg(short, long, value_name = "PLAN")]
    output: Option<PathBuf>,
    /// Also write the plan's timeline as Chrome trace-event JSON, for ui.perfetto.dev
    /// (one process per rank, one track per stream, arrows for events).
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Per-rank memory limit, e.g. `80GB` or `70GiB`: the plan honours it or compilation
    /// fails naming the layer and buffer that break it.
    #[arg(long, value_name = "SIZE", value_parser = weft::memory::parse_size)]
    max_memory: Option<u64>,
    /// Print the summary as JSON (the keys of `weft inspect --json`).
    #[arg(long)]
    json: bool,
    /// Also print how the program was chosen: the whole-model candidates and the search's
    /// trajectory (every move tried, its predicted step time, whether it was kept).
    #[arg(long)]
    explain_choice: bool,
    /// How the program is decided: `best` (Weft's choice under the cost model), or one
    /// peer system's fixed decomposition priced by the same model — `none` (the sharded
    /// program, no overlap), `megatron-sp`, `async-tp` (PyTorch), `tokenweave`, `flux`,
    /// `comet` (docs/strategies.md).
    #[arg(long, value_name = "NAME", default_value = "best", value_parser = parse_strategy)]
    strategy: weft::passes::strategy::Strategy,
    #[command(flatten)]
    allow: AllowArgs,
}

/// A `--strategy` value.
fn parse_strategy(s: &str) -> Result<weft::passes::strategy::Strategy, String> {
    s.parse()
        .map_err(|e: weft::passes::strategy::UnknownStrategy| e.to_string())
}

/// Arguments of `weft run`.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The model file: Weft JSON (docs/json-format.md) or ONNX, or a plan written by
    /// `weft compile -o`: all told apart by content. A plan runs its own program as
    /// scheduled, so `--mesh`, `--dim`, `--sp-norms`, `--ranks` and `--max-memory` do not
    /// apply to it.
    model: PathBuf,
    /// A graph input from a file: `NAME=FILE` with FILE a `.npy`, an ONNX `.pb` tensor or a
    /// `.npz` (its array NAME, or its only array); or just `FILE.npz` for every array in it,
    /// matched by name (repeatable).
    #[arg(long = "input", value_name = "NAME=FILE")]
    inputs: Vec<String>,
    /// A folder in the ONNX test-data layout: `input_0.pb`, `input_1.pb`, … fill the graph
    /// inputs in order.
    #[arg(long, value_name = "DIR")]
    input_dir: Option<PathBuf>,
    /// Write the outputs to this `.npz` file (the name must end in `.npz`), one array per
    /// graph output, keyed by name. Without it, a summary of each output is printed.
    #[arg(short, long, value_name = "FILE.npz")]
    output: Option<PathBuf>,
    /// Simulated ranks; must equal the number of devices of the graph's mesh (the default).
    #[arg(long, value_name = "N")]
    ranks: Option<usize>,
    /// Shard the model over this device mesh and run one simulated rank per device, e.g.
    /// `--mesh tp=4` (axes `tp`, `dp`, `ep`, `sp`; docs/sharding.md); outputs are written
    /// whole (split outputs gathered).
    #[arg(long, value_name = "SPEC", value_parser = parse_mesh)]
    mesh: Option<weft::ir::Mesh>,
    /// With `--mesh`: Megatron sequence parallelism for norms — each norm runs on the
    /// device's sequence shard, between a reduce-scatter and an all-gather.
    #[arg(long, requires = "mesh")]
    sp_norms: bool,
    /// Seed for the inputs that are not given (each gets seeded random values and a warning).
    #[arg(long, default_value_t = 0, value_name = "S")]
    seed: u64,
    /// Override a symbolic dim of the model, e.g. `--dim seq=4096` (repeatable).
    #[arg(long = "dim", value_name = "NAME=VALUE", value_parser = parse_dim)]
    dims: Vec<(String, u64)>,
    /// Seconds a rank waits for its peers at a collective before reporting them.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    timeout: f64,
    /// Refuse to run when the estimated peak memory exceeds this, e.g. `8GiB` or `512MB`
    /// (the memory available now, MemAvailable in /proc/meminfo, is always a limit too).
    #[arg(long, value_name = "SIZE", value_parser = weft::memory::parse_size)]
    max_memory: Option<u64>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum StageArg {
    Parsed,
    Raised,
    Sharded,
    Saturated,
    Extracted,
}

impl StageArg {
    fn name(self) -> &'static str {
        match self {
            StageArg::Parsed => "parsed",
            StageArg::Raised => "raised",
            StageArg::Sharded => "sharded",
            StageArg::Saturated => "saturated",
            StageArg::Extracted => "extracted",
        }
    }
}

/// Loads a model and takes it to `stage` (sharded over `mesh` when one is given),
/// logging what each pass did.
fn load_at(
    model: &std::path::Path,
    dims: Vec<(String, u64)>,
    stage: StageArg,
    mesh: Option<&weft::ir::Mesh>,
    sp_norms: bool,
    allow: &weft::passes::model_change::AllowOptions,
) -> miette::Result<weft::ir::Graph> {
    load_at_warned(model, dims, stage, mesh, sp_norms, allow).map(|(graph, _)| graph)
}

/// [`load_at`], also returning what sharding warned about (logged here, once each).
fn load_at_warned(
    model: &std::path::Path,
    dims: Vec<(String, u64)>,
    stage: StageArg,
    mesh: Option<&weft::ir::Mesh>,
    sp_norms: bool,
    allow: &weft::passes::model_change::AllowOptions,
) -> miette::Result<(weft::ir::Graph, Vec<weft::passes::shard::ShardWarning>)> {
    let graph = load_model(model, &options(dims)?)?;
    let passes = match (stage, mesh) {
        (StageArg::Parsed, None) => weft::Stage::Parsed,
        (StageArg::Raised, None) => weft::Stage::Raised,
        (StageArg::Sharded, None) => miette::bail!("--stage sharded needs --mesh SPEC"),
        (StageArg::Saturated | StageArg::Extracted, None) => weft::Stage::Raised,
        (StageArg::Parsed | StageArg::Raised, Some(_)) => miette::bail!(
            "--stage {} prints the graph before sharding, so --mesh would be ignored; drop \
             --mesh, or use --stage sharded (the default with --mesh), saturated or extracted",
            stage.name()
        ),
        (StageArg::Sharded | StageArg::Saturated | StageArg::Extracted, Some(_)) => {
            weft::Stage::Raised
        }
    };
    // The pass manager logs each pass (RUST_LOG=info); its reports are not logged again.
    if let Some(weft::passes::model_change::LadderOptions {
        layers: weft::passes::model_change::LadderLayers::Auto,
    }) = &allow.ladder
    {
        miette::bail!(
            "--ladder-layers auto is a sweep of compiled plans (`weft compile`); here give the \
             layers, `A..B` or `all`"
        );
    }
    let (graph, _reports) = weft::to_stage_allowing(graph, passes, allow).into_diagnostic()?;
    match mesh {
        Some(mesh) => {
            // A file `weft dump` wrote sharded (or extracted) holds per-device shapes and
            // collectives: sharding it again is refused by name, not by its first op.
            if !graph.mesh.axes().is_empty() {
                miette::bail!(
                    "cannot shard `{}` over {mesh}: it declares the mesh `{}` (it is already \
                     sharded); --mesh takes a single-device model: drop --mesh to use this \
                     file's own mesh, or shard the model it was made from",
                    model.display(),
                    graph.mesh
                );
            }
            let start = std::time::Instant::now();
            let options = weft::passes::shard::ShardOptions {
                mesh: mesh.clone(),
                sp_norms,
            };
            let (sharded, warnings) = weft::passes::shard::shard_with_warnings(&graph, &options)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot shard `{}` over {mesh}", model.display()))?;
            for w in &warnings {
                tracing::warn!("{w}");
            }
            tracing::info!(elapsed = ?start.elapsed(), %mesh, "sharded");
            Ok((sharded, warnings))
        }
        None => Ok((graph, Vec::new())),
    }
}

/// The stage `check` and `run` work on: raised, sharded when a mesh is given.
fn graph_stage(mesh: &Option<weft::ir::Mesh>) -> StageArg {
    match mesh {
        Some(_) => StageArg::Sharded,
        None => StageArg::Raised,
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Text,
    Json,
    Dot,
}

fn parse_dim(s: &str) -> Result<(String, u64), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not of the form NAME=VALUE"))?;
    let value = value
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("`{value}` is not a whole number"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("`{s}` names no dim; the form is NAME=VALUE"));
    }
    if value == 0 {
        return Err(format!("dim `{name}` must be at least 1"));
    }
    Ok((name.to_owned(), value))
}

/// `--mesh`: an empty spec is refused rather than read as "no mesh".
fn parse_mesh(s: &str) -> Result<weft::ir::Mesh, String> {
    let mesh: weft::ir::Mesh = s.parse().map_err(|e| format!("{e}"))?;
    if mesh.axes().is_empty() {
        return Err("the mesh is empty; give axes and sizes such as `tp=4` or `tp=2,dp=2`".into());
    }
    Ok(mesh)
}

/// A limit of at least 1 (a limit of 0 would stop before anything ran).
fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a whole number")),
    }
}

/// The load options for `--dim`s. A dim given twice is refused: collecting into a map
/// would keep the last value silently.
fn options(dims: Vec<(String, u64)>) -> miette::Result<LoadOptions> {
    let mut map = BTreeMap::new();
    for (name, value) in dims {
        if let Some(first) = map.insert(name.clone(), value) {
            miette::bail!(
                "--dim {name} is given twice ({name}={first} and {name}={value}); give each dim once"
            );
        }
    }
    Ok(LoadOptions { dims: map })
}

fn write_out(output: Option<&PathBuf>, text: &str) -> miette::Result<()> {
    match output {
        Some(path) => std::fs::write(path, text)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot write `{}`", path.display())),
        None => {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(text.as_bytes()) {
                // A closed pipe (`weft dump … | head`) is not an error.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.into_diagnostic(),
            }
        }
    }
}

fn run(cli: Cli) -> miette::Result<()> {
    match cli.command {
        Command::Check {
            model,
            json,
            mesh,
            sp_norms,
            dims,
            allow: allow_args,
        } => {
            let sharding_here = mesh.is_some();
            let allow = allow_args.options()?;
            let (graph, warnings) = load_at_warned(
                &model,
                dims,
                graph_stage(&mesh),
                mesh.as_ref(),
                sp_norms,
                &allow,
            )?;
            allow_args.warn_unused(&graph.model_changes);
            // A sharded graph (sharded here, or a file that declares its mesh) reports its
            // communication; one sharded here also lists the ops it computed whole.
            let mut report = CheckReport::new(&graph).into_diagnostic()?;
            if !graph.mesh.axes().is_empty() {
                report.comm = Some(weft::CommSummary::new(&graph).into_diagnostic()?);
            }
            if sharding_here {
                report.fallbacks = Some(weft::FallbackEntry::from_warnings(&warnings));
            }
            let text = if json {
                let mut s = serde_json::to_string_pretty(&report).into_diagnostic()?;
                s.push('\n');
                s
            } else {
                report.to_text()
            };
            write_out(None, &text)
        }
        Command::Run(args) => run_model(args),
        Command::Compile(args) => run_compile(args),
        Command::Inspect { plan, json, tasks } => {
            // A plan edited by hand is verified before its figures are shown.
            let (plan, program) = weft::compile::read_plan(&plan)?;
            weft::plan::verify_plan(&plan, &program)
                .map_err(|e| miette::miette!("the plan does not verify: {e}"))?;
            let text = if tasks {
                plan.to_text()
            } else if json {
                inspect_json(&plan)?
            } else {
                weft::inspect::InspectReport::new(&plan).to_text()
            };
            write_out(None, &text)
        }
        Command::Hw { command } => run_hw(command),
        Command::Rules { json } => {
            let text = if json {
                let mut s = serde_json::to_string_pretty(&weft::saturation::rule_entries())
                    .into_diagnostic()?;
                s.push('\n');
                s
            } else {
                weft::saturation::rules_text()
            };
            write_out(None, &text)
        }
        Command::Dump {
            model,
            format,
            output,
            stage,
            mesh,
            sp_norms,
            dims,
            rules,
            node_limit,
            iter_limit,
            explain,
            hw,
            allow: allow_args,
        } => {
            let allow = allow_args.options()?;
            let stage = stage.unwrap_or(if mesh.is_some() {
                StageArg::Sharded
            } else {
                StageArg::Raised
            });
            check_dump_flags(
                stage,
                format,
                &[
                    ("--rules", !rules.is_empty()),
                    ("--node-limit", node_limit.is_some()),
                    ("--iter-limit", iter_limit.is_some()),
                ],
                explain.is_some(),
            )?;
            if hw.is_some() && !matches!(stage, StageArg::Extracted) {
                miette::bail!(
                    "--hw chooses the cost model extraction uses (--stage extracted), not --stage {}",
                    stage.name()
                );
            }
            let graph = load_at(&model, dims, stage, mesh.as_ref(), sp_norms, &allow)?;
            allow_args.warn_unused(&graph.model_changes);
            let graph = match stage {
                StageArg::Saturated | StageArg::Extracted => {
                    let mut options = weft::passes::saturate::SaturateOptions {
                        rules,
                        ..Default::default()
                    };
                    if let Some(n) = node_limit {
                        options.node_limit = n;
                    }
                    if let Some(n) = iter_limit {
                        options.iter_limit = n;
                    }
                    // A rule to explain is checked by name before any work is done.
                    if let Some(rule) = &explain {
                        weft::passes::saturate::select_rules(std::slice::from_ref(rule))
                            .into_diagnostic()?;
                    }
                    // One run: with egg's explanations recorded when one is asked for, so
                    // what saturation warns about is said once.
                    let mut sat = match (&explain, stage) {
                        (Some(_), StageArg::Saturated) => {
                            weft::passes::saturate::saturate_with_explanations(&graph, &options)
                        }
                        _ => weft::passes::saturate::saturate(&graph, &options),
                    }
                    .into_diagnostic()
                    .wrap_err("equality saturation failed")?;
                    for name in &sat.report.not_fired {
                        tracing::warn!("rule `{name}` was asked for but never applied");
                    }
                    let summary = weft::saturation::SaturationSummary::new(&sat.report);
                    if let StageArg::Saturated = stage {
                        let why = match &explain {
                            Some(rule) => Some((
                                rule,
                                weft::passes::saturate::explain(&mut sat, rule)
                                    .into_diagnostic()?,
                            )),
                            None => None,
                        };
                        let text = match format {
                            // The explanation is a field of the one JSON object (text after
                            // it made the output invalid JSON).
                            Format::Json => {
                                let mut v = serde_json::to_value(&summary).into_diagnostic()?;
                                if let Some(map) = v.as_object_mut() {
                                    map.insert(
                                        "model_changing_rewrites".into(),
                                        serde_json::to_value(&graph.model_changes)
                                            .into_diagnostic()?,
                                    );
                                }
                                if let (Some((rule, why)), Some(map)) = (&why, v.as_object_mut()) {
                                    map.insert(
                                        "explanation".into(),
                                        serde_json::json!({"rule": rule, "text": why}),
                                    );
                                }
                                let mut s = serde_json::to_string_pretty(&v).into_diagnostic()?;
                                s.push('\n');
                                s
                            }
                            _ => {
                                let mut text = String::new();
                                if !graph.model_changes.is_empty() {
                                    text.push_str(&format!(
                                        "{}:\n",
                                        weft::ir::model_change::OUTPUTS_DIFFER
                                    ));
                                    for change in &graph.model_changes {
                                        text.push_str(&format!("  {}\n", change.summary()));
                                    }
                                }
                                text.push_str(&summary.to_text());
                                if let Some((rule, why)) = &why {
                                    text.push_str(&format!(
                                        "explanation of one `{rule}` application:\n{why}"
                                    ));
                                }
                                text
                            }
                        };
                        return write_out(output.as_ref(), &text);
                    }
                    tracing::info!("{}", summary.to_text());
                    // Every extracted program's label names the hardware that priced it.
                    let profile =
                        weft::hardware::Profile::resolve(hw.as_deref().unwrap_or(EXTRACT_PROFILE))
                            .into_diagnostic()?;
                    let cost = weft::passes::cost::CostModel::new(&profile, &graph.mesh)
                        .into_diagnostic()?;
                    // The error says "extraction failed: …" itself.
                    let chosen =
                        weft::passes::saturate::extract(&sat, &graph, &cost).into_diagnostic()?;
                    if chosen.uncosted_count > 0 {
                        tracing::warn!(
                            "{} e-node(s) could not be priced and were never chosen: {}",
                            chosen.uncosted_count,
                            chosen.uncosted.join("; ")
                        );
                    }
                    tracing::info!(
                        "extracted under the {}: {:.1} µs (DAG cost; the original program {:.1} µs{})",
                        cost.label(),
                        chosen.cost_us,
                        chosen.original_cost_us,
                        if chosen.kept_original { ", kept" } else { "" }
                    );
                    let mut extracted = chosen.graph;
                    // Extracting a file that was extracted already does not label it twice.
                    let label = format!(" [extracted: DAG-greedy, {}]", cost.label());
                    if !extracted.name.ends_with(&label) {
                        extracted.name.push_str(&label);
                    }
                    extracted
                }
                _ => graph,
            };
            let text = match format {
                Format::Text => weft::ir::text::to_text(&graph),
                Format::Json => weft::json::to_json(&graph),
                Format::Dot => weft::ir::dot::to_dot(&graph),
            };
            write_out(output.as_ref(), &text)
        }
    }
}

/// Refuses `dump` flags that would be ignored at `stage`.
fn check_dump_flags(
    stage: StageArg,
    format: Format,
    saturation_flags: &[(&str, bool)],
    explain: bool,
) -> miette::Result<()> {
    let saturating = matches!(stage, StageArg::Saturated | StageArg::Extracted);
    for (flag, given) in saturation_flags {
        if *given && !saturating {
            miette::bail!(
                "{flag} applies to the e-graph (--stage saturated or extracted), not to --stage {}",
                stage.name()
            );
        }
    }
    if explain && !matches!(stage, StageArg::Saturated) {
        miette::bail!(
            "--explain goes with --stage saturated (it explains a rewrite in the e-graph), not --stage {}",
            stage.name()
        );
    }
    if let (StageArg::Saturated, Format::Dot) = (stage, format) {
        miette::bail!(
            "--stage saturated prints the saturation report (--format text or json); to draw \
             the program extraction picks, use --stage extracted --format dot"
        );
    }
    Ok(())
}

/// `weft compile`.
fn run_compile(args: CompileArgs) -> miette::Result<()> {
    if let Some(path) = &args.output {
        check_writable(path, "-o")?;
    }
    if let Some(path) = &args.trace {
        check_writable(path, "--trace")?;
    }
    // Nothing is written over the model, and the plan and its trace go to two files.
    let outputs = [("-o", &args.output), ("--trace", &args.trace)];
    for (flag, path) in outputs {
        if let Some(path) = path
            && same_file(path, &args.model)
        {
            miette::bail!(
                "{flag} {}: is the model being compiled; write the {} to another file",
                path.display(),
                if flag == "-o" { "plan" } else { "trace" }
            );
        }
    }
    if let (Some(plan), Some(trace)) = (&args.output, &args.trace)
        && same_file(plan, trace)
    {
        miette::bail!(
            "-o and --trace name the same file `{}`; the plan and its trace need one file each",
            plan.display()
        );
    }
    let profile = weft::hardware::Profile::resolve(&args.hw).into_diagnostic()?;
    let request = weft::compile::CompileRequest {
        strategy: args.strategy,
        model: args.model.clone(),
        dims: options(args.dims)?.dims,
        mesh: args.mesh,
        sp_norms: args.sp_norms,
        profile,
        max_memory: args.max_memory,
        plan_path: args.output.clone(),
        allow: args.allow.options()?,
    };
    let auto = matches!(
        &request.allow.ladder,
        Some(weft::passes::model_change::LadderOptions {
            layers: weft::passes::model_change::LadderLayers::Auto
        })
    );
    let (compiled, sweep) = if auto {
        let sweep = weft::ladder_sweep::ladder_sweep(&request)?;
        let text = sweep.to_text();
        (sweep.best_plan, Some(text))
    } else {
        (weft::compile::compile(&request)?, None)
    };
    for note in &compiled.notes {
        tracing::warn!("{note}");
    }
    args.allow
        .warn_unused(&compiled.plan.model_changing_rewrites);
    if args.explain_choice {
        // On stderr, so `--json` output stays one JSON document.
        use std::io::Write as _;
        std::io::stderr()
            .write_all(compiled.choice.explain().as_bytes())
            .into_diagnostic()?;
    }
    if let Some(path) = &args.output {
        std::fs::write(path, compiled.plan.to_json_string())
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot write the plan to `{}`", path.display()))?;
    }
    if let Some(path) = &args.trace {
        // `to_trace_json` already renders the JSON text; it is written as is.
        let mut text = compiled.plan.to_trace_json();
        text.push('\n');
        std::fs::write(path, text)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot write the trace to `{}`", path.display()))?;
    }
    if let Some(sweep) = &sweep {
        // On stderr with --json, so that stdout stays one JSON document (the fastest plan's).
        if args.json {
            use std::io::Write as _;
            std::io::stderr()
                .write_all(sweep.as_bytes())
                .into_diagnostic()?;
        }
    }
    let text = if args.json {
        inspect_json(&compiled.plan)?
    } else {
        let mut text = sweep.clone().unwrap_or_default();
        if sweep.is_some() {
            text.push_str("the fastest plan:\n");
        }
        text.push_str(&weft::inspect::InspectReport::new(&compiled.plan).to_text());
        if let Some(path) = &args.output {
            text.push_str(&format!(
                "wrote the {}plan to {}\n",
                if sweep.is_some() { "fastest " } else { "" },
                path.display()
            ));
        }
        if let Some(path) = &args.trace {
            text.push_str(&format!(
                "wrote the trace to {} (open it in ui.perfetto.dev)\n",
                path.display()
            ));
        }
        text
    };
    write_out(None, &text)
}

fn inspect_json(plan: &weft::plan::Plan) -> miette::Result<String> {
    let report = weft::inspect::InspectReport::new(plan);
    let mut s = serde_json::to_string_pretty(&report).into_diagnostic()?;
    s.push('\n');
    Ok(s)
}

/// Whether two paths name one file: by their canonical forms when they exist, else by
/// their absolute forms.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    let canon = |p: &std::path::Path| {
        std::fs::canonicalize(p)
            .or_else(|_| std::path::absolute(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    canon(a) == canon(b)
}

/// Refuses an output path whose folder does not exist (or that is a folder) before any
/// work is done.
fn check_writable(path: &std::path::Path, flag: &str) -> miette::Result<()> {
    if path.is_dir() {
        miette::bail!(
            "{flag} {}: is a directory; give a file name",
            path.display()
        );
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    if !folder.is_dir() {
        miette::bail!(
            "{flag} {}: the folder `{}` does not exist (or is not a folder); create it first",
            path.display(),
            folder.display()
        );
    }
    Ok(())
}

/// `weft run PLAN`: the plan's program, run by the plan executor (one thread per stream
/// of each rank, honouring the plan's events; the plan is verified first).
/// A run of a changed model says so before its outputs: they are not the source model's
/// (and, with drawn weights, mean nothing).
fn warn_changed(changes: &[weft::ir::ModelChange]) {
    if !changes.is_empty() {
        tracing::warn!(
            "{}: {}",
            weft::ir::model_change::OUTPUTS_DIFFER,
            weft::ir::model_change::summaries(changes)
        );
    }
}

fn run_plan(args: RunArgs) -> miette::Result<()> {
    let not_for_plans = [
        ("--mesh", args.mesh.is_some()),
        ("--sp-norms", args.sp_norms),
        ("--dim", !args.dims.is_empty()),
        ("--ranks", args.ranks.is_some()),
        ("--max-memory", args.max_memory.is_some()),
    ];
    for (flag, given) in not_for_plans {
        if given {
            miette::bail!(
                "{flag} does not apply to a plan: `{}` fixes its program, mesh, dims and \
                 memory plan when it is compiled; recompile with `weft compile` to change them",
                args.model.display()
            );
        }
    }
    if let Some(path) = &args.output {
        check_output_path(path)?;
    }
    let (plan, program) = weft::compile::read_plan(&args.model)?;
    warn_changed(&program.model_changes);
    // Refused before any input is made up (the executor verifies again; it is cheap).
    weft::plan::verify_plan(&plan, &program)
        .map_err(|e| miette::miette!("the plan does not verify: {e}"))?;
    if let Some(path) = &args.output {
        let names = program
            .outputs
            .iter()
            .map(|&v| program.value(v).name.as_str());
        weft::tensor_io::check_npz_names(path, names).into_diagnostic()?;
    }
    let timeout = parse_timeout(args.timeout)?;
    let given = weft::inputs::gather_inputs(&program, &args.inputs, args.input_dir.as_deref())?;
    let inputs = weft::inputs::complete_inputs(&program, given, args.seed)?;
    let run_options = weft::cpu::RunOptions {
        base_dir: args.model.parent().map(PathBuf::from).unwrap_or_default(),
        timeout,
        ..weft::cpu::RunOptions::default()
    };
    let start = std::time::Instant::now();
    let outputs = weft::cpu::run_plan(&program, &plan, &inputs, &run_options).into_diagnostic()?;
    tracing::info!(elapsed = ?start.elapsed(), ranks = plan.ranks.len(), "plan run finished");
    write_outputs(args.output.as_ref(), &outputs)
}

/// `--timeout`: `Duration::from_secs_f64` panics past u64::MAX seconds (`--timeout 1e20`).
fn parse_timeout(secs: f64) -> miette::Result<std::time::Duration> {
    match std::time::Duration::try_from_secs_f64(secs) {
        Ok(t) if !t.is_zero() => Ok(t),
        _ => miette::bail!(
            "--timeout must be a number of seconds from 1e-9 to {}",
            u64::MAX
        ),
    }
}

/// Writes outputs to an .npz (`-o`) or prints a summary of each.
fn write_outputs(
    output: Option<&PathBuf>,
    outputs: &[(String, weft::ir::Tensor)],
) -> miette::Result<()> {
    match output {
        Some(path) => {
            weft::tensor_io::write_npz(path, outputs)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot write `{}`", path.display()))?;
            let names: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
            write_out(
                None,
                &format!(
                    "wrote {} output(s) to {}: {}\n",
                    outputs.len(),
                    path.display(),
                    names.join(", ")
                ),
            )
        }
        None => write_out(None, &weft::inputs::summarize(outputs)),
    }
}

fn run_model(args: RunArgs) -> miette::Result<()> {
    // `-o` writes an .npz archive whatever the name says, so another name is refused
    // before any work is done.
    if let Some(path) = &args.output
        && !path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npz"))
    {
        miette::bail!(
            "-o {}: `weft run` writes its outputs as an .npz archive (one array per output); \
             give a file name ending in .npz",
            path.display()
        );
    }
    if weft::plan_io::is_plan_file(&args.model) {
        return run_plan(args);
    }
    if let Some(path) = &args.output {
        check_output_path(path)?;
    }
    let graph = load_at(
        &args.model,
        args.dims,
        graph_stage(&args.mesh),
        args.mesh.as_ref(),
        args.sp_norms,
        // `weft run MODEL` runs the source model; a changed model runs as a plan or a
        // dumped graph, which carries its record of the change.
        &Default::default(),
    )?;
    warn_changed(&graph.model_changes);
    if let Some(path) = &args.output {
        let names = graph.outputs.iter().map(|&v| graph.value(v).name.as_str());
        weft::tensor_io::check_npz_names(path, names).into_diagnostic()?;
    }
    let devices = graph.mesh.num_devices() as usize;
    if let Some(n) = args.ranks
        && n != devices
    {
        let mesh = if graph.mesh.axes().is_empty() {
            "has no mesh, so it runs on 1 rank".to_owned()
        } else {
            format!("has mesh {} = {devices} rank(s)", graph.mesh)
        };
        miette::bail!("--ranks {n} does not fit the graph: it {mesh}");
    }
    let timeout = parse_timeout(args.timeout)?;
    // Before anything is allocated: refuse a run that cannot fit.
    let limit = weft::memory::limit(args.max_memory);
    weft::memory::check(&args.model, &graph, limit.as_ref())?;
    let given = weft::inputs::gather_inputs(&graph, &args.inputs, args.input_dir.as_deref())?;
    let inputs = weft::inputs::complete_inputs(&graph, given, args.seed)?;
    let run_options = weft::cpu::RunOptions {
        base_dir: args.model.parent().map(PathBuf::from).unwrap_or_default(),
        timeout,
        progress: weft::progress::terminal(),
        ..weft::cpu::RunOptions::default()
    };
    let start = std::time::Instant::now();
    let outputs = weft::cpu::run(&graph, &inputs, &run_options).into_diagnostic()?;
    tracing::info!(elapsed = ?start.elapsed(), ranks = devices, "run finished");
    write_outputs(args.output.as_ref(), &outputs)
}

/// Refuses an `-o` path that cannot be written (a folder that does not exist, or a folder
/// in the place of the file) before the model runs, so a long run is not thrown away at the
/// end for a typo in the path.
fn check_output_path(path: &std::path::Path) -> miette::Result<()> {
    check_writable(path, "-o")
}

/// `weft hw list` and `weft hw show`.
fn run_hw(command: HwCommand) -> miette::Result<()> {
    use weft::hardware::Profile;
    let text = match command {
        HwCommand::List => Profile::builtins()
            .into_diagnostic()?
            .iter()
            .map(|p| p.list_line() + "\n")
            .collect(),
        HwCommand::Show { profile, json } => {
            let p = Profile::resolve(&profile).into_diagnostic()?;
            if json { p.to_json() } else { p.show_text() }
        }
    };
    write_out(None, &text)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Long messages stay on one line when stderr is a file or a pipe, so they can be grepped.
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(miette::MietteHandlerOpts::new().wrap_lines(tty).build())
    }));
    // One convention: 0 on success (help and --version included), 1 on any error, usage
    // errors too (clap's own default would be 2).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(report) => {
            print_error(&report);
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stderr)] // the CLI's one place that renders errors
fn print_error(report: &Report) {
    eprintln!("{report:?}");
}
