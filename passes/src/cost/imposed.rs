//! Kernel configurations imposed from outside: "this op with this chunk count, its
//! communication on this many SMs".
//!
//! The model's own choice ([`CostModel::op_cost`]) is the default everywhere: it picks the
//! fastest chunk count of a fused GEMM + collective and prices a collective with the SM
//! share of the algorithm NCCL would pick. A fixed strategy (`weft compile --strategy
//! async-tp`, `flux`, …) reproduces a peer system whose configuration is fixed by its
//! design instead — PyTorch async TP always cuts per rank, TokenWeave's communication
//! kernel runs on 8 SMs — so it asks for that configuration here and is priced by the
//! same formulas, only without the model's freedom to choose.
//!
//! A choice an op cannot take is an error, never ignored: a chunk count on an op that
//! has no chunks, SMs on an op that does not communicate, a chunk count that does not
//! divide the split dim.

use weft_ir::{CollectiveKind, DimBindings, Op, TensorType};

use super::memory_bound::to_f64;
use super::pipeline::Fused;
use super::{CostError, CostModel, OpCost, Operands};

/// What a fixed strategy imposes on one op's kernel; a `None` field keeps the model's own
/// choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelChoice {
    /// The chunk count of a fused GEMM + collective ([`FusedSplit::allows`] says which
    /// counts it can take).
    pub chunks: Option<u64>,
    /// The SMs its communication kernel occupies, which sets how much it slows compute
    /// beside it (0: a copy engine moves the data; the HBM traffic still contends).
    pub comm_sms: Option<u32>,
}

impl KernelChoice {
    /// The model's own choice for everything.
    pub const FREE: KernelChoice = KernelChoice {
        chunks: None,
        comm_sms: None,
    };
}

/// How a fused GEMM + collective can be cut into chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FusedSplit {
    /// Its collective: reduce-scatter (GEMM + RS) or all-gather (AG + GEMM).
    pub kind: CollectiveKind,
    /// The length of the split dim on one rank: the rows of the scattered result (GEMM +
    /// RS) or of the shard being gathered (AG + GEMM).
    pub shard_len: u64,
    /// Ranks in its collective's group.
    pub group_size: u64,
}

impl FusedSplit {
    /// Whether the op can run in `chunks` chunks. GEMM + RS: every chunk holds the same
    /// number of rows of every destination's slice, so `chunks` divides `shard_len` (the
    /// CPU executor runs exactly that decomposition). AG + GEMM: chunks cut the gathered
    /// rows, `shard_len · group_size`.
    pub fn allows(&self, chunks: u64) -> bool {
        let extent = match self.kind {
            CollectiveKind::ReduceScatter => self.shard_len,
            _ => self.shard_len.saturating_mul(self.group_size),
        };
        chunks >= 1 && extent % chunks == 0
    }
}

impl CostModel {
    /// The SM share of a communication kernel on `sms` SMs (capped at the whole GPU).
    pub(crate) fn sm_share(&self, sms: u32) -> f64 {
        (f64::from(sms) / to_f64(self.gemm.sms())).min(1.0)
    }

    /// The SMs of one GPU of the profile, as the GEMM model lays its grid over them.
    pub fn device_sms(&self) -> u64 {
        self.gemm.sms()
    }

    /// How the fused GEMM + collective `op` can be chunked; an error for any other op.
    pub fn fused_split(
        &self,
        op: &Op,
        inputs: &[&TensorType],
        outputs: &[&TensorType],
        dims: &DimBindings,
    ) -> Result<FusedSplit, CostError> {
        let cx = Operands {
            op: op.name(),
            inputs,
            outputs,
            dims,
        };
        let f = self.fused(&cx, op)?;
        Ok(FusedSplit {
            kind: f.kind,
            shard_len: f.dim_size,
            group_size: f.group.size,
        })
    }

    /// [`CostModel::op_cost`] with `choice` imposed. With [`KernelChoice::FREE`] it is
    /// `op_cost` exactly.
    pub fn op_cost_with(
        &self,
        op: &Op,
        inputs: &[&TensorType],
        outputs: &[&TensorType],
        dims: &DimBindings,
        choice: &KernelChoice,
    ) -> Result<OpCost, CostError> {
        if *choice == KernelChoice::FREE {
            return self.op_cost(op, inputs, outputs, dims);
        }
        let cx = Operands {
            op: op.name(),
            inputs,
            outputs,
            dims,
        };
        let fused = matches!(
            op,
            Op::MatMulReduceScatter { .. } | Op::AllGatherMatMul { .. }
        );
        if fused {
            let f = self.fused(&cx, op)?;
            return match choice.chunks {
                None => self.fused_cost(&f, cx.op, choice.comm_sms),
                Some(c) => {
                    let split = FusedSplit {
                        kind: f.kind,
                        shard_len: f.dim_size,
                        group_size: f.group.size,
                    };
                    if !split.allows(c) {
                        return Err(cx.bad(format!(
                            "cannot run in {c} chunks: the split dim has {} rows per rank over \
                             {} ranks",
                            f.dim_size, f.group.size
                        )));
                    }
                    let plan = self.chunk_plan(&f, c, cx.op, choice.comm_sms)?;
                    Ok(self.pipelined_cost(&f, &plan))
                }
            };
        }
        if let Some(c) = choice.chunks {
            return Err(cx.bad(format!(
                "a chunk count ({c}) was imposed, but only a fused GEMM + collective has chunks"
            )));
        }
        // TokenWeave's kernel is its own model (NVLS only, the norm's traffic, an SM cap),
        // not a plain collective's.
        if let Op::ReduceScatterAddNormAllGather { axis, .. } = op {
            return self.tokenweave_cost(&cx, axis, choice.comm_sms);
        }
        if op.occupancy().collective().is_none() {
            return Err(cx.bad(
                "an SM count for communication was imposed, but the op does not communicate".into(),
            ));
        }
        self.comm_cost_with(&cx, op, choice.comm_sms)
    }

