//! Rules added after review: waits come after their records in issue order; chunk
//! counts and collective configurations agree across ranks and fit their nodes; buffer
//! offsets are aligned; the trace's arrows leave their recorders' ends; rank counts read
//! as English.

// Shared with tests/plan.rs, which uses the fixtures this file does not.
#[allow(dead_code)]
mod fixtures;

use fixtures::{example, serial};
use weft_ir::Graph;
use weft_plan::{
    BUFFER_ALIGNMENT, CollectiveConfig, KernelConfig, Plan, PlanErrors, PlanRule, RankPlan, TaskId,
    verify_plan,
};

fn broken(plan: &Plan, program: &Graph) -> PlanErrors {
    match verify_plan(plan, program) {
        Ok(()) => panic!("the broken plan was accepted"),
        Err(e) => e,
    }
}

/// Moves task `from` to position `to` (`to < from`), renumbering every task reference.
fn move_task_earlier(rp: &mut RankPlan, from: usize, to: usize) {
    assert!(to < from);
    let task = rp.tasks.remove(from);
    rp.tasks.insert(to, task);
    let renumber = |t: TaskId| -> TaskId {
        let i = t.0 as usize;
        TaskId(if i == from {
            to as u32
        } else if (to..from).contains(&i) {
            i as u32 + 1
        } else {
            i as u32
        })
    };
    for (i, t) in rp.tasks.iter_mut().enumerate() {
        t.id = TaskId(i as u32);
    }
    for b in &mut rp.buffers {
        b.producer = b.producer.map(renumber);
        b.last_reader = b.last_reader.map(renumber);
    }
    rp.memory.peak_at = rp.memory.peak_at.map(renumber);
}

#[test]
fn a_wait_issued_before_its_record_is_refused_and_serial_plans_never_do_it() {
    let g = example("examples/tiny-llama.json", Some("tp=2"));
    let mut plan = serial(&g);
    verify_plan(&plan, &g).unwrap();
    let rp = &mut plan.ranks[0];
    let waiter = rp.tasks.iter().position(|t| !t.waits.is_empty()).unwrap();
    let e = rp.tasks[waiter].waits[0];
    let recorder = rp.tasks.iter().position(|t| t.record == Some(e)).unwrap();
    assert!(recorder < waiter);
    // The waiter's stream keeps its order: nothing of it lies between the two.
    let stream = rp.tasks[waiter].stream;
    assert!(
        rp.tasks[recorder..waiter]
            .iter()
            .all(|t| t.stream != stream)
    );
    move_task_earlier(rp, waiter, recorder);
    let e = broken(&plan, &g);
    assert!(e.0.iter().all(|v| v.rule == PlanRule::Events), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("task {recorder} ")) && text.contains("later in issue order"),
        "{text}"
    );
}

/// `tests/data/all-ops.json` (mesh `tp=2`) with its fused GEMM + reduce-scatter.
fn fused_program() -> Graph {
    example("tests/data/all-ops.json", None)
}

fn task_of(rp: &RankPlan, node: &str) -> usize {
    rp.tasks
        .iter()
        .position(|t| t.nodes.iter().any(|n| n == node))
        .unwrap()
}

#[test]
fn chunk_counts_that_differ_across_ranks_are_a_deadlock() {
    let g = fused_program();
    let mut plan = serial(&g);
    verify_plan(&plan, &g).unwrap();
    let t = task_of(&plan.ranks[1], "mmrs");
    let KernelConfig::Unconfigured { chunks: Some(c) } = plan.ranks[1].tasks[t].kernel else {
        panic!("mmrs has no chunk count");
    };
    plan.ranks[1].tasks[t].kernel = KernelConfig::Unconfigured {
        chunks: Some(c * 2),
    };
    let e = broken(&plan, &g);
    assert!(e.has(PlanRule::Collectives), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("`mmrs` runs in")
            && text.contains(&format!("{c} chunk(s) on rank 0"))
            && text.contains("deadlock")
            && !text.contains("CPU executor"),
        "{text}"
    );
}

