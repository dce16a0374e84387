//! `all-to-all-split-expert-groups` (Comet): on expert-parallel MoE models, the program
//! using the rule's result wherever it applied runs on simulated ranks and matches the
//! unrewritten program bit for bit (it only moves data; every row is multiplied by the
//! same weights in a run of the same length), and the group-count guard holds.

use weft::cpu::{RunOptions, Tensors, run};
use weft::ir::Graph;
use weft::passes::saturate::{self, Guards, SaturateOptions};
use weft::zoo::{GptMoeConfig, gpt_moe};

const RULE: &str = "all-to-all-split-expert-groups";

fn options(groups: u64) -> SaturateOptions {
    SaturateOptions {
        rules: vec![RULE.to_owned()],
        guards: Guards {
            expert_groups: groups,
            ..Guards::default()
        },
        ..SaturateOptions::default()
    }
}

fn count(g: &Graph, op: &str) -> usize {
    g.nodes().filter(|(_, n)| n.op.name() == op).count()
}

/// Splits every first expert GEMM of `sharded` into `groups` groups, checks how the
/// program changed (per MoE layer: `groups` all-to-alls of tokens and expert GEMMs where
/// there was one, and one regroup), and runs it against the original on random inputs,
/// bit for bit.
fn split_and_check(sharded: &Graph, groups: u64, layers: usize, seed: u64) -> Graph {
    let sat = saturate::saturate(sharded, &options(groups)).unwrap();
    assert!(sat.report.unsound.is_empty(), "{:?}", sat.report.unsound);
    assert!(sat.report.not_fired.is_empty(), "{RULE} never applied");
    let rewritten = saturate::extract_rewritten(&sat, sharded).unwrap();
    let more = layers * (groups as usize - 1);
    assert_eq!(count(&rewritten, "moe_regroup"), layers);
    assert_eq!(
        count(&rewritten, "all_to_all"),
        count(sharded, "all_to_all") + more
    );
    assert_eq!(
        count(&rewritten, "expert_matmul"),
        count(sharded, "expert_matmul") + more
    );
    // Each group's GEMM is marked to compute its group's rows on its group's experts
    // (what the cost model prices; the run below computes every row).
    let group_gemms = rewritten
        .nodes()
        .filter(|(_, n)| {
            matches!(n.op, weft::ir::Op::ExpertMatMul {
                rows: weft::ir::ExpertRows::OneExpertGroup { expert_groups, .. },
                ..
            } if expert_groups == groups)
        })
        .count();
    assert_eq!(group_gemms, layers * groups as usize);
    let inputs: Tensors = weft::inputs::complete_inputs(sharded, Vec::new(), seed).unwrap();
    let o = RunOptions::default();
    let want = run(sharded, &inputs, &o).unwrap();
    let got = run(&rewritten, &inputs, &o).unwrap();
    crate::compare::assert_bits_eq(&want, &got);
    rewritten
}

#[test]
fn the_dispatch_all_to_all_splits_per_expert_group_bit_for_bit() {
    // The tiny GPT MoE (8 experts, top-2, 2 MoE layers): 4 experts per device at ep=2
    // (2 groups of 2, then 4 groups of 1), 2 at ep=4, and with tensor parallelism beside.
    let moe = gpt_moe(&GptMoeConfig::tiny()).unwrap();
    for (spec, groups, seed) in [
        ("ep=2", 2, 1),
        ("ep=2", 4, 2),
        ("ep=4", 2, 3),
        ("tp=2,ep=2", 2, 4),
    ] {
        let sharded = weft::shard(&moe, &spec.parse().unwrap()).unwrap();
        split_and_check(&sharded, groups, 2, seed);
    }
    // Mixtral exported from PyTorch (8 experts, top-2, 2 layers), raised, at ep=2.
    let dir = crate::repo("tests/onnx-models/mixtral");
    let graph = weft::load_model(&dir.join("model.onnx"), &weft::LoadOptions::default()).unwrap();
    let graph = weft::to_stage(graph, weft::Stage::Raised).unwrap().0;
    let sharded = weft::shard(&graph, &"ep=2".parse().unwrap()).unwrap();
    split_and_check(&sharded, 2, 2, 5);
}

