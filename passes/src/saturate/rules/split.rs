//! Token splitting, slice-of-concat and Comet's expert-GEMM splits.

use egg::Id;
use weft_ir::Op;

use super::*;

// ---- token splitting ---------------------------------------------------------------------

/// Whether a class already holds a split form (a concat): it is split once only.
fn already_split(eg: &WEGraph, class: Id) -> bool {
    ops(eg, class).any(|(_, op, _)| matches!(op, Op::Concat { .. }))
}

/// How many slices deep a value is: a half of a half is 2.
pub(super) fn slice_depth(eg: &WEGraph, class: Id, limit: usize) -> usize {
    if limit == 0 {
        return 0;
    }
    ops(eg, class)
        .filter(|(_, op, _)| matches!(op, Op::Slice { .. }))
        .map(|(_, _, ch)| 1 + slice_depth(eg, ch[0], limit - 1))
        .max()
        .unwrap_or(0)
}

/// The two token halves of `x` along `dim` (of extent `rows`), as slices.
pub(super) fn halves(eg: &mut WEGraph, x: Id, dim: usize, rows: u64) -> Option<(Id, Id)> {
    let s = sharding(eg, x);
    let h = (rows / 2) as i64;
    let lo = add_op(
        eg,
        Op::Slice {
            axis: dim as i64,
            start: 0,
            end: h,
        },
        vec![x],
        s.clone(),
    )?;
    let hi = add_op(
        eg,
        Op::Slice {
            axis: dim as i64,
            start: h,
            end: 2 * h,
        },
        vec![x],
        s,
    )?;
    Some((lo, hi))
}

pub(super) fn find_splittable_matmul(eg: &WEGraph, class: Id) -> Vec<Binding> {
    if already_split(eg, class) {
        return vec![];
    }
    ops(eg, class)
        .filter(|(_, op, _)| {
            matches!(
                op,
                Op::MatMul {
                    transpose_a: false,
                    ..
                }
            )
        })
        .map(|(i, _, ch)| vec![i as usize, ix(ch[0]), ix(ch[1]), ix(class)])
        .collect()
}

pub(super) fn build_token_split_matmul(eg: &mut WEGraph, b: &[usize], g: &Guards) -> Vec<Id> {
    let (op, a, w, class) = (op_at(eg, b[0]), id(b[1]), id(b[2]), id(b[3]));
    let Some(sa) = shape(eg, a) else {
        return vec![];
    };
    let Some(t) = token_dim(&sa) else {
        return vec![];
    };
    let rows = sa[t];
    if rows % 2 != 0
        || rows / 2 < g.min_rows
        || dim_is_split(eg, a, t)
        || slice_depth(eg, a, g.split_depth) >= g.split_depth
    {
        return vec![];
    }
    let out_rank = shape(eg, class).map_or(0, |s| s.len());
    let s = sharding(eg, class);
    let Some((lo, hi)) = halves(eg, a, t, rows) else {
        return vec![];
    };
    let (Some(m0), Some(m1)) = (
        add_op(eg, op.clone(), vec![lo, w], s.clone()),
        add_op(eg, op, vec![hi, w], s.clone()),
    ) else {
        return vec![];
    };
    add_op(
        eg,
        Op::Concat {
            axis: out_rank as i64 - 2,
        },
        vec![m0, m1],
        s,
    )
    .into_iter()
    .collect()
}

pub(super) fn find_splittable_all_reduce(eg: &WEGraph, class: Id) -> Vec<Binding> {
    if already_split(eg, class) {
        return vec![];
    }
    ops(eg, class)
        .filter(|(_, op, _)| matches!(op, Op::AllReduce { .. }))
        .map(|(i, _, ch)| vec![i as usize, ix(ch[0]), ix(class)])
        .collect()
}

pub(super) fn build_token_split_all_reduce(eg: &mut WEGraph, b: &[usize], g: &Guards) -> Vec<Id> {
    let (op, x, class) = (op_at(eg, b[0]), id(b[1]), id(b[2]));
    let Some(sx) = shape(eg, x) else {
        return vec![];
    };
    let Some(t) = token_dim(&sx) else {
        return vec![];
    };
    let rows = sx[t];
    if rows % 2 != 0
        || rows / 2 < g.min_rows
        || dim_is_split(eg, x, t)
        || slice_depth(eg, x, g.split_depth) >= g.split_depth
    {
        return vec![];
    }
    let s = sharding(eg, class);
    let Some((lo, hi)) = halves(eg, x, t, rows) else {
        return vec![];
    };
    let (Some(r0), Some(r1)) = (
        add_op(eg, op.clone(), vec![lo], s.clone()),
        add_op(eg, op, vec![hi], s.clone()),
    ) else {
        return vec![];
    };
    add_op(eg, Op::Concat { axis: t as i64 }, vec![r0, r1], s)
        .into_iter()
        .collect()
}

