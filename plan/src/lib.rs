//! # weft-plan — the execution plan
//!
//! The product of the compiler: for each rank, streams of tasks with the events that
//! order them across streams, each task's kernel configuration and predicted start and
//! end, a memory plan, and the whole step's prediction. Backends consume a plan without
//! depending on the passes that made it, so this crate depends only on the IR.
//!
//! A plan is self-contained except for weights stored in external files: it carries the
//! chosen per-device program (Weft JSON, `program`), and records the source model (path
//! and content hash), dims, mesh, hardware profile and rules applied, so a reader can
//! tell exactly what it was compiled from.
//!
//! Tasks refer to IR nodes by name (names are unique and survive rebuilds; arena handles
//! do not). Kernel configurations, chunk counts included, live here, not in the ops.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod error;
mod json;
pub mod mesh;
mod priority;
pub mod serial;
mod text;
mod trace;
mod verify;

pub use error::{PlanError, PlanErrors, PlanRule, Violation};
pub use priority::{PriorityTried, SchedulePriority};
pub use serial::{PlanHeader, serial_plan};
pub use text::rank_count;
pub use verify::verify_plan;

/// The JSON `format` tag of a plan file.
pub const PLAN_FORMAT: &str = "weft-plan";
/// The plan format's version. Readers refuse other versions with a clear error.
pub const PLAN_VERSION: u32 = 3;

/// A whole execution plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Always [`PLAN_FORMAT`].
    pub format: String,
    /// Always [`PLAN_VERSION`] for plans this crate writes.
    pub version: u32,
    /// The Weft version that wrote the plan.
    pub compiler: String,
    pub source: SourceModel,
    /// Values of the model's symbolic dims the plan was compiled for (shapes are
    /// concrete from sharding on, so a plan is tied to one set of dim values).
    pub dims: BTreeMap<String, u64>,
    /// The device mesh, axes in order (device index is row-major over them).
    pub mesh: Vec<MeshAxis>,
    pub hardware: HardwareRef,
    pub options: CompileOptions,
    /// Exact rewrite rules that the chosen program uses, with how many times each was
    /// applied in it.
    pub rules_applied: Vec<RuleCount>,
    /// Model-changing rewrites (ladder residual, DCCA), opted into by name; empty when
    /// the program computes exactly what the source model does.
    pub model_changing_rewrites: Vec<weft_ir::ModelChange>,
    /// The chosen per-device (SPMD) program, as a Weft JSON model object
    /// (docs/json-format.md). Every task's nodes are nodes of this program.
    pub program: serde_json::Value,
    /// SHA-256 of `program` as compact JSON ([`program_digest`]): a program edited after
    /// compilation no longer matches the schedule made for it, so reading refuses it.
    pub program_sha256: String,
    /// One entry per device of the mesh, in device order.
    pub ranks: Vec<RankPlan>,
    pub prediction: Prediction,
    /// How the program was chosen, for `weft inspect`'s per-layer view.
    pub choice: ChoiceSummary,
}

/// How the program was chosen: the candidate that won, the rewrites each layer's nodes
/// come from, the same layers' spans in the plan of the program as sharded (no rewrite),
/// and what each rule saves in the search's scope.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChoiceSummary {
    /// The candidate that won: `search`, `greedy extraction`, `as sharded`, or a fixed
    /// strategy's name (`serial` for a serial plan).
    pub chosen_by: String,
    /// The predicted step of the program as sharded, every collective whole
    /// (`--strategy none`), µs; `None` when it was not scheduled.
    pub as_sharded_us: Option<f64>,
    /// Per layer (`None`: nodes outside every layer), the rules its rewritten nodes come
    /// from, with how many nodes each made; layers with no rewritten node are left out.
    pub layer_rewrites: Vec<LayerRewrites>,
    /// Per layer, its span on rank 0 in the plan of the program as sharded (µs), to set
    /// beside this plan's spans.
    pub as_sharded_layer_spans_us: Vec<LayerSpanUs>,
    /// Per rule the search's program uses: how much slower the search's scope is
    /// predicted with that rule's uses put back to the original ops (an ablation).
    pub rule_savings: Vec<RuleSaving>,
    /// The priority rule list scheduling ran this plan's tasks in (the fastest of the
    /// rules tried that fits the memory limit; ties to the critical path).
    pub schedule_priority: SchedulePriority,
    /// Every rule the scheduler simulated for this program, in [`SchedulePriority::ALL`]
    /// order, with its predicted step; empty for a plan not list-scheduled (serial).
    pub schedule_priorities: Vec<PriorityTried>,
}

