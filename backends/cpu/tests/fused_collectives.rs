//! The fused GEMM + collective ops (`matmul_reduce_scatter`, `all_gather_matmul`) on N
//! simulated ranks against references written here as plain loops over f64, from the
//! definitions in `docs/json-format.md`:
//!
//! - `matmul_reduce_scatter(a, b)`: rank `i` gets slice `i` (of `size`) along `dim` of
//!   `Σ_r a_r · b_r`;
//! - `all_gather_matmul(a, b)`: every rank gets `concat_r(a_r along dim) · b`.
//!
//! The executor computes both as their decompositions (chunk by chunk, round the ring;
//! docs/cpu-executor.md), so these tests catch a wrong chunk boundary, ring order or piece
//! offset. Shapes are 2-D and 3-D, with batched weights and transposed `b`; device counts
//! 1 to 4 and chunk counts 1 to 4 are swept by proptest. Splits that do not divide are
//! refused when the graph is built. Values are compared within `common::SUMS`.

#[allow(dead_code)]
#[path = "ops/common.rs"]
mod common;

use std::time::Duration;

use proptest::prelude::*;
use weft_backend_cpu::{RunOptions, Tensors, run_ranks};
use weft_ir::{DType, Graph, Op, Shape, Tensor};

use common::{Rng, SUMS, assert_close, numel, ravel, ref_matmul, tf, unravel};

fn opts() -> RunOptions {
    RunOptions {
        timeout: Duration::from_secs(20),
        threads: 1,
        ..RunOptions::default()
    }
}

/// `opts()` with node `y` (the fused op) pipelined in `chunks` pieces, as a plan's
/// kernel configuration says.
fn opts_chunked(chunks: u64) -> RunOptions {
    RunOptions {
        chunks: [("y".to_owned(), chunks)].into(),
        ..opts()
    }
}

/// A graph on mesh `x=n` with f32 inputs `a` and `b` of these local shapes and `op` of them.
fn graph(n: usize, a: &[usize], b: &[usize], op: Op) -> Result<Graph, String> {
    let mut g = Graph::new("fused");
    g.mesh = format!("x={n}").parse().unwrap();
    let input = |g: &mut Graph, name: &str, s: &[usize]| {
        g.add(
            name,
            Op::Input {
                dtype: DType::F32,
                shape: Shape::new(s.iter().map(|&d| d as u64)),
            },
            &[],
        )
        .unwrap()
    };
    let (ia, ib) = (input(&mut g, "a", a), input(&mut g, "b", b));
    let y = g.add("y", op, &[ia, ib]).map_err(|e| e.to_string())?;
    g.outputs.push(y);
    Ok(g)
}

/// Random per-rank values of `a` and `b`.
fn values(rng: &mut Rng, n: usize, a: &[usize], b: &[usize]) -> Vec<(Vec<f32>, Vec<f32>)> {
    (0..n)
        .map(|_| (rng.normals(numel(a)), rng.normals(numel(b))))
        .collect()
}

