//! The one place the integration tests compare tensors.
//!
//! A fold with `f64::max` drops NaN (`NaN.max(0) == 0`), so an all-NaN output would score
//! 0 and pass: every comparison here looks at each element and fails where `got` is NaN or
//! infinite and `want` is finite. The measure also refuses a reference that is not finite:
//! references are computed by the same executor on random inputs, so a kernel that
//! returned NaN would put NaN on both sides, and NaN matching NaN would pass. Names,
//! shapes and dtypes are checked before any value; integer and bool tensors must agree
//! exactly, on their own values (an `i64` past 2^53 does not survive a trip through f64).
//!
//! Two measures:
//! - [`worst_relative`]: the largest `|got − want|` over the largest finite `|want|` of the
//!   output, for computations that round (model outputs, fused GEMMs);
//! - [`assert_bits_eq`]: bit-for-bit equality of every element, for rewrites that only
//!   move data or keep every sum in the same order, where any difference is a bug.

use weft::ir::{Tensor, TensorData};

/// Named outputs, as the executor returns them.
pub type Outputs = [(String, Tensor)];

/// Same number of outputs, same names in the same order, and per output the same shape
/// and dtype.
pub fn same_layout(want: &Outputs, got: &Outputs) -> Result<(), String> {
    if want.len() != got.len() {
        return Err(format!("{} outputs, expected {}", got.len(), want.len()));
    }
    for ((nw, w), (ng, g)) in want.iter().zip(got) {
        if nw != ng {
            return Err(format!("output `{ng}` where `{nw}` was expected"));
        }
        same_type(w, g).map_err(|e| format!("output `{nw}`: {e}"))?;
    }
    Ok(())
}

