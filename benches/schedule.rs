//! Scheduler scale: `cargo bench --bench schedule`.
//!
//! Llama-3-70B (hidden 8192, 64 heads, 8 KV heads, bf16, 2048 tokens) with 8, 80 and 160
//! layers, sharded at `tp=8` and scheduled on every rank (one compute and one
//! communication stream) with the memory plan. Costs come from `FixedRates` with H100
//! SXM figures (cost-model.md: 989 TFLOPS BF16, 2765 GB/s achievable HBM, 370 GB/s ring
//! bus bandwidth, 1 µs / 5 µs launches, 18.9% overlap slowdown), so the bench times the
//! scheduler, not the cost model. Prints per size: program nodes, tasks per rank, events
//! per rank, the scheduling time and time per layer, the predicted step, and the
//! process's peak resident memory after the run (`VmHWM`, which only grows: sizes run
//! smallest first). Growth is linear when ms/layer stays flat.

#![allow(clippy::print_stdout)] // a bench binary reports on stdout

use std::time::Instant;

use weft::passes::schedule::{FixedRates, ScheduleOptions, schedule};
use weft::zoo::{LlamaConfig, llama};

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let mesh = "tp=8".parse().expect("a valid mesh");
    let costs = FixedRates {
        flops_per_us: 989e12 / 1e6,
        hbm_bytes_per_us: 2765e9 / 1e6,
        link_bytes_per_us: 370e9 / 1e6,
        compute_launch_us: 1.0,
        comm_launch_us: 5.0,
        comm_slowdown: 1.189,
    };
    println!(
        "{:>6} {:>7} {:>7} {:>7} {:>11} {:>10} {:>13} {:>8}",
        "layers", "nodes", "tasks", "events", "schedule ms", "ms/layer", "predicted ms", "peak MB"
    );
    for layers in [8u64, 80, 160] {
        let cfg = LlamaConfig {
            layers,
            ..LlamaConfig::llama3_70b()
        };
        let graph = llama(&cfg).expect("the builder makes a valid graph");
        let sharded = weft::shard(&graph, &mesh).expect("llama3-70b shards at tp=8");
        let start = Instant::now();
        let s = schedule(&sharded, &costs, &ScheduleOptions::default()).expect("schedules");
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let rank = &s.ranks[0];
        let events = rank.tasks.iter().filter(|t| t.record.is_some()).count();
        println!(
            "{:>6} {:>7} {:>7} {:>7} {:>11.1} {:>10.3} {:>13.2} {:>8.0}",
            layers,
            sharded.num_nodes(),
            rank.tasks.len(),
            events,
            ms,
            ms / layers as f64,
            s.prediction.predicted_us / 1e3,
            peak_rss_mb().unwrap_or(f64::NAN),
        );
        assert_eq!(s.ranks.len(), 8);
    }
}
