//! Properties on many random programs: the plan invariants of `check_plan` (dependencies
//! ordered, no redundant event, memory shared only when ordered) and
//! `bound ≤ predicted ≤ baseline`, with one and two communication streams.

use weft_ir::rng::unit;
use weft_ir::{Graph, Op, Shape, ValueId};

use super::{Builder, check_plan, h100_rates};
use crate::schedule::{ScheduleOptions, schedule};

/// A random SPMD program on `tp=2,dp=2`: elementwise ops, matmuls with square weights,
/// all-reduces on either axis and reshapes, reading recent or older values.
fn random_program(seed: u64, nodes: usize) -> Graph {
    let mut b = Builder::new("tp=2,dp=2");
    let mut draw = 0u64;
    let mut next = |bound: usize| -> usize {
        draw += 1;
        ((unit(seed, draw) * bound as f64) as usize).min(bound - 1)
    };
    let side = [64u64, 256, 1024][next(3)];
    let x = b.input(&[side, side]);
    let w = b.weight(&[side, side]);
    let mut values: Vec<ValueId> = vec![x];
    let mut read = vec![false];
    for _ in 0..nodes {
        let pick = |next: &mut dyn FnMut(usize) -> usize, values: &Vec<ValueId>| {
            let n = values.len();
            if next(4) == 0 {
                values[next(n)]
            } else {
                values[n - 1 - next(n.min(4))]
            }
        };
        let a = pick(&mut next, &values);
        let v = match next(6) {
            0 => b.op("relu", Op::Relu, &[a]),
            1 => {
                let c = pick(&mut next, &values);
                b.op("add", Op::Add, &[a, c])
            }
            2 => b.matmul(a, w),
            3 => b.all_reduce(a, "tp"),
            4 => b.all_reduce(a, "dp"),
            _ => b.op(
                "view",
                Op::Reshape {
                    shape: Shape::new([side, side]),
                },
                &[a],
            ),
        };
        for &i in &b.g.node(b.g.value(v).producer).inputs.clone() {
            if let Some(p) = values.iter().position(|&x| x == i) {
                read[p] = true;
            }
        }
        values.push(v);
        read.push(false);
    }
    for (i, &v) in values.iter().enumerate() {
        if !read[i] && i > 0 {
            b.g.outputs.push(v);
        }
    }
    b.g
}

#[test]
fn random_programs_keep_every_plan_invariant() {
    let costs = h100_rates();
    for seed in 0..60u64 {
        let nodes = 10 + (seed as usize % 7) * 12;
        let g = random_program(seed, nodes);
        for comm_streams in [1, 2] {
            let options = ScheduleOptions {
                comm_streams,
                ..ScheduleOptions::default()
            };
            let s = schedule(&g, &costs, &options).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            check_plan(&g, &s, true);
            // Every rank replicates rank 0's streams and buffers.
            for r in &s.ranks {
                assert_eq!(r.tasks.len(), s.ranks[0].tasks.len());
                assert_eq!(r.memory, s.ranks[0].memory);
            }
        }
    }
}

#[test]
fn random_programs_overlap_when_they_can() {
    // Over all seeds, overlap must win somewhere; and where communication ran beside
    // compute, the prediction is strictly below the serial baseline.
    let costs = h100_rates();
    let mut gained = 0;
    for seed in 0..40u64 {
        let g = random_program(seed, 60);
        let s = schedule(&g, &costs, &ScheduleOptions::default()).unwrap();
        let p = &s.prediction;
        let comm: f64 = s.ranks[0]
            .tasks
            .iter()
            .filter(|t| t.stream.0 != 0)
            .map(|t| t.end_us - t.start_us)
            .sum();
        let hidden = comm - p.exposed_comm_us;
        if hidden > 1e-6 {
            assert!(
                p.predicted_us < p.baseline_us,
                "seed {seed}: hid {hidden} µs yet no gain"
            );
            gained += 1;
        }
    }
    assert!(
        gained > 10,
        "only {gained} of 40 random programs overlapped"
    );
}
