//! The plan crate end to end: serial plans of real graphs verify; each rule
//! `verify_plan` enforces rejects a plan broken by hand in that one way, naming what is
//! wrong; JSON round-trips exactly and refuses other versions; the trace is well formed.

mod fixtures;

use fixtures::{example, serial, two_axes, two_branches};
use weft_ir::Graph;
use weft_plan::{
    BufferKind, EventId, PLAN_VERSION, Plan, PlanError, PlanErrors, PlanRule, RankPlan, TaskId,
    verify_plan,
};

fn broken(plan: &Plan, program: &Graph) -> PlanErrors {
    match verify_plan(plan, program) {
        Ok(()) => panic!("the broken plan was accepted"),
        Err(e) => e,
    }
}

/// The first task on `rank` that waits on an event, and the recorder of that event.
fn first_wait(rp: &RankPlan) -> (usize, usize) {
    let waiter = rp
        .tasks
        .iter()
        .position(|t| !t.waits.is_empty())
        .expect("a task that waits");
    let e = rp.tasks[waiter].waits[0];
    let recorder = rp.tasks.iter().position(|t| t.record == Some(e)).unwrap();
    (waiter, recorder)
}

#[test]
fn serial_plans_of_examples_verify() {
    let cases: [(&str, Option<&str>); 6] = [
        ("examples/tiny-llama.json", None),
        ("examples/tiny-llama.json", Some("tp=2")),
        ("examples/tiny-llama.json", Some("dp=2,tp=2")),
        ("examples/llama3-70b-layer.json", Some("tp=8")),
        ("examples/mixtral-8x7b-moe-layer.json", Some("ep=8")),
        ("examples/mixtral-8x7b-moe-layer.json", Some("tp=2")),
    ];
    for (file, mesh) in cases {
        let g = example(file, mesh);
        let plan = serial(&g);
        verify_plan(&plan, &g).unwrap_or_else(|e| panic!("{file} {mesh:?}: {e}"));
        let ranks = g.mesh.num_devices().max(1) as usize;
        assert_eq!(plan.ranks.len(), ranks);
        // Sharded programs communicate, so their serial plans use both streams.
        if mesh.is_some() {
            let rp = &plan.ranks[0];
            assert!(rp.tasks.iter().any(|t| t.collective.is_some()), "{file}");
            assert!(rp.tasks.iter().any(|t| !t.waits.is_empty()), "{file}");
        }
    }
    let g = two_branches(true);
    verify_plan(&serial(&g), &g).unwrap();
}

#[test]
fn a_removed_wait_is_a_missing_dependency_naming_both_tasks() {
    let g = example("examples/tiny-llama.json", Some("tp=2"));
    let mut plan = serial(&g);
    let (waiter, recorder) = first_wait(&plan.ranks[1]);
    let waiter_node = plan.ranks[1].tasks[waiter].nodes[0].clone();
    let recorder_node = plan.ranks[1].tasks[recorder].nodes[0].clone();
    plan.ranks[1].tasks[waiter].waits.clear();
    // Keep the event waited on by someone else or recorded by nobody-needs: the recorder
    // still records it, which is allowed.
    let e = broken(&plan, &g);
    let dep: Vec<_> =
        e.0.iter()
            .filter(|v| v.rule == PlanRule::Dependency)
            .collect();
    assert!(!dep.is_empty(), "{e}");
    let m = &dep[0].message;
    assert_eq!(dep[0].rank, Some(1), "{e}");
    assert!(
        m.contains(&format!("task {waiter} ")) && m.contains(&format!("`{waiter_node}`")),
        "{m}"
    );
    assert!(
        m.contains(&format!("task {recorder} ")) && m.contains(&format!("`{recorder_node}`")),
        "{m}"
    );
}

