//! Matmul, normalisations, attention and rotary embeddings against f64 references.

use weft_ir::{DType, Init, Op, Tensor, rng};

use crate::common::*;

// ---- matmul ----------------------------------------------------------------------------------

#[test]
fn matmul_transposes_and_batch_broadcasting() {
    let cases: &[(&[usize], &[usize], bool, bool)] = &[
        (&[3, 4], &[4, 5], false, false),
        (&[4, 3], &[4, 5], true, false),
        (&[3, 4], &[5, 4], false, true),
        (&[4, 3], &[5, 4], true, true),
        (&[2, 1, 3, 4], &[5, 4, 6], false, false),
        (&[3, 4], &[2, 4, 5], false, false),
        (&[2, 3, 4], &[4, 5], false, false),
        (&[2, 1, 4, 3], &[5, 6, 4], true, true),
        (&[1, 5, 3, 4], &[2, 1, 4, 2], false, false),
        (&[2, 4, 1, 3], &[4, 1, 5], true, false),
        (&[1, 1], &[1, 7], false, false),
        (&[33, 70], &[70, 65], false, false),
        (&[2, 17, 40], &[2, 31, 40], false, true),
    ];
    for (case, &(ash, bsh, ta, tb)) in cases.iter().enumerate() {
        let mut rng = Rng::new(200 + case as u64);
        let (at, a) = randn(&mut rng, ash);
        let (bt, b) = randn(&mut rng, bsh);
        let got = run_op(
            Op::MatMul {
                transpose_a: ta,
                transpose_b: tb,
            },
            vec![at, bt],
        );
        let (shape, want) = ref_matmul(&a, ash, &b, bsh, ta, tb);
        let what = format!(
            "matmul {ash:?}{} x {bsh:?}{}",
            if ta { "ᵀ" } else { "" },
            if tb { "ᵀ" } else { "" }
        );
        assert_close(&what, &got[0], &shape, &want, SUMS);
    }
}

#[test]
fn matmul_in_bf16_rounds_the_f32_result_once() {
    let mut rng = Rng::new(210);
    let a = Tensor::from_f32(DType::Bf16, vec![3, 8], rng.normals(24)).unwrap();
    let b = Tensor::from_f32(DType::Bf16, vec![8, 5], rng.normals(40)).unwrap();
    let (_, want) = ref_matmul(floats(&a), &[3, 8], floats(&b), &[8, 5], false, false);
    let got = run_op(
        Op::MatMul {
            transpose_a: false,
            transpose_b: false,
        },
        vec![a, b],
    );
    assert_bf16("bf16 matmul", &got[0], &[3, 5], &want, 1e-5);
}

#[test]
fn weights_and_constants_from_initialisers() {
    // y = x @ w + c, with w drawn by the documented generator and c a range constant.
    let mut rng = Rng::new(220);
    let (xt, x) = randn(&mut rng, &[3, 4]);
    let mut g = Builder::new("init");
    let ix = g.input("x", xt);
    let w = g.op(
        "w",
        Op::Weight {
            dtype: DType::F32,
            shape: shape_of(&[4, 5]),
            init: Init::Normal {
                seed: 9,
                mean: 0.1,
                std: 0.5,
            },
        },
        &[],
    );
    let c = g.op(
        "c",
        Op::Constant {
            dtype: DType::F32,
            shape: shape_of(&[5]),
            init: Init::Range {
                start: 1.0,
                step: 0.5,
            },
        },
        &[],
    );
    let xw = g.op(
        "xw",
        Op::MatMul {
            transpose_a: false,
            transpose_b: false,
        },
        &[ix, w],
    );
    let y = g.op("y", Op::Add, &[xw, c]);
    let got = g.run(&[w, y]);
    let wv: Vec<f32> = (0..20)
        .map(|i| rng::normal(9, i, 0.1, 0.5) as f32)
        .collect();
    assert_same_f32("normal weight", &got[0], &[4, 5], &wv);
    let (_, prod) = ref_matmul(&x, &[3, 4], &wv, &[4, 5], false, false);
    let want: Vec<f64> = prod
        .iter()
        .enumerate()
        .map(|(i, p)| p + 1.0 + 0.5 * (i % 5) as f64)
        .collect();
    assert_close("x @ w + range", &got[1], &[3, 5], &want, SUMS);
}

