//! `weft compile --strategy`: every fixed strategy compiles Llama-3-70B (two layers, the
//! zoo builder) at `tp=8` and the MoE examples at `ep=8`; every strategy's plan of every
//! ONNX fixture at `tp=2` runs on the CPU executor and matches onnxruntime; `none`'s
//! program is the sharded graph; a strategy whose rules cannot apply says so.

use std::path::{Path, PathBuf};

use weft::compile::{CompileRequest, Compiled, compile};
use weft::hardware::Profile;
use weft::passes::strategy::Strategy;
use weft::plan::KernelConfig;
use weft::zoo::{LlamaConfig, llama};

use crate::cli::{stderr, weft};
use crate::repo;

fn request(model: &Path, mesh: &str, strategy: Strategy) -> CompileRequest {
    CompileRequest {
        strategy,
        model: model.to_path_buf(),
        dims: Default::default(),
        mesh: Some(mesh.parse().expect("a valid mesh spec")),
        sp_norms: false,
        profile: Profile::builtin("h100-sxm-8").unwrap(),
        max_memory: None,
        plan_path: None,
        allow: Default::default(),
    }
}

fn compiled(model: &Path, mesh: &str, strategy: Strategy) -> Compiled {
    compile(&request(model, mesh, strategy))
        .unwrap_or_else(|e| panic!("{} at {mesh}, --strategy {strategy}: {e}", model.display()))
}

/// Llama-3-70B with `layers` layers (embedding and head included), written to `dir`.
fn llama3_70b(dir: &Path, layers: u64) -> PathBuf {
    let cfg = LlamaConfig {
        layers,
        ..LlamaConfig::llama3_70b()
    };
    let graph = llama(&cfg).expect("the builder makes a valid graph");
    let path = dir.join(format!("llama3-70b-{layers}.json"));
    std::fs::write(&path, weft::json::to_json(&graph)).unwrap();
    path
}

fn pipelined_chunks(c: &Compiled) -> Vec<u64> {
    c.plan.ranks[0]
        .tasks
        .iter()
        .filter_map(|t| match t.kernel {
            KernelConfig::Pipelined { chunks, .. } => Some(chunks),
            _ => None,
        })
        .collect()
}

fn rule_count(c: &Compiled, rule: &str) -> u64 {
    c.plan
        .rules_applied
        .iter()
        .find(|r| r.rule == rule)
        .map_or(0, |r| r.count)
}

#[test]
fn every_fixed_strategy_compiles_llama3_70b_at_tp8() {
    let dir = tempfile::tempdir().unwrap();
    let model = llama3_70b(dir.path(), 2);
    for strategy in Strategy::FIXED {
        let c = compiled(&model, "tp=8", strategy);
        let what = format!("--strategy {strategy}");
        assert_eq!(c.plan.options.strategy, strategy.name(), "{what}");
        let p = &c.plan.prediction;
        assert!(
            p.bound_us <= p.predicted_us && p.predicted_us <= p.baseline_us,
            "{what}: {p:?}"
        );
        let chunks = pipelined_chunks(&c);
        match strategy {
            Strategy::None => {
                assert!(c.plan.rules_applied.is_empty(), "{what}");
                assert!(c.notes.is_empty(), "{what}: {:?}", c.notes);
            }
            Strategy::MegatronSp => {
                // Two all-reduces per layer and the vocabulary-parallel embedding's, each
                // split into reduce-scatter + all-gather.
                assert_eq!(
                    rule_count(&c, "all-reduce-to-reduce-scatter-all-gather"),
                    5,
                    "{what}"
                );
                assert!(chunks.is_empty(), "{what}: {chunks:?}");
            }
            // Every all-reduce in two halves of the tokens, nothing fused.
            Strategy::TokenWeave => {
                assert_eq!(rule_count(&c, "token-split-all-reduce"), 5, "{what}");
                assert!(chunks.is_empty(), "{what}: {chunks:?}");
            }
            // PyTorch's per-rank decomposition: one chunk per rank of tp=8.
            Strategy::AsyncTp => {
                assert!(
                    !chunks.is_empty() && chunks.iter().all(|&n| n == 8),
                    "{chunks:?}"
                );
            }
            // All-gather + GEMM per rank (8); GEMM + reduce-scatter per 128-row tile of
            // 2048 tokens over 8 ranks (2).
            Strategy::Flux | Strategy::Comet => {
                assert!(chunks.contains(&8) && chunks.contains(&2), "{chunks:?}");
                assert!(chunks.iter().all(|&n| n == 8 || n == 2), "{chunks:?}");
            }
            Strategy::Best => unreachable!("not a fixed strategy"),
        }
    }
}

