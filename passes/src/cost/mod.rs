//! The cost model: how long each op takes on one GPU of a hardware profile, what kernel
//! configuration it gets, and how much a communication kernel slows compute beside it.
//! docs/cost-model.md gives every formula with its source and the held-aside validation.
//!
//! One file per concern: [`gemm`] (efficiency curve, wave quantization, roofline),
//! [`memory_bound`] (HBM at achievable bandwidth by size), [`collective`] (NCCL's
//! algorithm and protocol choice, hierarchical across nodes), [`contention`] (SM and HBM
//! share taken by communication), [`pipeline`] (fused GEMM + collective in chunks),
//! [`validation`] (the published figures: calibrated on and held aside). This file
//! dispatches an op to them: exhaustively over [`Op`], so a new op cannot be costed by a
//! default.

mod adapters;
mod collective;
pub mod contention;
mod gemm;
pub mod imposed;
mod interp;
mod memory_bound;
mod moe;
mod norm_matmul;
pub mod pipeline;
pub mod tokenweave;
pub mod validation;

use weft_hardware::Profile;
use weft_ir::occupancy::{message_bytes, payload_bytes};
use weft_ir::{
    CollectiveKind, DType, DimBindings, DimError, FusedStep, Graph, Mesh, NodeId, Op, TensorType,
};
use weft_plan::KernelConfig;

use collective::{Algo, CollectiveModel, CollectiveTime, Group};
use gemm::{GemmModel, GemmShape};
use memory_bound::{MemoryModel, to_f64};
use pipeline::{Cut, Fused};

/// Why an op could not be costed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CostError {
    /// The profile lacks a figure this op needs.
    #[error("hardware profile `{profile}`: field `{field}`: {reason}")]
    Profile {
        profile: String,
        field: String,
        reason: String,
    },
    /// The mesh does not fit the machine.
    #[error("mesh of {mesh} devices does not fit hardware profile `{profile}` ({machine} devices)")]
    MeshTooLarge {
        mesh: u64,
        profile: String,
        machine: u64,
    },
    /// A collective names an axis the mesh lacks.
    #[error("collective over mesh axis `{axis}`, which the mesh ({mesh}) does not have")]
    UnknownAxis { axis: String, mesh: String },
    /// The op's operand types are not what the op takes.
    #[error("op `{op}`: {reason}")]
    BadTypes { op: String, reason: String },
    /// The model has no figure for this op with these types.
    #[error("op `{op}` cannot be costed: {reason}")]
    Unsupported { op: String, reason: String },
    /// A size past what the plan's counters hold.
    #[error("op `{op}`: {what} does not fit in 64 bits")]
    TooLarge { op: String, what: String },
    /// The cost of one node of a graph failed; names the node.
    #[error("node `{node}`: {error}")]
    AtNode { node: String, error: Box<CostError> },
    /// A dimension could not be evaluated.
    #[error("op `{op}`: {source}")]
    Dim { op: String, source: DimError },
}

impl CostError {
    fn missing(profile: &Profile, field: &str) -> CostError {
        CostError::Profile {
            profile: profile.name.clone(),
            field: field.to_string(),
            reason: "is not given, and the cost model needs it".into(),
        }
    }
}

/// What one task costs.
#[derive(Clone, Debug, PartialEq)]
pub struct OpCost {
    /// The task's predicted duration alone (launch overhead included), µs.
    pub time_us: f64,
    /// SM-bound part (0 for pure communication), µs.
    pub compute_us: f64,
    /// Link-bound part (0 for pure compute), µs.
    pub comm_us: f64,
    /// Share of the SMs a communication kernel takes (0 for compute).
    pub comm_sm_fraction: f64,
    /// The kernel configuration the model chose.
    pub kernel: KernelConfig,
}

