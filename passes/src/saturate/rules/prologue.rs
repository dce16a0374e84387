//! A norm fused into the prologue of the GEMM that consumes it.
//!
//! `matmul(rms_norm(x, w), b) = norm_matmul(x, b, w)` (and `layer_norm`, with its bias):
//! one kernel that normalises each row of `x` as the GEMM loads it, so the normed
//! activations never make the round trip through HBM. The rule adds the fused form
//! beside the pair and leaves the choice to extraction: where the norm's output has
//! other consumers (a second projection, the residual stream) the norm still runs for
//! them, and the DAG-aware cost counts it once either way, so a fused GEMM that only
//! adds its statistics pass to a norm that runs anyway is not chosen.

use egg::Id;
use weft_ir::{NormKind, Op};

use super::*;

pub(super) fn find_norm_then_matmul(eg: &WEGraph, class: Id) -> Vec<Binding> {
    let mut out = vec![];
    for (i, op, ch) in ops(eg, class) {
        let Op::MatMul {
            transpose_a: false, ..
        } = op
        else {
            continue;
        };
        for (j, inner, norm_ch) in ops(eg, ch[0]) {
            if NormKind::of(inner).is_none() || norm_ch.len() + 4 > MAX_BINDING {
                continue;
            }
            // [matmul op, norm op, class, b, x, weight[, bias]]
            let mut b = vec![i as usize, j as usize, ix(class), ix(ch[1])];
            b.extend(norm_ch.iter().map(|&c| ix(c)));
            out.push(b);
        }
    }
    out
}

pub(super) fn build_norm_matmul(eg: &mut WEGraph, b: &[usize], _: &Guards) -> Vec<Id> {
    let (mm, norm, class, w) = (op_at(eg, b[0]), op_at(eg, b[1]), id(b[2]), id(b[3]));
    let (Op::MatMul { transpose_b, .. }, Some((kind, eps))) = (mm, NormKind::of(&norm)) else {
        return vec![];
    };
    // x, then the GEMM's other operand, then the norm's weight (and bias).
    let mut inputs = vec![id(b[4]), w];
    inputs.extend(b[5..].iter().map(|&c| id(c)));
    let s = sharding(eg, class);
    let op = Op::NormMatMul {
        norm: kind,
        eps,
        transpose_b,
    };
    add_op(eg, op, inputs, s).into_iter().collect()
}
