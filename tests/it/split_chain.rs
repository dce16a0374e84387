//! Token-split chains (`passes/src/saturate/rules/split_chain.rs`): each rule proven by
//! execution on a graph where it fires — the program that uses its result wherever it
//! applied (`extract_rewritten`) against the original on simulated ranks, random f32
//! inputs, bit for bit where only data moves, relative error ≤ 1e-5 where a GEMM runs on
//! half the rows — after checking that the program changed as it should; the guards hold;
//! a whole model keeps its outputs.

use weft::cpu::{RunOptions, Tensors, run};
use weft::ir::Graph;
use weft::passes::saturate::{self, Guards, SaturateOptions};

use crate::saturate::{Delta, Proof, applied, assert_changes, json};
use Delta::{By, More};

/// These rules, pieces of one row allowed.
fn rules(names: &[&str]) -> SaturateOptions {
    SaturateOptions {
        rules: names.iter().map(|r| r.to_string()).collect(),
        guards: Guards {
            min_rows: 1,
            ..Guards::default()
        },
        ..SaturateOptions::default()
    }
}

/// Saturates `graph` with `names`, checks `rule` applied, extracts the program that uses
/// rewritten forms wherever there are any, checks that it changed as `changes` say and
/// runs both on random inputs, comparing as `proof` says.
fn prove_chain(
    rule: &str,
    names: &[&str],
    graph: &Graph,
    changes: &[(&str, Delta)],
    proof: Proof,
) -> Graph {
    let sat = saturate::saturate(graph, &rules(names)).unwrap_or_else(|e| panic!("{rule}: {e}"));
    assert!(
        sat.report.unsound.is_empty(),
        "{rule}: {:?}",
        sat.report.unsound
    );
    assert!(applied(&sat.report, rule) > 0, "{rule} never applied");
    let rewritten = saturate::extract_rewritten(&sat, graph).unwrap();
    assert_changes(rule, graph, &rewritten, changes);
    let inputs: Tensors = weft::inputs::complete_inputs(graph, Vec::new(), 3).unwrap();
    let o = RunOptions::default();
    let want = run(graph, &inputs, &o).unwrap();
    let got = run(&rewritten, &inputs, &o).unwrap_or_else(|e| panic!("{rule}: {e}"));
    match proof {
        Proof::Bits => crate::compare::assert_bits_eq(&want, &got),
        Proof::Within(tol) => {
            let err = crate::worst_relative(&want, &got);
            assert!(err <= tol, "{rule}: relative error {err}");
        }
    }
    rewritten
}

/// `x [16, 8]` split by hand in two token halves, `exp` of one and `tanh` of the other
/// (so a half read from the wrong side shows), joined as `c`; then `tail`.
fn split_by_hand(tail: &str, outputs: &str) -> Graph {
    json(&format!(
        r#"{{"weft": 1, "name": "chain", "nodes": [
  {{"name": "x", "op": "input", "attrs": {{"dtype": "f32", "shape": [16, 8]}}}},
  {{"name": "x0", "op": "slice", "inputs": ["x"], "attrs": {{"axis": 0, "start": 0, "end": 8}}}},
  {{"name": "x1", "op": "slice", "inputs": ["x"], "attrs": {{"axis": 0, "start": 8, "end": 16}}}},
  {{"name": "e0", "op": "exp", "inputs": ["x0"]}},
  {{"name": "e1", "op": "tanh", "inputs": ["x1"]}},
  {{"name": "c", "op": "concat", "inputs": ["e0", "e1"], "attrs": {{"axis": 0}}}},
  {tail}
], "outputs": [{outputs}]}}"#
    ))
}

