//! Tests of the scheduler and the memory plan, with shared helpers that check a
//! schedule's invariants from the plan alone (independently of how it was made).

mod collectives;
mod exact;
mod examples;
mod fused_exposure;
mod memory;
mod priority;
mod properties;

use std::collections::HashMap;

use weft_ir::{DType, Graph, Init, Op, Shape, ValueId};
use weft_plan::{BufferKind, RankPlan};

use super::{FixedRates, Scheduled};

/// H100 SXM figures from ../shared/reference/cost-model.md: BF16 dense peak 989
/// TFLOPS (§2.1), Calculon's achievable HBM 2765 GB/s (§2.2), NCCL ring bus bandwidth
/// 370 GB/s on 8×H100 (§2.4), XLA's launch overheads 1 µs (compute) and 5 µs (NCCL)
/// (§2.3), and the mean overlap slowdown of compute, 18.9% (arXiv 2507.03114, §2.7).
pub(super) fn h100_rates() -> FixedRates {
    FixedRates {
        flops_per_us: 989e12 / 1e6,
        hbm_bytes_per_us: 2765e9 / 1e6,
        link_bytes_per_us: 370e9 / 1e6,
        compute_launch_us: 1.0,
        comm_launch_us: 5.0,
        comm_slowdown: 1.189,
    }
}

/// Relative slack for comparing sums of the same f64 terms added in different orders.
const REL: f64 = 1e-9;

/// `a ≤ b` up to rounding of sums.
pub(super) fn le(a: f64, b: f64) -> bool {
    a <= b + REL * b.abs().max(1.0)
}

/// Builds test graphs with less ceremony.
pub(super) struct Builder {
    pub g: Graph,
    counter: usize,
}

impl Builder {
    pub fn new(mesh: &str) -> Builder {
        let mut g = Graph::new("test");
        g.mesh = mesh.parse().expect("valid mesh");
        Builder { g, counter: 0 }
    }

    fn name(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}", self.counter)
    }

    pub fn input(&mut self, shape: &[u64]) -> ValueId {
        let name = self.name("x");
        self.g
            .add(
                name,
                Op::Input {
                    dtype: DType::F32,
                    shape: Shape::new(shape.to_vec()),
                },
                &[],
            )
            .unwrap()
    }

    pub fn weight(&mut self, shape: &[u64]) -> ValueId {
        let name = self.name("w");
        self.g
            .add(
                name,
                Op::Weight {
                    dtype: DType::F32,
                    shape: Shape::new(shape.to_vec()),
                    init: Init::Fill { value: 0.5 },
                },
                &[],
            )
            .unwrap()
    }

    pub fn op(&mut self, prefix: &str, op: Op, inputs: &[ValueId]) -> ValueId {
        let name = self.name(prefix);
        self.g.add(name, op, inputs).unwrap()
    }

    pub fn matmul(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.op(
            "mm",
            Op::MatMul {
                transpose_a: false,
                transpose_b: false,
            },
            &[a, b],
        )
    }

    pub fn all_reduce(&mut self, x: ValueId, axis: &str) -> ValueId {
        self.op(
            "ar",
            Op::AllReduce {
                axis: axis.into(),
                op: weft_ir::ReduceOp::Sum,
            },
            &[x],
        )
    }
}

/// Dependencies between a rank's tasks, from the program: task → tasks it needs.
pub(super) fn program_deps(graph: &Graph, plan: &RankPlan) -> Vec<Vec<usize>> {
    let task_of: HashMap<&str, usize> = plan
        .tasks
        .iter()
        .enumerate()
        .flat_map(|(i, t)| t.nodes.iter().map(move |n| (n.as_str(), i)))
        .collect();
    let mut deps = vec![Vec::new(); plan.tasks.len()];
    for (_, node) in graph.nodes() {
        let Some(&t) = task_of.get(node.name.as_str()) else {
            continue;
        };
        for &v in &node.inputs {
            let producer = &graph.node(graph.value(v).producer).name;
            if let Some(&p) = task_of.get(producer.as_str()) {
                deps[t].push(p);
            }
        }
    }
    // Consecutive calls of one axis on different streams are ordered too (one order per
    // communicator; see `simulate`).
    let mut last_call: HashMap<&str, usize> = HashMap::new();
    for (i, t) in plan.tasks.iter().enumerate() {
        if let Some(c) = &t.collective {
            if let Some(&p) = last_call.get(c.axis.as_str())
                && plan.tasks[p].stream != t.stream
            {
                deps[i].push(p);
            }
            last_call.insert(&c.axis, i);
        }
    }
    deps
}

/// The happens-before closure of a rank's plan from stream order and events alone, as
/// bit sets: bit `a` of `hb[b]` when task `a` ends before task `b` starts. Plans of at
/// most 128 tasks.
pub(super) fn closure(plan: &RankPlan, skip_wait: Option<(usize, usize)>) -> Vec<u128> {
    assert!(plan.tasks.len() <= 128, "closure() is for small plans");
    let mut recorder = HashMap::new();
    for (i, t) in plan.tasks.iter().enumerate() {
        if let Some(e) = t.record {
            recorder.insert(e, i);
        }
    }
    let mut hb = vec![0u128; plan.tasks.len()];
    let mut last_on: HashMap<u32, usize> = HashMap::new();
    for (i, t) in plan.tasks.iter().enumerate() {
        let mut direct = Vec::new();
        if let Some(&p) = last_on.get(&t.stream.0) {
            direct.push(p);
        }
        last_on.insert(t.stream.0, i);
        for (w, e) in t.waits.iter().enumerate() {
            if skip_wait != Some((i, w)) {
                direct.push(recorder[e]);
            }
        }
        for p in direct {
            assert!(p < i, "task {i} waits on the later task {p}");
            hb[i] |= hb[p] | (1u128 << p);
        }
    }
    hb
}

