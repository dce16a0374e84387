//! `norm_matmul`: a norm fused into its GEMM's prologue, executed as the decomposition
//! it stands for.
//!
//! A GPU kernel normalises each tile of `x` as the GEMM loads it; the reference runs the
//! norm's own kernel, rounds its result to the dtype as the standalone op would, then the
//! GEMM's own kernel on it. So a fused program computes exactly what the unfused pair
//! computes, and a test comparing them checks the fusion's wiring (which input is which,
//! eps, the transposition), not two copies of one formula.

use weft_ir::{NormKind, Op, Tensor};

use super::{KResult, eval, type_of_op};

/// `matmul(norm(x, weight[, bias]), b)` for inputs `x, b, weight[, bias]`.
pub fn norm_matmul(
    norm: NormKind,
    eps: f64,
    transpose_b: bool,
    inputs: &[&Tensor],
    threads: usize,
) -> KResult<Tensor> {
    let [x, b, params @ ..] = inputs else {
        return Err(format!(
            "norm_matmul needs x, b and the norm's weight, got {} inputs",
            inputs.len()
        ));
    };
    let norm_op = norm.op(eps);
    let mut norm_args = vec![*x];
    norm_args.extend_from_slice(params);
    let normed_type = [type_of_op(&norm_op, &norm_args)?];
    let normed = eval(&norm_op, &norm_args, &normed_type, threads)?
        .pop()
        .ok_or("the prologue's norm produced nothing")?;
    let gemm = Op::MatMul {
        transpose_a: false,
        transpose_b,
    };
    let args = [&normed, *b];
    let out = [type_of_op(&gemm, &args)?];
    eval(&gemm, &args, &out, threads)?
        .pop()
        .ok_or_else(|| "the GEMM produced nothing".to_string())
}
