//! The normalisation a [`Op::NormMatMul`] applies in its GEMM prologue.
//!
//! `norm_matmul(x, b, weight[, bias])` is `matmul(norm(x, weight[, bias]), b)` computed
//! as one kernel: the kernel first reads each row of `x` once for its statistics (the
//! mean square, or mean and variance), then normalises each tile of `x` as the GEMM
//! loads it, so the normalised activations never go to HBM and back (the norm and the
//! linear layer after it as one operation: FlashNorm, Graef et al., arXiv 2407.09577).
//!
//! Why a new op rather than another [`crate::FusedStep`] of `fused_elementwise`: that
//! op's running value starts as input 0 and every step is element-wise *after* an
//! optional leading GEMM (an epilogue), so its occupancy, cost and kernel are "a GEMM
//! plus a memory-bound tail". A norm is a row reduction applied to the GEMM's *A*
//! operand *before* the product; putting it into the step list would break the
//! "GEMM is step 0" convention every consumer of `fused_elementwise` relies on. A
//! separate op keeps both kernels' contracts simple, and its inputs stay positional:
//! the GEMM's operands first (as in every fused GEMM op), then the norm's parameters.

use crate::op::Op;

/// Which normalisation the prologue applies (the last axis of `x`, as the ops do).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum NormKind {
    /// [`Op::RmsNorm`]: `x / sqrt(mean(x²) + eps) * weight`; inputs `x, b, weight`.
    RmsNorm,
    /// [`Op::LayerNorm`]: `(x - mean) / sqrt(var + eps) * weight (+ bias)`; inputs
    /// `x, b, weight[, bias]`.
    LayerNorm,
}

impl NormKind {
    /// The name written in the text form and JSON (`norm=rms_norm`).
    pub const fn name(self) -> &'static str {
        match self {
            NormKind::RmsNorm => "rms_norm",
            NormKind::LayerNorm => "layer_norm",
        }
    }

    /// The standalone op this prologue stands for.
    pub fn op(self, eps: f64) -> Op {
        match self {
            NormKind::RmsNorm => Op::RmsNorm { eps },
            NormKind::LayerNorm => Op::LayerNorm { eps },
        }
    }

    /// The prologue of a standalone norm op, with its eps; `None` for any other op.
    pub fn of(op: &Op) -> Option<(NormKind, f64)> {
        if let Op::RmsNorm { eps } = op {
            return Some((NormKind::RmsNorm, *eps));
        }
        if let Op::LayerNorm { eps } = op {
            return Some((NormKind::LayerNorm, *eps));
        }
        None
    }

    /// How many parameter inputs (weight, bias) the norm may take.
    pub const fn max_params(self) -> usize {
        match self {
            NormKind::RmsNorm => 1,
            NormKind::LayerNorm => 2,
        }
    }
}

impl std::fmt::Display for NormKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
