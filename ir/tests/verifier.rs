//! One test per verifier error class. Each builds a small graph that breaks exactly one
//! rule and checks both the rule and that the message names the node, op and inputs.

use weft_ir::{
    DType, Dim, Graph, Handle, Init, Mesh, Op, Placement, Rule, Shape, Sharding, TensorType,
    ValueId, VerifyError, verify,
};

fn input(g: &mut Graph, name: &str, dtype: DType, dims: &[u64]) -> ValueId {
    g.add(
        name,
        Op::Input {
            dtype,
            shape: Shape::new(dims.iter().copied()),
        },
        &[],
    )
    .unwrap()
}

fn matmul() -> Op {
    Op::MatMul {
        transpose_a: false,
        transpose_b: false,
    }
}

/// A valid graph `x -> exp -> neg` returning `neg`.
fn chain() -> (Graph, ValueId, ValueId, ValueId) {
    let mut g = Graph::new("chain");
    let x = input(&mut g, "x", DType::F32, &[2, 3]);
    let e = g.add("e", Op::Exp, &[x]).unwrap();
    let n = g.add("n", Op::Neg, &[e]).unwrap();
    g.outputs.push(n);
    (g, x, e, n)
}

fn only_error(g: &Graph) -> VerifyError {
    let errors = verify(g).expect_err("graph should be rejected").0;
    assert_eq!(errors.len(), 1, "expected one error, got {errors:?}");
    errors.into_iter().next().unwrap()
}

#[test]
fn valid_graph_passes() {
    let (g, ..) = chain();
    verify(&g).unwrap();
}

#[test]
fn bad_handle() {
    let (mut g, ..) = chain();
    let n = g.nodes().last().unwrap().0;
    g.node_mut(n).inputs[0] = Handle::from_index(99);
    let e = only_error(&g);
    assert!(matches!(*e.rule, Rule::BadHandle(_)), "{e}");
    assert!(e.to_string().contains("node `n` (neg)"), "{e}");
}

#[test]
fn use_before_definition() {
    // `a` is rewired to read `b`, which comes later but does not depend on `a`:
    // misordered, not cyclic.
    let mut g = Graph::new("order");
    let x = input(&mut g, "x", DType::F32, &[2]);
    let a = g.add("a", Op::Exp, &[x]).unwrap();
    let b = g.add("b", Op::Neg, &[x]).unwrap();
    g.outputs.push(a);
    let a_node = g.value(a).producer;
    g.node_mut(a_node).inputs[0] = b;
    let e = only_error(&g);
    assert!(
        matches!(&*e.rule, Rule::Order { value, producer } if value == "b" && producer == "b"),
        "{e}"
    );
}

#[test]
fn cycle() {
    let (mut g, _, _, n) = chain();
    let e_node = g.nodes().nth(1).unwrap().0;
    g.node_mut(e_node).inputs[0] = n;
    let e = only_error(&g);
    match &*e.rule {
        Rule::Cycle(path) => assert_eq!(path, &["e", "n", "e"]),
        other => panic!("expected a cycle, got {other}"),
    }
    assert!(e.to_string().contains("e -> n -> e"), "{e}");
}

#[test]
fn arity() {
    let mut g = Graph::new("arity");
    let x = input(&mut g, "x", DType::F32, &[2, 2]);
    let e = g.add_node("m", matmul(), vec![x]).unwrap_err();
    assert!(matches!(*e.rule, Rule::Arity { got: 1, .. }), "{e}");
    assert!(e.to_string().contains("takes 2 input(s), got 1"), "{e}");
}

#[test]
fn dtype_mismatch() {
    let mut g = Graph::new("dtype");
    let a = input(&mut g, "a", DType::F32, &[2, 4]);
    let b = input(&mut g, "b", DType::Bf16, &[4, 3]);
    let e = g.add("mm", matmul(), &[a, b]).unwrap_err();
    assert!(matches!(*e.rule, Rule::DType(_)), "{e}");
    let text = e.to_string();
    assert!(text.contains("node `mm` (matmul)"), "{text}");
    assert!(text.contains("%a: f32[2, 4], %b: bf16[4, 3]"), "{text}");
}

