//! CPU executor throughput: `cargo bench --bench cpu_run`.
//!
//! Prints, side by side in one run: the f32 GEMM peak of the `gemm` crate on this machine
//! (the executor's matmul engine, measured directly), then tokens per second and
//! effective GFLOP/s for the bundled tiny Llama and a 1.1B-parameter Llama-style model
//! (Llama-3.2-1B's layers with a 32k vocabulary) with random weights. Effective GFLOP/s
//! counts the model's FLOPs as `weft check` does, divided by the wall time of a forward
//! pass; weight generation is timed separately. `WEFT_BENCH_QUICK=1` skips the 1.1B model.

#![allow(clippy::print_stdout)] // a bench binary reports on stdout

use std::time::{Duration, Instant};

use weft::cpu::{RunOptions, Session, Tensors, random_input};
use weft::ir::{DType, Graph, stats};
use weft::zoo::{LlamaConfig, llama};

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let start = Instant::now();
        let out = f();
        best = best.min(start.elapsed());
        last = Some(out);
    }
    (best, last.expect("at least one run"))
}

/// GFLOP/s of the gemm crate on an n×n×n f32 product, with the given threads.
#[allow(unsafe_code)]
fn gemm_peak(n: usize, threads: usize) -> f64 {
    let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..n * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0f32; n * n];
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let (t, _) = best_of(5, || {
        // SAFETY: a, b and c are n×n row-major buffers of exactly n*n elements; the
        // strides below describe them; c is exclusively borrowed.
        unsafe {
            gemm::gemm(
                n,
                n,
                n,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                n as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        }
    });
    2.0 * (n as f64).powi(3) / t.as_secs_f64() / 1e9
}

fn inputs(g: &Graph, seed: u64) -> Tensors {
    g.inputs()
        .map(|v| {
            (
                g.value(v).name.clone(),
                random_input(g, v, seed).expect("input"),
            )
        })
        .collect()
}

fn bench_model(label: &str, g: &Graph, runs: usize, peak: f64, options: &RunOptions) {
    let s = stats(g).expect("stats");
    let start = Instant::now();
    let session = Session::new(g, options).expect("weights");
    let setup = start.elapsed();
    let x = inputs(g, 7);
    let (t, out) = best_of(runs, || session.run(&x).expect("run"));
    assert!(
        out.iter()
            .all(|(_, t)| t.as_f32().is_none_or(|v| v.iter().all(|x| x.is_finite())))
    );
    let tokens = (g.dims["batch"] * g.dims["seq"]) as f64;
    let gflops = s.flops.expect("FLOPs fit in 128 bits") as f64 / t.as_secs_f64() / 1e9;
    println!(
        "{label:<28} params {:>6.2} M  weights {:>7.2} s  forward {:>9.3} ms  {:>9.1} tokens/s  {:>7.2} GFLOP/s  ({:>4.1}% of GEMM peak)",
        s.params.expect("parameters fit in 128 bits") as f64 / 1e6,
        setup.as_secs_f64(),
        t.as_secs_f64() * 1e3,
        tokens / t.as_secs_f64(),
        gflops,
        100.0 * gflops / peak
    );
}

fn main() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let options = RunOptions {
        threads,
        ..RunOptions::default()
    };
    println!("threads: {threads}");
    let peak_1024 = gemm_peak(1024, threads);
    let peak = gemm_peak(2048, threads).max(peak_1024);
    println!(
        "gemm crate f32 peak: {peak_1024:.2} GFLOP/s at 1024^3, {peak:.2} GFLOP/s best (best of 5)"
    );

    let tiny = llama(&LlamaConfig::tiny()).expect("tiny");
    bench_model("tiny-llama (seq 16)", &tiny, 20, peak, &options);

    if std::env::var_os("WEFT_BENCH_QUICK").is_none() {
        let cfg = LlamaConfig {
            name: "llama-1.1b".into(),
            vocab: 32_000,
            hidden: 2048,
            heads: 32,
            kv_heads: 8,
            ffn: 8192,
            layers: 16,
            dtype: DType::F32,
            batch: 1,
            seq: 128,
            rope_theta: 500_000.0,
            ..LlamaConfig::tiny()
        };
        let g = llama(&cfg).expect("1.1b");
        bench_model("llama-1.1b (seq 128)", &g, 3, peak, &options);
    }
}
