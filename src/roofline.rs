//! A roofline cost for extraction, from a hardware profile's sourced constants.
//!
//! This is the cost the CLI extracts under until the cost model (`passes/src/cost`,
//! `CostModel::op_cost`: efficiency curves, wave quantisation, NCCL algorithm choice,
//! contention) is wired in its place. It is deliberately simple, and every output it
//! chooses says so ([`Roofline::label`]):
//!
//! - a compute op takes `max(FLOPs / dense 16-bit rate, bytes read and written / HBM
//!   bandwidth)` plus the profile's kernel launch overhead (the rate and bandwidth are the
//!   profile's measured achievable figures where it has them, its datasheet peaks
//!   otherwise);
//! - a collective takes its ring wire bytes per device ([`weft_ir::occupancy::ring_wire_bytes`]) over
//!   the profile's intra-node bus bandwidth (nccl-tests' `busbw` is defined so that this
//!   quotient is the time) plus the collective's latency and launch overhead: all-reduce
//!   uses the all-reduce figures, every other kind the all-gather ones; inter-node links
//!   are not modelled;
//! - a GEMM fused with a collective takes the larger of the two (perfect pipelining);
//! - a view (reshape) is free.

use weft_hardware::Profile;
use weft_ir::occupancy::{fused_collective_bytes, message_bytes, ring_wire_bytes};
use weft_ir::{CollectiveKind, DimBindings, Mesh, Occupancy, Op, TensorType};
use weft_passes::saturate::NodeCost;

/// Roofline per-op times from one profile; see the module documentation.
#[derive(Clone, Debug)]
pub struct Roofline {
    profile: String,
    mesh: Mesh,
    flops_per_s: f64,
    /// `None` where the profile gives no memory bandwidth (then compute ops cannot be
    /// priced, and extraction reports them).
    hbm_bytes_per_s: Option<f64>,
    kernel_launch_s: f64,
    collective_launch_s: f64,
    allreduce_bus_bytes_per_s: f64,
    allreduce_latency_s: f64,
    allgather_bus_bytes_per_s: f64,
    allgather_latency_s: f64,
}

impl Roofline {
    /// The roofline of `profile` for a graph on `mesh`.
    pub fn new(profile: &Profile, mesh: &Mesh) -> Roofline {
        let d = &profile.device;
        let link = &profile.intra_node;
        Roofline {
            profile: profile.name.clone(),
            mesh: mesh.clone(),
            flops_per_s: d
                .achievable_dense_16bit
                .as_ref()
                .map_or(d.peak_dense_16bit.value.0, |s| s.value.0),
            hbm_bytes_per_s: d
                .memory_achievable_bandwidth
                .as_ref()
                .or(d.memory_peak_bandwidth.as_ref())
                .map(|s| s.value.0),
            kernel_launch_s: profile.kernel_launch_overhead.value.0,
            collective_launch_s: profile.collective_launch_overhead.value.0,
            allreduce_bus_bytes_per_s: link.allreduce_bus_bandwidth.value.0,
            allreduce_latency_s: link.allreduce_latency.value.0,
            allgather_bus_bytes_per_s: link.allgather_bus_bandwidth.value.0,
            allgather_latency_s: link.allgather_latency.value.0,
        }
    }

    /// What chose a program extracted under this cost, for labels and warnings.
    pub fn label(&self) -> String {
        format!("roofline of {}", self.profile)
    }

    fn compute_s(
        &self,
        op: &Op,
        inputs: &[&TensorType],
        outputs: &[&TensorType],
        dims: &DimBindings,
    ) -> Result<f64, String> {
        let shapes: Vec<_> = inputs.iter().map(|t| &t.shape).collect();
        let flops =
            weft_ir::stats::node_flops(op, &shapes, outputs.first().map(|t| &t.shape), dims)
                .map_err(|e| e.to_string())?;
        let mut bytes: u128 = 0;
        for t in inputs.iter().chain(outputs) {
            bytes += u128::from(t.size_bytes(dims).map_err(|e| e.to_string())?);
        }
        let hbm = self
            .hbm_bytes_per_s
            .ok_or_else(|| format!("profile {} gives no memory bandwidth", self.profile))?;
        Ok((flops as f64 / self.flops_per_s).max(bytes as f64 / hbm))
    }

