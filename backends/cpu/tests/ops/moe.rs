//! Mixture-of-experts ops: routing, dispatch, grouped matmul and combine, each against a
//! direct reference, and the whole pipeline against dense per-token arithmetic.

use weft_ir::{DType, Op, Tensor};

use crate::common::*;

/// Routing weights and expert ids: the softmax over all experts, taken at the `k` most
/// probable (sorted, ties to the lower id), optionally rescaled to sum to one.
pub fn ref_moe_route(logits: &[f32], e: usize, k: usize, normalize: bool) -> (Vec<f64>, Vec<i64>) {
    let (mut w, mut ids) = (Vec::new(), Vec::new());
    for row in logits.chunks(e) {
        let probs = ref_softmax(row, &[e], 0);
        let mut order: Vec<usize> = (0..e).collect();
        order.sort_by(|&a, &b| probs[b].partial_cmp(&probs[a]).unwrap());
        let top = &order[..k];
        let total: f64 = top.iter().map(|&j| probs[j]).sum();
        for &j in top {
            w.push(if normalize {
                probs[j] / total
            } else {
                probs[j]
            });
            ids.push(j as i64);
        }
    }
    (w, ids)
}

/// Dispatch order: the `(token, slot)` pairs sorted by expert, then token, then slot.
pub fn dispatch_order(ids: &[i64], k: usize, e: usize) -> Vec<(usize, usize)> {
    let t = ids.len() / k;
    let mut order = Vec::new();
    for ex in 0..e as i64 {
        for tok in 0..t {
            for j in 0..k {
                if ids[tok * k + j] == ex {
                    order.push((tok, j));
                }
            }
        }
    }
    order
}

fn counts_of(ids: &[i64], e: usize) -> Vec<i64> {
    (0..e as i64)
        .map(|ex| ids.iter().filter(|&&i| i == ex).count() as i64)
        .collect()
}

/// Grouped matmul: runs of `counts[e]` rows times expert `e`'s `[K, M]` (or `[M, K]`) weight.
pub fn ref_expert_matmul(
    rows: &[f32],
    kdim: usize,
    counts: &[i64],
    w: &[f32],
    m: usize,
    transpose_b: bool,
) -> Vec<f64> {
    let mut out = Vec::new();
    let mut r0 = 0usize;
    for (ex, &c) in counts.iter().enumerate() {
        let we = &w[ex * kdim * m..][..kdim * m];
        for r in r0..r0 + c as usize {
            for col in 0..m {
                let mut acc = 0f64;
                for p in 0..kdim {
                    let wv = if transpose_b {
                        we[col * kdim + p]
                    } else {
                        we[p * m + col]
                    };
                    acc += rows[r * kdim + p] as f64 * wv as f64;
                }
                out.push(acc);
            }
        }
        r0 += c as usize;
    }
    assert_eq!(
        r0 * kdim,
        rows.len(),
        "reference: counts must cover the rows"
    );
    out
}

/// `out[t] = Σ_j w[t, j] · y[slot(t, j)]`, slots in dispatch order.
pub fn ref_moe_combine(y: &[f32], h: usize, w: &[f64], ids: &[i64], k: usize) -> Vec<f64> {
    let t = ids.len() / k;
    let e = ids.iter().copied().max().unwrap_or(0) as usize + 1;
    let mut slot = vec![0usize; t * k];
    for (r, (tok, j)) in dispatch_order(ids, k, e).into_iter().enumerate() {
        slot[tok * k + j] = r;
    }
    let mut out = vec![0f64; t * h];
    for tok in 0..t {
        for j in 0..k {
            let r = slot[tok * k + j];
            for c in 0..h {
                out[tok * h + c] += w[tok * k + j] * y[r * h + c] as f64;
            }
        }
    }
    out
}

#[test]
fn moe_route_with_and_without_normalisation() {
    for (case, (t, e, k)) in [(5usize, 8usize, 2usize), (7, 4, 1), (3, 6, 6), (4, 5, 3)]
        .into_iter()
        .enumerate()
    {
        let mut rng = Rng::new(700 + case as u64);
        let logits = rng.scaled_normals(t * e, 2.0);
        for normalize in [false, true] {
            let got = run_op(
                Op::MoeRoute {
                    top_k: k as u64,
                    normalize,
                },
                vec![tf(&[t, e], logits.clone())],
            );
            let (w, ids) = ref_moe_route(&logits, e, k, normalize);
            let what = format!("moe_route T={t} E={e} k={k} normalize={normalize}");
            assert_close(&format!("{what}: weights"), &got[0], &[t, k], &w, EW);
            assert_ints(&format!("{what}: ids"), &got[1], DType::I64, &[t, k], &ids);
        }
    }
}