/// Runs `g` with rank `r` fed `vals[r]`; returns each rank's output.
fn run(g: &Graph, a: &[usize], b: &[usize], vals: &[(Vec<f32>, Vec<f32>)]) -> Vec<Tensor> {
    run_with(g, a, b, vals, &opts()).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run`] with these options; the error as text.
fn run_with(
    g: &Graph,
    a: &[usize],
    b: &[usize],
    vals: &[(Vec<f32>, Vec<f32>)],
    options: &RunOptions,
) -> Result<Vec<Tensor>, String> {
    let feeds: Vec<Tensors> = vals
        .iter()
        .map(|(va, vb)| {
            [
                ("a".to_owned(), tf(a, va.clone())),
                ("b".to_owned(), tf(b, vb.clone())),
            ]
            .into()
        })
        .collect();
    run_ranks(g, feeds, options)
        .map_err(|e| e.to_string())
        .map(|all| all.into_iter().map(|mut outs| outs.remove(0)).collect())
}

/// `b` as `[.., k, n]` (the reference matmul's transposition flag handles `[.., n, k]`).
fn product(a: &[f32], ash: &[usize], b: &[f32], bsh: &[usize], tb: bool) -> (Vec<usize>, Vec<f64>) {
    ref_matmul(a, ash, b, bsh, false, tb)
}

/// Slice `i` of `n` along `d`: shape and values.
fn slice(x: &[f64], shape: &[usize], d: usize, n: usize, i: usize) -> (Vec<usize>, Vec<f64>) {
    let mut out_shape = shape.to_vec();
    out_shape[d] /= n;
    let len = out_shape[d];
    let out = (0..numel(&out_shape))
        .map(|flat| {
            let mut idx = unravel(flat, &out_shape);
            idx[d] += i * len;
            x[ravel(&idx, shape)]
        })
        .collect();
    (out_shape, out)
}

/// `matmul_reduce_scatter` against `Σ_r a_r·b_r`, sliced.
fn check_mrs(seed: u64, n: usize, a: &[usize], b: &[usize], dim: i64, chunks: u64, tb: bool) {
    let op = Op::MatMulReduceScatter {
        axis: "x".into(),
        dim,
        transpose_b: tb,
    };
    let g = graph(n, a, b, op).unwrap_or_else(|e| panic!("{e}"));
    let mut rng = Rng::new(seed);
    let vals = values(&mut rng, n, a, b);
    let got = run_with(&g, a, b, &vals, &opts_chunked(chunks)).unwrap_or_else(|e| panic!("{e}"));
    let mut shape = Vec::new();
    let mut sum: Vec<f64> = Vec::new();
    for (va, vb) in &vals {
        let (s, y) = product(va, a, vb, b, tb);
        if sum.is_empty() {
            (shape, sum) = (s, y);
        } else {
            sum.iter_mut().zip(y).for_each(|(t, v)| *t += v);
        }
    }
    let d = common::axis(dim, shape.len());
    for (i, t) in got.iter().enumerate() {
        let (s, want) = slice(&sum, &shape, d, n, i);
        let what = format!(
            "matmul_reduce_scatter a{a:?} b{b:?} dim {dim} chunks {chunks} tb {tb}, rank {i} of {n}"
        );
        assert_close(&what, t, &s, &want, SUMS);
    }
}

/// `all_gather_matmul` against `concat_r(a_r) · b` (b as fed to rank 0; it is the same on
/// every rank in a real program, and here it differs per rank, so a rank multiplying by
/// the wrong `b` is caught too).
fn check_agm(seed: u64, n: usize, a: &[usize], b: &[usize], dim: i64, tb: bool) {
    let op = Op::AllGatherMatMul {
        axis: "x".into(),
        dim,
        transpose_b: tb,
    };
    let g = graph(n, a, b, op).unwrap_or_else(|e| panic!("{e}"));
    let mut rng = Rng::new(seed);
    let vals = values(&mut rng, n, a, b);
    let got = run(&g, a, b, &vals);
    let d = common::axis(dim, a.len());
    let mut gathered_shape = a.to_vec();
    gathered_shape[d] *= n;
    let gathered: Vec<f32> = (0..numel(&gathered_shape))
        .map(|flat| {
            let mut idx = unravel(flat, &gathered_shape);
            let (r, i) = (idx[d] / a[d], idx[d] % a[d]);
            idx[d] = i;
            vals[r].0[ravel(&idx, a)]
        })
        .collect();
    for (r, t) in got.iter().enumerate() {
        let (s, want) = product(&gathered, &gathered_shape, &vals[r].1, b, tb);
        let what = format!("all_gather_matmul a{a:?} b{b:?} dim {dim} tb {tb}, rank {r} of {n}");
        assert_close(&what, t, &s, &want, SUMS);
    }
}

#[test]
fn matmul_reduce_scatter_chunk_by_chunk_on_2d_products() {
    for n in [1, 2, 3, 4] {
        for chunks in [1, 2, 3, 4] {
            let m = n * chunks * 2;
            // Rows of a.
            check_mrs(1, n, &[m, 5], &[5, 3], 0, chunks as u64, false);
            // Columns of b, plain and transposed.
            check_mrs(2, n, &[3, 5], &[5, m], -1, chunks as u64, false);
            check_mrs(3, n, &[3, 5], &[m, 5], 1, chunks as u64, true);
        }
    }
}

#[test]
fn matmul_reduce_scatter_on_3d_activations_and_batched_weights() {
    for n in [2, 3] {
        for chunks in [1, 2, 4] {
            let c = n * chunks;
            // [batch, seq, hidden] activations scattered along seq, along batch.
            check_mrs(4, n, &[2, c * 2, 4], &[4, 3], 1, chunks as u64, false);
            check_mrs(5, n, &[c, 3, 4], &[4, 3], 0, chunks as u64, false);
            // Batched weights: the batch dim comes from b, a broadcasts along it.
            check_mrs(6, n, &[3, 4], &[c, 4, 2], 0, chunks as u64, false);
            // Both batched: a and b are cut together.
            check_mrs(7, n, &[c, 3, 4], &[c, 2, 4], -3, chunks as u64, true);
        }
    }
}

#[test]
fn all_gather_matmul_round_the_ring() {
    for n in [1, 2, 3, 4] {
        check_agm(10, n, &[2, 5], &[5, 3], 0, false);
        check_agm(11, n, &[3, 5], &[4, 5], -2, true);
        // [batch, seq, hidden] gathered along seq and along batch.
        check_agm(12, n, &[2, 3, 4], &[4, 3], 1, false);
        check_agm(13, n, &[1, 3, 4], &[4, 3], 0, false);
        // A batch of weights aligned with the gathered dim: piece p uses weights p.
        check_agm(14, n, &[1, 3, 4], &[n, 4, 2], 0, false);
        check_agm(15, n, &[2, 3, 4], &[2 * n, 2, 4], 0, true);
    }
}

#[test]
fn splits_that_do_not_divide_are_refused_when_built_or_run() {
    // 9 rows over 2 devices do not divide.
    let mrs = Op::MatMulReduceScatter {
        axis: "x".into(),
        dim: 0,
        transpose_b: false,
    };
    let e = graph(2, &[9, 4], &[4, 3], mrs.clone()).unwrap_err();
    assert!(
        e.contains("does not divide evenly over mesh axis `x`"),
        "{e}"
    );
    // The chunk count is the run's (the plan's kernel configuration): 10 rows over 2
    // devices build, but 3 chunks (6 pieces) do not divide them, and 0 chunks is no count.
    let g = graph(2, &[10, 4], &[4, 3], mrs).unwrap();
    let vals = values(&mut Rng::new(9), 2, &[10, 4], &[4, 3]);
    let e = run_with(&g, &[10, 4], &[4, 3], &vals, &opts_chunked(3)).unwrap_err();
    assert!(e.contains("does not divide into 2·3 pieces"), "{e}");
    let e = run_with(&g, &[10, 4], &[4, 3], &vals, &opts_chunked(0)).unwrap_err();
    assert!(e.contains("must be at least 1"), "{e}");
    // A chunk count for a node that is not a fused GEMM + reduce-scatter is refused, not
    // ignored.
    let options = RunOptions {
        chunks: [("a".to_owned(), 2)].into(),
        ..opts()
    };
    let e = run_with(&g, &[10, 4], &[4, 3], &vals, &options).unwrap_err();
    assert!(e.contains("takes no chunk count"), "{e}");
    // The contraction dim cannot be gathered; pieces are equal by construction (every
    // rank's `a` has the one local type).
    let e = graph(
        2,
        &[4, 4],
        &[8, 3],
        Op::AllGatherMatMul {
            axis: "x".into(),
            dim: 1,
            transpose_b: false,
        },
    )
    .unwrap_err();
    assert!(e.contains("contraction dim"), "{e}");
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Every device count and chunk count up to 4, with piece lengths of 1 to 3 (a length
    /// of 1 is where an off-by-one in a chunk boundary shows first), along rows, columns
    /// or the batch.
    #[test]
    fn matmul_reduce_scatter_over_device_and_chunk_counts(
        n in 1usize..=4,
        chunks in 1usize..=4,
        len in 1usize..=3,
        k in 1usize..=4,
        other in 1usize..=3,
        dim in 0usize..3,
        tb in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let c = n * chunks * len;
        match dim {
            0 => check_mrs(seed, n, &[2, c, k], &[k, other], 1, chunks as u64, false),
            1 => {
                let b = if tb { [c, k] } else { [k, c] };
                check_mrs(seed, n, &[other, k], &b, -1, chunks as u64, tb)
            }
            _ => check_mrs(seed, n, &[c, other, k], &[k, 2], 0, chunks as u64, false),
        }
    }

    /// Every device count up to 4 with pieces of 1 to 3 rows, along rows or the batch.
    #[test]
    fn all_gather_matmul_over_device_counts(
        n in 1usize..=4,
        len in 1usize..=3,
        k in 1usize..=4,
        cols in 1usize..=3,
        batch in any::<bool>(),
        tb in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let b = if tb { vec![cols, k] } else { vec![k, cols] };
        if batch {
            check_agm(seed, n, &[len, 2, k], &b, 0, tb);
        } else {
            check_agm(seed, n, &[2, len, k], &b, 1, tb);
        }
    }
}
