//! The exported tiny Llama on Weft's CPU executor and on onnxruntime, side by side:
//! `cargo bench --bench onnx_vs_ort` (needs `pip install onnxruntime numpy` for the
//! onnxruntime half; without it, only Weft's figures are printed).
//!
//! Both run the same model (`tests/onnx-models/llama-gqa`, batch 1, 8 tokens) on the
//! same token ids with the same thread count; each figure is the median of 300 forward
//! passes after 30 warm-up passes, weights already loaded. Weft runs the raised graph.

#![allow(clippy::print_stdout)] // a bench binary reports on stdout

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use weft::cpu::{RunOptions, Session, Tensors};

const RUNS: usize = 300;
const WARMUP: usize = 30;

fn median_ms(mut f: impl FnMut()) -> f64 {
    for _ in 0..WARMUP {
        f();
    }
    let mut times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[RUNS / 2]
}

const ORT_SCRIPT: &str = r#"
import sys, time
import numpy as np, onnxruntime as ort
model, ids, threads, runs, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
feed = {"input_ids": np.load(ids)}
for _ in range(warmup):
    sess.run(None, feed)
times = []
for _ in range(runs):
    t = time.perf_counter(); sess.run(None, feed); times.append((time.perf_counter() - t) * 1e3)
times.sort()
print(times[runs // 2])
"#;

fn ort_median_ms(model: &Path, ids: &Path, threads: usize) -> Result<f64, String> {
    let out = Command::new("python3")
        .args(["-c", ORT_SCRIPT])
        .arg(model)
        .arg(ids)
        .args([threads.to_string(), RUNS.to_string(), WARMUP.to_string()])
        .output()
        .map_err(|e| format!("cannot start python3: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().last().unwrap_or("python3 failed").to_owned());
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("unexpected output from the onnxruntime script: {e}"))
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/onnx-models/llama-gqa");
    let (model, ids) = (dir.join("model.onnx"), dir.join("input_ids.npy"));
    let graph = weft::load_model(&model, &weft::LoadOptions::default()).expect("model");
    let (graph, _) = weft::to_stage(graph, weft::Stage::Raised).expect("raise");
    let tokens = weft::tensor_io::read_tensor_file(&ids)
        .expect("ids")
        .remove(0)
        .1;
    let feed: Tensors = [("input_ids".to_owned(), tokens)].into();
    println!("model: tests/onnx-models/llama-gqa (batch 1, 8 tokens), median of {RUNS} runs");
    let max_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for threads in [1, max_threads] {
        let options = RunOptions {
            threads,
            ..RunOptions::default()
        };
        let session = Session::new(&graph, &options).expect("session");
        let weft_ms = median_ms(|| {
            session.run(&feed).expect("run");
        });
        match ort_median_ms(&model, &ids, threads) {
            Ok(ort_ms) => println!(
                "threads {threads}: weft {weft_ms:.4} ms, onnxruntime {ort_ms:.4} ms, weft/onnxruntime = {:.2}",
                weft_ms / ort_ms
            ),
            Err(e) => {
                println!("threads {threads}: weft {weft_ms:.4} ms, onnxruntime not measured ({e})")
            }
        }
        if max_threads == 1 {
            break;
        }
    }
}
