//! What each op occupies when it runs: the one answer the executor, the communication
//! report, the cost model and the scheduler all use.
//!
//! Before this module, three notions of "collective" disagreed (the op class counted
//! `all_slice` and the fused ops, the executor went by `mesh_axis()`, and the byte
//! formulas were written twice). Every match here is exhaustive over [`Op`], so a new op
//! cannot be scheduled, costed or reported until someone decides what it occupies.

use crate::op::Op;

/// The NCCL-style collective an op performs (or contains, for the fused ops).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CollectiveKind {
    AllReduce,
    AllGather,
    ReduceScatter,
    AllToAll,
    /// Point-to-point send half of a matched send/recv pair.
    Send,
    /// Point-to-point receive half of a matched send/recv pair.
    Recv,
    Broadcast,
}

impl CollectiveKind {
    /// The snake_case name used in reports and plans.
    pub fn name(self) -> &'static str {
        match self {
            CollectiveKind::AllReduce => "all_reduce",
            CollectiveKind::AllGather => "all_gather",
            CollectiveKind::ReduceScatter => "reduce_scatter",
            CollectiveKind::AllToAll => "all_to_all",
            CollectiveKind::Send => "send",
            CollectiveKind::Recv => "recv",
            CollectiveKind::Broadcast => "broadcast",
        }
    }
}

/// A collective over one mesh axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Collective<'a> {
    pub kind: CollectiveKind,
    pub axis: &'a str,
}

/// The resources an op occupies while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Occupancy<'a> {
    /// A graph input, weight or constant: present before the program starts; no task.
    Source,
    /// Reinterprets its input's storage (row-major reshape): moves no bytes, launches no
    /// kernel, and its result shares its input's buffer.
    View,
    /// A compute kernel on the device's SMs and HBM (including local, communication-free
    /// data movement such as `all_slice`, which keeps a slice of a replicated value).
    Compute,
    /// A communication kernel over one mesh axis.
    Comm(Collective<'a>),
    /// A GEMM fused with a collective (GEMM + reduce-scatter, all-gather + GEMM): compute
    /// and communication pipelined inside one task.
    Both(Collective<'a>),
}

impl Occupancy<'_> {
    /// The collective inside, for `Comm` and `Both`.
    pub fn collective(&self) -> Option<Collective<'_>> {
        match *self {
            Occupancy::Comm(c) | Occupancy::Both(c) => Some(c),
            Occupancy::Source | Occupancy::View | Occupancy::Compute => None,
        }
    }

    /// Whether the op synchronises with peer devices (and so must be issued in the same
    /// order on every device of its group).
    pub fn communicates(&self) -> bool {
        self.collective().is_some()
    }
}

impl Op {
    /// What this op occupies when it runs; see [`Occupancy`].
    pub fn occupancy(&self) -> Occupancy<'_> {
        use CollectiveKind as K;
        match self {
            Op::Input { .. } | Op::Weight { .. } | Op::Constant { .. } => Occupancy::Source,
            Op::Reshape { .. } => Occupancy::View,
            Op::MatMul { .. }
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
            | Op::MoeDispatch { .. }
            | Op::ExpertMatMul { .. }
            | Op::MoePad { .. }
            | Op::MoeUnpad { .. }
            | Op::MoeCombine
            | Op::MoeRegroup
            | Op::FusedElementwise { .. }
            // The norm runs in the GEMM's prologue, on the same SMs.
            | Op::NormMatMul { .. }
            // Local: each device keeps its own slice or its own table rows; the partial
            // sum a sharded gather leaves is reduced by a separate all-reduce.
            | Op::AllSlice { .. }
            | Op::ShardedGather { .. } => Occupancy::Compute,
            Op::AllReduce { axis, .. } => Occupancy::Comm(Collective {
                kind: K::AllReduce,
                axis,
            }),
            Op::AllGather { axis, .. } => Occupancy::Comm(Collective {
                kind: K::AllGather,
                axis,
            }),
            Op::ReduceScatter { axis, .. } => Occupancy::Comm(Collective {
                kind: K::ReduceScatter,
                axis,
            }),
            Op::AllToAll { axis, .. } => Occupancy::Comm(Collective {
                kind: K::AllToAll,
                axis,
            }),
            Op::Send { axis, .. } => Occupancy::Comm(Collective {
                kind: K::Send,
                axis,
            }),
            Op::Recv { axis, .. } => Occupancy::Comm(Collective {
                kind: K::Recv,
                axis,
            }),
            Op::Broadcast { axis, .. } => Occupancy::Comm(Collective {
                kind: K::Broadcast,
                axis,
            }),
            Op::MatMulReduceScatter { axis, .. } => Occupancy::Both(Collective {
                kind: K::ReduceScatter,
                axis,
            }),
            Op::AllGatherMatMul { axis, .. } => Occupancy::Both(Collective {
                kind: K::AllGather,
                axis,
            }),
            // A communication kernel (TokenWeave runs it on its communication stream, on
            // a few SMs): a reduce-scatter and an all-gather of the same value are an
            // all-reduce's traffic; the add and the norm on the shard ride inside it.
            Op::ReduceScatterAddNormAllGather { axis, .. } => Occupancy::Comm(Collective {
                kind: K::AllReduce,
                axis,
            }),
        }
    }
}

