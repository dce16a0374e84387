//! Per-op sharding rules, one mesh axis at a time.
//!
//! A rule sees each input's placement along the axis (and whether the input is a
//! *source* — a graph input, weight or constant, which can be laid out any way for
//! free) and answers with the placements it wants its inputs in and the placements of
//! its outputs. The driver then inserts the collectives that move each input from where
//! it is to where the rule wants it. Every rule is exact: when an op cannot compute on
//! pieces, the rule asks for whole (replicated) inputs rather than guess.

use weft_ir::{Node, Op, Placement, ReduceKind, ReduceOp};

use super::ShardError;

use Placement::{Partial, Replicate as R, Split as S};

const SUM: Placement = Partial(ReduceOp::Sum);

/// One input of the node, as the rule sees it along one axis.
pub(super) struct In {
    pub placement: Placement,
    /// Logical (whole-tensor) shape.
    pub shape: Vec<u64>,
    /// A graph input, weight or constant not yet laid out: any placement is free.
    pub free: bool,
    /// Float (not integer or bool) elements: integer division is not linear.
    pub float: bool,
}

/// The mesh axis a rule runs for.
pub(super) struct Axis<'a> {
    pub name: &'a str,
    pub size: u64,
    /// Megatron-style tensor parallelism (column/row-parallel weights, heads,
    /// vocabulary) runs on the `tp` axis only.
    pub megatron: bool,
    /// Megatron-SP: norms (and the residual stream) on sequence shards of `tp`.
    pub sp_norms: bool,
    /// Ulysses sequence parallelism (the `sp` axis): attention swaps sequence shards for
    /// head shards with an all-to-all, and back.
    pub ulysses: bool,
}

/// What a rule decided.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub inputs: Vec<Placement>,
    pub outputs: Vec<Placement>,
    /// Attention whose KV heads are fewer than the devices: each device's KV head is cut
    /// out of the replicated K and V (vLLM's KV-head replication).
    pub repeat_kv: Option<u64>,
    /// A row-split embedding table looked up with global indices.
    pub vocab_parallel: bool,
    /// Move the (single) output back to this placement right after the op: Ulysses
    /// returns attention's head-split output to sequence shards.
    pub restore: Option<Placement>,
    /// A split the rule would have made but a size does not divide over the axis, so the
    /// op runs on whole operands: the size and what it measures (`100`, `the weight's
    /// output columns`). The driver reports it: the user asked this axis to split the work.
    pub unsplit: Option<(u64, String)>,
}

/// Why splitting a matmul result's last dim does not survive its consumers.
#[derive(Debug)]
pub(super) enum Blocked {
    /// A consumer needs the whole row (softmax, a norm, routing): no split was possible.
    NeedsWhole,
    /// A consumer could keep the split, but a size does not divide: the size and what it
    /// measures.
    Indivisible(u64, String),
}

/// Context a rule needs beyond the inputs: the node and its outputs' logical shapes,
/// plus a look-ahead telling whether splitting a value's dim survives its consumers.
pub(super) struct Site<'a> {
    pub node: &'a Node,
    pub out_shapes: Vec<Vec<u64>>,
    pub column_survives: &'a dyn Fn(u64) -> Result<(), Blocked>,
    /// Rows of the largest embedding table in the graph: the vocabulary.
    pub vocab_rows: u64,
}

fn divides(n: u64, size: u64) -> bool {
    n > 0 && n % size == 0
}

/// The input placements all replicated (partial inputs reduced first).
fn all_whole(ins: &[In]) -> Vec<Placement> {
    ins.iter().map(|_| R).collect()
}

fn plan(inputs: Vec<Placement>, outputs: Vec<Placement>) -> Plan {
    Plan {
        inputs,
        outputs,
        ..Plan::default()
    }
}

/// Whole operands because `size` (measuring `what`) does not divide over the axis
/// (reported by the driver).
fn unsplit(ins: &[In], n_out: usize, size: u64, what: String) -> Plan {
    Plan {
        unsplit: Some((size, what)),
        ..plan(all_whole(ins), vec![R; n_out])
    }
}

