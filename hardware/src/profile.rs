//! The typed hardware profile: one node type (GPU, intra-node link), how many of them, and the
//! inter-node link when there is more than one node.
//!
//! Every constant is a [`Sourced`] value: the number, how much to trust it and where it comes
//! from, so a cost-model prediction can always be traced back to a citation. Optional fields
//! are the ones the reference material has no figure for on some GPU: they are left out rather
//! than filled with an invented number, and a consumer that needs one must refuse.

use serde::{Deserialize, Serialize};

use crate::units::{
    Bytes, BytesPerSec, Count, FlopsPerSec, Fraction, GemmPoint, ProtocolSeconds, Seconds,
    SizePoint,
};

/// How far a constant can be trusted (the markers of `cost-model.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Measured on the hardware and read in the primary source (benchmark, maintainer).
    Measured,
    /// A vendor specification (peak, line rate, capacity).
    Specification,
    /// Another tool's model or tuner constant (NCCL `tuning.cc`, XLA, Calculon).
    Model,
    /// A third-party summary; the primary source was not read.
    Secondary,
    /// Derived or guessed where no source gives the number; the source text says how.
    Estimate,
}

impl Confidence {
    /// The lower-case name used in JSON, `hw show` and docs/hardware.md.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Measured => "measured",
            Self::Specification => "specification",
            Self::Model => "model",
            Self::Secondary => "secondary",
            Self::Estimate => "estimate",
        }
    }

    /// Whether the number is an estimate rather than something a source states.
    pub fn is_estimate(self) -> bool {
        matches!(self, Self::Estimate)
    }
}

/// A constant with its provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sourced<T> {
    /// The number, in SI base units.
    pub value: T,
    /// How far to trust it.
    pub confidence: Confidence,
    /// A short citation (reference section, repository file, issue thread), and for an
    /// estimate the reasoning that produced it.
    pub source: String,
}

/// The fabric that joins the GPUs of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntraNodeKind {
    /// NVLink through NVSwitch: every pair at the full NVLink rate.
    Nvswitch,
    /// PCIe only (through the host or PCIe switches).
    Pcie,
}

/// The fabric between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterNodeKind {
    /// InfiniBand NDR, one 400 Gb/s NIC per GPU.
    InfinibandNdr,
    /// InfiniBand of another generation or NIC count, at the rate the profile gives (its
    /// `line_rate_per_gpu` and `bandwidth_per_gpu` say what each GPU gets).
    Infiniband,
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// The GPU's marketing name, e.g. `NVIDIA H100 SXM5 80GB`.
    pub gpu: String,
    /// Streaming multiprocessors (wave quantization, SMs taken by communication kernels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sm_count: Option<Sourced<Count>>,
    /// Shared memory per SM (kernel configuration); absent where no source gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_memory_per_sm: Option<Sourced<Bytes>>,
    /// 32-bit registers per SM; absent where no source gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registers_per_sm: Option<Sourced<Count>>,
    /// Peak dense BF16/FP16 tensor-core rate (the datasheet figure).
    pub peak_dense_16bit: Sourced<FlopsPerSec>,
    /// The best dense BF16/FP16 matmul rate measured (large shapes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub achievable_dense_16bit: Option<Sourced<FlopsPerSec>>,
    /// Peak dense FP8 rate, where the GPU has FP8 tensor cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_dense_fp8: Option<Sourced<FlopsPerSec>>,
    /// The best dense FP8 matmul rate measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub achievable_dense_fp8: Option<Sourced<FlopsPerSec>>,
    /// Peak dense FP32 rate without tensor cores (vector FMA), the rate an `f32` GEMM is
    /// costed at; absent where no source gives it (then `f32` GEMMs are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_dense_f32: Option<Sourced<FlopsPerSec>>,
    /// Measured BF16 GEMM throughputs at several sizes, the points the cost model's
    /// size-dependent efficiency curve interpolates (only the ones used for calibration;
    /// held-aside figures live with the cost model's validation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gemm_table: Option<Sourced<Vec<GemmPoint>>>,
    /// Device memory (HBM, or GDDR on the L20).
    pub memory_capacity: Sourced<Bytes>,
    /// Peak device-memory bandwidth (datasheet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_peak_bandwidth: Option<Sourced<BytesPerSec>>,
    /// Device-memory bandwidth a memory-bound kernel actually reaches on large transfers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_achievable_bandwidth: Option<Sourced<BytesPerSec>>,
    /// Share of the nominal memory bandwidth reached by transfers of a given size; the
    /// largest point's share corresponds to `memory_achievable_bandwidth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_efficiency: Option<Sourced<Vec<SizePoint>>>,
}

