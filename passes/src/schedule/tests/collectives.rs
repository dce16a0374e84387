//! Collective calls: groups and sequence numbers per rank on a `tp×dp` mesh, and the
//! cross-rank check catching a reordered group and a cross-axis wait cycle.

use weft_ir::Op;

use super::{Builder, check_plan, h100_rates};
use crate::schedule::{
    MeshGrid, ScheduleError, ScheduleOptions, schedule, verify_collective_order,
};

/// Two independent chains on `tp=2,dp=2`: x → ar(tp) → relu ; y → ar(dp) → relu, plus a
/// second tp all-reduce after the first.
fn two_axes() -> Builder {
    let mut b = Builder::new("tp=2,dp=2");
    let x = b.input(&[128, 128]);
    let y = b.input(&[128, 128]);
    let a = b.all_reduce(x, "tp");
    let a2 = b.all_reduce(a, "tp");
    let d = b.all_reduce(y, "dp");
    let ra = b.op("relu", Op::Relu, &[a2]);
    let rd = b.op("relu", Op::Relu, &[d]);
    b.g.outputs.extend([ra, rd]);
    b
}

#[test]
fn groups_follow_the_mesh_and_sequences_count_per_axis() {
    let grid = MeshGrid::new(&"tp=2,dp=2".parse().unwrap()).unwrap();
    // Row-major, last axis fastest: rank = 2·tp + dp.
    assert_eq!(grid.coords(3), vec![1, 1]);
    assert_eq!(grid.group(1, 0), vec![1, 3]);
    assert_eq!(grid.group(1, 1), vec![0, 1]);
    let b = two_axes();
    let s = schedule(&b.g, &h100_rates(), &ScheduleOptions::default()).unwrap();
    check_plan(&b.g, &s, true);
    assert_eq!(s.ranks.len(), 4);
    for plan in &s.ranks {
        let calls: Vec<_> = plan
            .tasks
            .iter()
            .filter_map(|t| t.collective.as_ref())
            .collect();
        assert_eq!(calls.len(), 3);
        let tp: Vec<u64> = calls
            .iter()
            .filter(|c| c.axis == "tp")
            .map(|c| c.seq)
            .collect();
        assert_eq!(tp, vec![0, 1]);
        for c in calls {
            let axis = if c.axis == "tp" { 0 } else { 1 };
            assert_eq!(c.group, grid.group(plan.rank, axis));
            assert_eq!(c.kind, "all_reduce");
        }
        assert_eq!(plan.coords, grid.coords(plan.rank));
    }
    // Two communication streams: one per axis.
    let two = ScheduleOptions {
        comm_streams: 2,
        ..ScheduleOptions::default()
    };
    let s2 = schedule(&b.g, &h100_rates(), &two).unwrap();
    check_plan(&b.g, &s2, true);
    let names: Vec<&str> = s2.ranks[0]
        .streams
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["compute", "comm.tp", "comm.dp"]);
    // The dp all-reduce runs beside the tp chain instead of after it.
    assert!(s2.prediction.predicted_us < s.prediction.predicted_us);
}

#[test]
fn a_group_called_in_another_order_is_refused() {
    let b = two_axes();
    let mut ranks = schedule(&b.g, &h100_rates(), &ScheduleOptions::default())
        .unwrap()
        .ranks;
    verify_collective_order(&ranks).unwrap();
    // Rank 1 issues its two tp calls the other way round.
    let tp: Vec<usize> = (0..ranks[1].tasks.len())
        .filter(|&i| {
            ranks[1].tasks[i]
                .collective
                .as_ref()
                .is_some_and(|c| c.axis == "tp")
        })
        .collect();
    let (i, j) = (tp[0], tp[1]);
    let first = ranks[1].tasks[i].nodes.clone();
    ranks[1].tasks[i].nodes = ranks[1].tasks[j].nodes.clone();
    ranks[1].tasks[j].nodes = first;
    let err = verify_collective_order(&ranks).unwrap_err();
    assert!(
        matches!(&err, ScheduleError::CollectiveMismatch { axis, .. } if axis == "tp"),
        "{err}"
    );
}

#[test]
fn a_cross_axis_wait_cycle_is_refused() {
    let b = two_axes();
    let mut ranks = schedule(&b.g, &h100_rates(), &ScheduleOptions::default())
        .unwrap()
        .ranks;
    // Ranks 0 and 3 issue the dp call before the first tp call (each group's own order
    // stays intact); with ranks 1 and 2 issuing tp first this is a cycle:
    // dp{0,1} → tp{0,2} → dp{2,3} → tp{1,3} → dp{0,1} (rank = 2·tp + dp).
    for r in [0usize, 3] {
        let tasks = &mut ranks[r].tasks;
        let pos = |axis: &str, tasks: &[weft_plan::Task]| {
            tasks
                .iter()
                .position(|t| t.collective.as_ref().is_some_and(|c| c.axis == axis))
                .unwrap()
        };
        let (tp, dp) = (pos("tp", tasks), pos("dp", tasks));
        let (lo, hi) = (tp.min(dp), tp.max(dp));
        let moved = tasks.remove(hi);
        tasks.insert(lo, moved);
        for (i, t) in tasks.iter_mut().enumerate() {
            t.id.0 = i as u32;
        }
    }
    let order = |r: usize| -> Vec<String> {
        ranks[r]
            .tasks
            .iter()
            .filter_map(|t| t.collective.as_ref().map(|c| c.axis.clone()))
            .collect()
    };
    assert_ne!(order(0), order(1), "the edit must change rank 0's order");
    let err = verify_collective_order(&ranks).unwrap_err();
    assert!(matches!(err, ScheduleError::CollectiveDeadlock(_)), "{err}");
}

#[test]
fn only_axes_that_communicate_get_a_stream() {
    // On `tp=2,dp=2` with collectives on `tp` only: no `comm.dp` stream, and the tp
    // stream is stream 1.
    let mut b = Builder::new("tp=2,dp=2");
    let x = b.input(&[128, 128]);
    let a = b.all_reduce(x, "tp");
    let r = b.op("relu", Op::Relu, &[a]);
    b.g.outputs.push(r);
    let options = ScheduleOptions {
        comm_streams: 2,
        ..ScheduleOptions::default()
    };
    let s = schedule(&b.g, &h100_rates(), &options).unwrap();
    check_plan(&b.g, &s, true);
    for rp in &s.ranks {
        let names: Vec<&str> = rp.streams.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["compute", "comm.tp"]);
        let ar = rp.tasks.iter().find(|t| t.collective.is_some()).unwrap();
        assert_eq!(ar.stream.0, 1);
    }
    // A program that does not communicate has only its compute stream.
    let mut b = Builder::new("tp=2,dp=2");
    let x = b.input(&[128, 128]);
    let r = b.op("relu", Op::Relu, &[x]);
    b.g.outputs.push(r);
    let s = schedule(&b.g, &h100_rates(), &options).unwrap();
    check_plan(&b.g, &s, true);
    assert_eq!(s.ranks[0].streams.len(), 1);
}
