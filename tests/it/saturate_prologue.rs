//! `norm-matmul-prologue-fusion`: proven by execution (the rewritten program against the
//! original, bit for bit: the fused kernel runs the norm's kernel then the GEMM's), and
//! the cost model decides whether the fused GEMM is worth it where the norm also feeds
//! something else.

use std::path::Path;

use weft::cpu::{RunOptions, Tensors, run};
use weft::ir::Graph;
use weft::passes::saturate::{self, Guards, SaturateOptions};

const RULE: &str = "norm-matmul-prologue-fusion";

fn only_this_rule() -> SaturateOptions {
    SaturateOptions {
        rules: vec![RULE.to_owned()],
        guards: Guards::default(),
        ..SaturateOptions::default()
    }
}

fn count(g: &Graph, op: &str) -> usize {
    g.nodes().filter(|(_, n)| n.op.name() == op).count()
}

/// Saturates with the rule, runs the program using its results wherever it applied
/// against the original on random inputs (bit for bit), and returns that program.
fn rewritten_and_checked(graph: &Graph, seed: u64) -> Graph {
    let sat = saturate::saturate(graph, &only_this_rule()).unwrap();
    assert!(sat.report.unsound.is_empty(), "{:?}", sat.report.unsound);
    assert!(sat.report.not_fired.is_empty(), "{RULE} never applied");
    let rewritten = saturate::extract_rewritten(&sat, graph).unwrap();
    let inputs: Tensors = weft::inputs::complete_inputs(graph, Vec::new(), seed).unwrap();
    let o = RunOptions::default();
    let want = run(graph, &inputs, &o).unwrap();
    let got = run(&rewritten, &inputs, &o).unwrap();
    crate::compare::assert_bits_eq(&want, &got);
    rewritten
}

/// `layer_norm(x, g, c)` feeding a projection, and, with `also_residual`, an add too.
fn layer_norm_graph(also_residual: bool) -> Graph {
    let (out, extra) = if also_residual {
        ("r", r#",{"name": "r", "op": "add", "inputs": ["y", "n"]}"#)
    } else {
        ("y", "")
    };
    let src = format!(
        r#"{{"weft": 1, "name": "ln", "nodes": [
  {{"name": "x", "op": "input", "attrs": {{"dtype": "bf16", "shape": [512, 1024]}}}},
  {{"name": "g", "op": "weight", "attrs": {{"dtype": "bf16", "shape": [1024], "init": {{"normal": {{"seed": 2, "mean": 1, "std": 0.1}}}}}}}},
  {{"name": "c", "op": "weight", "attrs": {{"dtype": "bf16", "shape": [1024], "init": {{"normal": {{"seed": 3, "std": 0.1}}}}}}}},
  {{"name": "w", "op": "weight", "attrs": {{"dtype": "bf16", "shape": [1024, 1024], "init": {{"normal": {{"seed": 4, "std": 0.03}}}}}}}},
  {{"name": "n", "op": "layer_norm", "inputs": ["x", "g", "c"], "attrs": {{"eps": 1e-6}}}},
  {{"name": "y", "op": "matmul", "inputs": ["n", "w"]}}{extra}
], "outputs": ["{out}"]}}"#
    );
    weft::json::parse_str(&src, Path::new("ln.json")).unwrap_or_else(|e| panic!("{e:?}"))
}

#[test]
fn rms_norms_fuse_into_the_projections_of_a_sharded_llama() {
    // Every projection a norm feeds (q, k, v; gate, up; the LM head) at tp=2: the
    // column-split weights keep the fused GEMM's result split as the product's was.
    let tiny = crate::load("examples/tiny-llama.json");
    let sharded = weft::shard(&tiny, &"tp=2".parse().unwrap()).unwrap();
    let before = count(&sharded, "rms_norm");
    let rewritten = rewritten_and_checked(&sharded, 5);
    assert!(count(&rewritten, "norm_matmul") >= before, "{before} norms");
    // Every norm fed only GEMMs, so none runs on its own any more.
    assert_eq!(count(&rewritten, "rms_norm"), 0);
    assert!(count(&rewritten, "matmul") < count(&sharded, "matmul"));
}

#[test]
fn layer_norm_with_a_bias_fuses_and_the_text_form_names_it() {
    let g = layer_norm_graph(false);
    let rewritten = rewritten_and_checked(&g, 6);
    assert_eq!(count(&rewritten, "norm_matmul"), 1);
    assert_eq!(count(&rewritten, "layer_norm"), 0);
    let text = weft::ir::text::to_text(&rewritten);
    assert!(
        text.contains("norm_matmul(%x, %w, %g, %c) {norm=layer_norm, eps=1e-6}"),
        "{text}"
    );
    // The JSON form reads back to the same program.
    let json = weft::json::to_json(&rewritten);
    let back = weft::json::parse_str(&json, Path::new("back.json")).unwrap();
    assert_eq!(back, rewritten);
}

#[test]
fn the_cost_model_chooses_the_prologue_only_where_it_saves_the_round_trip() {
    // Alone: the fused GEMM saves the normed tensor's write and read back and a launch.
    let g = layer_norm_graph(false);
    let sat = saturate::saturate(&g, &only_this_rule()).unwrap();
    let chosen = crate::saturate::extract_h100(&sat, &g).unwrap();
    assert_eq!(
        count(&chosen, "norm_matmul"),
        1,
        "{}",
        weft::ir::text::to_text(&chosen)
    );
    // With the norm also feeding the residual add, it runs anyway; the fused GEMM would
    // add its statistics pass to it, so the extraction keeps the plain GEMM.
    let g = layer_norm_graph(true);
    let sat = saturate::saturate(&g, &only_this_rule()).unwrap();
    assert!(sat.report.not_fired.is_empty());
    let chosen = crate::saturate::extract_h100(&sat, &g).unwrap();
    assert_eq!(
        count(&chosen, "norm_matmul"),
        0,
        "{}",
        weft::ir::text::to_text(&chosen)
    );
    assert_eq!(count(&chosen, "layer_norm"), 1);
    // Both programs still compute the same thing where the rule's result is used.
    rewritten_and_checked(&g, 7);
}
