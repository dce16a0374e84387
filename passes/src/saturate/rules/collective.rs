//! Collective algebra: all-reduce ⇄ reduce-scatter + all-gather, and moving
//! element-wise ops and norms onto the shard.

use egg::Id;
use weft_ir::{Op, Placement, ReduceOp};

use super::*;

// ---- all-reduce ⇄ reduce-scatter + all-gather -------------------------------------------

pub(super) fn find_all_reduce(eg: &WEGraph, class: Id) -> Vec<Binding> {
    ops(eg, class)
        .filter(|(_, op, _)| {
            matches!(
                op,
                Op::AllReduce {
                    op: ReduceOp::Sum,
                    ..
                }
            )
        })
        .map(|(i, _, ch)| vec![ix(ch[0]), i as usize])
        .collect()
}

pub(super) fn build_all_reduce_split(eg: &mut WEGraph, b: &[usize], g: &Guards) -> Vec<Id> {
    let (x, op) = (id(b[0]), op_at(eg, b[1]));
    let Op::AllReduce { axis, .. } = op else {
        return vec![];
    };
    let n = axis_size(&eg.analysis, &axis);
    let Some(s) = shape(eg, x) else { return vec![] };
    let Some(d) = token_dim(&s).filter(|&d| s[d] % n == 0 && s[d] / n >= g.min_rows) else {
        return vec![];
    };
    let base = sharding(eg, x);
    let Some(rs) = add_op(
        eg,
        Op::ReduceScatter {
            axis: axis.clone(),
            dim: d as i64,
            op: ReduceOp::Sum,
        },
        vec![x],
        base.clone().with(axis.clone(), Placement::Split(d)),
    ) else {
        return vec![];
    };
    add_op(
        eg,
        Op::AllGather {
            axis: axis.clone(),
            dim: d as i64,
        },
        vec![rs],
        base.with(axis, Placement::Replicate),
    )
    .into_iter()
    .collect()
}

pub(super) fn find_gather_of_scatter(eg: &WEGraph, class: Id) -> Vec<Binding> {
    let mut out = vec![];
    for (i, op, ch) in ops(eg, class) {
        let Op::AllGather { axis, dim } = op else {
            continue;
        };
        for (_, inner, ch2) in ops(eg, ch[0]) {
            if let Op::ReduceScatter {
                axis: a2,
                dim: d2,
                op: ReduceOp::Sum,
            } = inner
                && a2 == axis
                && d2 == dim
            {
                out.push(vec![ix(ch2[0]), i as usize]);
            }
        }
    }
    out
}

pub(super) fn build_all_reduce_merge(eg: &mut WEGraph, b: &[usize], _: &Guards) -> Vec<Id> {
    let (x, op) = (id(b[0]), op_at(eg, b[1]));
    let Op::AllGather { axis, .. } = op else {
        return vec![];
    };
    let sharding = sharding(eg, x).with(axis.clone(), Placement::Replicate);
    add_op(
        eg,
        Op::AllReduce {
            axis,
            op: ReduceOp::Sum,
        },
        vec![x],
        sharding,
    )
    .into_iter()
    .collect()
}

// ---- moving element-wise ops and norms onto the shard -----------------------------------

/// `all_gather` nodes in `class`: (op index, the gathered shard, axis, dim).
pub(super) fn gathers(eg: &WEGraph, class: Id) -> Vec<(u32, Id, String, usize)> {
    ops(eg, class)
        .filter_map(|(i, op, ch)| match op {
            Op::AllGather { axis, dim } => {
                let rank = shape(eg, class)?.len() as i64;
                let d = if *dim < 0 { dim + rank } else { *dim } as usize;
                Some((i, ch[0], axis.clone(), d))
            }
            _ => None,
        })
        .collect()
}

pub(super) fn is_unary_elementwise(op: &Op) -> bool {
    matches!(
        op,
        Op::Silu
            | Op::Gelu { .. }
            | Op::Relu
            | Op::Sigmoid
            | Op::Tanh
            | Op::Exp
            | Op::Neg
            | Op::Sqrt
            | Op::Rsqrt
            | Op::Reciprocal
            | Op::Cast { .. }
    )
}

pub(super) fn find_elementwise_of_gather(eg: &WEGraph, class: Id) -> Vec<Binding> {
    let mut out = vec![];
    for (i, op, ch) in ops(eg, class) {
        if is_unary_elementwise(op) {
            for (g, a, _, _) in gathers(eg, ch[0]) {
                out.push(vec![i as usize, g as usize, ix(a), ix(ch[0]), 2, ix(class)]);
            }
        } else if matches!(op, Op::Add | Op::Sub | Op::Mul | Op::Div) {
            for side in 0..2 {
                for (g, a, _, _) in gathers(eg, ch[side]) {
                    out.push(vec![
                        i as usize,
                        g as usize,
                        ix(a),
                        ix(ch[1 - side]),
                        side,
                        ix(class),
                    ]);
                }
            }
        }
    }
    out
}