// ---- normalisation ---------------------------------------------------------------------------

fn ref_rms_norm(x: &[f32], h: usize, w: &[f32], eps: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(h) {
        let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / h as f64;
        let r = 1.0 / (ms + eps).sqrt();
        out.extend(row.iter().zip(w).map(|(&v, &wi)| v as f64 * r * wi as f64));
    }
    out
}

fn ref_layer_norm(x: &[f32], h: usize, w: &[f32], b: Option<&[f32]>, eps: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(h) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / h as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / h as f64;
        let r = 1.0 / (var + eps).sqrt();
        for (i, &v) in row.iter().enumerate() {
            let bias = b.map_or(0.0, |b| b[i] as f64);
            out.push((v as f64 - mean) * r * w[i] as f64 + bias);
        }
    }
    out
}

#[test]
fn rms_norm_over_the_last_axis() {
    for (case, (shape, eps)) in [
        (&[2usize, 3, 8][..], 1e-5),
        (&[5, 16][..], 0.5),
        (&[7][..], 1e-6),
    ]
    .into_iter()
    .enumerate()
    {
        let h = *shape.last().unwrap();
        let mut rng = Rng::new(300 + case as u64);
        let (xt, x) = randn(&mut rng, shape);
        let (wt, w) = randn(&mut rng, &[h]);
        let got = run_op(Op::RmsNorm { eps }, vec![xt, wt]);
        let want = ref_rms_norm(&x, h, &w, eps);
        assert_close(
            &format!("rms_norm {shape:?} eps {eps}"),
            &got[0],
            shape,
            &want,
            SUMS,
        );
    }
}

#[test]
fn layer_norm_with_and_without_bias() {
    for (case, (shape, eps, offset)) in [
        (&[2usize, 3, 8][..], 1e-5, 0.0f32),
        (&[5, 16][..], 0.25, 0.0),
        (&[4, 32][..], 1e-5, 3.0),
    ]
    .into_iter()
    .enumerate()
    {
        let h = *shape.last().unwrap();
        let mut rng = Rng::new(310 + case as u64);
        let x: Vec<f32> = rng
            .normals(numel(shape))
            .iter()
            .map(|v| v + offset)
            .collect();
        let (wt, w) = randn(&mut rng, &[h]);
        let (bt, b) = randn(&mut rng, &[h]);
        let with = run_op(
            Op::LayerNorm { eps },
            vec![tf(shape, x.clone()), wt.clone(), bt],
        );
        let want = ref_layer_norm(&x, h, &w, Some(&b), eps);
        assert_close(
            &format!("layer_norm+bias {shape:?} eps {eps}"),
            &with[0],
            shape,
            &want,
            SUMS,
        );
        let without = run_op(Op::LayerNorm { eps }, vec![tf(shape, x.clone()), wt]);
        let want = ref_layer_norm(&x, h, &w, None, eps);
        assert_close(
            &format!("layer_norm {shape:?} eps {eps}"),
            &without[0],
            shape,
            &want,
            SUMS,
        );
    }
}

#[test]
fn layer_norm_of_rows_with_a_large_mean() {
    // var = E[(x - mean)^2], not E[x^2] - mean^2: the latter loses every digit in f32 here.
    let (shape, h) = ([3usize, 64], 64);
    let mut rng = Rng::new(320);
    let x: Vec<f32> = rng
        .normals(numel(&shape))
        .iter()
        .map(|v| v + 300.0)
        .collect();
    let (wt, w) = randn(&mut rng, &[h]);
    let got = run_op(Op::LayerNorm { eps: 1e-5 }, vec![tf(&shape, x.clone()), wt]);
    let want = ref_layer_norm(&x, h, &w, None, 1e-5);
    assert_close("layer_norm, mean 300", &got[0], &shape, &want, (1e-3, 1e-3));
}

// ---- attention -------------------------------------------------------------------------------

/// A mask fed to an attention test: its shape and values.
#[derive(Debug, Clone)]
enum MaskIn {
    None,
    Bool(Vec<usize>, Vec<bool>),
    Float(Vec<usize>, Vec<f32>),
}

