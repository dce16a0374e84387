//! Equality saturation: every rule proven by execution (the program that uses the rule's
//! result wherever it applied is run against the original on simulated ranks, f32: bit for
//! bit where the rule only moves data or keeps sums in order, relative error ≤ 1e-5 where
//! it changes a GEMM's shape), after checking that the rule changed the program as it
//! should; extraction keeps whole models' outputs, limits and guards hold.

use std::path::Path;

use proptest::prelude::*;
use weft::cpu::{RunOptions, Tensors, run};
use weft::ir::{Graph, Mesh};
use weft::passes::saturate::{self, Guards, SaturateOptions};

fn mesh(spec: &str) -> Mesh {
    spec.parse().unwrap()
}

use crate::worst_relative as worst;

/// Options running just these rules.
/// Extraction under the roofline of `h100-sxm-8` (the cost the CLI uses): the program only.
pub fn extract_h100(
    sat: &saturate::Saturated,
    template: &Graph,
) -> Result<Graph, saturate::SaturateError> {
    let profile = weft::hardware::Profile::builtin("h100-sxm-8").expect("a built-in profile");
    let cost = weft::passes::cost::CostModel::new(&profile, &template.mesh)
        .expect("the mesh fits one H100 node");
    saturate::extract(sat, template, &cost).map(|x| x.graph)
}

fn with_rules(rules: &[&str]) -> SaturateOptions {
    SaturateOptions {
        rules: rules.iter().map(|r| r.to_string()).collect(),
        ..SaturateOptions::default()
    }
}

/// How many times `rule` applied, over all phases.
pub(crate) fn applied(report: &saturate::SaturationReport, rule: &str) -> usize {
    report
        .phases
        .iter()
        .flat_map(|p| &p.rules)
        .filter(|r| r.name == rule)
        .map(|r| r.applied)
        .sum()
}

fn one_rule(rule: &str) -> SaturateOptions {
    SaturateOptions {
        rules: vec![rule.to_owned()],
        guards: Guards {
            min_rows: 1,
            ..Guards::default()
        },
        ..SaturateOptions::default()
    }
}

/// How a rule's proof compares the outputs of the original and the rewritten program.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Proof {
    /// Bit for bit: the rule only moves data, or keeps every sum in the same order (the
    /// executor's all-reduce and reduce-scatter both sum in group order, and a fused
    /// element-wise chain rounds after each step as the separate ops do).
    Bits,
    /// Within this relative error: the rule runs a GEMM on a different shape (a slice of
    /// rows or columns, a chunk), and the GEMM library may block its sums differently.
    Within(f64),
}

/// How the count of an op, or of a `producer>consumer` edge between two ops, must change.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Delta {
    By(i64),
    More,
    Fewer,
}

use Delta::{By, Fewer, More};

/// How many nodes of each op, and how many `producer>consumer` edges, `g` has: a rule
/// that moves an op past a collective changes no op count but changes edges.
fn census(g: &Graph) -> std::collections::BTreeMap<String, i64> {
    let mut m = std::collections::BTreeMap::new();
    for (_, n) in g.nodes() {
        *m.entry(n.op.name().to_owned()).or_insert(0) += 1;
        for &v in &n.inputs {
            let from = g.node(g.value(v).producer).op.name();
            *m.entry(format!("{from}>{}", n.op.name())).or_insert(0) += 1;
        }
    }
    m
}

/// Asserts that `after` differs from `before` as `changes` say.
#[track_caller]
pub(crate) fn assert_changes(what: &str, before: &Graph, after: &Graph, changes: &[(&str, Delta)]) {
    assert!(
        !changes.is_empty(),
        "{what}: say how the program must change"
    );
    let (b, a) = (census(before), census(after));
    for &(key, delta) in changes {
        let (x, y) = (
            b.get(key).copied().unwrap_or(0),
            a.get(key).copied().unwrap_or(0),
        );
        let ok = match delta {
            By(d) => y - x == d,
            More => y > x,
            Fewer => y < x,
        };
        assert!(
            ok,
            "{what}: `{key}` went from {x} to {y}, expected {delta:?}\nbefore: {b:?}\nafter: {a:?}"
        );
    }
}

/// Saturates `graph` with one rule, extracts the program that uses its results wherever
/// it applied, checks that it changed as `changes` say (the new op appears, the matched
/// op's count drops, or the edges show an op moved), and runs both programs on random
/// inputs, comparing as `proof` says.
fn prove(rule: &str, graph: &Graph, changes: &[(&str, Delta)], proof: Proof) {
    let sat = saturate::saturate(graph, &one_rule(rule)).unwrap_or_else(|e| panic!("{rule}: {e}"));
    assert!(
        sat.report.unsound.is_empty(),
        "{rule}: {:?}",
        sat.report.unsound
    );
    assert!(sat.report.not_fired.is_empty(), "{rule} never applied");
    let rewritten = saturate::extract_rewritten(&sat, graph).unwrap();
    assert_changes(rule, graph, &rewritten, changes);
    let inputs: Tensors = weft::inputs::complete_inputs(graph, Vec::new(), 3).unwrap();
    let o = RunOptions::default();
    let want = run(graph, &inputs, &o).unwrap();
    let got = run(&rewritten, &inputs, &o).unwrap_or_else(|e| panic!("{rule}: {e}"));
    match proof {
        Proof::Bits => crate::compare::assert_bits_eq(&want, &got),
        Proof::Within(tol) => {
            let err = worst(&want, &got);
            assert!(err <= tol, "{rule}: relative error {err}");
        }
    }
}