/// Comet on a dense model: its MoE rules cannot apply, and the notes say so; on the MoE
/// examples at `ep=8` they do, and every other strategy compiles them too.
#[test]
fn moe_examples_at_ep8_and_comet_on_a_dense_model() {
    let dense = compiled(
        &repo("examples/llama3-70b-layer.json"),
        "tp=8",
        Strategy::Comet,
    );
    for rule in ["expert-gemm-split-blocks", "expert-gemm-split-columns"] {
        assert!(
            dense
                .notes
                .iter()
                .any(|n| n.contains(&format!("rule `{rule}` did not fire"))),
            "{rule}: {:?}",
            dense.notes
        );
    }
    for model in [
        "examples/mixtral-8x7b-moe-layer.json",
        "examples/gpt3-xl-moe.json",
    ] {
        for strategy in Strategy::FIXED {
            let c = compiled(&repo(model), "ep=8", strategy);
            let p = &c.plan.prediction;
            assert!(
                p.bound_us <= p.predicted_us && p.predicted_us <= p.baseline_us,
                "{model} --strategy {strategy}: {p:?}"
            );
            if strategy == Strategy::Comet {
                let split = rule_count(&c, "expert-gemm-split-blocks")
                    + rule_count(&c, "expert-gemm-split-columns");
                assert!(
                    split > 0,
                    "{model}: {:?} {:?}",
                    c.plan.rules_applied,
                    c.notes
                );
            }
        }
    }
}

#[test]
fn none_is_the_sharded_graph() {
    let model = "examples/tiny-llama.json";
    let c = compiled(&repo(model), "tp=2", Strategy::None);
    let graph = crate::load(model);
    let sharded = weft::passes::shard::shard(
        &graph,
        &weft::passes::shard::ShardOptions {
            mesh: "tp=2".parse().unwrap(),
            sp_norms: false,
        },
    )
    .unwrap();
    assert_eq!(
        weft::json::to_json(&c.program),
        weft::json::to_json(&sharded)
    );
}

/// The ONNX fixtures (scripts/export_hf_fixtures.py and the MLP) with their output names.
const ONNX_FIXTURES: [(&str, &str); 6] = [
    ("gpt2", "logits"),
    ("bert", "last_hidden_state"),
    ("llama-gqa", "logits"),
    ("qwen2", "logits"),
    ("mixtral", "logits"),
    ("mlp", "probs"),
];

/// Every strategy's plan runs as scheduled and gives onnxruntime's outputs. The fixtures'
/// few tokens are below the rules' smallest piece (8 rows), so only Comet's expert-GEMM
/// split applies to them (mixtral); the test below runs the other rewrites.
#[test]
fn every_strategy_of_every_onnx_fixture_at_tp2_matches_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    for (name, output) in ONNX_FIXTURES {
        let model = format!("tests/onnx-models/{name}/model.onnx");
        let data = format!("tests/onnx-models/{name}/test_data_set_0");
        let want =
            weft::tensor_io::read_tensor_file(&repo(&format!("{data}/output_0.pb"))).unwrap();
        let meshes: &[&str] = if name == "mixtral" {
            &["tp=2", "ep=2"]
        } else {
            &["tp=2"]
        };
        for (strategy, mesh) in Strategy::ALL
            .into_iter()
            .flat_map(|s| meshes.iter().map(move |m| (s, *m)))
        {
            let what = format!("{name} at {mesh}, --strategy {strategy}");
            let plan = dir.path().join(format!("{name}-{mesh}-{strategy}.json"));
            let out = dir.path().join(format!("{name}-{mesh}-{strategy}.npz"));
            let o = weft(&[
                "compile",
                &model,
                "--mesh",
                mesh,
                "--hw",
                "h100-sxm-8",
                "--strategy",
                strategy.name(),
                "-o",
                plan.to_str().unwrap(),
            ]);
            assert!(o.status.success(), "{what}: {}", stderr(&o));
            let o = weft(&[
                "run",
                plan.to_str().unwrap(),
                "--input-dir",
                &data,
                "-o",
                out.to_str().unwrap(),
            ]);
            assert!(o.status.success(), "{what}: {}", stderr(&o));
            let got = weft::tensor_io::read_tensor_file(&out).unwrap();
            assert_eq!(got.len(), 1, "{what}");
            assert_eq!(got[0].0, output, "{what}");
            let err = crate::compare::relative_error(&want[0].1, &got[0].1)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(err <= 1e-5, "{what}: {err:.2e} from onnxruntime");
        }
    }
}

