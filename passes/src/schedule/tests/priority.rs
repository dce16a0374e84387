//! The scheduler tries several priority rules and keeps the fastest: small programs where
//! program order, or the communication-weighted bottom level, beats the critical path,
//! with the times worked out by hand; ties keep the critical path; `makespan` keeps the
//! critical path alone.

use weft_ir::Op;
use weft_plan::SchedulePriority;

use super::exact::table;
use super::{Builder, check_plan};
use crate::schedule::{ScheduleOptions, ScheduleOrder, makespan, schedule};

/// Two independent branches from `x` on a tp=2 mesh:
/// A: `a` (compute 1) → all-reduce (3) → output;  B: `b` (compute 5) → output.
/// `a_first` puts A's nodes before B's in the program. No contention (slowdown 1).
///
/// Bottom levels: a = 1 + 3 = 4 < b = 5, so the critical path runs b (0..5), then a
/// (5..6) and the all-reduce, exposed (6..9): 9 µs. Running A first starts the
/// all-reduce at 1, under b: 1 + 5 = 6 µs. Counting communication twice, a = 1 + 6 =
/// 7 > 5, so that rule runs A first too, wherever the program puts it.
fn ladder_like(a_first: bool) -> (Builder, Vec<f64>) {
    let mut b = Builder::new("tp=2");
    let x = b.input(&[4, 4]);
    let branch_a = |b: &mut Builder| {
        let a = b.op("exp", Op::Exp, &[x]);
        b.all_reduce(a, "tp")
    };
    let branch_b = |b: &mut Builder| b.op("relu", Op::Relu, &[x]);
    let (outs, times) = if a_first {
        let ar = branch_a(&mut b);
        let rb = branch_b(&mut b);
        ([ar, rb], vec![1.0, 3.0, 5.0])
    } else {
        let rb = branch_b(&mut b);
        let ar = branch_a(&mut b);
        ([ar, rb], vec![5.0, 1.0, 3.0])
    };
    b.g.outputs.extend(outs);
    (b, times)
}

fn figure(s: &crate::schedule::Scheduled, rule: SchedulePriority) -> f64 {
    s.tried
        .iter()
        .find(|t| t.priority == rule)
        .map(|t| t.predicted_us)
        .expect("every rule is tried")
}

#[test]
fn program_order_wins_where_it_hides_a_collective_the_critical_path_leaves_exposed() {
    let (b, times) = ladder_like(true);
    let costs = table(&b, &times, 1.0);
    let s = schedule(&b.g, &costs, &ScheduleOptions::default()).unwrap();
    assert_eq!(figure(&s, ScheduleOrder::CriticalPath), 9.0);
    assert_eq!(figure(&s, ScheduleOrder::ProgramOrder), 6.0);
    assert_eq!(figure(&s, ScheduleOrder::CommWeighted), 6.0);
    // Program order and the weighted rule tie at 6: the earlier rule of `ALL` wins.
    assert_eq!(s.order, ScheduleOrder::ProgramOrder);
    assert_eq!(s.prediction.predicted_us, 6.0);
    assert_eq!(s.prediction.exposed_comm_us, 0.0);
    // bound: compute stream 6, comm 3, critical path 5; baseline 9.
    assert_eq!(s.prediction.bound_us, 6.0);
    assert_eq!(s.prediction.baseline_us, 9.0);
    // The winner's memory plan was made; the others' were not needed.
    let fits: Vec<_> = s
        .tried
        .iter()
        .map(|t| (t.priority, t.fits_memory))
        .collect();
    assert_eq!(
        fits,
        vec![
            (ScheduleOrder::CriticalPath, None),
            (ScheduleOrder::ProgramOrder, Some(true)),
            (ScheduleOrder::CommWeighted, None),
        ]
    );
    let t = &s.ranks[0].tasks;
    assert!(t[0].nodes[0].starts_with("exp"), "{:?}", t[0].nodes);
    check_plan(&b.g, &s, true);
    // The search's inner evaluation keeps the critical path alone.
    assert_eq!(makespan(&b.g, &costs, 1).unwrap(), 9.0);
}

#[test]
fn the_communication_weighted_rule_wins_where_program_order_runs_the_long_branch_first() {
    let (b, times) = ladder_like(false);
    let costs = table(&b, &times, 1.0);
    let s = schedule(&b.g, &costs, &ScheduleOptions::default()).unwrap();
    assert_eq!(figure(&s, ScheduleOrder::CriticalPath), 9.0);
    assert_eq!(figure(&s, ScheduleOrder::ProgramOrder), 9.0);
    assert_eq!(figure(&s, ScheduleOrder::CommWeighted), 6.0);
    assert_eq!(s.order, ScheduleOrder::CommWeighted);
    assert_eq!(s.prediction.predicted_us, 6.0);
    check_plan(&b.g, &s, true);
}

#[test]
fn ties_keep_the_critical_path() {
    // One chain: every rule gives the same schedule.
    let mut b = Builder::new("tp=2");
    let x = b.input(&[4, 4]);
    let e = b.op("exp", Op::Exp, &[x]);
    let ar = b.all_reduce(e, "tp");
    let n = b.op("neg", Op::Neg, &[ar]);
    b.g.outputs.push(n);
    let s = schedule(
        &b.g,
        &table(&b, &[2.0, 3.0, 1.0], 1.0),
        &ScheduleOptions::default(),
    )
    .unwrap();
    assert_eq!(s.order, ScheduleOrder::CriticalPath);
    assert_eq!(s.tried.len(), ScheduleOrder::ALL.len());
    assert!(s.tried.iter().all(|t| t.predicted_us == 6.0));
    assert_eq!(s.tried[0].fits_memory, Some(true));
    check_plan(&b.g, &s, true);
}
