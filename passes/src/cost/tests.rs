//! Tests of the dispatch over ops, the fused-op pipeline, contention and the published
//! figures (the per-formula tests live beside each formula).

use weft_hardware::Profile;
use weft_ir::{DType, DimBindings, FusedStep, Mesh, Op, ReduceKind, ReduceOp, Shape, TensorType};
use weft_plan::KernelConfig;

use super::contention::{MAX_MEASURED_SLOWDOWN, MEAN_MEASURED_SLOWDOWN};
use super::validation::{self, HELD_ASIDE_TOLERANCE};
use super::{CostError, CostModel, OpCost};

fn t(dtype: DType, dims: &[u64]) -> TensorType {
    TensorType::new(dtype, Shape::new(dims.iter().copied()))
}

fn cm(profile: &str, tp: u64) -> CostModel {
    CostModel::new(
        &Profile::builtin(profile).unwrap(),
        &Mesh::new([("tp", tp)]).unwrap(),
    )
    .unwrap()
}

fn cost(
    m: &CostModel,
    op: &Op,
    ins: &[TensorType],
    outs: &[TensorType],
) -> Result<OpCost, CostError> {
    let i: Vec<&TensorType> = ins.iter().collect();
    let o: Vec<&TensorType> = outs.iter().collect();
    m.op_cost(op, &i, &o, &DimBindings::new())
}

/// One op of every kind with operands of scale `s` (rows) and `h` (width).
fn every_op(s: u64, h: u64) -> Vec<(Op, Vec<TensorType>, Vec<TensorType>)> {
    let b = DType::Bf16;
    let x = t(b, &[s, h]);
    let w = t(b, &[h, h]);
    let idx = t(DType::I64, &[s]);
    let ax = || "tp".to_string();
    let mut v: Vec<(Op, Vec<TensorType>, Vec<TensorType>)> = vec![
        (
            Op::Input {
                dtype: b,
                shape: Shape::new([s, h]),
            },
            vec![],
            vec![x.clone()],
        ),
        (
            Op::Reshape {
                shape: Shape::new([s * h]),
            },
            vec![x.clone()],
            vec![t(b, &[s * h])],
        ),
        (
            Op::MatMul {
                transpose_a: false,
                transpose_b: false,
            },
            vec![x.clone(), w.clone()],
            vec![x.clone()],
        ),
        (
            Op::ExpertMatMul {
                transpose_b: false,
                rows: weft_ir::ExpertRows::Dense,
            },
            vec![x.clone(), t(DType::I64, &[8]), t(b, &[8, h, h])],
            vec![x.clone()],
        ),
        (
            Op::Attention {
                causal: true,
                scale: None,
            },
            vec![
                t(b, &[1, 8, s, 128]),
                t(b, &[1, 8, s, 128]),
                t(b, &[1, 8, s, 128]),
            ],
            vec![t(b, &[1, 8, s, 128])],
        ),
        (
            Op::FusedElementwise {
                steps: vec![
                    FusedStep::Matmul {
                        operand: 1,
                        transpose_b: false,
                    },
                    FusedStep::Unary {
                        op: Box::new(Op::Silu),
                    },
                ],
            },
            vec![x.clone(), w.clone()],
            vec![x.clone()],
        ),
        (
            Op::Gather { axis: 0 },
            vec![w.clone(), idx.clone()],
            vec![x.clone()],
        ),
        (
            Op::ShardedGather { axis: ax() },
            vec![w.clone(), idx],
            vec![x.clone()],
        ),
        (
            Op::AllSlice { axis: ax(), dim: 0 },
            vec![x.clone()],
            vec![t(b, &[s / 8, h])],
        ),
        (Op::Add, vec![x.clone(), x.clone()], vec![x.clone()]),
        (Op::Silu, vec![x.clone()], vec![x.clone()]),
        (
            Op::RmsNorm { eps: 1e-5 },
            vec![x.clone(), t(b, &[h])],
            vec![x.clone()],
        ),
        (Op::Softmax { axis: -1 }, vec![x.clone()], vec![x.clone()]),
        (
            Op::Reduce {
                kind: ReduceKind::Sum,
                axes: vec![-1],
                keepdims: false,
            },
            vec![x.clone()],
            vec![t(b, &[s])],
        ),
        (
            Op::AllReduce {
                axis: ax(),
                op: ReduceOp::Sum,
            },
            vec![x.clone()],
            vec![x.clone()],
        ),
        (
            Op::AllGather { axis: ax(), dim: 0 },
            vec![x.clone()],
            vec![t(b, &[s * 8, h])],
        ),
        (
            Op::ReduceScatter {
                axis: ax(),
                dim: 0,
                op: ReduceOp::Sum,
            },
            vec![x.clone()],
            vec![t(b, &[s / 8, h])],
        ),
        (
            Op::AllToAll {
                axis: ax(),
                split_dim: 0,
                concat_dim: 0,
                payload: weft_ir::A2aPayload::Dense,
            },
            vec![x.clone()],
            vec![x.clone()],
        ),
        (
            Op::Send {
                axis: ax(),
                shift: 1,
            },
            vec![x.clone()],
            vec![],
        ),
        (
            Op::Recv {
                axis: ax(),
                shift: 1,
                dtype: b,
                shape: Shape::new([s, h]),
            },
            vec![],
            vec![x.clone()],
        ),
        (
            Op::Broadcast {
                axis: ax(),
                root: 0,
            },
            vec![x.clone()],
            vec![x.clone()],
        ),
        (
            Op::AllGatherMatMul {
                axis: ax(),
                dim: 0,
                transpose_b: false,
            },
            vec![x.clone(), w.clone()],
            vec![t(b, &[s * 8, h])],
        ),
    ];
    v.push(fused_rs(s, h));
    v
}

