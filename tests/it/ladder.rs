//! Ladder residual (`--allow ladder`), proven by execution: the rewritten graph, sharded
//! over `tp=2` and `tp=4` and run on the CPU executor's simulated ranks with random
//! inputs, equals the paper's equations written out in [`reference`] (plain loops over
//! the model's weights, no Weft rewrite or IR) within 1e-4 relative error in f32, for
//! every layer converted, hybrid ranges, a decode step with a KV cache and a
//! Mixtral-style MoE layer (routing written by hand too). The rewritten model's output
//! differs from the source model's, and without `--allow` nothing changes on any example
//! or fixture.

mod reference;

use weft::cpu::{RunOptions, Tensors, run};
use weft::ir::{DType, Graph, Tensor};
use weft::passes::model_change::{AllowOptions, LadderLayers, LadderOptions};
use weft::zoo::{LlamaConfig, MoeConfig, llama, llama_decode};

use crate::{repo, worst_relative};
use reference::{Cache, Reference, Weights, tensor};

/// f32 loops against f32 kernels (other summation orders, all-reduces over ranks).
const TOLERANCE: f64 = 1e-4;

fn allow(layers: LadderLayers) -> AllowOptions {
    AllowOptions {
        ladder: Some(LadderOptions { layers }),
        dcca: None,
    }
}

fn laddered(graph: &Graph, layers: LadderLayers) -> Graph {
    let (g, _) = weft::to_stage_allowing(graph.clone(), weft::Stage::Raised, &allow(layers))
        .unwrap_or_else(|e| panic!("{e}"));
    g
}

fn small() -> LlamaConfig {
    LlamaConfig {
        name: "ladder-small".into(),
        vocab: 64,
        hidden: 64,
        heads: 4,
        kv_heads: 2,
        ffn: 96,
        layers: 4,
        dtype: DType::F32,
        batch: 2,
        seq: 8,
        ..LlamaConfig::tiny()
    }
}

/// Whether 1-based module `j` (two per layer) is in `layers`.
fn converted(layers: &LadderLayers, count: u64) -> impl Fn(usize) -> bool + '_ {
    move |j| {
        let l = ((j - 1) / 2) as u32;
        match layers {
            LadderLayers::All => (l as u64) < count,
            LadderLayers::Range { first, last } => (*first..=*last).contains(&l),
            LadderLayers::Auto => unreachable!(),
        }
    }
}

fn ints(t: &Tensor) -> Vec<i64> {
    t.to_f64_vec().into_iter().map(|x| x as i64).collect()
}

/// Runs `graph` on one device and sharded over each of `meshes`; each result must equal
/// `want` within [`TOLERANCE`].
fn assert_matches(
    what: &str,
    graph: &Graph,
    inputs: &Tensors,
    want: &[(String, Tensor)],
    meshes: &[&str],
) {
    let options = RunOptions::default();
    let single = run(graph, inputs, &options).unwrap_or_else(|e| panic!("{what}: {e}"));
    let err = worst_relative(want, &single);
    assert!(
        err <= TOLERANCE,
        "{what} on one device: relative error {err}"
    );
    for spec in meshes {
        let sharded = weft::shard(graph, &spec.parse().unwrap())
            .unwrap_or_else(|e| panic!("{what} {spec}: {e}"));
        let got = run(&sharded, inputs, &options).unwrap_or_else(|e| panic!("{what} {spec}: {e}"));
        let err = worst_relative(want, &got);
        assert!(err <= TOLERANCE, "{what} at {spec}: relative error {err}");
    }
}

/// The layer choices every proof covers: all, the upper half, a hybrid range in the
/// middle, and the first layer alone (where both modules read the embedding).
fn choices(layers: u32) -> Vec<LadderLayers> {
    vec![
        LadderLayers::All,
        LadderLayers::Range {
            first: layers / 2,
            last: layers - 1,
        },
        LadderLayers::Range { first: 1, last: 2 },
        LadderLayers::Range { first: 0, last: 0 },
    ]
}

