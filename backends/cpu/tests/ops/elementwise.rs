//! Elementwise ops (binary with NumPy broadcasting, unary, integer arithmetic), softmax,
//! and narrow-dtype rounding of their results.

use weft_ir::{DType, GeluApprox, Op, Tensor, ValueId};

use crate::common::*;

type BinFn = fn(f64, f64) -> f64;
type IntFn = fn(i64, i64) -> i64;
type Int32Fn = fn(i32, i32) -> i32;

/// `f` applied over the broadcast of `a` and `b`, in f64.
fn ref_binary(
    a: &[f32],
    ash: &[usize],
    b: &[f32],
    bsh: &[usize],
    f: BinFn,
) -> (Vec<usize>, Vec<f64>) {
    let shape = broadcast_shapes(ash, bsh);
    let vals = (0..numel(&shape))
        .map(|i| {
            let idx = unravel(i, &shape);
            f(
                a[broadcast_source(&idx, ash)] as f64,
                b[broadcast_source(&idx, bsh)] as f64,
            )
        })
        .collect();
    (shape, vals)
}

/// The error function: its Maclaurin series below 3, the continued fraction of erfc above.
pub fn erf(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 3.0 {
        let (mut term, mut sum, mut n) = (a, a, 0u32);
        loop {
            n += 1;
            term *= -a * a / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() <= 1e-18 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        let mut f = a;
        for n in (1..=80).rev() {
            f = a + (n as f64 / 2.0) / f;
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
    };
    r.copysign(x)
}

#[test]
fn reference_erf_matches_known_values() {
    // Abramowitz & Stegun table values.
    for (x, want) in [
        (0.1, 0.112_462_916_018_284_9),
        (0.5, 0.520_499_877_813_046_5),
        (1.0, 0.842_700_792_949_714_9),
        (2.0, 0.995_322_265_018_952_7),
        (2.9, 0.999_958_902_121_900_3),
        (3.0, 0.999_977_909_503_001_4),
        (4.0, 0.999_999_984_582_742_1),
    ] {
        assert!((erf(x) - want).abs() < 1e-13, "erf({x}) = {}", erf(x));
        assert!((erf(-x) + want).abs() < 1e-13);
    }
}

#[test]
fn float_binary_ops_broadcast() {
    let pairs: &[(&'static [usize], &'static [usize])] = &[
        (&[2, 3, 4], &[3, 1]),
        (&[2, 3, 4], &[1]),
        (&[3, 1], &[2, 1, 4]),
        (&[2, 3], &[]),
        (&[4], &[2, 3, 4]),
        (&[2, 3, 4], &[2, 3, 4]),
        (&[1, 3, 1], &[2, 1, 5]),
        (&[2, 1, 3, 1], &[4, 1, 6]),
    ];
    for (case, &(ash, bsh)) in pairs.iter().enumerate() {
        let mut rng = Rng::new(100 + case as u64);
        // Magnitudes in [0.25, 2) keep division and pow well conditioned.
        let a = rng.away_from_zero(numel(ash), 0.25, 2.0);
        let b = rng.away_from_zero(numel(bsh), 0.25, 2.0);
        let pa: Vec<f32> = a.iter().map(|x| x.abs()).collect();
        let pb: Vec<f32> = b.iter().map(|x| x.abs()).collect();
        let mut g = Builder::new("binary");
        let operand = |g: &mut Builder, name: &str, vals: &[f32], shape: &'static [usize]| {
            let id = g.input(name, tf(shape, vals.to_vec()));
            (id, vals.to_vec(), shape)
        };
        let a = operand(&mut g, "a", &a, ash);
        let b = operand(&mut g, "b", &b, bsh);
        let pa = operand(&mut g, "pa", &pa, ash);
        let pb = operand(&mut g, "pb", &pb, bsh);
        let cases: [(&str, Op, &Operand, &Operand, BinFn); 8] = [
            ("a+b", Op::Add, &a, &b, |x, y| x + y),
            ("a-b", Op::Sub, &a, &b, |x, y| x - y),
            ("a*b", Op::Mul, &a, &b, |x, y| x * y),
            ("a/b", Op::Div, &a, &b, |x, y| x / y),
            ("pa^b", Op::Pow, &pa, &b, f64::powf),
            ("b-a", Op::Sub, &b, &a, |x, y| x - y),
            ("b/a", Op::Div, &b, &a, |x, y| x / y),
            ("pb^a", Op::Pow, &pb, &a, f64::powf),
        ];
        let outs: Vec<_> = cases
            .iter()
            .map(|(name, op, l, r, _)| g.op(name, op.clone(), &[l.0, r.0]))
            .collect();
        let got = g.run(&outs);
        for ((name, _, l, r, f), t) in cases.iter().zip(&got) {
            let (shape, want) = ref_binary(&l.1, l.2, &r.1, r.2, *f);
            assert_close(
                &format!("{name} with {ash:?} and {bsh:?}"),
                t,
                &shape,
                &want,
                EW,
            );
        }
    }
}

/// A graph input with its values and shape.
type Operand = (ValueId, Vec<f32>, &'static [usize]);

#[test]
fn pow_of_negative_base_with_whole_exponent_is_real() {
    // IEEE/NumPy pow: a negative base with a whole exponent is well defined.
    let mut rng = Rng::new(7);
    let a: Vec<f32> = rng.uniforms(12, 0.3, 2.0).iter().map(|x| -x).collect();
    let b: Vec<f32> = rng.ints(12, -3, 4).iter().map(|&x| x as f32).collect();
    let got = run_op(Op::Pow, vec![tf(&[12], a.clone()), tf(&[12], b.clone())]);
    let want: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|(&x, &y)| (x as f64).powf(y as f64))
        .collect();
    assert_close("negative base ^ whole exponent", &got[0], &[12], &want, EW);
}

fn int_tensor(dtype: DType, shape: &[usize], data: Vec<i64>) -> Tensor {
    Tensor::from_i64(dtype, shape.to_vec(), data).unwrap()
}

/// Wraps an i64 result to the dtype's width (i32 results wrap at 32 bits).
fn wrap(dtype: DType, x: i64) -> i64 {
    if dtype == DType::I32 {
        x as i32 as i64
    } else {
        x
    }
}

#[test]
fn integer_binary_ops_broadcast_and_truncate() {
    for dtype in [DType::I64, DType::I32] {
        for (ash, bsh) in [
            (&[2usize, 3, 4][..], &[3usize, 1][..]),
            (&[5], &[1]),
            (&[2, 3], &[]),
        ] {
            let mut rng = Rng::new(5);
            // No zeros on either side: both are used as divisors.
            let a: Vec<i64> = rng
                .ints(numel(ash), -1000, 1000)
                .into_iter()
                .map(|x| if x == 0 { 3 } else { x })
                .collect();
            let b: Vec<i64> = rng
                .ints(numel(bsh), -50, 50)
                .into_iter()
                .map(|x| if x == 0 { 7 } else { x })
                .collect();
            let mut g = Builder::new("int");
            let ia = g.input("a", int_tensor(dtype, ash, a.clone()));
            let ib = g.input("b", int_tensor(dtype, bsh, b.clone()));
            let ops: [(&str, Op, IntFn); 5] = [
                ("add", Op::Add, |x, y| x + y),
                ("sub", Op::Sub, |x, y| x - y),
                ("mul", Op::Mul, |x, y| x * y),
                ("div", Op::Div, |x, y| x / y), // Rust's `/` truncates toward zero
                ("rdiv", Op::Div, |x, y| y / x),
            ];
            let outs: Vec<_> = ops
                .iter()
                .map(|(name, op, _)| {
                    if *name == "rdiv" {
                        g.op(name, op.clone(), &[ib, ia])
                    } else {
                        g.op(name, op.clone(), &[ia, ib])
                    }
                })
                .collect();
            let got = g.run(&outs);
            let shape = broadcast_shapes(ash, bsh);
            for ((name, _, f), t) in ops.iter().zip(&got) {
                let want: Vec<i64> = (0..numel(&shape))
                    .map(|i| {
                        let idx = unravel(i, &shape);
                        let x = a[broadcast_source(&idx, ash)];
                        let y = b[broadcast_source(&idx, bsh)];
                        wrap(dtype, f(x, y))
                    })
                    .collect();
                assert_ints(
                    &format!("{dtype} {name} {ash:?} {bsh:?}"),
                    t,
                    dtype,
                    &shape,
                    &want,
                );
            }
        }
        // Truncation toward zero, for every sign combination.
        let got = run_op(
            Op::Div,
            vec![
                int_tensor(dtype, &[8], vec![7, -7, 7, -7, 1, -1, 6, -6]),
                int_tensor(dtype, &[8], vec![2, 2, -2, -2, 3, 3, -3, 4]),
            ],
        );
        assert_ints(
            "div truncates",
            &got[0],
            dtype,
            &[8],
            &[3, -3, -3, 3, 0, 0, -2, -1],
        );
    }
}

#[test]
fn integer_division_by_zero_is_an_error() {
    for dtype in [DType::I64, DType::I32] {
        let r = try_run_op(
            Op::Div,
            vec![
                int_tensor(dtype, &[4], vec![3, 4, 5, 6]),
                int_tensor(dtype, &[4], vec![1, 2, 0, 3]),
            ],
        );
        assert_kernel_error(&format!("{dtype} x / 0"), r, "node");
        // A broadcast zero divisor too.
        let r = try_run_op(
            Op::Div,
            vec![
                int_tensor(dtype, &[2, 3], vec![1, 2, 3, 4, 5, 6]),
                int_tensor(dtype, &[1], vec![0]),
            ],
        );
        assert_kernel_error(&format!("{dtype} x / [0]"), r, "node");
    }
}

#[test]
fn integer_overflow_wraps() {
    // docs/cpu-executor.md: integer ops wrap on overflow; i32 results wrap at 32 bits.
    let (min, max) = (i64::MIN, i64::MAX);
    let a = vec![max, min, min, max, 3];
    let b = vec![1, -1, 1, 2, -1];
    let ops: [(&str, Op, IntFn); 3] = [
        ("add", Op::Add, i64::wrapping_add),
        ("sub", Op::Sub, i64::wrapping_sub),
        ("mul", Op::Mul, i64::wrapping_mul),
    ];
    for (name, op, f) in ops {
        let got = run_op(op, vec![ti(&[5], a.clone()), ti(&[5], b.clone())]);
        let want: Vec<i64> = a.iter().zip(&b).map(|(&x, &y)| f(x, y)).collect();
        assert_ints(
            &format!("i64 {name} wraps"),
            &got[0],
            DType::I64,
            &[5],
            &want,
        );
    }
    let got = run_op(Op::Neg, vec![ti(&[5], a.clone())]);
    let want: Vec<i64> = a.iter().map(|x| x.wrapping_neg()).collect();
    assert_ints("i64 neg wraps", &got[0], DType::I64, &[5], &want);

    let (min, max) = (i32::MIN, i32::MAX);
    let a = vec![max, min, 65536, min, max];
    let b = vec![1, -1, 65536, -1, 2];
    let ops: [(&str, Op, Int32Fn); 3] = [
        ("add", Op::Add, i32::wrapping_add),
        ("sub", Op::Sub, i32::wrapping_sub),
        ("mul", Op::Mul, i32::wrapping_mul),
    ];
    let wide = |v: &[i32]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
    for (name, op, f) in ops {
        let got = run_op(op, vec![ti32(&[5], wide(&a)), ti32(&[5], wide(&b))]);
        let want: Vec<i32> = a.iter().zip(&b).map(|(&x, &y)| f(x, y)).collect();
        assert_ints(
            &format!("i32 {name} wraps"),
            &got[0],
            DType::I32,
            &[5],
            &wide(&want),
        );
    }
    let got = run_op(Op::Neg, vec![ti32(&[5], wide(&a))]);
    let want: Vec<i32> = a.iter().map(|x| x.wrapping_neg()).collect();
    assert_ints("i32 neg wraps", &got[0], DType::I32, &[5], &wide(&want));
}

#[test]
fn integer_division_overflow_wraps() {
    // MIN / -1 is the one integer division that overflows. docs/cpu-executor.md: integer
    // ops wrap on overflow and only division by zero is an error, so it gives MIN.
    let mut failures = Vec::new();
    for (dtype, min) in [(DType::I64, i64::MIN), (DType::I32, i32::MIN as i64)] {
        let got = try_run_op(
            Op::Div,
            vec![
                int_tensor(dtype, &[3], vec![min, min, -9]),
                int_tensor(dtype, &[3], vec![-1, 1, -1]),
            ],
        );
        match got {
            Ok(got) => assert_ints(
                &format!("{dtype} MIN / -1"),
                &got[0],
                dtype,
                &[3],
                &[min, min, 9],
            ),
            Err(e) => failures.push(format!("{dtype} MIN / -1 should wrap to MIN, but: {e}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn neg_float_and_int() {
    let mut rng = Rng::new(11);
    let x = rng.normals(15);
    let got = run_op(Op::Neg, vec![tf(&[3, 5], x.clone())]);
    let want: Vec<f32> = x.iter().map(|v| -v).collect();
    assert_same_f32("neg f32", &got[0], &[3, 5], &want);
    for dtype in [DType::I64, DType::I32] {
        let x = rng.ints(15, -100_000, 100_000);
        let got = run_op(Op::Neg, vec![int_tensor(dtype, &[5, 3], x.clone())]);
        let want: Vec<i64> = x.iter().map(|v| -v).collect();
        assert_ints(&format!("neg {dtype}"), &got[0], dtype, &[5, 3], &want);
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn gelu_erf(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

fn gelu_tanh(x: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
}

#[test]
fn unary_float_ops() {
    let shape = [3, 5, 7];
    let n = numel(&shape);
    let mut rng = Rng::new(21);
    let general = rng.scaled_normals(n, 3.0);
    let positive = rng.uniforms(n, 0.01, 20.0);
    let away = rng.away_from_zero(n, 0.1, 5.0);
    type Case<'a> = (&'a str, Op, &'a [f32], fn(f64) -> f64);
    let cases: Vec<Case> = vec![
        ("exp", Op::Exp, &general, f64::exp),
        ("sqrt", Op::Sqrt, &positive, f64::sqrt),
        ("rsqrt", Op::Rsqrt, &positive, |x| 1.0 / x.sqrt()),
        ("reciprocal", Op::Reciprocal, &away, |x| 1.0 / x),
        ("silu", Op::Silu, &general, |x| x * sigmoid(x)),
        (
            "gelu(erf)",
            Op::Gelu {
                approximate: GeluApprox::Erf,
            },
            &general,
            gelu_erf,
        ),
        (
            "gelu(tanh)",
            Op::Gelu {
                approximate: GeluApprox::Tanh,
            },
            &general,
            gelu_tanh,
        ),
        ("relu", Op::Relu, &general, |x| x.max(0.0)),
        ("sigmoid", Op::Sigmoid, &general, sigmoid),
        ("tanh", Op::Tanh, &general, f64::tanh),
        ("neg", Op::Neg, &general, |x| -x),
    ];
    for (name, op, input, f) in cases {
        let got = run_op(op, vec![tf(&shape, input.to_vec())]);
        let want: Vec<f64> = input.iter().map(|&x| f(x as f64)).collect();
        assert_close(name, &got[0], &shape, &want, EW);
    }
    // GELU's two formulas really differ (the attribute is honoured).
    let x = tf(&[1], vec![1.5]);
    let e = run_op(
        Op::Gelu {
            approximate: GeluApprox::Erf,
        },
        vec![x.clone()],
    );
    let t = run_op(
        Op::Gelu {
            approximate: GeluApprox::Tanh,
        },
        vec![x],
    );
    assert_ne!(floats(&e[0])[0], floats(&t[0])[0]);
}

#[test]
fn softmax_along_several_axes() {
    let shape = [3, 4, 5];
    let mut rng = Rng::new(31);
    let x = rng.scaled_normals(numel(&shape), 2.0);
    for ax in [0i64, 1, 2, -1, -2, -3] {
        let got = run_op(Op::Softmax { axis: ax }, vec![tf(&shape, x.clone())]);
        let want = ref_softmax(&x, &shape, axis(ax, 3));
        assert_close(&format!("softmax axis {ax}"), &got[0], &shape, &want, EW);
    }
    // Rank 1 and a length-1 axis.
    let y = rng.normals(9);
    let got = run_op(Op::Softmax { axis: 0 }, vec![tf(&[9], y.clone())]);
    assert_close(
        "softmax rank 1",
        &got[0],
        &[9],
        &ref_softmax(&y, &[9], 0),
        EW,
    );
    let got = run_op(Op::Softmax { axis: -1 }, vec![tf(&[9, 1], y)]);
    assert_close(
        "softmax over a length-1 axis",
        &got[0],
        &[9, 1],
        &[1.0; 9],
        EW,
    );
}

#[test]
fn softmax_is_stable_for_large_logits() {
    // exp(500) overflows f32: the kernel must subtract the max first.
    let shape = [4, 6];
    let mut rng = Rng::new(32);
    let x: Vec<f32> = rng
        .scaled_normals(24, 40.0)
        .iter()
        .map(|v| v + 500.0)
        .collect();
    let got = run_op(Op::Softmax { axis: -1 }, vec![tf(&shape, x.clone())]);
    assert_close(
        "softmax of large logits",
        &got[0],
        &shape,
        &ref_softmax(&x, &shape, 1),
        EW,
    );
    let neg: Vec<f32> = x.iter().map(|v| -v).collect();
    let got = run_op(Op::Softmax { axis: 0 }, vec![tf(&shape, neg.clone())]);
    assert_close(
        "softmax of very negative logits",
        &got[0],
        &shape,
        &ref_softmax(&neg, &shape, 0),
        EW,
    );
}

#[test]
fn bf16_results_are_rounded_once_to_bf16() {
    let shape = [4, 6];
    let n = numel(&shape);
    let mut rng = Rng::new(41);
    let bf = |v: Vec<f32>| Tensor::from_f32(DType::Bf16, shape.to_vec(), v).unwrap();
    let a = bf(rng.scaled_normals(n, 2.0));
    let b = bf(rng.away_from_zero(n, 0.25, 2.0));
    let p = bf(rng.uniforms(n, 0.1, 9.0));
    let (av, bv, pv) = (
        floats(&a).to_vec(),
        floats(&b).to_vec(),
        floats(&p).to_vec(),
    );
    assert!(av.iter().chain(&bv).chain(&pv).all(|&x| is_bf16(x)));
    let mut g = Builder::new("bf16");
    let (ia, ib, ip) = (g.input("a", a), g.input("b", b), g.input("p", p));
    let outs = [
        g.op("add", Op::Add, &[ia, ib]),
        g.op("mul", Op::Mul, &[ia, ib]),
        g.op("div", Op::Div, &[ia, ib]),
        g.op("pow", Op::Pow, &[ip, ia]),
        g.op("exp", Op::Exp, &[ia]),
        g.op("sqrt", Op::Sqrt, &[ip]),
        g.op("silu", Op::Silu, &[ia]),
        g.op(
            "gelu",
            Op::Gelu {
                approximate: GeluApprox::Erf,
            },
            &[ia],
        ),
        g.op("softmax", Op::Softmax { axis: -1 }, &[ia]),
    ];
    let got = g.run(&outs);
    let zip = |f: BinFn| -> Vec<f64> {
        av.iter()
            .zip(&bv)
            .map(|(&x, &y)| f(x as f64, y as f64))
            .collect()
    };
    let un =
        |v: &[f32], f: fn(f64) -> f64| -> Vec<f64> { v.iter().map(|&x| f(x as f64)).collect() };
    let pow: Vec<f64> = pv
        .iter()
        .zip(&av)
        .map(|(&x, &y)| (x as f64).powf(y as f64))
        .collect();
    let wants = [
        ("add", zip(|x, y| x + y)),
        ("mul", zip(|x, y| x * y)),
        ("div", zip(|x, y| x / y)),
        ("pow", pow),
        ("exp", un(&av, f64::exp)),
        ("sqrt", un(&pv, f64::sqrt)),
        ("silu", un(&av, |x| x * sigmoid(x))),
        ("gelu", un(&av, gelu_erf)),
        ("softmax", ref_softmax(&av, &shape, 1)),
    ];
    for ((name, want), t) in wants.iter().zip(&got) {
        assert_bf16(&format!("bf16 {name}"), t, &shape, want, 1e-5);
    }
}
