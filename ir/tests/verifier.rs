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
                payload: weft_ir::A2aPayload::Dense,
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
        // Review of issue 10: the end was printed rounded (13510798882111488 for
        // 1 + 3 * 2^52) and said an i64 cannot hold it, which it can; the limit is f64's 2^53.
        (
            DType::I64,
            Init::Range {
                start: 1.0,
                step: 4_503_599_627_370_496.0,
            },
            "range end 13510798882111489 is past 2^53 = 9007199254740992",
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

// ---- sharding propagation: every output's sharding follows from its inputs' ------------

fn on(p: Placement) -> Sharding {
    Sharding::on("tp", p)
}

const SUM: Placement = Placement::Partial(weft_ir::ReduceOp::Sum);

/// A value of the given per-device shape, laid out as `p` along `tp`.
fn laid_out(g: &mut Graph, name: &str, dims: &[u64], p: Placement) -> ValueId {
    let v = input(g, name, DType::F32, dims);
    g.value_mut(v).sharding = on(p);
    v
}

fn mesh_graph() -> Graph {
    let mut g = Graph::new("tp");
    g.mesh = "tp=2".parse().unwrap();
    g
}

fn propagation(e: &VerifyError) -> &str {
    match &*e.rule {
        Rule::Propagation { axis, reason } => {
            assert_eq!(axis, "tp", "{e}");
            reason
        }
        other => panic!("expected a propagation error, got {other:?}"),
    }
}

/// Megatron's MLP: column-parallel, GELU on the columns, row-parallel (a partial sum),
/// all-reduced. Every label follows.
#[test]
fn consistent_shardings_pass() {
    let mut g = mesh_graph();
    let x = laid_out(&mut g, "x", &[4, 8], Placement::Replicate);
    let w1 = laid_out(&mut g, "w1", &[8, 6], Placement::Split(1));
    let w2 = laid_out(&mut g, "w2", &[6, 8], Placement::Split(0));
    let h = g.add("h", matmul(), &[x, w1]).unwrap();
    g.value_mut(h).sharding = on(Placement::Split(1));
    let a = g
        .add(
            "a",
            Op::Gelu {
                approximate: Default::default(),
            },
            &[h],
        )
        .unwrap();
    g.value_mut(a).sharding = on(Placement::Split(1));
    let y = g.add("y", matmul(), &[a, w2]).unwrap();
    g.value_mut(y).sharding = on(SUM);
    let r = g
        .add(
            "r",
            Op::AllReduce {
                axis: "tp".into(),
                op: Default::default(),
            },
            &[y],
        )
        .unwrap();
    g.outputs.push(r);
    verify(&g).unwrap();
}

#[test]
fn a_matmul_output_must_follow_its_operands() {
    // Contraction split on both sides: a partial sum, not a whole value.
    let mut g = mesh_graph();
    let a = laid_out(&mut g, "a", &[4, 8], Placement::Split(1));
    let b = laid_out(&mut g, "b", &[8, 6], Placement::Split(0));
    let y = g.add("y", matmul(), &[a, b]).unwrap();
    g.outputs.push(y);
    let e = only_error(&g);
    let reason = propagation(&e);
    assert!(
        reason.contains("`y` is labelled R, but matmul of inputs (S(1), S(0)) is P(sum)"),
        "{e}"
    );
    assert!(e.to_string().contains("node `y` (matmul)"), "{e}");
    // The contraction split on one side only multiplies pieces with the wrong rows.
    g.value_mut(b).sharding = Sharding::replicated();
    g.value_mut(y).sharding = on(SUM);
    let e = only_error(&g);
    assert!(
        propagation(&e).contains("the contraction dim is split on one side only"),
        "{e}"
    );
}

#[test]
fn an_element_wise_output_must_follow_its_operands() {
    let mut g = mesh_graph();
    let x = laid_out(&mut g, "x", &[4, 8], Placement::Split(0));
    let e1 = g.add("e", Op::Exp, &[x]).unwrap();
    g.outputs.push(e1);
    let e = only_error(&g);
    assert!(
        propagation(&e).contains("`e` is labelled R, but exp of inputs (S(0)) is S(0)"),
        "{e}"
    );
    // A piece added to a whole value of the same extent: rows that do not correspond.
    g.value_mut(e1).sharding = on(Placement::Split(0));
    let r = laid_out(&mut g, "r", &[4, 8], Placement::Replicate);
    let bias = laid_out(&mut g, "bias", &[1, 8], Placement::Replicate);
    let s = g.add("s", Op::Add, &[e1, r]).unwrap();
    g.value_mut(s).sharding = on(Placement::Split(0));
    g.outputs = vec![s];
    let e = only_error(&g);
    assert!(propagation(&e).contains("does not broadcast"), "{e}");
    // A whole row vector broadcasts along the split rows: fine.
    g.node_mut(g.value(s).producer).inputs[1] = bias;
    verify(&g).unwrap();
    // A non-linear op of a partial sum is refused.
    g.value_mut(x).sharding = on(SUM);
    g.value_mut(e1).sharding = on(SUM);
    let errors = verify(&g).unwrap_err().0;
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("a non-linear op of a partial value")),
        "{errors:?}"
    );
}