#[test]
fn moe_route_ties_go_to_the_lower_expert() {
    let logits = vec![1.0f32, 3.0, 1.0, 3.0, 0.5, 0.5, 0.5, 0.5];
    let got = run_op(
        Op::MoeRoute {
            top_k: 3,
            normalize: true,
        },
        vec![tf(&[2, 4], logits.clone())],
    );
    assert_ints(
        "tied routing",
        &got[1],
        DType::I64,
        &[2, 3],
        &[1, 3, 0, 0, 1, 2],
    );
    let (w, _) = ref_moe_route(&logits, 4, 3, true);
    assert_close("tied routing weights", &got[0], &[2, 3], &w, EW);
}

#[test]
fn moe_route_in_bf16_gives_bf16_weights() {
    let mut rng = Rng::new(710);
    let logits = Tensor::from_f32(DType::Bf16, vec![6, 8], rng.scaled_normals(48, 2.0)).unwrap();
    let lv = floats(&logits).to_vec();
    let got = run_op(
        Op::MoeRoute {
            top_k: 2,
            normalize: true,
        },
        vec![logits],
    );
    let (w, ids) = ref_moe_route(&lv, 8, 2, true);
    assert_bf16("bf16 routing weights", &got[0], &[6, 2], &w, 1e-5);
    assert_ints("bf16 routing ids", &got[1], DType::I64, &[6, 2], &ids);
}

#[test]
fn moe_dispatch_sorts_by_expert_then_token_then_slot() {
    let (t, h, k, e) = (6usize, 5usize, 2usize, 5usize);
    let mut rng = Rng::new(720);
    let (xt, x) = randn(&mut rng, &[t, h]);
    // Token 2 routes twice to expert 3 (slot order matters); expert 4 gets nothing.
    let ids = vec![1, 0, 3, 1, 3, 3, 0, 2, 2, 0, 1, 3];
    for idtype in [DType::I64, DType::I32] {
        let it = Tensor::from_i64(idtype, vec![t, k], ids.clone()).unwrap();
        let got = run_op(
            Op::MoeDispatch {
                num_experts: e as u64,
            },
            vec![xt.clone(), it],
        );
        let mut want = Vec::new();
        for (tok, _) in dispatch_order(&ids, k, e) {
            want.extend_from_slice(&x[tok * h..][..h]);
        }
        assert_same_f32(
            &format!("dispatched rows ({idtype} ids)"),
            &got[0],
            &[t * k, h],
            &want,
        );
        assert_ints(
            "tokens per expert",
            &got[1],
            DType::I64,
            &[e],
            &counts_of(&ids, e),
        );
        assert_eq!(counts_of(&ids, e), [3, 3, 2, 4, 0]);
    }
    // Random ids, k = 3.
    let (t, k, e) = (9usize, 3usize, 4usize);
    let (xt, x) = randn(&mut rng, &[t, h]);
    let ids = rng.ints(t * k, 0, e as i64);
    let got = run_op(
        Op::MoeDispatch {
            num_experts: e as u64,
        },
        vec![xt, ti(&[t, k], ids.clone())],
    );
    let mut want = Vec::new();
    for (tok, _) in dispatch_order(&ids, k, e) {
        want.extend_from_slice(&x[tok * h..][..h]);
    }
    assert_same_f32("dispatch of random ids", &got[0], &[t * k, h], &want);
    assert_ints(
        "counts of random ids",
        &got[1],
        DType::I64,
        &[e],
        &counts_of(&ids, e),
    );
}

#[test]
fn moe_dispatch_of_an_unknown_expert_is_an_error() {
    let mut rng = Rng::new(725);
    let (xt, _) = randn(&mut rng, &[3, 4]);
    for bad in [4, -1] {
        let r = try_run_op(
            Op::MoeDispatch { num_experts: 4 },
            vec![xt.clone(), ti(&[3, 1], vec![0, bad, 2])],
        );
        assert_kernel_error(&format!("expert id {bad} of 4"), r, "node");
    }
}

#[test]
fn expert_matmul_by_runs_of_rows() {
    // (counts, K, M); some experts get no rows at all.
    let cases: [(&[i64], usize, usize); 4] = [
        (&[3, 0, 4, 2], 6, 5),
        (&[0, 5, 4, 0], 3, 7),
        (&[1], 4, 4),
        (&[0, 0, 6], 8, 2),
    ];
    for (case, &(counts, kdim, m)) in cases.iter().enumerate() {
        let e = counts.len();
        let n: usize = counts.iter().sum::<i64>() as usize;
        for transpose_b in [false, true] {
            let mut rng = Rng::new(730 + case as u64);
            let (rt, rows) = randn(&mut rng, &[n, kdim]);
            let wshape = if transpose_b {
                [e, m, kdim]
            } else {
                [e, kdim, m]
            };
            let (wt, w) = randn(&mut rng, &wshape);
            let got = run_op(
                Op::ExpertMatMul {
                    transpose_b,
                    rows: weft_ir::ExpertRows::Dense,
                },
                vec![rt, ti(&[e], counts.to_vec()), wt],
            );
            let want = ref_expert_matmul(&rows, kdim, counts, &w, m, transpose_b);
            let what =
                format!("expert_matmul counts {counts:?} K={kdim} M={m} transpose_b={transpose_b}");
            assert_close(&what, &got[0], &[n, m], &want, SUMS);
        }
    }
}

