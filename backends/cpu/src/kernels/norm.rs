//! Softmax, normalisations and rotary embedding.

use weft_ir::Tensor;

use super::{KResult, OutType, around, axis, broadcast_to, float_out, floats, ints};

pub fn softmax(x: &Tensor, dim: i64, out: &OutType) -> KResult<Tensor> {
    let v = floats(x)?;
    let d = axis(dim, x.shape().len());
    let (outer, len, inner) = around(x.shape(), d);
    let mut y = vec![0f32; v.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * len + j) * inner + i;
            let max = (0..len).map(|j| v[at(j)]).fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for j in 0..len {
                let e = (v[at(j)] - max).exp();
                y[at(j)] = e;
                sum += e;
            }
            for j in 0..len {
                y[at(j)] /= sum;
            }
        }
    }
    float_out(out, y)
}

pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, out: &OutType) -> KResult<Tensor> {
    let (v, w) = (floats(x)?, floats(w)?);
    let h = w.len();
    let mut y = Vec::with_capacity(v.len());
    for row in v.chunks_exact(h) {
        let ms = row.iter().map(|&p| p * p).sum::<f32>() / h as f32;
        let r = 1.0 / (ms + eps as f32).sqrt();
        y.extend(row.iter().zip(w).map(|(&p, &g)| p * r * g));
    }
    float_out(out, y)
}

pub fn layer_norm(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    eps: f64,
    out: &OutType,
) -> KResult<Tensor> {
    let (v, w) = (floats(x)?, floats(w)?);
    let b = b.map(floats).transpose()?;
    let h = w.len();
    let mut y = Vec::with_capacity(v.len());
    for row in v.chunks_exact(h) {
        let mean = row.iter().sum::<f32>() / h as f32;
        let var = row.iter().map(|&p| (p - mean) * (p - mean)).sum::<f32>() / h as f32;
        let r = 1.0 / (var + eps as f32).sqrt();
        for (j, &p) in row.iter().enumerate() {
            let n = (p - mean) * r * w[j];
            y.push(match b {
                Some(b) => n + b[j],
                None => n,
            });
        }
    }
    float_out(out, y)
}

pub fn rope_cache(
    positions: &Tensor,
    theta: f64,
    dim: u64,
    out: &[OutType],
) -> KResult<Vec<Tensor>> {
    let pos = ints(positions)?;
    let half = (dim / 2) as usize;
    // Angles in f64, then rounded once, so the tables are as exact as f32 allows.
    let inv_freq: Vec<f64> = (0..half)
        .map(|i| theta.powf(-2.0 * i as f64 / dim as f64))
        .collect();
    let mut cos = Vec::with_capacity(pos.len() * half);
    let mut sin = Vec::with_capacity(pos.len() * half);
    for &p in pos {
        for &f in &inv_freq {
            let a = p as f64 * f;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    Ok(vec![float_out(&out[0], cos)?, float_out(&out[1], sin)?])
}

pub fn rope(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    interleaved: bool,
    out: &OutType,
) -> KResult<Tensor> {
    let v = floats(x)?;
    let d = *x.shape().last().unwrap_or(&0);
    let h = d / 2;
    let mut half_shape = x.shape().to_vec();
    if let Some(last) = half_shape.last_mut() {
        *last = h;
    }
    let (c, s) = (
        broadcast_to(cos, &half_shape),
        broadcast_to(sin, &half_shape),
    );
    let mut y = vec![0f32; v.len()];
    for (r, row) in v.chunks_exact(d).enumerate() {
        let (cr, sr) = (&c[r * h..(r + 1) * h], &s[r * h..(r + 1) * h]);
        let yr = &mut y[r * d..(r + 1) * d];
        for i in 0..h {
            let (a, b) = if interleaved {
                (2 * i, 2 * i + 1)
            } else {
                (i, i + h)
            };
            yr[a] = row[a] * cr[i] - row[b] * sr[i];
            yr[b] = row[b] * cr[i] + row[a] * sr[i];
        }
    }
    float_out(out, y)
}