    fn comm_s(
        &self,
        op: &Op,
        kind: CollectiveKind,
        axis: &str,
        inputs: &[&TensorType],
        outputs: &[&TensorType],
        dims: &DimBindings,
    ) -> Result<f64, String> {
        let n = self
            .mesh
            .axis_size(axis)
            .ok_or_else(|| format!("mesh axis `{axis}` is not in the mesh"))?;
        let size = |t: Option<&&TensorType>| -> Result<u64, String> {
            t.map_or(Ok(0), |t| t.size_bytes(dims).map_err(|e| e.to_string()))
        };
        let (first_in, first_out) = (size(inputs.first())?, size(outputs.first())?);
        let message = match op.occupancy() {
            Occupancy::Both(_) => fused_collective_bytes(op, first_in, first_out, n)
                .ok_or_else(|| "collective bytes overflow".to_owned())?,
            Occupancy::Source | Occupancy::View | Occupancy::Compute | Occupancy::Comm(_) => {
                message_bytes(kind, first_in, first_out)
            }
        };
        let wire = ring_wire_bytes(kind, message, n)
            .ok_or_else(|| "collective bytes overflow".to_owned())?;
        let (bus, latency) = match kind {
            CollectiveKind::AllReduce => (self.allreduce_bus_bytes_per_s, self.allreduce_latency_s),
            CollectiveKind::AllGather
            | CollectiveKind::ReduceScatter
            | CollectiveKind::AllToAll
            | CollectiveKind::Send
            | CollectiveKind::Recv
            | CollectiveKind::Broadcast => {
                (self.allgather_bus_bytes_per_s, self.allgather_latency_s)
            }
        };
        Ok(wire as f64 / bus + latency)
    }
}

impl NodeCost for Roofline {
    /// µs.
    fn node_cost(
        &self,
        op: &Op,
        inputs: &[&TensorType],
        outputs: &[&TensorType],
        dims: &DimBindings,
    ) -> Result<f64, String> {
        let s = match op.occupancy() {
            Occupancy::Source | Occupancy::View => 0.0,
            Occupancy::Compute => self.compute_s(op, inputs, outputs, dims)? + self.kernel_launch_s,
            Occupancy::Comm(c) => {
                self.comm_s(op, c.kind, c.axis, inputs, outputs, dims)? + self.collective_launch_s
            }
            Occupancy::Both(c) => {
                let compute = self.compute_s(op, inputs, outputs, dims)?;
                let comm = self.comm_s(op, c.kind, c.axis, inputs, outputs, dims)?;
                compute.max(comm) + self.kernel_launch_s
            }
        };
        Ok(s * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use weft_ir::{DType, Shape, TensorType};

    use super::*;

    fn bf16(dims: &[u64]) -> TensorType {
        TensorType::new(DType::Bf16, Shape::new(dims.iter().copied()))
    }

    /// The formulas of the module documentation, with the profile's own constants.
    #[test]
    fn times_follow_the_profile() {
        let p = Profile::builtin("h100-sxm-8").unwrap();
        let mesh: Mesh = "tp=8".parse().unwrap();
        let r = Roofline::new(&p, &mesh);
        let dims = DimBindings::default();
        let flops = p.device.achievable_dense_16bit.as_ref().unwrap().value.0;
        let hbm = p
            .device
            .memory_achievable_bandwidth
            .as_ref()
            .unwrap()
            .value
            .0;
        let launch = p.kernel_launch_overhead.value.0;
        // A GEMM [2048, 8192] × [8192, 1024]: compute-bound.
        let (a, w, y) = (
            bf16(&[2048, 8192]),
            bf16(&[8192, 1024]),
            bf16(&[2048, 1024]),
        );
        let mm = Op::MatMul {
            transpose_a: false,
            transpose_b: false,
        };
        let got = r.node_cost(&mm, &[&a, &w], &[&y], &dims).unwrap();
        let compute = 2.0 * 2048.0 * 8192.0 * 1024.0 / flops;
        let memory = 2.0 * (2048.0 * 8192.0 + 8192.0 * 1024.0 + 2048.0 * 1024.0) / hbm;
        assert!(compute > memory);
        assert_eq!(got, (compute + launch) * 1e6);
        // An element-wise add: memory-bound.
        let add = r.node_cost(&Op::Add, &[&y, &y], &[&y], &dims).unwrap();
        assert_eq!(add, (3.0 * 2.0 * 2048.0 * 1024.0 / hbm + launch) * 1e6);
        // An all-reduce of 32 MiB over 8: 2·7/8 of it on the wire at the bus bandwidth.
        let x = bf16(&[2048, 8192]);
        let ar = Op::AllReduce {
            axis: "tp".into(),
            op: weft_ir::ReduceOp::Sum,
        };
        let got = r.node_cost(&ar, &[&x], &[&x], &dims).unwrap();
        let link = &p.intra_node;
        let want = 2.0 * 7.0 / 8.0 * (2048.0 * 8192.0 * 2.0) / link.allreduce_bus_bandwidth.value.0
            + link.allreduce_latency.value.0
            + p.collective_launch_overhead.value.0;
        assert!(
            (got - want * 1e6).abs() < 1e-9 * got,
            "{got} vs {}",
            want * 1e6
        );
        // A view is free.
        let view = Op::Reshape {
            shape: Shape::new([2048u64 * 8192]),
        };
        assert_eq!(
            r.node_cost(&view, &[&x], &[&bf16(&[2048 * 8192])], &dims)
                .unwrap(),
            0.0
        );
    }
}
