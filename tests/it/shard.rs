//! The sharding pass, proven by execution: every example (scaled down to run on a CPU,
//! same builder) and every real ONNX fixture, sharded over `tp=2`, `tp=4` (where the
//! dims allow) and with `dp`, reproduces the single-device outputs within 1e-5 relative
//! error in f32; communication matches Megatron's formulas; impossible layouts fail
//! with errors naming the op, the dimension and the mesh axis.

use weft::cpu::{RunOptions, Tensors, run};
use weft::ir::{DType, Graph, Mesh, Op};
use weft::zoo::{LlamaConfig, bundled_examples, llama};

use crate::{repo, worst_relative};

fn mesh(spec: &str) -> Mesh {
    spec.parse().unwrap()
}

fn raised(path: &str) -> Graph {
    let g = weft::load_model(&repo(path), &weft::LoadOptions::default()).unwrap();
    weft::to_stage(g, weft::Stage::Raised).unwrap().0
}

/// Largest |sharded - single| over the largest |single|, over every output.
fn sharded_error(graph: &Graph, spec: &str, inputs: &Tensors) -> f64 {
    let sharded = weft::shard(graph, &mesh(spec)).unwrap_or_else(|e| panic!("{spec}: {e}"));
    assert_eq!(sharded.mesh.num_devices(), mesh(spec).num_devices());
    let options = RunOptions::default();
    let want = run(graph, inputs, &options).unwrap();
    let got = run(&sharded, inputs, &options).unwrap_or_else(|e| panic!("{spec}: {e}"));
    worst_relative(&want, &got)
}

fn random_inputs(graph: &Graph, seed: u64) -> Tensors {
    weft::inputs::complete_inputs(graph, Vec::new(), seed).unwrap()
}

/// The bundled examples' builders at a size a CPU runs in milliseconds, in f32.
fn scaled_down(cfg: &LlamaConfig) -> LlamaConfig {
    LlamaConfig {
        vocab: 512,
        hidden: 128,
        heads: 8,
        kv_heads: if cfg.kv_heads < cfg.heads { 2 } else { 8 },
        ffn: 256,
        layers: cfg.layers.min(2),
        dtype: DType::F32,
        seq: 16,
        ..cfg.clone()
    }
}