/// Runs attention on random q, k, v (and the given mask) and compares with the reference.
/// Returns the output's values for further checks.
fn check_attention(
    what: &str,
    seed: u64,
    n: AttnDims,
    causal: bool,
    scale: Option<f64>,
    mask: MaskIn,
) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let (qt, q) = randn(&mut rng, &[n.b, n.hq, n.s, n.d]);
    let (kt, k) = randn(&mut rng, &[n.b, n.hkv, n.t, n.d]);
    let (vt, v) = randn(&mut rng, &[n.b, n.hkv, n.t, n.dv]);
    let mut g = Builder::new("attention");
    let mut ins = vec![g.input("q", qt), g.input("k", kt), g.input("v", vt)];
    let refmask = match &mask {
        MaskIn::None => RefMask::None,
        MaskIn::Bool(shape, m) => {
            ins.push(g.input("mask", tb(shape, m.clone())));
            RefMask::Bool(m, shape)
        }
        MaskIn::Float(shape, m) => {
            ins.push(g.input("mask", tf(shape, m.clone())));
            RefMask::Float(m, shape)
        }
    };
    let out = g.op("attn", Op::Attention { causal, scale }, &ins);
    let got = g.run(&[out]);
    let want = ref_attention(&q, &k, &v, n, causal, scale, refmask);
    let shape = [n.b, n.hq, n.s, n.dv];
    assert_close(what, &got[0], &shape, &want, SUMS);
    floats(&got[0]).to_vec()
}

fn dims(b: usize, hq: usize, hkv: usize, s: usize, t: usize, d: usize, dv: usize) -> AttnDims {
    AttnDims {
        b,
        hq,
        hkv,
        s,
        t,
        d,
        dv,
    }
}

#[test]
fn attention_plain_and_causal() {
    let n = dims(2, 2, 2, 5, 7, 8, 8);
    check_attention("non-causal", 400, n, false, None, MaskIn::None);
    let n = dims(2, 3, 3, 6, 6, 4, 4);
    check_attention("causal, s == t", 401, n, true, None, MaskIn::None);
    let n = dims(2, 2, 2, 3, 8, 8, 6);
    check_attention(
        "causal, s < t (bottom-right)",
        402,
        n,
        true,
        None,
        MaskIn::None,
    );
    let n = dims(1, 2, 1, 1, 9, 8, 8);
    check_attention(
        "causal decode step, s = 1",
        403,
        n,
        true,
        None,
        MaskIn::None,
    );
}

#[test]
fn causal_attention_with_more_queries_than_keys() {
    // Query i sees keys j <= i + t - s: with s = 6, t = 4 the first two rows see nothing
    // and are zeros (docs/cpu-executor.md).
    let n = dims(1, 2, 2, 6, 4, 4, 3);
    let got = check_attention("causal, s > t", 404, n, true, None, MaskIn::None);
    for h in 0..2 {
        for i in 0..2 {
            let row = &got[(h * 6 + i) * 3..][..3];
            assert_eq!(row, [0.0; 3], "head {h} row {i} sees no key");
        }
    }
}

#[test]
fn attention_grouped_query_heads() {
    // Query head i reads KV head i / (hq / hkv): heads 0,1 -> 0 and 2,3 -> 1.
    let n = dims(2, 4, 2, 5, 7, 8, 5);
    check_attention("gqa hq=4 hkv=2", 410, n, false, None, MaskIn::None);
    check_attention("gqa hq=4 hkv=2, causal", 411, n, true, None, MaskIn::None);
    let n = dims(1, 6, 1, 3, 5, 4, 4);
    check_attention("multi-query hq=6 hkv=1", 412, n, true, None, MaskIn::None);
}

#[test]
fn attention_with_explicit_scale() {
    let n = dims(1, 2, 2, 4, 6, 8, 8);
    check_attention("scale 0.3", 420, n, false, Some(0.3), MaskIn::None);
    check_attention("scale 2, causal", 421, n, true, Some(2.0), MaskIn::None);
}

fn random_bools(rng: &mut Rng, n: usize, p_true: f64) -> Vec<bool> {
    (0..n).map(|_| rng.unit() < p_true).collect()
}

