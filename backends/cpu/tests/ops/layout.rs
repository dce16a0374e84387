//! Layout and indexing ops (gather, reshape, transpose, concat, split, slice), cast,
//! reduce and top_k. Values are moved, never computed, so most checks are exact.

use weft_ir::{DType, Op, ReduceKind, Tensor};

use crate::common::*;

// ---- gather ------------------------------------------------------------------------------------

/// `take(data, indices, axis)` with negative indices counting from the end.
pub fn ref_gather<T: Copy>(
    data: &[T],
    dshape: &[usize],
    idx: &[i64],
    ishape: &[usize],
    ax: usize,
) -> (Vec<usize>, Vec<T>) {
    let n = dshape[ax];
    let outer: usize = dshape[..ax].iter().product();
    let inner: usize = dshape[ax + 1..].iter().product();
    let mut out = Vec::new();
    for o in 0..outer {
        for &i in idx {
            let j = if i < 0 { i + n as i64 } else { i } as usize;
            out.extend_from_slice(&data[(o * n + j) * inner..][..inner]);
        }
    }
    let mut shape = dshape[..ax].to_vec();
    shape.extend_from_slice(ishape);
    shape.extend_from_slice(&dshape[ax + 1..]);
    (shape, out)
}

#[test]
fn gather_along_axes_with_negative_indices() {
    // (data shape, indices shape, index dtype, axis)
    let cases: [(&[usize], &[usize], DType, i64); 6] = [
        (&[6, 3], &[2, 4], DType::I64, 0),
        (&[4, 5, 3], &[7], DType::I32, 1),
        (&[3, 4], &[2, 2], DType::I64, -1),
        (&[4, 3], &[], DType::I64, 0),
        (&[2, 3, 5], &[3, 1], DType::I64, -3),
        (&[9], &[12], DType::I32, 0),
    ];
    for (case, &(dshape, ishape, idtype, ax)) in cases.iter().enumerate() {
        let mut rng = Rng::new(600 + case as u64);
        let (dt, data) = randn(&mut rng, dshape);
        let a = axis(ax, dshape.len());
        let n = dshape[a] as i64;
        let mut idx = rng.ints(numel(ishape), -n, n);
        if idx.len() > 2 {
            // The extremes of both ranges.
            idx[0] = -n;
            idx[1] = n - 1;
        }
        let it = Tensor::from_i64(idtype, ishape.to_vec(), idx.clone()).unwrap();
        let got = run_op(Op::Gather { axis: ax }, vec![dt, it]);
        let (shape, want) = ref_gather(&data, dshape, &idx, ishape, a);
        assert_same_f32(
            &format!("gather {dshape:?} by {ishape:?} axis {ax}"),
            &got[0],
            &shape,
            &want,
        );
    }
    // Integer data (an id remapping table).
    let table = vec![10, -20, 30, -40, 50];
    let got = run_op(
        Op::Gather { axis: 0 },
        vec![ti(&[5], table), ti(&[4], vec![4, -1, 0, -5])],
    );
    assert_ints(
        "gather i64 data",
        &got[0],
        DType::I64,
        &[4],
        &[50, 50, 10, 10],
    );
}

#[test]
fn gather_out_of_range_index_is_an_error() {
    let mut rng = Rng::new(610);
    let (dt, _) = randn(&mut rng, &[6, 3]);
    for bad in [6, -7, 1000, i64::MIN] {
        let r = try_run_op(
            Op::Gather { axis: 0 },
            vec![dt.clone(), ti(&[3], vec![0, bad, 1])],
        );
        assert_kernel_error(&format!("gather index {bad} of 6"), r, "node");
    }
    let (dt, _) = randn(&mut rng, &[2, 4]);
    let r = try_run_op(Op::Gather { axis: 1 }, vec![dt, ti32(&[2], vec![3, 4])]);
    assert_kernel_error("gather index 4 of 4 along axis 1", r, "node");
}

// ---- reshape, transpose -----------------------------------------------------------------------

