//! Tile-pipelined fused ops (GEMM + reduce-scatter, all-gather + GEMM) as a pipeline of
//! chunks, with the chunk count chosen here (the op carries none; the plan's
//! `KernelConfig::Pipelined` records it).
//!
//! With `c` chunks, each chunk is a GEMM on 1/c of the rows (or columns) and a collective
//! on 1/c of the message. A chunk's GEMM is costed by the GEMM model at the smaller size,
//! so its efficiency drops (fewer tiles, a lower point on the curve), and each chunk pays
//! its own launch overheads (1 µs compute, 5 µs NCCL, cost-model.md §2.3) and collective
//! latency: that is the per-chunk overhead. While a chunk's collective runs beside the
//! next chunk's GEMM, the GEMM is slowed by the contention factor σ:
//!
//! ```text
//! GEMM + RS:  T(c) = g + (c − 1) · max(σ·g, q) + q      g, q: one chunk's GEMM, collective
//! AG + GEMM:  T(c) = q + (c − 1) · max(q, σ·g) + g
//! ```
//!
//! (the same sum: the first stage of one and the last of the other are exposed).
//!
//! `c = 1` is the unfused sequence. The model tries `c ∈ {1, 2, 4, …}` dividing the split
//! dim (up to 64) and keeps the fastest, so small shapes, where latency and launch
//! overheads dominate, stay unsplit: splitting them is predicted slower, as measured
//! (flux #90/#111: fused GEMM+RS slower than torch on small and mid shapes; TokenWeave:
//! "decomposing small workloads results in worse performance", cost-model.md §3).

use weft_ir::{CollectiveKind, DType};
use weft_plan::{CollectiveConfig, KernelConfig};

use super::collective::Group;
use super::gemm::GemmShape;
use super::memory_bound::to_f64;
use super::{CostError, CostModel, OpCost};

/// The most chunks tried (NVIDIA's userbuffers presets use 4; Flux and T3 go to the tile).
pub const MAX_CHUNKS: u64 = 64;

/// Which GEMM dim the chunks cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cut {
    Batch,
    Rows,
    Cols,
}

/// One fused op, ready to cost.
#[derive(Clone, Debug)]
pub(crate) struct Fused {
    pub kind: CollectiveKind,
    pub gemm: GemmShape,
    pub dtype: DType,
    /// The collective's whole message, bytes.
    pub message: u64,
    pub group: Group,
    pub cut: Cut,
    /// The size of the dim the chunk count must divide.
    pub dim_size: u64,
}

/// One chunk count's prediction.
#[derive(Clone, Debug)]
pub(crate) struct ChunkPlan {
    pub chunks: u64,
    pub total_s: f64,
    pub gemm_s: f64,
    pub comm_s: f64,
    pub sm_fraction: f64,
    pub config: CollectiveConfig,
}

fn cut(g: GemmShape, c: u64, how: Cut) -> GemmShape {
    match how {
        Cut::Batch => GemmShape {
            batch: g.batch / c,
            ..g
        },
        Cut::Rows => GemmShape { m: g.m / c, ..g },
        Cut::Cols => GemmShape { n: g.n / c, ..g },
    }
}

impl CostModel {
    /// The prediction for `f` in `c` chunks; `sms`: the SMs its communication takes when
    /// a strategy fixes them (`None`: NCCL's choice for the chunk's collective).
    pub(crate) fn chunk_plan(
        &self,
        f: &Fused,
        c: u64,
        what: &str,
        sms: Option<u32>,
    ) -> Result<ChunkPlan, CostError> {
        let g = self
            .gemm
            .time(
                cut(f.gemm, c, f.cut),
                f.dtype,
                0.0,
                &self.mem,
                &self.profile,
                what,
            )?
            .seconds;
        let coll = self.coll.time(f.kind, f.message / c, f.group);
        let sm_fraction = match sms {
            Some(n) => self.sm_share(n),
            None => self.sm_fraction(&coll)?,
        };
        let q = coll.seconds;
        let kernel = KernelConfig::Collective(coll.config.clone());
        let sigma = self.contention_factor(sm_fraction, &kernel, q * 1e6);
        let steady = (to_f64(c) - 1.0) * (sigma * g).max(q);
        let total_s = g + steady + q;
        Ok(ChunkPlan {
            chunks: c,
            total_s,
            gemm_s: g * to_f64(c),
            comm_s: q * to_f64(c),
            sm_fraction,
            config: coll.config,
        })
    }

    /// The fastest chunk count for `f` and its cost (`sms` as for [`Self::chunk_plan`]).
    pub(crate) fn fused_cost(
        &self,
        f: &Fused,
        what: &str,
        sms: Option<u32>,
    ) -> Result<OpCost, CostError> {
        let mut best = self.chunk_plan(f, 1, what, sms)?;
        let mut c = 2;
        while c <= MAX_CHUNKS && f.dim_size % c == 0 {
            let p = self.chunk_plan(f, c, what, sms)?;
            if p.total_s < best.total_s {
                best = p;
            }
            c *= 2;
        }
        Ok(self.pipelined_cost(f, &best))
    }

    /// The cost of `f` run as the chunk plan `best`.
    pub(crate) fn pipelined_cost(&self, f: &Fused, best: &ChunkPlan) -> OpCost {
        let g = f.gemm;
        OpCost {
            time_us: best.total_s * 1e6,
            compute_us: best.gemm_s * 1e6,
            comm_us: best.comm_s * 1e6,
            comm_sm_fraction: best.sm_fraction,
            kernel: KernelConfig::Pipelined {
                chunks: best.chunks,
                gemm_m: g.batch.saturating_mul(g.m),
                gemm_n: g.n,
                gemm_k: g.k,
                collective: best.config.clone(),
            },
        }
    }
}