#[test]
fn attention_with_a_bool_mask() {
    let n = dims(2, 4, 2, 5, 7, 8, 8);
    let mut rng = Rng::new(430);
    // [s, t], broadcast over batch and heads; row 3 is fully masked and must give zeros.
    let mut m = random_bools(&mut rng, 5 * 7, 0.6);
    m[3 * 7..4 * 7].iter_mut().for_each(|x| *x = false);
    let got = check_attention(
        "bool mask [s, t]",
        431,
        n,
        false,
        None,
        MaskIn::Bool(vec![5, 7], m.clone()),
    );
    for bh in 0..8 {
        assert_eq!(&got[(bh * 5 + 3) * 8..][..8], [0.0; 8], "fully masked row");
    }
    // [b, 1, 1, t]: a padding mask.
    let m = random_bools(&mut rng, 2 * 7, 0.7);
    check_attention(
        "bool mask [b, 1, 1, t]",
        432,
        n,
        false,
        None,
        MaskIn::Bool(vec![2, 1, 1, 7], m),
    );
    // Full [b, hq, s, t], together with causal masking.
    let m = random_bools(&mut rng, 2 * 4 * 5 * 7, 0.7);
    check_attention(
        "bool mask [b, hq, s, t] + causal",
        433,
        n,
        true,
        None,
        MaskIn::Bool(vec![2, 4, 5, 7], m),
    );
}

#[test]
fn attention_with_an_additive_float_mask() {
    let n = dims(2, 4, 2, 5, 7, 8, 6);
    let mut rng = Rng::new(440);
    let m = rng.scaled_normals(2 * 5 * 7, 2.0);
    check_attention(
        "float mask [b, 1, s, t]",
        441,
        n,
        false,
        None,
        MaskIn::Float(vec![2, 1, 5, 7], m),
    );
    let m = rng.scaled_normals(4 * 7, 2.0);
    check_attention(
        "float mask [hq, 1, t], causal",
        442,
        n,
        true,
        None,
        MaskIn::Float(vec![4, 1, 7], m),
    );
    let m = rng.scaled_normals(7, 3.0);
    check_attention(
        "float mask [t], scale 0.5",
        443,
        n,
        false,
        Some(0.5),
        MaskIn::Float(vec![7], m),
    );
}

#[test]
fn attention_over_long_sequences_spanning_several_key_blocks() {
    // t = 300 keys: five blocks of 64 (the last one partial).
    let n = dims(1, 4, 2, 70, 300, 16, 8);
    check_attention("t = 300", 450, n, false, None, MaskIn::None);
    check_attention("t = 300, causal s = 70", 451, n, true, None, MaskIn::None);
    let n = dims(1, 2, 1, 300, 300, 8, 8);
    check_attention("s = t = 300, causal", 452, n, true, None, MaskIn::None);
    // Large score magnitudes force the online softmax to rescale between blocks.
    let n = dims(1, 2, 2, 9, 300, 8, 4);
    check_attention("t = 300, scale 3", 453, n, false, Some(3.0), MaskIn::None);
}

#[test]
fn attention_long_sequence_with_masks_that_empty_whole_blocks() {
    let (s, t) = (5, 300);
    let n = dims(1, 2, 2, s, t, 8, 8);
    let mut rng = Rng::new(460);
    let mut m = rng.scaled_normals(s * t, 1.0);
    let inf = f32::NEG_INFINITY;
    // Row 0: the whole first block (keys 0..64) is -inf; the rest is visible.
    m[..64].iter_mut().for_each(|x| *x = inf);
    // Row 1: only the last key is visible.
    m[t..2 * t - 1].iter_mut().for_each(|x| *x = inf);
    // Row 2: only the first block is visible.
    m[2 * t + 64..3 * t].iter_mut().for_each(|x| *x = inf);
    // Row 3: keys 64..192 (two whole blocks) are -inf.
    m[3 * t + 64..3 * t + 192].iter_mut().for_each(|x| *x = inf);
    check_attention(
        "float mask with -inf blocks",
        461,
        n,
        false,
        None,
        MaskIn::Float(vec![s, t], m.clone()),
    );
    // The same pattern as a bool mask, plus a fully masked row 4.
    let mut keep: Vec<bool> = m.iter().map(|&x| x != inf).collect();
    keep[4 * t..].iter_mut().for_each(|x| *x = false);
    let got = check_attention(
        "bool mask emptying blocks",
        462,
        n,
        false,
        None,
        MaskIn::Bool(vec![s, t], keep),
    );
    for h in 0..2 {
        assert_eq!(
            &got[(h * s + 4) * 8..][..8],
            [0.0; 8],
            "fully masked long row"
        );
    }
}