impl OpCost {
    fn compute(seconds: f64, kernel: KernelConfig) -> OpCost {
        OpCost {
            time_us: seconds * 1e6,
            compute_us: seconds * 1e6,
            comm_us: 0.0,
            comm_sm_fraction: 0.0,
            kernel,
        }
    }
}

/// Predicts op times on one hardware profile for one device mesh.
#[derive(Clone, Debug)]
pub struct CostModel {
    profile: Profile,
    mesh: Mesh,
    gemm: GemmModel,
    mem: MemoryModel,
    coll: CollectiveModel,
}

impl CostModel {
    /// A model of `profile` running a program sharded over `mesh`.
    pub fn new(profile: &Profile, mesh: &Mesh) -> Result<CostModel, CostError> {
        let machine = profile.total_devices().map_or(0, u64::from);
        if mesh.num_devices() > machine {
            return Err(CostError::MeshTooLarge {
                mesh: mesh.num_devices(),
                profile: profile.name.clone(),
                machine,
            });
        }
        Ok(CostModel {
            gemm: GemmModel::new(profile)?,
            mem: MemoryModel::new(profile)?,
            coll: CollectiveModel::new(profile),
            profile: profile.clone(),
            mesh: mesh.clone(),
        })
    }

    /// The profile the model was built from.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// What priced a program, for labels and logs: `cost model of h100-sxm-8`.
    pub fn label(&self) -> String {
        format!("cost model of {}", self.profile.name)
    }

    /// Factor ≥ 1 by which compute slows while this communication task runs beside it
    /// (see [`contention`]); 1 for a compute task.
    pub fn contention_slowdown(&self, comm: &OpCost) -> f64 {
        self.contention_factor(comm.comm_sm_fraction, &comm.kernel, comm.comm_us)
    }

    fn contention_factor(&self, sm_fraction: f64, kernel: &KernelConfig, comm_us: f64) -> f64 {
        contention::slowdown(sm_fraction, kernel, comm_us, self.mem.achievable())
    }

    /// The SM share of the collective NCCL chose.
    fn sm_fraction(&self, t: &CollectiveTime) -> Result<f64, CostError> {
        let intra = |p: &Profile| {
            p.intra_node
                .comm_sm_fraction
                .as_ref()
                .map(|s| s.value.0)
                .ok_or_else(|| CostError::missing(p, "intra_node.comm_sm_fraction"))
        };
        let p = &self.profile;
        match t.algo {
            Algo::Local => Ok(0.0),
            Algo::Nvls | Algo::NvlsTree => {
                let sms = p
                    .intra_node
                    .nvls_sms
                    .as_ref()
                    .ok_or_else(|| CostError::missing(p, "intra_node.nvls_sms"))?;
                Ok(to_f64(sms.value.0) / to_f64(self.gemm.sms()))
            }
            Algo::P2p if t.config.inter_node => p
                .inter_node
                .as_ref()
                .and_then(|i| i.comm_sm_fraction.as_ref())
                .map(|s| s.value.0)
                .ok_or_else(|| CostError::missing(p, "inter_node.comm_sm_fraction")),
            Algo::Ring | Algo::Tree | Algo::P2p | Algo::Hierarchical => intra(p),
        }
    }

    /// The node `node` of `graph`, its types evaluated under the graph's dims; an error
    /// names the node. (The scheduler's entry point.)
    pub fn node_cost(&self, graph: &Graph, node: NodeId) -> Result<OpCost, CostError> {
        let n = graph.node(node);
        let inputs: Vec<&TensorType> = n.inputs.iter().map(|&v| &graph.value(v).ty).collect();
        let outputs: Vec<&TensorType> = n.outputs.iter().map(|&v| &graph.value(v).ty).collect();
        self.op_cost(&n.op, &inputs, &outputs, &graph.dims)
            .map_err(|e| CostError::AtNode {
                node: n.name.clone(),
                error: Box::new(e),
            })
    }

