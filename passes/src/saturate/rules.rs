//! The rewrite rules, as named data.
//!
//! Every rule is exact (it preserves outputs up to float summation order) and says which
//! paper it comes from and what it needs. A rule is a `find` that looks at one e-class
//! and returns bindings, and a `build` that adds the equivalent nodes — each checked
//! against the IR's typing rules before it is added, Tensat's `CheckApply` discipline —
//! and returns the classes to union with the matched one. `docs/rewrites.md` documents
//! each rule at length; `weft rules` lists them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use egg::{Applier, Id, PatternAst, Rewrite, SearchMatches, Searcher, Subst, Symbol, Var};
use weft_ir::{Op, Placement, ReduceOp, Sharding};

use super::analysis::{Meta, WEGraph, WeftAnalysis, add_with};
use super::lang::{Head, WNode};

/// Limits on what rules may build, against blow-up.
#[derive(Clone, Debug)]
pub struct Guards {
    /// Fewest rows a piece may have (after a reduce-scatter, a chunk or a token split).
    pub min_rows: u64,
    /// Chunk counts the fused GEMM + reduce-scatter is offered with.
    pub chunk_counts: Vec<u64>,
    /// How many times a value may be split into halves along its tokens (or columns).
    pub split_depth: usize,
    /// Most steps one fused element-wise kernel may have.
    pub max_fused_steps: usize,
}

impl Default for Guards {
    fn default() -> Guards {
        Guards {
            min_rows: 8,
            chunk_counts: vec![1, 2, 4],
            split_depth: 1,
            max_fused_steps: 6,
        }
    }
}

/// Bindings of one match: e-classes and op-table indices, in the rule's own order.
type Binding = Vec<usize>;

/// One rewrite rule.
#[derive(Clone, Copy, Debug)]
pub struct RuleDef {
    pub name: &'static str,
    /// The phase it runs in: `collective`, `fusion` or `split`.
    pub ruleset: &'static str,
    /// Whether it preserves outputs (all of these do; model-changing rules are opt-in).
    pub exact: bool,
    pub paper: &'static str,
    /// One line: what it does and when it applies.
    pub doc: &'static str,
    find: fn(&WEGraph, Id) -> Vec<Binding>,
    build: fn(&mut WEGraph, &[usize], &Guards) -> Vec<Id>,
}

