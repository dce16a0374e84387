//! Small programs with hand-given times, checked against numbers worked out by hand:
//! critical-path order, contention for the overlapped part only, the prediction's
//! figures, events, views and bad input.

use std::collections::HashMap;

use weft_ir::{Graph, NodeId, Op, Shape};
use weft_plan::{KernelConfig, StreamKind};

use super::{Builder, check_plan};
use crate::schedule::{OpCost, ScheduleError, ScheduleOptions, ScheduleOrder, TaskCosts, schedule};

/// Times by node name; every communication task slows compute by `slowdown`.
pub(super) struct Table {
    times: HashMap<String, f64>,
    slowdown: f64,
}

impl TaskCosts for Table {
    fn cost(&self, graph: &Graph, node: NodeId) -> Result<OpCost, ScheduleError> {
        let n = graph.node(node);
        let time_us = *self.times.get(&n.name).ok_or_else(|| ScheduleError::Cost {
            node: n.name.clone(),
            reason: "no time in the table".into(),
        })?;
        let comm = n.op.occupancy().communicates();
        Ok(OpCost {
            time_us,
            compute_us: if comm { 0.0 } else { time_us },
            comm_us: if comm { time_us } else { 0.0 },
            comm_sm_fraction: 0.0,
            kernel: KernelConfig::MemoryBound { bytes: 0 },
        })
    }
    fn contention_slowdown(&self, _: &OpCost) -> f64 {
        self.slowdown
    }
}

pub(super) fn table(b: &Builder, times: &[f64], slowdown: f64) -> Table {
    let names: Vec<String> =
        b.g.nodes()
            .filter(|(_, n)| n.op.occupancy().communicates() || !n.inputs.is_empty())
            .filter(|(_, n)| !matches!(n.op.occupancy(), weft_ir::Occupancy::View))
            .map(|(_, n)| n.name.clone())
            .collect();
    assert_eq!(names.len(), times.len(), "{names:?}");
    Table {
        times: names.into_iter().zip(times.iter().copied()).collect(),
        slowdown,
    }
}

/// x → a (compute, 10) → out1;  x → r (all-reduce, 4) → c (compute, 3) → out2.
fn fork() -> Builder {
    let mut b = Builder::new("tp=2");
    let x = b.input(&[4, 4]);
    let a = b.op("relu", Op::Relu, &[x]);
    let r = b.all_reduce(x, "tp");
    let c = b.op("exp", Op::Exp, &[r]);
    b.g.outputs.extend([a, c]);
    b
}

#[test]
fn contention_slows_compute_for_the_overlapped_part_only() {
    let b = fork();
    // relu 10, all-reduce 4, exp 3; slowdown 1.5.
    let s = schedule(
        &b.g,
        &table(&b, &[10.0, 4.0, 3.0], 1.5),
        &ScheduleOptions::default(),
    )
    .unwrap();
    let t = &s.ranks[0].tasks;
    let by_name = |n: &str| t.iter().find(|t| t.nodes[0].starts_with(n)).unwrap();
    // relu and the all-reduce start at 0. For 4 µs relu runs at 1/1.5: 8/3 µs of work,
    // 22/3 left alone, so it ends at 4 + 22/3 = 34/3; then exp (ready at 4) runs 3 µs.
    assert_eq!(by_name("ar").start_us, 0.0);
    assert_eq!(by_name("ar").end_us, 4.0);
    assert!((by_name("relu").end_us - 34.0 / 3.0).abs() < 1e-12);
    assert!((by_name("exp").start_us - 34.0 / 3.0).abs() < 1e-12);
    let p = &s.prediction;
    assert!((p.predicted_us - (34.0 / 3.0 + 3.0)).abs() < 1e-12);
    assert_eq!(p.baseline_us, 17.0);
    // Compute stream: 13; comm stream: 4; critical path: max(10, 4 + 3) = 10.
    assert_eq!(p.bound_us, 13.0);
    assert_eq!(p.exposed_comm_us, 0.0);
    assert_eq!(p.overlap_efficiency, 1.0);
    check_plan(&b.g, &s, true);
    // exp waits for the all-reduce on the other stream: exactly one event.
    let events: usize = t.iter().map(|t| t.waits.len()).sum();
    assert_eq!(events, 1);
    assert!(by_name("ar").record.is_some());
    assert_eq!(by_name("exp").waits, vec![by_name("ar").record.unwrap()]);
}