#[test]
fn element_wise_ops_follow_a_token_split() {
    // The residual add (both operands span the tokens: the second is sliced), SiLU, a
    // bias broadcast along the tokens (used whole by both halves) and a select.
    let g = split_by_hand(
        r#"{"name": "r", "op": "input", "attrs": {"dtype": "f32", "shape": [16, 8]}},
  {"name": "b", "op": "weight", "attrs": {"dtype": "f32", "shape": [8], "init": {"normal": {"seed": 4, "std": 1}}}},
  {"name": "y", "op": "add", "inputs": ["c", "r"]},
  {"name": "z", "op": "silu", "inputs": ["y"]},
  {"name": "u", "op": "mul", "inputs": ["z", "b"]},
  {"name": "m", "op": "is_nan", "inputs": ["r"]},
  {"name": "v", "op": "where", "inputs": ["m", "r", "u"]}"#,
        r#""v", "y""#,
    );
    prove_chain(
        "token-split-elementwise",
        &["token-split-elementwise", "slice-of-concat"],
        &g,
        &[
            ("add", By(1)),
            ("silu", By(1)),
            ("mul", By(1)),
            ("where", By(1)),
            // The halves flow: the add reads exp's and tanh's results, not the concat.
            ("concat>add", By(-1)),
            ("exp>add", By(1)),
            ("tanh>add", By(1)),
            ("slice>add", By(2)),
            ("add>silu", By(1)),
            ("silu>mul", By(1)),
            ("weight>mul", By(1)),
            ("mul>where", By(1)),
            // Only the outputs' halves are joined.
            ("concat", By(1)),
            ("where>concat", By(2)),
        ],
        Proof::Bits,
    );
}

#[test]
fn norms_and_softmax_follow_a_token_split_but_not_softmax_over_tokens() {
    let g = split_by_hand(
        r#"{"name": "w", "op": "weight", "attrs": {"dtype": "f32", "shape": [8], "init": {"uniform": {"seed": 2, "low": 0.5, "high": 1.5}}}},
  {"name": "bias", "op": "weight", "attrs": {"dtype": "f32", "shape": [8], "init": {"normal": {"seed": 3, "std": 1}}}},
  {"name": "n", "op": "rms_norm", "inputs": ["c", "w"], "attrs": {"eps": 1e-5}},
  {"name": "l", "op": "layer_norm", "inputs": ["n", "w", "bias"]},
  {"name": "s", "op": "softmax", "inputs": ["l"], "attrs": {"axis": -1}},
  {"name": "t", "op": "softmax", "inputs": ["c"], "attrs": {"axis": 0}}"#,
        r#""s", "t""#,
    );
    prove_chain(
        "token-split-norm",
        &["token-split-norm", "slice-of-concat"],
        &g,
        &[
            ("rms_norm", By(1)),
            ("layer_norm", By(1)),
            // The softmax over the last axis splits; the one over the tokens stays whole.
            ("softmax", By(1)),
            ("concat>softmax", By(0)),
            ("exp>rms_norm", By(1)),
            ("tanh>rms_norm", By(1)),
            ("rms_norm>layer_norm", By(1)),
            ("weight>layer_norm", By(2)),
            ("layer_norm>softmax", By(1)),
        ],
        Proof::Bits,
    );
}

#[test]
fn rope_follows_a_token_split_with_its_tables_sliced() {
    // q [1, 2, 16, 8] (batch, heads, tokens, head dim) split along the tokens; the tables
    // [16, 4] span the tokens, so each half reads its rows of them.
    let g = json(
        r#"{"weft": 1, "name": "chain", "nodes": [
  {"name": "q", "op": "input", "attrs": {"dtype": "f32", "shape": [1, 2, 16, 8]}},
  {"name": "q0", "op": "slice", "inputs": ["q"], "attrs": {"axis": 2, "start": 0, "end": 8}},
  {"name": "q1", "op": "slice", "inputs": ["q"], "attrs": {"axis": 2, "start": 8, "end": 16}},
  {"name": "e0", "op": "exp", "inputs": ["q0"]},
  {"name": "e1", "op": "tanh", "inputs": ["q1"]},
  {"name": "c", "op": "concat", "inputs": ["e0", "e1"], "attrs": {"axis": 2}},
  {"name": "pos", "op": "constant", "attrs": {"dtype": "i64", "shape": [16], "init": {"range": {"start": 0, "step": 1}}}},
  {"name": "tables", "op": "rope_cache", "inputs": ["pos"], "attrs": {"theta": 10000, "dim": 8}, "outputs": ["cos", "sin"]},
  {"name": "r", "op": "rope", "inputs": ["c", "cos", "sin"]},
  {"name": "ri", "op": "rope", "inputs": ["c", "cos", "sin"], "attrs": {"interleaved": true}}
], "outputs": ["r", "ri"]}"#,
    );
    prove_chain(
        "token-split-rope",
        &["token-split-rope", "slice-of-concat"],
        &g,
        &[
            ("rope", By(2)),
            ("concat>rope", By(-2)),
            ("exp>rope", By(2)),
            ("tanh>rope", By(2)),
            // cos and sin cut once each, the cuts shared by both ropes.
            ("rope_cache>rope", By(-4)),
            ("slice>rope", By(8)),
            ("rope_cache>slice", By(4)),
        ],
        Proof::Bits,
    );
}