/// The rule for one node along one axis.
pub(super) fn rule(site: &Site<'_>, ins: &[In], ax: &Axis<'_>) -> Result<Plan, ShardError> {
    let node = site.node;
    let out_rank = |i: usize| site.out_shapes[i].len();
    let n_out = site.out_shapes.len();
    let replicated = || plan(all_whole(ins), vec![R; n_out]);
    Ok(match &node.op {
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Pow | Op::Where => {
            elementwise(&node.op, ins, &site.out_shapes[0], ax)
        }
        // Negation is linear: partial sums stay partial (a partial max does not).
        Op::Neg => match ins[0].placement {
            Partial(ReduceOp::Max) => replicated(),
            p => plan(vec![p], vec![p]),
        },
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
            Partial(_) => replicated(),
            p => plan(vec![p], vec![p]),
        },
        Op::Softmax { axis } => {
            let a = norm(*axis, ins[0].shape.len());
            keep_unless(ins[0].placement, &[a])
        }
        Op::TopK { axis, .. } => {
            let a = norm(*axis, ins[0].shape.len());
            let p = match ins[0].placement {
                S(d) if d != a => S(d),
                _ => R,
            };
            plan(vec![p], vec![p, p])
        }
        Op::RmsNorm { .. } | Op::LayerNorm { .. } => {
            let last = ins[0].shape.len() - 1;
            // Megatron-SP: normalise this device's tokens only (the sequence dim is the
            // one before the hidden dim), after a reduce-scatter instead of an all-reduce.
            let seq = ins[0].shape.len().checked_sub(2).filter(|_| ax.sp_norms);
            let sp = seq.filter(|&d| divides(ins[0].shape[d], ax.size));
            let p = match (ins[0].placement, sp) {
                (S(d), _) if d != last => S(d),
                (_, Some(d)) => S(d),
                _ => R,
            };
            let mut inputs = vec![p];
            inputs.extend(ins[1..].iter().map(|_| R));
            let mut out = plan(inputs, vec![p]);
            if let (R, Some(d)) = (p, seq) {
                out.unsplit = Some((
                    ins[0].shape[d],
                    format!("the sequence, dim {d}, for a Megatron-SP norm"),
                ));
            }
            out
        }
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => matmul(site, ins, ax, *transpose_a, *transpose_b),
        Op::Reshape { .. } => {
            let out = &site.out_shapes[0];
            match ins[0].placement {
                S(d) => match reshape_dim(&ins[0].shape, out, d, ax.size) {
                    Ok(j) => plan(vec![S(d)], vec![S(j)]),
                    Err(Some(j)) => unsplit(
                        ins,
                        n_out,
                        out[j],
                        format!("dim {j} of the result, where the input's split dim {d} lands"),
                    ),
                    Err(None) => replicated(),
                },
                p => plan(vec![p], vec![p]),
            }
        }
        Op::Transpose { perm } => match ins[0].placement {
            S(d) => {
                let j = perm.iter().position(|&p| p == d).unwrap_or(d);
                plan(vec![S(d)], vec![S(j)])
            }
            p => plan(vec![p], vec![p]),
        },
        Op::Expand { .. } => {
            let (x, out) = (&ins[0].shape, &site.out_shapes[0]);
            match ins[0].placement {
                S(d) => {
                    let od = d + out.len() - x.len();
                    if x[d] == out[od] {
                        plan(vec![S(d)], vec![S(od)])
                    } else {
                        replicated()
                    }
                }
                Partial(_) | Placement::Local => replicated(),
                R => replicated(),
            }
        }
        Op::Concat { axis } => {
            let a = norm(*axis, out_rank(0));
            // Every input split along the same other dim, or all whole.
            let d = ins.iter().find_map(|i| match i.placement {
                S(d) if d != a && !i.free => Some(d),
                _ => None,
            });
            match d {
                Some(d) => plan(ins.iter().map(|_| S(d)).collect(), vec![S(d)]),
                None => replicated(),
            }
        }
        Op::Split { axis, .. } => {
            let a = norm(*axis, ins[0].shape.len());
            let p = match ins[0].placement {
                S(d) if d != a => S(d),
                _ => R,
            };
            plan(vec![p], vec![p; n_out])
        }
        Op::Slice { axis, .. } => {
            let a = norm(*axis, ins[0].shape.len());
            keep_unless(ins[0].placement, &[a])
        }
        Op::Reduce {
            kind,
            axes,
            keepdims,
        } => {
            let rank = ins[0].shape.len();
            let axes: Vec<usize> = axes.iter().map(|&a| norm(a, rank)).collect();
            match ins[0].placement {
                S(d) if !axes.contains(&d) => {
                    let shift = if *keepdims {
                        0
                    } else {
                        axes.iter().filter(|&&a| a < d).count()
                    };
                    plan(vec![S(d)], vec![S(d - shift)])
                }
                S(d) => match kind {
                    ReduceKind::Sum => plan(vec![S(d)], vec![SUM]),
                    ReduceKind::Max => plan(vec![S(d)], vec![Partial(ReduceOp::Max)]),
                    _ => replicated(),
                },
                Partial(ReduceOp::Sum) if matches!(kind, ReduceKind::Sum | ReduceKind::Mean) => {
                    plan(vec![SUM], vec![SUM])
                }
                _ => replicated(),
            }
        }
        Op::Gather { axis } => gather(site, ins, ax, *axis)?,
        Op::RopeCache { .. } => match ins[0].placement {
            S(d) => plan(vec![S(d)], vec![S(d), S(d)]),
            _ => replicated(),
        },
        Op::Rope { .. } => {
            let rank = ins[0].shape.len();
            match ins[0].placement {
                S(d) if d + 1 < rank => {
                    let table = |t: &In| {
                        let off = rank - t.shape.len();
                        if d >= off && t.shape[d - off] > 1 {
                            S(d - off)
                        } else {
                            R
                        }
                    };
                    plan(vec![S(d), table(&ins[1]), table(&ins[2])], vec![S(d)])
                }
                _ => replicated(),
            }
        }
        Op::Attention { .. } => attention(site, ins, ax)?,
        Op::MoeRoute { .. } => match ins[0].placement {
            S(0) => plan(vec![S(0)], vec![S(0), S(0)]),
            _ => replicated(),
        },
        Op::MoeDispatch { .. } => match ins[0].placement {
            // Dispatch moves whole rows, so a hidden-dim split rides along.
            S(1) => plan(vec![S(1), R], vec![S(1), R]),
            _ => replicated(),
        },
        Op::ExpertMatMul { transpose_b, .. } => expert_matmul(ins, ax, *transpose_b),
        Op::MoeCombine => match ins[0].placement {
            S(1) => plan(vec![S(1), R, R], vec![S(1)]),
            Partial(ReduceOp::Sum) => plan(vec![SUM, R, R], vec![SUM]),
            _ => replicated(),
        },
        Op::Input { .. } | Op::Weight { .. } | Op::Constant { .. } => replicated(),
        op @ (Op::AllReduce { .. }
        | Op::AllGather { .. }
        | Op::ReduceScatter { .. }
        | Op::AllToAll { .. }
        | Op::Send { .. }
        | Op::Recv { .. }
        | Op::Broadcast { .. }
        | Op::AllSlice { .. }
        | Op::ShardedGather { .. }
        | Op::MoePad { .. }
        | Op::MoeUnpad { .. }
        | Op::MatMulReduceScatter { .. }
        | Op::AllGatherMatMul { .. }
        | Op::FusedElementwise { .. }
        | Op::NormMatMul { .. }
        | Op::MoeRegroup
        | Op::ReduceScatterAddNormAllGather { .. }) => {
            return Err(ShardError::NoRule {
                node: node.name.clone(),
                op: op.name().into(),
                reason: "the graph already communicates or holds kernels later passes make; the sharding pass takes a single-device graph of plain ops".into(),
            });
        }
    })
}

