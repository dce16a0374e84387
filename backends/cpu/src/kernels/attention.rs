//! Scaled dot-product attention, computed blockwise with an online softmax (as
//! FlashAttention does): for each query row only one block of `BLOCK` scores exists at a
//! time, so memory stays flat however long the sequence is.

use weft_ir::{Tensor, TensorData};

use super::{KResult, OutType, float_out, floats};
use crate::kernels::elementwise::broadcast_to_any;

/// Keys scored at once per query row.
const BLOCK: usize = 64;

/// How the optional mask input applies to a score.
enum Mask {
    None,
    /// `true` keeps the score.
    Keep(Vec<bool>),
    /// Added to the score.
    Bias(Vec<f32>),
}

pub fn attention(
    inputs: &[&Tensor],
    causal: bool,
    scale: Option<f64>,
    out: &OutType,
) -> KResult<Tensor> {
    let (q, k, v) = (floats(inputs[0])?, floats(inputs[1])?, floats(inputs[2])?);
    let (b, hq, s, d) = dims4(inputs[0]);
    let (_, hkv, t, _) = dims4(inputs[1]);
    let dv = inputs[2].shape()[3];
    let group = hq / hkv;
    let scale = scale.map_or(1.0 / (d as f32).sqrt(), |x| x as f32);
    let scores_shape = [b, hq, s, t];
    let mask = match inputs.get(3).map(|m| (m, m.data())) {
        None => Mask::None,
        Some((m, TensorData::Bool(_))) => Mask::Keep(broadcast_to_any(m, &scores_shape).bools()),
        Some((m, _)) => Mask::Bias(broadcast_to_any(m, &scores_shape).floats()),
    };
    let mut y = vec![0f32; b * hq * s * dv];
    let mut scores = [0f32; BLOCK];
    let mut acc = vec![0f32; dv];
    for bi in 0..b {
        for h in 0..hq {
            let kh = h / group;
            let kbase = (bi * hkv + kh) * t;
            for i in 0..s {
                let qrow = &q[((bi * hq + h) * s + i) * d..][..d];
                // Causal, bottom-right aligned: query i sees keys j <= i + t - s.
                let visible = if causal {
                    (i + t + 1).saturating_sub(s).min(t)
                } else {
                    t
                };
                let mask_row = ((bi * hq + h) * s + i) * t;
                let (mut max, mut sum) = (f32::NEG_INFINITY, 0f32);
                acc.fill(0.0);
                for start in (0..visible).step_by(BLOCK) {
                    let end = (start + BLOCK).min(visible);
                    let mut block_max = f32::NEG_INFINITY;
                    for j in start..end {
                        let krow = &k[(kbase + j) * d..][..d];
                        let mut sc = qrow.iter().zip(krow).map(|(a, b)| a * b).sum::<f32>() * scale;
                        match &mask {
                            Mask::None => {}
                            Mask::Keep(keep) if !keep[mask_row + j] => sc = f32::NEG_INFINITY,
                            Mask::Keep(_) => {}
                            Mask::Bias(bias) => sc += bias[mask_row + j],
                        }
                        scores[j - start] = sc;
                        block_max = block_max.max(sc);
                    }
                    if block_max == f32::NEG_INFINITY {
                        continue; // every key of the block is masked out
                    }
                    let new_max = max.max(block_max);
                    let correction = (max - new_max).exp();
                    sum *= correction;
                    acc.iter_mut().for_each(|a| *a *= correction);
                    for j in start..end {
                        let p = (scores[j - start] - new_max).exp();
                        sum += p;
                        let vrow = &v[(kbase + j) * dv..][..dv];
                        acc.iter_mut().zip(vrow).for_each(|(a, &x)| *a += p * x);
                    }
                    max = new_max;
                }
                // A query that sees no key at all gets zeros (documented), never NaN.
                let out_row = &mut y[((bi * hq + h) * s + i) * dv..][..dv];
                if sum > 0.0 {
                    out_row
                        .iter_mut()
                        .zip(&acc)
                        .for_each(|(o, &a)| *o = a / sum);
                }
            }
        }
    }
    float_out(out, y)
}

fn dims4(t: &Tensor) -> (usize, usize, usize, usize) {
    let s = t.shape();
    (s[0], s[1], s[2], s[3])
}
