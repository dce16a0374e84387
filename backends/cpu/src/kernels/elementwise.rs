//! Elementwise ops with NumPy broadcasting, and casts.

use weft_ir::{DType, GeluApprox, Op, Tensor, TensorData, round_to};

use super::{KResult, OutType, float_out, floats, strided_indices};
use crate::materialize::strides;

/// For each output element, the flat index of the input element it reads.
fn broadcast_indices(in_shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let offset = out_shape.len() - in_shape.len();
    let in_strides = strides(in_shape);
    let steps: Vec<usize> = (0..out_shape.len())
        .map(|d| {
            if d < offset || in_shape[d - offset] == 1 {
                0
            } else {
                in_strides[d - offset]
            }
        })
        .collect();
    strided_indices(out_shape, &steps)
}

/// Applies `f` to pairs of broadcast elements.
fn zip_broadcast<T: Copy, R>(
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
    out_shape: &[usize],
    f: impl Fn(T, T) -> R,
) -> Vec<R> {
    if a_shape == out_shape && b_shape == out_shape {
        return a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
    }
    if a_shape == out_shape && b.len() == 1 {
        return a.iter().map(|&x| f(x, b[0])).collect();
    }
    if a_shape == out_shape && out_shape.ends_with(b_shape) {
        let n = b.len();
        return a.iter().enumerate().map(|(i, &x)| f(x, b[i % n])).collect();
    }
    let ai = broadcast_indices(a_shape, out_shape);
    let bi = broadcast_indices(b_shape, out_shape);
    ai.iter().zip(&bi).map(|(&i, &j)| f(a[i], b[j])).collect()
}

/// `t` broadcast to `shape` (a copy).
pub fn broadcast_to(t: &Tensor, shape: &[usize]) -> Vec<f32> {
    let data = t.as_f32().unwrap_or(&[]);
    if t.shape() == shape {
        return data.to_vec();
    }
    broadcast_indices(t.shape(), shape)
        .into_iter()
        .map(|i| data[i])
        .collect()
}

pub fn binary(op: &Op, a: &Tensor, b: &Tensor, out: &OutType) -> KResult<Tensor> {
    let (sa, sb, so) = (a.shape(), b.shape(), &out.shape[..]);
    match (a.data(), b.data()) {
        (TensorData::Float(x), TensorData::Float(y)) => {
            let f: fn(f32, f32) -> f32 = match op {
                Op::Add => |p, q| p + q,
                Op::Sub => |p, q| p - q,
                Op::Mul => |p, q| p * q,
                Op::Div => |p, q| p / q,
                _ => f32::powf,
            };
            float_out(out, zip_broadcast(x, sa, y, sb, so, f))
        }
        (TensorData::Int(x), TensorData::Int(y)) => {
            let values: Vec<Option<i64>> = match op {
                Op::Add => zip_broadcast(x, sa, y, sb, so, |p: i64, q| Some(p.wrapping_add(q))),
                Op::Sub => zip_broadcast(x, sa, y, sb, so, |p: i64, q| Some(p.wrapping_sub(q))),
                Op::Mul => zip_broadcast(x, sa, y, sb, so, |p: i64, q| Some(p.wrapping_mul(q))),
                // Integer division truncates toward zero (as in C and ONNX).
                _ => zip_broadcast(x, sa, y, sb, so, |p: i64, q| {
                    (q != 0).then(|| p.wrapping_div(q))
                }),
            };
            let values: Option<Vec<i64>> = values.into_iter().collect();
            let mut values = values.ok_or("integer division by zero")?;
            if out.dtype == DType::I32 {
                for v in &mut values {
                    *v = *v as i32 as i64; // wrap like i32 arithmetic
                }
            }
            Tensor::from_i64(out.dtype, out.shape.clone(), values).map_err(|e| e.to_string())
        }
        _ => Err(format!(
            "{} needs operands of one kind, got {} and {}",
            op.name(),
            a.dtype(),
            b.dtype()
        )),
    }
}

fn erf(x: f32) -> f32 {
    libm::erff(x)
}

fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    0.5 * x * (1.0 + (C * (x + 0.044715 * x * x * x)).tanh())
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

pub fn unary(op: &Op, x: &Tensor, out: &OutType) -> KResult<Tensor> {
    if let (Op::Neg, TensorData::Int(v)) = (op, x.data()) {
        let wrap = |p: i64| {
            if out.dtype == DType::I32 {
                (p as i32).wrapping_neg() as i64
            } else {
                p.wrapping_neg()
            }
        };
        return Tensor::from_i64(
            out.dtype,
            out.shape.clone(),
            v.iter().map(|&p| wrap(p)).collect(),
        )
        .map_err(|e| e.to_string());
    }
    let f: fn(f32) -> f32 = match op {
        Op::Neg => |p| -p,
        Op::Exp => f32::exp,
        Op::Sqrt => f32::sqrt,
        Op::Rsqrt => |p| 1.0 / p.sqrt(),
        Op::Reciprocal => |p| 1.0 / p,
        Op::Silu => |p| p * sigmoid(p),
        Op::Gelu {
            approximate: GeluApprox::Erf,
        } => gelu_erf,
        Op::Gelu {
            approximate: GeluApprox::Tanh,
        } => gelu_tanh,
        Op::Relu => |p| p.max(0.0),
        Op::Sigmoid => sigmoid,
        _ => f32::tanh,
    };
    float_out(out, floats(x)?.iter().map(|&p| f(p)).collect())
}

