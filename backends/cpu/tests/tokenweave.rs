//! TokenWeave's fused kernel, `reduce_scatter_add_norm_all_gather`, on N simulated ranks:
//! against a reference written here as plain loops over f64 from its definition (every
//! rank gets `concat_i rms_norm(Σ_r x_r [shard i] + residual_i) · w` and its own
//! `Σ_r x_r [shard me] + residual_me`), for 1, 2 and 4 ranks, 2-D and 3-D values, the
//! token dim counted from either end; and in bf16 bit for bit against the four unfused
//! ops it stands for (the executor runs it as that decomposition, each step rounded).

#[allow(dead_code)]
#[path = "ops/common.rs"]
mod common;

use std::time::Duration;

use weft_backend_cpu::{RunOptions, Tensors, run_ranks};
use weft_ir::{DType, Graph, Op, Placement, ReduceOp, Shape, Sharding, Tensor, ValueId};

use common::{Rng, SUMS, assert_close, numel, ravel, tf, unravel};

const EPS: f64 = 1e-5;

fn opts() -> RunOptions {
    RunOptions {
        timeout: Duration::from_secs(20),
        threads: 1,
        ..RunOptions::default()
    }
}

fn input(g: &mut Graph, name: &str, dtype: DType, s: &[usize], p: Placement) -> ValueId {
    let v = g
        .add(
            name,
            Op::Input {
                dtype,
                shape: Shape::new(s.iter().map(|&d| d as u64)),
            },
            &[],
        )
        .unwrap();
    g.value_mut(v).sharding = Sharding::on("x", p);
    v
}

/// The fused op over `x` (local shape `xs`, a partial sum), the residual shard and the
/// weight; or, `fused` false, the reduce-scatter, add, norm and all-gather it stands for.
fn graph(n: usize, xs: &[usize], dim: i64, dtype: DType, fused: bool) -> Graph {
    let mut g = Graph::new("tokenweave");
    g.mesh = format!("x={n}").parse().unwrap();
    let d = if dim < 0 { dim + xs.len() as i64 } else { dim } as usize;
    let mut rs = xs.to_vec();
    rs[d] /= n;
    let x = input(&mut g, "x", dtype, xs, Placement::Partial(ReduceOp::Sum));
    let r = input(&mut g, "r", dtype, &rs, Placement::Split(d));
    let w = input(
        &mut g,
        "w",
        dtype,
        &[xs[xs.len() - 1]],
        Placement::Replicate,
    );
    let axis = "x".to_owned();
    let (normed, updated) = if fused {
        let op = Op::ReduceScatterAddNormAllGather {
            axis,
            dim,
            eps: EPS,
        };
        let node = g.add_node("y", op, vec![x, r, w]).unwrap();
        let outs = g.node(node).outputs.clone();
        (outs[0], outs[1])
    } else {
        let s = g
            .add(
                "rs",
                Op::ReduceScatter {
                    axis: axis.clone(),
                    dim,
                    op: ReduceOp::Sum,
                },
                &[x],
            )
            .unwrap();
        let u = g.add("u", Op::Add, &[s, r]).unwrap();
        let z = g.add("z", Op::RmsNorm { eps: EPS }, &[u, w]).unwrap();
        let a = g.add("ag", Op::AllGather { axis, dim }, &[z]).unwrap();
        g.value_mut(s).sharding = Sharding::on("x", Placement::Split(d));
        g.value_mut(u).sharding = Sharding::on("x", Placement::Split(d));
        g.value_mut(z).sharding = Sharding::on("x", Placement::Split(d));
        (a, u)
    };
    g.value_mut(updated).sharding = Sharding::on("x", Placement::Split(d));
    g.outputs = vec![normed, updated];
    weft_ir::verify(&g).unwrap_or_else(|e| panic!("{e}"));
    g
}

type Feeds = Vec<(Vec<f32>, Vec<f32>, Vec<f32>)>;

fn feeds(dtype: DType, xs: &[usize], rs: &[usize], vals: &Feeds) -> Vec<Tensors> {
    let t = |s: &[usize], v: &[f32]| {
        let f = tf(s, v.to_vec());
        if dtype == DType::F32 {
            f
        } else {
            Tensor::from_f32(dtype, s.to_vec(), v.to_vec()).unwrap()
        }
    };
    vals.iter()
        .map(|(x, r, w)| {
            [
                ("x".to_owned(), t(xs, x)),
                ("r".to_owned(), t(rs, r)),
                ("w".to_owned(), t(&[xs[xs.len() - 1]], w)),
            ]
            .into()
        })
        .collect()
}

/// Random per-rank values: partial sums, residual shards, and one weight for all.
fn values(rng: &mut Rng, n: usize, xs: &[usize], rs: &[usize]) -> Feeds {
    let w = rng.away_from_zero(xs[xs.len() - 1], 0.5, 1.5);
    (0..n)
        .map(|_| (rng.normals(numel(xs)), rng.normals(numel(rs)), w.clone()))
        .collect()
}