#[test]
fn a_collective_output_must_follow_its_definition() {
    // Gathering a whole value.
    let mut g = mesh_graph();
    let x = laid_out(&mut g, "x", &[4, 8], Placement::Replicate);
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
    g.outputs.push(ag);
    let e = only_error(&g);
    assert!(
        propagation(&e).contains("an all-gather along dim 0 takes a split along it"),
        "{e}"
    );
    // A reduce-scatter's result is split along its dim, not whole.
    g.value_mut(x).sharding = on(SUM);
    let rs = g
        .add(
            "rs",
            Op::ReduceScatter {
                axis: "tp".into(),
                dim: 1,
                op: Default::default(),
            },
            &[x],
        )
        .unwrap();
    g.outputs = vec![rs];
    g.node_mut(g.value(ag).producer).inputs[0] = rs;
    g.value_mut(rs).sharding = on(Placement::Split(1));
    // ag now gathers dim 0 of a value split along dim 1.
    let e = only_error(&g);
    assert!(e.to_string().contains("node `ag` (all_gather)"), "{e}");
    g.node_mut(g.value(ag).producer).inputs[0] = x;
    g.value_mut(rs).sharding = Sharding::replicated();
    let errors = verify(&g).unwrap_err().0;
    assert!(
        errors.iter().any(|e| e
            .to_string()
            .contains("`rs` is labelled R, but reduce_scatter of inputs (P(sum)) is S(1)")),
        "{errors:?}"
    );
}

/// A split dim of per-device size 1 (a global dim of the mesh size) broadcast against a
/// larger one: each device repeats its own element, which is no piece of any global
/// result (globally the sizes, 2 and 2 x 3, do not broadcast). Element-wise ops, expand,
/// batched matmul and attention masks must each refuse it.
#[test]
fn a_split_dim_is_never_broadcast() {
    let split = Placement::Split(1);
    // Element-wise: [4, 1] pieces of a [4, 2] value added to [4, 3] pieces of [4, 6].
    let mut g = mesh_graph();
    let a = laid_out(&mut g, "a", &[4, 1], split);
    let b = laid_out(&mut g, "b", &[4, 3], split);
    let s = g.add("s", Op::Add, &[a, b]).unwrap();
    g.value_mut(s).sharding = on(split);
    g.outputs.push(s);
    let e = only_error(&g);
    assert!(propagation(&e).contains("broadcast"), "{e}");
    // Equal pieces combine.
    let mut g = mesh_graph();
    let a = laid_out(&mut g, "a", &[4, 1], split);
    let c = laid_out(&mut g, "c", &[4, 1], split);
    let s = g.add("s", Op::Add, &[a, c]).unwrap();
    g.value_mut(s).sharding = on(split);
    g.outputs.push(s);
    verify(&g).unwrap();

    // Expand of the split dim.
    let mut g = mesh_graph();
    let a = laid_out(&mut g, "a", &[4, 1], split);
    let x = g
        .add(
            "x",
            Op::Expand {
                shape: Shape::new([4u64, 3]),
            },
            &[a],
        )
        .unwrap();
    g.value_mut(x).sharding = on(split);
    g.outputs.push(x);
    let e = only_error(&g);
    assert!(propagation(&e).contains("broadcast"), "{e}");

    // Batched matmul: a batch piece of 1 against a batch piece of 2.
    let mut g = mesh_graph();
    let a = laid_out(&mut g, "a", &[1, 4, 8], Placement::Split(0));
    let b = laid_out(&mut g, "b", &[2, 8, 6], Placement::Split(0));
    let y = g.add("y", matmul(), &[a, b]).unwrap();
    g.value_mut(y).sharding = on(Placement::Split(0));
    g.outputs.push(y);
    let e = only_error(&g);
    assert!(propagation(&e).contains("no matmul rule"), "{e}");

    // Attention: a mask split by batch into pieces of 1 against queries' pieces of 2.
    let mut g = mesh_graph();
    let by_batch = Placement::Split(0);
    let q = laid_out(&mut g, "q", &[2, 2, 4, 8], by_batch);
    let k = laid_out(&mut g, "k", &[2, 2, 4, 8], by_batch);
    let v = laid_out(&mut g, "v", &[2, 2, 4, 8], by_batch);
    let m = laid_out(&mut g, "m", &[1, 1, 4, 4], by_batch);
    let o = g
        .add(
            "o",
            Op::Attention {
                causal: false,
                scale: None,
            },
            &[q, k, v, m],
        )
        .unwrap();
    g.value_mut(o).sharding = on(by_batch);
    g.outputs.push(o);
    let e = only_error(&g);
    assert!(
        propagation(&e).contains("the mask must be split alike"),
        "{e}"
    );
}