/// The rules one layer's rewritten nodes come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerRewrites {
    pub layer: Option<u32>,
    /// Rule and how many of the layer's nodes it made.
    pub rewrites: Vec<RuleCount>,
}

/// One layer's span on rank 0, and what it adds to the step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpanUs {
    pub layer: u32,
    /// From the layer's first task's start to its last task's end.
    pub span_us: f64,
    /// The layer's last task's end minus the previous layer's (its first task's start for
    /// the first layer): what the layer adds to the step. Layers overlap when the
    /// schedule interleaves them, so spans do not add up to the step; advances do.
    pub advance_us: f64,
}

/// What one rule saves, by ablation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSaving {
    pub rule: String,
    /// Predicted µs the scope gets slower without the rule; `None` when the program
    /// without it could not be scheduled (`note` says why).
    pub saved_us: Option<f64>,
    /// What was predicted: `layers 39..=41 of 80` or `the whole program`.
    pub scope: String,
    pub note: Option<String>,
}

/// The model a plan was compiled from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceModel {
    /// The path as given to `weft compile`.
    pub path: String,
    /// `json` or `onnx`.
    pub format: String,
    /// SHA-256 of the file's bytes, lower-case hex.
    pub sha256: String,
}

/// One mesh axis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshAxis {
    pub name: String,
    pub size: u64,
}

/// The hardware profile the plan's times are predicted for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareRef {
    /// The profile's name (`h100-sxm-8`, or the name inside a user's profile file).
    pub name: String,
    /// SHA-256 of the profile's canonical JSON, so an edited profile is told apart.
    pub sha256: String,
}

/// Options `weft compile` was given that change the plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompileOptions {
    /// Megatron sequence parallelism for norms.
    pub sp_norms: bool,
    /// The per-rank memory limit the memory plan was checked against (`--max-memory`,
    /// else the device's memory); `None` for plans made without one (serial plans).
    pub max_memory_bytes: Option<u64>,
    /// How the program was decided (`--strategy`): `best` (Weft's search) or the name of
    /// a fixed peer decomposition (`none`, `megatron-sp`, `async-tp`, `tokenweave`,
    /// `flux`, `comet`).
    pub strategy: String,
}

/// A rewrite rule and how many times the chosen program uses it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleCount {
    pub rule: String,
    pub count: u64,
}

/// Typed index of a [`Task`] within its rank (its position in `RankPlan::tasks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub u32);

/// Typed index of a [`Stream`] within its rank (its position in `RankPlan::streams`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamId(pub u32);

/// Typed index of an event within its rank. An event is recorded by exactly one task
/// (when it ends) and waited on by tasks of other streams (before they start).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub u32);

/// Typed index of a [`Buffer`] within its rank (its position in `RankPlan::buffers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BufferId(pub u32);

/// Everything one device does in a step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankPlan {
    /// The device index (row-major over the mesh axes).
    pub rank: u32,
    /// The device's coordinate on each mesh axis, in axis order.
    pub coords: Vec<u64>,
    pub streams: Vec<Stream>,
    /// Tasks in issue order: on each stream, tasks run in the order they appear here.
    pub tasks: Vec<Task>,
    /// Every tensor the rank holds: weights, inputs, activations, outputs.
    pub buffers: Vec<Buffer>,
    pub memory: MemorySummary,
}

/// What a stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// Compute kernels (and the fused GEMM + collective kernels).
    Compute,
    /// Communication kernels.
    Comm,
}

