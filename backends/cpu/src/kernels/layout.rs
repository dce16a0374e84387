//! Data movement (gather, transpose, concat, split, slice), reductions and top-k.
//!
//! Movement ops compute the flat source index of every output element and copy through
//! [`take`], which works for every element kind alike.

use weft_ir::{DType, ReduceKind, Tensor, TensorData};

use super::{KResult, OutType, around, axis, float_out, ints, strided_indices};
use crate::materialize::strides;

/// A tensor of `shape` whose element `n` is `t`'s element `idx[n]`.
pub fn take(t: &Tensor, idx: &[usize], shape: Vec<usize>) -> Tensor {
    let r = match t.data() {
        TensorData::Float(v) => {
            Tensor::from_f32(t.dtype(), shape, idx.iter().map(|&i| v[i]).collect())
        }
        TensorData::Int(v) => {
            Tensor::from_i64(t.dtype(), shape, idx.iter().map(|&i| v[i]).collect())
        }
        TensorData::Bool(v) => Tensor::from_bool(shape, idx.iter().map(|&i| v[i]).collect()),
    };
    r.expect("index maps are built for the output shape")
}

pub fn transpose(x: &Tensor, perm: &[usize], out: &OutType) -> Tensor {
    let in_strides = strides(x.shape());
    let out_shape = &out.shape;
    let steps: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    take(x, &strided_indices(out_shape, &steps), out_shape.clone())
}

/// Inputs joined along `dim`.
pub fn concat(inputs: &[&Tensor], dim: i64, out: &OutType) -> Tensor {
    let d = axis(dim, out.shape.len());
    let (outer, _, inner) = around(&out.shape, d);
    let mut parts: Vec<(usize, usize)> = Vec::new(); // (input, flat index)
    for o in 0..outer {
        for (k, t) in inputs.iter().enumerate() {
            let len = t.shape()[d];
            for i in 0..len * inner {
                parts.push((k, o * len * inner + i));
            }
        }
    }
    match inputs[0].data() {
        TensorData::Float(_) => {
            let data = parts
                .iter()
                .map(|&(k, i)| inputs[k].as_f32().expect("same kind")[i])
                .collect();
            Tensor::from_f32(out.dtype, out.shape.clone(), data)
        }
        TensorData::Int(_) => {
            let data = parts
                .iter()
                .map(|&(k, i)| inputs[k].as_i64().expect("same kind")[i])
                .collect();
            Tensor::from_i64(out.dtype, out.shape.clone(), data)
        }
        TensorData::Bool(_) => {
            let data = parts
                .iter()
                .map(|&(k, i)| inputs[k].as_bool().expect("same kind")[i])
                .collect();
            Tensor::from_bool(out.shape.clone(), data)
        }
    }
    .expect("concat fills the output shape")
}

/// Elements `start..start+len` along `d`.
fn range_along(x: &Tensor, d: usize, start: usize, len: usize) -> Tensor {
    let (outer, full, inner) = around(x.shape(), d);
    let mut idx = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let base = o * full * inner + start * inner;
        idx.extend(base..base + len * inner);
    }
    let mut shape = x.shape().to_vec();
    shape[d] = len;
    take(x, &idx, shape)
}

/// Piece `i` of `n` equal pieces along `dim`.
pub fn chunk(x: &Tensor, dim: i64, n: usize, i: usize) -> Tensor {
    let d = axis(dim, x.shape().len());
    let len = x.shape()[d] / n;
    range_along(x, d, i * len, len)
}

pub fn split(x: &Tensor, dim: i64, out: &[OutType]) -> Vec<Tensor> {
    let d = axis(dim, x.shape().len());
    let mut start = 0;
    out.iter()
        .map(|o| {
            let len = o.shape[d];
            let t = range_along(x, d, start, len);
            start += len;
            t
        })
        .collect()
}

pub fn slice(x: &Tensor, dim: i64, start: i64, out: &OutType) -> Tensor {
    let d = axis(dim, x.shape().len());
    let len = x.shape()[d] as i64;
    let s = if start < 0 { start + len } else { start }.clamp(0, len) as usize;
    range_along(x, d, s, out.shape[d])
}

pub fn gather(data: &Tensor, indices: &Tensor, dim: i64, out: &OutType) -> KResult<Tensor> {
    let d = axis(dim, data.shape().len());
    let (outer, len, inner) = around(data.shape(), d);
    let idx = ints(indices)?;
    let mut resolved = Vec::with_capacity(idx.len());
    for &i in idx {
        // Negative indices count from the end, as in NumPy and ONNX.
        let j = if i < 0 { i + len as i64 } else { i };
        if !(0..len as i64).contains(&j) {
            return Err(format!(
                "index {i} is out of range for a dimension of size {len}"
            ));
        }
        resolved.push(j as usize);
    }
    let mut src = Vec::with_capacity(outer * resolved.len() * inner);
    for o in 0..outer {
        for &j in &resolved {
            let base = (o * len + j) * inner;
            src.extend(base..base + inner);
        }
    }
    Ok(take(data, &src, out.shape.clone()))
}