pub(crate) fn json(src: &str) -> Graph {
    weft::json::parse_str(src, Path::new("rule.json")).unwrap_or_else(|e| panic!("{e:?}"))
}

/// `[m, k] @ [k, n]` with k split over tp=N: a partial product, then `tail`.
fn partial_product(n: u64, m: u64, k: u64, cols: u64, tail: &str, out: &str) -> Graph {
    json(&format!(
        r#"{{"weft": 1, "name": "rule", "mesh": "tp={n}", "nodes": [
  {{"name": "a", "op": "input", "attrs": {{"dtype": "f32", "shape": [{m}, {kl}]}}, "sharding": {{"tp": "S(1)"}}}},
  {{"name": "w", "op": "weight", "attrs": {{"dtype": "f32", "shape": [{kl}, {cols}], "init": {{"normal": {{"seed": 5, "std": 0.5}}}}}}, "sharding": {{"tp": "S(0)"}}}},
  {{"name": "mm", "op": "matmul", "inputs": ["a", "w"], "sharding": {{"tp": "P(sum)"}}}},
  {tail}
], "outputs": ["{out}"]}}"#,
        kl = k / n
    ))
}

fn tiny_tp2() -> (Graph, Graph) {
    let tiny = crate::load("examples/tiny-llama.json");
    let sharded = weft::shard(&tiny, &mesh("tp=2")).unwrap();
    (tiny, sharded)
}

#[test]
fn all_reduce_becomes_reduce_scatter_and_all_gather() {
    let (_, sharded) = tiny_tp2();
    // tiny-llama at tp=2 has five all-reduces (four partial GEMMs, the sharded embedding).
    prove(
        "all-reduce-to-reduce-scatter-all-gather",
        &sharded,
        &[
            ("all_reduce", By(-5)),
            ("reduce_scatter", By(5)),
            ("all_gather", By(5)),
            ("reduce_scatter>all_gather", By(5)),
        ],
        Proof::Bits,
    );
    // Four devices, where the order of a sum shows in its bits (two terms commute).
    let g = partial_product(
        4,
        8,
        8,
        6,
        r#"{"name": "ar", "op": "all_reduce", "inputs": ["mm"], "attrs": {"axis": "tp"}}"#,
        "ar",
    );
    prove(
        "all-reduce-to-reduce-scatter-all-gather",
        &g,
        &[
            ("all_reduce", By(-1)),
            ("reduce_scatter", By(1)),
            ("all_gather", By(1)),
        ],
        Proof::Bits,
    );
}

#[test]
fn reduce_scatter_and_all_gather_become_all_reduce() {
    // Four devices, where the order of a sum shows in its bits (two terms commute).
    let g = partial_product(
        4,
        8,
        8,
        6,
        r#"{"name": "rs", "op": "reduce_scatter", "inputs": ["mm"], "attrs": {"axis": "tp", "dim": 0}, "sharding": {"tp": "S(0)"}},
  {"name": "ag", "op": "all_gather", "inputs": ["rs"], "attrs": {"axis": "tp", "dim": 0}}"#,
        "ag",
    );
    prove(
        "reduce-scatter-all-gather-to-all-reduce",
        &g,
        &[
            ("reduce_scatter", By(-1)),
            ("all_gather", By(-1)),
            ("all_reduce", By(1)),
        ],
        Proof::Bits,
    );
}

/// A row-split value gathered, then `ops` on the whole value.
fn gathered(ops: &str, out: &str) -> Graph {
    json(&format!(
        r#"{{"weft": 1, "name": "rule", "mesh": "tp=2", "nodes": [
  {{"name": "x", "op": "input", "attrs": {{"dtype": "f32", "shape": [4, 8]}}, "sharding": {{"tp": "S(0)"}}}},
  {{"name": "ag", "op": "all_gather", "inputs": ["x"], "attrs": {{"axis": "tp", "dim": 0}}}},
  {ops}
], "outputs": ["{out}"]}}"#
    ))
}

#[test]
fn element_wise_ops_and_the_residual_add_move_onto_the_shard() {
    let g = gathered(
        r#"{"name": "r", "op": "input", "attrs": {"dtype": "f32", "shape": [8, 8]}},
  {"name": "b", "op": "weight", "attrs": {"dtype": "f32", "shape": [8], "init": {"normal": {"seed": 2, "std": 1}}}},
  {"name": "res", "op": "add", "inputs": ["ag", "r"]},
  {"name": "biased", "op": "add", "inputs": ["b", "res"]},
  {"name": "act", "op": "silu", "inputs": ["biased"]}"#,
        "act",
    );
    // The residual is sliced, the chain runs on the shard, and the gather moves to its end.
    prove(
        "elementwise-onto-shard",
        &g,
        &[
            ("all_slice", By(1)),
            ("all_gather>add", By(-1)),
            ("silu>all_gather", By(1)),
        ],
        Proof::Bits,
    );
}

