//! Issue 11, "Speed and truth" and the plan CLI: plans of the ONNX fixtures run with
//! `weft run PLAN` and match onnxruntime; `bound ≤ predicted ≤ baseline` for every example
//! and fixture at every mesh the tests use, on every built-in profile; a plan with a
//! dependency removed by hand is rejected; `compile`, `inspect` and `run PLAN` misuse fails
//! cleanly; a two-node profile places tensor-parallel groups inside a node.

use std::collections::BTreeMap;
use std::path::Path;

use weft::compile::{CompileError, CompileRequest, Compiled, compile};
use weft::hardware::Profile;
use weft::plan::{KernelConfig, Plan};

use crate::cli::{assert_clean_failure, stderr, stdout, weft};
use crate::repo;

/// The ONNX fixtures exported with their onnxruntime outputs (scripts/export_hf_fixtures.py
/// and the MLP), each with its output's name.
const ONNX_FIXTURES: [(&str, &str); 6] = [
    ("gpt2", "logits"),
    ("bert", "last_hidden_state"),
    ("llama-gqa", "logits"),
    ("qwen2", "logits"),
    ("mixtral", "logits"),
    ("mlp", "probs"),
];

/// Compiles `model` (a path below the repository root) through the library.
fn try_compile(
    model: &str,
    mesh: Option<&str>,
    dims: &[(&str, u64)],
    profile: &Profile,
) -> Result<Compiled, CompileError> {
    compile(&CompileRequest {
        strategy: weft::passes::strategy::Strategy::Best,
        model: repo(model),
        dims: dims.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        mesh: mesh.map(|m| m.parse().expect("a valid mesh spec")),
        sp_norms: false,
        profile: profile.clone(),
        max_memory: None,
        plan_path: None,
        allow: Default::default(),
    })
}

/// Every figure finite and positive, `bound ≤ predicted ≤ baseline` exactly (the
/// scheduler snaps rounding-only differences, passes/src/schedule/predict.rs), the
/// exposed communication and overlap in range, one peak per rank.
fn assert_prediction_orders(plan: &Plan, what: &str) {
    let p = &plan.prediction;
    for (name, v) in [
        ("predicted_us", p.predicted_us),
        ("baseline_us", p.baseline_us),
        ("bound_us", p.bound_us),
    ] {
        assert!(v.is_finite() && v > 0.0, "{what}: {name} = {v}");
    }
    assert!(
        p.bound_us <= p.predicted_us && p.predicted_us <= p.baseline_us,
        "{what}: bound {} ≤ predicted {} ≤ baseline {} is broken",
        p.bound_us,
        p.predicted_us,
        p.baseline_us
    );
    assert!(
        p.exposed_comm_us.is_finite()
            && p.exposed_comm_us >= 0.0
            && p.exposed_comm_us <= p.predicted_us,
        "{what}: exposed comm {} of {}",
        p.exposed_comm_us,
        p.predicted_us
    );
    assert!(
        (0.0..=1.0).contains(&p.overlap_efficiency),
        "{what}: overlap {}",
        p.overlap_efficiency
    );
    assert_eq!(p.peak_memory_bytes.len(), plan.ranks.len(), "{what}");
    assert!(p.peak_memory_bytes.iter().all(|&b| b > 0), "{what}");
}

/// Compiles, expecting success, and checks the prediction's order. A model with f32
/// GEMMs on a profile that gives no f32 peak (a100-sxm-8, l20-pcie-8) must instead fail
/// naming the missing field: nothing is made up for it.
fn compile_checked(
    model: &str,
    mesh: Option<&str>,
    dims: &[(&str, u64)],
    profile: &Profile,
    f32_gemms: bool,
) {
    let what = format!("{model} mesh {mesh:?} dims {dims:?} on {}", profile.name);
    let result = try_compile(model, mesh, dims, profile);
    if f32_gemms && profile.device.peak_dense_f32.is_none() {
        let e = result
            .err()
            .unwrap_or_else(|| panic!("{what}: compiled"))
            .to_string();
        let says = format!(
            "an f32 GEMM needs `device.peak_dense_f32`, which profile `{}` does not give",
            profile.name
        );
        assert!(e.contains(&says), "{what}: {e}");
        return;
    }
    let compiled = result.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_prediction_orders(&compiled.plan, &what);
}

