//! What every op occupies (`ir/src/occupancy.rs`), as one table listing every op: the
//! executor, the communication report, the cost model and the scheduler all take this
//! answer, so it is pinned here op by op. The table is checked against `Op::NAMES`, and
//! `expected` matches exhaustively, so a new op fails to compile here until someone
//! decides what it occupies.

use weft_ir::occupancy::{fused_collective_bytes, message_bytes, ring_wire_bytes};
use weft_ir::{
    Collective, CollectiveKind as K, DType, GeluApprox, Init, NormKind, Occupancy, Op, OpClass,
    ReduceKind, ReduceOp, Shape,
};

fn shape() -> Shape {
    Shape::new([2u64, 4])
}

/// One op of every kind.
fn every_op() -> Vec<Op> {
    let ax = || "tp".to_owned();
    let init = || Init::Fill { value: 1.0 };
    vec![
        Op::Input {
            dtype: DType::F32,
            shape: shape(),
        },
        Op::Weight {
            dtype: DType::F32,
            shape: shape(),
            init: init(),
        },
        Op::Constant {
            dtype: DType::F32,
            shape: shape(),
            init: init(),
        },
        Op::MatMul {
            transpose_a: false,
            transpose_b: false,
        },
        Op::Add,
        Op::Sub,
        Op::Mul,
        Op::Div,
        Op::Pow,
        Op::Neg,
        Op::Exp,
        Op::Sqrt,
        Op::Rsqrt,
        Op::Reciprocal,
        Op::Silu,
        Op::Gelu {
            approximate: GeluApprox::Erf,
        },
        Op::Relu,
        Op::Sigmoid,
        Op::Tanh,
        Op::Softmax { axis: -1 },
        Op::RmsNorm { eps: 1e-5 },
        Op::LayerNorm { eps: 1e-5 },
        Op::Attention {
            causal: true,
            scale: None,
        },
        Op::RopeCache { theta: 1e4, dim: 4 },
        Op::Rope { interleaved: false },
        Op::Gather { axis: 0 },
        Op::Reshape { shape: shape() },
        Op::Transpose { perm: vec![1, 0] },
        Op::Concat { axis: 0 },
        Op::Split {
            axis: 0,
            sizes: vec![1, 1],
        },
        Op::Slice {
            axis: 0,
            start: 0,
            end: 1,
        },
        Op::Cast { to: DType::F32 },
        Op::Reduce {
            kind: ReduceKind::Sum,
            axes: vec![0],
            keepdims: false,
        },
        Op::TopK {
            k: 1,
            axis: -1,
            largest: true,
        },
        Op::Expand { shape: shape() },
        Op::Where,
        Op::IsNan,
        Op::MoeRoute {
            top_k: 2,
            normalize: true,
        },
        Op::MoeDispatch { num_experts: 4 },
        Op::ExpertMatMul {
            transpose_b: false,
            rows: weft_ir::ExpertRows::Dense,
        },
        Op::MoePad { groups: 2 },
        Op::MoeUnpad { groups: 2, rows: 4 },
        Op::MoeCombine,
        Op::AllReduce {
            axis: ax(),
            op: ReduceOp::Sum,
        },
        Op::AllGather { axis: ax(), dim: 0 },
        Op::ReduceScatter {
            axis: ax(),
            dim: 0,
            op: ReduceOp::Sum,
        },
        Op::AllToAll {
            axis: ax(),
            split_dim: 0,
            concat_dim: 1,
            payload: weft_ir::A2aPayload::Dense,
        },
        Op::Send {
            axis: ax(),
            shift: 1,
        },
        Op::Recv {
            axis: ax(),
            shift: 1,
            dtype: DType::F32,
            shape: shape(),
        },
        Op::Broadcast {
            axis: ax(),
            root: 0,
        },
        Op::AllSlice { axis: ax(), dim: 0 },
        Op::ShardedGather { axis: ax() },
        Op::MatMulReduceScatter {
            axis: ax(),
            dim: 0,
            transpose_b: false,
        },
        Op::FusedElementwise { steps: vec![] },
        Op::AllGatherMatMul {
            axis: ax(),
            dim: 0,
            transpose_b: false,
        },
        Op::NormMatMul {
            norm: NormKind::RmsNorm,
            eps: 1e-5,
            transpose_b: false,
        },
        Op::MoeRegroup,
        Op::ReduceScatterAddNormAllGather {
            axis: ax(),
            dim: 0,
            eps: 1e-5,
        },
    ]
}