#[test]
fn examples_sharded_reproduce_single_device_outputs() {
    for (file, cfg) in bundled_examples() {
        let small = scaled_down(&cfg);
        let graph = llama(&small).unwrap();
        let inputs = random_inputs(&graph, 11);
        // tp=4 with 2 KV heads exercises KV-head replication.
        for spec in ["tp=2", "tp=4"] {
            let err = sharded_error(&graph, spec, &inputs);
            assert!(
                err <= 1e-5,
                "{file} (scaled) at {spec}: relative error {err}"
            );
        }
        // The bundled example itself shards (and verifies) at tp=8 (tiny-llama, with its
        // 4 heads, at tp=4).
        let full = crate::load(&format!("examples/{file}"));
        let spec = if cfg.heads % 8 == 0 { "tp=8" } else { "tp=4" };
        weft::shard(&full, &mesh(spec)).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    // The tiny example runs as shipped.
    let tiny = crate::load("examples/tiny-llama.json");
    let inputs = random_inputs(&tiny, 3);
    for spec in ["tp=2", "tp=4", "dp=1,tp=2"] {
        let err = sharded_error(&tiny, spec, &inputs);
        assert!(err <= 1e-5, "tiny-llama at {spec}: {err}");
    }
}

#[test]
fn data_parallel_splits_the_batch() {
    let cfg = LlamaConfig {
        batch: 4,
        ..scaled_down(&LlamaConfig::tiny())
    };
    let graph = llama(&cfg).unwrap();
    let inputs = random_inputs(&graph, 5);
    for spec in ["dp=2", "dp=2,tp=2", "tp=2,dp=2"] {
        let err = sharded_error(&graph, spec, &inputs);
        assert!(err <= 1e-5, "{spec}: {err}");
        let sharded = weft::shard(&graph, &mesh(spec)).unwrap();
        let tokens = sharded.inputs().next().unwrap();
        assert_eq!(
            sharded.value(tokens).sharding.to_string(),
            "{dp: S(0)}",
            "{spec}"
        );
    }
}

#[test]
fn onnx_fixtures_sharded_reproduce_single_device_outputs() {
    for (fixture, specs) in [
        ("llama-gqa", &["tp=2", "tp=4"][..]),
        ("qwen2", &["tp=2", "tp=4"]),
        ("mixtral", &["tp=2", "tp=4"]),
        ("gpt2", &["tp=2", "tp=4"]),
        ("bert", &["tp=2", "tp=4"]),
        ("mlp", &["tp=2"]),
    ] {
        let dir = format!("tests/onnx-models/{fixture}");
        let graph = raised(&format!("{dir}/model.onnx"));
        let given =
            weft::tensor_io::read_input_dir(&repo(&format!("{dir}/test_data_set_0"))).unwrap();
        let inputs: Tensors = graph
            .inputs()
            .map(|v| graph.value(v).name.clone())
            .zip(given)
            .collect();
        for spec in specs {
            let err = sharded_error(&graph, spec, &inputs);
            assert!(err <= 1e-5, "{fixture} at {spec}: relative error {err}");
            // Megatron: one all-reduce after the embedding and two per layer, nothing else.
            let sharded = weft::shard(&graph, &mesh(spec)).unwrap();
            let kinds: Vec<_> = weft::passes::shard::comm_report(&sharded)
                .unwrap()
                .collectives
                .into_iter()
                .map(|c| (c.kind, c.node))
                .collect();
            assert!(
                kinds.iter().all(|(k, _)| *k == "all_reduce"),
                "{fixture} at {spec}: {kinds:?}"
            );
            if fixture != "mlp" {
                assert_eq!(kinds.len(), 5, "{fixture} at {spec}: {kinds:?}");
            }
        }
    }
}

#[test]
fn communication_matches_megatron_formulas() {
    // Llama-3-70B, tp=8: every layer all-reduces the [b, s, h] activations twice (after
    // attention and after the MLP), plus once after the vocabulary-parallel embedding:
    // (2·80 + 1) all-reduces of b·s·h·2 bytes (bf16).
    let graph = crate::load("examples/llama3-70b.json");
    let sharded = weft::shard(&graph, &mesh("tp=8")).unwrap();
    let report = weft::passes::shard::comm_report(&sharded).unwrap();
    let (b, s, h, bytes) = (1u64, 2048u64, 8192u64, 2u64);
    let message = b * s * h * bytes;
    assert_eq!(report.collectives.len(), 2 * 80 + 1);
    assert!(
        report
            .collectives
            .iter()
            .all(|c| c.kind == "all_reduce" && c.axis == "tp")
    );
    assert!(report.collectives.iter().all(|c| c.bytes == message));
    assert_eq!(report.total_bytes, (2 * 80 + 1) * message);
    assert_eq!(report.layers, 80);
    assert_eq!(report.bytes_per_layer, (2 * 80 + 1) * message / 80);
    // One layer alone: exactly the two per-layer all-reduces.
    let layer = crate::load("examples/llama3-70b-layer.json");
    let report =
        weft::passes::shard::comm_report(&weft::shard(&layer, &mesh("tp=8")).unwrap()).unwrap();
    assert_eq!(report.bytes_per_layer, 2 * message);
    // Mixtral's MoE layer: the experts are tensor-parallel too, so still two.
    let moe = crate::load("examples/mixtral-8x7b-moe-layer.json");
    let report =
        weft::passes::shard::comm_report(&weft::shard(&moe, &mesh("tp=8")).unwrap()).unwrap();
    assert_eq!(report.collectives.len(), 2);
    assert_eq!(report.bytes_per_layer, 2 * b * s * 4096 * bytes);
}

#[test]
fn weights_are_column_and_row_parallel() {
    let graph = crate::load("examples/tiny-llama.json");
    let sharded = weft::shard(&graph, &mesh("tp=2")).unwrap();
    let placement = |name: &str| {
        let (_, n) = sharded
            .nodes()
            .find(|(_, n)| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"));
        sharded.value(n.outputs[0]).sharding.to_string()
    };
    assert_eq!(placement("layers.0.attn.q_proj.weight"), "{tp: S(1)}");
    assert_eq!(placement("layers.0.attn.k_proj.weight"), "{tp: S(1)}");
    assert_eq!(placement("layers.0.attn.o_proj.weight"), "{tp: S(0)}");
    assert_eq!(placement("layers.0.mlp.gate_proj.weight"), "{tp: S(1)}");
    assert_eq!(placement("layers.0.mlp.down_proj.weight"), "{tp: S(0)}");
    assert_eq!(placement("embed.weight"), "{tp: S(0)}");
    assert_eq!(placement("lm_head.weight"), "{tp: S(1)}");
    assert_eq!(placement("layers.0.attn.sdpa"), "{tp: S(1)}");
    // Four devices, two KV heads: K and V stay whole and each device cuts its KV head.
    let sharded = weft::shard(&graph, &mesh("tp=4")).unwrap();
    let k = sharded
        .nodes()
        .find(|(_, n)| n.name == "layers.0.attn.k_proj.weight")
        .unwrap()
        .1;
    assert!(sharded.value(k.outputs[0]).sharding.is_replicated());
    assert!(
        sharded
            .nodes()
            .any(|(_, n)| matches!(n.op, Op::AllSlice { .. }) && n.name.contains("kv_heads"))
    );
}

#[test]
fn impossible_layouts_are_reported() {
    let tiny = crate::load("examples/tiny-llama.json");
    let err = |g: &Graph, spec: &str| match weft::shard(g, &mesh(spec)) {
        Ok(_) => panic!("{spec} should fail"),
        Err(e) => e.to_string(),
    };
    // A vocabulary of 256 rows over 3 devices: the embedding is the first to object.
    let e = err(&tiny, "tp=3");
    assert!(
        e.contains("node `embed` (gather): the vocabulary (256 rows"),
        "{e}"
    );
    // 4 query heads over 3 devices.
    let cfg = LlamaConfig {
        vocab: 384,
        ..LlamaConfig::tiny()
    };
    let e = err(&llama(&cfg).unwrap(), "tp=3");
    assert!(
        e.contains("layers.0.attn.sdpa")
            && e.contains("4 query heads")
            && e.contains("`tp` of size 3"),
        "{e}"
    );
    // A vocabulary of 50 rows over 4 devices.
    let mlp = raised("tests/onnx-models/mlp/model.onnx");
    let e = err(&mlp, "tp=4");
    assert!(
        e.contains("vocabulary (50 rows") && e.contains("`tp`"),
        "{e}"
    );
    // Axes without rules.
    let e = err(&tiny, "cp=2");
    assert!(e.contains("axis `cp` has no sharding rules"), "{e}");
    // A graph that already communicates.
    let e = err(&crate::load("tests/data/collectives.json"), "tp=2,ep=2");
    assert!(
        e.contains("already communicates") || e.contains("no sharding rules"),
        "{e}"
    );
    // KV heads that can be neither split nor replicated evenly: 3 KV heads, 6 query heads.
    let cfg = LlamaConfig {
        heads: 6,
        kv_heads: 3,
        hidden: 96,
        ..LlamaConfig::tiny()
    };
    let e = err(&llama(&cfg).unwrap(), "tp=2");
    assert!(e.contains("3 key/value heads"), "{e}");
}

fn shard_sp(graph: &Graph, spec: &str) -> Graph {
    let options = weft::passes::shard::ShardOptions {
        mesh: mesh(spec),
        sp_norms: true,
    };
    weft::passes::shard::shard(graph, &options).unwrap_or_else(|e| panic!("{spec}: {e}"))
}

#[test]
fn sequence_parallel_norms_reduce_scatter_then_all_gather() {
    // Megatron-SP: each all-reduce becomes a reduce-scatter before the norm and an
    // all-gather after it, the same bytes: (2L+1) of each, b·s·h·4 bytes (f32) apiece.
    let tiny = crate::load("examples/tiny-llama.json");
    let report = weft::passes::shard::comm_report(&shard_sp(&tiny, "tp=2")).unwrap();
    let message = 16 * 64 * 4;
    let count = |kind: &str| report.collectives.iter().filter(|c| c.kind == kind).count();
    assert_eq!((count("reduce_scatter"), count("all_gather")), (5, 5));
    assert!(report.collectives.iter().all(|c| c.bytes == message));
    // What each device sends is the same as with the all-reduces they replace.
    let plain =
        weft::passes::shard::comm_report(&weft::shard(&tiny, &mesh("tp=2")).unwrap()).unwrap();
    assert_eq!(report.total_wire_bytes, plain.total_wire_bytes);
    assert_eq!(plain.total_wire_bytes, 5 * 2 * message / 2);
    // The norms themselves run on sequence shards.
    let sharded = shard_sp(&tiny, "tp=2");
    let norm = sharded
        .nodes()
        .find(|(_, n)| n.name == "layers.0.ffn_norm")
        .unwrap()
        .1;
    assert_eq!(
        sharded.value(norm.outputs[0]).sharding.to_string(),
        "{tp: S(1)}"
    );
    // And the outputs do not change: examples and fixtures.
    let options = RunOptions::default();
    let mut graphs: Vec<(String, Graph, Tensors)> = Vec::new();
    for (file, cfg) in bundled_examples() {
        let g = llama(&scaled_down(&cfg)).unwrap();
        let inputs = random_inputs(&g, 2);
        graphs.push((file.to_owned(), g, inputs));
    }
    for fixture in ["llama-gqa", "qwen2", "mixtral", "gpt2", "bert"] {
        let dir = format!("tests/onnx-models/{fixture}");
        let g = raised(&format!("{dir}/model.onnx"));
        let given =
            weft::tensor_io::read_input_dir(&repo(&format!("{dir}/test_data_set_0"))).unwrap();
        let inputs: Tensors = g
            .inputs()
            .map(|v| g.value(v).name.clone())
            .zip(given)
            .collect();
        graphs.push((fixture.to_owned(), g, inputs));
    }
    for (name, g, inputs) in graphs {
        let want = run(&g, &inputs, &options).unwrap();
        for spec in ["tp=2", "tp=4"] {
            let got = run(&shard_sp(&g, spec), &inputs, &options).unwrap();
            let err = worst_relative(&want, &got);
            assert!(err <= 1e-5, "{name} at {spec} with SP norms: {err}");
        }
    }
}

#[test]
fn expert_parallelism_routes_tokens_with_all_to_all() {
    let moe = |path: &str| raised(path);
    // The Mixtral fixture (8 experts, top-2) and the Mixtral example's builder, scaled.
    let fixture = moe("tests/onnx-models/mixtral/model.onnx");
    let dir = repo("tests/onnx-models/mixtral/test_data_set_0");
    let given = weft::tensor_io::read_input_dir(&dir).unwrap();
    let fixture_inputs: Tensors = fixture
        .inputs()
        .map(|v| fixture.value(v).name.clone())
        .zip(given)
        .collect();
    let example = llama(&scaled_down(&LlamaConfig::mixtral_8x7b_layer())).unwrap();
    let example_inputs = random_inputs(&example, 9);
    for (name, graph, inputs) in [
        ("mixtral fixture", &fixture, &fixture_inputs),
        ("mixtral example (scaled)", &example, &example_inputs),
    ] {
        for spec in ["ep=2", "ep=4", "tp=2,ep=2", "ep=2,dp=1"] {
            let err = sharded_error(graph, spec, inputs);
            assert!(err <= 1e-5, "{name} at {spec}: relative error {err}");
        }
    }
    // Communication of one Mixtral-8x7B layer at ep=8 (T = 2048 tokens, k = 2, H = 4096,
    // bf16): each device sends every one of its T/8·k token copies in a block padded to
    // that size for each of the 8 peers (8 · 512 · 4096 · 2 bytes = T·k·H·2), receives the
    // same back after the experts, exchanges 8 counts (i64), and all-gathers the tokens.
    let layer = crate::load("examples/mixtral-8x7b-moe-layer.json");
    let report =
        weft::passes::shard::comm_report(&weft::shard(&layer, &mesh("ep=8")).unwrap()).unwrap();
    let (t, k, h) = (2048u64, 2u64, 4096u64);
    let bytes: Vec<(&str, u64)> = report
        .collectives
        .iter()
        .map(|c| (c.kind, c.bytes))
        .collect();
    assert_eq!(
        bytes,
        vec![
            ("all_to_all", t * k * h * 2),
            ("all_to_all", 8 * 8),
            ("all_to_all", t * k * h * 2),
            ("all_gather", t * h * 2),
        ]
    );
    // What the blocks carry (what the cost model prices): under uniform routing each of a
    // device's 8 padded blocks holds 1/8 of its T/8·k copies, so the row all-to-alls
    // carry T·k·H·2/8; the counts and the all-gather are dense, payload = message; the
    // ring sends (ep−1)/ep of the payload.
    let payload: Vec<(&str, u64, u64)> = report
        .collectives
        .iter()
        .map(|c| (c.kind, c.payload_bytes, c.wire_bytes))
        .collect();
    let rows = t * k * h * 2 / 8;
    assert_eq!(
        payload,
        vec![
            ("all_to_all", rows, rows * 7 / 8),
            ("all_to_all", 8 * 8, 8 * 8 * 7 / 8),
            ("all_to_all", rows, rows * 7 / 8),
            ("all_gather", t * h * 2, t * h * 2 * 7 / 8),
        ]
    );
    assert_eq!(report.total_payload_bytes, 2 * rows + 64 + t * h * 2);
    // The expert matmuls run over those padded blocks: each is marked to carry 1/8 of its
    // rows (what the cost model prices; the executor, checked above, computes them all).
    let sharded = weft::shard(&layer, &mesh("ep=8")).unwrap();
    let marks: Vec<_> = sharded
        .nodes()
        .filter_map(|(_, n)| match n.op {
            Op::ExpertMatMul { rows, .. } => Some(rows),
            _ => None,
        })
        .collect();
    assert!(!marks.is_empty());
    for r in marks {
        assert_eq!(r, weft::ir::ExpertRows::ExpertBlocks { groups: 8 });
    }
    // Experts that do not divide.
    let e = weft::shard(&example, &mesh("ep=3"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("8 experts cannot be split over mesh axis `ep` of size 3"),
        "{e}"
    );
}

#[test]
fn ulysses_trades_sequence_shards_for_head_shards_around_attention() {
    // tiny-llama at sp=2: the tokens are split by sequence; each layer all-to-alls q, k
    // and v to head shards and the output back: local q and the output are
    // [1, 4 heads, 16/2, 16] f32 = 2048 bytes, k and v (2 KV heads) 1024.
    let tiny = crate::load("examples/tiny-llama.json");
    let sharded = weft::shard(&tiny, &mesh("sp=2")).unwrap();
    let tokens = sharded.inputs().next().unwrap();
    assert_eq!(sharded.value(tokens).sharding.to_string(), "{sp: S(1)}");
    let report = weft::passes::shard::comm_report(&sharded).unwrap();
    let per_layer: Vec<(&str, u64)> = report.collectives[..4]
        .iter()
        .map(|c| (c.kind, c.bytes))
        .collect();
    assert_eq!(
        per_layer,
        vec![
            ("all_to_all", 2048),
            ("all_to_all", 1024),
            ("all_to_all", 1024),
            ("all_to_all", 2048)
        ]
    );
    assert_eq!(report.collectives.len(), 8);
    // Ulysses' all-to-alls are dense (no padding): what they carry is their message.
    for c in &report.collectives {
        assert_eq!(c.payload_bytes, c.bytes, "{}", c.node);
    }
    assert_eq!(report.total_payload_bytes, report.total_bytes);
    // Outputs unchanged: the examples' builders and every fixture, at sp=2 and sp=4 (with
    // 2 KV heads over 4 devices, K and V are gathered and each device keeps its head).
    let inputs = random_inputs(&tiny, 6);
    for spec in ["sp=2", "sp=4", "dp=1,sp=2"] {
        let err = sharded_error(&tiny, spec, &inputs);
        assert!(err <= 1e-5, "tiny-llama at {spec}: {err}");
    }
    for (file, cfg) in bundled_examples() {
        let g = llama(&scaled_down(&cfg)).unwrap();
        let inputs = random_inputs(&g, 8);
        for spec in ["sp=2", "sp=4"] {
            let err = sharded_error(&g, spec, &inputs);
            assert!(err <= 1e-5, "{file} (scaled) at {spec}: {err}");
        }
    }
    for fixture in ["llama-gqa", "qwen2", "mixtral", "gpt2", "bert"] {
        let dir = format!("tests/onnx-models/{fixture}");
        let g = raised(&format!("{dir}/model.onnx"));
        let given =
            weft::tensor_io::read_input_dir(&repo(&format!("{dir}/test_data_set_0"))).unwrap();
        let inputs: Tensors = g
            .inputs()
            .map(|v| g.value(v).name.clone())
            .zip(given)
            .collect();
        for spec in ["sp=2", "sp=4"] {
            let err = sharded_error(&g, spec, &inputs);
            assert!(err <= 1e-5, "{fixture} at {spec}: {err}");
        }
    }
    // 4 query heads cannot be spread over 8 devices.
    let e = match weft::shard(&tiny, &mesh("sp=8")) {
        Ok(_) => panic!("sp=8 should fail"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("4 query heads cannot be split over mesh axis `sp` of size 8"),
        "{e}"
    );
}

#[test]
fn shardings_written_in_the_model_are_respected() {
    // A single-device model (no mesh) whose file asks for layouts: layer 0's down
    // projection split by columns (Megatron would split it by rows) and the first norm's
    // output split by sequence. The pass honours both, moving values where the rules
    // need them, and the outputs match the unannotated model.
    let text = std::fs::read_to_string(repo("examples/tiny-llama.json")).unwrap();
    let requested = text
        .replace(
            r#"{"name":"layers.0.mlp.down_proj.weight","op":"weight","#,
            r#"{"name":"layers.0.mlp.down_proj.weight","sharding":{"tp":"S(1)"},"op":"weight","#,
        )
        .replace(
            r#"{"name":"layers.0.attn_norm","op":"rms_norm","#,
            r#"{"name":"layers.0.attn_norm","sharding":{"tp":"S(1)","dp":"S(0)"},"op":"rms_norm","#,
        );
    assert_eq!(
        requested.matches("\"sharding\"").count(),
        2,
        "the example's text changed"
    );
    let graph = weft::json::parse_str(&requested, &repo("examples/requested.json")).unwrap();
    let sharded = weft::shard(&graph, &mesh("tp=2")).unwrap();
    let layout = |name: &str| {
        let (_, n) = sharded.nodes().find(|(_, n)| n.name == name).unwrap();
        sharded.value(n.outputs[0]).sharding.to_string()
    };
    assert_eq!(layout("layers.0.mlp.down_proj.weight"), "{tp: S(1)}");
    assert_eq!(layout("layers.0.attn_norm.all_slice.tp"), "{tp: S(1)}");
    let plain = crate::load("examples/tiny-llama.json");
    let inputs = random_inputs(&plain, 4);
    let options = RunOptions::default();
    let want = run(&plain, &inputs, &options).unwrap();
    let got = run(&sharded, &inputs, &options).unwrap();
    let err = worst_relative(&want, &got);
    assert!(err <= 1e-5, "{err}");
    // The unannotated model runs as before on one device (requests mean nothing there).
    let single = run(&graph, &inputs, &options).unwrap();
    assert_eq!(single, want);
    // A request that cannot be honoured is an error naming the value and the axis.
    let e = match weft::shard(&graph, &mesh("tp=3")) {
        Ok(_) => panic!("tp=3 should fail"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("`tp` of size 3"), "{e}");
}

#[test]
fn partial_max_and_integer_division_are_never_kept_partial() {
    // -max over halves is not max over -halves; truncating integer division does not
    // distribute over a sum. Both are reduced before the op, so sharding changes nothing.
    let parse = |src: &str| weft::json::parse_str(src, std::path::Path::new("m.json")).unwrap();
    let negmax = parse(
        r#"{"weft": 1, "name": "negmax", "nodes": [
  {"name": "x", "op": "input", "attrs": {"dtype": "f32", "shape": [4, 8]}},
  {"name": "m", "op": "reduce", "inputs": ["x"], "attrs": {"kind": "max", "axes": [0]}},
  {"name": "y", "op": "neg", "inputs": ["m"]}
], "outputs": ["y"]}"#,
    );
    let intdiv = parse(
        r#"{"weft": 1, "name": "intdiv", "nodes": [
  {"name": "x", "op": "input", "attrs": {"dtype": "i64", "shape": [4, 2]}},
  {"name": "two", "op": "constant", "attrs": {"dtype": "i64", "shape": [], "init": {"inline": [2]}}},
  {"name": "s", "op": "reduce", "inputs": ["x"], "attrs": {"kind": "sum", "axes": [0]}},
  {"name": "y", "op": "div", "inputs": ["s", "two"]}
], "outputs": ["y"]}"#,
    );
    for g in [negmax, intdiv] {
        for seed in 0..8 {
            let inputs = random_inputs(&g, seed);
            let want = run(&g, &inputs, &RunOptions::default()).unwrap();
            let sharded = weft::shard(&g, &mesh("dp=2")).unwrap();
            let got = run(&sharded, &inputs, &RunOptions::default()).unwrap();
            assert_eq!(want, got, "{} seed {seed}", g.name);
        }
    }
}

#[test]
fn reduced_outputs_keep_their_names() {
    let g = weft::json::parse_str(
        r#"{"weft": 1, "name": "sum", "nodes": [
  {"name": "x", "op": "input", "attrs": {"dtype": "f32", "shape": [4, 8]}},
  {"name": "y", "op": "reduce", "inputs": ["x"], "attrs": {"kind": "sum", "axes": [0]}}
], "outputs": ["y"]}"#,
        std::path::Path::new("m.json"),
    )
    .unwrap();
    let sharded = weft::shard(&g, &mesh("dp=2")).unwrap();
    let out = sharded.outputs[0];
    assert_eq!(sharded.value(out).name, "y");
    let inputs = random_inputs(&g, 1);
    let got = run(&sharded, &inputs, &RunOptions::default()).unwrap();
    assert_eq!(got[0].0, "y");
}