#[test]
fn norms_move_onto_the_shard() {
    let g = gathered(
        r#"{"name": "w", "op": "weight", "attrs": {"dtype": "f32", "shape": [8], "init": {"normal": {"seed": 2, "mean": 1, "std": 0.1}}}},
  {"name": "c", "op": "weight", "attrs": {"dtype": "f32", "shape": [8], "init": {"normal": {"seed": 3, "std": 0.1}}}},
  {"name": "n1", "op": "rms_norm", "inputs": ["ag", "w"]},
  {"name": "n2", "op": "layer_norm", "inputs": ["n1", "w", "c"]}"#,
        "n2",
    );
    // No op count changes: the gather moves past both norms.
    prove(
        "norm-onto-shard",
        &g,
        &[
            ("all_gather>rms_norm", By(-1)),
            ("input>rms_norm", By(1)),
            ("layer_norm>all_gather", By(1)),
        ],
        Proof::Bits,
    );
    // Through whole models: TokenWeave's form (reduce-scatter, residual add and norm on the
    // shard, all-gather) by the collective rules together.
    let (tiny, sharded) = tiny_tp2();
    let options = with_rules(&[
        "all-reduce-to-reduce-scatter-all-gather",
        "elementwise-onto-shard",
        "norm-onto-shard",
    ]);
    let sat = saturate::saturate(&sharded, &options).unwrap();
    let rewritten = saturate::extract_rewritten(&sat, &sharded).unwrap();
    let norm_on_shard = rewritten.nodes().any(|(_, n)| {
        n.op.name() == "rms_norm"
            && rewritten.value(n.outputs[0]).sharding.to_string() == "{tp: S(1)}"
    });
    assert!(norm_on_shard, "{}", weft::ir::text::to_text(&rewritten));
    let inputs: Tensors = weft::inputs::complete_inputs(&tiny, Vec::new(), 4).unwrap();
    let o = RunOptions::default();
    let err = worst(
        &run(&tiny, &inputs, &o).unwrap(),
        &run(&rewritten, &inputs, &o).unwrap(),
    );
    assert!(err <= 1e-5, "{err}");
}

#[test]
fn gemm_and_reduce_scatter_fuse() {
    let g = partial_product(
        2,
        8,
        8,
        6,
        r#"{"name": "rs", "op": "reduce_scatter", "inputs": ["mm"], "attrs": {"axis": "tp", "dim": 0}, "sharding": {"tp": "S(0)"}}"#,
        "rs",
    );
    prove(
        "gemm-reduce-scatter-fusion",
        &g,
        &[
            ("matmul", By(-1)),
            ("reduce_scatter", By(-1)),
            ("matmul_reduce_scatter", By(1)),
        ],
        Proof::Within(1e-5),
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random shapes, device counts and chunk counts.
    #[test]
    fn gemm_reduce_scatter_fusion_holds_for_random_shapes(
        n in prop::sample::select(vec![2u64, 4]),
        chunks in prop::sample::select(vec![1u64, 2, 4]),
        rows_per in 1u64..3,
        k_per in 1u64..4,
        cols in 1u64..7,
    ) {
        let m = n * chunks * rows_per;
        let g = partial_product(
            n,
            m,
            n * k_per,
            cols,
            r#"{"name": "rs", "op": "reduce_scatter", "inputs": ["mm"], "attrs": {"axis": "tp", "dim": 0}, "sharding": {"tp": "S(0)"}}"#,
            "rs",
        );
        let options = one_rule("gemm-reduce-scatter-fusion");
        let sat = saturate::saturate(&g, &options).unwrap();
        let rewritten = saturate::extract_rewritten(&sat, &g).unwrap();
        assert_changes(
            "gemm-reduce-scatter-fusion",
            &g,
            &rewritten,
            &[("matmul", By(-1)), ("reduce_scatter", By(-1)), ("matmul_reduce_scatter", By(1))],
        );
        let inputs: Tensors = weft::inputs::complete_inputs(&g, Vec::new(), m).unwrap();
        // The fused node runs in `chunks` pieces, as a plan's kernel configuration says.
        let fused = rewritten
            .nodes()
            .find(|(_, n)| matches!(n.op, weft::ir::Op::MatMulReduceScatter { .. }))
            .map(|(_, n)| n.name.clone())
            .unwrap();
        let o = RunOptions::default();
        let chunked = RunOptions { chunks: [(fused, chunks)].into(), ..RunOptions::default() };
        let err = worst(&run(&g, &inputs, &o).unwrap(), &run(&rewritten, &inputs, &chunked).unwrap());
        prop_assert!(err <= 1e-5, "relative error {}", err);
    }
}

#[test]
fn all_gather_and_gemm_fuse() {
    let g = gathered(
        r#"{"name": "w", "op": "weight", "attrs": {"dtype": "f32", "shape": [8, 6], "init": {"normal": {"seed": 2, "std": 1}}}},
  {"name": "y", "op": "matmul", "inputs": ["ag", "w"]}"#,
        "y",
    );
    prove(
        "all-gather-gemm-fusion",
        &g,
        &[
            ("all_gather", By(-1)),
            ("matmul", By(-1)),
            ("all_gather_matmul", By(1)),
        ],
        Proof::Within(1e-5),
    );
    // In a Megatron layer, after the collective rules the column-parallel projections
    // gather their input: also fused.
    let (_, sharded) = tiny_tp2();
    let options = with_rules(&[
        "all-reduce-to-reduce-scatter-all-gather",
        "norm-onto-shard",
        "all-gather-gemm-fusion",
    ]);
    let sat = saturate::saturate(&sharded, &options).unwrap();
    assert!(
        applied(&sat.report, "all-gather-gemm-fusion") > 0,
        "{:#?}",
        sat.report
    );
}

#[test]
fn token_splitting_halves_matmuls_and_all_reduces() {
    let g = json(
        r#"{"weft": 1, "name": "rule", "mesh": "tp=2", "nodes": [
  {"name": "x", "op": "input", "attrs": {"dtype": "f32", "shape": [8, 8]}},
  {"name": "w", "op": "weight", "attrs": {"dtype": "f32", "shape": [8, 6], "init": {"normal": {"seed": 2, "std": 1}}}},
  {"name": "y", "op": "matmul", "inputs": ["x", "w"]}
], "outputs": ["y"]}"#,
    );
    prove(
        "token-split-matmul",
        &g,
        &[
            ("matmul", By(1)),
            ("slice>matmul", By(2)),
            ("concat", By(1)),
        ],
        Proof::Within(1e-5),
    );
    let g = partial_product(
        4,
        8,
        8,
        6,
        r#"{"name": "ar", "op": "all_reduce", "inputs": ["mm"], "attrs": {"axis": "tp"}}"#,
        "ar",
    );
    prove(
        "token-split-all-reduce",
        &g,
        &[
            ("all_reduce", By(1)),
            ("matmul>all_reduce", By(-1)),
            ("slice>all_reduce", By(2)),
            ("all_reduce>concat", By(2)),
        ],
        Proof::Bits,
    );
}

