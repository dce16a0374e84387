//! Sharding propagation: the placement each op's outputs take, along one mesh axis,
//! from its inputs' placements.
//!
//! The sharding pass chooses layouts and the saturation rules write the shardings of
//! what they build by hand; the memory planner and the code generators trust those
//! labels. The verifier therefore recomputes every output's placement from its inputs'
//! by the op's rule and rejects a label that does not follow, or inputs whose
//! placements no rule combines (a piece added to a whole value, a contraction split on
//! one side only, a non-linear op of a partial sum). The rules describe what each op
//! computes on per-device pieces; they are independent of the choices the sharding pass
//! makes, which may pick any layout these rules accept.
//!
//! Shapes here are the per-device (local) shapes, evaluated.

use crate::mesh::{Placement, ReduceOp};
use crate::op::{FusedStep, Op, ReduceKind};

use Placement::{Local as L, Partial as P, Replicate as R, Split as S};

/// One input as a rule sees it along one axis.
#[derive(Clone, Debug)]
pub struct Arg<'a> {
    pub placement: Placement,
    /// Per-device shape.
    pub shape: &'a [u64],
    /// Float elements (integer division and rounding are not linear).
    pub float: bool,
}

/// Why inputs' placements do not combine under an op.
pub type Reason = String;

fn list(ins: &[Arg<'_>]) -> String {
    ins.iter()
        .map(|a| a.placement.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn refuse<T>(ins: &[Arg<'_>], why: &str) -> Result<T, Reason> {
    Err(format!("inputs ({}) do not combine: {why}", list(ins)))
}

fn norm(axis: i64, rank: usize) -> usize {
    if axis < 0 {
        (axis + rank as i64).max(0) as usize
    } else {
        axis as usize
    }
}

/// The placements of `op`'s outputs along a mesh axis, given its inputs' placements;
/// `None` for sources, which are laid out as they say. `own` is whether the axis is the
/// one the op (a collective) communicates over: along any other axis a collective moves
/// each device's piece as it is. `out_shapes` are the outputs' per-device shapes, and
/// `labels` their recorded placements, which choose among equivalent answers (a reshape
/// may name a split dim of per-device size 1 or the next one: the same pieces).
pub fn follow(
    op: &Op,
    ins: &[Arg<'_>],
    out_shapes: &[Vec<u64>],
    labels: &[Placement],
    own: bool,
) -> Result<Option<Vec<Placement>>, Reason> {
    let n_out = out_shapes.len();
    // A per-device value that is not a piece of a global tensor stays one through any
    // computation; only the ops that define how such values arise or end say otherwise.
    if ins.iter().any(|a| a.placement == L) && !decides_local(op, own) {
        return Ok(Some(vec![L; n_out]));
    }
    let rank0 = ins.first().map_or(0, |a| a.shape.len());
    let out0: &[u64] = out_shapes.first().map_or(&[], Vec::as_slice);
    let out_rank = out0.len();
    let one = |p: Placement| Ok(vec![p; n_out]);
    // Along another axis, a collective moves each device's piece as it is.
    let moved = || Ok(vec![ins[0].placement; n_out]);
    let outs = match op {
        Op::Input { .. } | Op::Weight { .. } | Op::Constant { .. } | Op::Recv { .. } => {
            return Ok(None);
        }
        Op::Send { .. } => Ok(Vec::new()),
        Op::Exp
        | Op::Sqrt
        | Op::Rsqrt
        | Op::Reciprocal
        | Op::Silu
        | Op::Gelu { .. }
        | Op::Relu
        | Op::Sigmoid
        | Op::Tanh
        | Op::Cast { .. }
        | Op::IsNan => match ins[0].placement {
            P(_) => refuse(ins, "a non-linear op of a partial value"),
            p => one(p),
        },
        Op::Neg => match ins[0].placement {
            P(ReduceOp::Max) => refuse(ins, "negation turns a partial max into a min"),
            p => one(p),
        },
        Op::Add | Op::Sub => broadcast(Linear::Sum, ins, out0).map(|p| vec![p]),
        Op::Mul => broadcast(Linear::Scale, ins, out0).map(|p| vec![p]),
        Op::Div => broadcast(Linear::Quotient, ins, out0).map(|p| vec![p]),
        Op::Pow | Op::Where => broadcast(Linear::No, ins, out0).map(|p| vec![p]),
        Op::Softmax { axis } => keep_unless(ins, &[norm(*axis, rank0)], false),
        Op::RmsNorm { .. } | Op::LayerNorm { .. } => {
            if ins[1..].iter().any(|a| a.placement != R) {
                return refuse(ins, "a norm's weight and bias are whole");
            }
            keep_unless(&ins[..1], &[rank0.saturating_sub(1)], false)
        }
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => matmul(ins, *transpose_a, *transpose_b, out0).map(|p| vec![p]),
        Op::Attention { causal, .. } => attention(ins, *causal).map(|p| vec![p]),
        Op::RopeCache { .. } => match ins[0].placement {
            P(_) => refuse(ins, "positions cannot be partial"),
            p => one(p),
        },
        Op::Rope { .. } => rope(ins).map(|p| vec![p]),
        Op::Gather { axis } => gather(ins, norm(*axis, rank0)).map(|p| vec![p]),
        Op::Reshape { .. } => match ins[0].placement {
            S(d) => {
                let dims = reshape_dims(ins[0].shape, &out_shapes[0], d);
                match (labels.first(), dims.last()) {
                    (Some(&S(j)), _) if dims.contains(&j) => one(S(j)),
                    (_, Some(&j)) => one(S(j)),
                    (_, None) => Err(format!(
                        "a reshape of {:?} to {:?} does not keep dim {d}'s pieces contiguous",
                        ins[0].shape, out_shapes[0]
                    )),
                }
            }
            p => one(p),
        },
        Op::Transpose { perm } => match ins[0].placement {
            S(d) => match perm.iter().position(|&p| p == d) {
                Some(j) => one(S(j)),
                None => refuse(ins, "the permutation drops the split dim"),
            },
            p => one(p),
        },
        Op::Expand { .. } => match ins[0].placement {
            S(d) => {
                let od = d + out_rank.saturating_sub(rank0);
                if out0.get(od) != ins[0].shape.get(d) {
                    return refuse(ins, "the split dim would be broadcast");
                }
                one(S(od))
            }
            p => one(p),
        },
        Op::Concat { axis } => {
            let a = norm(*axis, rank0);
            let p = ins[0].placement;
            if ins.iter().any(|x| x.placement != p) {
                return refuse(ins, "concatenated values must share one layout");
            }
            match p {
                S(d) if d == a => refuse(ins, "joined along the split dim"),
                P(ReduceOp::Max) => refuse(ins, "concat of partial maxima"),
                p => one(p),
            }
        }
        Op::Split { axis, .. } | Op::Slice { axis, .. } => {
            keep_unless(ins, &[norm(*axis, rank0)], true).map(|p| vec![p[0]; n_out])
        }
        Op::Reduce {
            kind,
            axes,
            keepdims,
        } => {
            let axes: Vec<usize> = axes.iter().map(|&a| norm(a, rank0)).collect();
            match (ins[0].placement, kind) {
                (S(d), _) if !axes.contains(&d) => {
                    let shift = if *keepdims {
                        0
                    } else {
                        axes.iter().filter(|&&a| a < d).count()
                    };
                    one(S(d - shift))
                }
                (S(_), ReduceKind::Sum) => one(P(ReduceOp::Sum)),
                (S(_), ReduceKind::Max) => one(P(ReduceOp::Max)),
                (S(_), _) => refuse(ins, "only a sum or max over a split dim is partial"),
                (P(ReduceOp::Sum), ReduceKind::Sum | ReduceKind::Mean) => one(P(ReduceOp::Sum)),
                (P(ReduceOp::Max), ReduceKind::Max) => one(P(ReduceOp::Max)),
                (P(_), _) => refuse(ins, "this reduction does not distribute over the partials"),
                (p, _) => one(p),
            }
        }
        Op::TopK { axis, .. } => match ins[0].placement {
            S(d) if d == norm(*axis, rank0) => refuse(ins, "top-k along the split dim"),
            P(_) => refuse(ins, "top-k of a partial value"),
            p => one(p),
        },
        Op::MoeRoute { .. } => match ins[0].placement {
            S(0) | R => one(ins[0].placement),
            _ => refuse(ins, "routing needs whole experts per token"),
        },
        Op::MoeDispatch { .. } => match (ins[0].placement, ins[1].placement) {
            (R, R) => one(R),
            // Hidden-split rows ride along with whole routing.
            (S(1), R) => Ok(vec![S(1), R]),
            // Each device dispatches its own tokens: neither the rows nor the counts are
            // pieces of the single-device dispatch.
            (S(0), S(0)) | (L, _) | (_, L) => one(L),
            _ => refuse(ins, "dispatch needs whole or token-split tokens and ids"),
        },
        Op::ExpertMatMul { transpose_b, .. } => {
            let (w_k, w_m) = if *transpose_b { (2, 1) } else { (1, 2) };
            match (ins[0].placement, ins[1].placement, ins[2].placement) {
                (R, R, R) => one(R),
                (S(1), R, S(k)) if k == w_k => one(P(ReduceOp::Sum)),
                (R, R, S(m)) if m == w_m => one(S(1)),
                _ => refuse(ins, "expert matmul needs whole counts and a matching split"),
            }
        }
        // Rows move whole: a hidden-dim split rides along if every group's result has it.
        Op::MoeRegroup => match ins[0].placement {
            R if ins[1..].iter().all(|a| a.placement == R) => one(R),
            R if ins[1..].iter().all(|a| a.placement == S(1)) => one(S(1)),
            _ => refuse(
                ins,
                "regrouping needs whole counts and the groups' rows laid out alike, whole or split by hidden",
            ),
        },
        Op::MoePad { .. } => match (ins[0].placement, ins[1].placement) {
            (R, R) => one(R),
            (S(1), R) => one(S(2)),
            _ => refuse(
                ins,
                "padding needs whole counts and rows whole or split by hidden",
            ),
        },
        Op::MoeUnpad { .. } => match (ins[0].placement, ins[1].placement) {
            (R, R) => one(R),
            (S(2), R) => one(S(1)),
            _ => refuse(
                ins,
                "unpadding needs whole counts and blocks whole or split by hidden",
            ),
        },
        Op::MoeCombine => match (ins[0].placement, ins[1].placement, ins[2].placement) {
            (R, R, R) => one(R),
            (S(1), R, R) => one(S(1)),
            (P(ReduceOp::Sum), R, R) => one(P(ReduceOp::Sum)),
            // Expert parallelism: rows returned to the devices their tokens live on, and
            // combined with those tokens' weights: the tokens' layout.
            (L, w, ids) if w == ids && matches!(w, R | S(0)) => one(w),
            _ => refuse(ins, "combine needs the weights and ids laid out alike"),
        },
        // ---- collectives: only an all-to-all moves local values (expert parallelism) ----
        Op::AllReduce { .. }
        | Op::AllGather { .. }
        | Op::ReduceScatter { .. }
        | Op::AllToAll { .. }
        | Op::Broadcast { .. }
        | Op::AllSlice { .. }
            if !own =>
        {
            moved()
        }
        Op::AllReduce { op: r, .. } => match ins[0].placement {
            P(p) if p == *r => one(R),
            _ => refuse(ins, &format!("an all-reduce ({r}) takes a partial {r}")),
        },
        Op::AllGather { dim, .. } => match ins[0].placement {
            S(d) if d == norm(*dim, rank0) => one(R),
            _ => refuse(
                ins,
                &format!("an all-gather along dim {dim} takes a split along it"),
            ),
        },
        Op::ReduceScatter { dim, op: r, .. } => match ins[0].placement {
            P(p) if p == *r => one(S(norm(*dim, rank0))),
            _ => refuse(ins, &format!("a reduce-scatter ({r}) takes a partial {r}")),
        },
        Op::AllToAll {
            split_dim,
            concat_dim,
            ..
        } => {
            let (s, c) = (norm(*split_dim, rank0), norm(*concat_dim, rank0));
            match ins[0].placement {
                S(d) if d == c && s != c => one(S(s)),
                // Blocks for other devices' experts: local before and after.
                L => one(L),
                _ => refuse(
                    ins,
                    &format!(
                        "an all-to-all concatenating dim {c} takes a split along it (and splits another)"
                    ),
                ),
            }
        }
        Op::Broadcast { .. } => match ins[0].placement {
            R => one(R),
            _ => refuse(ins, "a broadcast of one device's piece is not the value"),
        },
        Op::AllSlice { dim, .. } => match ins[0].placement {
            R => one(S(norm(*dim, rank0))),
            _ => refuse(ins, "an all-slice takes a whole value"),
        },
        Op::ShardedGather { .. } if !own => gather(ins, 0).map(|p| vec![p]),
        Op::ShardedGather { .. } => match (ins[0].placement, ins[1].placement) {
            (S(0), R) => one(P(ReduceOp::Sum)),
            _ => refuse(
                ins,
                "a vocabulary-parallel lookup takes a row-split table and whole ids",
            ),
        },
        Op::MatMulReduceScatter {
            dim, transpose_b, ..
        } => match matmul(ins, false, *transpose_b, out0)? {
            p if !own => one(p),
            P(ReduceOp::Sum) => one(S(norm(*dim, out_rank))),
            p => refuse(
                ins,
                &format!("the product is {p}, not a partial sum, so nothing is reduced"),
            ),
        },
        Op::AllGatherMatMul {
            dim, transpose_b, ..
        } => match ins[0].placement {
            _ if !own => matmul(ins, false, *transpose_b, out0).map(|p| vec![p]),
            S(d) if d == norm(*dim, rank0) => {
                let mut whole = ins.to_vec();
                whole[0].placement = R;
                matmul(&whole, false, *transpose_b, out0).map(|p| vec![p])
            }
            _ => refuse(
                ins,
                &format!("the gathered operand must be split along dim {dim}"),
            ),
        },
        Op::FusedElementwise { steps } => fused(steps, ins, &out_shapes[0]).map(|p| vec![p]),
        // The norm's rule on `x` and its parameters, then the GEMM's on the normed rows.
        Op::NormMatMul {
            norm: kind,
            eps,
            transpose_b,
        } => {
            let mut norm_ins = vec![ins[0].clone()];
            norm_ins.extend(ins[2..].iter().cloned());
            let normed = Arg {
                placement: by_op(&kind.op(*eps), &norm_ins, ins[0].shape, 0)?,
                shape: ins[0].shape,
                float: ins[0].float,
            };
            matmul(&[normed, ins[1].clone()], false, *transpose_b, out0).map(|p| vec![p])
        }
        Op::ReduceScatterAddNormAllGather { dim, .. } => {
            tokenweave(ins, out_shapes, norm(*dim, rank0), own)
        }
    };
    outs.map(Some)
}

/// Whether the op's own rule decides what a local input gives: dispatch and combine
/// along every axis, a collective along its own (only an all-to-all takes one). Every
/// other op computes each device's own value from it: local again.
fn decides_local(op: &Op, own: bool) -> bool {
    match op {
        Op::MoeDispatch { .. } | Op::MoeCombine => true,
        Op::AllReduce { .. }
        | Op::AllGather { .. }
        | Op::ReduceScatter { .. }
        | Op::AllToAll { .. }
        | Op::Send { .. }
        | Op::Recv { .. }
        | Op::Broadcast { .. }
        | Op::AllSlice { .. }
        | Op::ShardedGather { .. }
        | Op::MatMulReduceScatter { .. }
        | Op::AllGatherMatMul { .. }
        | Op::ReduceScatterAddNormAllGather { .. } => own,
        Op::Input { .. }
        | Op::Weight { .. }
        | Op::Constant { .. }
        | Op::MatMul { .. }
        | Op::Add
        | Op::Sub
        | Op::Mul
        | Op::Div
        | Op::Pow
        | Op::Neg
        | Op::Exp
        | Op::Sqrt
        | Op::Rsqrt
        | Op::Reciprocal
        | Op::Silu
        | Op::Gelu { .. }
        | Op::Relu
        | Op::Sigmoid
        | Op::Tanh
        | Op::Softmax { .. }
        | Op::RmsNorm { .. }
        | Op::LayerNorm { .. }
        | Op::Attention { .. }
        | Op::RopeCache { .. }
        | Op::Rope { .. }
        | Op::Gather { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Slice { .. }
        | Op::Cast { .. }
        | Op::Reduce { .. }
        | Op::TopK { .. }
        | Op::Expand { .. }
        | Op::Where
        | Op::IsNan
        | Op::MoeRoute { .. }
        | Op::ExpertMatMul { .. }
        | Op::MoePad { .. }
        | Op::MoeUnpad { .. }
        | Op::FusedElementwise { .. }
        | Op::NormMatMul { .. }
        | Op::MoeRegroup => false,
    }
}

/// In which inputs a broadcasting element-wise op is linear, so partial sums stay partial.
#[derive(Clone, Copy, Debug)]
enum Linear {
    /// `a ± b`: when every input is a partial sum.
    Sum,
    /// `a · b`: when one input is a partial sum and the others are whole.
    Scale,
    /// `a / b`: when the dividend is a partial sum, the divisor whole, and both float
    /// (truncating integer division does not distribute over a sum).
    Quotient,
    /// `pow`, `where`: never.
    No,
}

/// TokenWeave's fused kernel as its decomposition: along its own axis a partial sum and
/// the residual split along the scattered dim give the gathered norm (whole) and the
/// residual shard; along another axis each step keeps its pieces as the add and the norm
/// would (the norm's weight whole, never split along the normalised dim).
fn tokenweave(
    ins: &[Arg<'_>],
    out_shapes: &[Vec<u64>],
    d: usize,
    own: bool,
) -> Result<Vec<Placement>, Reason> {
    if ins[2].placement != R {
        return refuse(ins, "the norm's weight is whole");
    }
    if own {
        return match (ins[0].placement, ins[1].placement) {
            (P(ReduceOp::Sum), S(r)) if r == d => Ok(vec![R, S(d)]),
            _ => refuse(
                ins,
                &format!(
                    "the fused kernel takes a partial sum and the residual split along dim {d}"
                ),
            ),
        };
    }
    let shard = out_shapes.get(1).map_or(&[][..], Vec::as_slice);
    let added = broadcast(Linear::Sum, &ins[..2], shard)?;
    let sum = Arg {
        placement: added,
        shape: shard,
        float: ins[0].float,
    };
    let normed = keep_unless(&[sum], &[shard.len().saturating_sub(1)], false)?;
    Ok(vec![normed[0], added])
}

/// Keeps a split unless it is along one of `dims`; partial values pass only where the
/// op is linear.
fn keep_unless(ins: &[Arg<'_>], dims: &[usize], linear: bool) -> Result<Vec<Placement>, Reason> {
    match ins[0].placement {
        S(d) if dims.contains(&d) => refuse(ins, &format!("the op works along the split dim {d}")),
        P(_) if !linear => refuse(ins, "a non-linear op of a partial value"),
        p => Ok(vec![p]),
    }
}

/// Element-wise ops with NumPy broadcasting: split inputs agree on one output dim, and
/// whole inputs are broadcast along it; partial sums stay partial where the op is linear.
/// A split dim is never broadcast: a piece of 1 (a global dim of the mesh size) stretched
/// over a larger piece repeats each device's element, which is no piece of any result.
fn broadcast(linear: Linear, ins: &[Arg<'_>], result: &[u64]) -> Result<Placement, Reason> {
    let rank = result.len();
    let partial: Vec<bool> = ins.iter().map(|a| matches!(a.placement, P(_))).collect();
    if partial.iter().any(|&p| p) {
        let sums = ins
            .iter()
            .all(|a| matches!(a.placement, P(ReduceOp::Sum) | R));
        let whole_but = |k: usize| {
            ins.iter()
                .enumerate()
                .all(|(j, a)| j == k || a.placement == R)
        };
        let first = partial.iter().position(|&p| p).unwrap_or(0);
        let holds = sums
            && match linear {
                Linear::Sum => partial.iter().all(|&p| p),
                Linear::Scale => partial.iter().filter(|&&p| p).count() == 1 && whole_but(first),
                Linear::Quotient => partial[0] && whole_but(0) && ins.iter().all(|a| a.float),
                Linear::No => false,
            };
        return if holds {
            Ok(P(ReduceOp::Sum))
        } else {
            refuse(ins, "not linear in its partial inputs")
        };
    }
    let mut out = None;
    for a in ins {
        if let S(d) = a.placement {
            let Some(od) = (d + rank).checked_sub(a.shape.len()) else {
                return refuse(ins, "an input has a higher rank than the result");
            };
            if a.shape.get(d) != result.get(od) {
                return refuse(
                    ins,
                    &format!("the split dim {d} would be broadcast to the result's dim {od}"),
                );
            }
            match out {
                Some(o) if o != od => return refuse(ins, "inputs split along different dims"),
                _ => out = Some(od),
            }
        }
    }
    let Some(od) = out else {
        return Ok(R);
    };
    for a in ins.iter().filter(|a| a.placement == R) {
        let off = rank.saturating_sub(a.shape.len());
        if od >= off && a.shape[od - off] != 1 {
            return refuse(
                ins,
                &format!(
                    "a whole input is combined with pieces along dim {od}, which it does not broadcast"
                ),
            );
        }
    }
    Ok(S(od))
}

/// `[.., m, k] @ [.., k, n]` into `out`; a split batch dim is never broadcast.
fn matmul(ins: &[Arg<'_>], ta: bool, tb: bool, out: &[u64]) -> Result<Placement, Reason> {
    let r = out.len();
    let (a, b) = (&ins[0], &ins[1]);
    let (ra, rb) = (a.shape.len(), b.shape.len());
    if ra < 2 || rb < 2 || r < ra.max(rb) {
        return refuse(ins, "a matmul's operands have rank 2 or more");
    }
    let (a_m, a_k) = if ta {
        (ra - 1, ra - 2)
    } else {
        (ra - 2, ra - 1)
    };
    let (b_k, b_n) = if tb {
        (rb - 1, rb - 2)
    } else {
        (rb - 2, rb - 1)
    };
    // The other operand along output batch dim `od`: split there alike, or broadcast.
    let batch_ok = |other: &Arg<'_>, od: usize| {
        let off = r - other.shape.len();
        let present = od >= off && od - off + 2 < other.shape.len();
        match other.placement {
            S(e) => present && e == od - off && other.shape[e] == out[od],
            R => !present || other.shape[od - off] == 1,
            _ => false,
        }
    };
    match (a.placement, b.placement) {
        (R, R) => Ok(R),
        (P(ReduceOp::Sum), R) | (R, P(ReduceOp::Sum)) => Ok(P(ReduceOp::Sum)),
        (S(x), S(y)) if x == a_k && y == b_k => Ok(P(ReduceOp::Sum)),
        (S(x), R) if x == a_m => Ok(S(r - 2)),
        (R, S(y)) if y == b_n => Ok(S(r - 1)),
        (S(x), _) if x + 2 < ra && a.shape[x] == out[x + r - ra] && batch_ok(b, x + r - ra) => {
            Ok(S(x + r - ra))
        }
        (_, S(y)) if y + 2 < rb && b.shape[y] == out[y + r - rb] && batch_ok(a, y + r - rb) => {
            Ok(S(y + r - rb))
        }
        (S(x), _) | (_, S(x)) if x == a_k || x == b_k => {
            refuse(ins, "the contraction dim is split on one side only")
        }
        _ => refuse(ins, "no matmul rule combines these"),
    }
}

/// `q [b, hq, s, d]`, `k`, `v [b, hkv, t, _]`, optional mask broadcast to `[b, hq, s, t]`.
fn attention(ins: &[Arg<'_>], causal: bool) -> Result<Placement, Reason> {
    let (q, k, v) = (&ins[0], &ins[1], &ins[2]);
    let d = match q.placement {
        R => None,
        S(d @ (0 | 1)) => Some(d),
        S(2) if !causal => Some(2),
        S(2) => {
            return refuse(
                ins,
                "causal attention of sequence-split queries misaligns the mask",
            );
        }
        _ => {
            return refuse(
                ins,
                "attention splits queries by batch, head or (non-causal) sequence",
            );
        }
    };
    let Some(d) = d else {
        return if ins[1..].iter().all(|a| a.placement == R) {
            Ok(R)
        } else {
            refuse(ins, "whole queries take whole keys, values and mask")
        };
    };
    let kv_ok = |a: &Arg<'_>| match d {
        // Sequence-split queries attend to every key.
        2 => a.placement == R,
        // One KV head serves every query head (multi-query attention).
        1 if a.placement == R => a.shape[1] == 1,
        _ => a.placement == S(d),
    };
    if !kv_ok(k) || !kv_ok(v) {
        return refuse(
            ins,
            &format!("queries split along dim {d} need keys and values to match"),
        );
    }
    if let Some(m) = ins.get(3) {
        let off = 4usize.saturating_sub(m.shape.len());
        if !follows_split(m, d, off, q.shape[d]) {
            return refuse(
                ins,
                &format!(
                    "the mask must be split alike (or broadcast) with queries split along dim {d}"
                ),
            );
        }
    }
    Ok(S(d))
}

/// `x [.., d]` rotated with tables broadcast to `[.., d/2]`.
fn rope(ins: &[Arg<'_>]) -> Result<Placement, Reason> {
    let x = &ins[0];
    let rank = x.shape.len();
    let d = match x.placement {
        R => {
            return if ins[1..].iter().all(|a| a.placement == R) {
                Ok(R)
            } else {
                refuse(ins, "whole values take whole tables")
            };
        }
        S(d) if d + 1 < rank => d,
        _ => return refuse(ins, "rotary embedding splits any dim but the rotated one"),
    };
    for t in &ins[1..] {
        let off = rank.saturating_sub(t.shape.len());
        if !follows_split(t, d, off, x.shape[d]) {
            return refuse(
                ins,
                &format!(
                    "the tables must be split alike (or broadcast) with x split along dim {d}"
                ),
            );
        }
    }
    Ok(S(d))
}

/// Whether a broadcast operand (its dims aligned to the right, `off` dims short) goes
/// with a value split along dim `d`: split along the same dim, or whole where it
/// broadcasts there (absent, or of size 1: per device, size 1 may also be a split).
/// A split operand's pieces are the value's own (`size` per device): a split is never
/// broadcast.
fn follows_split(x: &Arg<'_>, d: usize, off: usize, size: u64) -> bool {
    if d < off {
        return x.placement == R;
    }
    match (x.placement, x.shape[d - off]) {
        (S(e), n) => e == d - off && n == size,
        (R, n) => n == 1,
        _ => false,
    }
}

/// `take(table, ids, a)`.
fn gather(ins: &[Arg<'_>], a: usize) -> Result<Placement, Reason> {
    let (table, ids) = (&ins[0], &ins[1]);
    match (table.placement, ids.placement) {
        (R, R) => Ok(R),
        // Rows of partial sums are partial sums of the rows.
        (P(ReduceOp::Sum), R) => Ok(P(ReduceOp::Sum)),
        (R, S(d)) => Ok(S(a + d)),
        (S(d), R) if d < a => Ok(S(d)),
        (S(d), R) if d > a => Ok(S(d + ids.shape.len() - 1)),
        _ => refuse(
            ins,
            "a lookup splits the table off its gathered axis, or the ids",
        ),
    }
}

/// Where split dim `d` of `input` may land in `out` (per-device shapes) so that each
/// device's piece stays one contiguous block: an output dim after the same leading
/// elements. Dims of per-device size 1 there are candidates too (the global dim is the
/// mesh axis' size), up to the first larger one, which is last.
pub fn reshape_dims(input: &[u64], out: &[u64], d: usize) -> Vec<usize> {
    let before: u64 = input[..d].iter().product();
    let mut prefix = 1u64;
    let mut found = Vec::new();
    for (j, &n) in out.iter().enumerate() {
        if prefix == before {
            found.push(j);
            if n > 1 {
                return found;
            }
        }
        match prefix.checked_mul(n) {
            Some(p) if p <= before => prefix = p,
            _ => break,
        }
    }
    found
}

/// A fused element-wise kernel: each step by its op's rule, on the running value.
fn fused(steps: &[FusedStep], ins: &[Arg<'_>], out: &[u64]) -> Result<Placement, Reason> {
    let mut running = ins[0].placement;
    // The running value's per-device shape after each step, as the op would infer it:
    // a broadcast step may grow it, so a split dim of the running value is checked
    // against the shape of that step's result, not the kernel's output.
    let mut shape = ins[0].shape.to_vec();
    for (k, step) in steps.iter().enumerate() {
        let me = Arg {
            placement: running,
            shape: &shape,
            float: ins[0].float,
        };
        let operand = |i: usize| {
            ins.get(i)
                .cloned()
                .ok_or_else(|| format!("step {k} reads input {i}, which is absent"))
        };
        let (placement, next) = match step {
            FusedStep::Matmul {
                operand: i,
                transpose_b,
            } => {
                let b = operand(*i)?;
                let next = matmul_shape(&shape, b.shape, *transpose_b)
                    .ok_or_else(|| format!("step {k}: the GEMM's operands do not multiply"))?;
                (matmul(&[me, b], false, *transpose_b, &next)?, next)
            }
            FusedStep::Binary {
                op,
                operand: i,
                swap,
            } => {
                let other = operand(*i)?;
                let next = broadcast_shape(&shape, other.shape)
                    .ok_or_else(|| format!("step {k}: the operands do not broadcast"))?;
                let pair = if *swap { [other, me] } else { [me, other] };
                (by_op(op, &pair, &next, k)?, next)
            }
            FusedStep::Unary { op } => (by_op(op, &[me], &shape, k)?, shape.clone()),
        };
        running = placement;
        shape = next;
    }
    if shape != out {
        return Err(format!(
            "the steps compute a {shape:?} value per device, but the output is {out:?}"
        ));
    }
    Ok(running)
}

/// NumPy broadcasting of two per-device shapes; `None` where they do not broadcast.
fn broadcast_shape(a: &[u64], b: &[u64]) -> Option<Vec<u64>> {
    let rank = a.len().max(b.len());
    let at = |s: &[u64], i: usize| {
        let off = rank - s.len();
        if i < off { 1 } else { s[i - off] }
    };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y || y == 1 => Some(x),
            (1, y) => Some(y),
            _ => None,
        })
        .collect()
}

/// The per-device shape of `a @ b` (`b` transposed with `tb`): broadcast batch dims, then
/// `[m, n]`.
fn matmul_shape(a: &[u64], b: &[u64], tb: bool) -> Option<Vec<u64>> {
    let (ra, rb) = (a.len(), b.len());
    if ra < 2 || rb < 2 {
        return None;
    }
    let (k, n) = if tb {
        (b[rb - 1], b[rb - 2])
    } else {
        (b[rb - 2], b[rb - 1])
    };
    if a[ra - 1] != k {
        return None;
    }
    let mut shape = broadcast_shape(&a[..ra - 2], &b[..rb - 2])?;
    shape.extend([a[ra - 2], n]);
    Some(shape)
}

/// One step of a fused kernel, by the rule of the op it applies.
fn by_op(op: &Op, ins: &[Arg<'_>], shape: &[u64], k: usize) -> Result<Placement, Reason> {
    match follow(op, ins, &[shape.to_vec()], &[], false)? {
        Some(p) if !p.is_empty() => Ok(p[0]),
        _ => Err(format!("step {k} (`{}`) produces no value", op.name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::GeluApprox;

    fn arg(placement: Placement, shape: &[u64]) -> Arg<'_> {
        Arg {
            placement,
            shape,
            float: true,
        }
    }

    /// `op` of one input of per-device shape `shape` laid out as `p`, into `out`.
    fn one_in(op: &Op, p: Placement, shape: &[u64], out: &[u64]) -> Result<Placement, Reason> {
        let ins = [arg(p, shape)];
        follow(op, &ins, &[out.to_vec()], &[], false).map(|o| o.unwrap()[0])
    }

    const SUM: Placement = P(ReduceOp::Sum);
    const MAX: Placement = P(ReduceOp::Max);

    /// Each op that works along an axis refuses a split along it (its per-device result is
    /// not a piece of the global one), and each non-linear use of a partial value is
    /// refused; splits along other dims follow to where the op moves them.
    #[test]
    fn ops_along_a_split_dim_or_of_a_partial_value_are_refused() {
        let x = [4u64, 6];
        let softmax = Op::Softmax { axis: -1 };
        assert!(one_in(&softmax, S(1), &x, &x).is_err());
        assert!(one_in(&softmax, SUM, &x, &x).is_err());
        assert_eq!(one_in(&softmax, S(0), &x, &x), Ok(S(0)));
        let mean = |axes: Vec<i64>| Op::Reduce {
            kind: ReduceKind::Mean,
            axes,
            keepdims: false,
        };
        let sum = Op::Reduce {
            kind: ReduceKind::Sum,
            axes: vec![1],
            keepdims: false,
        };
        let max = Op::Reduce {
            kind: ReduceKind::Max,
            axes: vec![1],
            keepdims: true,
        };
        // A mean of pieces is not a partial sum of the mean; a sum or max of pieces is
        // a partial sum or max.
        assert!(one_in(&mean(vec![1]), S(1), &x, &[4]).is_err());
        assert_eq!(one_in(&mean(vec![1]), SUM, &x, &[4]), Ok(SUM));
        assert_eq!(one_in(&mean(vec![0]), S(1), &x, &[6]), Ok(S(0)));
        assert_eq!(one_in(&sum, S(1), &x, &[4]), Ok(SUM));
        assert_eq!(one_in(&max, S(1), &x, &[4, 1]), Ok(MAX));
        // The max of partial sums, and the sum of partial maxima, are neither.
        assert!(one_in(&max, SUM, &x, &[4, 1]).is_err());
        assert!(one_in(&sum, MAX, &x, &[4]).is_err());
        // A transpose moves the split dim with it.
        let t = Op::Transpose { perm: vec![1, 0] };
        assert_eq!(one_in(&t, S(0), &x, &[6, 4]), Ok(S(1)));
        assert_eq!(one_in(&t, S(1), &x, &[6, 4]), Ok(S(0)));
        // Slices, concatenations and top-k along the split dim.
        let slice = Op::Slice {
            axis: 1,
            start: 0,
            end: 2,
        };
        assert!(one_in(&slice, S(1), &x, &[4, 2]).is_err());
        assert_eq!(one_in(&slice, S(0), &x, &[4, 2]), Ok(S(0)));
        assert_eq!(one_in(&slice, SUM, &x, &[4, 2]), Ok(SUM));
        let concat = Op::Concat { axis: 0 };
        let both = |p: Placement| [arg(p, &x), arg(p, &x)];
        let cat = |p: Placement| follow(&concat, &both(p), &[vec![8, 6]], &[], false);
        assert!(cat(S(0)).is_err());
        assert_eq!(cat(S(1)), Ok(Some(vec![S(1)])));
        let topk = Op::TopK {
            k: 2,
            axis: -1,
            largest: true,
        };
        let top =
            |p: Placement| follow(&topk, &[arg(p, &x)], &[vec![4, 2], vec![4, 2]], &[], false);
        assert!(top(S(1)).is_err());
        assert!(top(MAX).is_err());
        assert_eq!(top(S(0)), Ok(Some(vec![S(0), S(0)])));
        // Norms along their last axis; negation turns a partial max into a min.
        let w = [6u64];
        let norm = Op::RmsNorm { eps: 1e-5 };
        let rms =
            |p: Placement| follow(&norm, &[arg(p, &x), arg(R, &w)], &[x.to_vec()], &[], false);
        assert!(rms(S(1)).is_err());
        assert!(rms(SUM).is_err());
        assert_eq!(rms(S(0)), Ok(Some(vec![S(0)])));
        assert!(one_in(&Op::Neg, MAX, &x, &x).is_err());
        assert_eq!(one_in(&Op::Neg, SUM, &x, &x), Ok(SUM));
        assert!(one_in(&Op::Exp, SUM, &x, &x).is_err());
    }

    #[test]
    fn a_lookup_along_the_split_axis_is_refused() {
        let (table, ids) = ([8u64, 6], [3u64]);
        let gather = |axis: i64, t: Placement, i: Placement, out: &[u64]| {
            follow(
                &Op::Gather { axis },
                &[arg(t, &table), arg(i, &ids)],
                &[out.to_vec()],
                &[],
                false,
            )
        };
        // Rows split, looked up by row: each device holds only some of the rows.
        assert!(gather(0, S(0), R, &[3, 6]).is_err());
        assert_eq!(gather(0, S(1), R, &[3, 6]), Ok(Some(vec![S(1)])));
        assert_eq!(gather(0, R, S(0), &[3, 6]), Ok(Some(vec![S(0)])));
        assert!(gather(1, S(1), R, &[8, 3]).is_err());
        assert_eq!(gather(1, S(0), R, &[8, 3]), Ok(Some(vec![S(0)])));
        assert_eq!(gather(0, SUM, R, &[3, 6]), Ok(Some(vec![SUM])));
        assert!(gather(0, R, SUM, &[3, 6]).is_err());
    }

    #[test]
    fn causal_attention_of_sequence_split_queries_is_refused() {
        let (q, kv) = ([1u64, 2, 4, 8], [1u64, 2, 8, 8]);
        let att = |causal: bool, qp: Placement, kvp: Placement| {
            follow(
                &Op::Attention {
                    causal,
                    scale: None,
                },
                &[arg(qp, &q), arg(kvp, &kv), arg(kvp, &kv)],
                &[q.to_vec()],
                &[],
                false,
            )
        };
        assert!(att(true, S(2), R).is_err());
        assert_eq!(att(false, S(2), R), Ok(Some(vec![S(2)])));
        // Keys split by sequence: each query would see only some of them.
        assert!(att(false, R, S(2)).is_err());
        assert!(att(false, S(3), S(3)).is_err());
        assert_eq!(att(true, S(1), S(1)), Ok(Some(vec![S(1)])));
        assert!(att(true, SUM, R).is_err());
    }

    #[test]
    fn a_split_lands_where_the_same_leading_elements_are() {
        // Heads of per-device size 1 (2 KV heads over 2 devices) or the head dim: the
        // same pieces either way.
        assert_eq!(reshape_dims(&[1, 16, 8], &[1, 16, 1, 8], 2), [2, 3]);
        // Flattening rows with a batch of 2 interleaves the devices' pieces.
        assert!(reshape_dims(&[2, 8, 4], &[16, 4], 1).is_empty());
        assert_eq!(reshape_dims(&[8, 4], &[32], 0), [0]);
    }

    #[test]
    fn a_fused_step_does_not_broadcast_a_split_dim() {
        // exp(x) + y with x's rows split into pieces of 1 (a global dim of 2) and y's
        // into pieces of 4 (of 8): the sizes do not broadcast globally.
        let op = Op::FusedElementwise {
            steps: vec![
                FusedStep::Unary {
                    op: Box::new(Op::Exp),
                },
                FusedStep::Binary {
                    op: Box::new(Op::Add),
                    operand: 1,
                    swap: false,
                },
            ],
        };
        let (x, y) = ([1u64, 6], [4u64, 6]);
        let out = vec![vec![4, 6]];
        let ins = [arg(S(0), &x), arg(S(0), &y)];
        let e = follow(&op, &ins, &out, &[], false).unwrap_err();
        assert!(e.contains("broadcast"), "{e}");
        // Pieces of equal rows combine; a whole row vector broadcasts along them.
        let ins = [arg(S(0), &y), arg(S(0), &y)];
        assert_eq!(follow(&op, &ins, &out, &[], false), Ok(Some(vec![S(0)])));
        let ins = [arg(R, &x), arg(S(0), &y)];
        assert_eq!(follow(&op, &ins, &out, &[], false), Ok(Some(vec![S(0)])));
    }

    #[test]
    fn fused_kernels_follow_their_steps() {
        let (a, w, bias) = ([4u64, 8], [8u64, 6], [1u64, 6]);
        let steps = vec![
            FusedStep::Matmul {
                operand: 1,
                transpose_b: false,
            },
            FusedStep::Binary {
                op: Box::new(Op::Add),
                operand: 2,
                swap: false,
            },
        ];
        let op = Op::FusedElementwise { steps };
        let out = vec![vec![4, 6]];
        // Column-parallel GEMM plus a bias split alike: columns.
        let ins = [arg(R, &a), arg(S(1), &w), arg(S(1), &bias)];
        assert_eq!(follow(&op, &ins, &out, &[], false), Ok(Some(vec![S(1)])));
        // Row-parallel GEMM (a partial sum) plus a whole bias: the bias would be added
        // once per device.
        let ins = [arg(S(1), &a), arg(S(0), &w), arg(R, &bias)];
        let e = follow(&op, &ins, &out, &[], false).unwrap_err();
        assert!(e.contains("not linear"), "{e}");
        // GELU of a partial sum.
        let op = Op::FusedElementwise {
            steps: vec![
                FusedStep::Matmul {
                    operand: 1,
                    transpose_b: false,
                },
                FusedStep::Unary {
                    op: Box::new(Op::Gelu {
                        approximate: GeluApprox::Erf,
                    }),
                },
            ],
        };
        let e = follow(&op, &ins[..2], &out, &[], false).unwrap_err();
        assert!(e.contains("non-linear"), "{e}");
    }
}