pub fn cast(x: &Tensor, out: &OutType) -> KResult<Tensor> {
    let shape = out.shape.clone();
    let to = out.dtype;
    let t = match (x.data(), to) {
        (TensorData::Float(v), d) if d.is_float() => {
            Tensor::from_f32(d, shape, v.iter().map(|&p| round_to(d, p)).collect())
        }
        (TensorData::Float(v), DType::Bool) => {
            Tensor::from_bool(shape, v.iter().map(|&p| p != 0.0).collect())
        }
        (TensorData::Float(v), d) => {
            // Float to integer truncates toward zero; NaN and out-of-range values are errors.
            let mut ints = Vec::with_capacity(v.len());
            for &p in v {
                let t = p.trunc();
                let fits = if d == DType::I32 {
                    t >= i32::MIN as f32 && t <= i32::MAX as f32
                } else {
                    t >= i64::MIN as f32 && t < i64::MAX as f32
                };
                if !fits {
                    return Err(format!("cannot cast {p} to {d}"));
                }
                ints.push(t as i64);
            }
            Tensor::from_i64(d, shape, ints)
        }
        (TensorData::Int(v), d) if d.is_float() => {
            Tensor::from_f32(d, shape, v.iter().map(|&p| p as f32).collect())
        }
        (TensorData::Int(v), DType::Bool) => {
            Tensor::from_bool(shape, v.iter().map(|&p| p != 0).collect())
        }
        (TensorData::Int(v), d) => Tensor::from_i64(
            d,
            shape,
            v.iter()
                .map(|&p| if d == DType::I32 { p as i32 as i64 } else { p })
                .collect(),
        ),
        (TensorData::Bool(v), DType::Bool) => Tensor::from_bool(shape, v.clone()),
        (TensorData::Bool(v), d) if d.is_float() => {
            Tensor::from_f32(d, shape, v.iter().map(|&p| p as u8 as f32).collect())
        }
        (TensorData::Bool(v), d) => {
            Tensor::from_i64(d, shape, v.iter().map(|&p| p as i64).collect())
        }
    };
    t.map_err(|e| e.to_string())
}

/// A tensor's values broadcast to `shape`, for any element kind.
pub struct Broadcast {
    data: TensorData,
}

impl Broadcast {
    pub fn floats(self) -> Vec<f32> {
        match self.data {
            TensorData::Float(v) => v,
            TensorData::Int(v) => v.into_iter().map(|x| x as f32).collect(),
            TensorData::Bool(v) => v.into_iter().map(|x| x as u8 as f32).collect(),
        }
    }

    pub fn bools(self) -> Vec<bool> {
        match self.data {
            TensorData::Bool(v) => v,
            TensorData::Float(v) => v.into_iter().map(|x| x != 0.0).collect(),
            TensorData::Int(v) => v.into_iter().map(|x| x != 0).collect(),
        }
    }
}

/// `t` broadcast to `shape`, keeping its element kind.
pub fn broadcast_to_any(t: &Tensor, shape: &[usize]) -> Broadcast {
    let idx = broadcast_indices(t.shape(), shape);
    let data = match t.data() {
        TensorData::Float(v) => TensorData::Float(idx.iter().map(|&i| v[i]).collect()),
        TensorData::Int(v) => TensorData::Int(idx.iter().map(|&i| v[i]).collect()),
        TensorData::Bool(v) => TensorData::Bool(idx.iter().map(|&i| v[i]).collect()),
    };
    Broadcast { data }
}

/// `x` broadcast to the output shape (`expand`).
pub fn expand(x: &Tensor, out: &OutType) -> KResult<Tensor> {
    let b = broadcast_to_any(x, &out.shape);
    let t = match b.data {
        TensorData::Float(v) => Tensor::from_f32(out.dtype, out.shape.clone(), v),
        TensorData::Int(v) => Tensor::from_i64(out.dtype, out.shape.clone(), v),
        TensorData::Bool(v) => Tensor::from_bool(out.shape.clone(), v),
    };
    t.map_err(|e| e.to_string())
}

/// `cond ? a : b` with all three broadcast to the output shape (`where`).
pub fn select(cond: &Tensor, a: &Tensor, b: &Tensor, out: &OutType) -> KResult<Tensor> {
    let c = broadcast_to_any(cond, &out.shape).bools();
    let (a, b) = (
        broadcast_to_any(a, &out.shape).data,
        broadcast_to_any(b, &out.shape).data,
    );
    fn pick<T: Copy>(c: &[bool], x: &[T], y: &[T]) -> Vec<T> {
        c.iter()
            .zip(x.iter().zip(y))
            .map(|(&k, (&p, &q))| if k { p } else { q })
            .collect()
    }
    let t = match (a, b) {
        (TensorData::Float(x), TensorData::Float(y)) => {
            Tensor::from_f32(out.dtype, out.shape.clone(), pick(&c, &x, &y))
        }
        (TensorData::Int(x), TensorData::Int(y)) => {
            Tensor::from_i64(out.dtype, out.shape.clone(), pick(&c, &x, &y))
        }
        (TensorData::Bool(x), TensorData::Bool(y)) => {
            Tensor::from_bool(out.shape.clone(), pick(&c, &x, &y))
        }
        _ => return Err("the two branches must be of one kind".into()),
    };
    t.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_indices_follow_numpy() {
        // [3] against [2, 3]: rows repeat.
        assert_eq!(broadcast_indices(&[3], &[2, 3]), vec![0, 1, 2, 0, 1, 2]);
        // [2, 1] against [2, 3]: columns repeat.
        assert_eq!(broadcast_indices(&[2, 1], &[2, 3]), vec![0, 0, 0, 1, 1, 1]);
        assert_eq!(broadcast_indices(&[1], &[2, 2]), vec![0, 0, 0, 0]);
    }
}