fn fused_rs(s: u64, h: u64) -> (Op, Vec<TensorType>, Vec<TensorType>) {
    let b = DType::Bf16;
    // The cost model chooses the chunk count (the op has none).
    let op = Op::MatMulReduceScatter {
        axis: "tp".into(),
        dim: 0,
        transpose_b: false,
    };
    (
        op,
        vec![t(b, &[s, h]), t(b, &[h, h])],
        vec![t(b, &[s / 8, h])],
    )
}

#[test]
fn every_op_kind_costs_positive_finite_at_tiny_and_huge_sizes() {
    let m = cm("h100-sxm-8", 8);
    for (s, h) in [(8, 8), (1 << 20, 1 << 14), (1 << 30, 1 << 16)] {
        for (op, ins, outs) in every_op(s, h) {
            let c = cost(&m, &op, &ins, &outs).unwrap_or_else(|e| panic!("{}: {e}", op.name()));
            let free = matches!(op, Op::Input { .. } | Op::Reshape { .. });
            assert!(
                c.time_us.is_finite() && (free || c.time_us > 0.0),
                "{} {s}x{h}: {c:?}",
                op.name()
            );
            assert!(c.compute_us >= 0.0 && c.comm_us >= 0.0, "{}", op.name());
        }
    }
}

#[test]
fn views_and_sources_cost_nothing() {
    let m = cm("h100-sxm-8", 8);
    for (op, ins, outs) in every_op(64, 64).into_iter().take(2) {
        let c = cost(&m, &op, &ins, &outs).unwrap();
        assert_eq!(c.time_us, 0.0);
        assert_eq!(c.kernel, KernelConfig::View);
    }
}

#[test]
fn cost_grows_with_size_for_every_op_kind() {
    let m = cm("h100-sxm-8", 8);
    let small = every_op(1024, 1024);
    let large = every_op(8192, 8192);
    for ((op, si, so), (_, li, lo)) in small.iter().zip(&large) {
        let a = cost(&m, op, si, so).unwrap().time_us;
        let b = cost(&m, op, li, lo).unwrap().time_us;
        let free = matches!(op, Op::Input { .. } | Op::Reshape { .. });
        assert!(free || b > a, "{}: {a} -> {b}", op.name());
    }
}