fn norm(axis: i64, rank: usize) -> usize {
    if axis < 0 {
        (axis + rank as i64).max(0) as usize
    } else {
        axis as usize
    }
}

/// Keep a split unless it is along one of `dims`; partial values are reduced first.
fn keep_unless(p: Placement, dims: &[usize]) -> Plan {
    let p = match p {
        S(d) if !dims.contains(&d) => S(d),
        _ => R,
    };
    plan(vec![p], vec![p])
}

/// Element-wise ops with NumPy broadcasting.
fn elementwise(op: &Op, ins: &[In], out: &[u64], ax: &Axis<'_>) -> Plan {
    let rank = out.len();
    let partial: Vec<bool> = ins.iter().map(|i| i.placement == SUM).collect();
    let others_whole = |k: usize| {
        ins.iter()
            .enumerate()
            .all(|(j, i)| j == k || (i.placement == R && !partial[j]))
    };
    // Sums of partial sums stay partial; so does a partial sum scaled by a whole value.
    let linear = match op {
        Op::Add | Op::Sub => partial.iter().all(|&p| p),
        Op::Mul => {
            partial.iter().filter(|&&p| p).count() == 1 && {
                let k = partial.iter().position(|&p| p).unwrap_or(0);
                others_whole(k)
            }
        }
        // Truncating integer division does not distribute over a sum.
        Op::Div => partial[0] && others_whole(0) && ins.iter().all(|i| i.float),
        _ => false,
    };
    if linear {
        return plan(ins.iter().map(|i| i.placement).collect(), vec![SUM]);
    }
    // The output dim to split: the first split input's (a non-source first), if any.
    let out_dim = |i: &In| match i.placement {
        S(d) => Some(d + rank - i.shape.len()),
        _ => None,
    };
    let chosen = ins
        .iter()
        .filter(|i| !i.free)
        .find_map(out_dim)
        .or_else(|| ins.iter().find_map(out_dim));
    let Some(od) = chosen else {
        return plan(all_whole(ins), vec![R]);
    };
    if !divides(out[od], ax.size) {
        return unsplit(ins, 1, out[od], format!("dim {od} of the result"));
    }
    let inputs = ins
        .iter()
        .map(|i| {
            let off = rank - i.shape.len();
            if od >= off && i.shape[od - off] == out[od] {
                S(od - off)
            } else {
                R
            }
        })
        .collect();
    plan(inputs, vec![S(od)])
}