/// NCCL's own tuner constants for one node type (`src/graph/tuning.cc`), the α–β model
/// NCCL uses to choose an algorithm and protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NcclTuning {
    /// Fixed latency of a ring collective per protocol (`baseLatencies`).
    pub ring_base_latency: Sourced<ProtocolSeconds>,
    /// Latency per ring step on this link per protocol (`hwLatencies`).
    pub ring_step_latency: Sourced<ProtocolSeconds>,
    /// Fixed latency of a tree collective per protocol.
    pub tree_base_latency: Sourced<ProtocolSeconds>,
    /// Latency per tree step on this link per protocol.
    pub tree_step_latency: Sourced<ProtocolSeconds>,
    /// Latency of an NVLink SHARP all-reduce (Simple), where the node has NVLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvls_latency: Option<Sourced<Seconds>>,
    /// Bus-bandwidth cap of the LL protocol (`llMaxBws`).
    pub ll_max_bus_bandwidth: Sourced<BytesPerSec>,
    /// LL128 bandwidth per channel (`perChMaxRingLL128Bws`).
    pub ll128_channel_bandwidth: Sourced<BytesPerSec>,
    /// Channels (rings) NCCL runs at most.
    pub channels: Sourced<Count>,
    /// Share of the Simple bandwidth LL128 reaches on a ring.
    pub ll128_ring_factor: Sourced<Fraction>,
}

/// The link between the GPUs of one node, as NCCL sees it on all of them at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntraNodeLink {
    /// NVSwitch or PCIe.
    pub kind: IntraNodeKind,
    /// Line rate per GPU per direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_rate_per_direction: Option<Sourced<BytesPerSec>>,
    /// All-reduce bus bandwidth (nccl-tests `busbw`) at large sizes over all the node's GPUs,
    /// with NCCL's default algorithm (NVLink SHARP where the node has it).
    pub allreduce_bus_bandwidth: Sourced<BytesPerSec>,
    /// All-gather bus bandwidth at large sizes (also reduce-scatter, all-to-all, ring
    /// all-reduce: the SM-driven ring rate).
    pub allgather_bus_bandwidth: Sourced<BytesPerSec>,
    /// Fixed cost of one all-reduce over the node (small-message time).
    pub allreduce_latency: Sourced<Seconds>,
    /// Fixed cost of one all-gather (or reduce-scatter) over the node.
    pub allgather_latency: Sourced<Seconds>,
    /// Whether NCCL can use NVLink SHARP (NVLS, in-switch reduction); absent where unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvlink_sharp: Option<Sourced<bool>>,
    /// NCCL's tuner constants, where the reference gives them for this GPU generation;
    /// without them collectives use the plain α–β figures above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nccl: Option<NcclTuning>,
    /// Share of the SMs an SM-driven (ring) collective kernel occupies while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm_sm_fraction: Option<Sourced<Fraction>>,
    /// SMs an NVLink SHARP (multimem) collective kernel occupies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvls_sms: Option<Sourced<Count>>,
}

/// The link between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterNodeLink {
    /// The fabric.
    pub kind: InterNodeKind,
    /// NIC line rate per GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_rate_per_gpu: Option<Sourced<BytesPerSec>>,
    /// Bandwidth NCCL achieves per GPU's NIC.
    pub bandwidth_per_gpu: Sourced<BytesPerSec>,
    /// Latency of one inter-node step of a collective.
    pub step_latency: Sourced<Seconds>,
    /// All-reduce bus bandwidth over all GPUs of all nodes (ring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allreduce_bus_bandwidth: Option<Sourced<BytesPerSec>>,
    /// Share of the SMs a collective kernel driving the NICs occupies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm_sm_fraction: Option<Sourced<Fraction>>,
}

/// A machine: `nodes` identical nodes of `devices_per_node` GPUs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The name `--hw` takes, e.g. `h100-sxm-8`.
    pub name: String,
    /// One line for `weft hw list`.
    pub description: String,
    /// Nodes (≥ 1); more than one needs `inter_node`.
    pub nodes: u32,
    /// GPUs per node (≥ 1).
    pub devices_per_node: u32,
    /// Every GPU.
    pub device: Device,
    /// Launch overhead of one compute kernel.
    pub kernel_launch_overhead: Sourced<Seconds>,
    /// Launch overhead of one NCCL kernel.
    pub collective_launch_overhead: Sourced<Seconds>,
    /// The link inside a node.
    pub intra_node: IntraNodeLink,
    /// The link between nodes; present exactly when `nodes > 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inter_node: Option<InterNodeLink>,
}

impl Profile {
    /// All GPUs of the machine, or `None` if the product overflows.
    pub fn total_devices(&self) -> Option<u32> {
        self.nodes.checked_mul(self.devices_per_node)
    }
}