/// Same shape and dtype.
pub fn same_type(want: &Tensor, got: &Tensor) -> Result<(), String> {
    if want.shape() != got.shape() {
        return Err(format!(
            "shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    if want.dtype() != got.dtype() {
        return Err(format!("dtype {}, expected {}", got.dtype(), want.dtype()));
    }
    Ok(())
}

/// Whether one element pair agrees in finiteness: a finite `want` needs a finite `got`; a
/// NaN `want` needs a NaN `got`; an infinite `want` needs the same infinity.
fn finiteness_agrees(w: f64, g: f64) -> bool {
    if w.is_finite() {
        g.is_finite()
    } else if w.is_nan() {
        g.is_nan()
    } else {
        g == w
    }
}

/// The largest `|got − want|` over the largest finite `|want|` (element-wise relative
/// error would be dominated by values near zero), after checking shape and dtype,
/// finiteness element by element, and exact equality for integer and bool tensors.
/// A non-finite reference is an error: a rounding computation on random inputs has a
/// finite result, and where both sides come from one executor, a NaN in a shared kernel
/// would otherwise compare equal to itself. Deliberately non-finite values are compared
/// with [`bits_differ`].
pub fn relative_error(want: &Tensor, got: &Tensor) -> Result<f64, String> {
    same_type(want, got)?;
    if !matches!(want.data(), TensorData::Float(_)) {
        bits_differ(want, got).map_err(|e| format!("{e} (exact, {})", want.dtype()))?;
        return Ok(0.0);
    }
    let (w, g) = (want.to_f64_vec(), got.to_f64_vec());
    let mut scale = 0f64;
    for (i, (&a, &b)) in w.iter().zip(&g).enumerate() {
        if !a.is_finite() {
            return Err(format!(
                "the reference's element {i} is {a}: a reference on random inputs is finite (is a kernel both sides share broken?)"
            ));
        }
        if !finiteness_agrees(a, b) {
            return Err(format!("element {i} is {b}, expected {a}"));
        }
        if a.is_finite() {
            scale = scale.max(a.abs());
        }
    }
    // An all-zero reference: any difference is infinitely wrong, none is exact.
    let scale = scale.max(f64::MIN_POSITIVE);
    let mut worst = 0f64;
    for (&a, &b) in w.iter().zip(&g) {
        if a.is_finite() {
            let e = (a - b).abs() / scale;
            // Both finite, so `e` is a number; a NaN would still win, never vanish.
            if e.is_nan() || e > worst {
                worst = e;
            }
        }
    }
    Ok(worst)
}

/// [`worst_relative`] without panicking: the error says which output and element.
pub fn try_worst_relative(want: &Outputs, got: &Outputs) -> Result<f64, String> {
    same_layout(want, got)?;
    let mut worst = 0f64;
    for ((name, w), (_, g)) in want.iter().zip(got) {
        let e = relative_error(w, g).map_err(|e| format!("output `{name}`: {e}"))?;
        if e.is_nan() || e > worst {
            worst = e;
        }
    }
    Ok(worst)
}

/// The worst [`relative_error`] over every output; panics on a mismatch in names, shapes,
/// dtypes, finiteness or integer values.
#[track_caller]
pub fn worst_relative(want: &Outputs, got: &Outputs) -> f64 {
    try_worst_relative(want, got).unwrap_or_else(|e| panic!("{e}"))
}

/// The first element whose bits differ, if any, after checking shape and dtype.
pub fn bits_differ(want: &Tensor, got: &Tensor) -> Result<(), String> {
    same_type(want, got)?;
    let first = match (want.data(), got.data()) {
        (TensorData::Float(w), TensorData::Float(g)) => w
            .iter()
            .zip(g)
            .position(|(a, b)| a.to_bits() != b.to_bits())
            .map(|i| {
                let m = format!(
                    "{} (bits {:#010x}), expected {} (bits {:#010x})",
                    g[i],
                    g[i].to_bits(),
                    w[i],
                    w[i].to_bits()
                );
                (i, m)
            }),
        (TensorData::Int(w), TensorData::Int(g)) => w
            .iter()
            .zip(g)
            .position(|(a, b)| a != b)
            .map(|i| (i, format!("{}, expected {}", g[i], w[i]))),
        (TensorData::Bool(w), TensorData::Bool(g)) => w
            .iter()
            .zip(g)
            .position(|(a, b)| a != b)
            .map(|i| (i, format!("{}, expected {}", g[i], w[i]))),
        _ => return Err("element kinds differ".into()),
    };
    match first {
        None => Ok(()),
        Some((i, m)) => Err(format!("element {i} is {m}")),
    }
}

/// Every output equal bit for bit (NaN payloads and the sign of zero included).
#[track_caller]
pub fn assert_bits_eq(want: &Outputs, got: &Outputs) {
    if let Err(e) = same_layout(want, got) {
        panic!("{e}");
    }
    for ((name, w), (_, g)) in want.iter().zip(got) {
        if let Err(e) = bits_differ(w, g) {
            panic!("output `{name}` is not bit-identical: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft::ir::DType;

    fn f32s(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_f32(DType::F32, shape.to_vec(), v).unwrap()
    }

    fn named(t: Tensor) -> Vec<(String, Tensor)> {
        vec![("y".to_owned(), t)]
    }

    fn reference() -> Tensor {
        f32s(&[2, 2], vec![1.0, -2.0, 0.5, 3.0])
    }

    #[test]
    fn an_all_nan_output_fails() {
        let got = f32s(&[2, 2], vec![f32::NAN; 4]);
        let e = try_worst_relative(&named(reference()), &named(got.clone())).unwrap_err();
        assert!(e.contains("element 0 is NaN"), "{e}");
        assert!(bits_differ(&reference(), &got).is_err());
    }

    #[test]
    fn an_infinity_fails_where_the_reference_is_finite_and_the_reverse() {
        let got = f32s(&[2, 2], vec![1.0, -2.0, f32::INFINITY, 3.0]);
        let e = relative_error(&reference(), &got).unwrap_err();
        assert!(e.contains("element 2 is inf"), "{e}");
        // A finite value where the reference is infinite or NaN fails too.
        let want = f32s(&[2], vec![f32::NEG_INFINITY, f32::NAN]);
        assert!(relative_error(&want, &f32s(&[2], vec![-1e30, f32::NAN])).is_err());
        assert!(relative_error(&want, &f32s(&[2], vec![f32::NEG_INFINITY, 0.0])).is_err());
        assert!(relative_error(&want, &f32s(&[2], vec![f32::INFINITY, f32::NAN])).is_err());
        // Deliberately non-finite values are compared bit for bit.
        assert!(bits_differ(&want, &want.clone()).is_ok());
    }

    /// Both sides from one executor: a kernel returning NaN puts NaN in the reference
    /// too, and NaN matching NaN must not pass.
    #[test]
    fn a_non_finite_reference_fails_even_when_matched() {
        let want = f32s(&[2, 2], vec![1.0, f32::NAN, 0.5, 3.0]);
        let e = try_worst_relative(&named(want.clone()), &named(want.clone())).unwrap_err();
        assert!(e.contains("the reference's element 1 is NaN"), "{e}");
        let want = f32s(&[1], vec![f32::INFINITY]);
        assert!(relative_error(&want, &want.clone()).is_err());
    }

    #[test]
    fn integers_past_f64_precision_are_compared_exactly() {
        // 2^60 and 2^60 + 1 are the same f64.
        let want = Tensor::from_i64(DType::I64, vec![1], vec![1 << 60]).unwrap();
        let got = Tensor::from_i64(DType::I64, vec![1], vec![(1 << 60) + 1]).unwrap();
        let e = relative_error(&want, &got).unwrap_err();
        assert!(e.contains("element 0 is 1152921504606846977"), "{e}");
        assert_eq!(relative_error(&want, &want.clone()), Ok(0.0));
    }

    #[test]
    fn a_shape_mismatch_fails_even_with_the_same_elements() {
        let got = f32s(&[4], vec![1.0, -2.0, 0.5, 3.0]);
        let e = try_worst_relative(&named(reference()), &named(got.clone())).unwrap_err();
        assert!(e.contains("shape [4], expected [2, 2]"), "{e}");
        assert!(bits_differ(&reference(), &got).is_err());
    }

    #[test]
    fn a_dtype_mismatch_fails_even_with_the_same_values() {
        let got = Tensor::from_f32(DType::Bf16, vec![2, 2], vec![1.0, -2.0, 0.5, 3.0]).unwrap();
        let e = relative_error(&reference(), &got).unwrap_err();
        assert!(e.contains("dtype bf16, expected f32"), "{e}");
        assert!(bits_differ(&reference(), &got).is_err());
        let ints = Tensor::from_i64(DType::I64, vec![2], vec![1, 2]).unwrap();
        let i32s = Tensor::from_i64(DType::I32, vec![2], vec![1, 2]).unwrap();
        assert!(relative_error(&ints, &i32s).is_err());
    }

    #[test]
    fn names_and_counts_must_match() {
        let e = try_worst_relative(&named(reference()), &[]).unwrap_err();
        assert!(e.contains("0 outputs, expected 1"), "{e}");
        let other = vec![("z".to_owned(), reference())];
        let e = try_worst_relative(&named(reference()), &other).unwrap_err();
        assert!(e.contains("`z` where `y`"), "{e}");
    }

    #[test]
    fn integers_must_agree_exactly_and_floats_are_measured_against_the_largest() {
        let want = Tensor::from_i64(DType::I64, vec![2], vec![1_000_000_000, 2]).unwrap();
        let got = Tensor::from_i64(DType::I64, vec![2], vec![1_000_000_000, 3]).unwrap();
        assert!(relative_error(&want, &got).is_err());
        let got = f32s(&[2, 2], vec![1.0, -2.0, 0.5, 3.003]);
        let e = relative_error(&reference(), &got).unwrap();
        assert!((e - 1e-3).abs() < 1e-6, "{e}");
    }

    #[test]
    fn bits_distinguish_what_equality_does_not() {
        let zero = f32s(&[1], vec![0.0]);
        let neg = f32s(&[1], vec![-0.0]);
        assert_eq!(relative_error(&zero, &neg), Ok(0.0));
        let e = bits_differ(&zero, &neg).unwrap_err();
        assert!(e.contains("element 0 is -0"), "{e}");
        let one_ulp = f32s(&[1], vec![f32::from_bits(1.0f32.to_bits() + 1)]);
        assert!(bits_differ(&f32s(&[1], vec![1.0]), &one_ulp).is_err());
        assert_bits_eq(&named(reference()), &named(reference()));
    }
}