#[test]
fn reshape_keeps_row_major_order() {
    let mut rng = Rng::new(620);
    let (xt, x) = randn(&mut rng, &[2, 3, 4]);
    for to in [
        vec![4usize, 6],
        vec![24],
        vec![2, 12],
        vec![1, 2, 1, 12, 1],
        vec![3, 2, 2, 2],
    ] {
        let got = run_op(
            Op::Reshape {
                shape: shape_of(&to),
            },
            vec![xt.clone()],
        );
        assert_same_f32(&format!("reshape to {to:?}"), &got[0], &to, &x);
    }
    let got = run_op(
        Op::Reshape {
            shape: shape_of(&[3, 2]),
        },
        vec![ti(&[6], vec![1, 2, 3, 4, 5, 6])],
    );
    assert_ints(
        "reshape i64",
        &got[0],
        DType::I64,
        &[3, 2],
        &[1, 2, 3, 4, 5, 6],
    );
}

/// Output dim `i` is input dim `perm[i]`.
pub fn ref_transpose<T: Copy>(x: &[T], shape: &[usize], perm: &[usize]) -> (Vec<usize>, Vec<T>) {
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let out = (0..x.len())
        .map(|o| {
            let oi = unravel(o, &out_shape);
            let mut ii = vec![0; shape.len()];
            for (i, &p) in perm.iter().enumerate() {
                ii[p] = oi[i];
            }
            x[ravel(&ii, shape)]
        })
        .collect();
    (out_shape, out)
}

#[test]
fn transpose_permutes_dims() {
    let cases: [(&[usize], &[usize]); 6] = [
        (&[3, 5], &[1, 0]),
        (&[2, 3, 4], &[2, 0, 1]),
        (&[2, 3, 4], &[0, 2, 1]),
        (&[2, 3, 4, 5], &[2, 0, 3, 1]),
        (&[2, 3, 4, 5], &[0, 1, 2, 3]),
        (&[1, 3, 1, 2], &[3, 2, 1, 0]),
    ];
    for (case, &(shape, perm)) in cases.iter().enumerate() {
        let mut rng = Rng::new(630 + case as u64);
        let (xt, x) = randn(&mut rng, shape);
        let got = run_op(
            Op::Transpose {
                perm: perm.to_vec(),
            },
            vec![xt],
        );
        let (out_shape, want) = ref_transpose(&x, shape, perm);
        assert_same_f32(
            &format!("transpose {shape:?} by {perm:?}"),
            &got[0],
            &out_shape,
            &want,
        );
    }
    let x: Vec<i64> = (0..6).collect();
    let got = run_op(Op::Transpose { perm: vec![1, 0] }, vec![ti(&[2, 3], x)]);
    assert_ints(
        "transpose i64",
        &got[0],
        DType::I64,
        &[3, 2],
        &[0, 3, 1, 4, 2, 5],
    );
}

// ---- concat, split, slice ----------------------------------------------------------------------

/// Joins row-major pieces along `ax`.
pub fn ref_concat<T: Copy>(parts: &[(&[T], &[usize])], ax: usize) -> (Vec<usize>, Vec<T>) {
    let first = parts[0].1;
    let outer: usize = first[..ax].iter().product();
    let inner: usize = first[ax + 1..].iter().product();
    let mut out = Vec::new();
    for o in 0..outer {
        for (data, shape) in parts {
            let chunk = shape[ax] * inner;
            out.extend_from_slice(&data[o * chunk..][..chunk]);
        }
    }
    let mut shape = first.to_vec();
    shape[ax] = parts.iter().map(|p| p.1[ax]).sum();
    (shape, out)
}

/// Elements `lo..hi` along `ax`.
pub fn ref_slice<T: Copy>(
    x: &[T],
    shape: &[usize],
    ax: usize,
    lo: usize,
    hi: usize,
) -> (Vec<usize>, Vec<T>) {
    let n = shape[ax];
    let outer: usize = shape[..ax].iter().product();
    let inner: usize = shape[ax + 1..].iter().product();
    let mut out = Vec::new();
    for o in 0..outer {
        out.extend_from_slice(&x[(o * n + lo) * inner..(o * n + hi) * inner]);
    }
    let mut s = shape.to_vec();
    s[ax] = hi - lo;
    (s, out)
}

