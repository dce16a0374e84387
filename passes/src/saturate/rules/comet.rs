//! Comet's all-to-all split per expert group.
//!
//! Under expert parallelism the first expert GEMM reads what one all-to-all delivered:
//!
//! ```text
//! y = expert_matmul(reshape(all_to_all(moe_pad(rows, counts, n))), counts_blocked, w)
//! ```
//!
//! so no expert starts before every token has arrived. Splitting this device's `E_l`
//! experts into `G` groups, one all-to-all per group carries only the rows of that group's
//! experts, and group `g`'s GEMM can start as soon as its own all-to-all is done while the
//! next group's is still in flight (Comet, Zhang et al., MLSys 2025, §3.1: the shared
//! tensor decomposed along the dim its consumer treats independently, here the experts).
//!
//! ```text
//! sends = reshape(moe_pad(rows, counts, n·G), [n, G·N, H])     block d·G+g = device d's group g
//! y_g   = expert_matmul(reshape(all_to_all(sends[:, g·N:(g+1)·N])), counts_blocked ⊙ mask_g, w)
//! y     = moe_regroup(counts_blocked, y_0, …, y_{G-1})
//! ```
//!
//! `mask_g` keeps group `g`'s experts' counts and zeroes the others', so each block of
//! `y_g` holds group `g`'s runs from its first row with the whole weight tensor (slicing
//! the weights' expert dim, which the mesh splits, would name no piece of the global
//! weights). Every row is multiplied by the same weights in a run of the same length as
//! before, so the result is the same, and `moe_regroup` restores the one-GEMM layout. The
//! send buffer holds `G` padded blocks per peer instead of one (no capacity limit: any
//! group may receive every row), so each group's all-to-all moves as large a buffer as the
//! whole one did; but its payload ([`A2aPayload::ExpertBlocks`]) is `1/(n·G)` of that
//! buffer under uniform routing where the whole one's was `1/n`, so the `G` all-to-alls
//! together carry what the one did, plus `G−1` more launches and latencies. Likewise each
//! group's GEMM is marked ([`ExpertRows::OneExpertGroup`]) to compute `1/G` of the rows on
//! `1/G` of the experts, so the `G` GEMMs together do the one's work. The cost model prices
//! the payload and the carried rows, and extraction decides.

use egg::Id;
use weft_ir::{A2aPayload, DType, ExpertRows, Init, Op, Shape, Sharding};

use super::*;

/// Whether a class already holds the regrouped form: it is split once only.
fn already_regrouped(eg: &WEGraph, class: Id) -> bool {
    ops(eg, class).any(|(_, op, _)| matches!(op, Op::MoeRegroup))
}

pub(super) fn find_expert_gemm_after_all_to_all(eg: &WEGraph, class: Id) -> Vec<Binding> {
    if already_regrouped(eg, class) {
        return vec![];
    }
    let mut out = vec![];
    for (i, op, ch) in ops(eg, class) {
        if !matches!(op, Op::ExpertMatMul { .. }) {
            continue;
        }
        for (_, reshape, r_ch) in ops(eg, ch[0]) {
            if !matches!(reshape, Op::Reshape { .. }) {
                continue;
            }
            for (a, a2a, a_ch) in ops(eg, r_ch[0]) {
                let Op::AllToAll {
                    axis,
                    split_dim: 0,
                    concat_dim: 0,
                    ..
                } = a2a
                else {
                    continue;
                };
                let n = axis_size(&eg.analysis, axis);
                for (_, pad, p_ch) in ops(eg, a_ch[0]) {
                    if matches!(pad, Op::MoePad { groups } if *groups == n) {
                        // [expert matmul, all-to-all, class, counts_blocked, w, rows,
                        //  local counts, the padded blocks' class, the received class,
                        //  the rows' class]
                        out.push(vec![
                            i as usize,
                            a as usize,
                            ix(class),
                            ix(ch[1]),
                            ix(ch[2]),
                            ix(p_ch[0]),
                            ix(p_ch[1]),
                            ix(a_ch[0]),
                            ix(r_ch[0]),
                            ix(ch[0]),
                        ]);
                    }
                }
            }
        }
    }
    out
}

/// A constant `[len]` i64 mask, interned by a name of its own (constants are sources: two
/// with different values must never be one e-node).
fn mask(eg: &mut WEGraph, len: u64, keep: std::ops::Range<u64>) -> Option<Id> {
    let values: Vec<f64> = (0..len)
        .map(|e| if keep.contains(&e) { 1.0 } else { 0.0 })
        .collect();
    let op = Op::Constant {
        dtype: DType::I64,
        shape: Shape::new([len]),
        init: Init::Inline(values),
    };
    eg.analysis.type_op(&op, &[]).ok()?;
    let name = format!("expert_group_mask.{len}.{}_{}", keep.start, keep.end);
    let i = eg.analysis.ops.intern(&op, Some(&name));
    Some(add_with(
        eg,
        WNode {
            head: Head::Op(i),
            children: vec![],
        },
        vec![Sharding::replicated()],
    ))
}