#[test]
fn attention_in_bf16() {
    let n = dims(1, 2, 1, 4, 70, 8, 8);
    let mut rng = Rng::new(470);
    let bf = |shape: &[usize], rng: &mut Rng| {
        Tensor::from_f32(DType::Bf16, shape.to_vec(), rng.normals(numel(shape))).unwrap()
    };
    let (q, k, v) = (
        bf(&[1, 2, 4, 8], &mut rng),
        bf(&[1, 1, 70, 8], &mut rng),
        bf(&[1, 1, 70, 8], &mut rng),
    );
    let want = ref_attention(
        floats(&q),
        floats(&k),
        floats(&v),
        n,
        true,
        None,
        RefMask::None,
    );
    let mut g = Builder::new("attention-bf16");
    let ins = [g.input("q", q), g.input("k", k), g.input("v", v)];
    let out = g.op(
        "attn",
        Op::Attention {
            causal: true,
            scale: None,
        },
        &ins,
    );
    let got = g.run(&[out]);
    assert_bf16("bf16 attention", &got[0], &[1, 2, 4, 8], &want, 1e-4);
}

// ---- rotary embeddings -------------------------------------------------------------------------

/// `cos` and `sin` tables for integer positions, in f64.
fn ref_rope_cache(pos: &[i64], theta: f64, dim: usize) -> (Vec<f64>, Vec<f64>) {
    let half = dim / 2;
    let mut cos = Vec::new();
    let mut sin = Vec::new();
    for &p in pos {
        for i in 0..half {
            let angle = p as f64 * theta.powf(-2.0 * i as f64 / dim as f64);
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

#[test]
fn rope_cache_tables() {
    // (positions dtype, shape, max position, theta, dim)
    let cases = [
        (DType::I64, vec![2usize, 5], 64i64, 10_000.0, 8usize),
        (DType::I32, vec![7], 4096, 500_000.0, 16),
        (DType::I64, vec![3, 1, 2], 3, 10.0, 2),
    ];
    for (case, (dtype, shape, maxpos, theta, dim)) in cases.into_iter().enumerate() {
        let mut rng = Rng::new(500 + case as u64);
        let pos = rng.ints(numel(&shape), 0, maxpos);
        let t = Tensor::from_i64(dtype, shape.clone(), pos.clone()).unwrap();
        let got = run_op(
            Op::RopeCache {
                theta,
                dim: dim as u64,
            },
            vec![t],
        );
        let (cos, sin) = ref_rope_cache(&pos, theta, dim);
        let mut out_shape = shape.clone();
        out_shape.push(dim / 2);
        // An f32 angle `pos * freq` is off by up to ~2 ulps of `pos`; cos/sin inherit that.
        let atol = 2e-6 + maxpos as f64 * 2.4e-7;
        let what = format!("rope_cache {dtype}{shape:?} theta {theta} dim {dim}");
        assert_close(
            &format!("{what}: cos"),
            &got[0],
            &out_shape,
            &cos,
            (1e-5, atol),
        );
        assert_close(
            &format!("{what}: sin"),
            &got[1],
            &out_shape,
            &sin,
            (1e-5, atol),
        );
    }
}

/// Rotary embedding in f64 of `x [.., d]` with tables broadcast to `[.., d/2]`.
fn ref_rope(
    x: &[f32],
    xshape: &[usize],
    cos: &[f64],
    sin: &[f64],
    cshape: &[usize],
    interleaved: bool,
) -> Vec<f64> {
    let d = *xshape.last().unwrap();
    let half = d / 2;
    let mut hshape = xshape.to_vec();
    *hshape.last_mut().unwrap() = half;
    let mut out = vec![0f64; x.len()];
    for r in 0..x.len() / d {
        let row = &x[r * d..(r + 1) * d];
        for i in 0..half {
            let at = broadcast_source(&unravel(r * half + i, &hshape), cshape);
            let (c, s) = (cos[at], sin[at]);
            let (p, q) = if interleaved {
                (2 * i, 2 * i + 1)
            } else {
                (i, i + half)
            };
            let (x1, x2) = (row[p] as f64, row[q] as f64);
            out[r * d + p] = x1 * c - x2 * s;
            out[r * d + q] = x2 * c + x1 * s;
        }
    }
    out
}

#[test]
fn rope_rotates_halves_or_pairs() {
    let xshape = [2usize, 3, 5, 8];
    for (case, cshape) in [vec![5usize, 4], vec![2, 1, 5, 4], vec![4], vec![1, 3, 1, 4]]
        .into_iter()
        .enumerate()
    {
        for interleaved in [false, true] {
            let mut rng = Rng::new(520 + case as u64);
            let (xt, x) = randn(&mut rng, &xshape);
            let (ct, c) = randn(&mut rng, &cshape);
            let (st, s) = randn(&mut rng, &cshape);
            let got = run_op(Op::Rope { interleaved }, vec![xt, ct, st]);
            let want = ref_rope(&x, &xshape, &wide(&c), &wide(&s), &cshape, interleaved);
            let what = format!("rope interleaved={interleaved}, tables {cshape:?}");
            assert_close(&what, &got[0], &xshape, &want, EW);
        }
    }
}

#[test]
fn rope_cache_feeding_rope() {
    // positions [s] -> cos, sin [s, d/2], broadcast over x [b, h, s, d].
    let (b, h, s, d) = (2, 3, 6, 8);
    let mut rng = Rng::new(530);
    let pos = rng.ints(s, 0, 32);
    let (xt, x) = randn(&mut rng, &[b, h, s, d]);
    for interleaved in [false, true] {
        let mut g = Builder::new("rope");
        let ip = g.input("pos", ti(&[s], pos.clone()));
        let ix = g.input("x", xt.clone());
        let cs = g.multi(
            "cache",
            Op::RopeCache {
                theta: 10_000.0,
                dim: d as u64,
            },
            &[ip],
        );
        let y = g.op("y", Op::Rope { interleaved }, &[ix, cs[0], cs[1]]);
        let got = g.run(&[y]);
        let (cos, sin) = ref_rope_cache(&pos, 10_000.0, d);
        let want = ref_rope(&x, &[b, h, s, d], &cos, &sin, &[s, d / 2], interleaved);
        assert_close(
            &format!("rope_cache -> rope, interleaved={interleaved}"),
            &got[0],
            &[b, h, s, d],
            &want,
            (1e-5, 1e-5),
        );
    }
}

#[test]
fn fused_elementwise_is_gemm_then_each_step_in_order() {
    use weft_ir::FusedStep;
    // y = r - silu(x @ w + b) * u: `swap` puts the operand first in the last step.
    let (m, k, n) = (3usize, 4usize, 5usize);
    let mut rng = Rng::new(811);
    let (xt, x) = randn(&mut rng, &[m, k]);
    let (wt, w) = randn(&mut rng, &[k, n]);
    let (bt, bias) = randn(&mut rng, &[n]);
    let (ut, u) = randn(&mut rng, &[m, n]);
    let (rt, r) = randn(&mut rng, &[m, n]);
    let steps = vec![
        FusedStep::Matmul {
            operand: 1,
            transpose_b: false,
        },
        FusedStep::Binary {
            op: Box::new(Op::Add),
            operand: 2,
            swap: false,
        },
        FusedStep::Unary {
            op: Box::new(Op::Silu),
        },
        FusedStep::Binary {
            op: Box::new(Op::Mul),
            operand: 3,
            swap: false,
        },
        FusedStep::Binary {
            op: Box::new(Op::Sub),
            operand: 4,
            swap: true,
        },
    ];
    let got = run_op(Op::FusedElementwise { steps }, vec![xt, wt, bt, ut, rt]);
    let mut want = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f64;
            for p in 0..k {
                acc += x[i * k + p] as f64 * w[p * n + j] as f64;
            }
            let h = acc + bias[j] as f64;
            let silu = h / (1.0 + (-h).exp());
            want.push(r[i * n + j] as f64 - silu * u[i * n + j] as f64);
        }
    }
    assert_close("fused kernel", &got[0], &[m, n], &want, SUMS);
}