#[test]
fn concat_three_inputs() {
    let cases: [(&[&[usize]], i64); 4] = [
        (&[&[2, 3], &[1, 3], &[4, 3]], 0),
        (&[&[2, 3, 1], &[2, 3, 4], &[2, 3, 2]], -1),
        (&[&[2, 1, 3], &[2, 4, 3], &[2, 2, 3]], 1),
        (&[&[3, 2]], 0),
    ];
    for (case, &(shapes, ax)) in cases.iter().enumerate() {
        let mut rng = Rng::new(640 + case as u64);
        let mut g = Builder::new("concat");
        let mut datas = Vec::new();
        let mut ins = Vec::new();
        for (i, s) in shapes.iter().enumerate() {
            let (t, d) = randn(&mut rng, s);
            ins.push(g.input(&format!("x{i}"), t));
            datas.push(d);
        }
        let out = g.op("cat", Op::Concat { axis: ax }, &ins);
        let got = g.run(&[out]);
        let parts: Vec<(&[f32], &[usize])> = datas
            .iter()
            .map(|d| &d[..])
            .zip(shapes.iter().copied())
            .collect();
        let (shape, want) = ref_concat(&parts, axis(ax, shapes[0].len()));
        assert_same_f32(
            &format!("concat {shapes:?} axis {ax}"),
            &got[0],
            &shape,
            &want,
        );
    }
    let got = run_op(
        Op::Concat { axis: 0 },
        vec![
            ti(&[2], vec![1, 2]),
            ti(&[1], vec![3]),
            ti(&[3], vec![4, 5, 6]),
        ],
    );
    assert_ints("concat i64", &got[0], DType::I64, &[6], &[1, 2, 3, 4, 5, 6]);
}

#[test]
fn split_into_pieces() {
    let cases: [(&[usize], i64, &[u64]); 4] = [
        (&[5, 6], 1, &[1, 2, 3]),
        (&[5, 6], -1, &[6]),
        (&[5, 6], 0, &[2, 3]),
        (&[2, 7, 3], -2, &[3, 1, 1, 2]),
    ];
    for (case, &(shape, ax, sizes)) in cases.iter().enumerate() {
        let mut rng = Rng::new(650 + case as u64);
        let (xt, x) = randn(&mut rng, shape);
        let got = run_op(
            Op::Split {
                axis: ax,
                sizes: sizes.to_vec(),
            },
            vec![xt],
        );
        assert_eq!(got.len(), sizes.len());
        let a = axis(ax, shape.len());
        let mut lo = 0;
        for (piece, &size) in got.iter().zip(sizes) {
            let hi = lo + size as usize;
            let (s, want) = ref_slice(&x, shape, a, lo, hi);
            assert_same_f32(
                &format!("split {shape:?} axis {ax}, piece {lo}..{hi}"),
                piece,
                &s,
                &want,
            );
            lo = hi;
        }
    }
}

#[test]
fn slice_with_negative_and_clamped_bounds() {
    let shape = [4usize, 7, 3];
    let mut rng = Rng::new(660);
    let (xt, x) = randn(&mut rng, &shape);
    // (axis, start, end, expected lo..hi)
    let cases: [(i64, i64, i64, usize, usize); 10] = [
        (1, 1, 5, 1, 5),
        (1, -3, -1, 4, 6),
        (1, 2, 100, 2, 7),
        (1, -100, 2, 0, 2),
        (1, -1, 7, 6, 7),
        (1, 0, -6, 0, 1),
        (-1, 1, 3, 1, 3),
        (0, -2, 1000, 2, 4),
        (-3, 0, i64::MAX, 0, 4),
        (2, i64::MIN, -2, 0, 1),
    ];
    for (ax, start, end, lo, hi) in cases {
        let got = run_op(
            Op::Slice {
                axis: ax,
                start,
                end,
            },
            vec![xt.clone()],
        );
        let (s, want) = ref_slice(&x, &shape, axis(ax, 3), lo, hi);
        assert_same_f32(
            &format!("slice axis {ax} {start}..{end}"),
            &got[0],
            &s,
            &want,
        );
    }
    let got = run_op(
        Op::Slice {
            axis: 0,
            start: -3,
            end: -1,
        },
        vec![ti(&[5], vec![1, 2, 3, 4, 5])],
    );
    assert_ints("slice i64", &got[0], DType::I64, &[2], &[3, 4]);
}