/// Every rule, in phase order.
pub const RULES: &[RuleDef] = &[
    RuleDef {
        name: "all-reduce-to-reduce-scatter-all-gather",
        ruleset: "collective",
        exact: true,
        paper: "T3 (ASPLOS 2024); TokenWeave (MLSys 2026)",
        doc: "all_reduce(x) = all_gather(reduce_scatter(x, d), d) along the token dim d, when it divides",
        find: find_all_reduce,
        build: build_all_reduce_split,
    },
    RuleDef {
        name: "reduce-scatter-all-gather-to-all-reduce",
        ruleset: "collective",
        exact: true,
        paper: "T3 (ASPLOS 2024)",
        doc: "all_gather(reduce_scatter(x, d), d) = all_reduce(x)",
        find: find_gather_of_scatter,
        build: build_all_reduce_merge,
    },
    RuleDef {
        name: "elementwise-onto-shard",
        ruleset: "collective",
        exact: true,
        paper: "TokenWeave (MLSys 2026); Megatron-SP (MLSys 2023)",
        doc: "f(all_gather(a), r) = all_gather(f(a, all_slice(r))) for element-wise f (the residual add among them), r whole on the axis",
        find: find_elementwise_of_gather,
        build: build_elementwise_onto_shard,
    },
    RuleDef {
        name: "slice-of-gather",
        ruleset: "collective",
        exact: true,
        paper: "MLIR shard dialect (all_slice ∘ all_gather folding); TokenWeave (MLSys 2026)",
        doc: "all_slice(all_gather(x, d), d) = x: a value gathered and cut again along the same dim is the shard itself (keeps the residual stream sharded)",
        find: find_slice_of_gather,
        build: build_slice_of_gather,
    },
    RuleDef {
        name: "norm-onto-shard",
        ruleset: "collective",
        exact: true,
        paper: "TokenWeave (MLSys 2026)",
        doc: "rms_norm(all_gather(a, d), w) = all_gather(rms_norm(a, w), d) when d is not the normalised dim (layer_norm likewise)",
        find: find_norm_of_gather,
        build: build_norm_onto_shard,
    },
    RuleDef {
        name: "gemm-reduce-scatter-fusion",
        ruleset: "fusion",
        exact: true,
        paper: "T3 (ASPLOS 2024); Flux GEMM+RS (2024)",
        doc: "reduce_scatter(matmul(a, b), d) = matmul_reduce_scatter(a, b, d, chunks) for each allowed chunk count",
        find: find_scatter_of_matmul,
        build: build_gemm_rs,
    },
    RuleDef {
        name: "all-gather-gemm-fusion",
        ruleset: "fusion",
        exact: true,
        paper: "XLA collective matmul (Wang et al., ASPLOS 2023); PyTorch async TP; Flux AG+GEMM (2024)",
        doc: "matmul(all_gather(a, d), b) = all_gather_matmul(a, b, d) when d is a row dim of a",
        find: find_matmul_of_gather,
        build: build_ag_gemm,
    },
    RuleDef {
        name: "elementwise-fusion",
        ruleset: "fusion",
        exact: true,
        paper: "TVM operator fusion (Chen et al., OSDI 2018); NVIDIA CUTLASS epilogues; Flux (2024) fused epilogues",
        doc: "an element-wise op on the result of an element-wise op, a fused kernel or a GEMM = one fused_elementwise kernel (bias, activation, gating, residual into their producer)",
        find: find_fusable,
        build: build_fused,
    },
    RuleDef {
        name: "token-split-matmul",
        ruleset: "split",
        exact: true,
        paper: "TokenWeave (MLSys 2026); NanoFlow (OSDI 2025); Domino (2024)",
        doc: "matmul(a, b) = concat(matmul(a[:m/2], b), matmul(a[m/2:], b)) along the rows, once per matmul, when the rows are not split on the mesh",
        find: find_splittable_matmul,
        build: build_token_split_matmul,
    },
    RuleDef {
        name: "token-split-all-reduce",
        ruleset: "split",
        exact: true,
        paper: "TokenWeave (MLSys 2026); Domino (2024)",
        doc: "all_reduce(x) = concat(all_reduce(x[:m/2]), all_reduce(x[m/2:])) along the token dim, once, so one half's communication can overlap the other's compute",
        find: find_splittable_all_reduce,
        build: build_token_split_all_reduce,
    },
    RuleDef {
        name: "slice-of-concat",
        ruleset: "split",
        exact: true,
        paper: "TokenWeave (MLSys 2026); NanoFlow (OSDI 2025)",
        doc: "slice(concat(x0, x1, ..), bounds of part i) = x_i: split halves flow from op to op without re-joining, so a whole layer runs as micro-batches",
        find: find_slice_of_concat,
        build: build_slice_of_concat,
    },
    RuleDef {
        name: "expert-gemm-split-columns",
        ruleset: "split",
        exact: true,
        paper: "Comet (MLSys 2025)",
        doc: "expert_matmul(x, c, w) = concat(expert_matmul(x, c, w[.., :n/2]), expert_matmul(x, c, w[.., n/2:])) along the output dim (Comet's second GEMM)",
        find: find_expert_matmul,
        build: build_expert_split_columns,
    },
    RuleDef {
        name: "expert-gemm-split-blocks",
        ruleset: "split",
        exact: true,
        paper: "Comet (MLSys 2025)",
        doc: "an expert matmul over blocked counts [B, E] (rows from B source devices) = the concat of B expert matmuls, one per block, so each block computes as it arrives (Comet's first GEMM, split along tokens)",
        find: find_blocked_expert_matmul,
        build: build_expert_split_blocks,
    },
];