#[test]
fn prefill_equals_the_papers_equations_sharded() {
    let cfg = small();
    let source = llama(&cfg).unwrap();
    let weights = Weights::of(&source);
    let r = Reference {
        cfg: &cfg,
        w: &weights,
    };
    let inputs = weft::inputs::complete_inputs(&source, Vec::new(), 5).unwrap();
    let tokens = ints(&inputs["tokens"]);
    let rows = cfg.seq as usize;
    let shape = vec![cfg.batch as usize, rows, cfg.vocab as usize];

    // The reference itself, with nothing converted, is the source model.
    let (plain, _) = r.logits(&tokens, rows, &|_| false, None);
    let plain = vec![("logits".to_owned(), tensor(shape.clone(), plain))];
    assert_matches("source model", &source, &inputs, &plain, &[]);

    for layers in choices(cfg.layers as u32) {
        let graph = laddered(&source, layers.clone());
        let (want, _) = r.logits(&tokens, rows, &converted(&layers, cfg.layers), None);
        let want = vec![("logits".to_owned(), tensor(shape.clone(), want))];
        assert_matches(
            &format!("ladder {layers}"),
            &graph,
            &inputs,
            &want,
            &["tp=2", "tp=4"],
        );
        // A different model: its output is not the source's.
        let differ = worst_relative(&plain, &want);
        assert!(
            differ > 1e-2,
            "ladder {layers}: output differs from the source by only {differ}"
        );
    }
}

#[test]
fn decode_step_equals_the_papers_equations_sharded() {
    let cfg = small();
    // The builder's cache length (2048): the reference attends over every position.
    let kv_len = weft::zoo::DEFAULT_KV_LEN as usize;
    let source = llama_decode(&cfg).unwrap();
    let weights = Weights::of(&source);
    let r = Reference {
        cfg: &cfg,
        w: &weights,
    };
    let mut inputs = weft::inputs::complete_inputs(&source, Vec::new(), 8).unwrap();
    // The new token sits after the cache.
    inputs.insert(
        "position".into(),
        Tensor::from_i64(DType::I64, vec![1], vec![kv_len as i64]).unwrap(),
    );
    let tokens = ints(&inputs["tokens"]);
    let layer_inputs = |kv: &str| -> Vec<Vec<f32>> {
        (0..cfg.layers)
            .map(|l| {
                inputs[&format!("layers.{l}.{kv}_cache")]
                    .to_f64_vec()
                    .into_iter()
                    .map(|x| x as f32)
                    .collect()
            })
            .collect()
    };
    let cache = Cache {
        k: layer_inputs("k"),
        v: layer_inputs("v"),
        len: kv_len,
        position: kv_len as i64,
    };
    let (b, hkv, hd) = (
        cfg.batch as usize,
        cfg.kv_heads as usize,
        (cfg.hidden / cfg.heads) as usize,
    );
    let expect = |conv: &dyn Fn(usize) -> bool| {
        let (logits, kv) = r.logits(&tokens, 1, conv, Some(&cache));
        let mut out = vec![(
            "logits".to_owned(),
            tensor(vec![b, 1, cfg.vocab as usize], logits),
        )];
        for (l, (k, v)) in kv.into_iter().enumerate() {
            out.push((format!("layers.{l}.k_new"), tensor(vec![b, hkv, 1, hd], k)));
            out.push((format!("layers.{l}.v_new"), tensor(vec![b, hkv, 1, hd], v)));
        }
        out
    };
    let plain = expect(&|_| false);
    assert_matches("source decode step", &source, &inputs, &plain, &[]);
    for layers in choices(cfg.layers as u32) {
        let graph = laddered(&source, layers.clone());
        let want = expect(&converted(&layers, cfg.layers));
        assert_matches(
            &format!("decode, ladder {layers}"),
            &graph,
            &inputs,
            &want,
            &["tp=2", "tp=4"],
        );
        let differ = worst_relative(&plain[..1], &want[..1]);
        assert!(
            differ > 1e-2,
            "decode, ladder {layers}: logits differ by only {differ}"
        );
    }
}