// ---- cast --------------------------------------------------------------------------------------

fn cast(to: DType, x: Tensor) -> Tensor {
    run_op(Op::Cast { to }, vec![x]).remove(0)
}

#[test]
fn cast_f32_to_bf16_rounds_to_nearest_even() {
    let mut rng = Rng::new(670);
    let mut x = rng.scaled_normals(200, 100.0);
    let p = |e: i32| 2f32.powi(e);
    // Exact ties: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 (even: 1); 1 + 3·2^-8 lies
    // halfway between 1 + 2^-7 and 1 + 2^-6 (even: 1 + 2^-6). Just above a tie rounds up.
    x.extend([
        1.0 + p(-8),
        1.0 + 3.0 * p(-8),
        -(1.0 + p(-8)),
        1.0 + p(-8) + p(-20),
        3.0e38,
        1e-39,
        -0.0,
    ]);
    let n = x.len();
    let got = cast(DType::Bf16, tf(&[n], x.clone()));
    assert_eq!(got.dtype(), DType::Bf16);
    let g = floats(&got);
    assert_eq!(g[200], 1.0);
    assert_eq!(g[201], 1.0 + p(-6));
    assert_eq!(g[202], -1.0);
    assert_eq!(g[203], 1.0 + p(-7));
    for (i, (&got, &x)) in g.iter().zip(&x).enumerate() {
        assert!(is_bf16(got), "element {i}: {got} is not a bf16 value");
        assert_eq!(
            got.to_bits(),
            bf16_round(x).to_bits(),
            "element {i}: cast {x} to bf16 gave {got}"
        );
    }
    // And back: bf16 -> f32 is exact.
    let back = cast(DType::F32, got.clone());
    assert_same_f32("bf16 -> f32", &back, &[n], floats(&got));
}

#[test]
fn cast_between_floats_ints_and_bools() {
    let x = vec![
        1.9f32,
        -1.9,
        0.5,
        -0.5,
        2.0,
        -3.99,
        1_000_000.5,
        123_456.7,
        -0.0,
        7.0,
    ];
    let trunc = [1i64, -1, 0, 0, 2, -3, 1_000_000, 123_456, 0, 7];
    for to in [DType::I64, DType::I32] {
        let got = cast(to, tf(&[10], x.clone()));
        assert_ints(&format!("f32 -> {to} truncates"), &got, to, &[10], &trunc);
    }
    // i64 -> f32 rounds to nearest (2^24 + 1 is not an f32).
    let big = vec![
        -5i64,
        0,
        7,
        (1 << 24) + 1,
        (1 << 40) + 3,
        -(1 << 53),
        123_456_789,
    ];
    let got = cast(DType::F32, ti(&[7], big.clone()));
    let want: Vec<f32> = big.iter().map(|&v| v as f32).collect();
    assert_same_f32("i64 -> f32", &got, &[7], &want);
    let got = cast(DType::F32, ti32(&[3], vec![-2_147_483_648, 16_777_217, 3]));
    assert_same_f32(
        "i32 -> f32",
        &got,
        &[3],
        &[-2_147_483_648.0, 16_777_216.0, 3.0],
    );
    // bool <-> f32.
    let got = cast(DType::F32, tb(&[4], vec![true, false, false, true]));
    assert_same_f32("bool -> f32", &got, &[4], &[1.0, 0.0, 0.0, 1.0]);
    let got = cast(
        DType::Bool,
        tf(&[6], vec![0.0, -0.0, 1.5, -2.0, 1e-30, 0.25]),
    );
    assert_eq!(got.dtype(), DType::Bool);
    assert_eq!(
        got.as_bool().unwrap(),
        [false, false, true, true, true, true]
    );
    // bool <-> i64, i64 -> i32.
    let got = cast(DType::I64, tb(&[3], vec![true, false, true]));
    assert_ints("bool -> i64", &got, DType::I64, &[3], &[1, 0, 1]);
    let got = cast(DType::Bool, ti(&[3], vec![0, -3, 1]));
    assert_eq!(got.as_bool().unwrap(), [false, true, true]);
    let got = cast(DType::I32, ti(&[3], vec![-7, 0, 2_000_000_000]));
    assert_ints(
        "i64 -> i32",
        &got,
        DType::I32,
        &[3],
        &[-7, 0, 2_000_000_000],
    );
}

