//! The fused communication + GEMM ops, computed as the decomposition each stands for, so
//! that proving a fusion rule by execution compares two different computations:
//!
//! - `all_gather_matmul` (collective matmul, ring decomposed): each rank multiplies the
//!   piece of `a` it holds, then, `size − 1` times, passes the piece it holds to its right
//!   neighbour on the ring, receives its left neighbour's and multiplies that, writing each
//!   product at the offset of the piece it came from. At step `s` rank `i` holds piece
//!   `(i − s) mod size`.
//! - `matmul_reduce_scatter` (T3, Flux GEMM+RS): the scattered dim of the product is cut
//!   into `size · chunks` equal sub-pieces; rank `i`'s result is sub-pieces
//!   `i·chunks .. (i+1)·chunks`. Chunk `c` computes, on every rank, the GEMM of sub-piece
//!   `j·chunks + c` for every destination `j`, then reduce-scatters that chunk (each
//!   destination sums its sub-piece over the group in group order, as `reduce_scatter`
//!   does), and the rank writes the result at offset `c` of its slice.
//!
//! A wrong ring order, chunk boundary or piece offset therefore gives a wrong answer here,
//! where running the unfused ops back to back could not.

use std::sync::Arc;

use weft_ir::{Op, ReduceOp, Tensor};

use crate::collectives::CommError;
use crate::kernels::{self, OutType};

/// One collective step among the group: contributes a tensor under a label (which every
/// member must agree on) and returns every member's contribution in group order.
pub type Exchange<'a> = dyn FnMut(String, Arc<Tensor>) -> Result<Vec<Arc<Tensor>>, CommError> + 'a;

/// Reduces a group's contributions element-wise in group order.
pub type Reduce<'a> = dyn Fn(&[&Tensor], ReduceOp) -> Result<Tensor, String> + 'a;

fn failed(message: String) -> CommError {
    CommError::Collective(message)
}

/// `matmul(a, b)` by the matmul kernel, typed by the IR's rule.
fn gemm(a: &Tensor, b: &Tensor, transpose_b: bool, threads: usize) -> Result<Tensor, CommError> {
    let op = Op::MatMul {
        transpose_a: false,
        transpose_b,
    };
    let ty = kernels::type_of_op(&op, &[a, b]).map_err(failed)?;
    kernels::eval(&op, &[a, b], &[ty], threads)
        .map_err(failed)?
        .pop()
        .ok_or_else(|| failed("the GEMM produced nothing".into()))
}

/// Which dim of an operand of rank `rank` lines up with dim `d` of a product of rank
/// `out_rank` (batch dims align on the right), if the operand has it and does not
/// broadcast along it (size 1).
fn aligned(operand: &Tensor, d: usize, out_rank: usize) -> Option<usize> {
    let rank = operand.shape().len();
    let od = d.checked_sub(out_rank - rank)?;
    (od + 2 < rank && operand.shape()[od] != 1).then_some(od)
}

