//! Collective semantics on N simulated ranks, N in {1, 2, 3, 4, 8}, checked against the
//! definitions (NCCL's) computed directly in the test; plus the failure modes: peers that
//! disagree, peers that never arrive, and shapes that do not divide.

use std::time::{Duration, Instant};

use weft_backend_cpu::{ExecError, RunOptions, Tensors, run, run_programs, run_ranks};
use weft_ir::{DType, Graph, Op, Placement, ReduceOp, Shape, Sharding, Tensor, rng};

const SIZES: [usize; 5] = [1, 2, 3, 4, 8];

fn mesh_graph(n: usize, shape: &[u64], dtype: DType) -> (Graph, weft_ir::ValueId) {
    let mut g = Graph::new(format!("coll{n}"));
    g.mesh = format!("x={n}").parse().unwrap();
    let x = g
        .add(
            "x",
            Op::Input {
                dtype,
                shape: Shape::new(shape.iter().copied()),
            },
            &[],
        )
        .unwrap();
    (g, x)
}

/// Distinct random inputs per rank.
fn rank_inputs(n: usize, shape: &[usize], dtype: DType) -> Vec<Tensor> {
    let numel: usize = shape.iter().product();
    (0..n)
        .map(|r| {
            let values = (0..numel as u64).map(|i| rng::normal(100 + r as u64, i, 0.0, 1.0));
            match dtype {
                DType::I64 => Tensor::from_i64(
                    dtype,
                    shape.to_vec(),
                    values.map(|v| (v * 100.0) as i64).collect(),
                )
                .unwrap(),
                _ => Tensor::from_f64(dtype, shape.to_vec(), values).unwrap(),
            }
        })
        .collect()
}

fn per_rank(inputs: &[Tensor]) -> Vec<Tensors> {
    inputs
        .iter()
        .map(|t| [("x".to_owned(), t.clone())].into())
        .collect()
}

fn opts() -> RunOptions {
    RunOptions {
        timeout: Duration::from_secs(10),
        ..RunOptions::default()
    }
}

fn one_op(n: usize, shape: &[u64], dtype: DType, op: Op) -> Graph {
    let (mut g, x) = mesh_graph(n, shape, dtype);
    let y = g.add("y", op, &[x]).unwrap();
    g.outputs.push(y);
    g
}

#[test]
fn all_reduce_sums_in_rank_order() {
    for n in SIZES {
        let g = one_op(
            n,
            &[3, 5],
            DType::F32,
            Op::AllReduce {
                axis: "x".into(),
                op: ReduceOp::Sum,
            },
        );
        let inputs = rank_inputs(n, &[3, 5], DType::F32);
        let outs = run_ranks(&g, per_rank(&inputs), &opts()).unwrap();
        let mut expect = inputs[0].as_f32().unwrap().to_vec();
        for t in &inputs[1..] {
            expect
                .iter_mut()
                .zip(t.as_f32().unwrap())
                .for_each(|(a, b)| *a += b);
        }
        for out in &outs {
            assert_eq!(
                out[0].as_f32().unwrap(),
                expect.as_slice(),
                "n={n}: bit-exact, every rank"
            );
        }
    }
}

#[test]
fn all_reduce_max_and_integers() {
    for n in SIZES {
        let g = one_op(
            n,
            &[4],
            DType::F32,
            Op::AllReduce {
                axis: "x".into(),
                op: ReduceOp::Max,
            },
        );
        let inputs = rank_inputs(n, &[4], DType::F32);
        let outs = run_ranks(&g, per_rank(&inputs), &opts()).unwrap();
        for i in 0..4 {
            let m = inputs
                .iter()
                .map(|t| t.as_f32().unwrap()[i])
                .fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(outs[n - 1][0].as_f32().unwrap()[i], m);
        }
        let g = one_op(
            n,
            &[4],
            DType::I64,
            Op::AllReduce {
                axis: "x".into(),
                op: ReduceOp::Sum,
            },
        );
        let inputs = rank_inputs(n, &[4], DType::I64);
        let outs = run_ranks(&g, per_rank(&inputs), &opts()).unwrap();
        for i in 0..4 {
            let s: i64 = inputs.iter().map(|t| t.as_i64().unwrap()[i]).sum();
            assert_eq!(outs[0][0].as_i64().unwrap()[i], s);
        }
    }
}