/// Where the split input dim `d` lands after a reshape, if the pieces stay contiguous:
/// the output dim whose leading product equals the input's and which also divides.
/// `Err(Some(j))`: the split would land on output dim `j`, which does not divide;
/// `Err(None)`: the pieces would not be contiguous.
pub(super) fn reshape_dim(
    input: &[u64],
    out: &[u64],
    d: usize,
    size: u64,
) -> Result<usize, Option<usize>> {
    let before: u64 = input[..d].iter().product();
    let mut prefix = 1u64;
    for (j, &n) in out.iter().enumerate() {
        if prefix == before && n > 1 {
            return if divides(input[d], size) && divides(n, size) {
                Ok(j)
            } else {
                Err(Some(j))
            };
        }
        prefix = prefix.saturating_mul(n);
        if prefix > before {
            return Err(None);
        }
    }
    Err(None)
}

fn matmul(site: &Site<'_>, ins: &[In], ax: &Axis<'_>, ta: bool, tb: bool) -> Plan {
    let (a, b) = (&ins[0], &ins[1]);
    let (ra, rb) = (a.shape.len(), b.shape.len());
    let r = site.out_shapes[0].len();
    // Dim roles.
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
    let batch_of = |rank: usize, d: usize| (d + 2 < rank).then_some(d + r - rank);
    // Partial sums: linear in either operand while the other is whole.
    match (a.placement, b.placement) {
        (SUM, R) => return plan(vec![SUM, R], vec![SUM]),
        (R, SUM) => return plan(vec![R, SUM], vec![SUM]),
        _ => {}
    }
    let pa = if let Partial(_) = a.placement {
        R
    } else {
        a.placement
    };
    let pb = if let Partial(_) = b.placement {
        R
    } else {
        b.placement
    };
    // The other operand's matching batch dim, split if it is really there.
    let batch_in = |other: &In, od: usize| {
        let off = r - other.shape.len();
        let rank = other.shape.len();
        if od >= off && od - off + 2 < rank && other.shape[od - off] == site.out_shapes[0][od] {
            S(od - off)
        } else {
            R
        }
    };
    // Megatron's column-parallel split of a free weight by its output columns: made when
    // it divides and survives what consumes the result; `Err` when only a size stopped it.
    let column = |b: &In| -> Result<bool, (u64, String)> {
        let n = b.shape[b_n];
        if !(ax.megatron && b.free) {
            return Ok(false);
        }
        match (site.column_survives)(n) {
            Err(Blocked::NeedsWhole) => Ok(false),
            Err(Blocked::Indivisible(size, what)) => Err((size, what)),
            Ok(()) if divides(n, ax.size) => Ok(true),
            Ok(()) => Err((n, "the weight's output columns".into())),
        }
    };
    let mut unsplit = None;
    let mut column_or_whole = |b: &In| match column(b) {
        Ok(true) => (R, S(b_n), S(r - 1)),
        Ok(false) => (R, R, R),
        Err(what) => {
            unsplit = Some(what);
            (R, R, R)
        }
    };
    let (wa, wb, out) = match (pa, pb) {
        // Megatron-SP: sequence-split activations are gathered into a column-parallel layer,
        // and into any other projection by a whole weight (K and V with replicated heads, an
        // MoE router): the all-reduce form computes those on whole activations, and a
        // sequence-split result would need its own gather (SP sends the same bytes only if
        // the one all-gather after the norm feeds every projection).
        (S(d), R) if d == a_m && ax.sp_norms && !a.free && b.free => column_or_whole(b),
        (S(d), _) if !a.free || pb == R => {
            if d == a_k {
                (S(a_k), S(b_k), SUM)
            } else if d == a_m {
                (S(a_m), R, S(r - 2))
            } else if let Some(od) = batch_of(ra, d) {
                (S(d), batch_in(b, od), S(od))
            } else {
                (R, R, R)
            }
        }
        (_, S(d)) => {
            if d == b_k {
                (S(a_k), S(b_k), SUM)
            } else if d == b_n {
                (R, S(b_n), S(r - 1))
            } else if let Some(od) = batch_of(rb, d) {
                (batch_in(a, od), S(d), S(od))
            } else {
                (R, R, R)
            }
        }
        _ => {
            // Megatron's column-parallel layer: a whole activation times a weight split
            // by output columns, when the split survives what consumes the result.
            if a.free {
                (R, R, R)
            } else {
                column_or_whole(b)
            }
        }
    };
    // A split that does not divide falls back to whole operands, and says so.
    let bad = |k: usize, p: Placement, shape: &[u64]| match p {
        S(d) if !divides(shape[d], ax.size) => Some((shape[d], format!("dim {d} of operand {k}"))),
        _ => None,
    };
    if let Some((size, what)) = bad(0, wa, &a.shape).or_else(|| bad(1, wb, &b.shape)) {
        return self::unsplit(ins, 1, size, what);
    }
    Plan {
        unsplit,
        ..plan(vec![wa, wb], vec![out])
    }
}

