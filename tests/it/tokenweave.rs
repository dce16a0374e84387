//! `tokenweave-fused-rs-norm-ag` proven by execution: on Llama models the pattern the
//! collective rules leave after each all-reduce, residual add and RMSNorm becomes
//! TokenWeave's fused kernel, and the program that uses it wherever it applied runs on
//! simulated ranks and keeps the single-device outputs (relative error ≤ 1e-5, the
//! rewrite tests' tolerance for programs whose sums are grouped differently).

use weft::cpu::{RunOptions, Tensors, run};
use weft::ir::{Graph, Op};
use weft::passes::saturate::{self, SaturateOptions};
use weft::zoo::{LlamaConfig, llama};

use crate::worst_relative as worst;

const RULE: &str = "tokenweave-fused-rs-norm-ag";

fn fused(g: &Graph) -> usize {
    g.nodes()
        .filter(|(_, n)| matches!(n.op, Op::ReduceScatterAddNormAllGather { .. }))
        .count()
}

fn applied(report: &saturate::SaturationReport) -> usize {
    report
        .phases
        .iter()
        .flat_map(|p| &p.rules)
        .filter(|r| r.name == RULE)
        .map(|r| r.applied)
        .sum()
}

fn same_outputs(original: &Graph, got: &Graph, seed: u64) {
    let inputs: Tensors = weft::inputs::complete_inputs(original, Vec::new(), seed).unwrap();
    let o = RunOptions::default();
    let err = worst(
        &run(original, &inputs, &o).unwrap(),
        &run(got, &inputs, &o).unwrap(),
    );
    assert!(err <= 1e-5, "{err}");
}

#[test]
fn the_fused_kernel_replaces_reduce_scatter_add_norm_all_gather_and_keeps_the_outputs() {
    for (mesh, seq) in [("tp=2", 16), ("tp=4", 32)] {
        let cfg = LlamaConfig {
            seq,
            ..LlamaConfig::tiny()
        };
        let graph = llama(&cfg).unwrap();
        let sharded = weft::shard(&graph, &mesh.parse().unwrap()).unwrap();
        // The rule with the collective rules that make its pattern, and all rules.
        let needed = [
            "all-reduce-to-reduce-scatter-all-gather",
            "elementwise-onto-shard",
            "slice-of-gather",
            "norm-onto-shard",
            RULE,
        ];
        for (options, at_least) in [
            (
                SaturateOptions {
                    rules: needed.iter().map(|r| r.to_string()).collect(),
                    ..SaturateOptions::default()
                },
                4,
            ),
            // With every rule the rewritten forms compete (split halves, fused GEMMs):
            // the rule still applies, and whatever is extracted keeps the outputs.
            (SaturateOptions::default(), 0),
        ] {
            let sat = saturate::saturate(&sharded, &options).unwrap();
            assert!(sat.report.unsound.is_empty(), "{:?}", sat.report.unsound);
            assert!(
                sat.report.not_fired.is_empty(),
                "{:?}",
                sat.report.not_fired
            );
            // Two layers, two norms after an all-reduce each (the final norm included).
            assert!(applied(&sat.report) >= 4, "{mesh}: {:#?}", sat.report);
            let rewritten = saturate::extract_rewritten(&sat, &sharded).unwrap();
            assert!(
                fused(&rewritten) >= at_least,
                "{mesh}: {}",
                fused(&rewritten)
            );
            same_outputs(&graph, &rewritten, 11);
        }
    }
}

/// Under the cost model of an H100 node, on Llama-3-70B (2048 tokens, two layers, tp=8:
/// 32 MiB all-reduces, where NVLS is available), the fused kernel is priced (nothing is
/// left uncosted) and extraction takes it where it pays. The greedy DAG extraction does
/// not find the program that chains every kernel's residual output into the next one
/// (that needs every layer switched at once: one layer alone would have to gather its
/// residual back for the next layer's whole add), so only the norms whose residual is
/// not read on are fused today.
#[test]
fn the_cost_model_prices_and_chooses_the_fused_kernel() {
    let cfg = LlamaConfig {
        layers: 2,
        ..LlamaConfig::llama3_70b()
    };
    let graph = llama(&cfg).unwrap();
    let sharded = weft::shard(&graph, &"tp=8".parse().unwrap()).unwrap();
    let sat = saturate::saturate(&sharded, &SaturateOptions::default()).unwrap();
    let profile = weft::hardware::Profile::builtin("h100-sxm-8").unwrap();
    let cost = weft::passes::cost::CostModel::new(&profile, &sharded.mesh).unwrap();
    let x = saturate::extract(&sat, &sharded, &cost).unwrap();
    assert!(
        x.cost_us < x.original_cost_us,
        "{} µs, original {} µs",
        x.cost_us,
        x.original_cost_us
    );
    let chosen = x.graph;
    let census = |g: &Graph| {
        let mut m = std::collections::BTreeMap::<&str, usize>::new();
        for (_, n) in g.nodes() {
            *m.entry(n.op.name()).or_default() += 1;
        }
        m
    };
    assert!(x.uncosted.is_empty(), "{:?}", x.uncosted);
    assert!(fused(&chosen) >= 1, "{:?}", census(&chosen));
}

#[test]
fn the_rule_is_listed() {
    let rule = saturate::RULES.iter().find(|r| r.name == RULE).unwrap();
    assert!(rule.exact);
    assert!(rule.paper.contains("TokenWeave"));
}
