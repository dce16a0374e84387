//! Each fixed strategy as data: which rewrite rules it uses, how its fused GEMM +
//! collective ops are chunked, how many SMs its communication kernels take — every field
//! with the place in `../shared/reference/overlap-systems.md` (or `techniques.md`) it
//! comes from. `docs/strategies.md` is generated from these specs ([`docs_table`]) and
//! test-pinned, so the documentation cannot drift from what `--strategy` does.
//!
//! A spec describes the peer system's *design*, not a measurement: a count "fixed at world
//! size" is taken as that count, an SM budget as that budget, and everything the survey
//! does not fix (the collectives' own algorithm, a GEMM's tiles) is left to Weft's cost
//! model, as for `best`, so every strategy is priced by the same formulas.

use weft_ir::CollectiveKind;

use super::Strategy;

/// A value and where it comes from.
#[derive(Clone, Copy, Debug)]
pub struct Sourced<T: 'static> {
    pub value: T,
    /// The section of the survey (or the reason there is none) it is taken from.
    pub source: &'static str,
}

/// How a strategy cuts its fused GEMM + collective ops into chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunking {
    /// The strategy fuses no GEMM with a collective.
    NoFusion,
    /// One chunk per rank of the collective's group: the ring-step decomposition.
    PerRank,
    /// One chunk per `rows`-row tile of every rank's piece (what a tile-granular kernel
    /// signals on), priced as a pipeline of that many chunks.
    Tiles { rows: u64 },
}

/// How a strategy chunks each kind of fused op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FusedChunks {
    /// All-gather + GEMM.
    pub all_gather: Chunking,
    /// GEMM + reduce-scatter.
    pub reduce_scatter: Chunking,
}

impl FusedChunks {
    /// No fused ops.
    pub const NONE: FusedChunks = FusedChunks {
        all_gather: Chunking::NoFusion,
        reduce_scatter: Chunking::NoFusion,
    };

    /// The chunking of a fused op whose collective is `kind`.
    pub fn of(self, kind: CollectiveKind) -> Chunking {
        match kind {
            CollectiveKind::ReduceScatter => self.reduce_scatter,
            CollectiveKind::AllGather
            | CollectiveKind::AllReduce
            | CollectiveKind::AllToAll
            | CollectiveKind::Send
            | CollectiveKind::Recv
            | CollectiveKind::Broadcast => self.all_gather,
        }
    }
}

/// The SMs a communication kernel occupies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommSms {
    /// NCCL's kernel for the algorithm the cost model picks (its SM share; the model's
    /// own choice).
    Nccl,
    /// A copy engine moves the data: no SMs (its HBM traffic still slows compute).
    CopyEngine,
    /// A kernel on this many SMs.
    Fixed(u32),
}

impl CommSms {
    /// The SM count to impose on the cost model (`None`: its own choice).
    pub fn imposed(self) -> Option<u32> {
        match self {
            CommSms::Nccl => None,
            CommSms::CopyEngine => Some(0),
            CommSms::Fixed(n) => Some(n),
        }
    }
}

/// One fixed strategy.
#[derive(Clone, Copy, Debug)]
pub struct StrategySpec {
    pub strategy: Strategy,
    /// The system it reproduces, in a few words.
    pub system: &'static str,
    /// The rewrite rules it saturates with, by name (`weft rules`), applied wherever they
    /// apply.
    pub rules: Sourced<&'static [&'static str]>,
    /// A rule the system needs that this build does not have yet, with what runs instead.
    pub pending: Option<&'static str>,
    /// How its fused GEMM + collective ops are chunked.
    pub chunks: Sourced<FusedChunks>,
    /// The SMs the communication inside its fused ops takes, per collective kind (a kind
    /// not listed: [`CommSms::Nccl`]).
    pub fused_comm: Sourced<&'static [(CollectiveKind, CommSms)]>,
    /// The SMs its stand-alone collectives take, per kind (not listed: NCCL's).
    pub collective_comm: Sourced<&'static [(CollectiveKind, CommSms)]>,
}

impl StrategySpec {
    /// The SMs of a fused op's communication over `kind`.
    pub fn fused_sms(&self, kind: CollectiveKind) -> CommSms {
        lookup(self.fused_comm.value, kind)
    }