#[test]
fn a_cycle_of_waits_is_a_deadlock() {
    let g = example("examples/tiny-llama.json", Some("tp=2"));
    let mut plan = serial(&g);
    let rp = &mut plan.ranks[0];
    // The recorder additionally waits on a task that comes after the waiter on the
    // waiter's stream: waiter needs recorder needs later, which runs after waiter.
    let (waiter, recorder) = first_wait(rp);
    let stream = rp.tasks[waiter].stream;
    let later = (waiter + 1..rp.tasks.len())
        .find(|&t| rp.tasks[t].stream == stream)
        .unwrap();
    let events = rp.tasks.iter().filter(|t| t.record.is_some()).count() as u32;
    let e = *rp.tasks[later].record.get_or_insert(EventId(events));
    rp.tasks[recorder].waits.push(e);
    let e = broken(&plan, &g);
    assert!(e.has(PlanRule::Deadlock), "{e}");
    let m =
        &e.0.iter()
            .find(|v| v.rule == PlanRule::Deadlock)
            .unwrap()
            .message;
    for t in [waiter, recorder, later] {
        assert!(m.contains(&format!("task {t} ")), "{m}");
    }
}

#[test]
fn a_wait_on_the_own_stream_and_a_double_record_are_refused() {
    let g = example("examples/tiny-llama.json", Some("tp=2"));
    let plan = serial(&g);
    let (_, recorder) = first_wait(&plan.ranks[0]);
    let stream = plan.ranks[0].tasks[recorder].stream;
    let event = plan.ranks[0].tasks[recorder].record;
    let after = (recorder + 1..plan.ranks[0].tasks.len())
        .find(|&t| {
            plan.ranks[0].tasks[t].stream == stream && plan.ranks[0].tasks[t].record.is_none()
        })
        .unwrap();
    let mut twice = plan.clone();
    twice.ranks[0].tasks[after].record = event;
    let e = broken(&twice, &g);
    assert!(
        e.has(PlanRule::Events) && e.to_string().contains("recorded by several tasks"),
        "{e}"
    );
    let mut own = plan.clone();
    own.ranks[0].tasks[after].waits.push(event.unwrap());
    let e = broken(&own, &g);
    assert!(
        e.has(PlanRule::Events) && e.to_string().contains("of its own stream"),
        "{e}"
    );
}

#[test]
fn a_buffer_reused_before_its_last_read_is_refused() {
    let g = example("examples/tiny-llama.json", Some("tp=2"));
    let mut plan = serial(&g);
    let rp = &mut plan.ranks[0];
    // An activation read later than the next activation is written: put that next one on
    // its bytes.
    let (a, b) = rp
        .buffers
        .iter()
        .enumerate()
        .filter(|(_, x)| x.kind == BufferKind::Activation && x.bytes > 0)
        .find_map(|(i, x)| {
            let last = x.last_reader?;
            let later = rp.buffers.iter().position(|y| {
                y.kind == BufferKind::Activation
                    && y.bytes > 0
                    && y.producer
                        .is_some_and(|p| p > x.producer.unwrap() && p < last)
            })?;
            Some((i, later))
        })
        .unwrap();
    rp.buffers[b].offset = rp.buffers[a].offset;
    let e = broken(&plan, &g);
    let overlap: Vec<_> = e.0.iter().filter(|v| v.rule == PlanRule::Overlap).collect();
    assert!(!overlap.is_empty(), "{e}");
    let m = &overlap[0].message;
    assert!(
        m.contains(&format!("buffers {a} ")) && m.contains(&format!("and {b} ")),
        "{m}"
    );
    // The activation pool's summary now disagrees too? No: only offsets moved inside it,
    // but the pool end may shrink; that is a separate, honest finding.
}

#[test]
fn a_buffer_reused_after_its_last_read_is_accepted() {
    let g = example("examples/tiny-llama.json", Some("tp=2"));
    let mut plan = serial(&g);
    let rp = &mut plan.ranks[0];
    // Two activations on the compute stream: the second produced after the first's last
    // reader on the same stream, so stream order separates them.
    let compute = rp.streams[0].id;
    let on_compute =
        |t: Option<TaskId>| t.is_some_and(|t| rp.tasks[t.0 as usize].stream == compute);
    let (a, b) = rp
        .buffers
        .iter()
        .enumerate()
        .filter(|(_, x)| {
            x.kind == BufferKind::Activation && x.bytes > 0 && on_compute(x.last_reader)
        })
        .find_map(|(i, x)| {
            let last = x.last_reader?;
            let later = rp.buffers.iter().position(|y| {
                y.kind == BufferKind::Activation
                    && y.bytes > 0
                    && y.bytes <= x.bytes
                    && on_compute(y.producer)
                    && y.producer.is_some_and(|p| p > last)
            })?;
            Some((i, later))
        })
        .unwrap();
    let offset = rp.buffers[a].offset;
    rp.buffers[b].offset = offset;
    verify_plan(&plan, &g).unwrap_or_else(|e| panic!("reuse of buffer {a} by {b}: {e}"));
}

