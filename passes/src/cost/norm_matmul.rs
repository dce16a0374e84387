//! The cost of a norm fused into its GEMM's prologue (`norm_matmul`).
//!
//! The unfused pair is a memory-bound norm (read `x` and its weight, write the normed
//! tensor `y`) and then a GEMM that reads `y` as its A operand. The fused kernel reads
//! `x` as its A operand instead (the same bytes as `y`), and before that reads every row
//! of `x` once more for the row statistics (the mean square, or mean and variance), plus
//! the norm's weight and bias. So it is this GEMM with `x` and the parameters added to its
//! HBM traffic; what disappears is the normed tensor's write and read back, and one
//! kernel launch (FlashNorm, Graef et al., arXiv 2407.09577, §1: the norm/linear pair as
//! one operation). ASSUMPTION: the statistics are computed once per row, not once per
//! output tile; a kernel recomputing them per tile (a GEMV with one row per block) is
//! slower than the unfused pair, and this model does not price that kernel.

use super::{CostError, CostModel, GemmShape, OpCost, Operands};

impl CostModel {
    /// `norm_matmul(x, b, weight[, bias])`, `b` transposed with `transpose_b`.
    pub(super) fn norm_matmul(
        &self,
        cx: &Operands<'_>,
        transpose_b: bool,
    ) -> Result<OpCost, CostError> {
        let a = cx.shape_in(0)?;
        let b = cx.shape_in(1)?;
        let out = cx.shape_out(0)?;
        let (m, k) = cx.last_two(&a, false)?;
        let (kb, n) = cx.last_two(&b, transpose_b)?;
        if k != kb {
            return Err(cx.bad(format!("contraction lengths differ: {k} and {kb}")));
        }
        let batch = cx.batch_of(&out, m, n)?;
        // The statistics pass over x, and the weight (and bias) the prologue reads.
        let mut extra = cx.bytes(cx.input(0)?)?;
        for i in 2..cx.inputs.len() {
            extra += cx.bytes(cx.input(i)?)?;
        }
        self.gemm_cost(cx, GemmShape { batch, m, n, k }, cx.dtype_in(0)?, extra)
    }
}