#[test]
fn fused_kernels_follow_a_token_split_reading_their_gemm_weight_whole() {
    // GEMM + residual add + SiLU + bias multiply as one kernel; the GEMM weight and the
    // bias are used whole, the residual sliced.
    let g = split_by_hand(
        r#"{"name": "w", "op": "weight", "attrs": {"dtype": "f32", "shape": [8, 6], "init": {"normal": {"seed": 2, "std": 0.5}}}},
  {"name": "r", "op": "input", "attrs": {"dtype": "f32", "shape": [16, 6]}},
  {"name": "b", "op": "weight", "attrs": {"dtype": "f32", "shape": [6], "init": {"normal": {"seed": 4, "std": 1}}}},
  {"name": "f", "op": "fused_elementwise", "inputs": ["c", "w", "r", "b"], "attrs": {"steps": [{"matmul": {"operand": 1}}, {"binary": {"op": {"op": "add"}, "operand": 2}}, {"unary": {"op": {"op": "silu"}}}, {"binary": {"op": {"op": "mul"}, "operand": 3, "swap": true}}]}}"#,
        r#""f""#,
    );
    prove_chain(
        "token-split-fused",
        &["token-split-fused", "slice-of-concat"],
        &g,
        &[
            ("fused_elementwise", By(1)),
            ("concat>fused_elementwise", By(-1)),
            ("exp>fused_elementwise", By(1)),
            ("tanh>fused_elementwise", By(1)),
            ("weight>fused_elementwise", By(2)),
            ("slice>fused_elementwise", By(2)),
        ],
        Proof::Within(1e-5),
    );
}

#[test]
fn a_tensor_parallel_block_runs_as_two_token_halves() {
    // A partial product all-reduced (tp=2), the residual add, RMSNorm, a column-parallel
    // GEMM, SiLU: with the existing token splits and the chain rules nothing re-joins
    // between the all-reduce and the last op; the GEMM's halves read the norm's.
    let g = json(
        r#"{"weft": 1, "name": "chain", "mesh": "tp=2", "nodes": [
  {"name": "a", "op": "input", "attrs": {"dtype": "f32", "shape": [16, 4]}, "sharding": {"tp": "S(1)"}},
  {"name": "w", "op": "weight", "attrs": {"dtype": "f32", "shape": [4, 8], "init": {"normal": {"seed": 5, "std": 0.5}}}, "sharding": {"tp": "S(0)"}},
  {"name": "mm", "op": "matmul", "inputs": ["a", "w"], "sharding": {"tp": "P(sum)"}},
  {"name": "ar", "op": "all_reduce", "inputs": ["mm"], "attrs": {"axis": "tp"}},
  {"name": "res", "op": "input", "attrs": {"dtype": "f32", "shape": [16, 8]}},
  {"name": "y", "op": "add", "inputs": ["ar", "res"]},
  {"name": "g", "op": "weight", "attrs": {"dtype": "f32", "shape": [8], "init": {"uniform": {"seed": 2, "low": 0.5, "high": 1.5}}}},
  {"name": "n", "op": "rms_norm", "inputs": ["y", "g"], "attrs": {"eps": 1e-5}},
  {"name": "w2", "op": "weight", "attrs": {"dtype": "f32", "shape": [8, 6], "init": {"normal": {"seed": 6, "std": 0.5}}}, "sharding": {"tp": "S(1)"}},
  {"name": "h", "op": "matmul", "inputs": ["n", "w2"], "sharding": {"tp": "S(1)"}},
  {"name": "s", "op": "silu", "inputs": ["h"], "sharding": {"tp": "S(1)"}}
], "outputs": ["s", "y"]}"#,
    );
    let names = [
        "token-split-all-reduce",
        "token-split-matmul",
        "slice-of-concat",
        "token-split-elementwise",
        "token-split-norm",
    ];
    let sat = saturate::saturate(&g, &rules(&names)).unwrap();
    assert!(applied(&sat.report, "token-split-norm") > 0);
    let program = prove_chain(
        "token-split-elementwise",
        &names,
        &g,
        &[
            ("all_reduce", By(1)),
            ("all_reduce>add", By(1)),
            ("add>rms_norm", By(1)),
            ("rms_norm>matmul", By(1)),
            ("matmul>silu", By(1)),
            ("concat>add", By(0)),
            ("concat>rms_norm", By(0)),
            ("concat>silu", By(0)),
        ],
        Proof::Within(1e-5),
    );
    // The only joins are the two outputs'.
    let joins = program
        .nodes()
        .filter(|(_, n)| n.op.name() == "concat")
        .count();
    assert_eq!(joins, 2, "{}", weft::ir::text::to_text(&program));
}