#[test]
fn errors_not_panics_for_what_cannot_be_costed() {
    let m = cm("h100-sxm-8", 8);
    let x = t(DType::I64, &[64, 64]);
    let mm = Op::MatMul {
        transpose_a: false,
        transpose_b: false,
    };
    let e = cost(&m, &mm, &[x.clone(), x.clone()], std::slice::from_ref(&x)).unwrap_err();
    assert!(matches!(e, CostError::Unsupported { .. }), "{e}");
    // Missing operands.
    let e = cost(&m, &mm, std::slice::from_ref(&x), std::slice::from_ref(&x)).unwrap_err();
    assert!(e.to_string().contains("input 1"), "{e}");
    // An axis the mesh lacks.
    let e = cost(
        &m,
        &Op::AllReduce {
            axis: "dp".into(),
            op: ReduceOp::Sum,
        },
        std::slice::from_ref(&x),
        std::slice::from_ref(&x),
    )
    .unwrap_err();
    assert!(matches!(e, CostError::UnknownAxis { .. }), "{e}");
    // An unbound symbolic dim.
    let sym = TensorType::new(DType::Bf16, Shape::new([weft_ir::Dim::sym("batch")]));
    let e = cost(
        &m,
        &Op::Silu,
        std::slice::from_ref(&sym),
        std::slice::from_ref(&sym),
    )
    .unwrap_err();
    assert!(e.to_string().contains("batch"), "{e}");
    // A mesh larger than the machine.
    let e = CostModel::new(
        &Profile::builtin("h100-sxm-8").unwrap(),
        &Mesh::new([("tp", 16)]).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(e, CostError::MeshTooLarge { .. }), "{e}");
    // A profile without memory bandwidth cannot cost memory-bound ops: refused, naming it.
    let mut p = Profile::builtin("h100-sxm-8").unwrap();
    p.device.memory_achievable_bandwidth = None;
    let e = CostModel::new(&p, &Mesh::new([("tp", 8)]).unwrap()).unwrap_err();
    assert!(
        e.to_string().contains("device.memory_achievable_bandwidth"),
        "{e}"
    );
}

#[test]
fn a_group_of_one_costs_nothing() {
    let m = cm("h100-sxm-8", 1);
    let x = t(DType::Bf16, &[1024, 1024]);
    let c = cost(
        &m,
        &Op::AllReduce {
            axis: "tp".into(),
            op: ReduceOp::Sum,
        },
        std::slice::from_ref(&x),
        std::slice::from_ref(&x),
    )
    .unwrap();
    assert_eq!(c.time_us, 0.0);
    assert_eq!(m.contention_slowdown(&c), 1.0);
}

fn chunks(c: &OpCost) -> u64 {
    match c.kernel {
        KernelConfig::Pipelined { chunks, .. } => chunks,
        ref k => panic!("not pipelined: {k:?}"),
    }
}

#[test]
fn fused_ops_split_large_shapes_and_keep_small_ones_whole() {
    let m = cm("h100-sxm-8", 8);
    // Small: a decode-sized GEMM + RS; latencies dominate, splitting is slower.
    let (op, ins, outs) = fused_rs(64, 1024);
    let small = cost(&m, &op, &ins, &outs).unwrap();
    assert_eq!(chunks(&small), 1, "{small:?}");
    let f = |rows: u64, h: u64, c: u64| {
        let x = super::pipeline::Fused {
            kind: weft_ir::CollectiveKind::ReduceScatter,
            gemm: super::gemm::GemmShape {
                batch: 1,
                m: rows,
                n: h,
                k: h,
            },
            dtype: DType::Bf16,
            message: rows * h * 2,
            group: super::collective::Group {
                size: 8,
                nodes: 1,
                per_node: 8,
            },
            cut: super::pipeline::Cut::Rows,
            dim_size: rows / 8,
        };
        m.chunk_plan(&x, c, "t", None).unwrap().total_s
    };
    assert!(
        f(64, 1024, 2) > f(64, 1024, 1),
        "small shapes are slower split"
    );
    // Large: a prefill-sized GEMM + RS; the pipeline hides most of the collective.
    let (op, ins, outs) = fused_rs(16384, 8192);
    let large = cost(&m, &op, &ins, &outs).unwrap();
    assert!(chunks(&large) > 1, "{large:?}");
    assert!(large.time_us < f(16384, 8192, 1) * 1e6);
    // And never faster than either part alone.
    assert!(large.time_us >= large.compute_us / chunks(&large) as f64);
}