/// The ops of a class's nodes, with their children.
fn ops<'a>(eg: &'a WEGraph, class: Id) -> impl Iterator<Item = (u32, &'a Op, &'a [Id])> + 'a {
    eg[class].nodes.iter().filter_map(move |n| match n.head {
        Head::Op(i) => Some((i, eg.analysis.ops.get(i), n.children.as_slice())),
        _ => None,
    })
}

fn meta(eg: &WEGraph, class: Id) -> &Meta {
    &eg[class].data
}

fn shape(eg: &WEGraph, class: Id) -> Option<Vec<u64>> {
    meta(eg, class)
        .ty()
        .and_then(|t| t.shape.eval(&eg.analysis.dims).ok())
}

fn sharding(eg: &WEGraph, class: Id) -> Sharding {
    meta(eg, class).sharding().cloned().unwrap_or_default()
}

/// Whether any mesh axis splits `dim` of the class's value.
fn dim_is_split(eg: &WEGraph, class: Id, dim: usize) -> bool {
    sharding(eg, class)
        .entries()
        .any(|(_, p)| p == Placement::Split(dim))
}

fn axis_size(a: &WeftAnalysis, axis: &str) -> u64 {
    a.mesh.axis_size(axis).unwrap_or(1)
}

/// Adds `op(children)` if it types, with the given sharding.
fn add_op(eg: &mut WEGraph, op: Op, children: Vec<Id>, sharding: Sharding) -> Option<Id> {
    let types: Vec<_> = children
        .iter()
        .map(|&c| meta(eg, c).ty().cloned())
        .collect::<Option<_>>()?;
    let refs: Vec<_> = types.iter().collect();
    let out = eg.analysis.type_op(&op, &refs).ok()?;
    if out.len() != 1 {
        return None;
    }
    let i = eg.analysis.ops.intern(&op, None);
    Some(add_with(
        eg,
        WNode {
            head: Head::Op(i),
            children,
        },
        vec![sharding],
    ))
}

fn op_at(eg: &WEGraph, i: usize) -> Op {
    eg.analysis.ops.get(i as u32).clone()
}

fn id(i: usize) -> Id {
    Id::from(i)
}

fn ix(id: Id) -> usize {
    usize::from(id)
}

/// The token (row) dim of a value: the one before the last.
fn token_dim(shape: &[u64]) -> Option<usize> {
    shape.len().checked_sub(2)
}

// ---- all-reduce ⇄ reduce-scatter + all-gather -------------------------------------------