pub(super) fn build_elementwise_onto_shard(eg: &mut WEGraph, b: &[usize], _: &Guards) -> Vec<Id> {
    let (op, gather, a, other, side, class) = (
        op_at(eg, b[0]),
        op_at(eg, b[1]),
        id(b[2]),
        id(b[3]),
        b[4],
        id(b[5]),
    );
    let Op::AllGather { axis, dim } = gather else {
        return vec![];
    };
    let (Some(sa), Some(out)) = (shape(eg, a), shape(eg, class)) else {
        return vec![];
    };
    // Only when the gathered operand spans the result (the other operand broadcasts into
    // it), so the result's gathered dim is the operand's.
    if out.len() != sa.len() {
        return vec![];
    }
    let d = if dim < 0 { dim + sa.len() as i64 } else { dim } as usize;
    // The piece computed on the shard has the result's layout, split on the axis.
    let whole = sharding(eg, class);
    let sharded = whole.clone().with(axis.clone(), Placement::Split(d));
    let inner = if side == 2 {
        add_op(eg, op, vec![a], sharded)
    } else {
        // The other operand must be whole on the axis; it is cut to this device's piece
        // where it has the gathered dim, and broadcast as it is where it does not.
        if sharding(eg, other).placement(&axis) != Placement::Replicate {
            return vec![];
        }
        let Some(so) = shape(eg, other) else {
            return vec![];
        };
        if so.len() > sa.len() {
            return vec![];
        }
        let n = axis_size(&eg.analysis, &axis);
        let od = d as i64 - (sa.len() - so.len()) as i64;
        let piece = if od < 0 || so[od as usize] == 1 {
            Some(other)
        } else if so[od as usize] == sa[d] * n {
            let s = sharding(eg, other).with(axis.clone(), Placement::Split(od as usize));
            add_op(
                eg,
                Op::AllSlice {
                    axis: axis.clone(),
                    dim: od,
                },
                vec![other],
                s,
            )
        } else {
            None
        };
        let Some(piece) = piece else { return vec![] };
        let children = if side == 0 {
            vec![a, piece]
        } else {
            vec![piece, a]
        };
        add_op(eg, op, children, sharded)
    };
    let Some(inner) = inner else { return vec![] };
    add_op(
        eg,
        Op::AllGather {
            axis,
            dim: d as i64,
        },
        vec![inner],
        whole,
    )
    .into_iter()
    .collect()
}

pub(super) fn find_slice_of_gather(eg: &WEGraph, class: Id) -> Vec<Binding> {
    let mut out = vec![];
    for (_, op, ch) in ops(eg, class) {
        let Op::AllSlice { axis, dim } = op else {
            continue;
        };
        let rank = shape(eg, class).map_or(0, |s| s.len()) as i64;
        let d = if *dim < 0 { dim + rank } else { *dim } as usize;
        for (_, x, a2, d2) in gathers(eg, ch[0]) {
            if a2 == *axis && d2 == d {
                out.push(vec![ix(x)]);
            }
        }
    }
    out
}

pub(super) fn build_slice_of_gather(_: &mut WEGraph, b: &[usize], _: &Guards) -> Vec<Id> {
    vec![id(b[0])]
}

pub(super) fn find_norm_of_gather(eg: &WEGraph, class: Id) -> Vec<Binding> {
    let mut out = vec![];
    for (i, op, ch) in ops(eg, class) {
        if !matches!(op, Op::RmsNorm { .. } | Op::LayerNorm { .. }) {
            continue;
        }
        for (g, a, _, d) in gathers(eg, ch[0]) {
            let rank = shape(eg, ch[0]).map_or(0, |s| s.len());
            if d + 1 < rank {
                let mut binding = vec![i as usize, g as usize, ix(a), ix(class)];
                binding.extend(ch[1..].iter().map(|&c| ix(c)));
                out.push(binding);
            }
        }
    }
    out
}

pub(super) fn build_norm_onto_shard(eg: &mut WEGraph, b: &[usize], _: &Guards) -> Vec<Id> {
    let (op, gather, a, class) = (op_at(eg, b[0]), op_at(eg, b[1]), id(b[2]), id(b[3]));
    let Op::AllGather { axis, dim } = gather else {
        return vec![];
    };
    let params: Vec<Id> = b[4..].iter().map(|&c| id(c)).collect();
    if params
        .iter()
        .any(|&p| sharding(eg, p).placement(&axis) != Placement::Replicate)
    {
        return vec![];
    }
    // The norm on the shard has the result's layout, split on the axis.
    let whole = sharding(eg, class);
    let rank = shape(eg, a).map_or(0, |s| s.len()) as i64;
    let d = if dim < 0 { dim + rank } else { dim } as usize;
    let sharded = whole.clone().with(axis.clone(), Placement::Split(d));
    let mut children = vec![a];
    children.extend(params);
    let Some(inner) = add_op(eg, op, children, sharded) else {
        return vec![];
    };
    add_op(
        eg,
        Op::AllGather {
            axis: axis.clone(),
            dim,
        },
        vec![inner],
        whole,
    )
    .into_iter()
    .collect()
}