pub(super) fn build_split_per_group(eg: &mut WEGraph, b: &[usize], g: &Guards) -> Vec<Id> {
    build(eg, b, g).into_iter().collect()
}

fn build(eg: &mut WEGraph, b: &[usize], guards: &Guards) -> Option<Id> {
    let (emm, a2a) = (op_at(eg, b[0]), op_at(eg, b[1]));
    let (class, counts_blocked, w, rows, counts) =
        (id(b[2]), id(b[3]), id(b[4]), id(b[5]), id(b[6]));
    let (padded, received, expert_rows) = (id(b[7]), id(b[8]), id(b[9]));
    let Op::AllToAll {
        ref axis,
        split_dim,
        concat_dim,
        payload,
    } = a2a
    else {
        return None;
    };
    let n = axis_size(&eg.analysis, axis);
    let groups = guards.expert_groups;
    let [ep, local_experts] = shape(eg, counts_blocked)?[..] else {
        return None;
    };
    let [total, hidden] = shape(eg, expert_rows)?[..] else {
        return None;
    };
    let experts = *shape(eg, counts)?.first()?;
    if groups < 2
        || ep != n
        || local_experts < groups
        || local_experts % groups != 0
        || experts != n.checked_mul(local_experts)?
        || total % n != 0
    {
        return None;
    }
    let per_peer = total / n;
    let per_group = local_experts / groups;
    let (s_pad, s_recv, s_rows) = (
        sharding(eg, padded),
        sharding(eg, received),
        sharding(eg, expert_rows),
    );
    let (s_counts, s_out) = (sharding(eg, counts_blocked), sharding(eg, class));
    let sends = add_op(
        eg,
        Op::MoePad {
            groups: n.checked_mul(groups)?,
        },
        vec![rows, counts],
        s_pad.clone(),
    )?;
    let wide = Shape::new([n, groups.checked_mul(per_peer)?, hidden]);
    let sends = add_op(eg, Op::Reshape { shape: wide }, vec![sends], s_pad.clone())?;
    // Each group's blocks are padded for all of a peer's rows, of which the group gets
    // 1/G of what the whole block did: the payload fraction shrinks G times.
    let group_a2a = Op::AllToAll {
        axis: axis.clone(),
        split_dim,
        concat_dim,
        payload: match payload {
            A2aPayload::Dense => A2aPayload::Dense,
            A2aPayload::ExpertBlocks { groups: g } => A2aPayload::ExpertBlocks {
                groups: g.checked_mul(groups)?,
            },
        },
    };
    // Each group's GEMM computes only its experts' rows: 1/G of the rows the whole one
    // did, on 1/G of the experts (priced so; the masked counts' type cannot say it).
    let Op::ExpertMatMul { transpose_b, rows } = emm else {
        return None;
    };
    let group_rows_mark = match rows {
        ExpertRows::Dense => ExpertRows::OneExpertGroup {
            groups: 1,
            expert_groups: groups,
        },
        ExpertRows::ExpertBlocks { groups: g } => ExpertRows::OneExpertGroup {
            groups: g,
            expert_groups: groups,
        },
        ExpertRows::OneExpertGroup { .. } => return None,
    };
    let group_emm = Op::ExpertMatMul {
        transpose_b,
        rows: group_rows_mark,
    };
    let mut parts = vec![counts_blocked];
    for k in 0..groups {
        let (lo, hi) = (k * per_peer, (k + 1) * per_peer);
        let piece = add_op(
            eg,
            Op::Slice {
                axis: 1,
                start: i64::try_from(lo).ok()?,
                end: i64::try_from(hi).ok()?,
            },
            vec![sends],
            s_pad.clone(),
        )?;
        let arrived = add_op(eg, group_a2a.clone(), vec![piece], s_recv.clone())?;
        let flat = Shape::new([total, hidden]);
        let group_rows = add_op(
            eg,
            Op::Reshape { shape: flat },
            vec![arrived],
            s_rows.clone(),
        )?;
        let keep = mask(eg, local_experts, k * per_group..(k + 1) * per_group)?;
        let group_counts = add_op(eg, Op::Mul, vec![counts_blocked, keep], s_counts.clone())?;
        parts.push(add_op(
            eg,
            group_emm.clone(),
            vec![group_rows, group_counts, w],
            s_out.clone(),
        )?);
    }
    add_op(eg, Op::MoeRegroup, parts, s_out)
}