/// `matmul_reduce_scatter(a, b)` on group member `me` of `size`, chunk by chunk.
#[allow(clippy::too_many_arguments)]
pub fn matmul_reduce_scatter(
    a: &Tensor,
    b: &Tensor,
    dim: i64,
    chunks: u64,
    transpose_b: bool,
    (me, size): (usize, usize),
    threads: usize,
    exchange: &mut Exchange<'_>,
    reduce: &Reduce<'_>,
) -> Result<Tensor, CommError> {
    let (ra, rb) = (a.shape().len(), b.shape().len());
    if ra < 2 || rb < 2 {
        return Err(failed("matmul operands need rank at least 2".into()));
    }
    let ry = ra.max(rb);
    let d = kernels::axis(dim, ry);
    let chunks = usize::try_from(chunks)
        .ok()
        .filter(|&c| c >= 1)
        .ok_or_else(|| failed(format!("chunks {chunks} is not a usable chunk count")))?;
    let pieces = size
        .checked_mul(chunks)
        .ok_or_else(|| failed("size · chunks overflows".into()))?;
    // Where the scattered dim of the product comes from: a row of `a`, a column of `b`, or
    // a batch dim of whichever operand does not broadcast along it.
    let a_dim = if d == ry - 2 {
        Some(ra - 2)
    } else if d + 2 < ry {
        aligned(a, d, ry)
    } else {
        None
    };
    let b_dim = if d == ry - 1 {
        Some(if transpose_b { rb - 2 } else { rb - 1 })
    } else if d + 2 < ry {
        aligned(b, d, ry)
    } else {
        None
    };
    if a_dim.is_none() && b_dim.is_none() && pieces != 1 {
        return Err(failed(format!(
            "dim {dim} of the product is 1 long: it does not divide into {size}·{chunks} pieces"
        )));
    }
    for (operand, od) in [(a, a_dim), (b, b_dim)] {
        if let Some(od) = od
            && operand.shape()[od] % pieces != 0
        {
            return Err(failed(format!(
                "dim {dim} ({} long) does not divide into {size}·{chunks} pieces",
                operand.shape()[od]
            )));
        }
    }
    let piece = |t: &Tensor, od: Option<usize>, k: usize| match od {
        Some(od) => kernels::layout_chunk(t, od as i64, pieces, k),
        None => t.clone(),
    };
    let mut mine: Vec<Tensor> = Vec::with_capacity(chunks);
    for c in 0..chunks {
        // This chunk's GEMM: sub-piece `j·chunks + c` of the product for every destination
        // `j`, laid side by side along the scattered dim.
        let mut parts = Vec::with_capacity(size);
        for j in 0..size {
            let k = j * chunks + c;
            parts.push(gemm(
                &piece(a, a_dim, k),
                &piece(b, b_dim, k),
                transpose_b,
                threads,
            )?);
        }
        let refs: Vec<&Tensor> = parts.iter().collect();
        let mut shape = parts[0].shape().to_vec();
        shape[d] *= size;
        let sent = kernels::layout_concat(
            &refs,
            d as i64,
            &OutType {
                dtype: parts[0].dtype(),
                shape,
            },
        );
        // Its reduce-scatter: destination `me` sums its sub-piece over the group.
        let all = exchange(format!("chunk {c} of {chunks}"), Arc::new(sent))?;
        let for_me: Vec<Tensor> = all
            .iter()
            .map(|t| kernels::layout_chunk(t, d as i64, size, me))
            .collect();
        let refs: Vec<&Tensor> = for_me.iter().collect();
        mine.push(reduce(&refs, ReduceOp::Sum).map_err(failed)?);
    }
    Ok(stack(&mine, d))
}

/// `all_gather_matmul(a, b)` on group member `me` of `size`, round the ring.
pub fn all_gather_matmul(
    a: &Tensor,
    b: &Tensor,
    dim: i64,
    transpose_b: bool,
    (me, size): (usize, usize),
    threads: usize,
    exchange: &mut Exchange<'_>,
) -> Result<Tensor, CommError> {
    let (ra, rb) = (a.shape().len(), b.shape().len());
    if ra < 2 || rb < 2 {
        return Err(failed("matmul operands need rank at least 2".into()));
    }
    let da = kernels::axis(dim, ra);
    if da + 1 >= ra {
        return Err(failed(format!(
            "dim {dim} is the contraction dim of a; gather a row dim"
        )));
    }
    let ry = ra.max(rb);
    let dy = da + (ry - ra);
    // A batch dim of `b` aligned with the gathered dim holds every piece's weights: piece
    // `p` multiplies slice `p` of it.
    let b_dim = if dy + 2 < ry {
        aligned(b, dy, ry)
    } else {
        None
    };
    let weights = |p: usize| match b_dim {
        Some(bd) => kernels::layout_chunk(b, bd as i64, size, p),
        None => b.clone(),
    };
    let mut products: Vec<Option<Tensor>> = vec![None; size];
    let mut held = Arc::new(a.clone());
    for step in 0..size {
        if step > 0 {
            // Pass the held piece right, receive the left neighbour's.
            let all = exchange(format!("ring step {step} of {}", size - 1), held)?;
            held = Arc::clone(&all[(me + size - 1) % size]);
        }
        let p = (me + size - step) % size;
        products[p] = Some(gemm(&held, &weights(p), transpose_b, threads)?);
    }
    let products: Vec<Tensor> = products.into_iter().flatten().collect();
    if products.len() != size {
        return Err(failed("the ring did not deliver every piece".into()));
    }
    Ok(stack(&products, dy))
}

/// `pieces` joined along `d`, in order.
fn stack(pieces: &[Tensor], d: usize) -> Tensor {
    let mut shape = pieces[0].shape().to_vec();
    shape[d] = pieces.iter().map(|t| t.shape()[d]).sum();
    let refs: Vec<&Tensor> = pieces.iter().collect();
    kernels::layout_concat(
        &refs,
        d as i64,
        &OutType {
            dtype: pieces[0].dtype(),
            shape,
        },
    )
}
