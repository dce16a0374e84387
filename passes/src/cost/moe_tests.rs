//! Expert GEMMs and MoE layout ops priced on the rows that carry tokens (`moe.rs`).

use weft_hardware::Profile;
use weft_ir::{DType, DimBindings, ExpertRows, Mesh, Op, Shape, TensorType};
use weft_plan::KernelConfig;

use super::{CostModel, OpCost};

fn t(dtype: DType, dims: &[u64]) -> TensorType {
    TensorType::new(dtype, Shape::new(dims.iter().copied()))
}

fn model() -> CostModel {
    CostModel::new(
        &Profile::builtin("h100-sxm-8").unwrap(),
        &Mesh::new([("ep", 8)]).unwrap(),
    )
    .unwrap()
}

fn cost(op: &Op, ins: &[TensorType], out: &TensorType) -> OpCost {
    let i: Vec<&TensorType> = ins.iter().collect();
    model()
        .op_cost(op, &i, &[out], &DimBindings::new())
        .unwrap()
}

fn emm(rows: ExpertRows) -> Op {
    Op::ExpertMatMul {
        transpose_b: false,
        rows,
    }
}

/// An expert matmul over `rows` rows of width `k` with counts of shape `counts` and `e`
/// experts' `[e, k, m]` weights.
fn expert_gemm(mark: ExpertRows, rows: u64, counts: &[u64], e: u64, k: u64, m: u64) -> OpCost {
    let b = DType::Bf16;
    cost(
        &emm(mark),
        &[t(b, &[rows, k]), t(DType::I64, counts), t(b, &[e, k, m])],
        &t(b, &[rows, m]),
    )
}

fn gemm(c: &OpCost) -> (u64, u64, u64, u64) {
    match c.kernel {
        KernelConfig::Gemm { batch, m, n, k, .. } => (batch, m, n, k),
        ref other => panic!("not a GEMM: {other:?}"),
    }
}

fn mem_bytes(c: &OpCost) -> u64 {
    match c.kernel {
        KernelConfig::MemoryBound { bytes } => bytes,
        ref other => panic!("not memory-bound: {other:?}"),
    }
}

#[test]
fn a_blocked_expert_gemm_costs_the_dense_one_on_its_carried_rows() {
    // Comet's Mixtral layer at M = 8192, ep = 8: 8 blocks of 2048 padded rows, one local
    // expert; 2048 rows carry tokens under uniform routing.
    let (k, m) = (4096, 14336);
    let padded = expert_gemm(
        ExpertRows::ExpertBlocks { groups: 8 },
        8 * 2048,
        &[8, 1],
        1,
        k,
        m,
    );
    let dense = expert_gemm(ExpertRows::Dense, 2048, &[1], 1, k, m);
    assert_eq!(padded, dense);
    assert_eq!(gemm(&padded), (1, 2048, m, k));
    // Four local experts, ep = 4: 4 blocks of 1024 rows, 1024 real, 256 per expert.
    let padded = expert_gemm(
        ExpertRows::ExpertBlocks { groups: 4 },
        4 * 1024,
        &[4, 4],
        4,
        k,
        m,
    );
    let dense = expert_gemm(ExpertRows::Dense, 1024, &[4], 4, k, m);
    assert_eq!(padded, dense);
    assert_eq!(gemm(&padded), (4, 256, m, k));
    // Unmarked, the same blocked rows are priced padded: ep× the rows, and slower.
    let unmarked = expert_gemm(ExpertRows::Dense, 8 * 2048, &[8, 1], 1, k, m);
    assert_eq!(gemm(&unmarked), (1, 8 * 2048, m, k));
    let marked = expert_gemm(
        ExpertRows::ExpertBlocks { groups: 8 },
        8 * 2048,
        &[8, 1],
        1,
        k,
        m,
    );
    assert!(unmarked.time_us > 4.0 * marked.time_us);
}