fn find_all_reduce(eg: &WEGraph, class: Id) -> Vec<Binding> {
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

fn build_all_reduce_split(eg: &mut WEGraph, b: &[usize], g: &Guards) -> Vec<Id> {
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

fn find_gather_of_scatter(eg: &WEGraph, class: Id) -> Vec<Binding> {
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

fn build_all_reduce_merge(eg: &mut WEGraph, b: &[usize], _: &Guards) -> Vec<Id> {
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
fn gathers(eg: &WEGraph, class: Id) -> Vec<(u32, Id, String, usize)> {
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

fn is_unary_elementwise(op: &Op) -> bool {
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

fn find_elementwise_of_gather(eg: &WEGraph, class: Id) -> Vec<Binding> {
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

fn build_elementwise_onto_shard(eg: &mut WEGraph, b: &[usize], _: &Guards) -> Vec<Id> {
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

fn find_slice_of_gather(eg: &WEGraph, class: Id) -> Vec<Binding> {
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

fn build_slice_of_gather(_: &mut WEGraph, b: &[usize], _: &Guards) -> Vec<Id> {
    vec![id(b[0])]
}

fn find_norm_of_gather(eg: &WEGraph, class: Id) -> Vec<Binding> {
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

fn build_norm_onto_shard(eg: &mut WEGraph, b: &[usize], _: &Guards) -> Vec<Id> {
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

// ---- GEMM + collective fusion ----------------------------------------------------------

fn find_scatter_of_matmul(eg: &WEGraph, class: Id) -> Vec<Binding> {
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

fn build_gemm_rs(eg: &mut WEGraph, b: &[usize], g: &Guards) -> Vec<Id> {
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
    let mut added = vec![];
    for &c in &g.chunk_counts {
        if c == 0 || rows % (n * c) != 0 || rows / (n * c) < g.min_rows {
            continue;
        }
        let op = Op::MatMulReduceScatter {
            axis: axis.clone(),
            dim: d,
            chunks: c,
            transpose_b: tb,
        };
        added.extend(add_op(eg, op, vec![a, w], s.clone()));
    }
    added
}

fn find_matmul_of_gather(eg: &WEGraph, class: Id) -> Vec<Binding> {
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

fn build_ag_gemm(eg: &mut WEGraph, b: &[usize], _: &Guards) -> Vec<Id> {
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

fn find_fusable(eg: &WEGraph, class: Id) -> Vec<Binding> {
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

fn build_fused(eg: &mut WEGraph, b: &[usize], g: &Guards) -> Vec<Id> {
    use weft_ir::FusedStep;
    let (outer, inner, pos, other, class) =
        (op_at(eg, b[0]), op_at(eg, b[1]), b[2], id(b[3]), id(b[4]));
    let mut inputs: Vec<Id> = b[5..].iter().map(|&c| id(c)).collect();
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
    add_op(eg, Op::FusedElementwise { steps }, inputs, s)
        .into_iter()
        .collect()
}

// ---- token splitting ---------------------------------------------------------------------

/// Whether a class already holds a split form (a concat): it is split once only.
fn already_split(eg: &WEGraph, class: Id) -> bool {
    ops(eg, class).any(|(_, op, _)| matches!(op, Op::Concat { .. }))
}

/// How many slices deep a value is: a half of a half is 2.
fn slice_depth(eg: &WEGraph, class: Id, limit: usize) -> usize {
    if limit == 0 {
        return 0;
    }
    ops(eg, class)
        .filter(|(_, op, _)| matches!(op, Op::Slice { .. }))
        .map(|(_, _, ch)| 1 + slice_depth(eg, ch[0], limit - 1))
        .max()
        .unwrap_or(0)
}

fn halves(eg: &mut WEGraph, x: Id, dim: usize, rows: u64) -> Option<(Id, Id)> {
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

fn find_splittable_matmul(eg: &WEGraph, class: Id) -> Vec<Binding> {
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

fn build_token_split_matmul(eg: &mut WEGraph, b: &[usize], g: &Guards) -> Vec<Id> {
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

fn find_splittable_all_reduce(eg: &WEGraph, class: Id) -> Vec<Binding> {
    if already_split(eg, class) {
        return vec![];
    }
    ops(eg, class)
        .filter(|(_, op, _)| matches!(op, Op::AllReduce { .. }))
        .map(|(i, _, ch)| vec![i as usize, ix(ch[0]), ix(class)])
        .collect()
}

fn build_token_split_all_reduce(eg: &mut WEGraph, b: &[usize], g: &Guards) -> Vec<Id> {
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

fn find_slice_of_concat(eg: &WEGraph, class: Id) -> Vec<Binding> {
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

fn build_slice_of_concat(_: &mut WEGraph, b: &[usize], _: &Guards) -> Vec<Id> {
    vec![id(b[0])]
}

// ---- MoE: Comet's expert GEMM decomposition --------------------------------------------

fn find_expert_matmul(eg: &WEGraph, class: Id) -> Vec<Binding> {
    if already_split(eg, class) {
        return vec![];
    }
    ops(eg, class)
        .filter(|(_, op, _)| matches!(op, Op::ExpertMatMul { .. }))
        .map(|(i, _, ch)| vec![i as usize, ix(ch[0]), ix(ch[1]), ix(ch[2]), ix(class)])
        .collect()
}

fn build_expert_split_columns(eg: &mut WEGraph, b: &[usize], g: &Guards) -> Vec<Id> {
    let (op, x, counts, w, class) = (op_at(eg, b[0]), id(b[1]), id(b[2]), id(b[3]), id(b[4]));
    let Op::ExpertMatMul { transpose_b } = op else {
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

fn find_blocked_expert_matmul(eg: &WEGraph, class: Id) -> Vec<Binding> {
    find_expert_matmul(eg, class)
        .into_iter()
        .filter(|b| shape(eg, id(b[2])).is_some_and(|s| s.len() == 2 && s[0] >= 2))
        .collect()
}

fn build_expert_split_blocks(eg: &mut WEGraph, b: &[usize], _: &Guards) -> Vec<Id> {
    let (op, x, counts, w, class) = (op_at(eg, b[0]), id(b[1]), id(b[2]), id(b[3]), id(b[4]));
    let (Some(sx), Some(sc)) = (shape(eg, x), shape(eg, counts)) else {
        return vec![];
    };
    let blocks = sc[0];
    if sc.len() != 2 || blocks < 2 || sx[0] % blocks != 0 {
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

// ---- egg glue ----------------------------------------------------------------------------

const MAX_BINDING: usize = 16;

fn var(i: usize) -> Var {
    format!("?b{i}").parse().expect("a valid egg variable")
}

/// A rule as an egg searcher and applier, counting its matches.
#[derive(Debug)]
pub struct EggRule {
    def: RuleDef,
    guards: Guards,
    vars: Vec<Var>,
    pub matches: Arc<AtomicUsize>,
}

impl EggRule {
    pub fn new(def: RuleDef, guards: Guards) -> EggRule {
        EggRule {
            def,
            guards,
            vars: (0..MAX_BINDING).map(var).collect(),
            matches: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The egg rewrite, and the counter of its matches.
    pub fn rewrite(
        def: RuleDef,
        guards: Guards,
    ) -> (Rewrite<WNode, WeftAnalysis>, Arc<AtomicUsize>) {
        let searcher = EggRule::new(def, guards.clone());
        let counter = Arc::clone(&searcher.matches);
        let applier = EggRule::new(def, guards);
        let rw = Rewrite::new(def.name, searcher, applier).expect("rule variables are bound");
        (rw, counter)
    }
}

impl Searcher<WNode, WeftAnalysis> for EggRule {
    fn search_eclass_with_limit(
        &self,
        egraph: &WEGraph,
        eclass: Id,
        limit: usize,
    ) -> Option<SearchMatches<'_, WNode>> {
        let found = (self.def.find)(egraph, eclass);
        if found.is_empty() {
            return None;
        }
        let substs: Vec<Subst> = found
            .into_iter()
            .take(limit)
            .map(|binding| {
                let mut s = Subst::with_capacity(binding.len());
                for (k, v) in binding.into_iter().enumerate().take(MAX_BINDING) {
                    s.insert(self.vars[k], Id::from(v));
                }
                s
            })
            .collect();
        self.matches.fetch_add(substs.len(), Ordering::Relaxed);
        Some(SearchMatches {
            eclass,
            substs,
            ast: None,
        })
    }

    fn vars(&self) -> Vec<Var> {
        vec![]
    }
}

impl Applier<WNode, WeftAnalysis> for EggRule {
    fn apply_one(
        &self,
        egraph: &mut WEGraph,
        eclass: Id,
        subst: &Subst,
        _ast: Option<&PatternAst<WNode>>,
        _rule: Symbol,
    ) -> Vec<Id> {
        let binding: Vec<usize> = self
            .vars
            .iter()
            .map_while(|v| subst.get(*v).map(|&i| usize::from(i)))
            .collect();
        let mut changed = vec![];
        for new in (self.def.build)(egraph, &binding, &self.guards) {
            if egraph.union_trusted(eclass, new, self.def.name) {
                egraph
                    .analysis
                    .applications
                    .push((self.def.name, eclass, new));
                changed.push(eclass);
            }
        }
        changed
    }
}
