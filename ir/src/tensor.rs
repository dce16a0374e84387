//! Concrete tensors: what executors compute on and what users feed in and read out.
//!
//! Floating values of every float dtype are held as `f32` that are *exactly
//! representable* in the value's dtype: a bf16 tensor holds f32 numbers with the low 16
//! bits clear, and so on. Executors compute in f32 and call [`round_to`] on results, which
//! emulates the narrow storage types exactly. Integers are held as `i64` (an i32 tensor's
//! values stay in i32 range), bools as `bool`.

use std::fmt;

use crate::types::DType;

/// The elements of a tensor, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    Float(Vec<f32>),
    Int(Vec<i64>),
    Bool(Vec<bool>),
}

/// A concrete, row-major tensor.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: TensorData,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({}{:?}", self.dtype, self.shape)?;
        match &self.data {
            TensorData::Float(v) => write!(f, ", {:?}", &v[..v.len().min(8)])?,
            TensorData::Int(v) => write!(f, ", {:?}", &v[..v.len().min(8)])?,
            TensorData::Bool(v) => write!(f, ", {:?}", &v[..v.len().min(8)])?,
        }
        f.write_str(")")
    }
}

/// Why a tensor could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    #[error("{got} values given for shape {shape:?} ({want} elements)")]
    Length {
        shape: Vec<usize>,
        want: usize,
        got: usize,
    },
    #[error("{dtype} data cannot be stored as {kind} values")]
    Kind { dtype: DType, kind: &'static str },
    #[error("value {value} does not fit in {dtype}")]
    Range { value: i64, dtype: DType },
    #[error(transparent)]
    Alloc(#[from] crate::alloc::AllocError),
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// A float tensor; values are rounded to `dtype`.
    pub fn from_f32(
        dtype: DType,
        shape: Vec<usize>,
        mut data: Vec<f32>,
    ) -> Result<Tensor, TensorError> {
        if !dtype.is_float() {
            return Err(TensorError::Kind {
                dtype,
                kind: "float",
            });
        }
        check_len(&shape, data.len())?;
        round_slice(dtype, &mut data);
        Ok(Tensor {
            dtype,
            shape,
            data: TensorData::Float(data),
        })
    }

    /// An integer tensor; i32 values must be in range.
    pub fn from_i64(
        dtype: DType,
        shape: Vec<usize>,
        data: Vec<i64>,
    ) -> Result<Tensor, TensorError> {
        if !dtype.is_int() {
            return Err(TensorError::Kind {
                dtype,
                kind: "integer",
            });
        }
        check_len(&shape, data.len())?;
        if dtype == DType::I32
            && let Some(&value) = data.iter().find(|v| i32::try_from(**v).is_err())
        {
            return Err(TensorError::Range { value, dtype });
        }
        Ok(Tensor {
            dtype,
            shape,
            data: TensorData::Int(data),
        })
    }

    /// A bool tensor.
    pub fn from_bool(shape: Vec<usize>, data: Vec<bool>) -> Result<Tensor, TensorError> {
        check_len(&shape, data.len())?;
        Ok(Tensor {
            dtype: DType::Bool,
            shape,
            data: TensorData::Bool(data),
        })
    }

    /// A tensor of `dtype` from f64 values (whole numbers for integer dtypes, 0/1 for
    /// bool), as initialisers produce them. The buffer is allocated fallibly
    /// ([`TensorError::Alloc`]), since initialisers and inputs have user-chosen sizes.
    pub fn from_f64(
        dtype: DType,
        shape: Vec<usize>,
        values: impl Iterator<Item = f64>,
    ) -> Result<Tensor, TensorError> {
        use crate::alloc::try_collect;
        match dtype {
            DType::Bool => Tensor::from_bool(shape, try_collect(values.map(|v| v != 0.0))?),
            DType::I64 | DType::I32 => {
                Tensor::from_i64(dtype, shape, try_collect(values.map(|v| v as i64))?)
            }
            _ => Tensor::from_f32(dtype, shape, try_collect(values.map(|v| v as f32))?),
        }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The float values, if this is a float tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::Float(v) => Some(v),
            _ => None,
        }
    }

    /// The integer values, if this is an integer tensor.
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::Int(v) => Some(v),
            _ => None,
        }
    }

    /// The bool values, if this is a bool tensor.
    pub fn as_bool(&self) -> Option<&[bool]> {
        match &self.data {
            TensorData::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The same elements under another shape of equal element count.
    pub fn reshaped(mut self, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        check_len(&shape, self.numel())?;
        self.shape = shape;
        Ok(self)
    }

    /// Every element as f64 (bools as 0/1), for comparisons and printing.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            TensorData::Float(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::Int(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
        }
    }
}