#[test]
fn shape_mismatch() {
    let mut g = Graph::new("shape");
    let a = input(&mut g, "a", DType::F32, &[2, 4]);
    let b = input(&mut g, "b", DType::F32, &[5, 3]);
    let e = g.add("mm", matmul(), &[a, b]).unwrap_err();
    assert!(matches!(*e.rule, Rule::Shape(_)), "{e}");
    assert!(e.to_string().contains("contracts 4 with 5"), "{e}");
}

#[test]
fn bad_attribute() {
    let mut g = Graph::new("attr");
    let a = input(&mut g, "a", DType::F32, &[2, 4]);
    let e = g
        .add("t", Op::Transpose { perm: vec![0, 0] }, &[a])
        .unwrap_err();
    assert!(matches!(*e.rule, Rule::Attr(_)), "{e}");
    assert!(e.to_string().contains("not a permutation of 0..2"), "{e}");
}

#[test]
fn unknown_mesh_axis() {
    let mut g = Graph::new("mesh");
    g.mesh = "tp=2".parse::<Mesh>().unwrap();
    let a = input(&mut g, "a", DType::F32, &[4]);
    let e = g
        .add(
            "ar",
            Op::AllReduce {
                axis: "ep".into(),
                op: Default::default(),
            },
            &[a],
        )
        .unwrap_err();
    assert!(matches!(*e.rule, Rule::Mesh(_)), "{e}");
    assert!(
        e.to_string()
            .contains("mesh axis `ep` is not in the graph's mesh (axes: tp)"),
        "{e}"
    );
}

#[test]
fn unbound_dim() {
    let mut g = Graph::new("dims");
    let e = g
        .add(
            "x",
            Op::Input {
                dtype: DType::F32,
                shape: Shape(vec![Dim::sym("seq")]),
            },
            &[],
        )
        .unwrap_err();
    assert!(matches!(&*e.rule, Rule::Dim(_)), "{e}");
    assert!(e.to_string().contains("`seq` is not bound"), "{e}");
}

#[test]
fn bad_initialiser() {
    let mut g = Graph::new("init");
    let w = g
        .add(
            "w",
            Op::Weight {
                dtype: DType::F32,
                shape: Shape::new([2u64, 2]),
                init: Init::Inline(vec![1.0, 2.0, 3.0]),
            },
            &[],
        )
        .unwrap();
    g.outputs.push(w);
    let e = only_error(&g);
    assert!(matches!(*e.rule, Rule::Init(_)), "{e}");
    assert!(e.to_string().contains("node `w` (weight)"), "{e}");
    assert!(
        e.to_string()
            .contains("3 inline values given for a tensor of 4 elements"),
        "{e}"
    );
    // A weight split in two holds half of the values it lists.
    g.mesh = "tp=2".parse().unwrap();
    g.value_mut(w).sharding = Sharding::on("tp", Placement::Split(0));
    let e = only_error(&g);
    assert!(
        e.to_string()
            .contains("3 inline values given for a tensor of 8 elements (4 per piece, 2 pieces)"),
        "{e}"
    );
    if let Op::Weight { init, .. } = &mut g.node_mut(g.value(w).producer).op {
        *init = Init::Inline((0..8).map(f64::from).collect());
    }
    verify(&g).unwrap();
}

#[test]
fn duplicate_name() {
    let mut g = Graph::new("dup");
    let x = input(&mut g, "x", DType::F32, &[2]);
    let y = g.add("x2", Op::Exp, &[x]).unwrap();
    g.value_mut(y).name = "x".into();
    g.outputs.push(y);
    let e = only_error(&g);
    assert!(
        matches!(&*e.rule, Rule::DuplicateName(n, "value") if n == "x"),
        "{e}"
    );
}

#[test]
fn stale_type() {
    let (mut g, _, e, _) = chain();
    g.value_mut(e).ty = TensorType::new(DType::F32, Shape::new([3u64, 2]));
    let err = verify(&g).unwrap_err().0;
    assert!(
        err.iter()
            .any(|e| matches!(&*e.rule, Rule::StaleType { value, .. } if value == "e")),
        "{err:?}"
    );
}