#[test]
fn cast_of_nan_or_out_of_range_float_to_int_is_an_error() {
    // docs/cpu-executor.md: float -> integer casts of NaN or out-of-range values are errors.
    for (to, bad) in [
        (DType::I64, f32::NAN),
        (DType::I64, 1e30),
        (DType::I32, 3e9),
        (DType::I32, f32::NEG_INFINITY),
    ] {
        let r = try_run_op(Op::Cast { to }, vec![tf(&[3], vec![1.0, bad, 2.0])]);
        assert_kernel_error(&format!("cast {bad} to {to}"), r, "node");
    }
}

// ---- reduce ------------------------------------------------------------------------------------

/// Reduction over `axes` in f64; returns the keepdims shape and the values.
pub fn ref_reduce(
    x: &[f64],
    shape: &[usize],
    axes: &[usize],
    kind: ReduceKind,
) -> (Vec<usize>, Vec<f64>) {
    let keep: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &n)| if axes.contains(&i) { 1 } else { n })
        .collect();
    let init = if kind == ReduceKind::Max {
        f64::NEG_INFINITY
    } else {
        0.0
    };
    let mut out = vec![init; numel(&keep)];
    for (i, &v) in x.iter().enumerate() {
        let mut idx = unravel(i, shape);
        for &a in axes {
            idx[a] = 0;
        }
        let o = ravel(&idx, &keep);
        out[o] = match kind {
            ReduceKind::Max => out[o].max(v),
            _ => out[o] + v,
        };
    }
    if kind == ReduceKind::Mean {
        let count: usize = axes.iter().map(|&a| shape[a]).product();
        out.iter_mut().for_each(|v| *v /= count as f64);
    }
    (keep, out)
}

