//! `weft check`'s `training` block (`src/training.rs`): one training step's model FLOPs
//! and all-to-all volume under the Megatron/BigMac convention, against BigMac's Table 4
//! (fine-grained side; `dcca.rs` adds the DCCA side) and the same figures whatever the
//! mesh.

use weft::ir::{DType, Graph};
use weft::training::TrainingSummary;
use weft::zoo::{GptMoeConfig, gpt_moe};

use crate::cli::{stdout, weft};

use crate::decode_moe::{check_json, u};

/// BigMac Table 3's fine-grained FLOPs, `12 b s l h² (2 + s/h + v/(2lh) + r·top_k)`, in
/// integers (techniques.md §2.1), written here from the paper, not from Weft's code.
fn table_3_flops(bs: u128, l: u128, h: u128, s: u128, v: u128, rh: u128, k: u128) -> u128 {
    12 * bs * l * h * (2 * h + s) + 6 * bs * v * h + 12 * bs * l * h * rh * k
}

#[test]
fn gpt3_xl_moe_at_ep_32_gives_bigmac_table_4() {
    // Table 4 (GPT3-XL base: l=24, h=2048, s=2048, v=50257, e=64, top_k=8, ep=32,
    // r=0.25, 0.5M tokens): params 3.73B, FLOPs 3,490.67T, all-to-all 1,488 "GB".
    let (l, h, s, v, k) = (24u128, 2048u128, 2048u128, 50_257u128, 8u128);
    let rh = h / 4;
    let bs = 256 * s;
    let j = check_json(&[
        "examples/gpt3-xl-moe.json",
        "--mesh",
        "ep=32",
        "--dim",
        "batch=256",
    ]);
    let t = &j["training"];
    assert!(
        t["convention"]
            .as_str()
            .unwrap()
            .contains("backward = 2× forward")
    );
    assert_eq!(u(&t["tokens"]), 524_288);
    let flops = u(&t["flops"]);
    assert_eq!(flops, table_3_flops(bs, l, h, s, v, rh, k));
    // 3,490.37T with the stated vocabulary; the paper's 3,490.67T is the same formula
    // with Megatron's padded 50304 (tests/it/decode_moe.rs shows both).
    assert_eq!((flops as f64 / 1e10).round() / 100.0, 3_490.37);
    // All-to-all: dispatch and combine per layer, each `bs·top_k·h` elements, forward and
    // backward, 31/32 of it to other devices.
    let elements = 4 * bs * l * h * k * 31 / 32;
    assert_eq!(u(&t["all_to_all_elements"]), elements);
    assert_eq!(t["all_to_all_gib_elements"].as_f64().unwrap(), 744.0);
    // In BF16 bytes: Table 3's `8·b·s·l·h·top_k·(ep−1)/ep`, Table 4's 1,488 "GB".
    assert_eq!(u(&t["all_to_all_bytes"]), 2 * elements);
    assert_eq!(u(&t["all_to_all_bytes"]), 8 * bs * l * h * k * 31 / 32);
    assert_eq!(t["all_to_all_gib_bytes"].as_f64().unwrap(), 1_488.0);

    // Unsharded, the same model FLOPs (the sharded graph's per-device work, counted once
    // per distinct piece, adds up to the model's), no all-to-all; and 3.73B parameters.
    let whole = check_json(&["examples/gpt3-xl-moe.json", "--dim", "batch=256"]);
    assert_eq!(u(&whole["training"]["flops"]), flops);
    assert_eq!(u(&whole["training"]["all_to_all_elements"]), 0);
    assert_eq!(u(&whole["training"]["tokens"]), 524_288);
    let params = u(&whole["params"]);
    assert_eq!((params + 5_000_000) / 10_000_000, 373, "{params}");

    // The text form says the same.
    let o = weft(&[
        "check",
        "examples/gpt3-xl-moe.json",
        "--mesh",
        "ep=32",
        "--dim",
        "batch=256",
    ]);
    let text = stdout(&o);
    assert!(
        text.contains("training    3,490,371,745,087,488 (3.49 PFLOP) per step (524,288 tokens)"),
        "{text}"
    );
    assert!(text.contains("(744.00 Gi)"), "{text}");
    assert!(text.contains("(1488.00 GiB)"), "{text}");
}

