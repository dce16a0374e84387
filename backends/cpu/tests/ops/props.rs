//! Property tests over random shapes: the same references as the example tests, on shapes
//! proptest picks (and shrinks). Values come from the test's own PRNG seeded by proptest.

use proptest::prelude::*;
use proptest::sample::Index;
use weft_ir::{DType, Op, ReduceKind};

use crate::common::Rng;
use crate::common::*;
use crate::layout::{ref_concat, ref_reduce, ref_slice, ref_top_k, ref_transpose};

type BinFn = fn(f64, f64) -> f64;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Two shapes that broadcast together: each drops some leading dims of a common shape and
/// turns some of the rest into 1.
fn broadcast_pair(
    max_rank: usize,
    max_dim: usize,
) -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (
        prop::collection::vec(1..=max_dim, 0..=max_rank),
        any::<u64>(),
    )
        .prop_map(|(full, bits)| {
            let mut rng = Rng::new(bits);
            let derive = |rng: &mut Rng| -> Vec<usize> {
                let drop = rng.int(0, full.len() as i64 + 1) as usize;
                full[drop..]
                    .iter()
                    .map(|&d| if rng.unit() < 0.3 { 1 } else { d })
                    .collect()
            };
            (derive(&mut rng), derive(&mut rng))
        })
}

fn shape(max_rank: usize, max_dim: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1..=max_dim, 1..=max_rank)
}

fn check_binary(ash: &[usize], bsh: &[usize], seed: u64) {
    let mut rng = Rng::new(seed);
    let a = rng.away_from_zero(numel(ash), 0.25, 2.0);
    let b = rng.away_from_zero(numel(bsh), 0.25, 2.0);
    let mut g = Builder::new("binary");
    let ia = g.input("a", tf(ash, a.clone()));
    let ib = g.input("b", tf(bsh, b.clone()));
    let ops: [(Op, BinFn); 4] = [
        (Op::Add, |x, y| x + y),
        (Op::Sub, |x, y| x - y),
        (Op::Mul, |x, y| x * y),
        (Op::Div, |x, y| x / y),
    ];
    let outs: Vec<_> = ops
        .iter()
        .enumerate()
        .map(|(i, (op, _))| g.op(&format!("o{i}"), op.clone(), &[ia, ib]))
        .collect();
    let got = g.run(&outs);
    let out_shape = broadcast_shapes(ash, bsh);
    for ((op, f), t) in ops.iter().zip(&got) {
        let want: Vec<f64> = (0..numel(&out_shape))
            .map(|i| {
                let idx = unravel(i, &out_shape);
                let x = a[broadcast_source(&idx, ash)] as f64;
                let y = b[broadcast_source(&idx, bsh)] as f64;
                f(x, y)
            })
            .collect();
        let what = format!("{} {ash:?} {bsh:?}", op.name());
        assert_close(&what, t, &out_shape, &want, EW);
    }
}

fn check_matmul(
    batch_a: &[usize],
    batch_b: &[usize],
    (m, k, n): (usize, usize, usize),
    ta: bool,
    tb: bool,
    seed: u64,
) {
    let mut ash = batch_a.to_vec();
    ash.extend(if ta { [k, m] } else { [m, k] });
    let mut bsh = batch_b.to_vec();
    bsh.extend(if tb { [n, k] } else { [k, n] });
    let mut rng = Rng::new(seed);
    let (at, a) = randn(&mut rng, &ash);
    let (bt, b) = randn(&mut rng, &bsh);
    let op = Op::MatMul {
        transpose_a: ta,
        transpose_b: tb,
    };
    let got = run_op(op, vec![at, bt]);
    let (out_shape, want) = ref_matmul(&a, &ash, &b, &bsh, ta, tb);
    let what = format!("matmul {ash:?} (transposed: {ta}) x {bsh:?} (transposed: {tb})");
    assert_close(&what, &got[0], &out_shape, &want, SUMS);
}

