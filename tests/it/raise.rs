//! Raising decomposed patterns: exact matches become IR ops, near misses stay primitive,
//! and raising never changes what a model computes (checked by running both).

use weft::cpu::{RunOptions, Tensors, random_input, run};
use weft::ir::{DType, Graph, Init, Op, ReduceKind, Shape, ValueId};
use weft::passes::{Pass, RaisePatterns};

use crate::repo;

fn raise(g: Graph) -> (Graph, std::collections::BTreeMap<&'static str, usize>) {
    let mut pass = RaisePatterns::default();
    let (out, _) = pass.run(g).unwrap();
    weft::ir::verify(&out).unwrap();
    (out, pass.raised)
}

fn scalar(g: &mut Graph, name: &str, v: f64) -> ValueId {
    g.add(
        name,
        Op::Constant {
            dtype: DType::F32,
            shape: Shape::scalar(),
            init: Init::Inline(vec![v]),
        },
        &[],
    )
    .unwrap()
}

/// PyTorch's RMSNorm as the dynamo exporter writes it, with knobs to break it.
fn decomposed_rms_norm(exponent: f64, axis: i64, eps_is_constant: bool, reuse_mean: bool) -> Graph {
    let mut g = Graph::new("rms");
    let x = g
        .add(
            "x",
            Op::Input {
                dtype: DType::F32,
                shape: Shape::new([2u64, 3, 8]),
            },
            &[],
        )
        .unwrap();
    let w = g
        .add(
            "w",
            Op::Weight {
                dtype: DType::F32,
                shape: Shape::new([8u64]),
                init: Init::Normal {
                    seed: 1,
                    mean: 1.0,
                    std: 0.1,
                },
            },
            &[],
        )
        .unwrap();
    let two = scalar(&mut g, "two", exponent);
    let eps = if eps_is_constant {
        scalar(&mut g, "eps", 1e-6)
    } else {
        g.add(
            "eps",
            Op::Input {
                dtype: DType::F32,
                shape: Shape::scalar(),
            },
            &[],
        )
        .unwrap()
    };
    let p = g.add("pow", Op::Pow, &[x, two]).unwrap();
    let m = g
        .add(
            "mean",
            Op::Reduce {
                kind: ReduceKind::Mean,
                axes: vec![axis],
                keepdims: true,
            },
            &[p],
        )
        .unwrap();
    let a = g.add("add", Op::Add, &[m, eps]).unwrap();
    let s = g.add("sqrt", Op::Sqrt, &[a]).unwrap();
    let r = g.add("recip", Op::Reciprocal, &[s]).unwrap();
    let n = g.add("norm", Op::Mul, &[x, r]).unwrap();
    let y = g.add("y", Op::Mul, &[w, n]).unwrap();
    g.outputs.push(y);
    if reuse_mean {
        g.outputs.push(m);
    }
    g
}

fn inputs(g: &Graph) -> Tensors {
    g.inputs()
        .map(|v| {
            let t = random_input(g, v, 3).unwrap();
            // A random eps input must stay positive.
            let t = if g.value(v).name == "eps" {
                weft::ir::Tensor::from_f32(DType::F32, vec![], vec![1e-6]).unwrap()
            } else {
                t
            };
            (g.value(v).name.clone(), t)
        })
        .collect()
}

#[test]
fn exact_rms_norm_is_raised_and_computes_the_same() {
    let g = decomposed_rms_norm(2.0, -1, true, false);
    let before = run(&g, &inputs(&g), &RunOptions::default()).unwrap();
    let (raised, counts) = raise(g.clone());
    assert_eq!(counts.get("rms_norm"), Some(&1));
    let y = raised.value(raised.outputs[0]);
    assert_eq!(raised.node(y.producer).op, Op::RmsNorm { eps: 1e-6 });
    let after = run(&raised, &inputs(&g), &RunOptions::default()).unwrap();
    let worst = crate::worst_relative(&before, &after);
    assert!(worst <= 1e-5, "raised rms_norm differs by {worst:e}");
}

#[test]
fn near_misses_are_left_alone() {
    for (label, g) in [
        (
            "cube instead of square",
            decomposed_rms_norm(3.0, -1, true, false),
        ),
        (
            "mean over the first axis",
            decomposed_rms_norm(2.0, 0, true, false),
        ),
        (
            "eps not a constant",
            decomposed_rms_norm(2.0, -1, false, false),
        ),
        (
            "the mean is also a graph output",
            decomposed_rms_norm(2.0, -1, true, true),
        ),
    ] {
        let (raised, counts) = raise(g.clone());
        assert!(counts.is_empty(), "{label}: raised {counts:?}");
        assert_eq!(raised.num_nodes(), g.num_nodes(), "{label}");
    }
}