/// Tiny Llama at 64 tokens over `tp=2`: every strategy's rewrites apply (32 rows per rank,
/// two halves of 32 tokens), and its plan — fused ops run in the strategy's chunk count,
/// halves, collectives on shards — gives the single-device model's logits (the plain
/// executor on the unsharded graph: an independent reference), within 1e-5 of the
/// largest logit.
#[test]
fn every_strategy_of_tiny_llama_runs_and_matches_the_single_device_model() {
    let dir = tempfile::tempdir().unwrap();
    let seq = 64usize;
    let tokens: Vec<i64> = (0..seq as u64)
        .map(|i| (weft::ir::rng::uniform(11, i, 0.0, 256.0) as i64).clamp(0, 255))
        .collect();
    let input = dir.path().join("tokens.npz");
    weft::tensor_io::write_npz(
        &input,
        &[(
            "tokens".to_owned(),
            weft::ir::Tensor::from_i64(weft::ir::DType::I64, vec![1, seq], tokens).unwrap(),
        )],
    )
    .unwrap();
    let input = input.to_str().unwrap();
    let reference = dir.path().join("reference.npz");
    let o = weft(&[
        "run",
        "examples/tiny-llama.json",
        "--dim",
        "seq=64",
        "--input",
        input,
        "-o",
        reference.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = weft::tensor_io::read_tensor_file(&reference).unwrap();
    for strategy in Strategy::ALL {
        let what = format!("tiny-llama at tp=2, 64 tokens, --strategy {strategy}");
        let model = repo("examples/tiny-llama.json");
        let mut req = request(&model, "tp=2", strategy);
        req.dims.insert("seq".into(), 64);
        let c = compile(&req).unwrap_or_else(|e| panic!("{what}: {e}"));
        let rules: Vec<&str> = c
            .plan
            .rules_applied
            .iter()
            .map(|r| r.rule.as_str())
            .collect();
        let expect: &[&str] = match strategy {
            Strategy::None | Strategy::Best => &[],
            Strategy::MegatronSp => &["all-reduce-to-reduce-scatter-all-gather"],
            Strategy::AsyncTp | Strategy::Flux | Strategy::Comet => {
                &["gemm-reduce-scatter-fusion", "all-gather-gemm-fusion"]
            }
            Strategy::TokenWeave => &["token-split-all-reduce", "token-split-matmul"],
        };
        for rule in expect {
            assert!(rules.contains(rule), "{what}: {rules:?} {:?}", c.notes);
        }
        let chunks = pipelined_chunks(&c);
        match strategy {
            Strategy::AsyncTp => assert!(!chunks.is_empty() && chunks.iter().all(|&n| n == 2)),
            // All-gather + GEMM per rank (2), GEMM + reduce-scatter per 128-row tile of 32
            // rows (1).
            Strategy::Flux | Strategy::Comet => {
                assert!(chunks.contains(&2) && chunks.contains(&1), "{chunks:?}")
            }
            _ => {}
        }
        let plan = dir.path().join(format!("tiny-{strategy}.json"));
        std::fs::write(&plan, c.plan.to_json_string()).unwrap();
        let out = dir.path().join(format!("tiny-{strategy}.npz"));
        let o = weft(&[
            "run",
            plan.to_str().unwrap(),
            "--input",
            input,
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{what}: {}", stderr(&o));
        let got = weft::tensor_io::read_tensor_file(&out).unwrap();
        let err = crate::compare::relative_error(&want[0].1, &got[0].1)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            err <= 1e-5,
            "{what}: {err:.2e} from the single-device model"
        );
    }
}

#[test]
fn an_unknown_strategy_is_refused_naming_the_strategies() {
    let o = weft(&[
        "compile",
        "examples/tiny-llama.json",
        "--hw",
        "h100-sxm-8",
        "--strategy",
        "fastest",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("unknown strategy `fastest`") && e.contains("megatron-sp, async-tp"),
        "{e}"
    );
}
