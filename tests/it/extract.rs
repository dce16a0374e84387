//! DAG-aware greedy extraction on saturated fixtures: the choice follows the cost (a cost
//! that favours the fused GEMM + collective picks it, one that penalises it does not),
//! is deterministic, is never dearer than the original program, and runs to the
//! original's outputs on random inputs.

use weft::cpu::{RunOptions, Tensors, run};
use weft::ir::stats::node_flops;
use weft::ir::{DimBindings, Graph, Occupancy, Op, TensorType};
use weft::passes::saturate::{self, SaturateOptions};

use crate::worst_relative as worst;

/// A simple cost, µs: one per thousand FLOPs plus one per thousand bytes read and
/// written, the ops fusing a GEMM with a collective scaled by `fused`.
fn flops_bytes(
    fused: f64,
) -> impl Fn(&Op, &[&TensorType], &[&TensorType], &DimBindings) -> Result<f64, String> {
    move |op, inputs, outputs, dims| {
        if matches!(op.occupancy(), Occupancy::View) {
            return Ok(0.0);
        }
        let shapes: Vec<_> = inputs.iter().map(|t| &t.shape).collect();
        let flops = node_flops(op, &shapes, outputs.first().map(|t| &t.shape), dims)
            .map_err(|e| e.to_string())?;
        let mut bytes = 0u64;
        for t in inputs.iter().chain(outputs) {
            bytes += t.size_bytes(dims).map_err(|e| e.to_string())?;
        }
        let t = (flops as f64 + bytes as f64) / 1e3;
        Ok(match op.occupancy() {
            Occupancy::Both(_) => t * fused,
            Occupancy::Source | Occupancy::View | Occupancy::Compute | Occupancy::Comm(_) => t,
        })
    }
}

fn count(g: &Graph, op: &str) -> usize {
    g.nodes().filter(|(_, n)| n.op.name() == op).count()
}

fn tiny_tp2() -> (Graph, Graph) {
    let tiny = crate::load("examples/tiny-llama.json");
    let sharded = weft::shard(&tiny, &"tp=2".parse().unwrap()).unwrap();
    (tiny, sharded)
}

/// The original program against `got` on the same random inputs.
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
fn the_choice_of_fused_gemm_collectives_follows_the_cost() {
    let (tiny, sharded) = tiny_tp2();
    let sat = saturate::saturate(&sharded, &SaturateOptions::default()).unwrap();
    let fused = |g: &Graph| count(g, "matmul_reduce_scatter") + count(g, "all_gather_matmul");
    assert_eq!(fused(&sharded), 0);

    let cheap = saturate::extract(&sat, &sharded, &flops_bytes(0.1)).unwrap();
    assert!(
        fused(&cheap.graph) > 0,
        "{}",
        weft::ir::text::to_text(&cheap.graph)
    );
    assert!(!cheap.kept_original);
    assert!(cheap.cost_us < cheap.original_cost_us);
    same_outputs(&tiny, &cheap.graph, 7);

    let dear = saturate::extract(&sat, &sharded, &flops_bytes(10.0)).unwrap();
    assert_eq!(
        fused(&dear.graph),
        0,
        "{}",
        weft::ir::text::to_text(&dear.graph)
    );
    assert!(dear.cost_us <= dear.original_cost_us);
    same_outputs(&tiny, &dear.graph, 8);
}

#[test]
fn extraction_is_deterministic() {
    let (_, sharded) = tiny_tp2();
    let cost = flops_bytes(0.5);
    let texts: Vec<String> = (0..2)
        .map(|_| {
            let sat = saturate::saturate(&sharded, &SaturateOptions::default()).unwrap();
            let a = saturate::extract(&sat, &sharded, &cost).unwrap();
            let b = saturate::extract(&sat, &sharded, &cost).unwrap();
            let (ta, tb) = (
                weft::ir::text::to_text(&a.graph),
                weft::ir::text::to_text(&b.graph),
            );
            assert_eq!(ta, tb);
            assert_eq!(a.cost_us.to_bits(), b.cost_us.to_bits());
            ta
        })
        .collect();
    assert_eq!(texts[0], texts[1]);
}

#[test]
fn extraction_is_never_dearer_than_the_original_on_the_examples() {
    for (file, mesh) in [
        ("examples/tiny-llama.json", "tp=2"),
        ("examples/tiny-llama.json", "tp=4"),
        ("examples/mixtral-8x7b-moe-layer.json", "tp=2"),
    ] {
        let g = crate::load(file);
        let (raised, _) = weft::to_stage(g, weft::Stage::Raised).unwrap();
        let sharded = weft::shard(&raised, &mesh.parse().unwrap()).unwrap();
        let sat = saturate::saturate(&sharded, &SaturateOptions::default()).unwrap();
        for fused in [0.1, 1.0, 10.0] {
            let x = saturate::extract(&sat, &sharded, &flops_bytes(fused)).unwrap();
            assert!(
                x.cost_us <= x.original_cost_us,
                "{file} {mesh} ×{fused}: {} > {}",
                x.cost_us,
                x.original_cost_us
            );
            assert!(x.cost_us.is_finite() && x.cost_us > 0.0);
            assert_eq!(x.uncosted_count, 0, "{:?}", x.uncosted);
        }
    }
}
