//! The specs name real rules once each, cover every fixed strategy, and are what
//! docs/strategies.md says; each fixed program of a bundled example is what its spec
//! asks for (rules, chunk counts, SM shares) and says what did not apply.

use std::path::PathBuf;

use weft_hardware::Profile;
use weft_ir::Graph;
use weft_plan::KernelConfig;

use super::spec::{docs_table, spec};
use super::{SPECS, Strategy, fixed_program};
use crate::cost::CostModel;
use crate::saturate::select_rules;
use crate::schedule::{ScheduleOptions, TaskCosts, schedule};
use crate::shard::{ShardOptions, shard};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn sharded(path: &str, mesh: &str) -> Graph {
    let g = weft_frontend_json::load(&repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    shard(
        &g,
        &ShardOptions {
            mesh: mesh.parse().unwrap(),
            sp_norms: false,
        },
    )
    .unwrap_or_else(|e| panic!("{path} at {mesh}: {e}"))
}

fn model(g: &Graph) -> CostModel {
    CostModel::new(&Profile::builtin("h100-sxm-8").unwrap(), &g.mesh).unwrap()
}

#[test]
fn every_fixed_strategy_has_one_spec_naming_known_rules_once() {
    let specs: Vec<Strategy> = SPECS.iter().map(|s| s.strategy).collect();
    assert_eq!(specs, Strategy::FIXED);
    assert!(spec(Strategy::Best).is_none());
    for s in &SPECS {
        let names: Vec<String> = s.rules.value.iter().map(|r| (*r).to_owned()).collect();
        select_rules(&names).unwrap_or_else(|e| panic!("{}: {e}", s.strategy));
        for source in [
            s.rules.source,
            s.chunks.source,
            s.fused_comm.source,
            s.collective_comm.source,
        ] {
            assert!(!source.is_empty(), "{}", s.strategy);
        }
    }
    // `none` uses no rule; every other strategy splits its all-reduces, by the token
    // (TokenWeave) or into reduce-scatter + all-gather (the others).
    assert!(SPECS[0].rules.value.is_empty());
    for s in &SPECS[1..] {
        let split = if s.strategy == Strategy::TokenWeave {
            "token-split-all-reduce"
        } else {
            "all-reduce-to-reduce-scatter-all-gather"
        };
        assert!(s.rules.value.contains(&split), "{}", s.strategy);
    }
}

const DOC_BEGIN: &str = "<!-- generated from passes/src/strategy/spec.rs by `WEFT_BLESS=1 cargo test -p weft-passes strategy::spec_tests::docs`; do not edit by hand -->\n";
const DOC_END: &str = "<!-- end of generated tables -->\n";

/// docs/strategies.md's tables are the specs, so the doc cannot drift from the code.
#[test]
fn docs_strategies_md_tables_are_generated() {
    let path = repo("docs/strategies.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (head, rest) = doc
        .split_once(DOC_BEGIN)
        .expect("the doc has the begin marker");
    let (_, tail) = rest
        .split_once(DOC_END)
        .expect("the doc has the end marker");
    let expected = format!(
        "{head}{DOC_BEGIN}\n{}\n{}\n{DOC_END}{tail}",
        docs_table(),
        figures()
    );
    if std::env::var_os("WEFT_BLESS").is_some() {
        std::fs::write(&path, &expected).unwrap();
        return;
    }
    assert_eq!(
        doc, expected,
        "docs/strategies.md is out of date: run WEFT_BLESS=1 cargo test -p weft-passes strategy::spec_tests::docs"
    );
}

/// What each fixed strategy's plan of one Llama-3-70B layer at `tp=8` on `h100-sxm-8`
/// predicts (the figures `weft compile examples/llama3-70b-layer.json --mesh tp=8 --hw
/// h100-sxm-8 --strategy NAME` prints).
fn figures() -> String {
    let g = sharded("examples/llama3-70b-layer.json", "tp=8");
    let cost = model(&g);
    let mut s = String::from(
        "One Llama-3-70B layer (`examples/llama3-70b-layer.json`, 2048 tokens) at `tp=8` on \
         `h100-sxm-8`, each strategy's program scheduled by Weft's scheduler under its kernel \
         configuration (what `weft compile examples/llama3-70b-layer.json --mesh tp=8 --hw \
         h100-sxm-8 --strategy NAME` prints; computed by this table's generator, not \
         measured on GPUs):\n\n\
         | strategy | predicted step (µs) | no-overlap baseline (µs) | exposed communication \
         (µs) | communication hidden |\n| --- | --- | --- | --- | --- |\n",
    );
    for spec in &SPECS {
        let p = fixed_program(spec.strategy, &g, &cost).unwrap();
        let plan = schedule(&p.graph, &p.costs, &ScheduleOptions::default()).unwrap();
        let q = &plan.prediction;
        s.push_str(&format!(
            "| `{}` | {:.1} | {:.1} | {:.1} | {:.1}% |\n",
            spec.strategy,
            q.predicted_us,
            q.baseline_us,
            q.exposed_comm_us,
            q.overlap_efficiency * 100.0
        ));
    }
    s
}

fn ops(g: &Graph) -> Vec<&'static str> {
    g.nodes().map(|(_, n)| n.op.name()).collect()
}

fn count(g: &Graph, op: &str) -> usize {
    ops(g).iter().filter(|o| **o == op).count()
}

#[test]
fn none_is_the_sharded_graph_and_best_is_refused() {
    let g = sharded("examples/llama3-70b-layer.json", "tp=8");
    let cost = model(&g);
    let p = fixed_program(Strategy::None, &g, &cost).unwrap();
    assert_eq!(
        weft_frontend_json::to_json(&p.graph),
        weft_frontend_json::to_json(&g)
    );
    assert!(
        p.rules_used.is_empty() && p.notes.is_empty(),
        "{:?}",
        p.notes
    );
    let e = fixed_program(Strategy::Best, &g, &cost).unwrap_err();
    assert!(e.to_string().contains("not a fixed strategy"), "{e}");
}

#[test]
fn megatron_sp_splits_every_all_reduce_and_fuses_nothing() {
    let g = sharded("examples/llama3-70b-layer.json", "tp=8");
    assert_eq!(count(&g, "all_reduce"), 2);
    let p = fixed_program(Strategy::MegatronSp, &g, &model(&g)).unwrap();
    assert_eq!(count(&p.graph, "all_reduce"), 0, "{:?}", ops(&p.graph));
    assert_eq!(count(&p.graph, "reduce_scatter"), 2);
    assert_eq!(count(&p.graph, "all_gather"), 2);
    assert_eq!(count(&p.graph, "matmul_reduce_scatter"), 0);
    assert_eq!(count(&p.graph, "all_gather_matmul"), 0);
    // The norm after attention runs on the token shard (the layer's first reads the
    // whole input, as the sharded graph gives it).
    let rows: Vec<u64> = p
        .graph
        .nodes()
        .filter(|(_, n)| n.op.name() == "rms_norm")
        .map(|(_, n)| {
            let s = p
                .graph
                .value(n.outputs[0])
                .ty
                .shape
                .eval(&p.graph.dims)
                .unwrap();
            s[s.len() - 2]
        })
        .collect();
    assert!(rows.contains(&(2048 / 8)), "{rows:?}");
    let used: Vec<&str> = p.rules_used.iter().map(|(r, _)| r.as_str()).collect();
    assert!(
        used.contains(&"all-reduce-to-reduce-scatter-all-gather"),
        "{used:?}"
    );
    assert!(used.contains(&"norm-onto-shard"), "{used:?}");
}

/// The fused ops' chunk counts and SM shares are the spec's, and the scheduler's costs
/// carry them into the plan.
#[test]
fn async_tp_and_flux_chunk_as_their_specs_say() {
    let g = sharded("examples/llama3-70b-layer.json", "tp=8");
    let cost = model(&g);
    // (all-gather + GEMM, GEMM + reduce-scatter): per rank of tp=8, or per 128-row tile of
    // 2048 tokens over 8 ranks (256 rows per rank: two tiles).
    for (strategy, (ag, rs)) in [(Strategy::AsyncTp, (8u64, 8u64)), (Strategy::Flux, (8, 2))] {
        let p = fixed_program(strategy, &g, &cost).unwrap();
        let fused: Vec<_> = p
            .graph
            .nodes()
            .filter(|(_, n)| matches!(n.op.name(), "matmul_reduce_scatter" | "all_gather_matmul"))
            .collect();
        // o_proj and down_proj into a reduce-scatter; qkv and gate/up from an all-gather.
        assert_eq!(count(&p.graph, "matmul_reduce_scatter"), 2, "{strategy}");
        assert!(count(&p.graph, "all_gather_matmul") >= 2, "{strategy}");
        for (id, n) in fused {
            let want = if n.op.name() == "all_gather_matmul" {
                ag
            } else {
                rs
            };
            let choice = p.costs.choice(&n.name);
            assert_eq!(choice.chunks, Some(want), "{strategy} {}", n.name);
            let c = p.costs.cost(&p.graph, id).unwrap();
            match c.kernel {
                KernelConfig::Pipelined { chunks, .. } => assert_eq!(chunks, want),
                ref k => panic!("{strategy} {}: {k:?}", n.name),
            }
            if n.op.name() == "all_gather_matmul" {
                // Copy engine: no SM share.
                assert_eq!(choice.comm_sms, Some(0), "{strategy}");
                assert_eq!(c.comm_sm_fraction, 0.0);
            }
        }
        let plan = schedule(
            &p.graph,
            &p.costs,
            &ScheduleOptions {
                comm_streams: 1,
                max_memory: None,
                layer_of: Vec::new(),
            },
        )
        .unwrap();
        let chunks: Vec<u64> = plan.ranks[0]
            .tasks
            .iter()
            .filter_map(|t| match t.kernel {
                KernelConfig::Pipelined { chunks, .. } => Some(chunks),
                _ => None,
            })
            .collect();
        assert!(chunks.contains(&ag) && chunks.contains(&rs), "{chunks:?}");
        assert!(chunks.iter().all(|&c| c == ag || c == rs), "{chunks:?}");
    }
}

#[test]
fn tokenweave_splits_tokens_and_takes_eight_sms() {
    let g = sharded("examples/llama3-70b-layer.json", "tp=8");
    let cost = model(&g);
    let p = fixed_program(Strategy::TokenWeave, &g, &cost).unwrap();
    let used: Vec<&str> = p.rules_used.iter().map(|(r, _)| r.as_str()).collect();
    // The tokens split in halves carried through the layer, and per half the fused
    // reduce-scatter + residual add + RMSNorm + all-gather kernel.
    for rule in [
        "token-split-matmul",
        "token-split-elementwise",
        "tokenweave-fused-rs-norm-ag",
    ] {
        assert!(used.contains(&rule), "{rule}: {used:?} {:?}", p.notes);
    }
    let fused = count(&p.graph, "reduce_scatter_add_norm_all_gather");
    assert!(fused >= 2, "{:?}", ops(&p.graph));
    // Every communication kernel runs on TokenWeave's 8 SMs.
    let mut collectives = 0;
    for (id, n) in p.graph.nodes() {
        if n.op.occupancy().collective().is_some() {
            collectives += 1;
            assert_eq!(p.costs.choice(&n.name).comm_sms, Some(8), "{}", n.name);
            let c = p.costs.cost(&p.graph, id).unwrap();
            assert!(
                (c.comm_sm_fraction - 8.0 / cost.device_sms() as f64).abs() < 1e-12,
                "{}: {}",
                n.name,
                c.comm_sm_fraction
            );
        }
    }
    assert!(collectives >= 4, "{:?}", ops(&p.graph));
}

#[test]
fn comet_on_a_dense_model_says_its_moe_rules_did_not_fire() {
    let g = sharded("examples/llama3-70b-layer.json", "tp=8");
    let p = fixed_program(Strategy::Comet, &g, &model(&g)).unwrap();
    for rule in ["expert-gemm-split-blocks", "expert-gemm-split-columns"] {
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains(&format!("rule `{rule}` did not fire"))),
            "{rule}: {:?}",
            p.notes
        );
    }
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("all-to-all-split-expert-groups")),
        "{:?}",
        p.notes
    );
}

#[test]
fn comet_splits_expert_gemms_and_gives_its_all_to_alls_eighteen_sms() {
    let g = sharded("examples/mixtral-8x7b-moe-layer.json", "ep=8");
    let cost = model(&g);
    let p = fixed_program(Strategy::Comet, &g, &cost).unwrap();
    let used: Vec<&str> = p.rules_used.iter().map(|(r, _)| r.as_str()).collect();
    assert!(
        used.iter().any(|r| r.starts_with("expert-gemm-split")),
        "{used:?} {:?}",
        p.notes
    );
    let mut all_to_alls = 0;
    for (id, n) in p.graph.nodes().filter(|(_, n)| n.op.name() == "all_to_all") {
        all_to_alls += 1;
        assert_eq!(p.costs.choice(&n.name).comm_sms, Some(18), "{}", n.name);
        let c = p.costs.cost(&p.graph, id).unwrap();
        assert!((c.comm_sm_fraction - 18.0 / cost.device_sms() as f64).abs() < 1e-12);
    }
    assert!(all_to_alls >= 2, "{:?}", ops(&p.graph));
}
