//! Overlap strategies: how the chosen program is decided.
//!
//! `best` is Weft's own choice (schedule-in-the-loop search over the saturated e-graph,
//! [`crate::search`]). Every other strategy reproduces one system's *fixed* decomposition
//! inside Weft's IR, rules and cost model — which collectives it splits, into how many
//! chunks, on how many SMs, as `../shared/reference/overlap-systems.md` documents it — so
//! that all of them are compared in one run on identical cost models. `none` is the same
//! layout with no overlap at all: the sharded program as the sharder wrote it.

use std::fmt;
use std::str::FromStr;

mod program;
pub mod spec;

pub use program::{FixedProgram, StrategyCosts, StrategyError, fixed_program};
pub use spec::{Chunking, CommSms, FusedChunks, SPECS, StrategySpec};

/// One way of deciding the program (`weft compile --strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Strategy {
    /// The sharded program as is: every collective whole, nothing overlapped.
    None,
    /// Megatron-LM sequence parallelism: all-reduces become reduce-scatter + all-gather
    /// with norms and element-wise ops on the token shard; no overlap.
    MegatronSp,
    /// PyTorch async tensor parallelism: Megatron-SP with every all-gather→GEMM and
    /// GEMM→reduce-scatter decomposed per rank on the communication stream.
    AsyncTp,
    /// TokenWeave: tokens split in two so one half's communication overlaps the other's
    /// compute, with the fused reduce-scatter + residual + RMSNorm + all-gather kernel.
    TokenWeave,
    /// ByteDance Flux: tile-level fused AG+GEMM and GEMM+RS kernels.
    Flux,
    /// ByteDance Comet: MoE all-to-all split per expert group so expert GEMMs start as
    /// tokens arrive.
    Comet,
    /// Weft's search: the fastest predicted schedule among everything the e-graph holds,
    /// never slower than `none` nor than any fixed strategy it is seeded with.
    Best,
}

impl Strategy {
    /// Every strategy, `best` last.
    pub const ALL: [Strategy; 7] = [
        Strategy::None,
        Strategy::MegatronSp,
        Strategy::AsyncTp,
        Strategy::TokenWeave,
        Strategy::Flux,
        Strategy::Comet,
        Strategy::Best,
    ];

    /// The fixed strategies (all but `best`).
    pub const FIXED: [Strategy; 6] = [
        Strategy::None,
        Strategy::MegatronSp,
        Strategy::AsyncTp,
        Strategy::TokenWeave,
        Strategy::Flux,
        Strategy::Comet,
    ];

    /// The name `--strategy` takes.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::None => "none",
            Strategy::MegatronSp => "megatron-sp",
            Strategy::AsyncTp => "async-tp",
            Strategy::TokenWeave => "tokenweave",
            Strategy::Flux => "flux",
            Strategy::Comet => "comet",
            Strategy::Best => "best",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--strategy` value that names no strategy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown strategy `{0}` (strategies: none, megatron-sp, async-tp, tokenweave, flux, comet, best)"
)]
pub struct UnknownStrategy(pub String);

impl FromStr for Strategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Strategy, UnknownStrategy> {
        Strategy::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| UnknownStrategy(s.to_owned()))
    }
}

#[cfg(test)]
mod spec_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_refused() {
        for s in Strategy::ALL {
            assert_eq!(s.name().parse::<Strategy>(), Ok(s));
        }
        let e = "fastest".parse::<Strategy>().unwrap_err();
        assert!(e.to_string().contains("unknown strategy `fastest`"), "{e}");
    }
}