#[test]
fn all_gather_concatenates_in_rank_order() {
    for n in SIZES {
        let g = one_op(
            n,
            &[2, 3],
            DType::F32,
            Op::AllGather {
                axis: "x".into(),
                dim: 1,
            },
        );
        let inputs = rank_inputs(n, &[2, 3], DType::F32);
        let outs = run_ranks(&g, per_rank(&inputs), &opts()).unwrap();
        for out in &outs {
            let y = &out[0];
            assert_eq!(y.shape(), &[2, 3 * n]);
            for row in 0..2 {
                for (r, input) in inputs.iter().enumerate() {
                    for c in 0..3 {
                        assert_eq!(
                            y.as_f32().unwrap()[row * 3 * n + r * 3 + c],
                            input.as_f32().unwrap()[row * 3 + c]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn reduce_scatter_gives_rank_i_slice_i_of_the_sum() {
    for n in SIZES {
        let rows = 2 * n;
        let g = one_op(
            n,
            &[rows as u64, 3],
            DType::F32,
            Op::ReduceScatter {
                axis: "x".into(),
                dim: 0,
                op: ReduceOp::Sum,
            },
        );
        let inputs = rank_inputs(n, &[rows, 3], DType::F32);
        let outs = run_ranks(&g, per_rank(&inputs), &opts()).unwrap();
        let mut sum = inputs[0].as_f32().unwrap().to_vec();
        for t in &inputs[1..] {
            sum.iter_mut()
                .zip(t.as_f32().unwrap())
                .for_each(|(a, b)| *a += b);
        }
        for (r, out) in outs.iter().enumerate() {
            assert_eq!(out[0].shape(), &[2, 3]);
            assert_eq!(
                out[0].as_f32().unwrap(),
                &sum[r * 6..(r + 1) * 6],
                "n={n} rank {r}"
            );
        }
    }
}

#[test]
fn all_to_all_sends_chunk_j_to_rank_j() {
    for n in SIZES {
        // [n*2, 3]: split rows into n chunks of 2, concatenate arrivals along dim 1.
        let g = one_op(
            n,
            &[2 * n as u64, 3],
            DType::F32,
            Op::AllToAll {
                axis: "x".into(),
                split_dim: 0,
                concat_dim: 1,
                payload: weft_ir::A2aPayload::Dense,
            },
        );
        let inputs = rank_inputs(n, &[2 * n, 3], DType::F32);
        let outs = run_ranks(&g, per_rank(&inputs), &opts()).unwrap();
        for (j, out) in outs.iter().enumerate() {
            let y = out[0].as_f32().unwrap();
            assert_eq!(out[0].shape(), &[2, 3 * n]);
            for row in 0..2 {
                for (i, input) in inputs.iter().enumerate() {
                    for c in 0..3 {
                        let sent = input.as_f32().unwrap()[(j * 2 + row) * 3 + c];
                        assert_eq!(
                            y[row * 3 * n + i * 3 + c],
                            sent,
                            "n={n}: rank {j} gets chunk {j} of rank {i}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn broadcast_copies_the_root() {
    for n in SIZES {
        let root = n - 1;
        let g = one_op(
            n,
            &[5],
            DType::F32,
            Op::Broadcast {
                axis: "x".into(),
                root: root as u64,
            },
        );
        let inputs = rank_inputs(n, &[5], DType::F32);
        let outs = run_ranks(&g, per_rank(&inputs), &opts()).unwrap();
        for out in &outs {
            assert_eq!(&out[0], &inputs[root]);
        }
    }
}

#[test]
fn send_recv_ring() {
    for n in SIZES {
        let (mut g, x) = mesh_graph(n, &[4], DType::F32);
        g.add_node(
            "send",
            Op::Send {
                axis: "x".into(),
                shift: 1,
            },
            vec![x],
        )
        .unwrap();
        let y = g
            .add(
                "recv",
                Op::Recv {
                    axis: "x".into(),
                    shift: 1,
                    dtype: DType::F32,
                    shape: Shape::new([4u64]),
                },
                &[],
            )
            .unwrap();
        g.outputs.push(y);
        let inputs = rank_inputs(n, &[4], DType::F32);
        let outs = run_ranks(&g, per_rank(&inputs), &opts()).unwrap();
        for (r, out) in outs.iter().enumerate() {
            assert_eq!(
                &out[0],
                &inputs[(r + n - 1) % n],
                "n={n}: rank {r} receives from its predecessor"
            );
        }
    }
}

#[test]
fn groups_on_a_2d_mesh_stay_within_their_axis() {
    // dp=2, tp=2: all_reduce over tp sums ranks {0,1} and {2,3} separately.
    let mut g = Graph::new("2d");
    g.mesh = "dp=2,tp=2".parse().unwrap();
    let x = g
        .add(
            "x",
            Op::Input {
                dtype: DType::F32,
                shape: Shape::new([3u64]),
            },
            &[],
        )
        .unwrap();
    let y = g
        .add(
            "y",
            Op::AllReduce {
                axis: "tp".into(),
                op: ReduceOp::Sum,
            },
            &[x],
        )
        .unwrap();
    g.outputs.push(y);
    let inputs = rank_inputs(4, &[3], DType::F32);
    let outs = run_ranks(&g, per_rank(&inputs), &opts()).unwrap();
    for (r, out) in outs.iter().enumerate() {
        let partner = r ^ 1;
        let want: Vec<f32> = (0..3)
            .map(|i| {
                let (a, b) = (r.min(partner), r.max(partner));
                inputs[a].as_f32().unwrap()[i] + inputs[b].as_f32().unwrap()[i]
            })
            .collect();
        assert_eq!(out[0].as_f32().unwrap(), want.as_slice(), "rank {r}");
    }
}

#[test]
fn sharded_inputs_and_outputs_are_split_and_reassembled() {
    // A logical [4, 6] input split over x=2 along dim 1, all-gathered back: identity.
    let mut g = Graph::new("split");
    g.mesh = "x=2".parse().unwrap();
    let x = g
        .add(
            "x",
            Op::Input {
                dtype: DType::F32,
                shape: Shape::new([4u64, 3]),
            },
            &[],
        )
        .unwrap();
    g.value_mut(x).sharding = Sharding::on("x", Placement::Split(1));
    let y = g
        .add(
            "y",
            Op::AllGather {
                axis: "x".into(),
                dim: 1,
            },
            &[x],
        )
        .unwrap();
    let z = g.add("z", Op::Exp, &[x]).unwrap();
    g.value_mut(z).sharding = Sharding::on("x", Placement::Split(1));
    g.outputs.extend([y, z]);
    let logical = rank_inputs(1, &[4, 6], DType::F32).remove(0);
    let outs = run(&g, &[("x".to_owned(), logical.clone())].into(), &opts()).unwrap();
    assert_eq!(outs[0].1, logical);
    let exp: Vec<f32> = logical.as_f32().unwrap().iter().map(|v| v.exp()).collect();
    assert_eq!(outs[1].1.as_f32().unwrap(), exp.as_slice());
    // A logical input of the wrong shape is refused with both shapes named.
    let bad = rank_inputs(1, &[4, 3], DType::F32).remove(0);
    let e = run(&g, &[("x".to_owned(), bad)].into(), &opts()).unwrap_err();
    assert!(
        e.to_string().contains("expected f32[4, 6], got f32[4, 3]"),
        "{e}"
    );
}

#[test]
fn shapes_that_do_not_divide_are_rejected_when_the_graph_is_built() {
    for n in [2, 3, 4, 8] {
        let (mut g, x) = mesh_graph(n, &[n as u64 + 1, 2], DType::F32);
        for op in [
            Op::ReduceScatter {
                axis: "x".into(),
                dim: 0,
                op: ReduceOp::Sum,
            },
            Op::AllToAll {
                axis: "x".into(),
                split_dim: 0,
                concat_dim: 1,
                payload: weft_ir::A2aPayload::Dense,
            },
        ] {
            let name = op.name();
            let e = g.add("bad", op, &[x]).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(&format!("node `bad` ({name})")), "{text}");
            assert!(
                text.contains(&format!(
                    "does not divide evenly over mesh axis `x` of size {n}"
                )),
                "{text}"
            );
        }
    }
}

#[test]
fn peers_that_disagree_are_named() {
    let a = one_op(
        2,
        &[4],
        DType::F32,
        Op::AllReduce {
            axis: "x".into(),
            op: ReduceOp::Sum,
        },
    );
    let b = one_op(
        2,
        &[5],
        DType::F32,
        Op::AllReduce {
            axis: "x".into(),
            op: ReduceOp::Sum,
        },
    );
    let inputs = vec![
        [("x".to_owned(), rank_inputs(1, &[4], DType::F32).remove(0))].into(),
        [("x".to_owned(), rank_inputs(1, &[5], DType::F32).remove(0))].into(),
    ];
    let e = run_programs(&[&a, &b], inputs, &opts()).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ExecError::Collective { .. }), "{text}");
    assert!(
        text.contains("node `y` (all_reduce) over mesh axis `x`"),
        "{text}"
    );
    assert!(text.contains("peers disagree: rank 0 runs `y` as all_reduce(axis=x, op=sum) on f32[4]; rank 1 runs `y` as all_reduce(axis=x, op=sum) on f32[5]"), "{text}");
}

#[test]
fn a_peer_that_never_arrives_is_reported_quickly() {
    let a = one_op(
        2,
        &[4],
        DType::F32,
        Op::AllReduce {
            axis: "x".into(),
            op: ReduceOp::Sum,
        },
    );
    let b = one_op(2, &[4], DType::F32, Op::Exp);
    let x = rank_inputs(2, &[4], DType::F32);
    let start = Instant::now();
    let e = run_programs(&[&a, &b], per_rank(&x), &opts()).unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "no waiting for the timeout"
    );
    assert!(
        e.to_string()
            .contains("rank(s) 1 of group [0, 1] finished their program without reaching it"),
        "{e}"
    );
}

#[test]
fn a_deadlock_ends_with_an_error_at_the_timeout() {
    // Rank 0 waits at an all-reduce; rank 1 waits for a message rank 0 never sends.
    let a = one_op(
        2,
        &[4],
        DType::F32,
        Op::AllReduce {
            axis: "x".into(),
            op: ReduceOp::Sum,
        },
    );
    let (mut b, _) = mesh_graph(2, &[4], DType::F32);
    let r = b
        .add(
            "wait",
            Op::Recv {
                axis: "x".into(),
                shift: 1,
                dtype: DType::F32,
                shape: Shape::new([4u64]),
            },
            &[],
        )
        .unwrap();
    b.outputs.push(r);
    let x = rank_inputs(2, &[4], DType::F32);
    let options = RunOptions {
        timeout: Duration::from_millis(300),
        ..RunOptions::default()
    };
    let start = Instant::now();
    let e = run_programs(&[&a, &b], per_rank(&x), &options).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    let text = e.to_string();
    assert!(text.contains("within 0.3 s"), "{text}");
}

#[test]
fn a_failing_rank_stops_its_peers() {
    // Rank 1's gather index is out of range; rank 0 must not wait for the timeout.
    let mut a = Graph::new("a");
    a.mesh = "x=2".parse().unwrap();
    let data = a
        .add(
            "data",
            Op::Input {
                dtype: DType::F32,
                shape: Shape::new([3u64]),
            },
            &[],
        )
        .unwrap();
    let idx = a
        .add(
            "idx",
            Op::Input {
                dtype: DType::I64,
                shape: Shape::new([1u64]),
            },
            &[],
        )
        .unwrap();
    let g = a.add("g", Op::Gather { axis: 0 }, &[data, idx]).unwrap();
    let y = a
        .add(
            "y",
            Op::AllReduce {
                axis: "x".into(),
                op: ReduceOp::Sum,
            },
            &[g],
        )
        .unwrap();
    a.outputs.push(y);
    let d = Tensor::from_f32(DType::F32, vec![3], vec![1.0, 2.0, 3.0]).unwrap();
    let inputs = |i: i64| -> Tensors {
        [
            ("data".to_owned(), d.clone()),
            (
                "idx".to_owned(),
                Tensor::from_i64(DType::I64, vec![1], vec![i]).unwrap(),
            ),
        ]
        .into()
    };
    let start = Instant::now();
    let e = run_ranks(&a, vec![inputs(0), inputs(7)], &opts()).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(
        e.to_string(),
        "rank 1: node `g` (gather): index 7 is out of range for a dimension of size 3"
    );
}

#[test]
fn inline_values_of_a_sharded_weight_describe_the_whole_tensor() {
    // A weight split over x=2 with a [2]-element piece lists all 4 logical values; each
    // rank materialises its half, and the reassembled output is the whole.
    let mut g = Graph::new("w");
    g.mesh = "x=2".parse().unwrap();
    let w = g
        .add(
            "w",
            Op::Weight {
                dtype: DType::F32,
                shape: Shape::new([2u64]),
                init: weft_ir::Init::Inline(vec![1.0, 2.0, 3.0, 4.0]),
            },
            &[],
        )
        .unwrap();
    g.value_mut(w).sharding = Sharding::on("x", Placement::Split(0));
    g.outputs.push(w);
    let out = run(&g, &Tensors::new(), &opts()).unwrap();
    assert_eq!(out[0].1.as_f32(), Some(&[1.0f32, 2.0, 3.0, 4.0][..]));
    // The local count alone is refused by the verifier, before anything runs.
    if let Op::Weight { init, .. } = &mut g.node_mut(g.value(w).producer).op {
        *init = weft_ir::Init::Inline(vec![1.0, 2.0]);
    }
    let e = run(&g, &Tensors::new(), &opts()).unwrap_err();
    assert!(
        e.to_string()
            .contains("2 inline values given for a tensor of 4 elements (2 per piece, 2 pieces)"),
        "{e}"
    );
}

#[test]
fn all_slice_keeps_rank_i_slice_i_without_communicating() {
    for n in SIZES {
        let g = one_op(
            n,
            &[3, 2 * n as u64],
            DType::F32,
            Op::AllSlice {
                axis: "x".into(),
                dim: 1,
            },
        );
        let inputs = rank_inputs(n, &[3, 2 * n], DType::F32);
        let outs = run_ranks(&g, per_rank(&inputs), &opts()).unwrap();
        for (r, out) in outs.iter().enumerate() {
            let x = inputs[r].as_f32().unwrap();
            let want: Vec<f32> = (0..3)
                .flat_map(|row| (0..2).map(move |c| (row, 2 * r + c)))
                .map(|(row, col)| x[row * 2 * n + col])
                .collect();
            assert_eq!(out[0].shape(), &[3, 2]);
            assert_eq!(out[0].as_f32().unwrap(), want.as_slice(), "n={n} rank {r}");
        }
    }
}

#[test]
fn sharded_gather_looks_up_global_rows_and_zeros_the_rest() {
    for n in SIZES {
        let rows = 2usize; // per rank
        // `x` is each rank's piece of the table.
        let (mut g, table) = mesh_graph(n, &[rows as u64, 3], DType::F32);
        let total = (rows * n) as i64;
        let ids: Vec<f64> = vec![0.0, (total - 1) as f64, -1.0, 1.0];
        let idx = g
            .add(
                "ids",
                Op::Constant {
                    dtype: DType::I64,
                    shape: Shape::new([4u64]),
                    init: weft_ir::Init::Inline(ids),
                },
                &[],
            )
            .unwrap();
        let y = g
            .add("y", Op::ShardedGather { axis: "x".into() }, &[table, idx])
            .unwrap();
        g.outputs.push(y);
        let tables: Vec<Tensor> = rank_inputs(n, &[rows, 3], DType::F32);
        let per = per_rank(&tables);
        let outs = run_ranks(&g, per, &opts()).unwrap();
        // Global row j lives on rank j / rows at local row j % rows.
        let global = |j: i64| {
            let j = if j < 0 { j + total } else { j } as usize;
            (j / rows, j % rows)
        };
        for (r, out) in outs.iter().enumerate() {
            let got = out[0].as_f32().unwrap();
            for (slot, &j) in [0, total - 1, -1, 1].iter().enumerate() {
                let (owner, local) = global(j);
                let want: Vec<f32> = if owner == r {
                    tables[r].as_f32().unwrap()[local * 3..local * 3 + 3].to_vec()
                } else {
                    vec![0.0; 3]
                };
                assert_eq!(
                    &got[slot * 3..slot * 3 + 3],
                    want.as_slice(),
                    "n={n} rank {r} id {j}"
                );
            }
        }
    }
}

/// The reference max for `max` collectives and reductions: NaN if any operand is NaN.
fn max_with_nan(values: impl Iterator<Item = f32>) -> f32 {
    let mut m = f32::NEG_INFINITY;
    for v in values {
        if v.is_nan() {
            return f32::NAN;
        }
        if v > m {
            m = v;
        }
    }
    m
}

/// Equal bits where the reference is a number, NaN where it is NaN.
fn assert_same_or_both_nan(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() {
            assert!(g.is_nan(), "{what}: element {i} is {g}, not NaN");
        } else {
            assert_eq!(g.to_bits(), w.to_bits(), "{what}: element {i}: {g} vs {w}");
        }
    }
}

/// Issue 10 follow-up: a `max` all-reduce or reduce-scatter propagates a NaN from any rank
/// (`f32::max` dropped it, so one rank's NaN vanished), as torch's max and a NaN-aware
/// NCCL max do; so do a single-device max reduction and the reassembly of a partial-max
/// output, so sharded and single-device runs agree.
#[test]
fn max_collectives_propagate_nan_from_any_rank() {
    for n in [2, 3, 4, 8] {
        let rows = 2 * n;
        let shape = [rows, 3];
        let mut inputs = rank_inputs(n, &shape, DType::F32);
        // NaN on the first rank, on the last, and on one in between, at different places.
        let numel = rows * 3;
        for (rank, at) in [(0, 1), (n - 1, numel - 1), (n / 2, numel / 2)] {
            let mut v = inputs[rank].as_f32().unwrap().to_vec();
            v[at] = f32::NAN;
            inputs[rank] = Tensor::from_f32(DType::F32, shape.to_vec(), v).unwrap();
        }
        let want: Vec<f32> = (0..numel)
            .map(|i| max_with_nan(inputs.iter().map(|t| t.as_f32().unwrap()[i])))
            .collect();
        assert_eq!(want.iter().filter(|v| v.is_nan()).count(), 3.min(numel));
        let all_reduce = one_op(
            n,
            &[rows as u64, 3],
            DType::F32,
            Op::AllReduce {
                axis: "x".into(),
                op: ReduceOp::Max,
            },
        );
        let outs = run_ranks(&all_reduce, per_rank(&inputs), &opts()).unwrap();
        for (r, out) in outs.iter().enumerate() {
            assert_same_or_both_nan(
                out[0].as_f32().unwrap(),
                &want,
                &format!("all_reduce max n={n} rank {r}"),
            );
        }
        let reduce_scatter = one_op(
            n,
            &[rows as u64, 3],
            DType::F32,
            Op::ReduceScatter {
                axis: "x".into(),
                dim: 0,
                op: ReduceOp::Max,
            },
        );
        let outs = run_ranks(&reduce_scatter, per_rank(&inputs), &opts()).unwrap();
        for (r, out) in outs.iter().enumerate() {
            assert_eq!(out[0].shape(), &[2, 3]);
            assert_same_or_both_nan(
                out[0].as_f32().unwrap(),
                &want[r * 6..(r + 1) * 6],
                &format!("reduce_scatter max n={n} rank {r}"),
            );
        }
    }
    // A max over a split dim is a partial max; reassembling the output takes the max of the
    // ranks' pieces, NaN included. The single-device reduction agrees.
    let logical = {
        let mut v = rank_inputs(1, &[4, 3], DType::F32)
            .remove(0)
            .as_f32()
            .unwrap()
            .to_vec();
        v[10] = f32::NAN; // row 3 (rank 1's half), column 1
        Tensor::from_f32(DType::F32, vec![4, 3], v).unwrap()
    };
    let want: Vec<f32> = (0..3)
        .map(|c| max_with_nan((0..4).map(|r| logical.as_f32().unwrap()[r * 3 + c])))
        .collect();
    assert!(want[1].is_nan() && !want[0].is_nan() && !want[2].is_nan());
    for split in [true, false] {
        let mut g = Graph::new("partial-max");
        if split {
            g.mesh = "x=2".parse().unwrap();
        }
        let local_rows = if split { 2u64 } else { 4 };
        let x = g
            .add(
                "x",
                Op::Input {
                    dtype: DType::F32,
                    shape: Shape::new([local_rows, 3]),
                },
                &[],
            )
            .unwrap();
        let y = g
            .add(
                "y",
                Op::Reduce {
                    kind: weft_ir::ReduceKind::Max,
                    axes: vec![0],
                    keepdims: false,
                },
                &[x],
            )
            .unwrap();
        if split {
            g.value_mut(x).sharding = Sharding::on("x", Placement::Split(0));
            g.value_mut(y).sharding = Sharding::on("x", Placement::Partial(ReduceOp::Max));
        }
        g.outputs.push(y);
        let outs = run(&g, &[("x".to_owned(), logical.clone())].into(), &opts()).unwrap();
        assert_same_or_both_nan(
            outs[0].1.as_f32().unwrap(),
            &want,
            &format!("reduce max, split={split}"),
        );
    }
}

/// Two calls of one rank with one sequence number (two streams of a plan that numbered
/// its calls wrongly) are a named error, not an overwritten deposit or an internal panic.
#[test]
fn two_calls_of_one_rank_with_one_sequence_number_are_named() {
    use std::sync::Arc;
    use weft_backend_cpu::collectives::World;
    use weft_backend_cpu::mesh_coords::RankGrid;
    let world = World::new(
        RankGrid::new(&"tp=2".parse().unwrap()),
        Duration::from_secs(5),
    );
    let t = Arc::new(Tensor::from_f32(DType::F32, vec![2], vec![1.0, 2.0]).unwrap());
    let errors: Vec<String> = std::thread::scope(|s| {
        let calls: Vec<_> = ["first", "second"]
            .into_iter()
            .map(|node| {
                let (world, t) = (&world, t.clone());
                s.spawn(move || world.exchange(0, "tp", 1, node, "sum".into(), t))
            })
            .collect();
        calls
            .into_iter()
            .filter_map(|h| h.join().expect("no panic").err())
            .map(|e| format!("{e:?}"))
            .collect()
    });
    assert!(
        errors
            .iter()
            .any(|e| e.contains("this rank issued two calls with one sequence number")),
        "{errors:?}"
    );
}