/// Expert parallelism in miniature: each device dispatches its own tokens (local rows
/// and counts), pads them into blocks, exchanges the blocks, takes them back, unpads and
/// combines with its tokens' weights: token-split rows again.
fn ep_chain() -> (Graph, [ValueId; 4]) {
    let mut g = Graph::new("ep");
    g.mesh = "ep=2".parse().unwrap();
    let by_token = Sharding::on("ep", Placement::Split(0));
    let local = Sharding::on("ep", Placement::Local);
    let x = input(&mut g, "x", DType::F32, &[4, 8]);
    let ids = input(&mut g, "ids", DType::I64, &[4, 1]);
    let w = input(&mut g, "w", DType::F32, &[4, 1]);
    for v in [x, ids, w] {
        g.value_mut(v).sharding = by_token.clone();
    }
    let d = g
        .add_node("dispatch", Op::MoeDispatch { num_experts: 2 }, vec![x, ids])
        .unwrap();
    let (rows, counts) = (g.node(d).outputs[0], g.node(d).outputs[1]);
    let pad = g
        .add("pad", Op::MoePad { groups: 2 }, &[rows, counts])
        .unwrap();
    let a2a = |g: &mut Graph, name: &str, v: ValueId| {
        g.add(
            name,
            Op::AllToAll {
                axis: "ep".into(),
                split_dim: 0,
                concat_dim: 0,
                payload: weft_ir::A2aPayload::Dense,
            },
            &[v],
        )
        .unwrap()
    };
    let there = a2a(&mut g, "there", pad);
    let back = a2a(&mut g, "back", there);
    let unpad = g
        .add(
            "unpad",
            Op::MoeUnpad { groups: 2, rows: 4 },
            &[back, counts],
        )
        .unwrap();
    let out = g.add("combine", Op::MoeCombine, &[unpad, w, ids]).unwrap();
    for v in [rows, counts, pad, there, back, unpad] {
        g.value_mut(v).sharding = local.clone();
    }
    g.value_mut(out).sharding = by_token;
    g.outputs.push(out);
    (g, [x, rows, there, out])
}

#[test]
fn local_values_flow_from_dispatch_to_combine() {
    let (mut g, [_, rows, there, out]) = ep_chain();
    verify(&g).unwrap();
    // Labelling the dispatched rows a slice of a global tensor is wrong.
    g.value_mut(rows).sharding = Sharding::on("ep", Placement::Split(0));
    let errors = verify(&g).unwrap_err().0;
    assert!(
        errors.iter().any(|e| e
            .to_string()
            .contains("is labelled S(0), but moe_dispatch of inputs (S(0), S(0)) is L")),
        "{errors:?}"
    );
    g.value_mut(rows).sharding = Sharding::on("ep", Placement::Local);
    // A local value returned: nothing could assemble it.
    g.outputs = vec![out, there];
    let e = only_error(&g);
    assert!(
        e.to_string().contains("graph output `there` is local"),
        "{e}"
    );
}

#[test]
fn a_local_value_is_refused_where_a_laid_out_value_is_required() {
    let (mut g, [x, _, there, _]) = ep_chain();
    // Gathered as if it were a piece of a global tensor.
    let ag = g
        .add(
            "gathered",
            Op::AllGather {
                axis: "ep".into(),
                dim: 0,
            },
            &[there],
        )
        .unwrap();
    g.outputs.push(ag);
    let e = only_error(&g);
    assert!(
        e.to_string().contains("node `gathered` (all_gather)")
            && e.to_string().contains("inputs (L) do not combine"),
        "{e}"
    );
    g.outputs.pop();
    // A source is a global tensor laid out over the mesh.
    g.value_mut(x).sharding = Sharding::on("ep", Placement::Local);
    let errors = verify(&g).unwrap_err().0;
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("a source is a global tensor")),
        "{errors:?}"
    );
}

#[test]
fn a_layout_request_cannot_be_local() {
    // Without a mesh, shardings are requests for the sharding pass: a split or whole.
    let (mut g, x, ..) = chain();
    g.value_mut(x).sharding = Sharding::on("ep", Placement::Local);
    let e = only_error(&g);
    assert!(
        matches!(&*e.rule, Rule::Sharding { value, reason } if value == "x" && reason.contains("cannot be local")),
        "{e}"
    );
}