/// A collective configuration for `node` on every rank, with `message_bytes` and
/// `group_size` as given.
fn configure(plan: &mut Plan, node: &str, message_bytes: u64, group_size: u64) {
    for rp in &mut plan.ranks {
        let t = task_of(rp, node);
        rp.tasks[t].kernel = KernelConfig::Collective(CollectiveConfig {
            algorithm: "ring".into(),
            protocol: "simple".into(),
            message_bytes,
            group_size,
            inter_node: false,
        });
    }
}

#[test]
fn collective_kernels_must_match_their_call_and_agree_across_ranks() {
    let g = fused_program();
    // The all-reduce `ar` reduces its input: NCCL's message is the input's bytes.
    let ar = g.nodes().find(|(_, n)| n.name == "ar").unwrap().1;
    let input = g.value(ar.inputs[0]);
    let bytes = input.ty.size_bytes(&g.dims).unwrap();
    assert!(bytes > 0);
    let mut plan = serial(&g);
    configure(&mut plan, "ar", bytes, 2);
    verify_plan(&plan, &g).unwrap();

    let mut wrong_size = plan.clone();
    configure(&mut wrong_size, "ar", bytes * 2, 2);
    let text = broken(&wrong_size, &g).to_string();
    assert!(
        text.contains(&format!("message_bytes {}", bytes * 2))
            && text.contains(&format!("{bytes}-byte message")),
        "{text}"
    );

    let mut wrong_group = plan.clone();
    configure(&mut wrong_group, "ar", bytes, 4);
    let text = broken(&wrong_group, &g).to_string();
    assert!(text.contains("group_size 4"), "{text}");

    // Ranks that choose different protocols for one call.
    let mut differ = plan;
    let t = task_of(&differ.ranks[1], "ar");
    if let KernelConfig::Collective(c) = &mut differ.ranks[1].tasks[t].kernel {
        c.protocol = "ll".into();
    }
    let e = broken(&differ, &g);
    assert!(
        e.has(PlanRule::Collectives) && e.to_string().contains("configures call #"),
        "{e}"
    );
}

#[test]
fn offsets_are_aligned_and_pools_include_the_padding() {
    let g = example("examples/tiny-llama.json", Some("tp=2"));
    let plan = serial(&g);
    let rp = &plan.ranks[0];
    assert!(rp.buffers.iter().any(|b| b.bytes % BUFFER_ALIGNMENT != 0));
    for b in &rp.buffers {
        assert_eq!(b.offset % BUFFER_ALIGNMENT, 0, "buffer {}", b.id.0);
    }
    assert_eq!(rp.memory.activation_peak_bytes % BUFFER_ALIGNMENT, 0);
    // One byte off is refused.
    let mut p = plan.clone();
    let b = p.ranks[0]
        .buffers
        .iter()
        .rposition(|b| b.kind == weft_plan::BufferKind::Weight && b.offset > 0)
        .unwrap();
    p.ranks[0].buffers[b].offset += 1;
    let e = broken(&p, &g);
    assert!(
        e.has(PlanRule::Buffers) && e.to_string().contains("not a multiple of 256"),
        "{e}"
    );
}