#[test]
fn output_count() {
    let (mut g, ..) = chain();
    let e_node = g.nodes().nth(1).unwrap().0;
    g.node_mut(e_node).op = Op::Split {
        axis: 1,
        sizes: vec![1, 2],
    };
    let e = only_error(&g);
    assert!(
        matches!(
            *e.rule,
            Rule::OutputCount {
                expected: 2,
                got: 1
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("node `e` (split)"), "{e}");
}

#[test]
fn bad_sharding() {
    let (mut g, x, ..) = chain();
    g.mesh = "tp=2".parse().unwrap();
    g.value_mut(x).sharding = Sharding::on("tp", Placement::Split(5));
    let e = only_error(&g);
    assert!(
        matches!(&*e.rule, Rule::Sharding { value, .. } if value == "x"),
        "{e}"
    );
    g.value_mut(x).sharding = Sharding::on("dp", Placement::Split(0));
    let e = only_error(&g);
    assert!(
        e.to_string()
            .contains("mesh axis `dp` is not in the graph's mesh"),
        "{e}"
    );
}

#[test]
fn no_outputs() {
    let (mut g, ..) = chain();
    g.outputs.clear();
    let e = only_error(&g);
    assert!(matches!(*e.rule, Rule::Outputs(_)), "{e}");
}

#[test]
fn collectives_infer_mesh_shapes() {
    let mut g = Graph::new("coll");
    g.mesh = "tp=4".parse().unwrap();
    g.dims.insert("seq".into(), 8);
    let x = g
        .add(
            "x",
            Op::Input {
                dtype: DType::F32,
                shape: Shape(vec![Dim::sym("seq"), Dim::Fixed(12)]),
            },
            &[],
        )
        .unwrap();
    let ag = g
        .add(
            "ag",
            Op::AllGather {
                axis: "tp".into(),
                dim: 0,
            },
            &[x],
        )
        .unwrap();
    assert_eq!(g.value(ag).ty.to_string(), "f32[4*seq, 12]");
    let rs = g
        .add(
            "rs",
            Op::ReduceScatter {
                axis: "tp".into(),
                dim: 0,
                op: Default::default(),
            },
            &[x],
        )
        .unwrap();
    assert_eq!(g.value(rs).ty.to_string(), "f32[seq/4, 12]");
    let a2a = g
        .add(
            "a2a",
            Op::AllToAll {
                axis: "tp".into(),
                split_dim: 1,
                concat_dim: 0,
            },
            &[x],
        )
        .unwrap();
    assert_eq!(g.value(a2a).ty.to_string(), "f32[4*seq, 3]");
    let odd = input(&mut g, "odd", DType::F32, &[6]);
    let e = g
        .add(
            "bad",
            Op::ReduceScatter {
                axis: "tp".into(),
                dim: 0,
                op: Default::default(),
            },
            &[odd],
        )
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("dim 6 does not divide evenly over mesh axis `tp` of size 4"),
        "{e}"
    );
}

#[test]
fn initialisers_must_fit_their_dtype() {
    let mut g = Graph::new("init");
    let constant = |dtype, init| Op::Constant {
        dtype,
        shape: Shape::new([4u64]),
        init,
    };
    let cases = [
        (
            DType::Bool,
            Init::Fill { value: 2.0 },
            "fill value 2 cannot be held exactly by bool",
        ),
        (
            DType::I64,
            Init::Inline(vec![1.0, 2.5, 3.0, 4.0]),
            "inline value 2.5 cannot be held exactly by i64",
        ),
        (
            DType::I32,
            Init::Range {
                start: 0.0,
                step: 1e12,
            },
            "range step 1000000000000 cannot be held exactly by i32",
        ),
        (
            DType::Bool,
            Init::Range {
                start: 0.0,
                step: 1.0,
            },
            "a range of bools makes no sense",
        ),
        (
            DType::I64,
            Init::Normal {
                seed: 1,
                mean: 0.0,
                std: 1.0,
            },
            "random initialisers need a float dtype",
        ),
        (
            DType::F32,
            Init::Normal {
                seed: 1,
                mean: 0.0,
                std: 0.0,
            },
            "std must be positive",
        ),
        (
            DType::F32,
            Init::Uniform {
                seed: 1,
                low: 1.0,
                high: 1.0,
            },
            "low (1) must be below high (1)",
        ),
    ];
    for (i, (dtype, init, expect)) in cases.into_iter().enumerate() {
        let e = g
            .add(format!("c{i}"), constant(dtype, init), &[])
            .unwrap_err();
        assert!(matches!(*e.rule, Rule::Init(_)), "{e}");
        assert!(e.to_string().contains(expect), "{e}");
    }
    g.add(
        "ok",
        constant(DType::Bool, Init::Inline(vec![0.0, 1.0, 1.0, 0.0])),
        &[],
    )
    .unwrap();
}