#[test]
fn splits_stop_at_the_depth_and_size_guards() {
    let g = json(
        r#"{"weft": 1, "name": "rule", "nodes": [
  {"name": "x", "op": "input", "attrs": {"dtype": "f32", "shape": [64, 8]}},
  {"name": "w", "op": "weight", "attrs": {"dtype": "f32", "shape": [8, 6], "init": {"normal": {"seed": 2, "std": 1}}}},
  {"name": "y", "op": "matmul", "inputs": ["x", "w"]}
], "outputs": ["y"]}"#,
    );
    let count = |depth: usize, min_rows: u64| {
        let mut options = one_rule("token-split-matmul");
        options.guards.split_depth = depth;
        options.guards.min_rows = min_rows;
        let sat = saturate::saturate(&g, &options).unwrap();
        applied(&sat.report, "token-split-matmul")
    };
    // Depth 1: the matmul is split once; depth 2: its halves once more; 64 rows with
    // pieces of at least 32 rows: only the first split.
    assert_eq!(count(1, 1), 1);
    assert_eq!(count(2, 1), 3);
    assert_eq!(count(3, 32), 1);
}

#[test]
fn expert_gemms_split_along_columns_and_blocks() {
    // Comet's second GEMM along its output columns: in the Mixtral fixture.
    let dir = crate::repo("tests/onnx-models/mixtral");
    let graph = weft::load_model(&dir.join("model.onnx"), &weft::LoadOptions::default()).unwrap();
    let graph = weft::to_stage(graph, weft::Stage::Raised).unwrap().0;
    // Each of the two layers' second expert GEMMs becomes column halves of the weights.
    prove(
        "expert-gemm-split-columns",
        &graph,
        &[
            ("expert_matmul", More),
            ("weight>expert_matmul", Fewer),
            ("slice>expert_matmul", More),
            ("expert_matmul>concat", More),
        ],
        Proof::Within(1e-5),
    );
    // Comet's first GEMM along tokens: the blocks expert parallelism delivers.
    let sharded = weft::shard(&graph, &mesh("ep=2")).unwrap();
    prove(
        "expert-gemm-split-blocks",
        &sharded,
        &[
            ("expert_matmul", More),
            ("all_to_all>expert_matmul", Fewer),
            ("slice>expert_matmul", More),
            ("expert_matmul>concat", More),
        ],
        Proof::Within(1e-5),
    );
}