#[test]
fn expert_matmul_with_counts_that_do_not_cover_the_rows_is_an_error() {
    let mut rng = Rng::new(735);
    let (rt, _) = randn(&mut rng, &[5, 3]);
    let (wt, _) = randn(&mut rng, &[2, 3, 4]);
    for counts in [vec![3, 3], vec![6, -1], vec![2, 2]] {
        let r = try_run_op(
            Op::ExpertMatMul {
                transpose_b: false,
                rows: weft_ir::ExpertRows::Dense,
            },
            vec![rt.clone(), ti(&[2], counts.clone()), wt.clone()],
        );
        assert_kernel_error(&format!("counts {counts:?} for 5 rows"), r, "node");
    }
}

#[test]
fn moe_combine_weights_each_tokens_expert_outputs() {
    let (t, h, k) = (6usize, 4usize, 2usize);
    let mut rng = Rng::new(740);
    let ids = vec![1, 0, 3, 1, 3, 3, 0, 2, 2, 0, 1, 3];
    let (yt, y) = randn(&mut rng, &[t * k, h]);
    let (wt, w) = randn(&mut rng, &[t, k]);
    let got = run_op(Op::MoeCombine, vec![yt, wt, ti(&[t, k], ids.clone())]);
    let want = ref_moe_combine(&y, h, &wide(&w), &ids, k);
    assert_close("moe_combine", &got[0], &[t, h], &want, EW);
    // k = 3 with random ids, i32.
    let (t, k) = (5usize, 3usize);
    let ids = rng.ints(t * k, 0, 4);
    let (yt, y) = randn(&mut rng, &[t * k, h]);
    let (wt, w) = randn(&mut rng, &[t, k]);
    let got = run_op(Op::MoeCombine, vec![yt, wt, ti32(&[t, k], ids.clone())]);
    let want = ref_moe_combine(&y, h, &wide(&w), &ids, k);
    assert_close("moe_combine k=3", &got[0], &[t, h], &want, EW);
}

/// route -> dispatch -> expert_matmul -> combine, returning the graph's outputs
/// `[out, weights, ids]`.
fn moe_pipeline(
    x: &Tensor,
    logits: &Tensor,
    experts: &Tensor,
    k: usize,
    normalize: bool,
    transpose_b: bool,
) -> Vec<Tensor> {
    let e = logits.shape()[1];
    let mut g = Builder::new("moe");
    let ix = g.input("x", x.clone());
    let il = g.input("logits", logits.clone());
    let iw = g.input("experts", experts.clone());
    let route = g.multi(
        "route",
        Op::MoeRoute {
            top_k: k as u64,
            normalize,
        },
        &[il],
    );
    let disp = g.multi(
        "dispatch",
        Op::MoeDispatch {
            num_experts: e as u64,
        },
        &[ix, route[1]],
    );
    let y = g.op(
        "experts_out",
        Op::ExpertMatMul {
            transpose_b,
            rows: weft_ir::ExpertRows::Dense,
        },
        &[disp[0], disp[1], iw],
    );
    let out = g.op("combine", Op::MoeCombine, &[y, route[0], route[1]]);
    g.run(&[out, route[0], route[1]])
}

#[test]
fn dispatch_identity_experts_combine_reproduces_the_tokens() {
    let (t, h, e, k) = (7usize, 6usize, 4usize, 2usize);
    let mut rng = Rng::new(750);
    let (xt, x) = randn(&mut rng, &[t, h]);
    let (lt, logits) = randn(&mut rng, &[t, e]);
    let mut eye = vec![0f32; e * h * h];
    for ex in 0..e {
        for i in 0..h {
            eye[(ex * h + i) * h + i] = 1.0;
        }
    }
    let eye = tf(&[e, h, h], eye);
    // Normalised weights sum to one, so the tokens come back.
    let got = moe_pipeline(&xt, &lt, &eye, k, true, false);
    assert_close(
        "identity experts, normalised",
        &got[0],
        &[t, h],
        &wide(&x),
        EW,
    );
    // Without normalisation each token is scaled by the probability mass of its top k.
    let got = moe_pipeline(&xt, &lt, &eye, k, false, true);
    let (w, _) = ref_moe_route(&logits, e, k, false);
    let want: Vec<f64> = (0..t * h)
        .map(|i| {
            let tok = i / h;
            x[i] as f64 * (w[tok * k] + w[tok * k + 1])
        })
        .collect();
    assert_close(
        "identity experts, unnormalised",
        &got[0],
        &[t, h],
        &want,
        EW,
    );
}

