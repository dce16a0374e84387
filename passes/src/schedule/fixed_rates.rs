//! A deliberately simple [`TaskCosts`] for tests and benches: rates the caller gives, no
//! hardware knowledge of its own.
//!
//! - compute: `max(FLOPs / flops_per_us, bytes / hbm_bytes_per_us) + compute_launch_us`,
//!   with FLOPs from `weft_ir::stats::node_flops` and bytes = inputs + outputs;
//! - communication: ring wire bytes (`weft_ir::occupancy::ring_wire_bytes`) over
//!   `link_bytes_per_us`, plus `comm_launch_us`;
//! - fused GEMM + collective: both parts one after the other (no pipelining);
//! - contention: every communication task slows compute by `comm_slowdown`.
//!
//! It does not choose kernels: compute and fused tasks are labelled memory-bound with
//! their traffic, collectives `ring`/`simple`. The real cost model is `cost::CostModel`.

use weft_ir::occupancy::{fused_collective_bytes, message_bytes, payload_bytes, ring_wire_bytes};
use weft_ir::stats::node_flops;
use weft_ir::{Graph, NodeId, Occupancy};
use weft_plan::{CollectiveConfig, KernelConfig};

use super::{OpCost, ScheduleError, TaskCosts};

/// Fixed rates; see the module documentation.
#[derive(Clone, Debug, PartialEq)]
pub struct FixedRates {
    pub flops_per_us: f64,
    pub hbm_bytes_per_us: f64,
    pub link_bytes_per_us: f64,
    pub compute_launch_us: f64,
    pub comm_launch_us: f64,
    /// Factor ≥ 1 by which compute slows beside any communication.
    pub comm_slowdown: f64,
}

impl TaskCosts for FixedRates {
    fn cost(&self, graph: &Graph, node: NodeId) -> Result<OpCost, ScheduleError> {
        let n = graph.node(node);
        let err = |reason: String| ScheduleError::Cost {
            node: n.name.clone(),
            reason,
        };
        let bytes_of = |v: weft_ir::ValueId| {
            graph
                .value(v)
                .ty
                .size_bytes(&graph.dims)
                .map_err(|e| err(e.to_string()))
        };
        let mut in_bytes = Vec::with_capacity(n.inputs.len());
        for &v in &n.inputs {
            in_bytes.push(bytes_of(v)?);
        }
        let mut out_bytes = Vec::with_capacity(n.outputs.len());
        for &v in &n.outputs {
            out_bytes.push(bytes_of(v)?);
        }
        let traffic: u128 = in_bytes
            .iter()
            .chain(&out_bytes)
            .map(|&b| u128::from(b))
            .sum();
        let compute_part = || -> Result<f64, ScheduleError> {
            let shapes: Vec<_> = n.inputs.iter().map(|&v| &graph.value(v).ty.shape).collect();
            let out = n.outputs.first().map(|&v| &graph.value(v).ty.shape);
            let flops =
                node_flops(&n.op, &shapes, out, &graph.dims).map_err(|e| err(e.to_string()))?;
            Ok((flops as f64 / self.flops_per_us).max(traffic as f64 / self.hbm_bytes_per_us))
        };
        let comm_part =
            |kind, axis: &str, message: u64| -> Result<(f64, CollectiveConfig), ScheduleError> {
                let group = graph
                    .mesh
                    .axis_size(axis)
                    .ok_or_else(|| err(format!("mesh axis `{axis}` is not in the mesh")))?;
                let wire = ring_wire_bytes(kind, message, group)
                    .ok_or_else(|| err("the wire bytes overflow 64 bits".into()))?;
                Ok((
                    wire as f64 / self.link_bytes_per_us,
                    CollectiveConfig {
                        algorithm: "ring".into(),
                        protocol: "simple".into(),
                        message_bytes: message,
                        group_size: group,
                        inter_node: false,
                    },
                ))
            };
        let first_in = in_bytes.first().copied().unwrap_or(0);
        let first_out = out_bytes.first().copied().unwrap_or(0);
        let memory_bound = KernelConfig::MemoryBound {
            bytes: u64::try_from(traffic).map_err(|_| err("traffic overflows 64 bits".into()))?,
        };
        match n.op.occupancy() {
            Occupancy::Source | Occupancy::View => Err(err(
                "sources and views are not costed (they launch nothing)".into(),
            )),
            Occupancy::Compute => {
                let compute_us = compute_part()?;
                Ok(OpCost {
                    time_us: compute_us + self.compute_launch_us,
                    compute_us,
                    comm_us: 0.0,
                    comm_sm_fraction: 0.0,
                    kernel: memory_bound,
                })
            }
            Occupancy::Comm(c) => {
                let message = payload_bytes(&n.op, message_bytes(c.kind, first_in, first_out))
                    .ok_or_else(|| err("an all-to-all of expert blocks in zero groups".into()))?;
                let (comm_us, config) = comm_part(c.kind, c.axis, message)?;
                Ok(OpCost {
                    time_us: comm_us + self.comm_launch_us,
                    compute_us: 0.0,
                    comm_us,
                    comm_sm_fraction: 0.0,
                    kernel: KernelConfig::Collective(config),
                })
            }
            Occupancy::Both(c) => {
                let group = graph.mesh.axis_size(c.axis).unwrap_or(1);
                let message = fused_collective_bytes(&n.op, first_in, first_out, group)
                    .ok_or_else(|| err("the fused message overflows 64 bits".into()))?;
                let (comm_us, _) = comm_part(c.kind, c.axis, message)?;
                let compute_us = compute_part()?;
                Ok(OpCost {
                    time_us: compute_us + comm_us + self.compute_launch_us,
                    compute_us,
                    comm_us,
                    comm_sm_fraction: 0.0,
                    kernel: memory_bound,
                })
            }
        }
    }

    fn contention_slowdown(&self, comm: &OpCost) -> f64 {
        if comm.comm_us > 0.0 {
            self.comm_slowdown
        } else {
            1.0
        }
    }
}