#[test]
fn whole_models_saturate_and_the_extracted_program_keeps_their_outputs() {
    let (tiny, sharded) = tiny_tp2();
    let sat = saturate::saturate(&sharded, &SaturateOptions::default()).unwrap();
    assert!(sat.report.unsound.is_empty());
    let extracted = extract_h100(&sat, &sharded).unwrap();
    let inputs: Tensors = weft::inputs::complete_inputs(&tiny, Vec::new(), 1).unwrap();
    let o = RunOptions::default();
    let err = worst(
        &run(&tiny, &inputs, &o).unwrap(),
        &run(&extracted, &inputs, &o).unwrap(),
    );
    assert!(err <= 1e-5, "{err}");
    // Every rule's results at once, too.
    let all = saturate::extract_rewritten(&sat, &sharded).unwrap();
    let err = worst(
        &run(&tiny, &inputs, &o).unwrap(),
        &run(&all, &inputs, &o).unwrap(),
    );
    assert!(err <= 1e-5, "{err}");
    // Limits are honoured and reported.
    let options = SaturateOptions {
        node_limit: 50,
        ..SaturateOptions::default()
    };
    let sat = saturate::saturate(&sharded, &options).unwrap();
    assert!(
        sat.report
            .phases
            .iter()
            .any(|p| p.stop_reason.starts_with("node limit")),
        "{:#?}",
        sat.report
    );
    // Unknown rules are named.
    let e = saturate::saturate(&sharded, &one_rule("no-such-rule")).unwrap_err();
    assert!(e.to_string().contains("unknown rule `no-such-rule`"), "{e}");
}

#[test]
fn extracted_programs_of_the_onnx_fixtures_at_tp2_match_onnxruntime() {
    for fixture in ["llama-gqa", "qwen2", "mixtral", "gpt2", "bert", "mlp"] {
        let dir = crate::repo(&format!("tests/onnx-models/{fixture}"));
        let graph =
            weft::load_model(&dir.join("model.onnx"), &weft::LoadOptions::default()).unwrap();
        let graph = weft::to_stage(graph, weft::Stage::Raised).unwrap().0;
        let sharded = weft::shard(&graph, &mesh("tp=2")).unwrap();
        let sat = saturate::saturate(&sharded, &SaturateOptions::default()).unwrap();
        assert!(sat.report.unsound.is_empty(), "{fixture}");
        let given = weft::tensor_io::read_input_dir(&dir.join("test_data_set_0")).unwrap();
        let inputs: Tensors = graph
            .inputs()
            .map(|v| graph.value(v).name.clone())
            .zip(given)
            .collect();
        for (kind, program) in [
            ("extracted", extract_h100(&sat, &sharded).unwrap()),
            (
                "rewritten",
                saturate::extract_rewritten(&sat, &sharded).unwrap(),
            ),
        ] {
            let outputs = run(&program, &inputs, &RunOptions::default())
                .unwrap_or_else(|e| panic!("{fixture} ({kind}): {e}"));
            for (i, (name, got)) in outputs.iter().enumerate() {
                let want = weft::tensor_io::read_tensor_file(
                    &dir.join(format!("test_data_set_0/output_{i}.pb")),
                )
                .unwrap()
                .remove(0)
                .1;
                let err = crate::compare::relative_error(&want, got)
                    .unwrap_or_else(|e| panic!("{fixture} ({kind}) {name}: {e}"));
                assert!(
                    err <= 1e-5,
                    "{fixture} ({kind}) {name}: relative error {err} vs onnxruntime"
                );
            }
        }
    }
}