/// An in-order queue of tasks on one device (a CUDA stream).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stream {
    pub id: StreamId,
    pub kind: StreamKind,
    /// A display name for traces (`compute`, `comm`, `comm.ep`, …).
    pub name: String,
}

/// One kernel launch (or a view, which launches nothing) on one stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    pub id: TaskId,
    /// The program nodes this task executes, in order (one, or several for a kernel
    /// that the backend groups).
    pub nodes: Vec<String>,
    /// The layer (from layer segmentation) the first node belongs to; `None` outside
    /// layers (embedding, head).
    pub layer: Option<u32>,
    pub stream: StreamId,
    /// Events recorded by tasks of other streams that must complete before this starts.
    pub waits: Vec<EventId>,
    /// The event this task records when it ends, if another stream waits on it.
    pub record: Option<EventId>,
    /// Buffers this task reads.
    pub reads: Vec<BufferId>,
    /// Buffers this task writes.
    pub writes: Vec<BufferId>,
    /// For a task that communicates: which collective call it is, so every rank of the
    /// group issues the same calls in the same order.
    pub collective: Option<CollectiveCall>,
    pub kernel: KernelConfig,
    /// Predicted start and end, µs from the start of the step.
    pub start_us: f64,
    pub end_us: f64,
}

/// A communicating task's place in its group's call sequence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectiveCall {
    /// `all_reduce`, `all_gather`, `reduce_scatter`, `all_to_all`, `send`, `recv`,
    /// `broadcast` (the collective inside a fused op for the fused ops).
    pub kind: String,
    pub axis: String,
    /// The ranks of the group, in group order (this rank among them).
    pub group: Vec<u32>,
    /// 0-based position of this call among the group's calls on this rank.
    pub seq: u64,
}

/// How a task's kernel is configured, as the cost model chose it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum KernelConfig {
    /// A view: no kernel.
    View,
    /// A GEMM (or batched / grouped GEMM): problem size and the tile grid.
    Gemm {
        batch: u64,
        m: u64,
        n: u64,
        k: u64,
        /// Output tiles (CTAs) of the tile shape the model assumed.
        tiles: u64,
        /// Waves of CTAs over the SMs available.
        waves: u64,
    },
    /// A kernel bound by memory traffic (element-wise, norms, softmax, layout, MoE
    /// routing, attention at decode sizes).
    MemoryBound { bytes: u64 },
    /// A collective kernel as NCCL would run it.
    Collective(CollectiveConfig),
    /// A GEMM fused with a collective, pipelined in `chunks` pieces.
    Pipelined {
        chunks: u64,
        gemm_m: u64,
        gemm_n: u64,
        gemm_k: u64,
        collective: CollectiveConfig,
    },
    /// A communication kernel that also computes, on a budget of SMs the cost model
    /// chose: TokenWeave's fused reduce-scatter + residual add + RMSNorm + all-gather
    /// (multimem loads and stores over NVLS, `MAX_CTAS` thread blocks, one per SM).
    CommNorm {
        /// SMs (thread blocks) the kernel runs on.
        sms: u64,
        /// HBM bytes the add and the norm read and write on this device's shard.
        norm_bytes: u64,
        collective: CollectiveConfig,
    },
    /// No cost model configured this kernel: a serial, unscheduled plan
    /// ([`serial_plan`]) made for checking, whose predicted times are all 0. `chunks` is
    /// a fused GEMM + collective op's chunk count (the one kernel setting that changes
    /// what executes, as the order of the partial sums) and `None` for any other task.
    Unconfigured { chunks: Option<u64> },
}

/// NCCL's choice for one collective.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectiveConfig {
    /// `ring`, `tree`, `nvls`, `nvls_tree`, `hierarchical`, `p2p`.
    pub algorithm: String,
    /// `ll`, `ll128`, `simple`.
    pub protocol: String,
    /// NCCL's message size (nccl-tests `size`), bytes.
    pub message_bytes: u64,
    pub group_size: u64,
    /// Whether the group spans more than one node.
    pub inter_node: bool,
}