fn check_len(shape: &[usize], got: usize) -> Result<(), TensorError> {
    let want = numel(shape);
    if want == got {
        Ok(())
    } else {
        Err(TensorError::Length {
            shape: shape.to_vec(),
            want,
            got,
        })
    }
}

/// Rounds an f32 to the nearest value of a float dtype (ties to even), as the hardware
/// conversion does. f8e4m3 (the "fn" variant: no infinities, max 448) saturates to ±448,
/// as ONNX's `Cast` does by default; NaN stays NaN.
pub fn round_to(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::Bf16 => half::bf16::from_f32(x).to_f32(),
        DType::F16 => half::f16::from_f32(x).to_f32(),
        DType::F8e4m3 => round_f8e4m3(x),
        _ => x,
    }
}

/// [`round_to`] over a slice, in place.
pub fn round_slice(dtype: DType, data: &mut [f32]) {
    match dtype {
        DType::Bf16 | DType::F16 | DType::F8e4m3 => {
            for x in data {
                *x = round_to(dtype, *x);
            }
        }
        _ => {}
    }
}

/// Largest finite f8e4m3 value.
pub const F8E4M3_MAX: f32 = 448.0;

fn round_f8e4m3(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    if a >= F8E4M3_MAX {
        return F8E4M3_MAX.copysign(x);
    }
    // Spacing of representable values: 2^(e-3) for normals (e >= -6), 2^-9 below.
    let e = if a == 0.0 {
        -6
    } else {
        (a.log2().floor() as i32).max(-6)
    };
    let step = 2f32.powi(e - 3);
    let q = a / step; // exact: division by a power of two
    let r = q.round_ties_even() * step;
    r.min(F8E4M3_MAX).copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every finite f8e4m3 value, decoded from its bits (sign, 4 exponent bits with bias 7,
    /// 3 mantissa bits; exponent 0 is subnormal; S.1111.111 is NaN).
    fn f8_values() -> Vec<f32> {
        let mut out = Vec::new();
        for bits in 0u8..=0x7e {
            let exp = (bits >> 3) as i32;
            let man = (bits & 7) as f32;
            let v = if exp == 0 {
                man / 8.0 * 2f32.powi(-6)
            } else {
                (1.0 + man / 8.0) * 2f32.powi(exp - 7)
            };
            out.push(v);
            out.push(-v);
        }
        out
    }

    #[test]
    fn f8_representable_values_are_fixed_points() {
        for v in f8_values() {
            assert_eq!(round_to(DType::F8e4m3, v), v, "{v}");
        }
        assert_eq!(f8_values().iter().cloned().fold(0f32, f32::max), 448.0);
    }

    #[test]
    fn f8_rounds_to_nearest_even_and_saturates() {
        let mut values = f8_values();
        values.sort_by(f32::total_cmp);
        values.dedup();
        for pair in values.windows(2) {
            let (lo, hi) = (pair[0], pair[1]);
            let mid = (lo + hi) / 2.0;
            let even = |v: f32| {
                // the one whose mantissa bits end in 0
                let k = (v.abs() / 2f32.powi((v.abs().log2().floor() as i32).max(-6) - 3)).round()
                    as i64;
                k % 2 == 0
            };
            let expect = if even(lo) { lo } else { hi };
            assert_eq!(
                round_to(DType::F8e4m3, mid),
                expect,
                "midpoint of {lo} and {hi}"
            );
            assert_eq!(round_to(DType::F8e4m3, lo + (hi - lo) * 0.25), lo);
            assert_eq!(round_to(DType::F8e4m3, lo + (hi - lo) * 0.75), hi);
        }
        assert_eq!(round_to(DType::F8e4m3, 1e6), 448.0);
        assert_eq!(round_to(DType::F8e4m3, -500.0), -448.0);
        assert!(round_to(DType::F8e4m3, f32::NAN).is_nan());
    }

    #[test]
    fn bf16_and_f16_round_like_half() {
        let x = 1.0 + 2f32.powi(-9); // between bf16 neighbours 1 and 1+2^-7: rounds to 1
        assert_eq!(round_to(DType::Bf16, x), 1.0);
        assert_eq!(round_to(DType::F16, x), x);
        assert_eq!(round_to(DType::F16, 70000.0), f32::INFINITY);
    }

    #[test]
    fn constructors_check_lengths_and_ranges() {
        assert!(Tensor::from_f32(DType::F32, vec![2, 2], vec![1.0; 3]).is_err());
        assert!(Tensor::from_i64(DType::I32, vec![1], vec![1 << 40]).is_err());
        let t = Tensor::from_f32(DType::Bf16, vec![1], vec![1.0 + 2f32.powi(-9)]).unwrap();
        assert_eq!(t.as_f32(), Some(&[1.0f32][..]));
    }
}