#[test]
fn megatron_sp_sends_the_same_bytes_as_all_reduces_on_every_example() {
    // Issue 10, item 11: the single 70B layer takes its hidden states as a graph input.
    // The input was treated as free to lay out at every use, so after the first norm
    // sliced it by sequence, the residual add gathered it back and all-reduced the
    // attention output (205.5 MB sent per device against 117.4 MB). A graph input is fed
    // once; later uses see its first layout. And projections by whole weights (K and V
    // with replicated heads at tiny-llama's tp=4, Mixtral's router) took the sequence
    // shard and gathered their results; they take the norm's one all-gather.
    for file in [
        "tiny-llama",
        "llama3-70b-layer",
        "mixtral-8x7b-moe-layer",
        "llama3-70b",
    ] {
        let graph = crate::load(&format!("examples/{file}.json"));
        assert!(
            graph
                .nodes()
                .any(|(_, n)| matches!(n.op, Op::RmsNorm { .. })),
            "{file} has norms"
        );
        let spec = if file == "tiny-llama" { "tp=4" } else { "tp=8" };
        let plain =
            weft::passes::shard::comm_report(&weft::shard(&graph, &mesh(spec)).unwrap()).unwrap();
        let sp = weft::passes::shard::comm_report(&shard_sp(&graph, spec)).unwrap();
        assert_eq!(
            sp.total_wire_bytes,
            plain.total_wire_bytes,
            "{file} at {spec}: Megatron-SP {:?}",
            sp.collectives
                .iter()
                .map(|c| (c.kind, c.node.as_str()))
                .collect::<Vec<_>>()
        );
        // Only reduce-scatters and all-gathers, as many of each as there were all-reduces.
        let count = |kind: &str| sp.collectives.iter().filter(|c| c.kind == kind).count();
        assert_eq!(count("reduce_scatter"), plain.collectives.len(), "{file}");
        assert_eq!(count("all_gather"), plain.collectives.len(), "{file}");
        assert_eq!(sp.collectives.len(), 2 * plain.collectives.len(), "{file}");
    }
    // The layer still computes the same thing, on a scaled-down copy of its builder.
    let cfg = bundled_examples()
        .into_iter()
        .find(|(file, _)| file.contains("llama3-70b-layer"))
        .expect("the 70B layer's builder")
        .1;
    let layer = llama(&scaled_down(&cfg)).unwrap();
    let inputs = random_inputs(&layer, 11);
    let want = run(&layer, &inputs, &RunOptions::default()).unwrap();
    let got = run(&shard_sp(&layer, "tp=4"), &inputs, &RunOptions::default()).unwrap();
    let err = worst_relative(&want, &got);
    assert!(err <= 1e-5, "{err}");
}