    /// One op with concrete types (dims already bound).
    pub fn op_cost(
        &self,
        op: &Op,
        inputs: &[&TensorType],
        outputs: &[&TensorType],
        dims: &DimBindings,
    ) -> Result<OpCost, CostError> {
        let cx = Operands {
            op: op.name(),
            inputs,
            outputs,
            dims,
        };
        match op {
            Op::Input { .. } | Op::Weight { .. } | Op::Constant { .. } | Op::Reshape { .. } => {
                // Sources are present before the program starts; a reshape is a view.
                Ok(OpCost::compute(0.0, KernelConfig::View))
            }
            Op::MatMul {
                transpose_a,
                transpose_b,
            } => {
                let a = cx.shape_in(0)?;
                let b = cx.shape_in(1)?;
                let out = cx.shape_out(0)?;
                let (m, k) = cx.last_two(&a, *transpose_a)?;
                let (kb, n) = cx.last_two(&b, *transpose_b)?;
                if k != kb {
                    return Err(cx.bad(format!("contraction lengths differ: {k} and {kb}")));
                }
                let g = cx.gemm_shape(&out, (m, n, k), b.len(), *transpose_a)?;
                self.gemm_cost(&cx, g, cx.dtype_in(0)?, 0.0)
            }
            Op::ExpertMatMul { transpose_b, rows } => self.expert_matmul(&cx, *transpose_b, *rows),
            Op::NormMatMul { transpose_b, .. } => self.norm_matmul(&cx, *transpose_b),
            Op::Attention { causal, .. } => self.attention(&cx, *causal),
            Op::FusedElementwise { steps } => match steps.first() {
                Some(FusedStep::Matmul {
                    operand,
                    transpose_b,
                }) => {
                    let a = cx.shape_in(0)?;
                    let b = cx.shape_in(*operand)?;
                    let out = cx.shape_out(0)?;
                    let (m, k) = cx.last_two(&a, false)?;
                    let (_, n) = cx.last_two(&b, *transpose_b)?;
                    let g = cx.gemm_shape(&out, (m, n, k), b.len(), false)?;
                    // The epilogue reads its other operands once more.
                    let mut extra = 0.0;
                    for (i, t) in inputs.iter().enumerate() {
                        if i != 0 && i != *operand {
                            extra += cx.bytes(t)?;
                        }
                    }
                    self.gemm_cost(&cx, g, cx.dtype_in(0)?, extra)
                }
                Some(FusedStep::Binary { .. } | FusedStep::Unary { .. }) | None => {
                    self.memory_cost(cx.all_bytes()?)
                }
            },
            // Reads only the rows it picks (as many as it writes) and the indices.
            Op::Gather { .. } | Op::ShardedGather { .. } => {
                let out = cx.out_bytes()?;
                let idx = cx.bytes(cx.input(1)?)?;
                self.memory_cost(idx + 2.0 * out)
            }
            // Priced on the rows that carry tokens (`moe.rs`).
            Op::MoeRegroup => self.moe_regroup(&cx),
            Op::MoePad { groups } => self.moe_pad(&cx, *groups),
            Op::MoeUnpad { .. } => self.moe_unpad(&cx),
            // Keeps its slice: reads and writes the output's bytes.
            Op::AllSlice { .. } => self.memory_cost(2.0 * cx.out_bytes()?),
            Op::Slice { axis, .. } => {
                if cx.is_contiguous_block(*axis)? {
                    // A contiguous block of a row-major buffer (every dim before the cut
                    // has extent 1): the half is a pointer and a shape into the whole, as
                    // a token split's halves are, so a kernel reads it in place.
                    Ok(OpCost::compute(0.0, KernelConfig::View))
                } else {
                    self.memory_cost(cx.all_bytes()?)
                }
            }
            Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Pow
            | Op::Neg
            | Op::Exp
            | Op::Sqrt
            | Op::Rsqrt
            | Op::Reciprocal
            | Op::Silu
            | Op::Gelu { .. }
            | Op::Relu
            | Op::Sigmoid
            | Op::Tanh
            | Op::Softmax { .. }
            | Op::RmsNorm { .. }
            | Op::LayerNorm { .. }
            | Op::RopeCache { .. }
            | Op::Rope { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Split { .. }
            | Op::Cast { .. }
            | Op::Reduce { .. }
            | Op::TopK { .. }
            | Op::Expand { .. }
            | Op::Where
            | Op::IsNan
            | Op::MoeRoute { .. }
            | Op::MoeDispatch { .. }
            | Op::MoeCombine => self.memory_cost(cx.all_bytes()?),
            Op::AllReduce { .. }
            | Op::AllGather { .. }
            | Op::ReduceScatter { .. }
            | Op::AllToAll { .. }
            | Op::Send { .. }
            | Op::Recv { .. }
            | Op::Broadcast { .. } => self.comm_cost(&cx, op),
            Op::MatMulReduceScatter {
                dim, transpose_b, ..
            }
            | Op::AllGatherMatMul {
                dim, transpose_b, ..
            } => self.fused_op_cost(&cx, op, *dim, *transpose_b),
            Op::ReduceScatterAddNormAllGather { axis, .. } => self.tokenweave_cost(&cx, axis, None),
        }
    }

    fn memory_cost(&self, bytes: f64) -> Result<OpCost, CostError> {
        let s = self.gemm.launch() + self.mem.seconds(bytes);
        // Bytes fit u64: they are sums of u64 tensor sizes the caller evaluated; the
        // float-to-int conversion saturates.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let b = bytes as u64;
        Ok(OpCost::compute(s, KernelConfig::MemoryBound { bytes: b }))
    }

    fn gemm_cost(
        &self,
        cx: &Operands<'_>,
        g: GemmShape,
        dtype: DType,
        extra: f64,
    ) -> Result<OpCost, CostError> {
        let t = self
            .gemm
            .time(g, dtype, extra, &self.mem, &self.profile, cx.op)?;
        Ok(OpCost::compute(
            t.seconds,
            KernelConfig::Gemm {
                batch: g.batch,
                m: g.m,
                n: g.n,
                k: g.k,
                tiles: t.grid.tiles,
                waves: t.grid.waves,
            },
        ))
    }

    /// Flash-style attention: FLOPs at the GEMM curve against q, k, v, mask and output
    /// bytes at HBM, whichever is longer (roofline). FLOPs are 2·b·hq·(d + dv) per visible
    /// (query, key) pair; causal masking (bottom-right aligned) keeps
    /// `s(t − s + 1) + s(s − 1)/2` pairs when `s ≤ t`, `t(t + 1)/2` otherwise.
    ///
    /// ESTIMATE: the rate is the GEMM model's for the `[b·hq, s, t, d + dv]` problem (the
    /// QKᵀ and PV products on the tensor cores), scaled by the visible share. The reference
    /// files hold no measured attention-kernel throughput, so nothing better is sourced; it
    /// is optimistic, since the softmax and rescaling on the CUDA cores and the uneven
    /// work of causal tiles are not charged.
    fn attention(&self, cx: &Operands<'_>, causal: bool) -> Result<OpCost, CostError> {
        let q = cx.shape_in(0)?;
        let k = cx.shape_in(1)?;
        let v = cx.shape_in(2)?;
        if q.len() != 4 || k.len() != 4 || v.len() != 4 {
            return Err(cx.bad("q, k and v must have rank 4".into()));
        }
        let (b, hq, s, d) = (q[0], q[1], q[2], q[3]);
        let (t, dv) = (k[2], v[3]);
        let (sf, tf) = (to_f64(s), to_f64(t));
        let pairs = if !causal {
            sf * tf
        } else if s <= t {
            sf * (tf - sf + 1.0) + sf * (sf - 1.0) / 2.0
        } else {
            tf * (tf + 1.0) / 2.0
        };
        let share = if sf * tf > 0.0 {
            pairs / (sf * tf)
        } else {
            0.0
        };
        let g = GemmShape {
            batch: b.saturating_mul(hq),
            m: s,
            n: t,
            k: d.saturating_add(dv),
        };
        let (compute, grid) =
            self.gemm
                .compute_seconds(g, cx.dtype_in(0)?, &self.profile, cx.op)?;
        let compute = compute * share;
        let bytes = cx.all_bytes()?;
        let memory = self.mem.seconds(bytes);
        let seconds = self.gemm.launch() + compute.max(memory);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let kernel = if compute >= memory {
            KernelConfig::Gemm {
                batch: g.batch,
                m: g.m,
                n: g.n,
                k: g.k,
                tiles: grid.tiles,
                waves: grid.waves,
            }
        } else {
            KernelConfig::MemoryBound {
                bytes: bytes as u64,
            }
        };
        Ok(OpCost::compute(seconds, kernel))
    }

    fn group(&self, axis: &str) -> Result<Group, CostError> {
        Group::of_axis(&self.mesh, axis, &self.profile)
    }

    fn comm_cost(&self, cx: &Operands<'_>, op: &Op) -> Result<OpCost, CostError> {
        self.comm_cost_with(cx, op, None)
    }

    /// A collective; `sms`: the SMs its kernel takes when a strategy fixes them (`None`:
    /// NCCL's own choice, as the model prices it).
    fn comm_cost_with(
        &self,
        cx: &Operands<'_>,
        op: &Op,
        sms: Option<u32>,
    ) -> Result<OpCost, CostError> {
        let occupancy = op.occupancy();
        let c = occupancy
            .collective()
            .ok_or_else(|| cx.bad("is dispatched as a collective but occupies no link".into()))?;
        let input = match cx.inputs.first() {
            Some(t) => cx.bytes_u64(t)?,
            None => 0,
        };
        let output = match cx.outputs.first() {
            Some(t) => cx.bytes_u64(t)?,
            None => 0,
        };
        // What the runtime sends: padded expert blocks carry their expected payload.
        let message = payload_bytes(op, message_bytes(c.kind, input, output))
            .ok_or_else(|| cx.bad("an all-to-all of expert blocks in zero groups".into()))?;
        let t = self.coll.time(c.kind, message, self.group(c.axis)?);
        let sm = match sms {
            Some(n) => self.sm_share(n),
            None => self.sm_fraction(&t)?,
        };
        Ok(OpCost {
            time_us: t.seconds * 1e6,
            compute_us: 0.0,
            comm_us: t.seconds * 1e6,
            comm_sm_fraction: sm,
            kernel: KernelConfig::Collective(t.config),
        })
    }

    /// A fused GEMM + collective; `dim` and `transpose_b` are the op's.
    fn fused_op_cost(
        &self,
        cx: &Operands<'_>,
        op: &Op,
        dim: i64,
        transpose_b: bool,
    ) -> Result<OpCost, CostError> {
        let f = self.fused_of(cx, op, dim, transpose_b)?;
        self.fused_cost(&f, cx.op, None)
    }

    /// The pipeline description of a fused GEMM + collective (`dim`, `transpose_b`: the
    /// op's), before any chunk count is chosen.
    fn fused_of(
        &self,
        cx: &Operands<'_>,
        op: &Op,
        dim: i64,
        transpose_b: bool,
    ) -> Result<Fused, CostError> {
        let occupancy = op.occupancy();
        let c = occupancy
            .collective()
            .ok_or_else(|| cx.bad("is dispatched as a fused op but occupies no link".into()))?;
        let group = self.group(c.axis)?;
        let a = cx.shape_in(0)?;
        let b = cx.shape_in(1)?;
        let out = cx.shape_out(0)?;
        let (m_a, k) = cx.last_two(&a, false)?;
        let (_, n) = cx.last_two(&b, transpose_b)?;
        let rank = out.len();
        let axis = usize::try_from(if dim < 0 { dim + rank as i64 } else { dim })
            .ok()
            .filter(|&d| d < rank)
            .ok_or_else(|| cx.bad(format!("dim {dim} is outside the result's rank {rank}")))?;
        let first_in = cx.bytes_u64(cx.input(0)?)?;
        let out_bytes = cx.bytes_u64(cx.output(0)?)?;
        let message =
            weft_ir::occupancy::fused_collective_bytes(op, first_in, out_bytes, group.size)
                .ok_or_else(|| CostError::TooLarge {
                    op: cx.op.to_string(),
                    what: "the collective's message size".into(),
                })?;
        // The GEMM each device runs: GEMM + RS multiplies its whole local product (the
        // result's `dim` is the scattered one, g times smaller); AG + GEMM multiplies the
        // gathered rows (a's `dim`, g times larger).
        let (gemm, dim_size) = match c.kind {
            CollectiveKind::ReduceScatter => {
                let batch = cx.batch_of_dims(&out[..rank.saturating_sub(2)])?;
                let g = if axis + 2 >= rank {
                    GemmShape {
                        batch,
                        m: m_a,
                        n,
                        k,
                    }
                } else {
                    GemmShape {
                        batch: batch.saturating_mul(group.size),
                        m: m_a,
                        n,
                        k,
                    }
                };
                (g, out[axis])
            }
            CollectiveKind::AllGather
            | CollectiveKind::AllReduce
            | CollectiveKind::AllToAll
            | CollectiveKind::Send
            | CollectiveKind::Recv
            | CollectiveKind::Broadcast => {
                let batch = cx.batch_of_dims(&a[..a.len().saturating_sub(2)])?;
                let g = if axis + 2 == a.len() {
                    GemmShape {
                        batch,
                        m: m_a.saturating_mul(group.size),
                        n,
                        k,
                    }
                } else {
                    GemmShape {
                        batch: batch.saturating_mul(group.size),
                        m: m_a,
                        n,
                        k,
                    }
                };
                (g, a.get(axis).copied().unwrap_or(1))
            }
        };
        let cut = if axis + 1 == rank {
            Cut::Cols
        } else if axis + 2 == rank {
            Cut::Rows
        } else {
            Cut::Batch
        };
        Ok(Fused {
            kind: c.kind,
            gemm,
            dtype: cx.dtype_in(0)?,
            message,
            group,
            cut,
            dim_size,
        })
    }
}

/// An op's operand types with the dims to evaluate them, and the error helpers.
struct Operands<'a> {
    op: &'static str,
    inputs: &'a [&'a TensorType],
    outputs: &'a [&'a TensorType],
    dims: &'a DimBindings,
}