#[test]
fn mixtral_style_moe_layers_equal_the_papers_equations_sharded() {
    // Decoder layers alone (input: hidden states; output: the stream), Mixtral-style:
    // the MoE block is each layer's second module. Routing is written out in the
    // reference too (softmax, top-2, renormalised).
    let cfg = LlamaConfig {
        name: "ladder-moe".into(),
        hidden: 64,
        heads: 4,
        kv_heads: 2,
        ffn: 48,
        layers: 3,
        dtype: DType::F32,
        batch: 1,
        seq: 8,
        moe: Some(MoeConfig {
            experts: 4,
            top_k: 2,
        }),
        embed_and_head: false,
        ..LlamaConfig::tiny()
    };
    let source = llama(&cfg).unwrap();
    let weights = Weights::of(&source);
    let r = Reference {
        cfg: &cfg,
        w: &weights,
    };
    let mut inputs = weft::inputs::complete_inputs(&source, Vec::new(), 13).unwrap();
    // Hidden states at the scale of the modules' outputs (as an embedding's would be), so
    // that the comparison sees the modules and not the input alone.
    let x: Vec<f32> = inputs["hidden_states"]
        .to_f64_vec()
        .into_iter()
        .map(|v| v as f32 * 0.05)
        .collect();
    let x_shape = inputs["hidden_states"].shape().to_vec();
    inputs.insert("hidden_states".into(), tensor(x_shape, x.clone()));
    let rows = cfg.seq as usize;
    let name = source.value(source.outputs[0]).name.clone();
    let shape = vec![cfg.batch as usize, rows, cfg.hidden as usize];
    let expect = |conv: &dyn Fn(usize) -> bool| {
        let (out, _) = r.stream(x.clone(), rows, conv, None);
        vec![(name.clone(), tensor(shape.clone(), out))]
    };
    let plain = expect(&|_| false);
    assert_matches("source MoE layers", &source, &inputs, &plain, &[]);
    for layers in [LadderLayers::All, LadderLayers::Range { first: 1, last: 2 }] {
        let graph = laddered(&source, layers.clone());
        let want = expect(&converted(&layers, cfg.layers));
        assert_matches(
            &format!("MoE, ladder {layers}"),
            &graph,
            &inputs,
            &want,
            &["tp=2", "ep=2", "tp=2,ep=2"],
        );
        let differ = worst_relative(&plain, &want);
        assert!(
            differ > 1e-3,
            "MoE, ladder {layers}: output differs by only {differ}"
        );
    }
}

#[test]
fn the_record_names_the_layers_and_bad_requests_are_refused() {
    let source = llama(&small()).unwrap();
    let graph = laddered(&source, LadderLayers::Range { first: 2, last: 3 });
    assert_eq!(graph.model_changes.len(), 1);
    let change = &graph.model_changes[0];
    assert_eq!(change.rule, "ladder-residual");
    assert!(
        change.detail.starts_with("layers 2..=3, 2 of 4"),
        "{}",
        change.detail
    );
    assert!(!change.untrained);
    // Sharding carries the record.
    let sharded = weft::shard(&graph, &"tp=2".parse().unwrap()).unwrap();
    assert_eq!(sharded.model_changes, graph.model_changes);

    let refused = |g: &Graph, layers: LadderLayers| {
        weft::to_stage_allowing(g.clone(), weft::Stage::Raised, &allow(layers))
            .unwrap_err()
            .to_string()
    };
    let e = refused(&source, LadderLayers::Range { first: 2, last: 4 });
    assert!(
        e.contains("runs past the last layer") && e.contains("3 (4 layers"),
        "{e}"
    );
    let e = refused(&source, LadderLayers::Auto);
    assert!(e.contains("weft compile"), "{e}");
    // A graph with no residual stream (the MLP fixture).
    let mlp = crate::load("tests/onnx-models/mlp/model.onnx");
    let e = refused(&mlp, LadderLayers::All);
    assert!(e.contains("no residual stream"), "{e}");
    // Post-norm BERT: its stream runs through a norm after every add.
    let bert = crate::load("tests/onnx-models/bert/model.onnx");
    let e = refused(&bert, LadderLayers::All);
    assert!(e.contains("ladder-residual"), "{e}");
}

