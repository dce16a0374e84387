//! Saturation's phases repeated in rounds: the halves the token-split rules make get the
//! collective and fusion rules in the next round (each half's reduction fused with its
//! GEMM), the rounds stop at a fixpoint, and the program that uses the halves' fused
//! kernels runs and keeps the original's outputs.

use weft::cpu::{RunOptions, Tensors, run};
use weft::ir::{Graph, Op};
use weft::passes::saturate::{self, Head, SaturateOptions, Saturated, WNode, egg};
use weft::zoo::{LlamaConfig, llama};

use crate::worst_relative as worst;

/// A 2-layer Llama at tp=2 with 32 tokens: a half (16 rows) reduce-scatters into 8-row
/// pieces, the smallest the default guards allow.
fn llama_tp2() -> (Graph, Graph) {
    let cfg = LlamaConfig {
        seq: 32,
        ..LlamaConfig::tiny()
    };
    let graph = llama(&cfg).unwrap();
    let sharded = weft::shard(&graph, &"tp=2".parse().unwrap()).unwrap();
    (graph, sharded)
}

fn op_of<'a>(sat: &'a Saturated, n: &WNode) -> Option<&'a Op> {
    match n.head {
        Head::Op(i) => Some(sat.egraph.analysis.ops.get(i)),
        Head::Proj(_) | Head::Root => None,
    }
}

/// Whether the class holds a row slice: a token-split half.
fn is_half(sat: &Saturated, class: egg::Id) -> bool {
    sat.egraph[class]
        .nodes
        .iter()
        .any(|n| matches!(op_of(sat, n), Some(Op::Slice { .. })))
}

/// The fused GEMM + reduce-scatter e-nodes whose rows are a token-split half.
fn fused_halves(sat: &Saturated) -> usize {
    sat.egraph
        .classes()
        .flat_map(|c| &c.nodes)
        .filter(|n| matches!(op_of(sat, n), Some(Op::MatMulReduceScatter { .. })))
        .filter(|n| is_half(sat, n.children[0]))
        .count()
}

#[test]
fn token_split_halves_get_gemm_collective_fusion_in_the_next_round() {
    let (graph, sharded) = llama_tp2();
    // One round, as before: the halves never meet the fusion rules.
    let once = saturate::saturate(
        &sharded,
        &SaturateOptions {
            max_rounds: 1,
            ..SaturateOptions::default()
        },
    )
    .unwrap();
    assert_eq!(fused_halves(&once), 0);
    assert_eq!(once.report.rounds.rounds, 1);
    assert_eq!(once.report.rounds.stop_reason, "round limit (1)");

    let sat = saturate::saturate(&sharded, &SaturateOptions::default()).unwrap();
    assert!(sat.report.unsound.is_empty(), "{:?}", sat.report.unsound);
    // Two halves per partial GEMM (o_proj and down_proj in each of two layers).
    assert!(fused_halves(&sat) >= 8, "{}", fused_halves(&sat));
    // The rounds stopped because a round added nothing, and every phase of every round
    // is reported with what stopped it.
    let r = &sat.report.rounds;
    assert_eq!(r.stop_reason, "fixpoint", "{:#?}", sat.report);
    assert!(r.rounds >= 2);
    assert_eq!(sat.report.phases.len(), 3 * r.rounds);
    for p in &sat.report.phases {
        assert_eq!(p.stop_reason, "saturated", "{p:?}");
    }
    let fused_in_round_2: usize = sat
        .report
        .phases
        .iter()
        .filter(|p| p.round == 2)
        .flat_map(|p| &p.rules)
        .filter(|s| s.name == "gemm-reduce-scatter-fusion")
        .map(|s| s.applied)
        .sum();
    assert!(fused_in_round_2 > 0, "{:#?}", sat.report);

    // The program that uses every rewritten form runs and keeps the outputs.
    let rewritten = saturate::extract_rewritten(&sat, &sharded).unwrap();
    same_outputs(&graph, &rewritten);
    // So does one that takes the halves' fused kernels: a cost that makes every
    // reduction dear except a fused GEMM + reduce-scatter over a half's rows.
    let halves = saturate::extract_with(&sat, &sharded, PreferFusedHalves { sat: &sat }).unwrap();
    let fused_half_nodes = halves
        .nodes()
        .filter(|(_, n)| matches!(n.op, Op::MatMulReduceScatter { .. }))
        .filter(|(_, n)| {
            let rows = halves.value(n.inputs[0]).producer;
            matches!(halves.node(rows).op, Op::Slice { .. })
        })
        .count();
    // Four row-parallel GEMMs (o_proj and down_proj of 2 layers), each in two halves; the
    // token-split chains give some halves other forms the cost may prefer, so at least
    // half of them.
    assert!(
        (4..=8).contains(&fused_half_nodes),
        "{fused_half_nodes}: {}",
        weft::ir::text::to_text(&halves)
    );
    same_outputs(&graph, &halves);
}

/// The original and `got` on the same random inputs, within the rewrite tests' tolerance
/// (a GEMM over half the rows may block its sums differently).
fn same_outputs(original: &Graph, got: &Graph) {
    let inputs: Tensors = weft::inputs::complete_inputs(original, Vec::new(), 7).unwrap();
    let o = RunOptions::default();
    let err = worst(
        &run(original, &inputs, &o).unwrap(),
        &run(got, &inputs, &o).unwrap(),
    );
    assert!(err <= 1e-5, "{err}");
}

/// Depth (one per node, the dearest child's plus one), with 100 more for a reduction
/// that is not a GEMM fused with the reduce-scatter of a token-split half.
struct PreferFusedHalves<'a> {
    sat: &'a Saturated,
}

impl egg::CostFunction<WNode> for PreferFusedHalves<'_> {
    type Cost = f64;

    fn cost<C>(&mut self, enode: &WNode, mut costs: C) -> f64
    where
        C: FnMut(egg::Id) -> f64,
    {
        let own = match op_of(self.sat, enode) {
            Some(
                Op::AllReduce { .. }
                | Op::ReduceScatter { .. }
                | Op::ReduceScatterAddNormAllGather { .. },
            ) => 100.0,
            Some(Op::MatMulReduceScatter { .. }) if !is_half(self.sat, enode.children[0]) => 100.0,
            _ => 1.0,
        };
        own + enode
            .children
            .iter()
            .fold(0.0, |m: f64, &c| m.max(costs(c)))
    }
}
