//! An independent review of issue 11 (the execution plan) found these; each test failed
//! before its finding was fixed and keeps it fixed.

use std::path::Path;

use weft::hardware::Profile;
use weft::ir::{DType, DimBindings, Mesh, Op, Shape, TensorType};
use weft::passes::cost::CostModel;

use crate::cli::{stderr, stdout, weft};

/// Compiles `examples/tiny-llama.json` at `tp=2` into `dir/plan.json` and returns the plan
/// as JSON.
fn tiny_plan(dir: &Path, extra: &[&str]) -> serde_json::Value {
    let plan = dir.join("plan.json");
    let mut args = vec![
        "compile",
        "examples/tiny-llama.json",
        "--mesh",
        "tp=2",
        "--hw",
        "h100-sxm-8",
        "-o",
        plan.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = weft(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap()
}

fn write_json(path: &Path, v: &serde_json::Value) {
    std::fs::write(path, serde_json::to_string(v).unwrap()).unwrap();
}

/// `weft compile --trace FILE` writes the trace JSON serialised a second time: the file
/// holds one JSON *string*, which ui.perfetto.dev cannot open (src/main.rs serialises the
/// `String` that `Plan::to_trace_json` already returns).
#[test]
fn trace_file_is_a_trace_event_object() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.json");
    tiny_plan(dir.path(), &["--trace", trace.to_str().unwrap()]);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    assert!(
        v.get("traceEvents")
            .is_some_and(serde_json::Value::is_array),
        "the trace file's top level is {}",
        if v.is_string() {
            "a string"
        } else {
            "not an object"
        }
    );
}

/// `weft inspect` prints a plan's figures without running `verify_plan`: a plan whose
/// `predicted_us` was edited to 1 µs (which `weft run` rejects: "[times] predicted_us is
/// 1, but the latest task ends at 113.2 µs") is summarised with exit 0 as a 1 µs step.
#[test]
fn inspect_rejects_a_plan_that_fails_verification() {
    let dir = tempfile::tempdir().unwrap();
    let mut plan = tiny_plan(dir.path(), &[]);
    plan["prediction"]["predicted_us"] = serde_json::json!(1.0);
    let edited = dir.path().join("edited.json");
    write_json(&edited, &plan);
    let run = weft(&["run", edited.to_str().unwrap()]);
    assert!(
        !run.status.success(),
        "weft run accepts it: {}",
        stdout(&run)
    );
    let o = weft(&["inspect", edited.to_str().unwrap()]);
    assert!(
        !o.status.success(),
        "weft inspect summarises an invalid plan:\n{}",
        stdout(&o)
    );
}

/// The plan embeds its program but nothing ties it to the source model: editing one node's
/// op (`add` → `sub`) leaves a plan that verifies, runs, prints different outputs, and
/// still says "model-changing none (outputs equal the source model's)".
#[test]
fn a_plan_whose_program_was_edited_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut plan = tiny_plan(dir.path(), &[]);
    let nodes = plan["program"]["nodes"].as_array_mut().unwrap();
    let residual = nodes
        .iter_mut()
        .find(|n| n["name"] == "layers.0.ffn_residual")
        .unwrap();
    assert_eq!(residual["op"], "add");
    residual["op"] = serde_json::json!("sub");
    let edited = dir.path().join("edited.json");
    write_json(&edited, &plan);
    let o = weft(&["run", edited.to_str().unwrap(), "--seed", "3"]);
    assert!(
        !o.status.success(),
        "a plan whose program no longer computes the source model runs:\n{}",
        stdout(&o)
    );
}