#[test]
fn the_group_count_guard_holds_and_a_split_that_did_not_happen_is_reported() {
    let moe = gpt_moe(&GptMoeConfig::tiny()).unwrap();
    // 3 groups do not divide 4 experts per device; at ep=8 each device has one expert.
    for (spec, groups) in [("ep=2", 3), ("ep=8", 2), ("ep=2", 1)] {
        let sharded = weft::shard(&moe, &spec.parse().unwrap()).unwrap();
        let sat = saturate::saturate(&sharded, &options(groups)).unwrap();
        assert_eq!(sat.report.not_fired, vec![RULE], "{spec}, {groups} groups");
        let rewritten = saturate::extract_rewritten(&sat, &sharded).unwrap();
        assert_eq!(count(&rewritten, "moe_regroup"), 0);
    }
    // Applied once per expert GEMM: saturating longer adds nothing.
    let sharded = weft::shard(&moe, &"ep=2".parse().unwrap()).unwrap();
    let sat = saturate::saturate(&sharded, &options(2)).unwrap();
    let regroups = sat
        .egraph
        .classes()
        .flat_map(|c| c.nodes.iter())
        .filter(|n| match n.head {
            saturate::Head::Op(i) => sat.egraph.analysis.ops.get(i).name() == "moe_regroup",
            _ => false,
        })
        .count();
    assert_eq!(regroups, 2);
}

#[test]
fn with_every_rule_the_rewritten_moe_model_keeps_its_outputs() {
    // Comet's three splits compose (per group, then per source block or per column half
    // of the weights): the program using every rule's result matches the unsharded model.
    let moe = gpt_moe(&GptMoeConfig::tiny()).unwrap();
    let sharded = weft::shard(&moe, &"ep=2".parse().unwrap()).unwrap();
    let sat = saturate::saturate(&sharded, &SaturateOptions::default()).unwrap();
    assert!(sat.report.unsound.is_empty(), "{:?}", sat.report.unsound);
    assert!(!sat.report.not_fired.contains(&RULE));
    let all = saturate::extract_rewritten(&sat, &sharded).unwrap();
    assert_eq!(count(&all, "moe_regroup"), 2);
    let inputs: Tensors = weft::inputs::complete_inputs(&moe, Vec::new(), 11).unwrap();
    let o = RunOptions::default();
    let err = crate::worst_relative(
        &run(&moe, &inputs, &o).unwrap(),
        &run(&all, &inputs, &o).unwrap(),
    );
    assert!(err <= 1e-5, "{err}");
}

#[test]
fn extraction_prices_the_split_and_keeps_the_outputs() {
    // Each group's all-to-all carries a whole padded block per peer (no capacity limit),
    // so under the cost model the split costs more bytes than it overlaps: the cheapest
    // program is chosen and still computes the same outputs.
    let moe = gpt_moe(&GptMoeConfig::tiny()).unwrap();
    let sharded = weft::shard(&moe, &"ep=2".parse().unwrap()).unwrap();
    let sat = saturate::saturate(&sharded, &options(2)).unwrap();
    let chosen = crate::saturate::extract_h100(&sat, &sharded).unwrap();
    assert_eq!(
        count(&chosen, "moe_regroup"),
        0,
        "the split costs more bytes"
    );
    let inputs: Tensors = weft::inputs::complete_inputs(&sharded, Vec::new(), 9).unwrap();
    let o = RunOptions::default();
    crate::compare::assert_bits_eq(
        &run(&sharded, &inputs, &o).unwrap(),
        &run(&chosen, &inputs, &o).unwrap(),
    );
}
