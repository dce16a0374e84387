//! The bundled examples: each verifies, reports the parameter counts computed by hand
//! from the published dimensions, matches its generator, and has a text snapshot.

use weft::ir::{stats, text::to_text};

use crate::{load, repo};

/// Parameters of one Llama-style layer, from the dimensions alone.
fn llama_layer_params(hidden: u64, heads: u64, kv_heads: u64, ffn: u64) -> u64 {
    let head_dim = hidden / heads;
    let attention = hidden * heads * head_dim      // q_proj
        + 2 * hidden * kv_heads * head_dim         // k_proj, v_proj
        + heads * head_dim * hidden; // o_proj
    let mlp = 3 * hidden * ffn; // gate, up, down
    let norms = 2 * hidden;
    attention + mlp + norms
}

#[test]
fn llama3_70b_layer_has_855_6m_parameters() {
    let g = load("examples/llama3-70b-layer.json");
    let s = stats(&g).unwrap();
    let expected = llama_layer_params(8192, 64, 8, 28672);
    assert_eq!(expected, 855_654_400);
    assert_eq!(s.params, Some(u128::from(expected)));
    assert_eq!(
        s.param_bytes,
        Some(2 * u128::from(expected)),
        "bf16 weights"
    );
}

#[test]
fn llama3_70b_layer_flops_follow_the_formulas() {
    let g = load("examples/llama3-70b-layer.json");
    let s = stats(&g).unwrap();
    let tokens = 2048u64;
    // Every matmul weight is used once per token at 2 FLOPs per multiply-add.
    let matmul_params = llama_layer_params(8192, 64, 8, 28672) - 2 * 8192;
    assert_eq!(
        s.flops_by_class["matmul"],
        Some(u128::from(2 * tokens * matmul_params))
    );
    // QK^T and PV over the causal lower triangle: 2 * heads * (d + dv) * s(s+1)/2.
    let visible = tokens * (tokens + 1) / 2;
    assert_eq!(
        s.flops_by_class["attention"].unwrap() - u128::from(rope_flops()),
        u128::from(2 * 64 * 256 * visible)
    );
}

/// `rope` counts 3 FLOPs per element of q and k: 2048 * (64 + 8) heads * 128.
fn rope_flops() -> u64 {
    3 * 2048 * (64 + 8) * 128
}

#[test]
fn llama3_70b_has_70_55b_parameters() {
    let g = load("examples/llama3-70b.json");
    let s = stats(&g).unwrap();
    let (vocab, hidden) = (128_256, 8192);
    let expected = 80 * llama_layer_params(hidden, 64, 8, 28672) + 2 * vocab * hidden + hidden;
    assert_eq!(expected, 70_553_706_496);
    assert_eq!(s.params, Some(u128::from(expected)));
    assert_eq!(s.ops["attention"], 80);
    assert_eq!(s.ops["rms_norm"], 161);
}

#[test]
fn mixtral_layer_parameters() {
    let g = load("examples/mixtral-8x7b-moe-layer.json");
    let s = stats(&g).unwrap();
    let (hidden, experts, ffn) = (4096, 8, 14336);
    let attention = llama_layer_params(hidden, 32, 8, 0) - 2 * hidden;
    let expected = attention + hidden * experts + experts * 3 * hidden * ffn + 2 * hidden;
    assert_eq!(expected, 1_451_270_144);
    assert_eq!(s.params, Some(u128::from(expected)));
    assert_eq!(s.ops["moe_route"], 1);
    assert_eq!(s.ops["expert_matmul"], 3);
    // Each token meets top-2 experts: 2 * (2 * tokens) * hidden * ffn per expert matmul.
    assert_eq!(
        s.flops_by_class["moe"].unwrap() - 2 * 2 * 2048 * 4096 - 5 * 2048 * 8,
        3 * 2 * (2 * 2048) * 4096 * 14336
    );
}

#[test]
fn tiny_llama_is_tiny() {
    let g = load("examples/tiny-llama.json");
    let s = stats(&g).unwrap();
    assert_eq!(
        s.params,
        Some(u128::from(
            2 * 256 * 64 + 2 * llama_layer_params(64, 4, 2, 128) + 64
        ))
    );
    assert!(
        s.flops.unwrap() < 10_000_000,
        "tiny-llama should run in well under a second"
    );
}

#[test]
fn examples_match_their_generator() {
    for (file, example) in weft::zoo::all_examples() {
        let graph = example.build().unwrap();
        let committed = std::fs::read_to_string(repo(&format!("examples/{file}"))).unwrap();
        assert!(
            committed == weft::json::to_json(&graph),
            "examples/{file} is out of date: run `cargo run --example make_examples`"
        );
    }
}

#[test]
fn example_text_snapshots() {
    for file in [
        "tiny-llama",
        "llama3-70b-layer",
        "mixtral-8x7b-moe-layer",
        "llama3-70b",
    ] {
        let g = load(&format!("examples/{file}.json"));
        insta::assert_snapshot!(format!("text-{file}"), to_text(&g));
    }
}

#[test]
fn tiny_llama_dot_snapshot() {
    let g = load("examples/tiny-llama.json");
    insta::assert_snapshot!("dot-tiny-llama", weft::ir::dot::to_dot(&g));
}
