//! Mixture-of-experts routing, dispatch and combine, without a capacity limit.

use weft_ir::{DType, Tensor};

use super::layout::{take, top_positions};
use super::{KResult, OutType, float_out, floats, ints};

pub fn route(logits: &Tensor, k: usize, normalize: bool, out: &[OutType]) -> KResult<Vec<Tensor>> {
    let v = floats(logits)?;
    let e = logits.shape()[1];
    let mut weights = Vec::with_capacity(v.len() / e * k);
    let mut ids = Vec::with_capacity(v.len() / e * k);
    for row in v.chunks_exact(e) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = row.iter().map(|&x| (x - max).exp()).collect();
        let total: f32 = exps.iter().sum();
        let top = top_positions(row, k);
        let picked: Vec<f32> = top.iter().map(|&j| exps[j] / total).collect();
        let norm: f32 = if normalize { picked.iter().sum() } else { 1.0 };
        weights.extend(picked.iter().map(|p| p / norm));
        ids.extend(top.iter().map(|&j| j as i64));
    }
    Ok(vec![
        float_out(&out[0], weights)?,
        Tensor::from_i64(DType::I64, out[1].shape.clone(), ids).map_err(|e| e.to_string())?,
    ])
}

/// For each (token, slot) in row-major order, its row in dispatch order; and the counts.
fn slots(ids: &[i64], num_experts: usize) -> KResult<(Vec<usize>, Vec<i64>)> {
    let mut counts = vec![0i64; num_experts];
    for &e in ids {
        if !(0..num_experts as i64).contains(&e) {
            return Err(format!(
                "expert id {e} is out of range for {num_experts} experts"
            ));
        }
        counts[e as usize] += 1;
    }
    let mut next: Vec<usize> = counts
        .iter()
        .scan(0usize, |acc, &c| {
            let start = *acc;
            *acc += c as usize;
            Some(start)
        })
        .collect();
    // Stable: within an expert, copies keep (token, slot) order.
    let position = ids
        .iter()
        .map(|&e| {
            let p = next[e as usize];
            next[e as usize] += 1;
            p
        })
        .collect();
    Ok((position, counts))
}

pub fn dispatch(
    x: &Tensor,
    ids: &Tensor,
    num_experts: usize,
    out: &[OutType],
) -> KResult<Vec<Tensor>> {
    let idv = ints(ids)?;
    let (h, k) = (x.shape()[1], ids.shape()[1]);
    let (position, counts) = slots(idv, num_experts)?;
    let mut src = vec![0usize; idv.len() * h];
    for (copy, &p) in position.iter().enumerate() {
        let token = copy / k;
        for c in 0..h {
            src[p * h + c] = token * h + c;
        }
    }
    Ok(vec![
        take(x, &src, out[0].shape.clone()),
        Tensor::from_i64(DType::I64, out[1].shape.clone(), counts).map_err(|e| e.to_string())?,
    ])
}

pub fn combine(y: &Tensor, weights: &Tensor, ids: &Tensor, out: &OutType) -> KResult<Tensor> {
    let (yv, wv, idv) = (floats(y)?, floats(weights)?, ints(ids)?);
    let h = y.shape()[1];
    let k = ids.shape()[1];
    let num_experts = idv
        .iter()
        .copied()
        .max()
        .map_or(1, |m| m.max(0) as usize + 1);
    let (position, _) = slots(idv, num_experts)?;
    let tokens = idv.len() / k.max(1);
    let mut o = vec![0f32; tokens * h];
    for t in 0..tokens {
        // Slots are summed in order j = 0..k, in f32.
        for j in 0..k {
            let (w, p) = (wv[t * k + j], position[t * k + j]);
            for c in 0..h {
                o[t * h + c] += w * yv[p * h + c];
            }
        }
    }
    float_out(out, o)
}

/// `moe_pad`: rows sorted by expert → `[G, N, H]`, block `g` holding the rows of expert
/// group `g` (a contiguous run of the input) and zeros after them.
pub fn pad(x: &Tensor, counts: &Tensor, groups: usize, out: &OutType) -> KResult<Tensor> {
    let (xv, cv) = (floats(x)?, ints(counts)?);
    let (n, h) = (x.shape()[0], x.shape()[1]);
    let per = cv.len() / groups.max(1);
    // Each count at most the rows, summed without overflow (counts may come from a model).
    let total = cv.iter().try_fold(0i64, |a, &c| {
        (0..=n as i64)
            .contains(&c)
            .then(|| a.checked_add(c))
            .flatten()
    });
    if total != Some(n as i64) {
        return Err(format!(
            "expert counts {cv:?} must be non-negative and sum to the {n} rows"
        ));
    }
    let mut o = vec![0f32; groups * n * h];
    let mut start = 0usize;
    for g in 0..groups {
        let len: usize = cv[g * per..(g + 1) * per].iter().map(|&c| c as usize).sum();
        o[g * n * h..][..len * h].copy_from_slice(&xv[start * h..(start + len) * h]);
        start += len;
    }
    float_out(out, o)
}

/// `moe_unpad`: the inverse of [`pad`], the valid rows of each block concatenated.
pub fn unpad(x: &Tensor, counts: &Tensor, groups: usize, out: &OutType) -> KResult<Tensor> {
    let (xv, cv) = (floats(x)?, ints(counts)?);
    let (block, h) = (x.shape()[1], x.shape()[2]);
    let rows = out.shape[0];
    let per = cv.len() / groups.max(1);
    let total = cv.iter().try_fold(0i64, |a, &c| {
        (0..=rows as i64)
            .contains(&c)
            .then(|| a.checked_add(c))
            .flatten()
    });
    if total != Some(rows as i64) {
        return Err(format!(
            "expert counts {cv:?} must be non-negative and sum to the {rows} rows"
        ));
    }
    let mut o = Vec::with_capacity(rows * h);
    for g in 0..groups {
        let len: usize = cv[g * per..(g + 1) * per].iter().map(|&c| c as usize).sum();
        if len > block {
            return Err(format!(
                "group {g} has {len} rows, more than its block of {block}"
            ));
        }
        o.extend_from_slice(&xv[g * block * h..][..len * h]);
    }
    float_out(out, o)
}