fn gather(site: &Site<'_>, ins: &[In], ax: &Axis<'_>, axis: i64) -> Result<Plan, ShardError> {
    let (table, ids) = (&ins[0], &ins[1]);
    let a = norm(axis, table.shape.len());
    // The vocabulary (the largest table) is split by rows; smaller tables (positions,
    // token types) stay whole.
    if ax.megatron
        && table.free
        && a == 0
        && ids.placement == R
        && table.shape[0] == site.vocab_rows
    {
        let vocab = table.shape[0];
        if !divides(vocab, ax.size) {
            return Err(ShardError::Indivisible {
                node: site.node.name.clone(),
                op: site.node.op.name().into(),
                what: format!("the vocabulary ({vocab} rows of the embedding table)"),
                axis: ax.name.into(),
                size: ax.size,
            });
        }
        return Ok(Plan {
            inputs: vec![S(0), R],
            outputs: vec![SUM],
            vocab_parallel: true,
            ..Plan::default()
        });
    }
    Ok(match (table.placement, ids.placement) {
        (_, S(d)) => plan(vec![R, S(d)], vec![S(a + d)]),
        (S(d), _) if d != a && !table.free => {
            let od = if d < a { d } else { d + ids.shape.len() - 1 };
            plan(vec![S(d), R], vec![S(od)])
        }
        _ => plan(vec![R, R], vec![R]),
    })
}

