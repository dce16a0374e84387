//! Token-split chains: once a value is split into two token halves (a `concat` of two
//! halves in its class, from `token-split-matmul` or `token-split-all-reduce`), the
//! row-wise ops that read it are split the same way, so both halves flow through the
//! residual add, the norm, the next GEMM and the MLP's activation without re-joining —
//! TokenWeave's, NanoFlow's and Domino's two micro-batches per layer.
//!
//! Each rule here is `f(x, w…) = concat(f(x[:m/2], w'…), f(x[m/2:], w''…), t)` along the
//! result's token dim `t` (the one before the last) for a row-wise `f`: every output row
//! reads only the same row of each operand. An operand that broadcasts along `t` (it has
//! no such dim, or extent 1 there) is used whole; one that spans `t` is sliced at the same
//! bounds — `slice-of-concat` then folds a slice of an already split value into its half,
//! which is what carries the halves from op to op. A GEMM's weight (the `matmul` step of
//! a fused kernel) is used whole. The split goes along `t` only when neither the result
//! nor a sliced operand is split along it on the mesh.
//!
//! Against blow-up: a node is split only when it touches a split value — a sliced operand
//! whose class holds a concat of exactly two halves along the sliced dim, or its own class
//! holding one (a sibling form was split: the fused kernel beside the add it fuses) — and
//! never when a sliced operand is itself a half (`Guards::split_depth`), so halves are
//! not halved again and each node is split at most once (the e-graph's hash-consing makes
//! a second application build nothing new).

use egg::Id;
use weft_ir::{FusedStep, Op};

use super::collective::is_unary_elementwise;
use super::split::{halves, slice_depth};
use super::*;

/// How one operand of a split op is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// Used whole by both halves: it broadcasts along the token dim, or it is a GEMM weight.
    Whole,
    /// Sliced along this dim of its own, the one aligned with the result's token dim.
    Rows(usize),
}

/// The element-wise ops split by `token-split-elementwise`.
fn is_chain_elementwise(op: &Op) -> bool {
    is_unary_elementwise(op)
        || matches!(
            op,
            Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Pow | Op::Where
        )
}

/// Ops normalising over one axis, split by `token-split-norm`: RMSNorm and LayerNorm
/// over the last dim, softmax over any axis but the token dim (checked in [`cuts`]).
fn is_chain_norm(op: &Op) -> bool {
    matches!(
        op,
        Op::RmsNorm { .. } | Op::LayerNorm { .. } | Op::Softmax { .. }
    )
}

/// How each operand of `op` is cut when its result (of shape `out`) is split along the
/// token dim, or `None` when the op is not row-wise there.
fn cuts(op: &Op, ins: &[Vec<u64>], out: &[u64]) -> Option<Vec<Cut>> {
    let t = token_dim(out)?;
    let rank = out.len();
    if let Op::Softmax { axis } = op {
        let a = if *axis < 0 {
            *axis + rank as i64
        } else {
            *axis
        };
        if a == t as i64 {
            return None; // softmax along the tokens mixes rows
        }
    }
    // The GEMM weight of a fused kernel, read whole by both halves.
    let weight = match op {
        Op::FusedElementwise { steps } => match steps.first() {
            Some(FusedStep::Matmul { operand, .. }) => Some(*operand),
            _ => None,
        },
        _ => None,
    };
    let mut out_cuts = Vec::with_capacity(ins.len());
    for (i, s) in ins.iter().enumerate() {
        if Some(i) == weight {
            out_cuts.push(Cut::Whole);
            continue;
        }
        // Operands broadcast against the result right-aligned (NumPy); the norms' weights
        // and the rope tables follow the same alignment.
        if s.len() > rank {
            return None;
        }
        let d = t as i64 - (rank - s.len()) as i64;
        if d < 0 || s[d as usize] == 1 {
            out_cuts.push(Cut::Whole);
        } else if s[d as usize] == out[t] {
            out_cuts.push(Cut::Rows(d as usize));
        } else {
            return None;
        }
    }
    // The running value of a fused kernel (input 0) and a norm's or rope's input carry
    // the rows; a GEMM's rows must be input 0's.
    if weight.is_some() && out_cuts.first() != Some(&Cut::Rows(t)) {
        return None;
    }
    Some(out_cuts)
}

/// Whether `class` holds a concat of exactly two halves of `rows` along `dim`.
fn holds_halves(eg: &WEGraph, class: Id, dim: usize, rows: u64) -> bool {
    let Some(rank) = shape(eg, class).map(|s| s.len() as i64) else {
        return false;
    };
    ops(eg, class).any(|(_, op, parts)| {
        let Op::Concat { axis } = op else {
            return false;
        };
        let a = if *axis < 0 { axis + rank } else { *axis };
        a == dim as i64
            && parts.len() == 2
            && parts
                .iter()
                .all(|&p| shape(eg, p).is_some_and(|s| 2 * s[dim] == rows))
    })
}

