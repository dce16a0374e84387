//! `norm_matmul` (a norm in its GEMM's prologue) against a plain f64 reference of the
//! norm followed by the product, written here from `docs/json-format.md`.

use weft_ir::{DType, NormKind, Op};

use crate::common::*;

/// `norm(x) @ b` in f64: `x [rows, k]`, `b [k, n]` (`[n, k]` with `tb`), each row
/// normalised over its `k` values (RMS, or mean and variance), times `w` (plus `bias`).
#[allow(clippy::too_many_arguments)]
fn reference(
    kind: NormKind,
    x: &[f32],
    k: usize,
    b: &[f32],
    n: usize,
    tb: bool,
    w: &[f32],
    bias: Option<&[f32]>,
    eps: f64,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len() / k * n);
    for row in x.chunks(k) {
        let row: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
        let (shift, ms) = match kind {
            NormKind::RmsNorm => (0.0, row.iter().map(|v| v * v).sum::<f64>() / k as f64),
            NormKind::LayerNorm => {
                let mean = row.iter().sum::<f64>() / k as f64;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / k as f64;
                (mean, var)
            }
        };
        let r = 1.0 / (ms + eps).sqrt();
        let normed: Vec<f64> = (0..k)
            .map(|p| (row[p] - shift) * r * f64::from(w[p]) + bias.map_or(0.0, |c| f64::from(c[p])))
            .collect();
        for j in 0..n {
            let at = |p: usize| if tb { b[j * k + p] } else { b[p * n + j] };
            out.push((0..k).map(|p| normed[p] * f64::from(at(p))).sum());
        }
    }
    out
}

#[test]
fn norm_matmul_is_the_norm_then_the_gemm() {
    // (norm, x's leading dims, k, n, transpose_b, bias, eps)
    let cases = [
        (
            NormKind::RmsNorm,
            vec![5usize],
            16usize,
            7usize,
            false,
            false,
            1e-5,
        ),
        (NormKind::RmsNorm, vec![2, 3], 8, 6, true, false, 0.5),
        (NormKind::LayerNorm, vec![4], 32, 5, false, true, 1e-5),
        (NormKind::LayerNorm, vec![2, 3], 12, 9, true, false, 0.25),
    ];
    for (case, (kind, lead, k, n, tb, with_bias, eps)) in cases.into_iter().enumerate() {
        let mut rng = Rng::new(1200 + case as u64);
        let mut xshape = lead.clone();
        xshape.push(k);
        let (xt, x) = randn(&mut rng, &xshape);
        let bshape = if tb { [n, k] } else { [k, n] };
        let (bt, b) = randn(&mut rng, &bshape);
        let (wt, w) = randn(&mut rng, &[k]);
        let (ct, c) = randn(&mut rng, &[k]);
        let mut inputs = vec![xt, bt, wt];
        if with_bias {
            inputs.push(ct);
        }
        let op = Op::NormMatMul {
            norm: kind,
            eps,
            transpose_b: tb,
        };
        let got = run_op(op, inputs);
        let want = reference(kind, &x, k, &b, n, tb, &w, with_bias.then_some(&c[..]), eps);
        let mut shape = lead;
        shape.push(n);
        assert_close(
            &format!("case {case}: {kind}"),
            &got[0],
            &shape,
            &want,
            SUMS,
        );
    }
}

#[test]
fn norm_matmul_in_bf16_rounds_the_norm_as_the_separate_op_would() {
    // The fused kernel's value is the unfused pair's, bit for bit, in bf16 too: the
    // prologue rounds the normed rows to bf16 before the product, as `rms_norm` does.
    let (m, k, n) = (6usize, 16usize, 8usize);
    let mut rng = Rng::new(1300);
    let bf = |t: weft_ir::Tensor| {
        let shape = t.shape().to_vec();
        weft_ir::Tensor::from_f32(DType::Bf16, shape, floats(&t).to_vec()).unwrap()
    };
    let (xt, _) = randn(&mut rng, &[m, k]);
    let (bt, _) = randn(&mut rng, &[k, n]);
    let (wt, _) = randn(&mut rng, &[k]);
    let (xt, bt, wt) = (bf(xt), bf(bt), bf(wt));
    let mut g = Builder::new("pair");
    let (x, b, w) = (
        g.input("x", xt.clone()),
        g.input("b", bt.clone()),
        g.input("w", wt.clone()),
    );
    let y = g.op("y", Op::RmsNorm { eps: 1e-5 }, &[x, w]);
    let z = g.op(
        "z",
        Op::MatMul {
            transpose_a: false,
            transpose_b: false,
        },
        &[y, b],
    );
    let pair = g.run(&[z]);
    let op = Op::NormMatMul {
        norm: NormKind::RmsNorm,
        eps: 1e-5,
        transpose_b: false,
    };
    let fused = run_op(op, vec![xt, bt, wt]);
    assert_eq!(fused[0].dtype(), DType::Bf16);
    assert_eq!(
        fused[0], pair[0],
        "the fused kernel differs from norm then matmul"
    );
}

#[test]
fn norm_matmul_refuses_a_bias_on_rms_norm_and_mismatched_shapes() {
    let mut rng = Rng::new(1400);
    let (xt, _) = randn(&mut rng, &[3, 8]);
    let (bt, _) = randn(&mut rng, &[8, 4]);
    let (wt, _) = randn(&mut rng, &[8]);
    let (ct, _) = randn(&mut rng, &[8]);
    let rms = Op::NormMatMul {
        norm: NormKind::RmsNorm,
        eps: 1e-5,
        transpose_b: false,
    };
    let mut g = Builder::new("bad");
    let ins: Vec<_> = [xt.clone(), bt.clone(), wt.clone(), ct]
        .into_iter()
        .enumerate()
        .map(|(i, t)| g.input(&format!("in{i}"), t))
        .collect();
    let e = g.g.add("nmm", rms.clone(), &ins).unwrap_err().to_string();
    assert!(e.contains("rms_norm prologue takes 1 parameter"), "{e}");
    // A weight of the wrong length is the norm's own error.
    let (short, _) = randn(&mut rng, &[4]);
    let s = g.input("short", short);
    let e =
        g.g.add("nmm2", rms, &[ins[0], ins[1], s])
            .unwrap_err()
            .to_string();
    assert!(e.contains("weight must have shape [8]"), "{e}");
}