#[test]
fn a_split_that_does_not_divide_is_an_error_on_every_axis() {
    // Issue 10, item 10: graph inputs whose batch (dp) or sequence (sp) did not divide
    // were left whole, and every device computed everything.
    let cases = [
        (
            "dp=2",
            1,
            16,
            "dim 0 (batch, size 1) cannot be split over mesh axis `dp` of size 2",
        ),
        (
            "dp=2",
            3,
            16,
            "dim 0 (batch, size 3) cannot be split over mesh axis `dp` of size 2",
        ),
        (
            "sp=2",
            1,
            15,
            "dim 1 (sequence, size 15) cannot be split over mesh axis `sp` of size 2",
        ),
        ("dp=4,tp=2", 6, 16, "`dp` of size 4"),
    ];
    for (spec, batch, seq, expect) in cases {
        let cfg = LlamaConfig {
            batch,
            seq,
            ..LlamaConfig::tiny()
        };
        let graph = llama(&cfg).unwrap();
        let e = match weft::shard(&graph, &mesh(spec)) {
            Ok(_) => panic!("{spec} with batch {batch}, seq {seq} should fail"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("node `tokens` (input)") && e.contains(expect),
            "{e}"
        );
    }
    // Dims that divide still shard, and split the tokens.
    let graph = llama(&LlamaConfig {
        batch: 2,
        ..LlamaConfig::tiny()
    })
    .unwrap();
    let sharded = weft::shard(&graph, &mesh("dp=2")).unwrap();
    let tokens = sharded.inputs().next().unwrap();
    assert_eq!(sharded.value(tokens).sharding.to_string(), "{dp: S(0)}");
}

#[test]
fn an_axis_that_splits_nothing_is_a_warning_naming_it() {
    let shard = |g: &Graph, spec: &str| {
        let options = weft::passes::shard::ShardOptions {
            mesh: mesh(spec),
            sp_norms: false,
        };
        weft::passes::shard::shard_with_warnings(g, &options)
            .unwrap_or_else(|e| panic!("{spec}: {e}"))
            .1
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    // Expert parallelism on a dense model: no experts, so every device does everything.
    let tiny = crate::load("examples/tiny-llama.json");
    let warnings = shard(&tiny, "ep=4");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("mesh axis `ep` of `ep=4` splits nothing in `tiny-llama`"),
        "{warnings:?}"
    );
    // Only the idle axis is named; axes of one device lay nothing out by definition.
    let warnings = shard(&tiny, "tp=2,ep=2,dp=1");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("axis `ep`"), "{warnings:?}");
    // Sequence parallelism on a model whose inputs have no sequence dim.
    let vector = weft::json::parse_str(
        r#"{"weft": 1, "name": "vec", "nodes": [
  {"name": "x", "op": "input", "attrs": {"dtype": "f32", "shape": [8]}},
  {"name": "y", "op": "exp", "inputs": ["x"]}
], "outputs": ["y"]}"#,
        std::path::Path::new("vec.json"),
    )
    .unwrap();
    let warnings = shard(&vector, "sp=2");
    assert!(
        warnings.len() == 1 && warnings[0].contains("axis `sp`"),
        "{warnings:?}"
    );
    // Axes that split something say nothing.
    for spec in ["tp=2", "sp=2", "tp=2,ep=1"] {
        assert!(shard(&tiny, spec).is_empty(), "{spec}");
    }
    let moe = raised("tests/onnx-models/mixtral/model.onnx");
    assert!(shard(&moe, "ep=2").is_empty());
}