#[test]
fn contention_stays_inside_the_measured_band() {
    for name in ["h100-sxm-8", "h200-sxm-8", "a100-sxm-8", "h800-sxm-8"] {
        let m = cm(name, 8);
        for e in [10u64, 16, 20, 24, 27, 30] {
            let x = t(DType::Bf16, &[1 << e]);
            let big = t(DType::Bf16, &[8 << e]);
            for (op, i, o) in [
                (
                    Op::AllReduce {
                        axis: "tp".into(),
                        op: ReduceOp::Sum,
                    },
                    &x,
                    &x,
                ),
                (
                    Op::AllGather {
                        axis: "tp".into(),
                        dim: 0,
                    },
                    &x,
                    &big,
                ),
                (
                    Op::ReduceScatter {
                        axis: "tp".into(),
                        dim: 0,
                        op: ReduceOp::Sum,
                    },
                    &big,
                    &x,
                ),
            ] {
                let c = cost(&m, &op, std::slice::from_ref(i), std::slice::from_ref(o)).unwrap();
                let s = m.contention_slowdown(&c);
                assert!(
                    (1.0..=MAX_MEASURED_SLOWDOWN).contains(&s),
                    "{name} {} 2^{e}: {s}",
                    op.name()
                );
            }
        }
    }
    // The common case, a large NVLink ring collective, lands near the measured mean.
    let m = cm("h100-sxm-8", 8);
    let x = t(DType::Bf16, &[1 << 27]);
    let big = t(DType::Bf16, &[8 << 27]);
    let c = cost(
        &m,
        &Op::AllGather {
            axis: "tp".into(),
            dim: 0,
        },
        &[x],
        &[big],
    )
    .unwrap();
    let s = m.contention_slowdown(&c);
    assert!((s - MEAN_MEASURED_SLOWDOWN).abs() < 0.05, "{s}");
}

#[test]
fn held_aside_figures_are_within_tolerance() {
    let rows = validation::held_aside().unwrap();
    let misses: Vec<String> = rows
        .iter()
        .filter(|r| r.known_miss.is_none() && r.error() > HELD_ASIDE_TOLERANCE)
        .map(|r| {
            format!(
                "{}: published {} model {:.1} ({:.1}%)",
                r.what,
                r.published,
                r.predicted,
                r.error() * 100.0
            )
        })
        .collect();
    assert!(
        misses.is_empty(),
        "held-aside misses:\n{}",
        misses.join("\n")
    );
    // A row marked as a miss must still miss: the note goes when the miss does.
    for r in rows.iter().filter(|r| r.known_miss.is_some()) {
        assert!(
            r.error() > HELD_ASIDE_TOLERANCE,
            "{} no longer misses; drop its note",
            r.what
        );
    }
}

#[test]
fn calibration_figures_are_reproduced() {
    for r in validation::calibrated().unwrap() {
        if r.bound_only {
            assert!(
                r.predicted <= r.published,
                "{}: {} above its cap {}",
                r.what,
                r.predicted,
                r.published
            );
        } else {
            assert!(
                r.error() < 0.01,
                "{}: {} vs {}",
                r.what,
                r.published,
                r.predicted
            );
        }
    }
}

const DOC_BEGIN: &str = "<!-- generated by `WEFT_BLESS=1 cargo test -p weft-passes cost::tests::docs`; do not edit by hand -->\n";
const DOC_END: &str = "<!-- end of generated tables -->\n";

/// docs/cost-model.md's tables are this model's output, so the doc cannot drift.
#[test]
fn docs_cost_model_md_tables_are_generated() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/cost-model.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (head, rest) = doc
        .split_once(DOC_BEGIN)
        .expect("the doc has the begin marker");
    let (_, tail) = rest
        .split_once(DOC_END)
        .expect("the doc has the end marker");
    let expected = format!(
        "{head}{DOC_BEGIN}\n{}\n{DOC_END}{tail}",
        validation::render().unwrap()
    );
    if std::env::var_os("WEFT_BLESS").is_some() {
        std::fs::write(&path, &expected).unwrap();
        return;
    }
    assert_eq!(
        doc, expected,
        "docs/cost-model.md is out of date: run WEFT_BLESS=1 cargo test -p weft-passes cost::tests::docs"
    );
}