    /// The pipeline description of a fused op; an error for any other op.
    fn fused(&self, cx: &Operands<'_>, op: &Op) -> Result<Fused, CostError> {
        match op {
            Op::MatMulReduceScatter {
                dim, transpose_b, ..
            }
            | Op::AllGatherMatMul {
                dim, transpose_b, ..
            } => self.fused_of(cx, op, *dim, *transpose_b),
            _ => Err(cx.bad("is not a fused GEMM + collective".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use weft_hardware::Profile;
    use weft_ir::{DType, Mesh, Shape};

    use super::*;

    fn model() -> CostModel {
        let mesh: Mesh = "tp=8".parse().unwrap();
        CostModel::new(&Profile::builtin("h100-sxm-8").unwrap(), &mesh).unwrap()
    }

    fn t(shape: &[u64]) -> TensorType {
        TensorType::new(DType::Bf16, Shape::new(shape.to_vec()))
    }

    /// GEMM + RS of one Llama-3-70B o_proj at 2048 tokens, tp=8: a [2048, 1024] × [1024,
    /// 8192] local product scattered to [256, 8192].
    fn gemm_rs() -> (Op, TensorType, TensorType, TensorType) {
        let op = Op::MatMulReduceScatter {
            axis: "tp".into(),
            dim: 0,
            transpose_b: false,
        };
        (op, t(&[2048, 1024]), t(&[1024, 8192]), t(&[256, 8192]))
    }

    #[test]
    fn free_choice_is_the_models_own() {
        let m = model();
        let (op, a, b, out) = gemm_rs();
        let dims = DimBindings::default();
        let own = m.op_cost(&op, &[&a, &b], &[&out], &dims).unwrap();
        let free = m
            .op_cost_with(&op, &[&a, &b], &[&out], &dims, &KernelChoice::FREE)
            .unwrap();
        assert_eq!(own, free);
    }

    #[test]
    fn an_imposed_chunk_count_is_taken_and_priced() {
        let m = model();
        let (op, a, b, out) = gemm_rs();
        let dims = DimBindings::default();
        let own = m.op_cost(&op, &[&a, &b], &[&out], &dims).unwrap();
        for c in [1, 2, 8, 32] {
            let got = m
                .op_cost_with(
                    &op,
                    &[&a, &b],
                    &[&out],
                    &dims,
                    &KernelChoice {
                        chunks: Some(c),
                        comm_sms: None,
                    },
                )
                .unwrap();
            match got.kernel {
                weft_plan::KernelConfig::Pipelined { chunks, .. } => assert_eq!(chunks, c),
                ref k => panic!("{k:?}"),
            }
            // The model's own choice is the fastest of the counts it tries.
            assert!(got.time_us >= own.time_us * (1.0 - 1e-12), "{c} chunks");
        }
        let split = m
            .fused_split(&op, &[&a, &b], &[&out], &dims)
            .expect("a fused op");
        assert_eq!(
            split,
            FusedSplit {
                kind: CollectiveKind::ReduceScatter,
                shard_len: 256,
                group_size: 8,
            }
        );
        assert!(!split.allows(3) && !split.allows(0) && split.allows(256));
        let e = m
            .op_cost_with(
                &op,
                &[&a, &b],
                &[&out],
                &dims,
                &KernelChoice {
                    chunks: Some(3),
                    comm_sms: None,
                },
            )
            .unwrap_err();
        assert!(e.to_string().contains("cannot run in 3 chunks"), "{e}");
    }

    #[test]
    fn an_imposed_sm_count_sets_the_share_and_only_the_share() {
        let m = model();
        let op = Op::AllReduce {
            axis: "tp".into(),
            op: weft_ir::ReduceOp::Sum,
        };
        let x = t(&[2048, 8192]);
        let dims = DimBindings::default();
        let own = m.op_cost(&op, &[&x], &[&x], &dims).unwrap();
        let eight = m
            .op_cost_with(
                &op,
                &[&x],
                &[&x],
                &dims,
                &KernelChoice {
                    chunks: None,
                    comm_sms: Some(8),
                },
            )
            .unwrap();
        assert_eq!(eight.time_us, own.time_us);
        assert_eq!(eight.kernel, own.kernel);
        assert!((eight.comm_sm_fraction - 8.0 / m.device_sms() as f64).abs() < 1e-12);
        // A chunk count on a plain collective, SMs on a GEMM: refused.
        let e = m
            .op_cost_with(
                &op,
                &[&x],
                &[&x],
                &dims,
                &KernelChoice {
                    chunks: Some(2),
                    comm_sms: None,
                },
            )
            .unwrap_err();
        assert!(e.to_string().contains("only a fused GEMM"), "{e}");
        let mm = Op::MatMul {
            transpose_a: false,
            transpose_b: false,
        };
        let e = m
            .op_cost_with(
                &mm,
                &[&x, &t(&[8192, 64])],
                &[&t(&[2048, 64])],
                &dims,
                &KernelChoice {
                    chunks: None,
                    comm_sms: Some(8),
                },
            )
            .unwrap_err();
        assert!(e.to_string().contains("does not communicate"), "{e}");
    }
}
