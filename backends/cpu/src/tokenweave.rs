//! TokenWeave's fused kernel, `reduce_scatter_add_norm_all_gather`, computed as the
//! decomposition it stands for: the partial sums reduce-scattered along the token dim
//! (summed in group order, as `reduce_scatter` does), this device's residual shard added,
//! the sum RMS-normalised by the norm kernel, and the normalised shard all-gathered. Each
//! step rounds to the storage dtype as the separate op would, so the fused node computes
//! exactly what the ops it replaces compute; the tests check it against an independent
//! reference all the same.

use std::sync::Arc;

use weft_ir::{Op, ReduceOp, Tensor};

use crate::collective_matmul::{Exchange, Reduce};
use crate::collectives::CommError;
use crate::kernels::{self, OutType};

fn failed(message: String) -> CommError {
    CommError::Collective(message)
}

/// One compute step by the op's own kernel, typed by the IR's rule.
fn step(op: &Op, inputs: &[&Tensor], threads: usize) -> Result<Tensor, CommError> {
    let ty = kernels::type_of_op(op, inputs).map_err(failed)?;
    kernels::eval(op, inputs, &[ty], threads)
        .map_err(failed)?
        .pop()
        .ok_or_else(|| failed(format!("`{}` produced nothing", op.name())))
}

/// The kernel on group member `me` of `size`: returns the gathered normalised rows
/// (`out`'s type) and the updated residual shard.
#[allow(clippy::too_many_arguments)]
pub fn reduce_scatter_add_norm_all_gather(
    [x, residual, weight]: [&Tensor; 3],
    dim: i64,
    eps: f64,
    (me, size): (usize, usize),
    out: &OutType,
    threads: usize,
    exchange: &mut Exchange<'_>,
    reduce: &Reduce<'_>,
) -> Result<Vec<Tensor>, CommError> {
    let all = exchange("reduce-scatter".into(), Arc::new(x.clone()))?;
    let refs: Vec<&Tensor> = all.iter().map(Arc::as_ref).collect();
    let full = reduce(&refs, ReduceOp::Sum).map_err(failed)?;
    let piece = kernels::layout_chunk(&full, dim, size, me);
    if piece.shape() != residual.shape() || piece.dtype() != residual.dtype() {
        return Err(failed(format!(
            "the residual shard is {}{:?}, the reduce-scatter's piece {}{:?}",
            residual.dtype(),
            residual.shape(),
            piece.dtype(),
            piece.shape()
        )));
    }
    let updated = step(&Op::Add, &[&piece, residual], threads)?;
    let normed = step(&Op::RmsNorm { eps }, &[&updated, weight], threads)?;
    let all = exchange("all-gather".into(), Arc::new(normed))?;
    let refs: Vec<&Tensor> = all.iter().map(Arc::as_ref).collect();
    let gathered = kernels::layout_concat(&refs, dim, out);
    Ok(vec![gathered, updated])
}