/// What each op should occupy, written out op by op (exhaustive: no catch-all).
fn expected(op: &Op) -> Occupancy<'static> {
    let comm = |kind| Occupancy::Comm(Collective { kind, axis: "tp" });
    let both = |kind| Occupancy::Both(Collective { kind, axis: "tp" });
    match op {
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
        | Op::FusedElementwise { .. }
        | Op::NormMatMul { .. }
        | Op::MoeRegroup => Occupancy::Compute,
        // Local: a slice of a replicated value, a lookup in this device's rows.
        Op::AllSlice { .. } | Op::ShardedGather { .. } => Occupancy::Compute,
        Op::AllReduce { .. } => comm(K::AllReduce),
        Op::AllGather { .. } => comm(K::AllGather),
        Op::ReduceScatter { .. } => comm(K::ReduceScatter),
        Op::AllToAll { .. } => comm(K::AllToAll),
        Op::Send { .. } => comm(K::Send),
        Op::Recv { .. } => comm(K::Recv),
        Op::Broadcast { .. } => comm(K::Broadcast),
        Op::MatMulReduceScatter { .. } => both(K::ReduceScatter),
        Op::AllGatherMatMul { .. } => both(K::AllGather),
        // A communication kernel with the add and the norm inside: RS + AG traffic.
        Op::ReduceScatterAddNormAllGather { .. } => comm(K::AllReduce),
    }
}

#[test]
fn every_op_occupies_what_the_table_says() {
    let ops = every_op();
    let mut names: Vec<&str> = ops.iter().map(Op::name).collect();
    names.sort_unstable();
    let mut all = Op::NAMES.to_vec();
    all.sort_unstable();
    assert_eq!(names, all, "the table lists every op once");
    for op in &ops {
        assert_eq!(op.occupancy(), expected(op), "{}", op.name());
    }
}

#[test]
fn the_collective_class_is_exactly_the_ops_that_communicate() {
    for op in every_op() {
        assert_eq!(
            op.class() == OpClass::Collective,
            op.occupancy().communicates(),
            "{}",
            op.name()
        );
        // Every communicating op names its axis; naming one does not make an op
        // communicate (all_slice, sharded_gather).
        if let Some(c) = op.occupancy().collective() {
            assert_eq!(op.mesh_axis(), Some(c.axis), "{}", op.name());
        }
    }
    assert_eq!(
        Op::AllSlice {
            axis: "tp".into(),
            dim: 0
        }
        .class(),
        OpClass::Layout
    );
}

