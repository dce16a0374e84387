//! How much a communication kernel slows compute running beside it.
//!
//! A collective kernel occupies SMs (NCCL's ring/Simple kernels: Calculon's
//! `processor_usage` 0.15 on NVLink, 0.02 on InfiniBand; NVLink SHARP/multimem kernels
//! 2–8 of 132 SMs, TokenWeave) and HBM bandwidth (it reads its send buffer and writes its
//! receive buffer). A concurrent compute kernel keeps the rest:
//!
//! ```text
//! s = the collective's SM share                       (OpCost::comm_sm_fraction)
//! h = message · (1 + 1/n) / comm time / achievable HBM
//! slowdown = 1 / (1 − max(s, h))
//! ```
//!
//! `h` counts one full-size buffer and one 1/n-size buffer: exact for an all-gather or a
//! reduce-scatter, a lower bound for an all-reduce (which writes a second full-size
//! buffer; the plan's `CollectiveConfig` does not carry the kind). The larger of the two
//! shares is taken because the model does not know whether the concurrent kernel is
//! SM-bound or memory-bound; either way one resource shrinks by that share.
//!
//! Sanity band (cost-model.md §2.7, arXiv 2507.03114, 4×A100/H100/MI250/MI210): overlap
//! slows compute by +18.9% on average and +40.0% at most. Tests check the factor stays in
//! `[1, 1.40]` for every profile, collective and size, and near the mean for the common
//! NVLink ring case.

use weft_plan::KernelConfig;

use super::memory_bound::to_f64;

/// The measured maximum compute slowdown under overlap (arXiv 2507.03114).
pub const MAX_MEASURED_SLOWDOWN: f64 = 1.40;
/// The measured mean compute slowdown under overlap (arXiv 2507.03114).
pub const MEAN_MEASURED_SLOWDOWN: f64 = 1.189;

/// The slowdown factor for a communication task with SM share `sm_fraction`, moving
/// `config`'s message in `comm_us`, on a GPU with `hbm` bytes/s achievable.
pub(crate) fn slowdown(sm_fraction: f64, kernel: &KernelConfig, comm_us: f64, hbm: f64) -> f64 {
    let config = match kernel {
        KernelConfig::Collective(c)
        | KernelConfig::Pipelined { collective: c, .. }
        | KernelConfig::CommNorm { collective: c, .. } => c,
        KernelConfig::View
        | KernelConfig::Gemm { .. }
        | KernelConfig::MemoryBound { .. }
        | KernelConfig::Unconfigured { .. } => {
            return 1.0;
        }
    };
    if comm_us <= 0.0 || config.group_size <= 1 {
        return 1.0;
    }
    let traffic = to_f64(config.message_bytes) * (1.0 + 1.0 / to_f64(config.group_size));
    let h = traffic / (comm_us * 1e-6) / hbm;
    let share = sm_fraction.max(h).clamp(0.0, 0.99);
    1.0 / (1.0 - share)
}