/// Compiles, expecting the sharder's clean refusal containing `reason`.
fn assert_cannot_shard(model: &str, mesh: &str, dims: &[(&str, u64)], reason: &str) {
    let profile = Profile::builtin("h100-sxm-8").unwrap();
    let e = try_compile(model, Some(mesh), dims, &profile)
        .err()
        .unwrap_or_else(|| panic!("{model} at {mesh} should not shard"))
        .to_string();
    assert!(
        e.contains(&format!("cannot shard over {mesh}")) && e.contains(reason),
        "{model} at {mesh}: {e}"
    );
}

#[test]
fn onnx_fixture_plans_at_tp2_match_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    for (name, output) in ONNX_FIXTURES {
        let model = format!("tests/onnx-models/{name}/model.onnx");
        let data = format!("tests/onnx-models/{name}/test_data_set_0");
        let mut meshes = vec!["tp=2"];
        if name == "mixtral" {
            // 8 experts: expert parallelism alone and beside tensor parallelism.
            meshes.extend(["ep=2", "tp=2,ep=2"]);
        }
        for mesh in meshes {
            let what = format!("{name} at {mesh}");
            let plan = dir.path().join(format!("{name}-{mesh}.json"));
            let out = dir.path().join(format!("{name}-{mesh}.npz"));
            let o = weft(&[
                "compile",
                &model,
                "--mesh",
                mesh,
                "--hw",
                "h100-sxm-8",
                "-o",
                plan.to_str().unwrap(),
            ]);
            assert!(o.status.success(), "{what}: {}", stderr(&o));
            let o = weft(&[
                "run",
                plan.to_str().unwrap(),
                "--input-dir",
                &data,
                "-o",
                out.to_str().unwrap(),
            ]);
            assert!(o.status.success(), "{what}: {}", stderr(&o));
            let got = weft::tensor_io::read_tensor_file(&out).unwrap();
            let want =
                weft::tensor_io::read_tensor_file(&repo(&format!("{data}/output_0.pb"))).unwrap();
            assert_eq!(got.len(), 1, "{what}");
            assert_eq!(got[0].0, output, "{what}");
            // The tolerance of the single-device ORT tests (tests/it/onnx.rs): relative to
            // the largest output value; shape, dtype and NaN are checked first.
            let err = crate::compare::relative_error(&want[0].1, &got[0].1)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(err <= 1e-5, "{what}: {err:.2e} from onnxruntime");
        }
    }
    // tp=8 cannot split these fixtures' 4 heads (or the MLP's 50-row vocabulary): said so.
    for (name, _) in ONNX_FIXTURES {
        let model = format!("tests/onnx-models/{name}/model.onnx");
        let reason = if name == "mlp" {
            "the vocabulary (50 rows"
        } else {
            "4 query heads cannot be split"
        };
        assert_cannot_shard(&model, "tp=8", &[], reason);
    }
}

/// A model, whether it has f32 GEMMs, the dims for its dp meshes, and the meshes that
/// shard it.
type Case = (
    &'static str,
    bool,
    &'static [(&'static str, u64)],
    Vec<&'static str>,
);