pub(super) fn find_slice_of_concat(eg: &WEGraph, class: Id) -> Vec<Binding> {
    let mut out = vec![];
    for (_, op, ch) in ops(eg, class) {
        let Op::Slice { axis, start, end } = op else {
            continue;
        };
        let Some(rank) = shape(eg, ch[0]).map(|s| s.len() as i64) else {
            continue;
        };
        let a = if *axis < 0 { axis + rank } else { *axis };
        for (_, inner, parts) in ops(eg, ch[0]) {
            let Op::Concat { axis: ca } = inner else {
                continue;
            };
            let ca = if *ca < 0 { ca + rank } else { *ca };
            if ca != a {
                continue;
            }
            // Find the part whose bounds are exactly [start, end).
            let mut offset = 0i64;
            for &p in parts {
                let len = shape(eg, p).map_or(0, |s| s[a as usize] as i64);
                if offset == *start && offset + len == *end {
                    out.push(vec![ix(p)]);
                }
                offset += len;
            }
        }
    }
    out
}

pub(super) fn build_slice_of_concat(_: &mut WEGraph, b: &[usize], _: &Guards) -> Vec<Id> {
    vec![id(b[0])]
}

// ---- MoE: Comet's expert GEMM decomposition --------------------------------------------

pub(super) fn find_expert_matmul(eg: &WEGraph, class: Id) -> Vec<Binding> {
    if already_split(eg, class) {
        return vec![];
    }
    ops(eg, class)
        .filter(|(_, op, _)| matches!(op, Op::ExpertMatMul { .. }))
        .map(|(i, _, ch)| vec![i as usize, ix(ch[0]), ix(ch[1]), ix(ch[2]), ix(class)])
        .collect()
}

pub(super) fn build_expert_split_columns(eg: &mut WEGraph, b: &[usize], g: &Guards) -> Vec<Id> {
    let (op, x, counts, w, class) = (op_at(eg, b[0]), id(b[1]), id(b[2]), id(b[3]), id(b[4]));
    let Op::ExpertMatMul { transpose_b, .. } = op else {
        return vec![];
    };
    let Some(sw) = shape(eg, w) else {
        return vec![];
    };
    let ndim = if transpose_b { 1 } else { 2 };
    let n = sw[ndim];
    if n % 2 != 0
        || n / 2 < g.min_rows
        || dim_is_split(eg, w, ndim)
        || slice_depth(eg, w, g.split_depth) >= g.split_depth
    {
        return vec![];
    }
    let s = sharding(eg, class);
    let Some((w0, w1)) = halves(eg, w, ndim, n) else {
        return vec![];
    };
    let (Some(e0), Some(e1)) = (
        add_op(eg, op.clone(), vec![x, counts, w0], s.clone()),
        add_op(eg, op, vec![x, counts, w1], s.clone()),
    ) else {
        return vec![];
    };
    add_op(eg, Op::Concat { axis: -1 }, vec![e0, e1], s)
        .into_iter()
        .collect()
}

pub(super) fn find_blocked_expert_matmul(eg: &WEGraph, class: Id) -> Vec<Binding> {
    find_expert_matmul(eg, class)
        .into_iter()
        .filter(|b| shape(eg, id(b[2])).is_some_and(|s| s.len() == 2 && s[0] >= 2))
        .collect()
}

pub(super) fn build_expert_split_blocks(eg: &mut WEGraph, b: &[usize], _: &Guards) -> Vec<Id> {
    let (op, x, counts, w, class) = (op_at(eg, b[0]), id(b[1]), id(b[2]), id(b[3]), id(b[4]));
    let (Some(sx), Some(sc)) = (shape(eg, x), shape(eg, counts)) else {
        return vec![];
    };
    let blocks = sc[0];
    // Row blocks of a value split along its rows on the mesh are no rows of the global
    // value (nor are blocks of split counts), so no slice of them keeps its label.
    if sc.len() != 2
        || blocks < 2
        || sx[0] % blocks != 0
        || dim_is_split(eg, x, 0)
        || dim_is_split(eg, counts, 0)
    {
        return vec![];
    }
    let per = (sx[0] / blocks) as i64;
    let (sx_s, sc_s, s) = (sharding(eg, x), sharding(eg, counts), sharding(eg, class));
    let mut pieces = vec![];
    for k in 0..blocks as i64 {
        let rows = add_op(
            eg,
            Op::Slice {
                axis: 0,
                start: k * per,
                end: (k + 1) * per,
            },
            vec![x],
            sx_s.clone(),
        );
        let c = add_op(
            eg,
            Op::Slice {
                axis: 0,
                start: k,
                end: k + 1,
            },
            vec![counts],
            sc_s.clone(),
        );
        let (Some(rows), Some(c)) = (rows, c) else {
            return vec![];
        };
        match add_op(eg, op.clone(), vec![rows, c, w], s.clone()) {
            Some(p) => pieces.push(p),
            None => return vec![],
        }
    }
    add_op(eg, Op::Concat { axis: 0 }, pieces, s)
        .into_iter()
        .collect()
}