fn check_softmax(shape: &[usize], a: usize, seed: u64) {
    // Sometimes address the axis from the end.
    let attr = if seed % 2 == 0 {
        a as i64
    } else {
        a as i64 - shape.len() as i64
    };
    let mut rng = Rng::new(seed);
    let x = rng.scaled_normals(numel(shape), 3.0);
    let got = run_op(Op::Softmax { axis: attr }, vec![tf(shape, x.clone())]);
    let want = ref_softmax(&x, shape, a);
    assert_close(
        &format!("softmax {shape:?} axis {attr}"),
        &got[0],
        shape,
        &want,
        EW,
    );
}

fn check_transpose(shape: &[usize], perm: &[usize], seed: u64) {
    let mut rng = Rng::new(seed);
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

fn check_split_concat(shape: &[usize], a: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    // Random positive sizes summing to the dim.
    let mut sizes = Vec::new();
    let mut left = shape[a];
    while left > 0 {
        let s = rng.int(1, left as i64 + 1) as usize;
        sizes.push(s as u64);
        left -= s;
    }
    let (xt, x) = randn(&mut rng, shape);
    let mut g = Builder::new("round-trip");
    let ix = g.input("x", xt);
    let split = Op::Split {
        axis: a as i64,
        sizes: sizes.clone(),
    };
    let pieces = g.multi("split", split, &[ix]);
    // The concat names the same axis from the end.
    let concat = Op::Concat {
        axis: a as i64 - shape.len() as i64,
    };
    let joined = g.op("concat", concat, &pieces);
    let mut outs = pieces.clone();
    outs.push(joined);
    let got = g.run(&outs);
    let mut lo = 0;
    let mut parts = Vec::new();
    for (t, &s) in got.iter().zip(&sizes) {
        let hi = lo + s as usize;
        let (ps, want) = ref_slice(&x, shape, a, lo, hi);
        let what = format!("split {shape:?} axis {a} piece {lo}..{hi}");
        assert_same_f32(&what, t, &ps, &want);
        parts.push((want, ps));
        lo = hi;
    }
    let refs: Vec<(&[f32], &[usize])> = parts.iter().map(|(d, s)| (&d[..], &s[..])).collect();
    let (cs, cat) = ref_concat(&refs, a);
    assert_eq!(cat, x, "the reference round trip");
    let what = format!("concat of split {shape:?} axis {a}");
    assert_same_f32(&what, &got[sizes.len()], &cs, &x);
}

fn check_reduce_sum(shape: &[usize], pick: u64, keepdims: bool, seed: u64) {
    let rank = shape.len();
    // A non-empty subset of the axes, in a scrambled order, some written negative.
    let mut axes: Vec<usize> = (0..rank).filter(|i| (pick >> i) & 1 == 1).collect();
    if axes.is_empty() {
        axes.push((pick as usize >> 8) % rank);
    }
    if (pick >> 16) & 1 == 1 {
        axes.reverse();
    }
    let attr: Vec<i64> = axes
        .iter()
        .map(|&a| {
            if (pick >> (20 + a)) & 1 == 1 {
                a as i64 - rank as i64
            } else {
                a as i64
            }
        })
        .collect();
    let mut rng = Rng::new(seed);
    let (xt, x) = randn(&mut rng, shape);
    let op = Op::Reduce {
        kind: ReduceKind::Sum,
        axes: attr.clone(),
        keepdims,
    };
    let got = run_op(op, vec![xt]);
    let (keep, want) = ref_reduce(&wide(&x), shape, &axes, ReduceKind::Sum);
    let out_shape: Vec<usize> = if keepdims {
        keep
    } else {
        (0..rank)
            .filter(|i| !axes.contains(i))
            .map(|i| shape[i])
            .collect()
    };
    let what = format!("reduce sum {shape:?} over {attr:?} keepdims {keepdims}");
    assert_close(&what, &got[0], &out_shape, &want, SUMS);
}

fn check_top_k(shape: &[usize], a: usize, k: usize, largest: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    // Few distinct values, so ties are common.
    let x: Vec<f32> = rng
        .ints(numel(shape), -3, 4)
        .iter()
        .map(|&v| v as f32 * 0.5)
        .collect();
    let op = Op::TopK {
        k: k as u64,
        axis: a as i64,
        largest,
    };
    let got = run_op(op, vec![tf(shape, x.clone())]);
    let (s, vals, idxs) = ref_top_k(&wide(&x), shape, a, k, largest);
    let vals: Vec<f32> = vals.iter().map(|&v| v as f32).collect();
    let what = format!("top_k {shape:?} axis {a} k {k} largest {largest}");
    assert_same_f32(&format!("{what}: values"), &got[0], &s, &vals);
    assert_ints(&format!("{what}: indices"), &got[1], DType::I64, &s, &idxs);
}

fn check_attention(n: AttnDims, causal: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let (qt, q) = randn(&mut rng, &[n.b, n.hq, n.s, n.d]);
    let (kt, k) = randn(&mut rng, &[n.b, n.hkv, n.t, n.d]);
    let (vt, v) = randn(&mut rng, &[n.b, n.hkv, n.t, n.dv]);
    let got = run_op(
        Op::Attention {
            causal,
            scale: None,
        },
        vec![qt, kt, vt],
    );
    let want = ref_attention(&q, &k, &v, n, causal, None, RefMask::None);
    let what = format!("attention {n:?} causal {causal}");
    assert_close(&what, &got[0], &[n.b, n.hq, n.s, n.dv], &want, SUMS);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn binary_ops_broadcast((ash, bsh) in broadcast_pair(4, 4), seed in any::<u64>()) {
        check_binary(&ash, &bsh, seed);
    }

    #[test]
    fn matmul_random_shapes(
        (batch_a, batch_b) in broadcast_pair(2, 3),
        mkn in (1usize..9, 1usize..12, 1usize..9),
        ta in any::<bool>(),
        tb in any::<bool>(),
        seed in any::<u64>(),
    ) {
        check_matmul(&batch_a, &batch_b, mkn, ta, tb, seed);
    }

    #[test]
    fn softmax_random_shapes(
        shape in shape(4, 6),
        ax in any::<Index>(),
        seed in any::<u64>(),
    ) {
        check_softmax(&shape, ax.index(shape.len()), seed);
    }

    #[test]
    fn transpose_random_perms(
        (shape, perm) in shape(5, 4).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), Just((0..r).collect::<Vec<usize>>()).prop_shuffle())
        }),
        seed in any::<u64>(),
    ) {
        check_transpose(&shape, &perm, seed);
    }

    #[test]
    fn split_then_concat_round_trips(
        shape in shape(4, 7),
        ax in any::<Index>(),
        seed in any::<u64>(),
    ) {
        check_split_concat(&shape, ax.index(shape.len()), seed);
    }

    #[test]
    fn reduce_sum_random_axes(
        shape in shape(4, 5),
        pick in any::<u64>(),
        keepdims in any::<bool>(),
        seed in any::<u64>(),
    ) {
        check_reduce_sum(&shape, pick, keepdims, seed);
    }

    #[test]
    fn top_k_random_shapes(
        shape in shape(3, 9),
        ax in any::<Index>(),
        kpick in any::<Index>(),
        largest in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let a = ax.index(shape.len());
        check_top_k(&shape, a, kpick.index(shape[a]) + 1, largest, seed);
    }

    #[test]
    fn attention_random_shapes(
        (b, hkv, group) in (1usize..3, 1usize..3, 1usize..4),
        (s, t) in (1usize..10, 1usize..140),
        (d, dv) in (1usize..10, 1usize..10),
        causal in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let hq = hkv * group;
        check_attention(AttnDims { b, hq, hkv, s, t, d, dv }, causal, seed);
    }
}