#[test]
fn collectives_in_another_order_on_one_rank_are_refused() {
    // Both programs compute the same thing; the second lists branch b first, so its
    // serial plan issues b's all-reduce before a's.
    let g = two_branches(true);
    let other = two_branches(false);
    let mut plan = serial(&g);
    plan.ranks[1] = serial(&other).ranks[1].clone();
    let e = broken(&plan, &g);
    assert!(e.0.iter().all(|v| v.rule == PlanRule::Collectives), "{e}");
    let m = &e.0[0].message;
    assert!(m.contains("disagrees at call #0"), "{m}");
    assert!(m.contains("`a.ar`") && m.contains("`b.ar`"), "{m}");
    // Rank 1's plan alone is sound: the same swap on every rank is accepted.
    plan.ranks[0] = serial(&other).ranks[0].clone();
    verify_plan(&plan, &g).unwrap();
}

#[test]
fn misnumbered_collectives_and_ids_are_refused() {
    let g = example("examples/tiny-llama.json", Some("tp=2"));
    let mut plan = serial(&g);
    let t = plan.ranks[0]
        .tasks
        .iter()
        .position(|t| t.collective.is_some())
        .unwrap();
    plan.ranks[0].tasks[t].collective.as_mut().unwrap().seq = 7;
    plan.ranks[1].tasks[0].id = TaskId(99);
    let e = broken(&plan, &g);
    assert!(e.has(PlanRule::Collectives) && e.has(PlanRule::Ids), "{e}");
}

#[test]
fn a_node_run_twice_or_never_is_refused() {
    let g = example("examples/tiny-llama.json", None);
    let mut plan = serial(&g);
    let rp = &mut plan.ranks[0];
    let gone = rp.tasks[3].nodes[0].clone();
    let twice = rp.tasks[2].nodes[0].clone();
    rp.tasks[3].nodes[0] = twice.clone();
    let e = broken(&plan, &g);
    let text = e.to_string();
    assert!(
        text.contains(&format!("node `{twice}` runs twice")),
        "{text}"
    );
    assert!(
        text.contains(&format!("node `{gone}`")) && text.contains("runs in no task"),
        "{text}"
    );
}

#[test]
fn times_that_start_before_their_dependencies_end_are_refused() {
    let g = example("examples/tiny-llama.json", Some("tp=2"));
    let mut plan = serial(&g);
    let rp = &mut plan.ranks[0];
    let (waiter, recorder) = first_wait(rp);
    rp.tasks[recorder].end_us = 5.0;
    rp.tasks[waiter].start_us = 4.0;
    rp.tasks[waiter].end_us = 6.0;
    plan.prediction.predicted_us = 6.0;
    let e = broken(&plan, &g);
    assert!(e.has(PlanRule::Times), "{e}");
    assert!(
        e.to_string().contains(&format!("before task {recorder} ")),
        "{e}"
    );
}

#[test]
fn json_round_trips_exactly() {
    let g = example("examples/tiny-llama.json", Some("tp=2"));
    let mut plan = serial(&g);
    // Times that are not short decimals, to check floats survive exactly.
    let mut t = 0.0f64;
    for task in &mut plan.ranks[0].tasks {
        task.start_us = t;
        t += 0.1 + 1.0 / 3.0;
        task.end_us = t;
    }
    plan.prediction.predicted_us = t;
    plan.prediction.overlap_efficiency = std::f64::consts::PI / 7.0;
    plan.program = serde_json::json!({"weft": 1, "name": "x", "nodes": [], "w": 0.1 + 0.2});
    plan.program_sha256 = weft_plan::program_digest(&plan.program);
    let text = plan.to_json_string();
    let back = Plan::from_json_str(&text).unwrap();
    assert_eq!(back, plan);
    assert_eq!(back.to_json_string(), text);
}