/// Every example model and ONNX fixture.
fn every_model() -> Vec<String> {
    let mut paths = Vec::new();
    for dir in ["examples", "examples/scenarios/models"] {
        for entry in std::fs::read_dir(repo(dir)).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "json") {
                paths.push(format!(
                    "{dir}/{}",
                    p.file_name().unwrap().to_string_lossy()
                ));
            }
        }
    }
    for entry in std::fs::read_dir(repo("tests/onnx-models")).unwrap() {
        let p = entry.unwrap().path().join("model.onnx");
        if p.exists() {
            paths.push(
                p.strip_prefix(repo(""))
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    paths.sort();
    paths
}

#[test]
fn without_allow_no_model_changes_on_any_example_or_fixture() {
    let models = every_model();
    assert!(models.len() >= 15, "{models:?}");
    for path in models {
        let parsed = crate::load(&path);
        // The raising and dead-code passes alone, with no model-change pass at all.
        let (plain, _) = weft::passes::PassManager::new()
            .with(weft::passes::RaisePatterns::default())
            .with(weft::passes::DeadCodeElimination)
            .run(parsed.clone())
            .unwrap();
        let (defaulted, reports) =
            weft::to_stage_allowing(parsed, weft::Stage::Raised, &AllowOptions::default()).unwrap();
        assert!(defaulted.model_changes.is_empty(), "{path}");
        assert!(reports.iter().all(|r| r.pass != "model-change"), "{path}");
        assert_eq!(
            weft::ir::text::to_text(&plain),
            weft::ir::text::to_text(&defaulted),
            "{path}: the default options changed the raised graph"
        );
    }
}

#[test]
fn at_decode_on_h100_tp8_ladder_hides_all_reduces_the_standard_model_waits_for() {
    let compile = |allow: AllowOptions| {
        let request = weft::compile::CompileRequest {
            model: repo("examples/llama3-70b-decode.json"),
            dims: Default::default(),
            mesh: Some("tp=8".parse().unwrap()),
            sp_norms: false,
            profile: weft::hardware::Profile::resolve("h100-sxm-8").unwrap(),
            max_memory: None,
            strategy: weft::passes::strategy::Strategy::None,
            allow,
            plan_path: None,
        };
        weft::compile::compile(&request).unwrap_or_else(|e| panic!("{e}"))
    };
    let standard = compile(AllowOptions::default());
    let ladder = compile(allow(LadderLayers::All));
    let (s, l) = (
        standard.plan.prediction.predicted_us,
        ladder.plan.prediction.predicted_us,
    );
    // Same work and the same all-reduces; the ladder program leaves each one with no
    // consumer until two modules later, so the schedule runs it under the next module.
    assert!(l < s * 0.95, "ladder {l} µs vs standard {s} µs");
    assert!(!ladder.plan.model_changing_rewrites.is_empty());
    assert!(standard.plan.model_changing_rewrites.is_empty());
}

#[test]
fn the_auto_sweep_compiles_each_count_of_upper_layers_and_keeps_the_fastest() {
    let request = weft::compile::CompileRequest {
        model: repo("examples/llama3-70b-decode.json"),
        dims: Default::default(),
        mesh: Some("tp=8".parse().unwrap()),
        sp_norms: false,
        profile: weft::hardware::Profile::resolve("h100-sxm-8").unwrap(),
        max_memory: None,
        strategy: weft::passes::strategy::Strategy::None,
        allow: allow(LadderLayers::Auto),
        plan_path: None,
    };
    let sweep = weft::ladder_sweep::ladder_sweep(&request).unwrap();
    let counts: Vec<u32> = sweep.rows.iter().map(|r| r.converted).collect();
    assert_eq!(counts, vec![0, 10, 20, 40, 60, 80]);
    assert_eq!(sweep.rows[3].layers, Some((40, 79)));
    assert_eq!(sweep.rows[0].layers, None);
    // Each converted layer hides more all-reduce time: the steps fall monotonically,
    // and the fastest plan is the one the sweep keeps.
    for pair in sweep.rows.windows(2) {
        assert!(
            pair[1].predicted_us < pair[0].predicted_us,
            "{:?}",
            sweep.rows
        );
    }
    assert_eq!(sweep.best, 5);
    assert_eq!(
        sweep.best_plan.plan.prediction.predicted_us,
        sweep.rows[5].predicted_us
    );
    assert!(
        sweep.best_plan.plan.model_changing_rewrites[0]
            .detail
            .starts_with("layers 0..=79")
    );
    assert!(sweep.rows[0].predicted_us > 0.0);
    let text = sweep.to_text();
    assert!(
        text.contains("<- fastest") && text.contains("40..79"),
        "{text}"
    );
    // Outside a sweep, `auto` is refused.
    let e = weft::compile::compile(&request).unwrap_err().to_string();
    assert!(e.contains("weft compile"), "{e}");
}