/// External weights of a sharded model: the program's weight node declares the per-rank
/// shape, and the JSON reader checks the `.npy` header against that shape instead of the
/// whole tensor (frontends/json/src/external.rs `check_external`), so a plan (or `weft
/// dump --mesh --format json`) of any model with `.npy`/`.safetensors` weights that a rank
/// holds only a piece of cannot be read back: "`w2.npy` holds f32[32, 16] but the node
/// declares f32[32, 8]".
#[test]
fn sharded_plan_with_npy_weights_runs_from_another_folder() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&model_dir).unwrap();
    std::fs::create_dir_all(&out_dir).unwrap();
    // Two .npy weights with distinct, non-zero values (rows·cols + index, scaled).
    for (name, rows, cols) in [("w1", 16usize, 32usize), ("w2", 32, 16)] {
        let header =
            format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
        let mut h = header.into_bytes();
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(b' ');
        }
        h.push(b'\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&u16::try_from(h.len()).unwrap().to_le_bytes());
        bytes.extend_from_slice(&h);
        for i in 0..rows * cols {
            let v = ((i * 7919 + rows) % 97) as f32 / 97.0 - 0.5;
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(model_dir.join(format!("{name}.npy")), bytes).unwrap();
    }
    let model = serde_json::json!({
        "weft": 1, "name": "ext", "dims": {"batch": 4},
        "nodes": [
            {"name": "x", "op": "input", "attrs": {"dtype": "f32", "shape": ["batch", 16]}},
            {"name": "w1", "op": "weight", "attrs": {"dtype": "f32", "shape": [16, 32], "init": {"npy": {"path": "w1.npy"}}}},
            {"name": "w2", "op": "weight", "attrs": {"dtype": "f32", "shape": [32, 16], "init": {"npy": {"path": "w2.npy"}}}},
            {"name": "h", "op": "matmul", "inputs": ["x", "w1"]},
            {"name": "a", "op": "relu", "inputs": ["h"]},
            {"name": "y", "op": "matmul", "inputs": ["a", "w2"]}
        ],
        "outputs": ["y"]
    });
    let model_path = model_dir.join("m.json");
    write_json(&model_path, &model);
    let plan = out_dir.join("p.json");
    let o = weft(&[
        "compile",
        model_path.to_str().unwrap(),
        "--mesh",
        "tp=2",
        "--hw",
        "h100-sxm-8",
        "-o",
        plan.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = out_dir.join("got.npz");
    let want = out_dir.join("want.npz");
    let o = weft(&["run", plan.to_str().unwrap(), "-o", got.to_str().unwrap()]);
    assert!(o.status.success(), "the plan does not run: {}", stderr(&o));
    let o = weft(&[
        "run",
        model_path.to_str().unwrap(),
        "-o",
        want.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = weft::tensor_io::read_tensor_file(&got).unwrap();
    let want = weft::tensor_io::read_tensor_file(&want).unwrap();
    let err = crate::worst_relative(&want, &got);
    assert!(err <= 1e-5, "relative error {err}");
}

/// A pipelined GEMM + reduce-scatter whose chunk count differs between ranks makes the
/// ranks issue different numbers of reduce-scatter calls (a deadlock on a GPU), yet
/// `verify_plan` accepts it; only the CPU executor refuses, as its own limitation ("the
/// CPU executor needs one count per node").
#[test]
fn verify_plan_rejects_chunk_counts_that_differ_across_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let plan_path = dir.path().join("plan.json");
    let o = weft(&[
        "compile",
        "examples/llama3-70b-layer.json",
        "--mesh",
        "tp=8",
        "--sp-norms",
        "--hw",
        "h100-sxm-8",
        "-o",
        plan_path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan_path).unwrap()).unwrap();
    let mut edited_tasks = 0;
    for task in plan["ranks"][1]["tasks"].as_array_mut().unwrap() {
        if task["kernel"]["kind"] == "pipelined" {
            let c = task["kernel"]["chunks"].as_u64().unwrap();
            task["kernel"]["chunks"] = serde_json::json!(c * 2);
            edited_tasks += 1;
        }
    }
    assert!(edited_tasks > 0, "the plan has no pipelined task any more");
    let edited = dir.path().join("edited.json");
    write_json(&edited, &plan);
    let (plan, program) = weft::compile::read_plan(&edited).unwrap();
    let e = weft::plan::verify_plan(&plan, &program);
    assert!(
        e.is_err(),
        "verify_plan accepts different chunk counts per rank"
    );
}

/// GEMM time is not monotone in the problem size within a wave count: the per-wave rate
/// is interpolated at the GEMM's own FLOPs and then scaled by the wave utilisation, so a
/// partly filled wave of a small GEMM is charged a *lower* rate than the same wave
/// full. 128×12800×512 (100 tiles) is predicted slower (11.2 µs) than 128×16896×512
/// (132 tiles, 32% more work, 9.8 µs); 128×17024×512 (133 tiles, 18.3 µs) slower than
/// 128×25600×512 (200 tiles, 14.5 µs).
#[test]
fn gemm_time_never_drops_as_the_gemm_grows() {
    let model = CostModel::new(
        &Profile::builtin("h100-sxm-8").unwrap(),
        &Mesh::new([("tp", 1)]).unwrap(),
    )
    .unwrap();
    let ty = |dims: &[u64]| TensorType::new(DType::Bf16, Shape::new(dims.iter().copied()));
    let op = Op::MatMul {
        transpose_a: false,
        transpose_b: false,
    };
    let (m, k) = (128u64, 512u64);
    let mut last = (0u64, 0.0f64);
    for tiles in [100u64, 132, 133, 150, 200, 264] {
        let n = tiles * 128;
        let (a, b, c) = (ty(&[m, k]), ty(&[k, n]), ty(&[m, n]));
        let t = model
            .op_cost(&op, &[&a, &b], &[&c], &DimBindings::new())
            .unwrap()
            .time_us;
        assert!(
            t >= last.1,
            "128×{n}×512 is predicted at {t:.2} µs, faster than the smaller 128×{}×512 at {:.2} µs",
            last.0,
            last.1
        );
        last = (n, t);
    }
}

/// `tasks` is the plan's issue order (docs/plan-format.md), and on a GPU a
/// `cudaStreamWaitEvent` issued before the matching `cudaEventRecord` waits for nothing.
/// Moving each rank's first comm task (which waits on event 0) ahead of its recorder
/// keeps every stream's order, and `verify_plan` accepts it; the CPU executor's condition
/// variables then wait as if the record had come first, so the run cannot show the race.
#[test]
fn a_wait_issued_before_its_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut plan = tiny_plan(dir.path(), &[]);
    for rp in plan["ranks"].as_array_mut().unwrap() {
        let tasks = rp["tasks"].as_array_mut().unwrap();
        assert_eq!(tasks[1]["waits"], serde_json::json!([tasks[0]["record"]]));
        assert_ne!(tasks[1]["stream"], tasks[0]["stream"]);
        tasks.swap(0, 1);
        tasks[0]["id"] = serde_json::json!(0);
        tasks[1]["id"] = serde_json::json!(1);
        let renumber = |v: &mut serde_json::Value| match v.as_u64() {
            Some(0) => *v = serde_json::json!(1),
            Some(1) => *v = serde_json::json!(0),
            _ => {}
        };
        for b in rp["buffers"].as_array_mut().unwrap() {
            renumber(&mut b["producer"]);
            renumber(&mut b["last_reader"]);
        }
        renumber(&mut rp["memory"]["peak_at"]);
    }
    let edited = dir.path().join("edited.json");
    write_json(&edited, &plan);
    let (plan, program) = weft::compile::read_plan(&edited).unwrap();
    assert!(
        weft::plan::verify_plan(&plan, &program).is_err(),
        "verify_plan accepts task 0 waiting on an event that task 1 records later in issue order"
    );
}

/// `weft compile MODEL -o MODEL` replaces the model with its plan without a word (and
/// `-o P --trace P` replaces the plan with the trace).
#[test]
fn compile_refuses_to_overwrite_its_model_or_its_own_plan() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.json");
    std::fs::copy(crate::repo("examples/tiny-llama.json"), &model).unwrap();
    let m = model.to_str().unwrap();
    let o = weft(&["compile", m, "--hw", "h100-sxm-8", "-o", m]);
    assert!(
        !o.status.success(),
        "compile -o MODEL succeeded and replaced the model with its plan"
    );
    let plan = dir.path().join("p.json");
    let p = plan.to_str().unwrap();
    let o = weft(&["compile", m, "--hw", "h100-sxm-8", "-o", p, "--trace", p]);
    assert!(
        !o.status.success(),
        "compile -o P --trace P succeeded; P holds the trace, not the plan"
    );
}