/// A plan whose program was edited after compilation no longer matches its schedule:
/// reading it is refused, naming both digests.
#[test]
fn a_plan_whose_program_was_edited_is_refused() {
    let g = example("examples/tiny-llama.json", Some("tp=2"));
    let mut plan = serial(&g);
    plan.program = serde_json::json!({"weft": 1, "name": "tiny", "nodes": []});
    plan.program_sha256 = weft_plan::program_digest(&plan.program);
    let text = plan.to_json_string();
    assert!(Plan::from_json_str(&text).is_ok());
    let edited = text.replacen("\"tiny\"", "\"tinier\"", 1);
    let e = Plan::from_json_str(&edited).unwrap_err().to_string();
    assert!(e.contains("edited after compilation"), "{e}");
}

#[test]
fn other_versions_formats_and_malformed_json_are_refused() {
    let g = two_branches(true);
    let text = serial(&g).to_json_string();
    let newer = text.replacen(
        &format!("\"version\": {PLAN_VERSION}"),
        &format!("\"version\": {}", PLAN_VERSION + 1),
        1,
    );
    assert_ne!(newer, text);
    match Plan::from_json_str(&newer) {
        Err(PlanError::Version { found, expected }) => {
            assert_eq!(found, (PLAN_VERSION + 1).to_string());
            assert_eq!(expected, PLAN_VERSION);
        }
        other => panic!("{other:?}"),
    }
    let e = Plan::from_json_str(&newer).unwrap_err().to_string();
    assert!(
        e.contains(&format!("version {}", PLAN_VERSION + 1))
            && e.contains(&format!("reads version {PLAN_VERSION}")),
        "{e}"
    );
    let model = text.replacen("\"weft-plan\"", "\"weft-model\"", 1);
    assert!(matches!(
        Plan::from_json_str(&model),
        Err(PlanError::Format { .. })
    ));
    let cut = &text[..text.len() / 2];
    match Plan::from_json_str(cut) {
        Err(PlanError::Json { line, .. }) => assert!(line > 1),
        other => panic!("{other:?}"),
    }
    let unknown = text.replacen("\"compiler\"", "\"surprise\": 1, \"compiler\"", 1);
    let e = Plan::from_json_str(&unknown).unwrap_err().to_string();
    assert!(e.contains("surprise") && e.contains("line"), "{e}");
}