#[test]
fn silu_is_raised_only_for_x_times_sigmoid_x() {
    let mut g = Graph::new("silu");
    let x = g
        .add(
            "x",
            Op::Input {
                dtype: DType::F32,
                shape: Shape::new([4u64]),
            },
            &[],
        )
        .unwrap();
    let z = g
        .add(
            "z",
            Op::Input {
                dtype: DType::F32,
                shape: Shape::new([4u64]),
            },
            &[],
        )
        .unwrap();
    let s = g.add("s", Op::Sigmoid, &[x]).unwrap();
    let y = g.add("y", Op::Mul, &[s, x]).unwrap();
    let s2 = g.add("s2", Op::Sigmoid, &[x]).unwrap();
    let other = g.add("other", Op::Mul, &[z, s2]).unwrap(); // sigmoid of x times z: no
    g.outputs.extend([y, other]);
    let feed = inputs(&g);
    let before = run(&g, &feed, &RunOptions::default()).unwrap();
    let (raised, counts) = raise(g);
    assert_eq!(counts.get("silu"), Some(&1));
    let after = run(&raised, &feed, &RunOptions::default()).unwrap();
    crate::compare::assert_bits_eq(&before[1..], &after[1..]);
    let worst = crate::worst_relative(&before, &after);
    assert!(worst <= 1e-6, "relative error {worst:e}");
}

#[test]
fn exported_models_raise_their_norms_and_activations_without_changing_outputs() {
    for (name, rms, silu) in [
        ("llama-gqa", 5, 2),
        ("qwen2", 5, 2),
        ("mixtral", 5, 2),
        ("gpt2", 0, 0),
    ] {
        let dir = repo(&format!("tests/onnx-models/{name}"));
        let parsed =
            weft::load_model(&dir.join("model.onnx"), &weft::LoadOptions::default()).unwrap();
        let (raised, reports) = weft::to_stage(parsed.clone(), weft::Stage::Raised).unwrap();
        let count = |op: &str| raised.nodes().filter(|(_, n)| n.op.name() == op).count();
        assert_eq!(
            (count("rms_norm"), count("silu")),
            (rms, silu),
            "{name}: {reports:?}"
        );
        let ids = weft::tensor_io::read_tensor_file(&dir.join("input_ids.npy"))
            .unwrap()
            .remove(0)
            .1;
        let feed: Tensors = [("input_ids".to_owned(), ids)].into();
        let a = run(&parsed, &feed, &RunOptions::default()).unwrap();
        let b = run(&raised, &feed, &RunOptions::default()).unwrap();
        let worst = crate::worst_relative(&a, &b);
        assert!(
            worst <= 1e-5,
            "{name}: raising changed the logits by {worst:e} of the largest"
        );
    }
}

/// `x * cos + cat(-x[.., 4:], x[.., :4]) * sin` over x [1, 2, 4, 8], as exporters write RoPE.
fn decomposed_rope(duplicated_halves: bool, table_also_output: bool) -> Graph {
    let mut g = Graph::new("rope");
    let x = g
        .add(
            "x",
            Op::Input {
                dtype: DType::F32,
                shape: Shape::new([1u64, 2, 4, 8]),
            },
            &[],
        )
        .unwrap();
    let table = |phase: f64| -> Vec<f64> {
        (0..4)
            .flat_map(|p| {
                (0..8).map(move |i| {
                    let j = if duplicated_halves { i % 4 } else { i };
                    (p as f64 * (j as f64 + 1.0) * 0.3 + phase).cos()
                })
            })
            .collect()
    };
    let mut weight = |name: &str, values: Vec<f64>| {
        g.add(
            name,
            Op::Weight {
                dtype: DType::F32,
                shape: Shape::new([4u64, 8]),
                init: Init::Inline(values),
            },
            &[],
        )
        .unwrap()
    };
    let cos = weight("cos", table(0.0));
    let sin = weight("sin", table(-std::f64::consts::FRAC_PI_2));
    let m1 = g.add("m1", Op::Mul, &[x, cos]).unwrap();
    let lo = g
        .add(
            "lo",
            Op::Slice {
                axis: 3,
                start: 0,
                end: 4,
            },
            &[x],
        )
        .unwrap();
    let hi = g
        .add(
            "hi",
            Op::Slice {
                axis: 3,
                start: 4,
                end: i64::MAX,
            },
            &[x],
        )
        .unwrap();
    let neg = g.add("neg", Op::Neg, &[hi]).unwrap();
    let cat = g.add("cat", Op::Concat { axis: -1 }, &[neg, lo]).unwrap();
    let m2 = g.add("m2", Op::Mul, &[cat, sin]).unwrap();
    let y = g.add("y", Op::Add, &[m1, m2]).unwrap();
    g.outputs.push(y);
    if table_also_output {
        g.outputs.push(cos);
    }
    g
}