#[test]
fn cli_saturates_extracts_explains_and_lists_rules() {
    use std::process::Command;
    let weft = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(args)
            .current_dir(crate::repo(""))
            .output()
            .unwrap()
    };
    let o = weft(&[
        "dump",
        "examples/tiny-llama.json",
        "--mesh",
        "tp=2",
        "--stage",
        "saturated",
        "--explain",
        "norm-onto-shard",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "e-graph:",
        "phase collective (round 1):",
        "stopped: saturated",
        "all-reduce-to-reduce-scatter-all-gather",
        "matches",
        "applied",
        "(Rewrite=> norm-onto-shard",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    let o = weft(&[
        "dump",
        "examples/tiny-llama.json",
        "--mesh",
        "tp=2",
        "--stage",
        "saturated",
        "--format",
        "json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(report["nodes"].as_u64().unwrap() > 0);
    assert_eq!(report["phases"][0]["ruleset"], "collective");
    // The extracted program is labelled and runs.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("extracted.json");
    let o = weft(&[
        "dump",
        "examples/tiny-llama.json",
        "--mesh",
        "tp=2",
        "--stage",
        "extracted",
        "--format",
        "json",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("[extracted: DAG-greedy, cost model of h100-sxm-8]"));
    let out = dir.path().join("out.npz");
    let o = weft(&[
        "run",
        file.to_str().unwrap(),
        "--seed",
        "3",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Rules: text and JSON, every rule listed with its paper.
    let o = weft(&["rules", "--json"]);
    let rules: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rules = rules.as_array().unwrap();
    // The exact e-graph rules, then the opt-in model-changing ones (never in the e-graph).
    let changing = weft::passes::model_change::MODEL_CHANGING_RULES;
    assert_eq!(rules.len(), saturate::RULES.len() + changing.len());
    assert!(
        rules
            .iter()
            .all(|r| !r["paper"].as_str().unwrap().is_empty())
    );
    for (i, r) in rules.iter().enumerate() {
        let exact = i < saturate::RULES.len();
        assert_eq!(r["exact"], exact, "{r}");
        assert_eq!(r["ruleset"] == "model-changing", !exact, "{r}");
        assert_eq!(r.get("changes").is_some(), !exact, "{r}");
    }
    assert!(saturate::RULES.iter().all(|r| r.exact));
    let o = weft(&["rules"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("gemm-reduce-scatter-fusion [fusion, exact]")
    );
    // An unknown rule is a clean error.
    let o = weft(&[
        "dump",
        "examples/tiny-llama.json",
        "--stage",
        "saturated",
        "--rules",
        "nope",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown rule `nope`"));
}

#[test]
fn slice_of_gather_folds_away() {
    let g = gathered(
        r#"{"name": "s", "op": "all_slice", "inputs": ["ag"], "attrs": {"axis": "tp", "dim": 0}, "sharding": {"tp": "S(0)"}},
  {"name": "y", "op": "exp", "inputs": ["s"], "sharding": {"tp": "S(0)"}}"#,
        "y",
    );
    let sat = saturate::saturate(&g, &one_rule("slice-of-gather")).unwrap();
    let program = extract_h100(&sat, &g).unwrap();
    assert_changes(
        "slice-of-gather",
        &g,
        &program,
        &[
            ("all_slice", By(-1)),
            ("all_gather", By(-1)),
            ("input>exp", By(1)),
        ],
    );
    let inputs: Tensors = weft::inputs::complete_inputs(&g, Vec::new(), 3).unwrap();
    let o = RunOptions::default();
    crate::compare::assert_bits_eq(
        &run(&g, &inputs, &o).unwrap(),
        &run(&program, &inputs, &o).unwrap(),
    );
}

#[test]
fn element_wise_chains_fuse_into_their_producer() {
    // The fused kernel runs each step with that op's own kernel, so this proof checks what
    // the rule wrote (steps, order, operands, sides), bit for bit; the kernel itself is
    // checked against an independent plain-loop reference in backends/cpu/tests/ops
    // (`fused_elementwise_is_gemm_then_each_step_in_order`).
    // Gate projection + SiLU + gating multiply + the residual add, in a Megatron layer.
    let (_, sharded) = tiny_tp2();
    prove(
        "elementwise-fusion",
        &sharded,
        &[
            ("fused_elementwise", More),
            ("silu", By(-2)),
            ("matmul", Fewer),
        ],
        Proof::Bits,
    );
    // GPT-2's bias + GELU chains. Its exported GEMMs run on flattened tokens and reach
    // their bias through a reshape, so with attention raised (its score GEMMs gone) no
    // GEMM is a producer here: the chains fuse on their own, and every GEMM stays.
    let dir = crate::repo("tests/onnx-models/gpt2");
    let graph = weft::load_model(&dir.join("model.onnx"), &weft::LoadOptions::default()).unwrap();
    let graph = weft::to_stage(graph, weft::Stage::Raised).unwrap().0;
    prove(
        "elementwise-fusion",
        &graph,
        &[
            ("fused_elementwise", More),
            ("tanh", By(-2)),
            ("add", Fewer),
            ("matmul", By(0)),
        ],
        Proof::Bits,
    );
    // The step limit holds.
    let mut options = one_rule("elementwise-fusion");
    options.guards.max_fused_steps = 2;
    let sat = saturate::saturate(&sharded, &options).unwrap();
    let longest = sat
        .egraph
        .classes()
        .flat_map(|c| c.nodes.iter())
        .filter_map(|n| match n.head {
            saturate::Head::Op(i) => match sat.egraph.analysis.ops.get(i) {
                weft::ir::Op::FusedElementwise { steps } => Some(steps.len()),
                _ => None,
            },
            _ => None,
        })
        .max();
    assert_eq!(longest, Some(2));
}

#[test]
fn split_halves_flow_between_ops_without_rejoining() {
    // Two matmuls in a row, each split in halves: with slice-of-concat the second reads
    // the first's halves directly, so the chain runs as two micro-batches.
    let g = json(
        r#"{"weft": 1, "name": "rule", "nodes": [
  {"name": "x", "op": "input", "attrs": {"dtype": "f32", "shape": [16, 8]}},
  {"name": "w1", "op": "weight", "attrs": {"dtype": "f32", "shape": [8, 8], "init": {"normal": {"seed": 2, "std": 0.5}}}},
  {"name": "w2", "op": "weight", "attrs": {"dtype": "f32", "shape": [8, 4], "init": {"normal": {"seed": 3, "std": 0.5}}}},
  {"name": "h", "op": "matmul", "inputs": ["x", "w1"]},
  {"name": "a", "op": "silu", "inputs": ["h"]},
  {"name": "y", "op": "matmul", "inputs": ["h", "w2"]}
], "outputs": ["y", "a"]}"#,
    );
    let mut options = with_rules(&["token-split-matmul", "slice-of-concat"]);
    options.guards.min_rows = 1;
    let sat = saturate::saturate(&g, &options).unwrap();
    assert!(
        applied(&sat.report, "slice-of-concat") >= 2,
        "{:#?}",
        sat.report
    );
    let program = saturate::extract_rewritten(&sat, &g).unwrap();
    let inputs: Tensors = weft::inputs::complete_inputs(&g, Vec::new(), 3).unwrap();
    let o = RunOptions::default();
    let err = worst(
        &run(&g, &inputs, &o).unwrap(),
        &run(&program, &inputs, &o).unwrap(),
    );
    assert!(err <= 1e-5, "{err}");
    prove(
        "slice-of-concat",
        &split_by_hand(),
        &[
            ("concat", By(-1)),
            ("slice", By(-2)),
            ("matmul>exp", By(1)),
            ("matmul>tanh", By(1)),
        ],
        Proof::Bits,
    );
}

/// A matmul written split by hand (slices of x, two matmuls, a concat) followed by
/// slices of that concat: what slice-of-concat folds.
fn split_by_hand() -> Graph {
    json(
        r#"{"weft": 1, "name": "rule", "nodes": [
  {"name": "x", "op": "input", "attrs": {"dtype": "f32", "shape": [16, 8]}},
  {"name": "w1", "op": "weight", "attrs": {"dtype": "f32", "shape": [8, 8], "init": {"normal": {"seed": 2, "std": 0.5}}}},
  {"name": "x0", "op": "slice", "inputs": ["x"], "attrs": {"axis": 0, "start": 0, "end": 8}},
  {"name": "x1", "op": "slice", "inputs": ["x"], "attrs": {"axis": 0, "start": 8, "end": 16}},
  {"name": "h0", "op": "matmul", "inputs": ["x0", "w1"]},
  {"name": "h1", "op": "matmul", "inputs": ["x1", "w1"]},
  {"name": "h", "op": "concat", "inputs": ["h0", "h1"], "attrs": {"axis": 0}},
  {"name": "s0", "op": "slice", "inputs": ["h"], "attrs": {"axis": 0, "start": 0, "end": 8}},
  {"name": "s1", "op": "slice", "inputs": ["h"], "attrs": {"axis": 0, "start": 8, "end": 16}},
  {"name": "y0", "op": "exp", "inputs": ["s0"]},
  {"name": "y1", "op": "tanh", "inputs": ["s1"]}
], "outputs": ["y0", "y1"]}"#,
    )
}

#[test]
fn rules_handle_batched_products_broadcasts_and_other_axes() {
    // A product with batch dims from b, reduce-scattered along a negative dim: the fusion
    // reads the dim against the product's rank.
    let rsneg = json(
        r#"{"weft": 1, "name": "rsneg", "mesh": "tp=2", "nodes": [
  {"name": "a", "op": "input", "attrs": {"dtype": "f32", "shape": [32, 8]}, "sharding": {"tp": "S(1)"}},
  {"name": "b", "op": "input", "attrs": {"dtype": "f32", "shape": [2, 8, 6]}, "sharding": {"tp": "S(1)"}},
  {"name": "z", "op": "matmul", "inputs": ["a", "b"], "sharding": {"tp": "P(sum)"}},
  {"name": "w", "op": "reduce_scatter", "inputs": ["z"], "attrs": {"axis": "tp", "dim": -2}, "sharding": {"tp": "S(1)"}}
], "outputs": ["w"]}"#,
    );
    prove(
        "gemm-reduce-scatter-fusion",
        &rsneg,
        &[
            ("matmul", By(-1)),
            ("reduce_scatter", By(-1)),
            ("matmul_reduce_scatter", By(1)),
        ],
        Proof::Within(1e-5),
    );
    // The other operand of rank higher than the gathered one: left alone.
    let ewg = json(
        r#"{"weft": 1, "name": "ewg", "mesh": "tp=2", "nodes": [
  {"name": "x", "op": "input", "attrs": {"dtype": "f32", "shape": [4, 8]}, "sharding": {"tp": "S(0)"}},
  {"name": "r", "op": "input", "attrs": {"dtype": "f32", "shape": [3, 8, 8]}},
  {"name": "g", "op": "all_gather", "inputs": ["x"], "attrs": {"axis": "tp", "dim": 0}},
  {"name": "y", "op": "add", "inputs": ["g", "r"]}
], "outputs": ["y"]}"#,
    );
    let sat = saturate::saturate(&ewg, &one_rule("elementwise-onto-shard")).unwrap();
    assert!(sat.report.unsound.is_empty());
    // An operand split on another axis keeps that split in the rewritten nodes.
    let ewg2 = json(
        r#"{"weft": 1, "name": "ewg2", "mesh": "tp=2,dp=2", "nodes": [
  {"name": "x", "op": "input", "attrs": {"dtype": "f32", "shape": [1, 4]}, "sharding": {"tp": "S(1)"}},
  {"name": "r", "op": "input", "attrs": {"dtype": "f32", "shape": [4, 8]}, "sharding": {"dp": "S(0)"}},
  {"name": "g", "op": "all_gather", "inputs": ["x"], "attrs": {"axis": "tp", "dim": 1}},
  {"name": "y", "op": "add", "inputs": ["g", "r"], "sharding": {"dp": "S(0)"}}
], "outputs": ["y"]}"#,
    );
    prove(
        "elementwise-onto-shard",
        &ewg2,
        &[
            ("all_slice", By(1)),
            ("all_gather>add", By(-1)),
            ("add>all_gather", By(1)),
        ],
        Proof::Bits,
    );
}