#[test]
fn collective_bytes_follow_nccl_and_the_ring() {
    // nccl-tests `size`: input for all-reduce, reduce-scatter, all-to-all, broadcast and
    // send; the whole output for all-gather and recv.
    assert_eq!(message_bytes(K::AllReduce, 100, 100), 100);
    assert_eq!(message_bytes(K::ReduceScatter, 800, 100), 800);
    assert_eq!(message_bytes(K::AllGather, 100, 800), 800);
    assert_eq!(message_bytes(K::AllToAll, 64, 64), 64);
    assert_eq!(message_bytes(K::Send, 64, 0), 64);
    assert_eq!(message_bytes(K::Recv, 0, 64), 64);
    assert_eq!(message_bytes(K::Broadcast, 64, 64), 64);
    // Ring: 2(n-1)/n for all-reduce, (n-1)/n for the others, the whole for send.
    assert_eq!(ring_wire_bytes(K::AllReduce, 800, 8), Some(1400));
    assert_eq!(ring_wire_bytes(K::ReduceScatter, 800, 8), Some(700));
    assert_eq!(ring_wire_bytes(K::AllGather, 800, 8), Some(700));
    assert_eq!(ring_wire_bytes(K::AllToAll, 800, 8), Some(700));
    assert_eq!(ring_wire_bytes(K::Send, 800, 8), Some(800));
    assert_eq!(ring_wire_bytes(K::Broadcast, 800, 8), Some(800));
    assert_eq!(ring_wire_bytes(K::Recv, 800, 8), Some(0));
    assert_eq!(ring_wire_bytes(K::AllReduce, u64::MAX, 4), None);
    // Fused: GEMM + reduce-scatter reduces n times its output; all-gather + GEMM
    // gathers n copies of its first input; anything else has no fused collective.
    let mrs = Op::MatMulReduceScatter {
        axis: "tp".into(),
        dim: 0,
        transpose_b: false,
    };
    let agm = Op::AllGatherMatMul {
        axis: "tp".into(),
        dim: 0,
        transpose_b: false,
    };
    assert_eq!(fused_collective_bytes(&mrs, 10, 100, 8), Some(800));
    assert_eq!(fused_collective_bytes(&agm, 10, 100, 8), Some(80));
    assert_eq!(fused_collective_bytes(&mrs, 10, u64::MAX, 8), None);
    assert_eq!(fused_collective_bytes(&Op::Add, 10, 100, 8), None);
    assert_eq!(
        fused_collective_bytes(
            &Op::AllReduce {
                axis: "tp".into(),
                op: ReduceOp::Sum
            },
            10,
            10,
            8
        ),
        None
    );
}

#[test]
fn padded_expert_blocks_carry_one_group_share_of_their_message() {
    use weft_ir::A2aPayload;
    use weft_ir::occupancy::payload_bytes;
    let a2a = |payload| Op::AllToAll {
        axis: "ep".into(),
        split_dim: 0,
        concat_dim: 0,
        payload,
    };
    // [G = 8 blocks, N = 512 rows, H = 4096] bf16: each block sized for all 512 rows, of
    // which 512/8 are real under uniform routing, so the payload is the message over 8.
    let message = 8 * 512 * 4096 * 2;
    let padded = a2a(A2aPayload::ExpertBlocks { groups: 8 });
    assert_eq!(payload_bytes(&padded, message), Some(512 * 4096 * 2));
    // Comet's split per expert group: n·G blocks, each 1/(n·G) real.
    let comet = a2a(A2aPayload::ExpertBlocks { groups: 8 * 4 });
    assert_eq!(payload_bytes(&comet, message), Some(512 * 4096 * 2 / 4));
    // A fraction of a byte is a byte (the expected value, rounded up).
    assert_eq!(payload_bytes(&padded, 801), Some(101));
    assert_eq!(payload_bytes(&padded, 0), Some(0));
    // Zero groups have no payload: the typing rule refuses them.
    assert_eq!(
        payload_bytes(&a2a(A2aPayload::ExpertBlocks { groups: 0 }), 800),
        None
    );
    // Every other collective, and a dense all-to-all, carries its whole message.
    assert_eq!(
        payload_bytes(&a2a(A2aPayload::Dense), message),
        Some(message)
    );
    let ar = Op::AllReduce {
        axis: "tp".into(),
        op: ReduceOp::Sum,
    };
    assert_eq!(payload_bytes(&ar, message), Some(message));
    assert_eq!(payload_bytes(&Op::Add, 64), Some(64));
    // The payload is part of the op's identity (its attributes) only when padded.
    assert_eq!(a2a(A2aPayload::Dense).attr_text().len(), 3);
    assert!(
        padded
            .attr_text()
            .iter()
            .any(|a| a == "payload=expert_blocks/8"),
        "{:?}",
        padded.attr_text()
    );
}