#[test]
fn critical_path_goes_first() {
    // x → r1 (compute 1) → r2 (compute 1) ;  x → e (compute 1) → ar (8) → f (compute 1).
    // Arena order puts r1, r2 first; the bottom level of e (1 + 8 + 1) wins.
    let mut b = Builder::new("tp=2");
    let x = b.input(&[4, 4]);
    let r1 = b.op("relu", Op::Relu, &[x]);
    let r2 = b.op("relu", Op::Relu, &[r1]);
    let e = b.op("exp", Op::Exp, &[x]);
    let ar = b.all_reduce(e, "tp");
    let f = b.op("neg", Op::Neg, &[ar]);
    b.g.outputs.extend([r2, f]);
    let s = schedule(
        &b.g,
        &table(&b, &[1.0, 1.0, 1.0, 8.0, 1.0], 1.0),
        &ScheduleOptions::default(),
    )
    .unwrap();
    let t = &s.ranks[0].tasks;
    assert!(t[0].nodes[0].starts_with("exp"), "{:?}", t[0].nodes);
    assert_eq!(s.prediction.predicted_us, 10.0);
    // Serial would be 12; the two relus hide under the all-reduce.
    assert_eq!(s.prediction.baseline_us, 12.0);
    assert_eq!(s.prediction.bound_us, 10.0);
    assert_eq!(s.prediction.exposed_comm_us, 6.0);
    assert!((s.prediction.overlap_efficiency - 0.25).abs() < 1e-12);
    check_plan(&b.g, &s, true);
}

#[test]
fn views_are_zero_time_tasks_on_their_producers_stream_sharing_its_buffer() {
    let mut b = Builder::new("tp=2");
    let x = b.input(&[4, 4]);
    let r = b.all_reduce(x, "tp");
    let v = b.op(
        "view",
        Op::Reshape {
            shape: Shape::new([16u64]),
        },
        &[r],
    );
    let ar2 = b.all_reduce(v, "tp");
    b.g.outputs.push(ar2);
    let s = schedule(
        &b.g,
        &table(&b, &[2.0, 3.0], 1.0),
        &ScheduleOptions::default(),
    )
    .unwrap();
    let plan = &s.ranks[0];
    let view = plan
        .tasks
        .iter()
        .find(|t| t.nodes[0].starts_with("view"))
        .unwrap();
    assert_eq!(view.kernel, KernelConfig::View);
    assert_eq!(view.start_us, view.end_us);
    assert_eq!(plan.streams[view.stream.0 as usize].kind, StreamKind::Comm);
    assert!(view.writes.is_empty());
    let shared = &plan.buffers[view.reads[0].0 as usize];
    assert_eq!(shared.values.len(), 2, "{:?}", shared.values);
    // All on the communication stream: no event at all, and no gap.
    assert!(
        plan.tasks
            .iter()
            .all(|t| t.waits.is_empty() && t.record.is_none())
    );
    assert_eq!(s.prediction.predicted_us, 5.0);
    check_plan(&b.g, &s, true);
}

#[test]
fn bad_costs_and_options_are_errors() {
    let b = fork();
    let nan = table(&b, &[f64::NAN, 4.0, 3.0], 1.0);
    let err = schedule(&b.g, &nan, &ScheduleOptions::default()).unwrap_err();
    assert!(
        matches!(&err, ScheduleError::BadCost { node, .. } if node.starts_with("relu")),
        "{err}"
    );
    let slow = table(&b, &[1.0, 4.0, 3.0], 0.5);
    let err = schedule(&b.g, &slow, &ScheduleOptions::default()).unwrap_err();
    assert!(err.to_string().contains("slowdown"), "{err}");
    let ok = table(&b, &[1.0, 4.0, 3.0], 1.0);
    let zero = ScheduleOptions {
        comm_streams: 0,
        ..ScheduleOptions::default()
    };
    assert_eq!(
        schedule(&b.g, &ok, &zero).unwrap_err(),
        ScheduleError::NoCommStream
    );
    let short = ScheduleOptions {
        layer_of: vec![Some(0)],
        ..ScheduleOptions::default()
    };
    assert!(matches!(
        schedule(&b.g, &ok, &short).unwrap_err(),
        ScheduleError::LayerMap { got: 1, .. }
    ));
}