/// The reference: (gathered normalised rows, each rank's updated residual shard).
fn reference(n: usize, xs: &[usize], d: usize, vals: &Feeds) -> (Vec<f64>, Vec<Vec<f64>>) {
    let total: Vec<f64> = (0..numel(xs))
        .map(|i| vals.iter().map(|(x, _, _)| f64::from(x[i])).sum())
        .collect();
    let h = xs[xs.len() - 1];
    let len = xs[d] / n;
    let mut rs = xs.to_vec();
    rs[d] = len;
    let w: Vec<f64> = vals[0].2.iter().map(|&v| f64::from(v)).collect();
    let mut updated = vec![vec![0.0; numel(&rs)]; n];
    let mut gathered = vec![0.0; numel(xs)];
    for (i, up) in updated.iter_mut().enumerate() {
        for (flat, (u, &residual)) in up.iter_mut().zip(&vals[i].1).enumerate() {
            let mut idx = unravel(flat, &rs);
            idx[d] += i * len;
            *u = total[ravel(&idx, xs)] + f64::from(residual);
        }
        for row in 0..numel(&rs) / h {
            let v = &up[row * h..(row + 1) * h];
            let ms = v.iter().map(|a| a * a).sum::<f64>() / h as f64;
            let scale = 1.0 / (ms + EPS).sqrt();
            for (c, &a) in v.iter().enumerate() {
                let mut idx = unravel(row * h + c, &rs);
                idx[d] += i * len;
                gathered[ravel(&idx, xs)] = a * scale * w[c];
            }
        }
    }
    (gathered, updated)
}

#[test]
fn the_fused_kernel_matches_its_definition_on_every_rank() {
    let mut rng = Rng::new(12);
    for n in [1usize, 2, 4] {
        for (xs, dim) in [
            (vec![8, 16], 0i64),
            (vec![8, 16], -2),
            (vec![2, 8, 12], 1),
            (vec![4, 4, 8], 0),
        ] {
            let d = if dim < 0 { dim + xs.len() as i64 } else { dim } as usize;
            let mut rs = xs.clone();
            rs[d] /= n;
            let g = graph(n, &xs, dim, DType::F32, true);
            let vals = values(&mut rng, n, &xs, &rs);
            let got = run_ranks(&g, feeds(DType::F32, &xs, &rs, &vals), &opts())
                .unwrap_or_else(|e| panic!("{e}"));
            let (gathered, updated) = reference(n, &xs, d, &vals);
            for (rank, outs) in got.iter().enumerate() {
                let what = format!("{n} ranks, {xs:?} dim {dim}, rank {rank}");
                assert_close(&format!("{what}: normed"), &outs[0], &xs, &gathered, SUMS);
                assert_close(
                    &format!("{what}: residual"),
                    &outs[1],
                    &rs,
                    &updated[rank],
                    SUMS,
                );
            }
        }
    }
}

#[test]
fn the_fused_kernel_is_its_decomposition_bit_for_bit_in_bf16() {
    let mut rng = Rng::new(5);
    let (n, xs, dim) = (4, vec![2usize, 16, 32], 1i64);
    let mut rs = xs.clone();
    rs[1] /= n;
    let vals = values(&mut rng, n, &xs, &rs);
    let run = |fused: bool| {
        let g = graph(n, &xs, dim, DType::Bf16, fused);
        run_ranks(&g, feeds(DType::Bf16, &xs, &rs, &vals), &opts())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let (fused, ops) = (run(true), run(false));
    for (rank, (a, b)) in fused.iter().zip(&ops).enumerate() {
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            assert_eq!(x.dtype(), DType::Bf16);
            assert_eq!(x.shape(), y.shape(), "rank {rank} output {k}");
            let bits = |t: &Tensor| -> Vec<u32> {
                t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect()
            };
            assert_eq!(bits(x), bits(y), "rank {rank} output {k}");
            assert!(x.as_f32().unwrap().iter().all(|v| v.is_finite()));
        }
    }
}

#[test]
fn a_residual_that_is_not_the_scattered_piece_is_refused() {
    let mut g = Graph::new("bad");
    g.mesh = "x=2".parse().unwrap();
    let x = input(
        &mut g,
        "x",
        DType::F32,
        &[8, 16],
        Placement::Partial(ReduceOp::Sum),
    );
    let r = input(&mut g, "r", DType::F32, &[8, 16], Placement::Split(0));
    let w = input(&mut g, "w", DType::F32, &[16], Placement::Replicate);
    let op = Op::ReduceScatterAddNormAllGather {
        axis: "x".into(),
        dim: 0,
        eps: EPS,
    };
    let e = g.add_node("y", op, vec![x, r, w]).unwrap_err().to_string();
    assert!(e.contains("the residual shard must be f32[4, 16]"), "{e}");
    let op = Op::ReduceScatterAddNormAllGather {
        axis: "x".into(),
        dim: -1,
        eps: EPS,
    };
    let r = input(&mut g, "r2", DType::F32, &[8, 8], Placement::Split(1));
    let e = g.add_node("z", op, vec![x, r, w]).unwrap_err().to_string();
    assert!(e.contains("normalised (last) dim"), "{e}");
}
