//! TokenWeave's fused kernel: the pattern the collective rules leave after an all-reduce
//! followed by the residual add and the RMSNorm — `all_gather(rms_norm(add(
//! reduce_scatter(x), r), w))`, where `r` is the residual stream's shard (`all_slice` of
//! the whole residual, or the shard itself once `slice-of-gather` has folded it) — is one
//! `reduce_scatter_add_norm_all_gather(x, r, w)` kernel. It has two results: the gathered
//! norm joins the matched class, and the updated residual shard joins the `add`'s class,
//! so the next layer's residual add reads the kernel's residual instead of recomputing it.
//! The reduced value must be a GEMM's partial sums, as in TokenWeave (the all-reduces
//! after `o_proj` and `down_proj`).

use egg::Id;
use weft_ir::{Op, Placement, ReduceOp};

use super::collective::gathers;
use super::*;

const RULE: &str = "tokenweave-fused-rs-norm-ag";

/// `[all_gather op, rms_norm op, x, residual, weight, add class, matched class]`.
pub(super) fn find_rs_add_norm_gather(eg: &WEGraph, class: Id) -> Vec<Binding> {
    let mut out = vec![];
    for (g, normed, axis, d) in gathers(eg, class) {
        for (n, op, norm_in) in ops(eg, normed) {
            if !matches!(op, Op::RmsNorm { .. }) {
                continue;
            }
            let (sum, w) = (norm_in[0], norm_in[1]);
            for (_, add, terms) in ops(eg, sum) {
                if !matches!(add, Op::Add) {
                    continue;
                }
                for side in 0..2 {
                    for (_, rs, rs_in) in ops(eg, terms[side]) {
                        let Op::ReduceScatter {
                            axis: a2,
                            dim,
                            op: ReduceOp::Sum,
                        } = rs
                        else {
                            continue;
                        };
                        let rank = shape(eg, rs_in[0]).map_or(0, |s| s.len()) as i64;
                        let d2 = if *dim < 0 { dim + rank } else { *dim };
                        if *a2 == axis && d2 == d as i64 && is_gemm_partial(eg, rs_in[0]) {
                            out.push(vec![
                                g as usize,
                                n as usize,
                                ix(rs_in[0]),
                                ix(terms[1 - side]),
                                ix(w),
                                ix(sum),
                                ix(class),
                            ]);
                        }
                    }
                }
            }
        }
    }
    out
}

/// Whether the class holds a GEMM: TokenWeave reduces the partial sums of the
/// row-parallel GEMMs (`o_proj`, `down_proj`). Where both addends are reduce-scatters
/// (the first layer's `embedding + attention`), this keeps the stream — the embedding's
/// lookup — as the residual rather than as the value reduced.
fn is_gemm_partial(eg: &WEGraph, class: Id) -> bool {
    ops(eg, class).any(|(_, op, _)| {
        matches!(op, Op::MatMul { .. })
            || matches!(op, Op::FusedElementwise { steps } if matches!(steps.first(), Some(weft_ir::FusedStep::Matmul { .. })))
    })
}

pub(super) fn build_rs_add_norm_gather(eg: &mut WEGraph, b: &[usize], _: &Guards) -> Vec<Id> {
    let (gather, norm) = (op_at(eg, b[0]), op_at(eg, b[1]));
    let (x, residual, w, sum, class) = (id(b[2]), id(b[3]), id(b[4]), id(b[5]), id(b[6]));
    let (Op::AllGather { axis, dim }, Op::RmsNorm { eps }) = (gather, norm) else {
        return vec![];
    };
    let Some(rank) = shape(eg, x).map(|s| s.len() as i64) else {
        return vec![];
    };
    let d = if dim < 0 { dim + rank } else { dim };
    // The kernel's inputs as its propagation rule takes them: a partial sum, the
    // residual split along the scattered dim, the weight whole (the verifier would
    // refuse anything else, and an unsound node must never be built).
    let split = Placement::Split(d as usize);
    if sharding(eg, x).placement(&axis) != Placement::Partial(ReduceOp::Sum)
        || sharding(eg, residual).placement(&axis) != split
        || sharding(eg, w).placement(&axis) != Placement::Replicate
    {
        return vec![];
    }
    let op = Op::ReduceScatterAddNormAllGather { axis, dim: d, eps };
    let types: Option<Vec<_>> = [x, residual, w]
        .iter()
        .map(|&c| meta(eg, c).ty().cloned())
        .collect();
    let Some(types) = types else { return vec![] };
    let refs: Vec<_> = types.iter().collect();
    if eg.analysis.type_op(&op, &refs).map(|t| t.len()) != Ok(2) {
        return vec![];
    }
    let i = eg.analysis.ops.intern(&op, None);
    let shardings = vec![sharding(eg, class), sharding(eg, sum)];
    let tuple = add_with(
        eg,
        WNode {
            head: Head::Op(i),
            children: vec![x, residual, w],
        },
        shardings,
    );
    let proj = |eg: &mut WEGraph, k: u32| {
        eg.add(WNode {
            head: Head::Proj(k),
            children: vec![tuple],
        })
    };
    let (normed, updated) = (proj(eg, 0), proj(eg, 1));
    // The updated residual is the add's value: one more class to join, which the
    // applier (joining only the matched class) does not do.
    let built = eg[updated].nodes.first().cloned();
    if eg.union_trusted(sum, updated, RULE) {
        eg.analysis.applications.push((RULE, sum, updated, built));
    }
    vec![normed]
}