    /// The SMs of a stand-alone collective of `kind`.
    pub fn collective_sms(&self, kind: CollectiveKind) -> CommSms {
        lookup(self.collective_comm.value, kind)
    }
}

fn lookup(table: &[(CollectiveKind, CommSms)], kind: CollectiveKind) -> CommSms {
    table
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(CommSms::Nccl, |(_, s)| *s)
}

/// Megatron-SP's rules: all-reduces become reduce-scatter + all-gather, with the
/// residual add, element-wise ops and norms moved onto the token shard.
const MEGATRON_SP_RULES: &[&str] = &[
    "all-reduce-to-reduce-scatter-all-gather",
    "elementwise-onto-shard",
    "slice-of-gather",
    "norm-onto-shard",
];

/// Megatron-SP with all-gather→GEMM and GEMM→reduce-scatter fused.
const FUSED_TP_RULES: &[&str] = &[
    "all-reduce-to-reduce-scatter-all-gather",
    "elementwise-onto-shard",
    "slice-of-gather",
    "norm-onto-shard",
    "gemm-reduce-scatter-fusion",
    "all-gather-gemm-fusion",
];

/// The tokens split into two halves carried through the layer (the token-split chains), so
/// each half's communication runs beside the other half's compute, and per half the fused
/// reduce-scatter + residual add + RMSNorm + all-gather kernel — whose pattern the
/// collective rules make (the all-reduce split into reduce-scatter and all-gather, the
/// add and the norm moved onto the token shard). Saturation repeats its phases in rounds,
/// so the collective rules reach the halves too.
const TOKENWEAVE_RULES: &[&str] = &[
    "token-split-all-reduce",
    "token-split-matmul",
    "slice-of-concat",
    "token-split-elementwise",
    "token-split-norm",
    "token-split-rope",
    "token-split-fused",
    "all-reduce-to-reduce-scatter-all-gather",
    "elementwise-onto-shard",
    "norm-onto-shard",
    "slice-of-gather",
    "tokenweave-fused-rs-norm-ag",
];

/// Flux's dense kernels elsewhere; in the MoE layers Comet's expert-GEMM splits and the
/// dispatch all-to-all split per expert group, so each group's GEMM starts as its tokens
/// arrive.
const COMET_RULES: &[&str] = &[
    "all-reduce-to-reduce-scatter-all-gather",
    "elementwise-onto-shard",
    "slice-of-gather",
    "norm-onto-shard",
    "gemm-reduce-scatter-fusion",
    "all-gather-gemm-fusion",
    "expert-gemm-split-blocks",
    "expert-gemm-split-columns",
    "all-to-all-split-expert-groups",
];

const NCCL_ONLY: &[(CollectiveKind, CommSms)] = &[];

/// Flux's fused kernels: all-gather + GEMM signals per rank's chunk, GEMM + reduce-scatter
/// per output tile.
const FLUX_CHUNKS: FusedChunks = FusedChunks {
    all_gather: Chunking::PerRank,
    reduce_scatter: Chunking::Tiles { rows: 128 },
};

/// Why NCCL's SM share stands for a system's collectives.
const NCCL_SOURCE: &str = "not fixed by the system: NCCL's kernel for the algorithm the cost \
                           model picks (docs/cost-model.md)";