/// Whether `a` happens before `b` in a closure.
pub(super) fn before(hb: &[u128], a: usize, b: usize) -> bool {
    hb[b] >> a & 1 == 1
}

/// Checks everything a schedule promises that can be read off the plan: every program
/// node once, stream order and times, dependencies happen-before, no redundant event,
/// memory never shared by buffers that may be live together, the prediction's order.
pub(super) fn check_plan(graph: &Graph, scheduled: &Scheduled, exhaustive: bool) {
    let p = &scheduled.prediction;
    assert!(
        le(p.bound_us, p.predicted_us),
        "bound {} > predicted {}",
        p.bound_us,
        p.predicted_us
    );
    assert!(
        le(p.predicted_us, p.baseline_us),
        "predicted {} > baseline {}",
        p.predicted_us,
        p.baseline_us
    );
    assert!((0.0..=1.0).contains(&p.overlap_efficiency));
    assert!(le(0.0, p.exposed_comm_us));
    assert_eq!(
        scheduled.ranks.len() as u64,
        graph.mesh.num_devices().max(1)
    );
    let plan = &scheduled.ranks[0];
    // Every non-source node exactly once.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for t in &plan.tasks {
        for n in &t.nodes {
            *seen.entry(n.as_str()).or_default() += 1;
        }
    }
    for (_, node) in graph.nodes() {
        let expected = usize::from(!matches!(node.op.occupancy(), weft_ir::Occupancy::Source));
        assert_eq!(
            seen.get(node.name.as_str()).copied().unwrap_or(0),
            expected,
            "{}",
            node.name
        );
    }
    // Stream order: no overlap on a stream, ids are positions.
    let mut stream_end: HashMap<u32, f64> = HashMap::new();
    for (i, t) in plan.tasks.iter().enumerate() {
        assert_eq!(t.id.0 as usize, i);
        let end = stream_end.entry(t.stream.0).or_insert(0.0);
        assert!(
            t.start_us >= *end && t.end_us >= t.start_us,
            "task {i} overlaps its stream"
        );
        *end = t.end_us;
    }
    let deps = program_deps(graph, plan);
    for (t, ds) in deps.iter().enumerate() {
        for &d in ds {
            assert!(
                plan.tasks[d].end_us <= plan.tasks[t].start_us,
                "task {t} starts before {d} ends"
            );
        }
    }
    // Buffers: ids are positions; views share; offsets aligned.
    for (i, b) in plan.buffers.iter().enumerate() {
        assert_eq!(b.id.0 as usize, i);
        assert_eq!(b.offset % weft_plan::BUFFER_ALIGNMENT, 0, "buffer {i}");
    }
    // Issue order: every event is recorded by a task issued before each of its waiters.
    for (i, t) in plan.tasks.iter().enumerate() {
        for e in &t.waits {
            let by = plan
                .tasks
                .iter()
                .position(|r| r.record == Some(*e))
                .unwrap();
            assert!(
                by < i,
                "task {i} waits on event {} recorded later by {by}",
                e.0
            );
        }
    }
    // No empty stream: every communication stream carries a task.
    for s in &plan.streams {
        assert!(
            s.id.0 == 0 || plan.tasks.iter().any(|t| t.stream == s.id),
            "stream `{}` is empty",
            s.name
        );
    }
    if !exhaustive {
        return;
    }
    let hb = closure(plan, None);
    for (t, ds) in deps.iter().enumerate() {
        for &d in ds {
            assert!(
                before(&hb, d, t),
                "dependency {d} → {t} not ordered by streams and events"
            );
        }
    }
    // No redundant event: dropping any one wait breaks a dependency.
    for (t, task) in plan.tasks.iter().enumerate() {
        for w in 0..task.waits.len() {
            let hb2 = closure(plan, Some((t, w)));
            let broken = deps
                .iter()
                .enumerate()
                .any(|(x, ds)| ds.iter().any(|&d| !before(&hb2, d, x)));
            assert!(broken, "event wait {w} of task {t} is redundant");
        }
    }
    // Memory: overlapping activation-pool buffers are ordered.
    let users = |b: usize| -> Vec<usize> {
        let mut u: Vec<usize> = plan
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.reads.iter().chain(&t.writes).any(|x| x.0 as usize == b))
            .map(|(i, _)| i)
            .collect();
        u.sort_unstable();
        u
    };
    let pool: Vec<usize> = (0..plan.buffers.len())
        .filter(|&b| plan.buffers[b].kind != BufferKind::Weight && plan.buffers[b].bytes > 0)
        .collect();
    for (i, &a) in pool.iter().enumerate() {
        for &b in &pool[i + 1..] {
            let (ba, bb) = (&plan.buffers[a], &plan.buffers[b]);
            let overlap = ba.offset < bb.offset + bb.bytes && bb.offset < ba.offset + ba.bytes;
            if !overlap {
                continue;
            }
            let ordered = |first: usize, second: usize| {
                let Some(p) = plan.buffers[second].producer else {
                    return false;
                };
                plan.buffers[first].kind != BufferKind::Output
                    && users(first)
                        .iter()
                        .all(|&u| u != p.0 as usize && before(&hb, u, p.0 as usize))
            };
            assert!(
                ordered(a, b) || ordered(b, a),
                "buffers {a} and {b} share bytes without a happens-before"
            );
        }
    }
    assert!(
        plan.memory.activation_peak_bytes
            >= pool
                .iter()
                .map(|&b| plan.buffers[b].offset + plan.buffers[b].bytes)
                .max()
                .unwrap_or(0)
    );
}
