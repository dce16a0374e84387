//! The prediction's exposed communication for a fused GEMM + collective task: only the
//! part of its communication its own pipeline does not hide counts (found missing by a
//! mutation audit: taking `max` for `min` there passed every other test).

use weft_ir::{Graph, NodeId, Op};
use weft_plan::KernelConfig;

use super::{Builder, check_plan};
use crate::schedule::{OpCost, ScheduleError, ScheduleOptions, TaskCosts, schedule};

/// The fused task runs 11 µs: a 10 µs GEMM and 4 µs of communication, of which its
/// pipeline hides all but 1 µs.
struct Fused;

impl TaskCosts for Fused {
    fn cost(&self, graph: &Graph, node: NodeId) -> Result<OpCost, ScheduleError> {
        let n = graph.node(node);
        if !n.op.occupancy().communicates() {
            return Err(ScheduleError::Cost {
                node: n.name.clone(),
                reason: "only the fused task has a time here".into(),
            });
        }
        Ok(OpCost {
            time_us: 11.0,
            compute_us: 10.0,
            comm_us: 4.0,
            comm_sm_fraction: 0.0,
            kernel: KernelConfig::MemoryBound { bytes: 0 },
        })
    }
    fn contention_slowdown(&self, _: &OpCost) -> f64 {
        1.0
    }
}

#[test]
fn a_fused_task_exposes_only_what_its_pipeline_does_not_hide() {
    let mut b = Builder::new("tp=2");
    let x = b.input(&[8, 8]);
    let w = b.weight(&[8, 8]);
    let f = b.op(
        "fused",
        Op::MatMulReduceScatter {
            axis: "tp".into(),
            dim: 0,
            transpose_b: false,
        },
        &[x, w],
    );
    b.g.outputs.push(f);
    let s = schedule(&b.g, &Fused, &ScheduleOptions::default()).unwrap();
    let p = &s.prediction;
    assert_eq!(p.predicted_us, 11.0);
    // min(comm 4, max(0, time 11 − GEMM 10)) = 1 of 4 µs exposed.
    assert_eq!(p.exposed_comm_us, 1.0);
    assert_eq!(p.overlap_efficiency, 0.75);
    check_plan(&b.g, &s, true);
}