fn reduced_shape(shape: &[usize], axes: &[usize], keepdims: bool) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, &n)| match (axes.contains(&i), keepdims) {
            (false, _) => Some(n),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

#[test]
fn reduce_sum_mean_max_over_axes() {
    let shape = [2usize, 3, 4];
    let mut rng = Rng::new(680);
    let (xt, x) = randn(&mut rng, &shape);
    let axes_cases: [&[i64]; 8] = [
        &[0],
        &[1],
        &[2],
        &[-1],
        &[0, 2],
        &[2, 0],
        &[-3, -2],
        &[0, 1, 2],
    ];
    for axes in axes_cases {
        let norm: Vec<usize> = axes.iter().map(|&a| axis(a, 3)).collect();
        for kind in [ReduceKind::Sum, ReduceKind::Mean, ReduceKind::Max] {
            for keepdims in [false, true] {
                let got = run_op(
                    Op::Reduce {
                        kind,
                        axes: axes.to_vec(),
                        keepdims,
                    },
                    vec![xt.clone()],
                );
                let (_, want) = ref_reduce(&wide(&x), &shape, &norm, kind);
                let out_shape = reduced_shape(&shape, &norm, keepdims);
                let what = format!("reduce {} over {axes:?}, keepdims {keepdims}", kind.name());
                assert_close(&what, &got[0], &out_shape, &want, SUMS);
            }
        }
    }
}

#[test]
fn reduce_integers_exactly() {
    let shape = [3usize, 4];
    let mut rng = Rng::new(681);
    let x = rng.ints(12, -1_000_000, 1_000_000);
    let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    for dtype in [DType::I64, DType::I32] {
        for (axes, norm) in [
            (vec![0i64], vec![0usize]),
            (vec![-1], vec![1]),
            (vec![0, 1], vec![0, 1]),
        ] {
            for kind in [ReduceKind::Sum, ReduceKind::Max] {
                let t = Tensor::from_i64(dtype, shape.to_vec(), x.clone()).unwrap();
                let got = run_op(
                    Op::Reduce {
                        kind,
                        axes: axes.clone(),
                        keepdims: true,
                    },
                    vec![t],
                );
                let (keep, want) = ref_reduce(&xf, &shape, &norm, kind);
                let want: Vec<i64> = want.iter().map(|&v| v as i64).collect();
                assert_ints(
                    &format!("{dtype} reduce {} {axes:?}", kind.name()),
                    &got[0],
                    dtype,
                    &keep,
                    &want,
                );
            }
        }
    }
}

// ---- top_k -------------------------------------------------------------------------------------

/// The `k` largest (or smallest) values along `ax`, sorted, ties to the lower index.
pub fn ref_top_k(
    x: &[f64],
    shape: &[usize],
    ax: usize,
    k: usize,
    largest: bool,
) -> (Vec<usize>, Vec<f64>, Vec<i64>) {
    let n = shape[ax];
    let outer: usize = shape[..ax].iter().product();
    let inner: usize = shape[ax + 1..].iter().product();
    let mut out_shape = shape.to_vec();
    out_shape[ax] = k;
    let mut vals = vec![0f64; outer * k * inner];
    let mut idxs = vec![0i64; outer * k * inner];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| x[(o * n + j) * inner + i];
            let mut order: Vec<usize> = (0..n).collect();
            // A stable sort keeps equal values in index order.
            if largest {
                order.sort_by(|&a, &b| at(b).partial_cmp(&at(a)).unwrap());
            } else {
                order.sort_by(|&a, &b| at(a).partial_cmp(&at(b)).unwrap());
            }
            for (r, &j) in order[..k].iter().enumerate() {
                vals[(o * k + r) * inner + i] = at(j);
                idxs[(o * k + r) * inner + i] = j as i64;
            }
        }
    }
    (out_shape, vals, idxs)
}

#[test]
fn top_k_largest_and_smallest_with_ties() {
    // (shape, axis, k); values are small whole numbers, so ties are everywhere.
    let cases: [(&[usize], i64, usize); 5] = [
        (&[3, 10], -1, 4),
        (&[6, 5], 0, 3),
        (&[2, 7, 3], 1, 7),
        (&[9], 0, 1),
        (&[2, 3, 8], 2, 8),
    ];
    for (case, &(shape, ax, k)) in cases.iter().enumerate() {
        let mut rng = Rng::new(690 + case as u64);
        let x: Vec<f32> = rng
            .ints(numel(shape), -2, 3)
            .iter()
            .map(|&v| v as f32 + 0.5)
            .collect();
        let a = axis(ax, shape.len());
        for largest in [true, false] {
            let got = run_op(
                Op::TopK {
                    k: k as u64,
                    axis: ax,
                    largest,
                },
                vec![tf(shape, x.clone())],
            );
            let (s, vals, idxs) = ref_top_k(&wide(&x), shape, a, k, largest);
            let what = format!("top_k {shape:?} axis {ax} k {k} largest {largest}");
            let vals: Vec<f32> = vals.iter().map(|&v| v as f32).collect();
            assert_same_f32(&format!("{what}: values"), &got[0], &s, &vals);
            assert_ints(&format!("{what}: indices"), &got[1], DType::I64, &s, &idxs);
        }
    }
    // Distinct random values, and integer input.
    let mut rng = Rng::new(699);
    let (xt, x) = randn(&mut rng, &[4, 33]);
    let got = run_op(
        Op::TopK {
            k: 5,
            axis: -1,
            largest: true,
        },
        vec![xt],
    );
    let (s, vals, idxs) = ref_top_k(&wide(&x), &[4, 33], 1, 5, true);
    assert_close("top_k random values", &got[0], &s, &vals, (0.0, 0.0));
    assert_ints("top_k random indices", &got[1], DType::I64, &s, &idxs);
    let xi = vec![5i64, -1, 5, 3, -1, 9, 3];
    let got = run_op(
        Op::TopK {
            k: 4,
            axis: 0,
            largest: false,
        },
        vec![ti(&[7], xi)],
    );
    assert_ints(
        "top_k i64 smallest values",
        &got[0],
        DType::I64,
        &[4],
        &[-1, -1, 3, 3],
    );
    assert_ints(
        "top_k i64 smallest indices",
        &got[1],
        DType::I64,
        &[4],
        &[1, 4, 3, 6],
    );
}