#[test]
fn a_fused_call_and_a_collective_of_one_axis_never_run_at_once() {
    // x → fused GEMM + reduce-scatter on tp (compute stream, 10) ;
    // y → all-reduce on tp (communication stream, 4) → exp (8). Independent, so both are
    // ready at 0, but they share the tp communicator: the all-reduce (bottom level 12
    // against 10) goes first and the fused task waits for it through an event.
    let mut b = Builder::new("tp=2");
    let x = b.input(&[8, 8]);
    let w = b.weight(&[8, 8]);
    let y = b.input(&[8, 8]);
    let f = b.op(
        "fused",
        Op::MatMulReduceScatter {
            axis: "tp".into(),
            dim: 0,
            transpose_b: false,
        },
        &[x, w],
    );
    let r = b.all_reduce(y, "tp");
    let e = b.op("exp", Op::Exp, &[r]);
    b.g.outputs.extend([f, e]);
    let s = schedule(
        &b.g,
        &table(&b, &[10.0, 4.0, 8.0], 1.0),
        &ScheduleOptions::default(),
    )
    .unwrap();
    let t = &s.ranks[0].tasks;
    let by_name = |n: &str| t.iter().find(|t| t.nodes[0].starts_with(n)).unwrap();
    let (fused, ar) = (by_name("fused"), by_name("ar"));
    assert_eq!((ar.start_us, ar.end_us), (0.0, 4.0));
    assert_eq!(
        fused.start_us, 4.0,
        "the fused call waits for the all-reduce"
    );
    assert_eq!(fused.waits, vec![ar.record.unwrap()]);
    assert_eq!(fused.collective.as_ref().unwrap().seq, 1);
    assert_eq!(ar.collective.as_ref().unwrap().seq, 0);
    check_plan(&b.g, &s, true);
}

#[test]
fn program_order_is_tried_when_the_critical_path_order_does_not_fit() {
    // A: x → a1 (5) → a2 = row sums (5, small). B: x → b1 (4), x → b2 (4) → b3 = b1 + b2.
    // Critical-path order runs b1 and b2 while a1 is alive: x, a1, b1, b2 = 4 units.
    // Program order finishes A first: x, a2, b1, b2 = 3 units and a row of sums.
    let mut b = Builder::new("");
    let x = b.input(&[256, 256]);
    let a1 = b.op("relu", Op::Relu, &[x]);
    let a2 = b.op(
        "sum",
        Op::Reduce {
            kind: weft_ir::ReduceKind::Sum,
            axes: vec![1],
            keepdims: true,
        },
        &[a1],
    );
    let b1 = b.op("exp", Op::Exp, &[x]);
    let b2 = b.op("neg", Op::Neg, &[x]);
    let b3 = b.op("add", Op::Add, &[b1, b2]);
    b.g.outputs.extend([a2, b3]);
    let costs = table(&b, &[5.0, 5.0, 4.0, 4.0, 4.0], 1.0);
    let unit = 256 * 256 * 4u64;
    let free = schedule(&b.g, &costs, &ScheduleOptions::default()).unwrap();
    assert_eq!(free.order, ScheduleOrder::CriticalPath);
    assert_eq!(free.ranks[0].memory.activation_peak_bytes, 4 * unit);
    let limited = ScheduleOptions {
        max_memory: Some(3 * unit + unit / 2),
        ..ScheduleOptions::default()
    };
    let s = schedule(&b.g, &costs, &limited).unwrap();
    assert_eq!(s.order, ScheduleOrder::ProgramOrder);
    // Every rule ties on one stream; the critical path went first and did not fit.
    let fits: Vec<_> = s
        .tried
        .iter()
        .map(|t| (t.priority, t.fits_memory))
        .collect();
    assert_eq!(
        fits,
        vec![
            (ScheduleOrder::CriticalPath, Some(false)),
            (ScheduleOrder::ProgramOrder, Some(true)),
            (ScheduleOrder::CommWeighted, None),
        ]
    );
    assert_eq!(s.ranks[0].memory.activation_peak_bytes, 3 * unit + 256 * 4);
    // The same work, serialised either way on one stream.
    assert_eq!(s.prediction.predicted_us, free.prediction.predicted_us);
    check_plan(&b.g, &s, true);
    // Below what either order needs: the critical-path order's error.
    let tight = ScheduleOptions {
        max_memory: Some(3 * unit),
        ..ScheduleOptions::default()
    };
    let err = schedule(&b.g, &costs, &tight).unwrap_err();
    assert!(
        matches!(err, ScheduleError::MemoryInfeasible { total, .. } if total == 4 * unit),
        "{err}"
    );
}