/// The tiny MoE model with a batch of `batch` sequences.
fn tiny(batch: u64) -> Graph {
    gpt_moe(&GptMoeConfig {
        batch,
        ..GptMoeConfig::tiny()
    })
    .unwrap()
}

#[test]
fn the_step_is_the_same_on_every_mesh_and_counts_what_the_convention_says() {
    // The tiny model (f32, l=2, h=32, s=16, v=128, e=8, top-2, expert width 8), batch 4.
    let g = tiny(4);
    let t = TrainingSummary::new(&g).unwrap();
    let (b, s, l, h, v, k, f) = (4u128, 16u128, 2u128, 32u128, 128u128, 2u128, 8u128);
    // Per layer: q, k, v, o (2·bs·h² each), attention dense (2 products of 2·b·s²·h),
    // experts (two GEMMs of 2·bs·k·h·f); the tied head 2·bs·v·h; ×3 for the backward.
    let bs = b * s;
    let forward =
        l * (4 * 2 * bs * h * h + 2 * 2 * b * s * s * h + 2 * 2 * bs * k * h * f) + 2 * bs * v * h;
    assert_eq!(t.flops, 3 * forward);
    assert_eq!(t.tokens, Some(bs));
    assert_eq!(t.all_to_all_elements, 0);
    for spec in ["ep=2", "ep=4", "tp=2", "tp=2,ep=2", "dp=2,ep=2", "dp=4"] {
        let sharded = weft::shard(&g, &spec.parse().unwrap()).unwrap();
        let ts = TrainingSummary::new(&sharded).unwrap();
        assert_eq!(ts.flops, t.flops, "{spec}");
        assert_eq!(ts.tokens, t.tokens, "{spec}");
        // Expert parallelism: per layer two all-to-alls of bs·k rows of h (f32), forward
        // and backward, (n−1)/n of them to other devices, on every replica along the
        // other axes: the tp ranks each send their own copy, and so do the dp ranks (the
        // EP block asks for its tokens split over `ep` only, so each dp replica gathers
        // and routes them all: `ep_dispatch` in passes/src/shard/expert.rs).
        let ep = sharded.mesh.axis_size("ep").unwrap_or(1);
        let copies = sharded.mesh.num_devices() / ep;
        let want = 4 * l * bs * k * h * u128::from(ep - 1) / u128::from(ep) * u128::from(copies);
        assert_eq!(ts.all_to_all_elements, want, "{spec}");
        assert_eq!(ts.all_to_all_bytes, 4 * want, "{spec}: f32");
        assert_eq!(sharded.value(sharded.outputs[0]).ty.dtype, DType::F32);
    }
}

#[test]
fn a_dense_model_counts_the_same_sharded_by_tensors_or_sequence() {
    // tiny-llama (GQA): tensor parallelism splits heads and GEMMs, Ulysses the sequence
    // then the heads; the step's model FLOPs do not depend on the layout, and Ulysses'
    // all-to-alls are dense activations (counted whole, f32).
    let g = crate::load("examples/tiny-llama.json");
    let (g, _) = weft::to_stage(g, weft::Stage::Raised).unwrap();
    let t = TrainingSummary::new(&g).unwrap();
    assert!(t.flops > 0);
    for spec in ["tp=2", "sp=2", "dp=1,tp=2"] {
        let sharded = weft::shard(&g, &spec.parse().unwrap()).unwrap();
        let ts = TrainingSummary::new(&sharded).unwrap();
        assert_eq!(ts.flops, t.flops, "{spec}");
        assert_eq!(ts.tokens, t.tokens, "{spec}");
        let a2a = sharded
            .nodes()
            .filter(|(_, n)| n.op.name() == "all_to_all")
            .count();
        assert_eq!(ts.all_to_all_elements > 0, a2a > 0, "{spec}");
        assert_eq!(ts.all_to_all_bytes, 4 * ts.all_to_all_elements, "{spec}");
    }
}