#[test]
fn an_unblocked_expert_gemm_is_priced_as_before() {
    // E experts × ⌈N/E⌉ rows each (balanced routing), the formula of docs/cost-model.md.
    let c = expert_gemm(ExpertRows::Dense, 1000, &[8], 8, 4096, 2048);
    assert_eq!(gemm(&c), (8, 125, 2048, 4096));
    let c = expert_gemm(ExpertRows::Dense, 1001, &[8], 8, 4096, 2048);
    assert_eq!(gemm(&c), (8, 126, 2048, 4096));
}

#[test]
fn split_blocks_and_comet_groups_add_up_to_the_whole() {
    let (k, m) = (4096, 14336);
    let padded = ExpertRows::ExpertBlocks { groups: 8 };
    // `expert-gemm-split-blocks`: one block (counts [1, E]) of 2048 padded rows keeps the
    // mark, so it carries 2048/8 rows; eight of them carry what the whole did.
    let whole = expert_gemm(padded, 8 * 2048, &[8, 4], 4, k, m);
    let piece = expert_gemm(padded, 2048, &[1, 4], 4, k, m);
    assert_eq!(gemm(&piece), (4, 64, m, k));
    assert_eq!(gemm(&whole), (4, 8 * 64, m, k));
    // Comet's group of 2: half the rows on half the experts, each expert's run as long
    // as in the whole GEMM.
    let group = ExpertRows::OneExpertGroup {
        groups: 8,
        expert_groups: 2,
    };
    let g = expert_gemm(group, 8 * 2048, &[8, 4], 4, k, m);
    assert_eq!(gemm(&g), (2, 8 * 64, m, k));
    // Expert groups that do not divide the experts cannot be priced.
    let three = ExpertRows::OneExpertGroup {
        groups: 8,
        expert_groups: 3,
    };
    let b = DType::Bf16;
    let ins = [
        t(b, &[8 * 2048, k]),
        t(DType::I64, &[8, 4]),
        t(b, &[4, k, m]),
    ];
    let i: Vec<&TensorType> = ins.iter().collect();
    let out = t(b, &[8 * 2048, m]);
    assert!(
        model()
            .op_cost(&emm(three), &i, &[&out], &DimBindings::new())
            .is_err()
    );
}

#[test]
fn layout_ops_move_the_real_rows_only() {
    let b = DType::Bf16;
    let (g, n, h, e) = (8u64, 2048u64, 4096u64, 8u64);
    let rows = n * h * 2;
    let counts = e * 8;
    // moe_pad: the counts, the rows read, the rows written into their blocks.
    let pad = cost(
        &Op::MoePad { groups: g },
        &[t(b, &[n, h]), t(DType::I64, &[e])],
        &t(b, &[g, n, h]),
    );
    assert_eq!(mem_bytes(&pad), counts + 2 * rows);
    // moe_unpad: the counts, the real rows read from the blocks and written.
    let unpad = cost(
        &Op::MoeUnpad { groups: g, rows: n },
        &[t(b, &[g, n, h]), t(DType::I64, &[e])],
        &t(b, &[n, h]),
    );
    assert_eq!(mem_bytes(&unpad), counts + 2 * rows);
    // moe_regroup over [B = 8, E_l = 2] blocked counts and two groups' [B·N, H] results:
    // 1/B of the output is real.
    let blocked = t(DType::I64, &[g, 2]);
    let result = t(b, &[g * n, h]);
    let regroup = cost(
        &Op::MoeRegroup,
        &[blocked, result.clone(), result.clone()],
        &result,
    );
    assert_eq!(mem_bytes(&regroup), g * 2 * 8 + 2 * rows);
    // A padded layout op costs no more than the copy of its real rows.
    let copy = cost(&Op::Neg, &[t(b, &[n, h])], &t(b, &[n, h]));
    assert!(pad.time_us < copy.time_us * 1.01);
}