#[test]
fn the_trace_has_a_track_per_stream_a_slice_per_task_and_an_arrow_per_wait() {
    let g = example("examples/tiny-llama.json", Some("tp=2"));
    let plan = serial(&g);
    let trace: serde_json::Value = serde_json::from_str(&plan.to_trace_json()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    let of = |ph: &str| events.iter().filter(|e| e["ph"] == ph).collect::<Vec<_>>();
    let meta = of("M");
    for rp in &plan.ranks {
        let pid = u64::from(rp.rank);
        assert!(meta.iter().any(|e| e["name"] == "process_name"
            && e["pid"] == pid
            && e["args"]["name"] == format!("rank {pid}")));
        for s in &rp.streams {
            assert!(meta.iter().any(|e| e["name"] == "thread_name"
                && e["pid"] == pid
                && e["tid"] == u64::from(s.id.0)
                && e["args"]["name"] == s.name.as_str()));
        }
    }
    let tasks: usize = plan.ranks.iter().map(|r| r.tasks.len()).sum();
    let slices = of("X");
    assert_eq!(slices.len(), tasks);
    for x in &slices {
        assert!(x["ts"].is_number() && x["dur"].is_number() && x["args"]["nodes"].is_array());
        assert!(x["args"]["kernel"].is_string());
    }
    let waits: usize = plan
        .ranks
        .iter()
        .flat_map(|r| &r.tasks)
        .map(|t| t.waits.len())
        .sum();
    let (starts, ends) = (of("s"), of("f"));
    assert!(waits > 0);
    assert_eq!((starts.len(), ends.len()), (waits, waits));
    for (s, f) in starts.iter().zip(&ends) {
        assert_eq!(s["id"], f["id"]);
        assert_eq!(f["bp"], "e");
        assert_ne!(s["tid"], f["tid"], "an arrow joins two streams");
    }
}

#[test]
fn the_text_form_shows_header_streams_and_memory() {
    let g = example("examples/tiny-llama.json", Some("tp=2"));
    let plan = serial(&g);
    let text = plan.to_text();
    for want in [
        "source ",
        "dims ",
        "mesh      tp=2 (2 ranks)",
        "hardware ",
        "predicted ",
        "rank 1",
        "stream 1 `comm`",
        "all_reduce over tp [0, 1] #0",
        "memory: weights",
    ] {
        assert!(text.contains(want), "missing `{want}` in\n{text}");
    }
}

#[test]
fn groups_issued_in_crossing_orders_across_ranks_are_a_deadlock() {
    // Ranks (p, q): 0 = (0,0), 1 = (0,1), 2 = (1,0), 3 = (1,1). Ranks 0 and 3 call `p`
    // then `q`, ranks 1 and 2 `q` then `p`: every group sees one call, so each group's
    // order agrees, yet 0 waits in p{0,2} for 2, which waits in q{2,3} for 3, which waits
    // in p{1,3} for 1, which waits in q{0,1} for 0.
    let g = two_axes(true);
    let mut plan = serial(&g);
    let other = serial(&two_axes(false));
    for r in [1, 2] {
        plan.ranks[r] = other.ranks[r].clone();
    }
    let e = broken(&plan, &g);
    assert!(e.0.iter().all(|v| v.rule == PlanRule::Deadlock), "{e}");
    assert!(e.to_string().contains("crossing orders"), "{e}");
    // The same program with every rank in one order is fine.
    verify_plan(&serial(&g), &g).unwrap();
    verify_plan(&other, &two_axes(false)).unwrap();
}

#[test]
fn wrong_reads_kinds_kernels_and_headers_are_refused() {
    let g = example("examples/tiny-llama.json", Some("tp=2"));
    let plan = serial(&g);
    let mut p = plan.clone();
    let t = p.ranks[0]
        .tasks
        .iter()
        .position(|t| !t.reads.is_empty())
        .unwrap();
    p.ranks[0].tasks[t].reads.pop();
    p.ranks[0].buffers[0].kind = BufferKind::Output;
    let view = p.ranks[0]
        .tasks
        .iter()
        .position(|t| t.kernel == weft_plan::KernelConfig::View)
        .unwrap();
    p.ranks[0].tasks[view].kernel = weft_plan::KernelConfig::Unconfigured { chunks: None };
    let e = broken(&p, &g);
    for rule in [PlanRule::Buffers, PlanRule::Kernel] {
        assert!(e.has(rule), "{rule:?} missing in {e}");
    }
    let text = e.to_string();
    assert!(
        text.contains(&format!("task {t} ")) && text.contains("reads buffers"),
        "{text}"
    );
    assert!(text.contains("runs only views"), "{text}");
    let mut p = plan;
    p.mesh[0].size = 4;
    let e = broken(&p, &g);
    assert!(e.has(PlanRule::Header), "{e}");
    assert!(e.to_string().contains("is not the program's"), "{e}");
}

#[test]
fn only_a_slice_of_one_contiguous_block_may_have_a_view_kernel() {
    use weft_ir::{DType, Op, Shape};
    // x [1, 8, 4]: a token half (dim 0 has extent 1) is one block; a column half is not.
    let mut g = Graph::new("slices");
    let x = g
        .add(
            "x",
            Op::Input {
                dtype: DType::F32,
                shape: Shape::new([1, 8, 4]),
            },
            &[],
        )
        .unwrap();
    let rows = Op::Slice {
        axis: 1,
        start: 0,
        end: 4,
    };
    let cols = Op::Slice {
        axis: -1,
        start: 0,
        end: 2,
    };
    let a = g.add("rows", rows, &[x]).unwrap();
    let b = g.add("cols", cols, &[x]).unwrap();
    g.outputs.extend([a, b]);
    let plan = serial(&g);
    verify_plan(&plan, &g).unwrap();
    let task = |p: &Plan, name: &str| {
        p.ranks[0]
            .tasks
            .iter()
            .position(|t| t.nodes == [name])
            .unwrap()
    };
    let mut p = plan.clone();
    let t = task(&p, "rows");
    p.ranks[0].tasks[t].kernel = weft_plan::KernelConfig::View;
    verify_plan(&p, &g).unwrap();
    let mut p = plan;
    let t = task(&p, "cols");
    p.ranks[0].tasks[t].kernel = weft_plan::KernelConfig::View;
    let e = broken(&p, &g);
    assert!(e.has(PlanRule::Kernel), "{e}");
    assert!(e.to_string().contains("not views"), "{e}");
}
