//! Layer segmentation (`ir/src/layers.rs`) on the bundled models, the ONNX fixtures and
//! graphs at every stage: parsed, raised, sharded and extracted after saturation.

use std::time::Instant;

use weft::ir::{Graph, NodeId, Occupancy, Op, segment_layers};
use weft::passes::saturate::{self, SaturateOptions};

use crate::{load, repo};

fn raised(path: &str) -> Graph {
    let g = weft::load_model(&repo(path), &weft::LoadOptions::default()).unwrap();
    weft::to_stage(g, weft::Stage::Raised).unwrap().0
}

/// The computing nodes (not inputs, weights or constants).
fn computing(g: &Graph) -> impl Iterator<Item = (NodeId, &weft::ir::Node)> {
    g.nodes()
        .filter(|(_, n)| !matches!(n.op.occupancy(), Occupancy::Source))
}

/// The layer a bundled example's node name gives: `layers.K.…` is layer K; the embedding,
/// the rotary cache, the final norm and the logits are in none.
fn named_layer(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("layers.")?;
    rest.split('.').next()?.parse().ok()
}

/// Every computing node of `g` is in the layer its name says; returns the count.
fn assert_layers_follow_names(g: &Graph, what: &str) -> u32 {
    let layers = segment_layers(g);
    for (id, n) in computing(g) {
        assert_eq!(
            layers.of(id),
            named_layer(&n.name),
            "{what}: `{}` ({})",
            n.name,
            n.op.name()
        );
    }
    layers.count()
}

#[test]
fn llama3_70b_has_80_layers_and_each_node_is_in_its_named_layer() {
    let g = load("examples/llama3-70b.json");
    let started = Instant::now();
    let layers = segment_layers(&g);
    let took = started.elapsed();
    assert_eq!(layers.count(), 80);
    // Linear time: 80 layers (2649 nodes) take ~12 ms in a debug build; this bound only
    // catches a quadratic regression on a busy machine.
    assert!(took.as_millis() < 1000, "{took:?}");
    assert_eq!(assert_layers_follow_names(&g, "llama3-70b"), 80);
    // Every matmul of layer k is in layer k, and every layer has the same 7.
    for k in 0..80 {
        let matmuls = layers
            .nodes_of(k)
            .filter(|&id| matches!(g.node(id).op, Op::MatMul { .. }))
            .count();
        assert_eq!(matmuls, 7, "layer {k}");
    }
}

#[test]
fn sharded_collectives_belong_to_the_layer_they_reduce() {
    let g = load("examples/llama3-70b.json");
    let sharded = weft::shard(&g, &"tp=8".parse().unwrap()).unwrap();
    assert_eq!(assert_layers_follow_names(&sharded, "llama3-70b tp=8"), 80);
    let layers = segment_layers(&sharded);
    let per_layer: Vec<usize> = (0..80)
        .map(|k| {
            layers
                .nodes_of(k)
                .filter(|&id| sharded.node(id).op.occupancy().communicates())
                .count()
        })
        .collect();
    assert!(per_layer.iter().all(|&c| c == 2), "{per_layer:?}");
}

#[test]
fn tiny_llama_at_every_stage() {
    let g = load("examples/tiny-llama.json");
    assert_eq!(assert_layers_follow_names(&g, "tiny-llama"), 2);
    for spec in [None, Some("tp=2"), Some("tp=4")] {
        let graph = match spec {
            Some(s) => weft::shard(&g, &s.parse().unwrap()).unwrap(),
            None => g.clone(),
        };
        let at = spec.unwrap_or("no mesh");
        assert_eq!(assert_layers_follow_names(&graph, at), 2);
        // After saturation: fused GEMM + collective ops and token-split halves inside
        // the layers; every attention still marks one layer.
        let sat = saturate::saturate(&graph, &SaturateOptions::default()).unwrap();
        // With every rule, the rewritten program reads layer k's gathered residual into
        // layer k + 1's norm-fused projections (`norm_matmul`) and re-sums the last
        // residual from gathered partials: the segmentation's fallback (ir/src/layers.rs,
        // step 5) then puts that gather in layer k + 1 and the head in the last layer.
        // Its layers are counted; names are followed without that rule.
        let without_prologue = SaturateOptions {
            rules: saturate::RULES
                .iter()
                .map(|r| r.name.to_owned())
                .filter(|n| n != "norm-matmul-prologue-fusion")
                .collect(),
            ..SaturateOptions::default()
        };
        let sat_np = saturate::saturate(&graph, &without_prologue).unwrap();
        let all = saturate::extract_rewritten(&sat, &graph).unwrap();
        assert_eq!(segment_layers(&all).count(), 2, "{at}, every rule");
        for (kind, program) in [
            (
                "cheapest",
                crate::saturate::extract_h100(&sat, &graph).unwrap(),
            ),
            (
                "rewritten",
                saturate::extract_rewritten(&sat_np, &graph).unwrap(),
            ),
        ] {
            let layers = segment_layers(&program);
            // An extraction may re-sum residuals from the earlier layers' partial sums
            // at a mesh (`ffn_residual = embed + o_proj + down`, as the former tree
            // extraction did), so no single node need separate the layers; attention
            // depth does.
            assert_eq!(layers.count(), 2, "{at}, {kind}");
            // Rebuilt nodes keep the names of the values they compute where they have
            // one (a token split's halves get fresh names): those follow their names.
            for (id, n) in computing(&program) {
                let named = named_layer(&n.name);
                if named.is_some() || ["embed", "final_norm", "logits"].contains(&n.name.as_str()) {
                    assert_eq!(layers.of(id), named, "{at}, {kind}: `{}`", n.name);
                }
            }
        }
    }
}