#[test]
fn bound_predicted_baseline_order_on_every_profile() {
    // (model, f32 GEMMs, dims for the dp meshes, meshes that shard it). MoE models add
    // expert meshes.
    let dense = ["tp=2", "dp=2,tp=2"];
    let cases: Vec<Case> = vec![
        (
            "examples/tiny-llama.json",
            true,
            &[("batch", 2)],
            dense.to_vec(),
        ),
        (
            "examples/llama3-70b-layer.json",
            false,
            &[("batch", 2)],
            vec!["tp=2", "tp=8", "dp=2,tp=2"],
        ),
        (
            "examples/mixtral-8x7b-moe-layer.json",
            false,
            &[("batch", 2)],
            vec!["tp=2", "tp=8", "ep=8", "tp=2,ep=2", "dp=2,tp=2"],
        ),
        (
            "examples/gpt3-xl-moe.json",
            false,
            &[],
            vec!["ep=8", "ep=2"],
        ),
        ("tests/onnx-models/gpt2/model.onnx", true, &[], vec!["tp=2"]),
        ("tests/onnx-models/bert/model.onnx", true, &[], vec!["tp=2"]),
        (
            "tests/onnx-models/llama-gqa/model.onnx",
            true,
            &[],
            vec!["tp=2"],
        ),
        (
            "tests/onnx-models/qwen2/model.onnx",
            true,
            &[],
            vec!["tp=2"],
        ),
        (
            "tests/onnx-models/mixtral/model.onnx",
            true,
            &[],
            vec!["tp=2", "ep=8", "ep=2", "tp=2,ep=2"],
        ),
        (
            "tests/onnx-models/mlp/model.onnx",
            true,
            &[],
            dense.to_vec(),
        ),
    ];
    let profiles = Profile::builtins().unwrap();
    assert!(profiles.len() >= 6);
    for profile in &profiles {
        for (model, f32_gemms, dp_dims, meshes) in &cases {
            compile_checked(model, None, &[], profile, *f32_gemms);
            for mesh in meshes {
                let dims: &[(&str, u64)] = if mesh.contains("dp") { dp_dims } else { &[] };
                compile_checked(model, Some(mesh), dims, profile, *f32_gemms);
            }
        }
    }
    // The 80-layer models once each (not per profile).
    let h100 = Profile::builtin("h100-sxm-8").unwrap();
    compile_checked("examples/llama3-70b.json", Some("tp=8"), &[], &h100, false);
    compile_checked(
        "examples/llama3-70b-decode.json",
        Some("tp=8"),
        &[],
        &h100,
        false,
    );
    // The meshes above that cannot shard a model say why.
    assert_cannot_shard("examples/tiny-llama.json", "tp=8", &[], "4 query heads");
    assert_cannot_shard("examples/gpt3-xl-moe.json", "tp=2", &[], "50257 rows");
    assert_cannot_shard(
        "examples/tiny-llama.json",
        "dp=2,tp=2",
        &[],
        "(batch, size 1)",
    );
    // The committed fixtures under tests/data are already sharded: refused.
    for fixture in ["tests/data/all-ops.json", "tests/data/collectives.json"] {
        let e = try_compile(fixture, None, &[], &h100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("it is already sharded"), "{fixture}: {e}");
    }
}

#[test]
fn a_mesh_larger_than_the_machine_is_refused_naming_both() {
    for profile in Profile::builtins().unwrap() {
        let devices = profile.total_devices().unwrap();
        let mesh = format!("dp={}", 2 * devices);
        let e = try_compile("examples/tiny-llama.json", Some(&mesh), &[], &profile)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("`{mesh}`")) && e.contains(&format!("`{}`", profile.name)),
            "{e}"
        );
    }
    let o = weft(&[
        "compile",
        "examples/tiny-llama.json",
        "--mesh",
        "tp=16",
        "--hw",
        "h100-sxm-8",
    ]);
    assert_clean_failure(&o);
    assert!(
        stderr(&o).contains(
            "the mesh `tp=16` needs 16 devices but the hardware profile `h100-sxm-8` has 8"
        ),
        "{}",
        stderr(&o)
    );
}

