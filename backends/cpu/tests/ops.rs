//! Every compute op of the CPU executor against an independent reference.
//!
//! The references are written here, from the semantics in `docs/json-format.md` (and the
//! executor's conventions in `docs/cpu-executor.md`), as plain loops over f64, without
//! looking at the kernels, so that a bug in a kernel is caught rather than copied. Each
//! test builds a graph with the IR builder, feeds it random inputs from a small
//! deterministic PRNG, runs it with `weft_backend_cpu::run` and compares:
//!
//! - elementwise float results within `rtol 1e-5, atol 1e-6` ([`common::EW`]);
//! - matmul, attention, norms and reductions within `rtol 1e-4, atol 1e-5` ([`common::SUMS`]);
//! - integer results, layout ops and casts exactly;
//! - bf16 results: representable in bf16 and within half a bf16 ulp of the exact value.
//!
//! `props` repeats the main references over random shapes with proptest.

#[path = "ops/common.rs"]
mod common;
#[path = "ops/elementwise.rs"]
mod elementwise;
#[path = "ops/layout.rs"]
mod layout;
#[path = "ops/linalg.rs"]
mod linalg;
#[path = "ops/moe.rs"]
mod moe;
#[path = "ops/moe_regroup.rs"]
mod moe_regroup;
#[path = "ops/norm_matmul.rs"]
mod norm_matmul;
#[path = "ops/props.rs"]
mod props;

use weft_ir::Op;

/// The compute ops this file tests. Sources are exercised by every test, collectives
/// by `tests/collectives.rs` and the fused GEMM + collective ops by
/// `tests/fused_collectives.rs`.
const COVERED: &[&str] = &[
    "matmul",
    "add",
    "sub",
    "mul",
    "div",
    "pow",
    "neg",
    "exp",
    "sqrt",
    "rsqrt",
    "reciprocal",
    "silu",
    "gelu",
    "relu",
    "sigmoid",
    "tanh",
    "softmax",
    "rms_norm",
    "layer_norm",
    "attention",
    "rope_cache",
    "rope",
    "gather",
    "reshape",
    "transpose",
    "concat",
    "split",
    "slice",
    "cast",
    "reduce",
    "top_k",
    "expand",
    "where",
    "is_nan",
    "moe_route",
    "moe_dispatch",
    "expert_matmul",
    "moe_combine",
    "moe_pad",
    "moe_unpad",
    "fused_elementwise",
    "norm_matmul",
    "moe_regroup",
];

const NOT_COMPUTE: &[&str] = &[
    "input",
    "weight",
    "constant",
    "all_reduce",
    "all_gather",
    "reduce_scatter",
    "all_to_all",
    "send",
    "recv",
    "broadcast",
    "all_slice",
    "sharded_gather",
    "matmul_reduce_scatter",
    "all_gather_matmul",
    // A communication kernel: tested against its reference in tests/tokenweave.rs.
    "reduce_scatter_add_norm_all_gather",
];

#[test]
fn every_compute_op_has_a_reference_test() {
    for name in Op::NAMES {
        assert!(
            COVERED.contains(name) || NOT_COMPUTE.contains(name),
            "op `{name}` is new: add a reference test for it to tests/ops.rs"
        );
    }
    for name in COVERED {
        assert!(Op::NAMES.contains(name), "`{name}` is no longer an op");
    }
}