/// Where a buffer's bytes come from and how long they live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferKind {
    /// A weight or constant: resident for the whole step.
    Weight,
    /// A graph input: resident from the start until its last read.
    Input,
    /// An intermediate value: from its producer until its last read.
    Activation,
    /// A graph output: from its producer until the end of the step.
    Output,
}

/// A tensor's storage on one rank.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Buffer {
    pub id: BufferId,
    /// The program values stored here: the first is the one that allocated it, the
    /// rest are views of it (reshapes), which share its storage.
    pub values: Vec<String>,
    pub kind: BufferKind,
    pub bytes: u64,
    /// Offset in the rank's pool for its kind (weights and activations are separate
    /// pools), a multiple of [`BUFFER_ALIGNMENT`]; two buffers of one pool overlap in
    /// memory only if their lifetimes do not.
    pub offset: u64,
    /// The task that writes it (`None` for weights and inputs, present at the start).
    pub producer: Option<TaskId>,
    /// The last task that reads it (`None` when nothing reads it, or for outputs and
    /// weights, which live to the end).
    pub last_reader: Option<TaskId>,
}

/// A rank's memory plan in figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySummary {
    /// The weight pool's size (weights and constants, resident all step): the highest
    /// `offset + aligned_size(bytes)` of any weight buffer.
    pub weight_bytes: u64,
    /// The activation pool's size: the highest `offset + aligned_size(bytes)` of any
    /// non-weight buffer.
    pub activation_peak_bytes: u64,
    /// `weight_bytes + activation_peak_bytes`.
    pub peak_bytes: u64,
    /// The task during which the activation pool is fullest.
    pub peak_at: Option<TaskId>,
}

/// The step's predicted figures, all in µs unless named otherwise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prediction {
    /// The latest task end over all ranks.
    pub predicted_us: f64,
    /// The same program with every rank's streams serialised (no overlap).
    pub baseline_us: f64,
    /// The busiest resource's unavoidable work on the busiest rank: no schedule can
    /// beat it.
    pub bound_us: f64,
    /// Communication time not hidden behind compute (on the critical rank).
    pub exposed_comm_us: f64,
    /// Fraction of communication hidden: `1 - exposed / total`, 1 when there is none.
    pub overlap_efficiency: f64,
    /// Peak bytes per rank, in rank order.
    pub peak_memory_bytes: Vec<u64>,
}

impl KernelConfig {
    /// The chunk count a fused GEMM + collective task is pipelined in, when the
    /// configuration says one.
    pub fn chunks(&self) -> Option<u64> {
        match self {
            KernelConfig::Pipelined { chunks, .. } => Some(*chunks),
            KernelConfig::Unconfigured { chunks } => *chunks,
            KernelConfig::View
            | KernelConfig::Gemm { .. }
            | KernelConfig::MemoryBound { .. }
            | KernelConfig::Collective(_)
            | KernelConfig::CommNorm { .. } => None,
        }
    }
}

/// Every buffer's `offset` is a multiple of this many bytes, and each buffer takes its
/// size rounded up to it in its pool. 256 is the alignment `cudaMalloc` guarantees: "any
/// address of a variable residing in global memory or returned by one of the memory
/// allocation routines from the driver or runtime API is always aligned to at least 256
/// bytes" (CUDA C++ Programming Guide, "Device Memory Accesses",
/// <https://docs.nvidia.com/cuda/cuda-c-programming-guide/index.html#device-memory-accesses>).
/// A pool carved from one allocation keeps each buffer as aligned as its own
/// `cudaMalloc` would, which vectorised loads (16 bytes) and libraries such as cuBLAS
/// expect.
pub const BUFFER_ALIGNMENT: u64 = 256;

/// The bytes a buffer of `bytes` takes in its pool: `bytes` rounded up to
/// [`BUFFER_ALIGNMENT`]; `None` past 64 bits.
pub fn aligned_size(bytes: u64) -> Option<u64> {
    bytes.checked_next_multiple_of(BUFFER_ALIGNMENT)
}

/// SHA-256 (lower-case hex) of a program as compact JSON, the digest a plan records in
/// `program_sha256`.
pub fn program_digest(program: &serde_json::Value) -> String {
    let text = program.to_string();
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