#[test]
fn the_fused_gemm_reduce_scatter_handles_batched_weights() {
    let g = json(
        r#"{"weft": 1, "name": "mmrs", "mesh": "tp=2", "nodes": [
  {"name": "a", "op": "input", "attrs": {"dtype": "f32", "shape": [4, 8]}, "sharding": {"tp": "S(1)"}},
  {"name": "b", "op": "input", "attrs": {"dtype": "f32", "shape": [2, 8, 6]}, "sharding": {"tp": "S(1)"}},
  {"name": "y", "op": "matmul_reduce_scatter", "inputs": ["a", "b"], "attrs": {"axis": "tp", "dim": 1}, "sharding": {"tp": "S(1)"}},
  {"name": "z", "op": "matmul", "inputs": ["a", "b"], "sharding": {"tp": "P(sum)"}},
  {"name": "w", "op": "reduce_scatter", "inputs": ["z"], "attrs": {"axis": "tp", "dim": 1}, "sharding": {"tp": "S(1)"}}
], "outputs": ["y", "w"]}"#,
    );
    let inputs: Tensors = weft::inputs::complete_inputs(&g, Vec::new(), 2).unwrap();
    let out = run(&g, &inputs, &RunOptions::default()).unwrap();
    // The fused op runs chunk by chunk, each chunk's GEMM on a slice of `a`'s rows.
    let err = crate::compare::relative_error(&out[1].1, &out[0].1).unwrap();
    assert!(err <= 1e-6, "{err}");
}