#[test]
fn chains_stop_at_the_size_and_depth_guards() {
    // c is split in halves whose halves are split again (quarters): with depth 1 the
    // consumer is split once and its halves are not split again; with depth 2 they are.
    let g = json(
        r#"{"weft": 1, "name": "chain", "nodes": [
  {"name": "x", "op": "input", "attrs": {"dtype": "f32", "shape": [16, 8]}},
  {"name": "x0", "op": "slice", "inputs": ["x"], "attrs": {"axis": 0, "start": 0, "end": 4}},
  {"name": "x1", "op": "slice", "inputs": ["x"], "attrs": {"axis": 0, "start": 4, "end": 8}},
  {"name": "x2", "op": "slice", "inputs": ["x"], "attrs": {"axis": 0, "start": 8, "end": 12}},
  {"name": "x3", "op": "slice", "inputs": ["x"], "attrs": {"axis": 0, "start": 12, "end": 16}},
  {"name": "h0", "op": "concat", "inputs": ["x0", "x1"], "attrs": {"axis": 0}},
  {"name": "h1", "op": "concat", "inputs": ["x2", "x3"], "attrs": {"axis": 0}},
  {"name": "c", "op": "concat", "inputs": ["h0", "h1"], "attrs": {"axis": 0}},
  {"name": "y", "op": "neg", "inputs": ["c"]}
], "outputs": ["y"]}"#,
    );
    let count = |depth: usize, min_rows: u64| {
        let mut options = rules(&["token-split-elementwise", "slice-of-concat"]);
        options.guards.split_depth = depth;
        options.guards.min_rows = min_rows;
        let sat = saturate::saturate(&g, &options).unwrap();
        assert!(sat.report.unsound.is_empty());
        applied(&sat.report, "token-split-elementwise")
    };
    assert_eq!(count(1, 1), 1);
    assert_eq!(count(2, 1), 3);
    assert_eq!(count(2, 8), 1);
    assert_eq!(count(1, 9), 0);
    // A concat along a dim split on the mesh does not verify, so no graph can hand the
    // rule rows split on the mesh (the rule refuses them anyway); a batch split on the
    // mesh leaves the tokens free, and the halves keep the batch's placement.
    let g = json(
        r#"{"weft": 1, "name": "chain", "mesh": "tp=2", "nodes": [
  {"name": "a", "op": "input", "attrs": {"dtype": "f32", "shape": [2, 8, 8]}, "sharding": {"tp": "S(0)"}},
  {"name": "b", "op": "input", "attrs": {"dtype": "f32", "shape": [2, 8, 8]}, "sharding": {"tp": "S(0)"}},
  {"name": "c", "op": "concat", "inputs": ["a", "b"], "attrs": {"axis": 1}, "sharding": {"tp": "S(0)"}},
  {"name": "r", "op": "input", "attrs": {"dtype": "f32", "shape": [2, 16, 8]}, "sharding": {"tp": "S(0)"}},
  {"name": "y", "op": "sub", "inputs": ["r", "c"], "sharding": {"tp": "S(0)"}}
], "outputs": ["y"]}"#,
    );
    prove_chain(
        "token-split-elementwise",
        &["token-split-elementwise", "slice-of-concat"],
        &g,
        &[("sub", By(1)), ("input>sub", By(1)), ("slice>sub", By(2))],
        Proof::Bits,
    );
}

#[test]
fn a_whole_model_split_into_token_halves_keeps_its_outputs() {
    let tiny = crate::load("examples/tiny-llama.json");
    let sharded = weft::shard(&tiny, &"tp=2".parse().unwrap()).unwrap();
    let names = [
        "token-split-all-reduce",
        "token-split-matmul",
        "slice-of-concat",
        "token-split-elementwise",
        "token-split-norm",
        "token-split-rope",
        "token-split-fused",
    ];
    let program = prove_chain(
        "token-split-norm",
        &names,
        &sharded,
        &[("concat>rms_norm", By(0)), ("rms_norm", More)],
        Proof::Within(1e-5),
    );
    let sat = saturate::saturate(&sharded, &rules(&names)).unwrap();
    assert!(applied(&sat.report, "token-split-elementwise") > 0);
    assert!(program.num_nodes() > sharded.num_nodes());
    // With every rule: the halves of fused kernels, of norms and element-wise ops moved
    // onto shards, all taken at once.
    let every: Vec<&str> = saturate::RULES.iter().map(|r| r.name).collect();
    prove_chain(
        "token-split-fused",
        &every,
        &sharded,
        &[("fused_elementwise", More), ("concat>rms_norm", By(0))],
        Proof::Within(1e-5),
    );
}