/// Issue 10 follow-up: an op the sharding computes whole because a split does not divide
/// (here a projection's 6 output columns over `tp=4`) is a warning naming the node, the
/// op, the size and the axis; the projection beside it that divides says nothing.
#[test]
fn a_split_that_does_not_divide_is_a_warning_naming_the_op() {
    use weft::passes::shard::{Fallback, ShardOptions, ShardWarning, shard_with_warnings};
    let graph = weft::json::parse_str(
        r#"{"weft": 1, "name": "two-projections", "nodes": [
  {"name": "x", "op": "input", "attrs": {"dtype": "f32", "shape": [2, 8, 16]}},
  {"name": "h", "op": "relu", "inputs": ["x"]},
  {"name": "w_odd", "op": "weight", "attrs": {"dtype": "f32", "shape": [16, 6], "init": {"normal": {"seed": 1, "std": 0.5}}}},
  {"name": "w_even", "op": "weight", "attrs": {"dtype": "f32", "shape": [16, 8], "init": {"normal": {"seed": 2, "std": 0.5}}}},
  {"name": "odd", "op": "matmul", "inputs": ["h", "w_odd"]},
  {"name": "even", "op": "matmul", "inputs": ["h", "w_even"]}
], "outputs": ["odd", "even"]}"#,
        std::path::Path::new("two-projections.json"),
    )
    .unwrap();
    let options = |spec: &str, sp_norms: bool| ShardOptions {
        mesh: mesh(spec),
        sp_norms,
    };
    let (sharded, warnings) = shard_with_warnings(&graph, &options("tp=4", false)).unwrap();
    assert_eq!(
        warnings,
        vec![ShardWarning::Whole(Fallback {
            node: "odd".into(),
            op: "matmul".into(),
            axis: "tp".into(),
            axis_size: 4,
            extent: 6,
            what: "the weight's output columns".into(),
        })]
    );
    assert_eq!(
        warnings[0].to_string(),
        "node `odd` (matmul) is computed whole on each device of mesh axis `tp`: 6 (the \
         weight's output columns) does not divide by 4"
    );
    // The fallback is whole and the other projection split, and both still compute the
    // single-device answer.
    let placement = |name: &str| {
        let (_, v) = sharded.values().find(|(_, v)| v.name == name).unwrap();
        v.sharding.to_string()
    };
    assert_eq!(placement("odd"), "R");
    assert_eq!(placement("even"), "{tp: S(2)}");
    let err = sharded_error(&graph, "tp=4", &random_inputs(&graph, 5));
    assert!(err <= 1e-6, "{err}");
    // The bundled examples at tp=8 fall back nowhere (tiny-llama's 4 heads are an error);
    // tiny-llama at tp=4 computes exactly its K and V projections whole (2 KV heads,
    // replicated per device).
    for file in [
        "examples/llama3-70b-layer.json",
        "examples/mixtral-8x7b-moe-layer.json",
        "examples/llama3-70b.json",
    ] {
        let g = crate::load(file);
        for sp_norms in [false, true] {
            let (_, w) = shard_with_warnings(&g, &options("tp=8", sp_norms)).unwrap();
            assert!(w.is_empty(), "{file}: {w:?}");
        }
    }
    let tiny = crate::load("examples/tiny-llama.json");
    let (_, w) = shard_with_warnings(&tiny, &options("tp=4", false)).unwrap();
    let whole: Vec<String> = w
        .iter()
        .map(|w| match w {
            ShardWarning::Whole(f) => {
                assert_eq!(
                    (f.op.as_str(), f.axis_size, f.extent),
                    ("matmul", 4, 2),
                    "{f}"
                );
                f.node.clone()
            }
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(
        whole,
        [
            "layers.0.attn.k_proj",
            "layers.0.attn.v_proj",
            "layers.1.attn.k_proj",
            "layers.1.attn.v_proj"
        ]
    );
    // Megatron-SP on a sequence that does not divide: the norms stay whole, and say so.
    let odd_seq = weft::zoo::llama(&LlamaConfig {
        seq: 6,
        ..LlamaConfig::tiny()
    })
    .unwrap();
    let (_, w) = shard_with_warnings(&odd_seq, &options("tp=4", true)).unwrap();
    let norms: Vec<&ShardWarning> = w
        .iter()
        .filter(|w| matches!(w, ShardWarning::Whole(f) if f.op == "rms_norm"))
        .collect();
    assert!(!norms.is_empty(), "{w:?}");
    assert!(
        norms[0]
            .to_string()
            .contains("6 (the sequence, dim 1, for a Megatron-SP norm) does not divide by 4"),
        "{}",
        norms[0]
    );
}

/// Issue 10 follow-up: a fused projection (Q, K and V in one weight) whose equal parts do
/// not divide over `tp` is computed whole, and says so once.
#[test]
fn a_fused_projection_whose_parts_do_not_divide_is_a_warning() {
    use weft::passes::shard::{Fallback, ShardOptions, ShardWarning, shard_with_warnings};
    let graph = weft::json::parse_str(
        r#"{"weft": 1, "name": "fused-qkv", "nodes": [
  {"name": "x", "op": "input", "attrs": {"dtype": "f32", "shape": [2, 8, 16]}},
  {"name": "h", "op": "relu", "inputs": ["x"]},
  {"name": "w_qkv", "op": "weight", "attrs": {"dtype": "f32", "shape": [16, 18], "init": {"normal": {"seed": 3, "std": 0.5}}}},
  {"name": "qkv", "op": "matmul", "inputs": ["h", "w_qkv"]},
  {"name": "parts", "op": "split", "inputs": ["qkv"], "attrs": {"axis": -1, "sizes": [6, 6, 6]}, "outputs": ["q", "k", "v"]}
], "outputs": ["q", "k", "v"]}"#,
        std::path::Path::new("fused-qkv.json"),
    )
    .unwrap();
    let options = ShardOptions {
        mesh: mesh("tp=4"),
        sp_norms: false,
    };
    let (_, warnings) = shard_with_warnings(&graph, &options).unwrap();
    assert_eq!(
        warnings,
        vec![
            ShardWarning::Whole(Fallback {
                node: "qkv".into(),
                op: "matmul".into(),
                axis: "tp".into(),
                axis_size: 4,
                extent: 6,
                what: "the columns of each of its 3 fused parts".into(),
            }),
            // Nothing else is left to split, so the axis is idle too.
            ShardWarning::IdleAxis {
                axis: "tp".into(),
                mesh: "tp=4".into(),
                graph: "fused-qkv".into(),
            }
        ]
    );
    let err = sharded_error(&graph, "tp=4", &random_inputs(&graph, 7));
    assert!(err <= 1e-6, "{err}");
    // Parts that divide are split part by part, silently.
    let options = ShardOptions {
        mesh: mesh("tp=2"),
        sp_norms: false,
    };
    assert!(shard_with_warnings(&graph, &options).unwrap().1.is_empty());
}