/// The cut of each child, the token dim and its rows, when a node `op(children)` in
/// `class` touches a split value and may be split. `find` asks without the guards (the
/// size and depth limits), `build` with them, as the other split rules do.
fn plan(
    eg: &WEGraph,
    op: &Op,
    class: Id,
    children: &[Id],
    guards: Option<&Guards>,
) -> Option<(Vec<Cut>, usize, u64)> {
    let out = shape(eg, class)?;
    let t = token_dim(&out)?;
    let rows = out[t];
    let min_rows = guards.map_or(1, |g| g.min_rows);
    if rows % 2 != 0 || rows / 2 < min_rows || dim_is_split(eg, class, t) {
        return None;
    }
    let ins: Vec<Vec<u64>> = children
        .iter()
        .map(|&c| shape(eg, c))
        .collect::<Option<_>>()?;
    let cut = cuts(op, &ins, &out)?;
    let sliced: Vec<(Id, usize)> = children
        .iter()
        .zip(&cut)
        .filter_map(|(&c, k)| match k {
            Cut::Rows(d) => Some((c, *d)),
            Cut::Whole => None,
        })
        .collect();
    if sliced.is_empty()
        || sliced.iter().any(|&(c, d)| {
            dim_is_split(eg, c, d)
                || guards.is_some_and(|g| slice_depth(eg, c, g.split_depth) >= g.split_depth)
        })
    {
        return None;
    }
    let touches = holds_halves(eg, class, t, rows)
        || sliced.iter().any(|&(c, d)| holds_halves(eg, c, d, rows));
    touches.then_some((cut, t, rows))
}

/// Bindings `[op index, class, children…]` of the nodes in `class` that `wanted` accepts
/// and that touch a split value.
fn find_chain(eg: &WEGraph, class: Id, wanted: fn(&Op) -> bool) -> Vec<Binding> {
    // Every class is searched in every iteration: rule out, before evaluating any shape,
    // the nodes near no concat at all (most of them).
    let joined = |c: Id| ops(eg, c).any(|(_, op, _)| matches!(op, Op::Concat { .. }));
    let class_joined = joined(class);
    ops(eg, class)
        .filter(|(_, op, ch)| wanted(op) && ch.len() + 2 <= MAX_BINDING)
        .filter(|(_, _, ch)| class_joined || ch.iter().any(|&c| joined(c)))
        .filter(|&(i, _, ch)| !(class_joined && split_done(eg, class, i, ch)))
        .filter(|(_, op, ch)| plan(eg, op, class, ch, None).is_some())
        .map(|(i, _, ch)| {
            let mut b = vec![i as usize, ix(class)];
            b.extend(ch.iter().map(|&c| ix(c)));
            b
        })
        .collect()
}

/// Whether the node `head(children)` in `class` was split already: the class holds a
/// concat whose first part holds the same op over the same children or slices from their
/// start. Every class is searched again in each iteration, and building a split that
/// exists types and checks every piece again before hash-consing finds it, so a node
/// split once is not matched again.
fn split_done(eg: &WEGraph, class: Id, head: u32, children: &[Id]) -> bool {
    let slice_of = |piece: Id, whole: Id| {
        ops(eg, piece).any(|(_, op, ch)| {
            matches!(op, Op::Slice { start: 0, .. }) && eg.find(ch[0]) == eg.find(whole)
        })
    };
    ops(eg, class).any(|(_, op, parts)| {
        matches!(op, Op::Concat { .. })
            && parts.len() == 2
            && eg[parts[0]].nodes.iter().any(|n| {
                n.head == Head::Op(head)
                    && n.children.len() == children.len()
                    && n.children
                        .iter()
                        .zip(children)
                        .all(|(&a, &c)| eg.find(a) == eg.find(c) || slice_of(a, c))
            })
    })
}

pub(super) fn find_chain_elementwise(eg: &WEGraph, class: Id) -> Vec<Binding> {
    find_chain(eg, class, is_chain_elementwise)
}

pub(super) fn find_chain_norm(eg: &WEGraph, class: Id) -> Vec<Binding> {
    find_chain(eg, class, is_chain_norm)
}

pub(super) fn find_chain_rope(eg: &WEGraph, class: Id) -> Vec<Binding> {
    find_chain(eg, class, |op| matches!(op, Op::Rope { .. }))
}

pub(super) fn find_chain_fused(eg: &WEGraph, class: Id) -> Vec<Binding> {
    find_chain(eg, class, |op| matches!(op, Op::FusedElementwise { .. }))
}

/// `concat(op(lo…), op(hi…), t)`: each `Rows` child sliced into halves, the rest whole.
pub(super) fn build_chain(eg: &mut WEGraph, b: &[usize], g: &Guards) -> Vec<Id> {
    let (op, class) = (op_at(eg, b[0]), id(b[1]));
    let children: Vec<Id> = b[2..].iter().map(|&c| id(c)).collect();
    let Some((cut, t, _)) = plan(eg, &op, class, &children, Some(g)) else {
        return vec![];
    };
    let (mut lo, mut hi) = (Vec::new(), Vec::new());
    for (&c, k) in children.iter().zip(&cut) {
        match *k {
            Cut::Whole => {
                lo.push(c);
                hi.push(c);
            }
            Cut::Rows(d) => {
                let Some(rows) = shape(eg, c).map(|s| s[d]) else {
                    return vec![];
                };
                let Some((l, h)) = halves(eg, c, d, rows) else {
                    return vec![];
                };
                lo.push(l);
                hi.push(h);
            }
        }
    }
    let s = sharding(eg, class);
    let (Some(f0), Some(f1)) = (
        add_op_at(eg, b[0], lo, s.clone()),
        add_op_at(eg, b[0], hi, s.clone()),
    ) else {
        return vec![];
    };
    add_op(eg, Op::Concat { axis: t as i64 }, vec![f0, f1], s)
        .into_iter()
        .collect()
}