// ---- expand, where, is_nan ---------------------------------------------------------------------

/// Index into a tensor of `shape` for output position `pos` of `out` under NumPy broadcasting.
fn broadcast_at(shape: &[usize], out: &[usize], mut pos: usize) -> usize {
    let mut idx = vec![0usize; out.len()];
    for d in (0..out.len()).rev() {
        idx[d] = pos % out[d];
        pos /= out[d];
    }
    let pad = out.len() - shape.len();
    let mut flat = 0;
    for (d, &s) in shape.iter().enumerate() {
        let i = if s == 1 { 0 } else { idx[d + pad] };
        flat = flat * s + i;
    }
    flat
}

#[test]
fn expand_broadcasts_like_numpy() {
    let mut rng = Rng::new(41);
    for (from, to, out) in [
        (vec![3, 1], vec![2, 1, 4], vec![2, 3, 4]),
        (vec![1], vec![5], vec![5]),
        (vec![2, 3], vec![1, 3], vec![2, 3]),
    ] {
        let (x, xv) = randn(&mut rng, &from);
        let got = run_op(
            Op::Expand {
                shape: weft_ir::Shape::new(to.iter().map(|&d| d as u64)),
            },
            vec![x],
        );
        assert_eq!(got[0].shape(), out.as_slice());
        let want: Vec<f32> = (0..out.iter().product())
            .map(|p| xv[broadcast_at(&from, &out, p)])
            .collect();
        assert_eq!(floats(&got[0]), want.as_slice(), "{from:?} -> {out:?}");
    }
}

#[test]
fn where_selects_with_three_way_broadcasting() {
    let mut rng = Rng::new(42);
    let cond: Vec<bool> = (0..4).map(|_| rng.next_u64() % 2 == 0).collect();
    let (a, av) = randn(&mut rng, &[3, 1]);
    let (b, bv) = randn(&mut rng, &[1]);
    let got = run_op(Op::Where, vec![tb(&[4], cond.clone()), a, b]);
    assert_eq!(got[0].shape(), &[3, 4]);
    for p in 0..12 {
        let want = if cond[p % 4] { av[p / 4] } else { bv[0] };
        assert_eq!(floats(&got[0])[p], want);
    }
    // Integer branches.
    let got = run_op(
        Op::Where,
        vec![
            tb(&[2], vec![true, false]),
            ti(&[2], vec![1, 2]),
            ti(&[2], vec![3, 4]),
        ],
    );
    assert_eq!(got[0].as_i64().unwrap(), &[1, 4]);
}

#[test]
fn is_nan_marks_only_nans() {
    let got = run_op(
        Op::IsNan,
        vec![tf(&[4], vec![0.0, f32::NAN, f32::INFINITY, -1.5])],
    );
    assert_eq!(got[0].dtype(), DType::Bool);
    assert_eq!(got[0].as_bool().unwrap(), &[false, true, false, false]);
}