/// The predicted step of Llama-3-70B (2 layers, 2048 tokens) at `tp=8` on `h100-sxm-8`
/// (the scheduler's prediction under the cost model, one communication stream): the
/// sharded program, the programs that use every split the rules built
/// (`extract_rewritten`) with the two token splits alone and with the chain rules, and the
/// program extraction picks with every rule. The chains must make the split program
/// faster than both the unsplit one and the one whose halves re-join at every op. Prints
/// the figures docs/rewrites.md quotes:
/// `cargo test --test it split_chain_effect -- --nocapture`.
#[test]
#[allow(clippy::print_stdout)] // the figures are this test's report
fn split_chain_effect_on_llama_70b_tp8() {
    use weft::passes::schedule::{ScheduleOptions, schedule};
    let cfg = weft::zoo::LlamaConfig {
        layers: 2,
        ..weft::zoo::LlamaConfig::llama3_70b()
    };
    let graph = weft::zoo::llama(&cfg).unwrap();
    let sharded = weft::shard(&graph, &"tp=8".parse().unwrap()).unwrap();
    let profile = weft::hardware::Profile::builtin("h100-sxm-8").unwrap();
    let cost = weft::passes::cost::CostModel::new(&profile, &sharded.mesh).unwrap();
    let predict = |g: &Graph| -> f64 {
        schedule(g, &cost, &ScheduleOptions::default())
            .unwrap()
            .prediction
            .predicted_us
            / 1e3
    };
    let census = |g: &Graph, op: &str| g.nodes().filter(|(_, n)| n.op.name() == op).count();
    let splits = [
        "token-split-matmul",
        "token-split-all-reduce",
        "slice-of-concat",
    ];
    let chain = [
        "token-split-elementwise",
        "token-split-norm",
        "token-split-rope",
        "token-split-fused",
    ];
    let run_with = |names: &[&str]| {
        let options = SaturateOptions {
            rules: names.iter().map(|r| r.to_string()).collect(),
            ..SaturateOptions::default()
        };
        let sat = saturate::saturate(&sharded, &options).unwrap();
        (
            sat.report.nodes,
            saturate::extract_rewritten(&sat, &sharded).unwrap(),
        )
    };
    let show = |what: &str, g: &Graph, enodes: usize| -> f64 {
        let ms = predict(g);
        println!(
            "{what:<44} {ms:>8.3} ms  {:>4} nodes {:>3} concat {:>3} slice  {enodes:>6} e-nodes",
            g.num_nodes(),
            census(g, "concat"),
            census(g, "slice"),
        );
        ms
    };
    let whole = show("sharded (no rewrite)", &sharded, 0);
    let (n, g) = run_with(&splits);
    let rejoined = show("token splits, every split taken", &g, n);
    let with_chain: Vec<&str> = splits.iter().chain(&chain).copied().collect();
    let (n, g) = run_with(&with_chain);
    let chained = show("token splits + chains, every split taken", &g, n);
    // Between the layers' attentions nothing re-joins: the joins left are q, k and v's
    // (attention runs whole) and the logits'.
    assert_eq!(census(&g, "concat"), 3 * 2 + 1);
    let sat = saturate::saturate(&sharded, &SaturateOptions::default()).unwrap();
    let extraction = saturate::extract(&sat, &sharded, &cost).unwrap();
    let picked = &extraction.graph;
    show(
        "every rule, extracted by summed op cost",
        picked,
        sat.report.nodes,
    );
    // A program that splits nothing credits no split rule, though split forms share
    // classes with the fused kernels it uses.
    if census(picked, "concat") == 0 {
        assert!(
            extraction
                .rules_used
                .iter()
                .all(|(rule, _)| !rule.starts_with("token-split")),
            "{:?}",
            extraction.rules_used
        );
    }
    assert!(
        chained < whole && chained < rejoined,
        "{chained} ms against {whole} and {rejoined}"
    );
}
