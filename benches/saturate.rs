//! Equality-saturation scale: `cargo bench --bench saturate`.
//!
//! Llama-3-70B (hidden 8192, 64 heads, 8 KV heads, bf16, 2048 tokens) with 1, 8 and 80
//! layers, sharded at `tp=8`, then saturated with every rule and extracted. Prints per
//! size: graph nodes, sharding time, saturation time, e-graph nodes and classes, stop
//! reasons, extraction time, and the process's peak resident memory after the run
//! (`VmHWM` from /proc/self/status, which only grows: read it size by size, smallest
//! first). Growth is linear when time and e-nodes per layer stay flat.

#![allow(clippy::print_stdout)] // a bench binary reports on stdout

use std::time::Instant;

use weft::passes::saturate::{self, SaturateOptions};
use weft::zoo::{LlamaConfig, llama};

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let mesh = "tp=8".parse().expect("a valid mesh");
    let profile = weft::hardware::Profile::builtin("h100-sxm-8").expect("a built-in profile");
    let cost = weft::passes::cost::CostModel::new(&profile, &mesh).expect("tp=8 fits one node");
    println!(
        "{:>6} {:>7} {:>9} {:>11} {:>9} {:>9} {:>9} {:>10} {:>8}  stop reasons",
        "layers",
        "nodes",
        "shard ms",
        "saturate ms",
        "e-nodes",
        "classes",
        "extract",
        "ms/layer",
        "peak MB"
    );
    for layers in [1u64, 8, 80] {
        let cfg = LlamaConfig {
            layers,
            ..LlamaConfig::llama3_70b()
        };
        let graph = llama(&cfg).expect("the builder makes a valid graph");
        let start = Instant::now();
        let sharded = weft::shard(&graph, &mesh).expect("llama3-70b shards at tp=8");
        let shard_ms = start.elapsed().as_secs_f64() * 1e3;
        let start = Instant::now();
        let sat = saturate::saturate(&sharded, &SaturateOptions::default()).expect("saturates");
        let sat_ms = start.elapsed().as_secs_f64() * 1e3;
        let start = Instant::now();
        let extracted = saturate::extract(&sat, &sharded, &cost)
            .expect("extracts")
            .graph;
        let extract_ms = start.elapsed().as_secs_f64() * 1e3;
        let stops: Vec<String> = sat
            .report
            .phases
            .iter()
            .map(|p| format!("{}: {}", p.ruleset, p.stop_reason))
            .collect();
        println!(
            "{:>6} {:>7} {:>9.1} {:>11.1} {:>9} {:>9} {:>9.1} {:>10.2} {:>8.0}  {}",
            layers,
            sharded.num_nodes(),
            shard_ms,
            sat_ms,
            sat.report.nodes,
            sat.report.classes,
            extract_ms,
            sat_ms / layers as f64,
            peak_rss_mb().unwrap_or(f64::NAN),
            stops.join("; ")
        );
        assert!(extracted.num_nodes() > 0);
    }
}