/// Every fixed strategy, in `Strategy::FIXED` order.
pub const SPECS: [StrategySpec; 6] = [
    StrategySpec {
        strategy: Strategy::None,
        system: "Megatron-LM tensor parallelism as sharded: no overlap",
        rules: Sourced {
            value: &[],
            source: "none: the sharded program unchanged (the baseline every system in \
                     overlap-systems.md is measured against)",
        },
        pending: None,
        chunks: Sourced {
            value: FusedChunks::NONE,
            source: "no fusion",
        },
        fused_comm: Sourced {
            value: NCCL_ONLY,
            source: "no fusion",
        },
        collective_comm: Sourced {
            value: NCCL_ONLY,
            source: NCCL_SOURCE,
        },
    },
    StrategySpec {
        strategy: Strategy::MegatronSp,
        system: "Megatron-LM sequence parallelism (the baseline of overlap-systems.md §1, §11)",
        rules: Sourced {
            value: MEGATRON_SP_RULES,
            source: "overlap-systems.md §3 (vLLM runs async TP on top of a sequence-parallelism \
                     pass); techniques.md §5.2(a) (reduce-scatter, residual and RMSNorm on the \
                     token shard, all-gather)",
        },
        pending: None,
        chunks: Sourced {
            value: FusedChunks::NONE,
            source: "no fusion: collectives run whole",
        },
        fused_comm: Sourced {
            value: NCCL_ONLY,
            source: "no fusion",
        },
        collective_comm: Sourced {
            value: NCCL_ONLY,
            source: NCCL_SOURCE,
        },
    },
    StrategySpec {
        strategy: Strategy::AsyncTp,
        system: "PyTorch async TP (micro-pipeline TP + SymmetricMemory)",
        rules: Sourced {
            value: FUSED_TP_RULES,
            source: "overlap-systems.md §3 What it does (all_gather→mm becomes \
                     fused_all_gather_matmul, mm→reduce_scatter becomes \
                     fused_matmul_reduce_scatter, on a sequence-parallel graph)",
        },
        pending: None,
        chunks: Sourced {
            value: FusedChunks {
                all_gather: Chunking::PerRank,
                reduce_scatter: Chunking::PerRank,
            },
            source: "overlap-systems.md §3 Granularity (ring step: one shard per rank, \
                     group_size steps) and Chunk size (fixed at world size; no tuner)",
        },
        fused_comm: Sourced {
            value: &[
                (CollectiveKind::AllGather, CommSms::CopyEngine),
                (CollectiveKind::ReduceScatter, CommSms::CopyEngine),
            ],
            source: "overlap-systems.md §3 Signalling (remote shards pulled with plain copy_ \
                     on the copy engine) and the feature table (SM-free comm ✓, no comm-SM \
                     budget)",
        },
        collective_comm: Sourced {
            value: NCCL_ONLY,
            source: NCCL_SOURCE,
        },
    },
    StrategySpec {
        strategy: Strategy::TokenWeave,
        system: "TokenWeave (vLLM fork): two token halves, fused AllReduce-RMSNorm",
        rules: Sourced {
            value: TOKENWEAVE_RULES,
            source: "overlap-systems.md §2 What it does (two token subsets: computation on one \
                     overlaps the AllReduce of the other) and Granularity (token split into 2, \
                     layer level)",
        },
        pending: None,
        chunks: Sourced {
            value: FusedChunks::NONE,
            source: "overlap-systems.md §2 Granularity: the token split is the only \
                     decomposition; no GEMM is fused with a collective",
        },
        fused_comm: Sourced {
            value: NCCL_ONLY,
            source: "no fusion",
        },
        collective_comm: Sourced {
            value: &[
                (CollectiveKind::AllReduce, CommSms::Fixed(8)),
                (CollectiveKind::ReduceScatter, CommSms::Fixed(8)),
                (CollectiveKind::AllGather, CommSms::Fixed(8)),
            ],
            source: "overlap-systems.md §2 Chunk size / SM split (the comm+RMSNorm kernel on \
                     2–8 SMs); 8 is its Llama TP8 config at 2048 tokens (techniques.md \
                     §5.2(b): attention_ctas = mlp_ctas = 8)",
        },
    },
    StrategySpec {
        strategy: Strategy::Flux,
        system: "ByteDance Flux: tile-level fused AG+GEMM and GEMM+RS",
        rules: Sourced {
            value: FUSED_TP_RULES,
            source: "overlap-systems.md §1 What it does (AllGather+GEMM, GEMM+ReduceScatter \
                     kernels for Megatron-style TP; measured against Megatron-LM)",
        },
        pending: None,
        chunks: Sourced {
            value: FLUX_CHUNKS,
            source: "overlap-systems.md §1 Decomposition granularity (tile level) and \
                     Signalling (AG: the copy engine moves each rank's chunk and raises its \
                     flag, GEMM tiles wait on the chunk they read, so the pipeline steps per \
                     rank; GEMM+RS: each tile is written to its destination from the epilogue). \
                     128 rows is the cost model's GEMM tile (docs/cost-model.md); priced as a \
                     pipeline of that many chunks, each paying a launch and a collective \
                     latency that one fused kernel pays once: an upper bound on Flux's time",
        },
        fused_comm: Sourced {
            value: &[(CollectiveKind::AllGather, CommSms::CopyEngine)],
            source: "overlap-systems.md §1 Signalling (AG: copy-engine cudaMemcpyAsync); RS: \
                     NVSHMEM puts on gather_rs_ctas CTAs tuned per shape (§1 Chunk size / SM \
                     split), no figure in the survey, so NCCL's share stands in",
        },
        collective_comm: Sourced {
            value: NCCL_ONLY,
            source: NCCL_SOURCE,
        },
    },
    StrategySpec {
        strategy: Strategy::Comet,
        system: "ByteDance Comet: MoE expert GEMMs split along tokens (layer0) and columns \
                 (layer1); Flux elsewhere",
        rules: Sourced {
            value: COMET_RULES,
            source: "overlap-systems.md §1 Decomposition granularity (MoE: tiles rescheduled \
                     along M for layer0, N for layer1); techniques.md §3.2 (shared-tensor \
                     decomposition); dense layers as Flux",
        },
        pending: None,
        chunks: Sourced {
            value: FLUX_CHUNKS,
            source: "overlap-systems.md §1 Decomposition granularity (tile level), as Flux",
        },
        fused_comm: Sourced {
            value: &[(CollectiveKind::AllGather, CommSms::CopyEngine)],
            source: "as Flux (overlap-systems.md §1 Signalling)",
        },
        collective_comm: Sourced {
            value: &[(CollectiveKind::AllToAll, CommSms::Fixed(18))],
            source: "overlap-systems.md §1 Chunk size / SM split (adaptive assignment of \
                     thread blocks to communication); techniques.md §3.2.3: 18 of 132 SMs at \
                     TP=8, M=4096 (26 at M=16384)",
        },
    },
];