#[test]
fn rope_is_raised_only_with_repeating_tables_used_by_ropes_alone() {
    let g = decomposed_rope(true, false);
    let feed = inputs(&g);
    let before = run(&g, &feed, &RunOptions::default()).unwrap();
    let (raised, counts) = raise(g);
    assert_eq!(counts.get("rope"), Some(&1));
    assert_eq!(
        raised.num_nodes(),
        4,
        "x, the two halved tables and the rope"
    );
    let after = run(&raised, &feed, &RunOptions::default()).unwrap();
    let worst = crate::worst_relative(&before, &after);
    assert!(worst <= 1e-6, "relative error {worst:e}");
    for (label, g) in [
        ("halves differ", decomposed_rope(false, false)),
        (
            "the cos table is also an output",
            decomposed_rope(true, true),
        ),
    ] {
        let (raised, counts) = raise(g.clone());
        assert!(counts.is_empty(), "{label}: {counts:?}");
        assert_eq!(raised.num_nodes(), g.num_nodes(), "{label}");
    }
}

/// `matmul(softmax(matmul(q·c, transpose(k)·c), axis), v)` over [1, 2, 4, 8] inputs.
fn decomposed_attention(softmax_axis: i64) -> Graph {
    let mut g = Graph::new("sdpa");
    let mut input = |name: &str| {
        g.add(
            name,
            Op::Input {
                dtype: DType::F32,
                shape: Shape::new([1u64, 2, 4, 8]),
            },
            &[],
        )
        .unwrap()
    };
    let (q, k, v) = (input("q"), input("k"), input("v"));
    let c = scalar(&mut g, "c", 8f64.powf(-0.25));
    let kt = g
        .add(
            "kt",
            Op::Transpose {
                perm: vec![0, 1, 3, 2],
            },
            &[k],
        )
        .unwrap();
    let qs = g.add("qs", Op::Mul, &[q, c]).unwrap();
    let ks = g.add("ks", Op::Mul, &[kt, c]).unwrap();
    let s = g
        .add(
            "s",
            Op::MatMul {
                transpose_a: false,
                transpose_b: false,
            },
            &[qs, ks],
        )
        .unwrap();
    let p = g
        .add("p", Op::Softmax { axis: softmax_axis }, &[s])
        .unwrap();
    let y = g
        .add(
            "y",
            Op::MatMul {
                transpose_a: false,
                transpose_b: false,
            },
            &[p, v],
        )
        .unwrap();
    g.outputs.push(y);
    g
}

#[test]
fn attention_is_raised_from_its_decomposition() {
    let g = decomposed_attention(-1);
    let feed = inputs(&g);
    let before = run(&g, &feed, &RunOptions::default()).unwrap();
    let (raised, counts) = raise(g);
    assert_eq!(counts.get("attention"), Some(&1));
    let y = raised.value(raised.outputs[0]);
    match &raised.node(y.producer).op {
        Op::Attention {
            causal: false,
            scale: Some(s),
        } => assert!((s - 8f64.powf(-0.5)).abs() < 1e-12),
        other => panic!("expected attention, got {other:?}"),
    }
    let after = run(&raised, &feed, &RunOptions::default()).unwrap();
    let worst = crate::worst_relative(&before, &after);
    assert!(worst <= 1e-5, "relative error {worst:e}");
    // Softmax over the query axis is not attention.
    let (_, counts) = raise(decomposed_attention(2));
    assert!(counts.is_empty(), "{counts:?}");
}

#[test]
fn an_moe_block_whose_routing_weights_are_used_elsewhere_stays_primitive() {
    let dir = repo("tests/onnx-models/mixtral");
    let mut g = weft::load_model(&dir.join("model.onnx"), &weft::LoadOptions::default()).unwrap();
    let (raised, counts) = raise(g.clone());
    assert_eq!(counts.get("moe"), Some(&2));
    assert!(raised.nodes().any(|(_, n)| n.op.name() == "moe_dispatch"));
    // Expose layer 0's renormalised routing weights: that block must not be raised.
    let div = g
        .values()
        .find(|(_, v)| v.name == "div")
        .map(|(id, _)| id)
        .unwrap();
    g.outputs.push(div);
    let (_, counts) = raise(g);
    assert_eq!(
        counts.get("moe"),
        Some(&1),
        "only the other layer's block is raised"
    );
}