/// Review of issue 10: two outputs the e-graph found equal (`y1 = relu(x)`, `y2 = relu(x)`)
/// were extracted as one value listed twice, so output `y1` lost its name (the program
/// returned `y2, y2`, and `weft run -o` refused to write two arrays named `y2`). Each
/// output keeps its own name; the values are the original's, bit for bit.
#[test]
fn outputs_merged_by_the_e_graph_keep_their_names() {
    let g = weft::json::parse_str(
        r#"{"weft": 1, "name": "two", "nodes": [
  {"name": "x", "op": "input", "attrs": {"dtype": "f32", "shape": [2, 3]}},
  {"name": "y1", "op": "relu", "inputs": ["x"]},
  {"name": "y2", "op": "relu", "inputs": ["x"]},
  {"name": "z", "op": "exp", "inputs": ["x"]}
], "outputs": ["y1", "y2", "x", "z"]}"#,
        Path::new("two.json"),
    )
    .unwrap();
    let sat = saturate::saturate(&g, &SaturateOptions::default()).unwrap();
    let program = extract_h100(&sat, &g).unwrap();
    let names =
        |g: &Graph| -> Vec<String> { g.outputs.iter().map(|&v| g.value(v).name.clone()).collect() };
    assert_eq!(names(&program), ["y1", "y2", "x", "z"]);
    let inputs: Tensors = weft::inputs::complete_inputs(&g, Vec::new(), 5).unwrap();
    let o = RunOptions::default();
    crate::compare::assert_bits_eq(
        &run(&g, &inputs, &o).unwrap(),
        &run(&program, &inputs, &o).unwrap(),
    );
}

/// `dump --stage extracted --hw` prices the choice with that hardware's cost model, says so
/// in the label, and `--hw` elsewhere is refused rather than ignored.
#[test]
fn dump_extracted_takes_the_hardware_to_price_with() {
    use crate::cli::{assert_clean_failure, stderr, stdout, weft};
    let o = weft(&[
        "dump",
        "examples/llama3-70b-layer.json",
        "--mesh",
        "tp=2",
        "--stage",
        "extracted",
        "--hw",
        "a100-sxm-8",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("[extracted: DAG-greedy, cost model of a100-sxm-8]"),
        "{}",
        stdout(&o)
    );
    let o = weft(&["dump", "examples/tiny-llama.json", "--hw", "a100-sxm-8"]);
    assert_clean_failure(&o);
    assert!(
        stderr(&o).contains("--hw chooses the cost model"),
        "{}",
        stderr(&o)
    );
    // An f32 model on a profile without an f32 rate: one clear reason, said once.
    let o = weft(&[
        "dump",
        "examples/tiny-llama.json",
        "--stage",
        "extracted",
        "--hw",
        "a100-sxm-8",
    ]);
    assert_clean_failure(&o);
    let err = stderr(&o);
    assert_eq!(err.matches("extraction failed").count(), 1, "{err}");
    assert!(err.contains("peak_dense_f32"), "{err}");
}
