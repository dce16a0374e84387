//! Sizes chosen by the user: figures that stay exact (or say they cannot be represented)
//! and instant for any dim; runs that cannot fit are refused before anything is
//! allocated; progress is reported to the caller's callback and never drawn into pipes.

use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use weft::cpu::{Phase, Progress, RunOptions};
use weft::onnx::proto::{DimensionValue, GraphProto, ModelProto, OperatorSetIdProto};

use crate::onnx::{node, value_info};
use crate::repo;

/// Longest any command here may run: these are the runs that must be instant or refused
/// at once, so a regression (a per-token loop, a run that loads 141 GB of weights) is
/// killed and fails here instead of hanging the test run for minutes.
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs the CLI and how long it took; panics when it runs past [`DEADLINE`].
fn weft(args: &[&str]) -> (Output, Duration) {
    use std::io::Read;
    use std::process::Stdio;
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .current_dir(repo(""))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the weft binary runs");
    // Drain both pipes while waiting, so a chatty child cannot block on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            r.read_to_end(&mut buf).map(|_| buf)
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for weft") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`weft {}` ran past {DEADLINE:?}; killed", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = start.elapsed();
    let stdout = out.join().unwrap().expect("reading weft's stdout");
    let stderr = err.join().unwrap().expect("reading weft's stderr");
    (
        Output {
            status,
            stdout,
            stderr,
        },
        took,
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Fails with exit status 1 (not an abort), quickly, naming the estimate and the limit.
fn assert_refused(args: &[&str], limit: &str) {
    let (o, took) = weft(args);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(took < Duration::from_secs(20), "{args:?} took {took:?}");
    assert!(err.contains("needs at least"), "{err}");
    assert!(err.contains(&format!("the limit is {limit}")), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn check_is_instant_and_exact_for_huge_dims() {
    let (o, took) = weft(&[
        "check",
        "examples/tiny-llama.json",
        "--dim",
        "seq=99999999999",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(took < Duration::from_secs(10), "check took {took:?}");
    // 2 layers · batch 1 · 4 heads · (16 + 16) · 2 FLOPs per visible score over the causal
    // triangle n(n+1)/2, plus rope's 3 FLOPs per q and k element (6 heads · 16): past
    // u64, exact in u128.
    let n = 99_999_999_999u128;
    let attention = 2 * (2 * 4 * 32 * (n * (n + 1) / 2) + 3 * n * 6 * 16);
    assert!(attention > u128::from(u64::MAX));
    let g = weft::load_model(
        &repo("examples/tiny-llama.json"),
        &weft::LoadOptions {
            dims: [("seq".to_owned(), 99_999_999_999)].into(),
        },
    )
    .unwrap();
    let (g, _) = weft::to_stage(g, weft::Stage::Raised).unwrap();
    let s = weft::ir::stats(&g).unwrap();
    assert_eq!(s.flops_by_class["attention"], Some(attention));
    let (o, _) = weft(&[
        "check",
        "examples/tiny-llama.json",
        "--dim",
        "seq=99999999999",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Past u64, serde_json reads the exact integer back as a float.
    assert_eq!(
        v["flops_by_class"]["attention"].as_f64(),
        Some(attention as f64)
    );
}

#[test]
fn runs_that_cannot_fit_are_refused_before_allocating() {
    assert_refused(
        &[
            "run",
            "examples/tiny-llama.json",
            "--dim",
            "seq=99999999999",
        ],
        "",
    );
    // 141 GB of bf16 weights, held as f32: refused at once, not after 95 s of loading
    // (by --max-memory, or by the memory available if that is less).
    assert_refused(
        &["run", "examples/llama3-70b.json", "--max-memory", "64GiB"],
        "",
    );
    let (o, _) = weft(&["run", "examples/tiny-llama.json", "--max-memory", "1GiB"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let (o, _) = weft(&["run", "examples/tiny-llama.json", "--max-memory", "8 GiBs"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a usage error exits 1, like every error"
    );
    assert!(
        text(&o.stderr).contains("unknown unit"),
        "{}",
        text(&o.stderr)
    );
}

/// `x [dims] -> op -> y` as an ONNX file in `dir`.
fn one_op_model(dir: &std::path::Path, op: &str, dims: &[i64]) -> String {
    let dims: Vec<DimensionValue> = dims.iter().map(|&d| DimensionValue::DimValue(d)).collect();
    let m = ModelProto {
        ir_version: 9,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 18,
        }],
        graph: Some(GraphProto {
            node: vec![node(op, "n", &["x"], &["y"], vec![])],
            name: "g".into(),
            input: vec![value_info("x", 1, &dims)],
            output: vec![value_info("y", 1, &[])],
            ..Default::default()
        }),
        ..Default::default()
    };
    let path = dir.join(format!("{op}{}.onnx", dims.len()));
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn hostile_onnx_dims_are_refused_not_allocated() {
    let dir = tempfile::tempdir().unwrap();
    // 1.6 PB of input: refused by the estimate (this used to abort, exit 134).
    let huge = one_op_model(dir.path(), "Relu", &[99_999_999_999, 4096]);
    assert_refused(&["run", &huge], "");
    // 2^80 elements: a size that does not even fit in 64 bits, refused by name.
    // `check` counts it exactly (2^81 FLOPs, in 128 bits); `run` refuses it by name.
    let absurd = one_op_model(dir.path(), "Relu", &[2, 1 << 40, 1 << 40]);
    let (o, _) = weft(&["check", &absurd]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("2,417,851,639,229,258,349,412,352 (2.42 YFLOP)"),
        "{}",
        text(&o.stdout)
    );
    let commands: [&[&str]; 3] = [
        &["run", &absurd],
        // Flatten multiplies dims at import (this used to overflow: a panic in debug builds).
        &[
            "check",
            &one_op_model(dir.path(), "Flatten", &[2, 1 << 40, 1 << 40]),
        ],
        &[
            "run",
            &one_op_model(dir.path(), "Flatten", &[2, 1 << 40, 1 << 40]),
        ],
    ];
    for args in commands {
        let (o, took) = weft(args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(took < Duration::from_secs(20), "took {took:?}");
        assert!(err.contains("does not fit in 64 bits"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // Review of issue 10: the refusal named no value and printed the concrete shape twice
    // (`the element count of [2, …] = [2, …]`).
    let (o, _) = weft(&["run", &absurd]);
    let err = text(&o.stderr);
    assert!(
        err.contains(
            "the element count of [2, 1099511627776, 1099511627776] (value `x`) does not fit"
        ),
        "{err}"
    );
}

#[test]
fn progress_reaches_the_callback_and_never_a_pipe() {
    let g = crate::load("examples/tiny-llama.json");
    let (g, _) = weft::to_stage(g, weft::Stage::Raised).unwrap();
    let events: Arc<Mutex<Vec<(Phase, u64, u64)>>> = Arc::default();
    let sink = Arc::clone(&events);
    let options = RunOptions {
        progress: Some(Progress(Arc::new(move |p, done, total| {
            sink.lock().unwrap().push((p, done, total));
        }))),
        ..RunOptions::default()
    };
    let inputs = weft::inputs::complete_inputs(&g, Vec::new(), 1).unwrap();
    weft::cpu::run(&g, &inputs, &options).unwrap();
    let events = events.lock().unwrap();
    let sources = g
        .nodes()
        .filter(|(_, n)| {
            matches!(
                n.op,
                weft::ir::Op::Weight { .. } | weft::ir::Op::Constant { .. }
            )
        })
        .count() as u64;
    let of = |phase| -> Vec<(u64, u64)> {
        events
            .iter()
            .filter(|e| e.0 == phase)
            .map(|e| (e.1, e.2))
            .collect()
    };
    let weights = of(Phase::Weights);
    assert_eq!(
        weights,
        (1..=sources).map(|d| (d, sources)).collect::<Vec<_>>()
    );
    let nodes = g.num_nodes() as u64;
    assert_eq!(
        of(Phase::Execute),
        (1..=nodes).map(|d| (d, nodes)).collect::<Vec<_>>()
    );
    // Piped (as here), the CLI draws nothing: no carriage returns, escapes or bar text.
    let (o, _) = weft(&["run", "examples/tiny-llama.json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for out in [text(&o.stderr), text(&o.stdout)] {
        assert!(!out.contains('\r') && !out.contains('\u{1b}'), "{out:?}");
        assert!(!out.contains(Phase::Weights.label()), "{out}");
        assert!(!out.contains(Phase::Execute.label()), "{out}");
    }
}

/// On a terminal (a pseudo-terminal from util-linux `script`), `run` draws its bars on
/// stderr. Where `script` is missing the test says so and checks nothing.
#[test]
#[allow(clippy::print_stderr)]
fn progress_is_drawn_on_a_terminal() {
    let bin = env!("CARGO_BIN_EXE_weft");
    let command = format!("{bin} run examples/tiny-llama.json");
    let Ok(o) = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(repo(""))
        .env_remove("RUST_LOG")
        .output()
    else {
        eprintln!("`script` is not installed: the terminal case is not checked here");
        return;
    };
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains(Phase::Weights.label()), "{out:?}");
    assert!(out.contains(Phase::Execute.label()), "{out:?}");
    assert!(out.contains("logits: f32[1, 16, 256]"), "{out:?}");
}

/// Review of issue 10: a mesh with more devices than this process may start threads
/// (`"mesh": "tp=1000000"` in a JSON file: one rank thread each) panicked in
/// `thread::scope`'s spawn and aborted (exit 134). Starting a rank's thread is fallible
/// now: the run fails with exit 1, saying how many ranks it could not start. The address
/// space is capped here (`ulimit -v`) so the limit is reached after a few dozen threads.
#[test]
fn more_ranks_than_threads_is_an_error_not_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("wide.json");
    std::fs::write(
        &model,
        r#"{"weft": 1, "name": "wide", "mesh": "tp=1000000", "nodes": [
  {"name": "x", "op": "input", "attrs": {"dtype": "f32", "shape": [4]}},
  {"name": "y", "op": "relu", "inputs": ["x"]}
], "outputs": ["y"]}"#,
    )
    .unwrap();
    let start = Instant::now();
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 2000000 && exec '{}' run '{}'",
            env!("CARGO_BIN_EXE_weft"),
            model.display()
        ))
        .env_remove("RUST_LOG")
        .output()
        .expect("sh runs");
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot start a thread for rank "), "{err}");
    assert!(err.contains("of 1000000"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(60));
}