#[test]
fn algorithm_choice_matches_nccl_tests_309() {
    for (what, published, got) in validation::algorithm_choices().unwrap() {
        assert_eq!(published, got, "{what}");
    }
}

#[test]
fn every_builtin_profile_costs_every_op_kind() {
    for name in Profile::builtin_names() {
        let p = Profile::builtin(name).unwrap();
        let all = u64::from(p.total_devices().unwrap());
        for n in [all.min(8), all] {
            let m = CostModel::new(&p, &Mesh::new([("tp", n)]).unwrap()).unwrap();
            for (op, ins, outs) in every_op(4096, 4096) {
                let c = cost(&m, &op, &ins, &outs)
                    .unwrap_or_else(|e| panic!("{name} {}: {e}", op.name()));
                assert!(
                    c.time_us.is_finite() && c.time_us >= 0.0,
                    "{name} {}",
                    op.name()
                );
                let s = m.contention_slowdown(&c);
                assert!(
                    (1.0..=MAX_MEASURED_SLOWDOWN).contains(&s),
                    "{name} {}: {s}",
                    op.name()
                );
            }
        }
    }
}

/// A tensor-parallel MLP block as a graph with symbolic dims: every node costs, the
/// collective runs over the mesh axis, and a failure names the node.
#[test]
fn graph_nodes_cost_under_the_graphs_dims() {
    use weft_ir::{Dim, Graph, Init};
    let mut g = Graph::new("mlp");
    g.mesh = Mesh::new([("tp", 8)]).unwrap();
    g.dims.insert("tokens".into(), 4096);
    let b = DType::Bf16;
    let shape = |d: &[Dim]| Shape::new(d.iter().cloned());
    let tokens = Dim::sym("tokens");
    let x = g
        .add(
            "x",
            Op::Input {
                dtype: b,
                shape: shape(&[tokens.clone(), 8192.into()]),
            },
            &[],
        )
        .unwrap();
    let w1 = g
        .add(
            "w1",
            Op::Weight {
                dtype: b,
                shape: Shape::new([8192u64, 3584]),
                init: Init::Normal {
                    seed: 1,
                    mean: 0.0,
                    std: 0.02,
                },
            },
            &[],
        )
        .unwrap();
    let w2 = g
        .add(
            "w2",
            Op::Weight {
                dtype: b,
                shape: Shape::new([3584u64, 8192]),
                init: Init::Normal {
                    seed: 1,
                    mean: 0.0,
                    std: 0.02,
                },
            },
            &[],
        )
        .unwrap();
    let mm = || Op::MatMul {
        transpose_a: false,
        transpose_b: false,
    };
    let h = g.add("up", mm(), &[x, w1]).unwrap();
    let a = g.add("act", Op::Silu, &[h]).unwrap();
    let y = g.add("down", mm(), &[a, w2]).unwrap();
    let r = g
        .add(
            "ar",
            Op::AllReduce {
                axis: "tp".into(),
                op: ReduceOp::Sum,
            },
            &[y],
        )
        .unwrap();
    g.outputs = vec![r];
    let m = cm("h100-sxm-8", 8);
    let mut total = 0.0;
    for (id, n) in g.nodes() {
        let c = m.node_cost(&g, id).unwrap_or_else(|e| panic!("{e}"));
        if n.name == "ar" {
            assert!(matches!(c.kernel, KernelConfig::Collective(ref cc) if cc.group_size == 8));
            assert!(c.comm_us > 0.0 && c.compute_us == 0.0);
        }
        total += c.time_us;
    }
    assert!(total > 0.0 && total.is_finite());
    // Unbind the dim: the error names the node.
    g.dims.clear();
    let up = g.nodes().find(|(_, n)| n.name == "up").unwrap().0;
    let e = m.node_cost(&g, up).unwrap_err().to_string();
    assert!(e.contains("node `up`") && e.contains("tokens"), "{e}");
}