#[test]
fn a_lone_moe_layer_is_one_layer() {
    let g = load("examples/mixtral-8x7b-moe-layer.json");
    let layers = segment_layers(&g);
    assert_eq!(layers.count(), 1);
    // No embedding or head: every computing node is the layer's.
    for (id, n) in computing(&g) {
        assert_eq!(layers.of(id), Some(0), "`{}` ({})", n.name, n.op.name());
    }
    let sharded = weft::shard(&g, &"tp=8".parse().unwrap()).unwrap();
    assert_eq!(segment_layers(&sharded).count(), 1);
}

/// Per attention (in arena order), its layer; and the layers of the first and last
/// computing nodes.
fn attention_layers(g: &Graph) -> (Vec<Option<u32>>, Option<u32>, Option<u32>) {
    let layers = segment_layers(g);
    let marks = computing(g)
        .filter(|(_, n)| matches!(n.op, Op::Attention { .. } | Op::Softmax { .. }))
        .map(|(id, _)| layers.of(id))
        .collect();
    let mut all = computing(g).map(|(id, _)| layers.of(id));
    let first = all.next().flatten();
    (marks, first, all.last().flatten())
}

#[test]
fn onnx_fixtures_have_their_two_layers_raised_or_spelled_out() {
    // scripts/export_hf_fixtures.py exports each model with two layers.
    for fixture in ["llama-gqa", "qwen2", "mixtral", "gpt2", "bert"] {
        let path = format!("tests/onnx-models/{fixture}/model.onnx");
        let parsed = load(&path);
        for (stage, g) in [("parsed", parsed), ("raised", raised(&path))] {
            let what = format!("{fixture} ({stage})");
            let layers = segment_layers(&g);
            assert_eq!(layers.count(), 2, "{what}");
            let (marks, first, last) = attention_layers(&g);
            if stage == "raised" || matches!(fixture, "gpt2" | "bert") {
                // One attention per layer (spelled out in GPT-2's and BERT's parsed form;
                // a Mixtral router's softmax is not one).
                assert_eq!(
                    marks.iter().filter(|m| m.is_some()).count(),
                    2,
                    "{what}: {marks:?}"
                );
            }
            assert_eq!(first, None, "{what}: the embedding is in no layer");
            if fixture != "bert" {
                assert_eq!(last, None, "{what}: the logits are in no layer");
            }
            // Both layers hold the same number of nodes.
            let sizes: Vec<usize> = (0..2).map(|k| layers.nodes_of(k).count()).collect();
            assert_eq!(sizes[0], sizes[1], "{what}");
        }
        let sharded = weft::shard(&raised(&path), &"tp=2".parse().unwrap()).unwrap();
        assert_eq!(segment_layers(&sharded).count(), 2, "{fixture} at tp=2");
        // After saturation and extraction (fused collectives, token-split halves).
        let sat = saturate::saturate(&sharded, &SaturateOptions::default()).unwrap();
        for program in [
            crate::saturate::extract_h100(&sat, &sharded).unwrap(),
            saturate::extract_rewritten(&sat, &sharded).unwrap(),
        ] {
            let layers = segment_layers(&program);
            assert_eq!(layers.count(), 2, "{fixture} at tp=2, extracted");
            let (marks, first, _) = attention_layers(&program);
            assert_eq!(first, None, "{fixture} at tp=2, extracted");
            assert!(
                marks.contains(&Some(0)) && marks.contains(&Some(1)),
                "{fixture} at tp=2, extracted: {marks:?}"
            );
        }
    }
}

#[test]
fn graphs_without_attention_have_no_layers() {
    // The MLP fixture ends in a softmax over its logits: not attention.
    let g = raised("tests/onnx-models/mlp/model.onnx");
    assert!(g.nodes().any(|(_, n)| matches!(n.op, Op::Softmax { .. })));
    let layers = segment_layers(&g);
    assert_eq!(layers.count(), 0);
    assert!(g.nodes().all(|(id, _)| layers.of(id).is_none()));
    // An empty graph and one of sources only.
    assert_eq!(segment_layers(&Graph::new("empty")).count(), 0);
    let only = weft::json::parse_str(
        r#"{"weft": 1, "name": "x", "nodes": [
  {"name": "x", "op": "input", "attrs": {"dtype": "f32", "shape": [2, 3]}}
], "outputs": ["x"]}"#,
        std::path::Path::new("only.json"),
    )
    .unwrap();
    assert_eq!(segment_layers(&only).count(), 0);
}