#[test]
fn moe_pipeline_matches_dense_per_token_arithmetic() {
    let (t, h, m, e) = (9usize, 5usize, 5usize, 6usize);
    for (case, (k, normalize, transpose_b)) in
        [(2usize, true, false), (3, false, true), (1, true, true)]
            .into_iter()
            .enumerate()
    {
        let mut rng = Rng::new(760 + case as u64);
        let (xt, x) = randn(&mut rng, &[t, h]);
        let (lt, logits) = randn(&mut rng, &[t, e]);
        let wshape = if transpose_b { [e, m, h] } else { [e, h, m] };
        let (wt, w) = randn(&mut rng, &wshape);
        let got = moe_pipeline(&xt, &lt, &wt, k, normalize, transpose_b);
        let (rw, rids) = ref_moe_route(&logits, e, k, normalize);
        // out[t] = Σ_j w[t, j] · (x[t] @ W[id(t, j)])
        let mut want = vec![0f64; t * m];
        for tok in 0..t {
            for j in 0..k {
                let ex = rids[tok * k + j] as usize;
                let one = ref_expert_matmul(
                    &x[tok * h..][..h],
                    h,
                    &[1],
                    &w[ex * h * m..][..h * m],
                    m,
                    transpose_b,
                );
                for c in 0..m {
                    want[tok * m + c] += rw[tok * k + j] * one[c];
                }
            }
        }
        let what = format!("moe pipeline k={k} normalize={normalize} transpose_b={transpose_b}");
        assert_ints(&format!("{what}: ids"), &got[2], DType::I64, &[t, k], &rids);
        assert_close(&format!("{what}: weights"), &got[1], &[t, k], &rw, EW);
        assert_close(&what, &got[0], &[t, m], &want, SUMS);
    }
}

#[test]
fn moe_pad_and_unpad_move_expert_groups_into_zero_padded_blocks_and_back() {
    let (n, h, groups) = (7usize, 3usize, 2usize);
    let mut rng = Rng::new(733);
    let (xt, x) = randn(&mut rng, &[n, h]);
    // Four experts in two groups: group 0 = experts 0 and 1 (2 + 1 rows), group 1 = 4 rows.
    let counts = vec![2i64, 1, 0, 4];
    let padded = run_op(
        Op::MoePad {
            groups: groups as u64,
        },
        vec![xt, ti(&[4], counts.clone())],
    );
    let mut want = vec![0f32; groups * n * h];
    want[..3 * h].copy_from_slice(&x[..3 * h]);
    want[n * h..n * h + 4 * h].copy_from_slice(&x[3 * h..]);
    assert_same_f32("padded blocks", &padded[0], &[groups, n, h], &want);
    let back = run_op(
        Op::MoeUnpad {
            groups: groups as u64,
            rows: n as u64,
        },
        vec![padded[0].clone(), ti(&[4], counts)],
    );
    assert_same_f32("unpadded rows", &back[0], &[n, h], &x);
}

#[test]
fn blocked_expert_counts_leave_padding_rows_zero() {
    // Two blocks of 4 rows; block 0: 1 row for expert 0, 2 for expert 1, 1 padding row;
    // block 1: 3 rows for expert 1, 1 padding row.
    let (rows, kdim, m, e) = (8usize, 3usize, 2usize, 2usize);
    let mut rng = Rng::new(734);
    let (xt, x) = randn(&mut rng, &[rows, kdim]);
    let (wt, w) = randn(&mut rng, &[e, kdim, m]);
    let got = run_op(
        Op::ExpertMatMul {
            transpose_b: false,
            rows: weft_ir::ExpertRows::Dense,
        },
        vec![xt, ti(&[2, e], vec![1, 2, 0, 3]), wt],
    );
    let block0 = ref_expert_matmul(&x[..3 * kdim], kdim, &[1, 2], &w, m, false);
    let block1 = ref_expert_matmul(&x[4 * kdim..7 * kdim], kdim, &[0, 3], &w, m, false);
    let mut want = block0;
    want.extend([0.0; 2]);
    want.extend(block1);
    want.extend([0.0; 2]);
    assert_close("blocked expert matmul", &got[0], &[rows, m], &want, SUMS);
}

#[test]
fn moe_pad_refuses_counts_that_overflow() {
    let mut rng = Rng::new(735);
    let (xt, _) = randn(&mut rng, &[4, 2]);
    let huge = 1i64 << 62;
    let e = try_run_op(
        Op::MoePad { groups: 2 },
        vec![xt, ti(&[4], vec![huge, huge, huge, huge + 4])],
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("must be non-negative and sum to the 4 rows"),
        "{e}"
    );
}