/// The spec of a fixed strategy; `None` for `best`.
pub fn spec(strategy: Strategy) -> Option<&'static StrategySpec> {
    SPECS.iter().find(|s| s.strategy == strategy)
}

/// A chunking as the table says it.
fn chunking_text(c: FusedChunks) -> String {
    let one = |c: Chunking| match c {
        Chunking::NoFusion => "not fused".to_owned(),
        Chunking::PerRank => "one per rank of the group".to_owned(),
        Chunking::Tiles { rows } => format!("one per {rows}-row tile of each rank's piece"),
    };
    if c == FusedChunks::NONE {
        return "no fused ops".to_owned();
    }
    format!(
        "AG+GEMM: {}; GEMM+RS: {}",
        one(c.all_gather),
        one(c.reduce_scatter)
    )
}

fn sms_text(table: &[(CollectiveKind, CommSms)]) -> String {
    if table.is_empty() {
        return "NCCL's".to_owned();
    }
    let mut parts: Vec<String> = table
        .iter()
        .map(|(k, s)| {
            let n = match s {
                CommSms::Nccl => "NCCL's".to_owned(),
                CommSms::CopyEngine => "0 (copy engine)".to_owned(),
                CommSms::Fixed(n) => n.to_string(),
            };
            format!("{}: {n}", k.name())
        })
        .collect();
    parts.push("others: NCCL's".to_owned());
    parts.join("; ")
}

/// `docs/strategies.md`'s tables, generated from [`SPECS`].
pub fn docs_table() -> String {
    let mut s = String::new();
    s.push_str(
        "| strategy | system | rules | chunks of a fused GEMM + collective | SMs of fused \
         communication | SMs of collectives |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for spec in &SPECS {
        let rules = if spec.rules.value.is_empty() {
            "none".to_owned()
        } else {
            spec.rules
                .value
                .iter()
                .map(|r| format!("`{r}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        s.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            spec.strategy,
            spec.system,
            rules,
            chunking_text(spec.chunks.value),
            sms_text(spec.fused_comm.value),
            sms_text(spec.collective_comm.value),
        ));
    }
    s.push_str(
        "\nWhere each field comes from:\n\n| strategy | field | source |\n| --- | --- | --- |\n",
    );
    for spec in &SPECS {
        for (field, source) in [
            ("rules", spec.rules.source),
            ("chunks", spec.chunks.source),
            ("fused communication", spec.fused_comm.source),
            ("collectives", spec.collective_comm.source),
        ] {
            s.push_str(&format!("| `{}` | {field} | {source} |\n", spec.strategy));
        }
        if let Some(p) = spec.pending {
            s.push_str(&format!("| `{}` | not yet | {p} |\n", spec.strategy));
        }
    }
    s
}