#[test]
fn a_slice_of_one_contiguous_block_is_a_view_and_other_slices_copy() {
    let m = cm("h100-sxm-8", 8);
    let b = DType::Bf16;
    let half = |axis: i64| Op::Slice {
        axis,
        start: 0,
        end: 1024,
    };
    // [1, 2048, 8192] cut along the tokens: dim 0 has extent 1, so the half is one block.
    let c = cost(
        &m,
        &half(1),
        &[t(b, &[1, 2048, 8192])],
        &[t(b, &[1, 1024, 8192])],
    )
    .unwrap();
    assert_eq!((c.time_us, c.kernel), (0.0, KernelConfig::View));
    // The outermost dim, and a negative axis naming it.
    let c = cost(&m, &half(0), &[t(b, &[2048, 8192])], &[t(b, &[1024, 8192])]).unwrap();
    assert_eq!(c.kernel, KernelConfig::View);
    let c = cost(
        &m,
        &half(-2),
        &[t(b, &[2048, 8192])],
        &[t(b, &[1024, 8192])],
    )
    .unwrap();
    assert_eq!(c.kernel, KernelConfig::View);
    // Columns of a matrix, or tokens under a batch of 2: strided, so a copy.
    let c = cost(&m, &half(1), &[t(b, &[8192, 2048])], &[t(b, &[8192, 1024])]).unwrap();
    assert!(
        matches!(c.kernel, KernelConfig::MemoryBound { .. }),
        "{c:?}"
    );
    assert!(c.time_us > 0.0);
    let c = cost(
        &m,
        &half(1),
        &[t(b, &[2, 2048, 64])],
        &[t(b, &[2, 1024, 64])],
    )
    .unwrap();
    assert!(
        matches!(c.kernel, KernelConfig::MemoryBound { .. }),
        "{c:?}"
    );
    // A concat is still a copy: no buffer elision exists.
    let c = cost(
        &m,
        &Op::Concat { axis: 1 },
        &[t(b, &[1, 1024, 8192]), t(b, &[1, 1024, 8192])],
        &[t(b, &[1, 2048, 8192])],
    )
    .unwrap();
    assert!(
        matches!(c.kernel, KernelConfig::MemoryBound { .. }),
        "{c:?}"
    );
    // A bad axis is an error, not a panic.
    assert!(cost(&m, &half(5), &[t(b, &[2048, 8192])], &[t(b, &[1024, 8192])]).is_err());
}

#[test]
fn a_batched_activation_times_a_shared_weight_is_one_gemm_of_all_rows() {
    // A decode step's [batch, 1, hidden] @ [hidden, n]: one GEMM of `batch` rows that
    // reads the weight once, not `batch` one-row GEMMs each reading it.
    let m = cm("h100-sxm-8", 1);
    let b = DType::Bf16;
    let op = Op::MatMul {
        transpose_a: false,
        transpose_b: false,
    };
    let at = |batch: u64| {
        cost(
            &m,
            &op,
            &[t(b, &[batch, 1, 8192]), t(b, &[8192, 3584])],
            &[t(b, &[batch, 1, 3584])],
        )
        .unwrap()
    };
    let (one, many) = (at(1), at(64));
    match &many.kernel {
        KernelConfig::Gemm { batch, m, .. } => assert_eq!((*batch, *m), (1, 64)),
        other => panic!("{other:?}"),
    }
    // Memory-bound on the weight: 64 rows cost far less than 64 one-row GEMMs.
    assert!(
        many.time_us < 4.0 * one.time_us,
        "{} vs {}",
        many.time_us,
        one.time_us
    );
    // A batched right operand stays a batched GEMM.
    let batched = cost(
        &m,
        &op,
        &[t(b, &[8, 16, 64]), t(b, &[8, 64, 16])],
        &[t(b, &[8, 16, 16])],
    )
    .unwrap();
    match &batched.kernel {
        KernelConfig::Gemm { batch, m, .. } => assert_eq!((*batch, *m), (8, 16)),
        other => panic!("{other:?}"),
    }
}