fn attention(site: &Site<'_>, ins: &[In], ax: &Axis<'_>) -> Result<Plan, ShardError> {
    let (q, k) = (&ins[0], &ins[1]);
    let (hq, hkv) = (q.shape[1], k.shape[1]);
    let indivisible = |what: String| ShardError::Indivisible {
        node: site.node.name.clone(),
        op: site.node.op.name().into(),
        what,
        axis: ax.name.into(),
        size: ax.size,
    };
    if ax.megatron {
        if !divides(hq, ax.size) {
            return Err(indivisible(format!("{hq} query heads")));
        }
        if !divides(hkv, ax.size) && !divides(ax.size, hkv) {
            return Err(indivisible(format!(
                "{hkv} key/value heads (neither split nor replicated evenly)"
            )));
        }
    }
    let mask_as = |p: Placement| {
        ins.get(3).map(|m| match p {
            S(d) => {
                let off = 4 - m.shape.len();
                if d >= off && m.shape[d - off] > 1 {
                    S(d - off)
                } else {
                    R
                }
            }
            _ => R,
        })
    };
    // Ulysses: queries, keys and values arrive split by sequence (dim 2); attention needs
    // every key, so an all-to-all trades the sequence split for a head split, and the
    // output goes back to sequence shards.
    if ax.ulysses && q.placement == S(2) {
        if !divides(hq, ax.size) {
            return Err(indivisible(format!("{hq} query heads")));
        }
        let mut inputs = vec![S(1)];
        let mut repeat_kv = None;
        if divides(hkv, ax.size) {
            inputs.extend([S(1), S(1)]);
        } else if divides(ax.size, hkv) {
            repeat_kv = Some(ax.size / hkv);
            inputs.extend([R, R]);
        } else {
            return Err(indivisible(format!(
                "{hkv} key/value heads (neither split nor replicated evenly)"
            )));
        }
        inputs.extend(mask_as(S(1)));
        return Ok(Plan {
            inputs,
            outputs: vec![S(1)],
            repeat_kv,
            restore: Some(S(2)),
            ..Plan::default()
        });
    }
    let split = match q.placement {
        S(d) if d <= 1 => Some(d),
        _ => {
            // Heads are independent: whole queries can be cut by head for free when the
            // keys already are.
            match k.placement {
                S(1) if divides(hq, ax.size) => Some(1),
                S(1) => {
                    return Ok(unsplit(ins, 1, hq, "the query heads".into()));
                }
                S(0) => Some(0),
                _ => None,
            }
        }
    };
    let Some(d) = split else {
        return Ok(plan(all_whole(ins), vec![R]));
    };
    let mut inputs = vec![S(d)];
    let mut repeat_kv = None;
    if d == 1 && !divides(hkv, ax.size) {
        repeat_kv = Some(ax.size / hkv);
        inputs.extend([R, R]);
    } else {
        inputs.extend([S(d), S(d)]);
    }
    inputs.extend(mask_as(S(d)));
    Ok(Plan {
        inputs,
        outputs: vec![S(d)],
        repeat_kv,
        ..Plan::default()
    })
}

fn expert_matmul(ins: &[In], ax: &Axis<'_>, tb: bool) -> Plan {
    let (rows, w) = (&ins[0], &ins[2]);
    // Weight [E, K, M], or [E, M, K] when transposed.
    let (w_k, w_m) = if tb { (2, 1) } else { (1, 2) };
    match (rows.placement, w.placement) {
        (S(1), _) if divides(w.shape[w_k], ax.size) => plan(vec![S(1), R, S(w_k)], vec![SUM]),
        (S(1), _) => unsplit(ins, 1, w.shape[w_k], "the experts' contraction dim".into()),
        (R, S(m)) if m == w_m && !w.free => plan(vec![R, R, S(w_m)], vec![S(1)]),
        (R, R) if ax.megatron && w.free && divides(w.shape[w_m], ax.size) => {
            plan(vec![R, R, S(w_m)], vec![S(1)])
        }
        (R, R) if ax.megatron && w.free => {
            unsplit(ins, 1, w.shape[w_m], "the experts' output columns".into())
        }
        _ => plan(vec![R, R, R], vec![R]),
    }
}