impl Operands<'_> {
    fn bad(&self, reason: String) -> CostError {
        CostError::BadTypes {
            op: self.op.to_string(),
            reason,
        }
    }

    fn input(&self, i: usize) -> Result<&TensorType, CostError> {
        self.inputs.get(i).copied().ok_or_else(|| {
            self.bad(format!(
                "has {} inputs; input {i} is needed",
                self.inputs.len()
            ))
        })
    }

    fn output(&self, i: usize) -> Result<&TensorType, CostError> {
        self.outputs.get(i).copied().ok_or_else(|| {
            self.bad(format!(
                "has {} outputs; output {i} is needed",
                self.outputs.len()
            ))
        })
    }

    fn dim_err(&self, e: DimError) -> CostError {
        CostError::Dim {
            op: self.op.to_string(),
            source: e,
        }
    }

    fn shape_in(&self, i: usize) -> Result<Vec<u64>, CostError> {
        self.input(i)?
            .shape
            .eval(self.dims)
            .map_err(|e| self.dim_err(e))
    }

    /// Whether slicing input 0 along `axis` takes one contiguous block of its row-major
    /// buffer ([`weft_ir::occupancy::slice_is_contiguous`]).
    fn is_contiguous_block(&self, axis: i64) -> Result<bool, CostError> {
        let s = self.shape_in(0)?;
        weft_ir::occupancy::slice_is_contiguous(&s, axis)
            .ok_or_else(|| self.bad(format!("axis {axis} out of range for rank {}", s.len())))
    }

    fn shape_out(&self, i: usize) -> Result<Vec<u64>, CostError> {
        self.output(i)?
            .shape
            .eval(self.dims)
            .map_err(|e| self.dim_err(e))
    }

    fn dtype_in(&self, i: usize) -> Result<DType, CostError> {
        Ok(self.input(i)?.dtype)
    }

    fn bytes_u64(&self, t: &TensorType) -> Result<u64, CostError> {
        t.size_bytes(self.dims).map_err(|e| self.dim_err(e))
    }

    fn bytes(&self, t: &TensorType) -> Result<f64, CostError> {
        self.bytes_u64(t).map(to_f64)
    }

    fn out_bytes(&self) -> Result<f64, CostError> {
        self.outputs.iter().map(|t| self.bytes(t)).sum()
    }

    /// Every input read once and every output written once.
    fn all_bytes(&self) -> Result<f64, CostError> {
        let i: f64 = self
            .inputs
            .iter()
            .map(|t| self.bytes(t))
            .sum::<Result<f64, _>>()?;
        Ok(i + self.out_bytes()?)
    }

    /// `(rows, cols)` of a matrix operand's last two dims, swapped when transposed.
    fn last_two(&self, s: &[u64], transposed: bool) -> Result<(u64, u64), CostError> {
        match s {
            [.., r, c] if transposed => Ok((*c, *r)),
            [.., r, c] => Ok((*r, *c)),
            _ => Err(self.bad(format!("a matrix operand has rank {}, below 2", s.len()))),
        }
    }

    /// The product of leading dims.
    fn batch_of_dims(&self, lead: &[u64]) -> Result<u64, CostError> {
        lead.iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| CostError::TooLarge {
                op: self.op.to_string(),
                what: "the batch count".into(),
            })
    }

    /// The GEMM a `[.., m, k] @ [k, n]` product runs as. With a 2-D right operand (a
    /// weight shared by every batch entry) and rows not transposed, the batch folds into
    /// the rows: one GEMM of `batch·m` rows that reads the weight once, as cuBLAS runs
    /// `torch.matmul([B, S, K], [K, N])`; a decode step's `[batch, 1, hidden]` activations
    /// would otherwise be priced as `batch` GEMMs of one row, each reading the whole
    /// weight. Otherwise a batched GEMM.
    fn gemm_shape(
        &self,
        out: &[u64],
        (m, n, k): (u64, u64, u64),
        b_rank: usize,
        a_transposed: bool,
    ) -> Result<GemmShape, CostError> {
        let batch = self.batch_of(out, m, n)?;
        if b_rank == 2 && !a_transposed && batch > 1 {
            let rows = batch.checked_mul(m).ok_or_else(|| CostError::TooLarge {
                op: self.op.to_string(),
                what: "the GEMM's rows".into(),
            })?;
            return Ok(GemmShape {
                batch: 1,
                m: rows,
                n,
                k,
            });
        }
        Ok(GemmShape { batch, m, n, k })
    }

    /// The batch count of a `[.., m, n]` result.
    fn batch_of(&self, out: &[u64], m: u64, n: u64) -> Result<u64, CostError> {
        match out {
            [lead @ .., om, on] if *om == m && *on == n => self.batch_of_dims(lead),
            _ => Err(self.bad(format!("the result {out:?} does not end in [{m}, {n}]"))),
        }
    }
}

#[cfg(test)]
mod moe_tests;
#[cfg(test)]
mod monotone_tests;
#[cfg(test)]
mod tests;