#[test]
fn trace_arrows_leave_the_recorders_end_inside_its_slice() {
    let g = example("examples/tiny-llama.json", Some("tp=2"));
    let mut plan = serial(&g);
    // Serial plans have no times: give each task 10 µs, back to back in issue order, so
    // a stream's next task starts exactly when the previous one ends.
    for rp in &mut plan.ranks {
        for (i, t) in rp.tasks.iter_mut().enumerate() {
            t.start_us = 10.0 * i as f64;
            t.end_us = t.start_us + 10.0;
        }
    }
    let trace: serde_json::Value = serde_json::from_str(&plan.to_trace_json()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    let slices: Vec<&serde_json::Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    // The slice of the arrow's thread that encloses `ts` (Perfetto binds flow events to
    // it); exactly one must.
    let enclosing = |pid: &serde_json::Value, tid: &serde_json::Value, ts: f64| -> u64 {
        let hits: Vec<&&serde_json::Value> = slices
            .iter()
            .filter(|x| {
                let s = x["ts"].as_f64().unwrap();
                let d = x["dur"].as_f64().unwrap();
                &x["pid"] == pid && &x["tid"] == tid && s <= ts && ts <= s + d
            })
            .collect();
        assert_eq!(hits.len(), 1, "ts {ts} is in {} slices", hits.len());
        hits[0]["args"]["task"].as_u64().unwrap()
    };
    let mut arrows = 0;
    for s in events.iter().filter(|e| e["ph"] == "s") {
        let f = events
            .iter()
            .find(|f| f["ph"] == "f" && f["id"] == s["id"])
            .unwrap();
        let rp = &plan.ranks[s["pid"].as_u64().unwrap() as usize];
        let from = enclosing(&s["pid"], &s["tid"], s["ts"].as_f64().unwrap());
        let to = enclosing(&f["pid"], &f["tid"], f["ts"].as_f64().unwrap());
        let (from, to) = (&rp.tasks[from as usize], &rp.tasks[to as usize]);
        let event = from.record.expect("the arrow starts at a recorder");
        assert!(to.waits.contains(&event), "the arrow ends at a waiter");
        // At the recorder's end (within the 1 ns nudge and float rounding), not its start.
        let ts = s["ts"].as_f64().unwrap();
        assert!(from.end_us - ts <= 1.001e-3 && ts < from.end_us, "{ts}");
        arrows += 1;
    }
    let waits: usize = plan
        .ranks
        .iter()
        .flat_map(|r| &r.tasks)
        .map(|t| t.waits.len())
        .sum();
    assert!(arrows > 0);
    assert_eq!(arrows, waits);
}

#[test]
fn one_rank_reads_as_one_rank() {
    let g = example("examples/tiny-llama.json", None);
    let text = serial(&g).to_text();
    assert!(text.contains("(1 rank)"), "{text}");
    assert!(!text.contains("1 ranks"), "{text}");
    assert_eq!(weft_plan::rank_count(2), "2 ranks");
}

#[test]
fn a_pipelined_kernel_configures_one_chunks_call() {
    let g = fused_program();
    // All-gather + GEMM over tp=2: the message is the gathered first input, 2× the
    // local one; the serial plan runs it as a ring of 2 chunks.
    let agmm = g.nodes().find(|(_, n)| n.name == "agmm").unwrap().1;
    let local = g.value(agmm.inputs[0]).ty.size_bytes(&g.dims).unwrap();
    let whole = local * 2;
    let mut plan = serial(&g);
    let t = task_of(&plan.ranks[0], "agmm");
    assert_eq!(plan.ranks[0].tasks[t].kernel.chunks(), Some(2));
    let chunks = 2;
    let pipelined = |message_bytes: u64| KernelConfig::Pipelined {
        chunks,
        gemm_m: 1,
        gemm_n: 1,
        gemm_k: 1,
        collective: CollectiveConfig {
            algorithm: "ring".into(),
            protocol: "simple".into(),
            message_bytes,
            group_size: 2,
            inter_node: false,
        },
    };
    for rp in &mut plan.ranks {
        let t = task_of(rp, "agmm");
        rp.tasks[t].kernel = pipelined(whole / chunks);
    }
    verify_plan(&plan, &g).unwrap();
    // The whole message on each chunk's call is wrong.
    for rp in &mut plan.ranks {
        let t = task_of(rp, "agmm");
        rp.tasks[t].kernel = pipelined(whole);
    }
    let text = broken(&plan, &g).to_string();
    assert!(text.contains("per chunk"), "{text}");
}