pub fn reduce(x: &Tensor, kind: ReduceKind, axes: &[i64], out: &OutType) -> KResult<Tensor> {
    let rank = x.shape().len();
    let mut reduced = vec![false; rank];
    for &a in axes {
        reduced[axis(a, rank)] = true;
    }
    // Output index of every input element: drop (or zero) the reduced dims.
    let kept: Vec<usize> = x
        .shape()
        .iter()
        .zip(&reduced)
        .map(|(&s, &r)| if r { 1 } else { s })
        .collect();
    let kept_strides = strides(&kept);
    let in_shape = x.shape();
    let total = x.numel();
    let out_n: usize = kept.iter().product();
    let mut idx = vec![0usize; rank];
    let mut targets = Vec::with_capacity(total);
    for n in 0..total {
        if n > 0 {
            for d in (0..rank).rev() {
                idx[d] += 1;
                if idx[d] < in_shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        targets.push(
            idx.iter()
                .zip(&reduced)
                .zip(&kept_strides)
                .map(|((&i, &r), &s)| if r { 0 } else { i * s })
                .sum::<usize>(),
        );
    }
    let count = (total / out_n.max(1)) as f32;
    match x.data() {
        TensorData::Float(v) => {
            let init = if kind == ReduceKind::Max {
                f32::NEG_INFINITY
            } else {
                0.0
            };
            let mut acc = vec![init; out_n];
            for (&t, &p) in targets.iter().zip(v) {
                acc[t] = if kind == ReduceKind::Max {
                    super::max_nan(acc[t], p)
                } else {
                    acc[t] + p
                };
            }
            if kind == ReduceKind::Mean {
                acc.iter_mut().for_each(|a| *a /= count);
            }
            float_out(out, acc)
        }
        TensorData::Int(v) => {
            let init = if kind == ReduceKind::Max { i64::MIN } else { 0 };
            let mut acc = vec![init; out_n];
            for (&t, &p) in targets.iter().zip(v) {
                acc[t] = if kind == ReduceKind::Max {
                    acc[t].max(p)
                } else {
                    acc[t].wrapping_add(p)
                };
            }
            if out.dtype == DType::I32 {
                acc.iter_mut().for_each(|a| *a = *a as i32 as i64);
            }
            Tensor::from_i64(out.dtype, out.shape.clone(), acc).map_err(|e| e.to_string())
        }
        TensorData::Bool(_) => Err("bool values cannot be reduced".into()),
    }
}

/// Orders positions along a row: larger (or smaller) values first, ties by lower index,
/// NaN above every number (as `torch.topk` does).
fn rank_row(values: &[f64], largest: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (values[a], values[b]);
        let c = match (x.is_nan(), y.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ => x.partial_cmp(&y).expect("no NaN here"),
        };
        let c = if largest { c.reverse() } else { c };
        c.then(a.cmp(&b))
    });
    order
}

pub fn top_k(x: &Tensor, dim: i64, largest: bool, out: &[OutType]) -> KResult<Vec<Tensor>> {
    let d = axis(dim, x.shape().len());
    let (outer, len, inner) = around(x.shape(), d);
    let k = out[0].shape[d];
    let all = x.to_f64_vec();
    let mut src = vec![0usize; outer * k * inner];
    let mut pos = vec![0i64; outer * k * inner];
    for o in 0..outer {
        for i in 0..inner {
            let row: Vec<f64> = (0..len).map(|j| all[(o * len + j) * inner + i]).collect();
            for (slot, &j) in rank_row(&row, largest).iter().take(k).enumerate() {
                let at = (o * k + slot) * inner + i;
                src[at] = (o * len + j) * inner + i;
                pos[at] = j as i64;
            }
        }
    }
    Ok(vec![
        take(x, &src, out[0].shape.clone()),
        Tensor::from_i64(DType::I64, out[1].shape.clone(), pos).map_err(|e| e.to_string())?,
    ])
}

/// Row ranking shared with MoE routing.
pub fn top_positions(row: &[f32], k: usize) -> Vec<usize> {
    let values: Vec<f64> = row.iter().map(|&v| v as f64).collect();
    rank_row(&values, true).into_iter().take(k).collect()
}

/// A lookup in this device's rows `[me·n, (me+1)·n)` of a row-split table (`data [n, ..]`,
/// `size` devices): global indices outside those rows give zeros.
pub fn sharded_gather(
    data: &Tensor,
    indices: &Tensor,
    me: usize,
    size: usize,
    out: &OutType,
) -> KResult<Tensor> {
    let (_, n, inner) = around(data.shape(), 0);
    let total = (n * size) as i64;
    let idx = ints(indices)?;
    let mut rows = Vec::with_capacity(idx.len());
    for &i in idx {
        let j = if i < 0 { i + total } else { i };
        if !(0..total).contains(&j) {
            return Err(format!(
                "index {i} is out of range for a table of {total} rows"
            ));
        }
        let local = j - (me * n) as i64;
        rows.push((0..n as i64).contains(&local).then_some(local as usize));
    }
    let shape = out.shape.clone();
    let t = match data.data() {
        TensorData::Float(v) => {
            let mut o = vec![0f32; rows.len() * inner];
            for (r, row) in rows.iter().enumerate() {
                if let Some(row) = row {
                    o[r * inner..][..inner].copy_from_slice(&v[row * inner..][..inner]);
                }
            }
            Tensor::from_f32(data.dtype(), shape, o)
        }
        TensorData::Int(v) => {
            let mut o = vec![0i64; rows.len() * inner];
            for (r, row) in rows.iter().enumerate() {
                if let Some(row) = row {
                    o[r * inner..][..inner].copy_from_slice(&v[row * inner..][..inner]);
                }
            }
            Tensor::from_i64(data.dtype(), shape, o)
        }
        TensorData::Bool(_) => return Err("a bool table cannot be summed across devices".into()),
    };
    t.map_err(|e| e.to_string())
}