/// Compiles tiny-llama at tp=2 with the CLI into `dir`, returning the plan's path.
fn tiny_plan(dir: &Path) -> std::path::PathBuf {
    let plan = dir.join("tiny.json");
    let o = weft(&[
        "compile",
        "examples/tiny-llama.json",
        "--mesh",
        "tp=2",
        "--hw",
        "h100-sxm-8",
        "-o",
        plan.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    plan
}

#[test]
fn a_plan_with_a_dependency_removed_is_rejected_by_run() {
    let dir = tempfile::tempdir().unwrap();
    let plan = tiny_plan(dir.path());
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    // The first task that waits on an event: its wait is the only thing ordering it after
    // the producer on the other stream.
    let tasks = json["ranks"][0]["tasks"].as_array_mut().unwrap();
    let task = tasks
        .iter_mut()
        .find(|t| !t["waits"].as_array().unwrap().is_empty())
        .expect("a tp=2 plan has cross-stream waits");
    let id = task["id"].as_u64().unwrap();
    task["waits"] = serde_json::json!([]);
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, serde_json::to_string(&json).unwrap()).unwrap();
    let o = weft(&["run", broken.to_str().unwrap()]);
    assert_clean_failure(&o);
    let err = stderr(&o);
    assert!(err.contains("missing dependency"), "{err}");
    assert!(err.contains(&format!("task {id} ")), "{err}");
    assert!(err.contains("produced by task "), "{err}");
    // The untouched plan runs.
    let o = weft(&["run", plan.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_plan_reusing_bytes_still_alive_is_rejected_by_run() {
    let dir = tempfile::tempdir().unwrap();
    let plan = tiny_plan(dir.path());
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    let buffers = json["ranks"][0]["buffers"].as_array_mut().unwrap();
    let field = |b: &serde_json::Value, k: &str| b[k].as_u64();
    // An activation written (task ids are issue order, a topological order) after another
    // one is written and before that one's last read: put it on the other's bytes.
    let activations: Vec<usize> = (0..buffers.len())
        .filter(|&i| buffers[i]["kind"] == "activation" && field(&buffers[i], "bytes") > Some(0))
        .collect();
    let (a, b) = activations
        .iter()
        .find_map(|&a| {
            let (pa, last) = (
                field(&buffers[a], "producer")?,
                field(&buffers[a], "last_reader")?,
            );
            let b = activations
                .iter()
                .copied()
                .find(|&b| field(&buffers[b], "producer").is_some_and(|pb| pb > pa && pb < last))?;
            Some((a, b))
        })
        .expect("a tp=2 plan has two activations alive at once");
    buffers[b]["offset"] = buffers[a]["offset"].clone();
    let broken = dir.path().join("overlap.json");
    std::fs::write(&broken, serde_json::to_string(&json).unwrap()).unwrap();
    let o = weft(&["run", broken.to_str().unwrap()]);
    assert_clean_failure(&o);
    let err = stderr(&o);
    assert!(
        err.contains(&format!("buffers {a} ")) && err.contains(&format!("and {b} ")),
        "{err}"
    );
    assert!(
        err.contains("share bytes but may be alive at once"),
        "{err}"
    );
}

#[test]
fn run_plan_refuses_other_versions_and_flags_that_do_not_apply() {
    let dir = tempfile::tempdir().unwrap();
    let plan = tiny_plan(dir.path());
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    json["version"] = serde_json::json!(weft::plan::PLAN_VERSION + 1);
    let other = dir.path().join("other.json");
    std::fs::write(&other, serde_json::to_string(&json).unwrap()).unwrap();
    let o = weft(&["run", other.to_str().unwrap()]);
    assert_clean_failure(&o);
    assert!(
        stderr(&o).contains(&format!(
            "the plan has version {}",
            weft::plan::PLAN_VERSION + 1
        )),
        "{}",
        stderr(&o)
    );
    let p = plan.to_str().unwrap();
    for (flag, value) in [
        ("--mesh", Some("tp=2")),
        ("--dim", Some("seq=8")),
        ("--ranks", Some("2")),
        ("--max-memory", Some("1GB")),
    ] {
        let mut args = vec!["run", p, flag];
        args.extend(value);
        let o = weft(&args);
        assert_clean_failure(&o);
        assert!(
            stderr(&o).contains(&format!("{flag} does not apply to a plan")),
            "{flag}: {}",
            stderr(&o)
        );
    }
    // --sp-norms needs --mesh, which a plan refuses: refused either way.
    for args in [
        vec!["run", p, "--sp-norms"],
        vec!["run", p, "--mesh", "tp=2", "--sp-norms"],
    ] {
        assert_clean_failure(&weft(&args));
    }
}

#[test]
fn inspect_json_trace_and_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("tiny.json");
    let trace = dir.path().join("tiny.trace.json");
    let o = weft(&[
        "compile",
        "examples/tiny-llama.json",
        "--mesh",
        "tp=2",
        "--hw",
        "h100-sxm-8",
        "-o",
        plan.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // inspect --json: the keys, the same figures as the plan's prediction.
    let o = weft(&["inspect", plan.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    for key in [
        "predicted_us",
        "baseline_us",
        "bound_us",
        "exposed_comm_us",
        "overlap_efficiency",
        "peak_memory_bytes",
        "rules_applied",
        "model_changing_rewrites",
    ] {
        assert!(report.get(key).is_some(), "inspect --json lacks `{key}`");
    }
    let stored: Plan = Plan::from_json_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    assert_eq!(
        report["predicted_us"].as_f64(),
        Some(stored.prediction.predicted_us)
    );
    assert_eq!(report["peak_memory_bytes"].as_array().unwrap().len(), 2);
    // Provenance: the source's hash, dims, mesh, hardware, no model-changing rewrites.
    let source = std::fs::read(repo("examples/tiny-llama.json")).unwrap();
    assert_eq!(stored.source.sha256, weft::plan_io::sha256_hex(&source));
    assert_eq!(stored.source.format, "json");
    assert_eq!(
        stored.dims,
        BTreeMap::from([("batch".to_owned(), 1), ("seq".to_owned(), 16)])
            .into_iter()
            .collect()
    );
    assert_eq!(stored.mesh.len(), 1);
    assert_eq!(
        (stored.mesh[0].name.as_str(), stored.mesh[0].size),
        ("tp", 2)
    );
    assert_eq!(stored.hardware.name, "h100-sxm-8");
    assert!(stored.model_changing_rewrites.is_empty());
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    assert_eq!(raw["model_changing_rewrites"], serde_json::json!([]));
    // --trace: Chrome trace-event JSON, one process per rank with named threads, complete
    // events for tasks and flow arrows for events.
    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let events = trace["traceEvents"]
        .as_array()
        .expect("a trace object with traceEvents");
    let phases: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e["ph"].as_str().unwrap()).collect();
    for ph in ["X", "M", "s", "f"] {
        assert!(phases.contains(ph), "no `{ph}` event: {phases:?}");
    }
    let pids: std::collections::BTreeSet<u64> =
        events.iter().map(|e| e["pid"].as_u64().unwrap()).collect();
    assert_eq!(pids, [0, 1].into());
    let threads: Vec<&str> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name" && e["pid"] == 0)
        .map(|e| e["args"]["name"].as_str().unwrap())
        .collect();
    assert!(threads.len() >= 2, "{threads:?}");
    let tasks = events.iter().filter(|e| e["ph"] == "X" && e["pid"] == 0);
    assert_eq!(tasks.count(), stored.ranks[0].tasks.len());
}

#[test]
fn compile_failures_are_clean_and_say_why() {
    // --max-memory one byte below the plan's peak: names the layer and the buffer.
    let o = weft(&[
        "compile",
        "examples/tiny-llama.json",
        "--mesh",
        "tp=2",
        "--hw",
        "h100-sxm-8",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let peak = report["peak_memory_bytes"][0].as_u64().unwrap();
    let weights = report["weight_bytes"][0].as_u64().unwrap();
    // One byte below the chosen plan's peak: the search's candidates are all checked
    // against the limit, so another program may fit; if one does, the plan keeps to it.
    let below = (peak - 1).to_string();
    let o = weft(&[
        "compile",
        "examples/tiny-llama.json",
        "--mesh",
        "tp=2",
        "--hw",
        "h100-sxm-8",
        "--max-memory",
        &below,
        "--json",
    ]);
    if o.status.success() {
        let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        let got = r["peak_memory_bytes"][0].as_u64().unwrap();
        assert!(got < peak, "a plan over --max-memory: {got} > {below}");
    } else {
        assert_clean_failure(&o);
    }
    // 95% of the chosen plan's activations: no program fits; names the layer and the buffer.
    let limit = (weights + (peak - weights) * 95 / 100).to_string();
    let o = weft(&[
        "compile",
        "examples/tiny-llama.json",
        "--mesh",
        "tp=2",
        "--hw",
        "h100-sxm-8",
        "--max-memory",
        &limit,
    ]);
    assert_clean_failure(&o);
    let err = stderr(&o);
    assert!(
        err.contains(&format!("does not fit in {limit} bytes per rank")),
        "{err}"
    );
    assert!(
        err.contains("in layer ") && err.contains("buffer `"),
        "{err}"
    );
    // At the peak itself it fits.
    let o = weft(&[
        "compile",
        "examples/tiny-llama.json",
        "--mesh",
        "tp=2",
        "--hw",
        "h100-sxm-8",
        "--max-memory",
        &peak.to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // An unknown --hw lists the built-ins.
    let o = weft(&["compile", "examples/tiny-llama.json", "--hw", "b200-nvl72"]);
    assert_clean_failure(&o);
    for name in Profile::builtin_names() {
        assert!(stderr(&o).contains(name), "{name}: {}", stderr(&o));
    }
    // An already-sharded file is refused.
    let o = weft(&["compile", "tests/data/all-ops.json", "--hw", "h100-sxm-8"]);
    assert_clean_failure(&o);
    assert!(
        stderr(&o).contains("it declares the mesh `tp=2` (it is already sharded)"),
        "{}",
        stderr(&o)
    );
}

/// Collectives of rank 0 as (axis, group, inter_node).
fn collectives(plan: &Plan) -> Vec<(String, Vec<u32>, bool)> {
    plan.ranks[0]
        .tasks
        .iter()
        .filter_map(|t| {
            let c = t.collective.as_ref()?;
            let inter = match &t.kernel {
                KernelConfig::Collective(config)
                | KernelConfig::Pipelined {
                    collective: config, ..
                }
                | KernelConfig::CommNorm {
                    collective: config, ..
                } => config.inter_node,
                other => panic!("collective task {:?} has kernel {other:?}", t.id),
            };
            Some((c.axis.clone(), c.group.clone(), inter))
        })
        .collect()
}

#[test]
fn two_nodes_keep_tensor_parallel_groups_inside_a_node() {
    let one = Profile::builtin("h100-sxm-8").unwrap();
    let two = Profile::builtin("h100-sxm-8x2-ndr").unwrap();
    // Llama-3-70B, 80 layers, dp=2,tp=8 with batch 2: each tp group is one node's 8 GPUs.
    // (A forward step has no dp collective: each dp replica runs its own batch half.)
    let full = try_compile(
        "examples/llama3-70b.json",
        Some("dp=2,tp=8"),
        &[("batch", 2)],
        &two,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_prediction_orders(&full.plan, "llama3-70b dp=2,tp=8 on two nodes");
    assert_eq!(full.plan.ranks.len(), 16);
    let colls = collectives(&full.plan);
    assert!(!colls.is_empty());
    for (axis, group, inter) in &colls {
        assert_eq!(axis, "tp");
        assert_eq!(group, &(0..8).collect::<Vec<u32>>());
        assert!(!inter, "a tp group of one node marked inter-node");
    }
    // Mesh order decides the layout: `tp=8,dp=2` strides tp over both nodes, which the
    // plan marks inter-node and prices slower than the one-node layout.
    let layer = "examples/llama3-70b-layer.json";
    let inside = try_compile(layer, Some("dp=2,tp=8"), &[("batch", 2)], &two).unwrap();
    let across = try_compile(layer, Some("tp=8,dp=2"), &[("batch", 2)], &two).unwrap();
    assert!(collectives(&inside.plan).iter().all(|c| !c.2));
    let across_colls = collectives(&across.plan);
    assert!(!across_colls.is_empty());
    for (axis, group, inter) in &across_colls {
        assert_eq!(axis, "tp");
        assert_eq!(group, &(0..16).step_by(2).collect::<Vec<u32>>());
        assert!(inter, "a tp group over both nodes not marked inter-node");
    }
    assert!(across.plan.prediction.predicted_us > inside.plan.prediction.predicted_us);
    // Inside a node, the two-node machine prices tp=8 as the one-node machine does.
    let single = try_compile(layer, Some("tp=8"), &[("batch", 2)], &one).unwrap();
    let on_two = try_compile(layer, Some("tp=8"), &[("batch", 2)], &two).unwrap();
    assert_eq!(
        single.plan.prediction.predicted_us,
        on_two.plan.prediction.predicted_us
    );
}