/// NCCL's message size for a collective, in bytes per device, the `size` column of
/// nccl-tests that bus-bandwidth figures are quoted against: an all-reduce, a
/// reduce-scatter, an all-to-all, a broadcast and a send count their input; an
/// all-gather its (whole) output; a receive its output. For the fused ops use
/// [`fused_collective_bytes`].
pub fn message_bytes(kind: CollectiveKind, input_bytes: u64, output_bytes: u64) -> u64 {
    match kind {
        CollectiveKind::AllReduce
        | CollectiveKind::ReduceScatter
        | CollectiveKind::AllToAll
        | CollectiveKind::Broadcast
        | CollectiveKind::Send => input_bytes,
        CollectiveKind::AllGather | CollectiveKind::Recv => output_bytes,
    }
}

/// The bytes a collective's `message` carries: what a runtime sends, and what the cost
/// model, the plan's collective configurations and the communication report price. The
/// message itself for every collective but an all-to-all of padded expert blocks, whose
/// expected payload under uniform routing is `1/groups` of it ([`crate::op::A2aPayload`]). Only an
/// all-to-all has a payload field, so only it is looked at. `None` for zero groups.
pub fn payload_bytes(op: &Op, message: u64) -> Option<u64> {
    if let Op::AllToAll { payload, .. } = op {
        payload.bytes(message)
    } else {
        Some(message)
    }
}

/// The message size of the collective inside a fused op, from the fused op's own output
/// and first input: GEMM + reduce-scatter reduces a product `n` times its (scattered)
/// output; all-gather + GEMM gathers `n` copies of its first input. `None` on overflow
/// and for an op that is not a fused GEMM + collective.
pub fn fused_collective_bytes(
    op: &Op,
    first_input_bytes: u64,
    output_bytes: u64,
    group_size: u64,
) -> Option<u64> {
    use CollectiveKind as K;
    match op.occupancy() {
        Occupancy::Both(c) => match c.kind {
            K::ReduceScatter => output_bytes.checked_mul(group_size),
            K::AllGather => first_input_bytes.checked_mul(group_size),
            K::AllReduce | K::AllToAll | K::Send | K::Recv | K::Broadcast => None,
        },
        Occupancy::Source | Occupancy::View | Occupancy::Compute | Occupancy::Comm(_) => None,
    }
}

/// Bytes each device sends for a collective of `message` bytes over `n` devices with
/// ring algorithms: `2(n-1)/n` of the message for an all-reduce, `(n-1)/n` for
/// all-gather, reduce-scatter and all-to-all, the whole message for a send or a
/// broadcast root, nothing for a receive. Computed in 128 bits; `None` past `u64`.
pub fn ring_wire_bytes(kind: CollectiveKind, message: u64, n: u64) -> Option<u64> {
    let n = u128::from(n.max(1));
    let share = u128::from(message) * (n - 1) / n;
    let bytes = match kind {
        CollectiveKind::AllReduce => share * 2,
        CollectiveKind::AllGather | CollectiveKind::ReduceScatter | CollectiveKind::AllToAll => {
            share
        }
        CollectiveKind::Send | CollectiveKind::Broadcast => u128::from(message),
        CollectiveKind::Recv => 0,
    };
    u64::try_from(bytes).ok()
}

/// Whether slicing a value of `shape` (row-major) along `axis` (negative counts from the
/// end) takes one contiguous block of its buffer: every dim before `axis` has extent 1,
/// which holds trivially for the outermost dim. Such a slice — a token half of
/// `[1, seq, hidden]` — is a pointer and a shape into its input, so the cost model prices
/// it as a view and a plan may give it a `view` kernel; its occupancy stays `Compute`
/// (occupancy cannot depend on shapes), so it still gets its own buffer. `None` when
/// `axis` is out of range.
pub fn slice_is_contiguous(shape: &[u64], axis: i64) -> Option<bool> {
    let rank = i64::try_from(shape.len()).ok()?;
    let a = if axis < 0 { axis + rank } else { axis };
    let a = usize::try_from(a).ok().filter(|&a| a < shape.len())?;
    Some(shape[..a].iter().all(|&d| d == 1))
}

#[cfg(test)]
mod slice_tests {
    use super::slice_is_contiguous;

    #[test]
    fn a_slice_is_contiguous_when_every_dim_before_it_has_extent_one() {
        assert_eq!(slice_is_contiguous(&[2048, 8192], 0), Some(true));
        assert_eq!(slice_is_contiguous(&[1, 2048, 8192], 1), Some(true));
        assert_eq!(slice_is_contiguous(&[1, 2048, 8192], -2), Some(true));
        assert_eq!(slice_is_contiguous(&[2, 2048, 8192], 1), Some(false));
        assert_eq!(slice_is_contiguous(&[2048, 8192], 1), Some(false));
        assert_eq!(slice_is_contiguous(&[2048, 8192], 2), None);
        assert_eq!(slice_is_contiguous(&[2048, 8192], -3), None);
        assert_eq!(slice_is_contiguous(&[], 0), None);
    }
}
