//! GEMM + collective fusion and element-wise fusion.

use egg::Id;
use weft_ir::{Op, ReduceOp};

use super::collective::{gathers, is_unary_elementwise};
use super::*;

// ---- GEMM + collective fusion ----------------------------------------------------------

pub(super) fn find_scatter_of_matmul(eg: &WEGraph, class: Id) -> Vec<Binding> {
    let mut out = vec![];
    for (i, op, ch) in ops(eg, class) {
        let Op::ReduceScatter {
            op: ReduceOp::Sum, ..
        } = op
        else {
            continue;
        };
        for (j, inner, ch2) in ops(eg, ch[0]) {
            if let Op::MatMul {
                transpose_a: false, ..
            } = inner
            {
                out.push(vec![
                    i as usize,
                    j as usize,
                    ix(ch2[0]),
                    ix(ch2[1]),
                    ix(class),
                ]);
            }
        }
    }
    out
}

pub(super) fn build_gemm_rs(eg: &mut WEGraph, b: &[usize], g: &Guards) -> Vec<Id> {
    let (rs, mm, a, w, class) = (
        op_at(eg, b[0]),
        op_at(eg, b[1]),
        id(b[2]),
        id(b[3]),
        id(b[4]),
    );
    let (
        Op::ReduceScatter { axis, dim, .. },
        Op::MatMul {
            transpose_b: tb, ..
        },
    ) = (rs, mm)
    else {
        return vec![];
    };
    // The scattered dim is one of the product's (whose rank is the reduce-scatter's).
    let Some(out) = shape(eg, class) else {
        return vec![];
    };
    let rank = out.len() as i64;
    let d = if dim < 0 { dim + rank } else { dim };
    if d < 0 || d + 1 >= rank {
        return vec![]; // scattering the GEMM's columns is not a row-chunked fusion
    }
    let n = axis_size(&eg.analysis, &axis);
    let rows = out[d as usize] * n;
    // The fused op's result is the reduce-scatter's: the same sharding.
    let s = sharding(eg, class);
    // One fused node: how many chunks its kernel pipelines is the plan's choice.
    if rows % n != 0 || rows / n < g.min_rows {
        return vec![];
    }
    let op = Op::MatMulReduceScatter {
        axis: axis.clone(),
        dim: d,
        transpose_b: tb,
    };
    add_op(eg, op, vec![a, w], s).into_iter().collect()
}

pub(super) fn find_matmul_of_gather(eg: &WEGraph, class: Id) -> Vec<Binding> {
    let mut out = vec![];
    for (i, op, ch) in ops(eg, class) {
        if !matches!(
            op,
            Op::MatMul {
                transpose_a: false,
                ..
            }
        ) {
            continue;
        }
        let rank = shape(eg, ch[0]).map_or(0, |s| s.len());
        for (gi, a, _, d) in gathers(eg, ch[0]) {
            if d + 1 < rank {
                out.push(vec![i as usize, gi as usize, ix(a), ix(ch[1]), ix(class)]);
            }
        }
    }
    out
}

pub(super) fn build_ag_gemm(eg: &mut WEGraph, b: &[usize], _: &Guards) -> Vec<Id> {
    let (mm, gather, a, w, class) = (
        op_at(eg, b[0]),
        op_at(eg, b[1]),
        id(b[2]),
        id(b[3]),
        id(b[4]),
    );
    let (
        Op::MatMul {
            transpose_b: tb, ..
        },
        Op::AllGather { axis, dim },
    ) = (mm, gather)
    else {
        return vec![];
    };
    let s = sharding(eg, class);
    add_op(
        eg,
        Op::AllGatherMatMul {
            axis,
            dim,
            transpose_b: tb,
        },
        vec![a, w],
        s,
    )
    .into_iter()
    .collect()
}

// ---- element-wise fusion -----------------------------------------------------------------

/// Ops a fused kernel takes as a unary step.
fn is_fusable_unary(op: &Op) -> bool {
    is_unary_elementwise(op) && !matches!(op, Op::Cast { .. })
}

fn is_fusable_binary(op: &Op) -> bool {
    matches!(op, Op::Add | Op::Sub | Op::Mul | Op::Div)
}

pub(super) fn find_fusable(eg: &WEGraph, class: Id) -> Vec<Binding> {
    let mut out = vec![];
    for (i, op, ch) in ops(eg, class) {
        let positions: &[usize] = if is_fusable_unary(op) {
            &[0]
        } else if is_fusable_binary(op) {
            &[0, 1]
        } else {
            continue;
        };
        for &pos in positions {
            for (j, inner, inner_ch) in ops(eg, ch[pos]) {
                let fusable = is_fusable_unary(inner)
                    || is_fusable_binary(inner)
                    || matches!(inner, Op::FusedElementwise { .. })
                    || matches!(
                        inner,
                        Op::MatMul {
                            transpose_a: false,
                            ..
                        }
                    );
                if !fusable || inner_ch.len() + 5 > MAX_BINDING {
                    continue;
                }
                // [outer op, inner op, position, other operand (or the class), class,
                //  inner children...]
                let other = if ch.len() == 2 { ch[1 - pos] } else { class };
                let mut b = vec![i as usize, j as usize, pos, ix(other), ix(class)];
                b.extend(inner_ch.iter().map(|&c| ix(c)));
                out.push(b);
            }
        }
    }
    out
}

pub(super) fn build_fused(eg: &mut WEGraph, b: &[usize], g: &Guards) -> Vec<Id> {
    use weft_ir::FusedStep;
    let (pos, other, class) = (b[2], id(b[3]), id(b[4]));
    let mut inputs: Vec<Id> = b[5..].iter().map(|&c| id(c)).collect();
    // The fused op is a function of the two ops, the position and the inner op's inputs
    // count: once made and interned, its index is reused rather than its steps built and
    // its key (the whole program, formatted) made again.
    let made = (b[0] as u32, b[1] as u32, pos, inputs.len());
    if let Some(&i) = eg.analysis.fused_ops.get(&made) {
        if is_fusable_binary(&op_at(eg, b[0])) {
            inputs.push(other);
        }
        let s = sharding(eg, class);
        return add_op_at(eg, i as usize, inputs, s).into_iter().collect();
    }
    let (outer, inner) = (op_at(eg, b[0]), op_at(eg, b[1]));
    let mut steps = match inner {
        Op::FusedElementwise { steps } => steps,
        Op::MatMul { transpose_b, .. } => vec![FusedStep::Matmul {
            operand: 1,
            transpose_b,
        }],
        op if is_fusable_binary(&op) => vec![FusedStep::Binary {
            op: Box::new(op),
            operand: 1,
            swap: false,
        }],
        op => vec![FusedStep::Unary { op: Box::new(op) }],
    };
    if is_fusable_binary(&outer) {
        inputs.push(other);
        steps.push(FusedStep::Binary {
            op: Box::new(outer),
            operand: inputs.len() - 1,
            swap: pos == 1,
        });
    } else {
        steps.push(FusedStep::Unary {
            op: Box::new(outer),
        });
    }
    if steps.len() > g.max_fused_steps {
        return vec![];
    }
    let s = sharding(eg, class);
    let Some((built, i)) = add_op_indexed(eg, Op::FusedElementwise { steps }, inputs, s) else {
        return vec![];
    };
    eg.analysis.fused_ops.insert(made, i);
    vec![built]
}
