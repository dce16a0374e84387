//! Checks of `verify_plan` that no other test reached: a mutation audit (review R2)
//! disabled each one by hand and every test still passed. Each test breaks exactly the
//! figure its rule guards and looks for that rule's own message, so the test fails if
//! the rule is gone even when another rule happens to fire too.

// Shared with tests/plan.rs, which uses the fixtures this file does not.
#[allow(dead_code)]
mod fixtures;

use fixtures::{example, serial};
use weft_ir::Graph;
use weft_plan::{Plan, PlanErrors, PlanRule, Stream, StreamId, verify_plan};

fn broken(plan: &Plan, program: &Graph) -> PlanErrors {
    match verify_plan(plan, program) {
        Ok(()) => panic!("the broken plan was accepted"),
        Err(e) => e,
    }
}

#[test]
fn a_memory_summary_that_disagrees_with_the_buffers_is_refused() {
    let g = example("examples/tiny-llama.json", Some("tp=2"));
    let mut plan = serial(&g);
    verify_plan(&plan, &g).unwrap();
    // Grow rank 0's activation peak and its total alike, and the prediction's copy of the
    // total with them: only the buffers themselves now disagree with the summary.
    let m = &mut plan.ranks[0].memory;
    m.activation_peak_bytes += 4096;
    m.peak_bytes += 4096;
    plan.prediction.peak_memory_bytes[0] += 4096;
    let e = broken(&plan, &g);
    assert!(e.has(PlanRule::Memory), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("the memory summary's activation_peak_bytes")
            && text.contains("the memory summary's peak_bytes"),
        "{text}"
    );
    assert!(!text.contains("peak_memory_bytes is"), "{text}");
}

#[test]
fn a_predicted_step_that_is_not_the_latest_task_end_is_refused() {
    let g = example("examples/tiny-llama.json", Some("tp=2"));
    // The serial plan's times are all 0: give rank 0's last task (nothing waits on it
    // or follows it on its stream) a duration, so the step ends at 5 µs.
    let mut plan = serial(&g);
    let last = plan.ranks[0].tasks.len() - 1;
    plan.ranks[0].tasks[last].end_us = 5.0;
    plan.prediction.predicted_us = 5.0;
    verify_plan(&plan, &g).unwrap();
    for predicted in [4.0, 6.0] {
        let mut plan = plan.clone();
        plan.prediction.predicted_us = predicted;
        let e = broken(&plan, &g);
        assert!(e.has(PlanRule::Times), "{e}");
        assert!(
            e.to_string().contains(&format!(
                "predicted_us is {predicted}, but the latest task ends at 5 µs"
            )),
            "{e}"
        );
    }
}

#[test]
fn two_calls_of_one_group_that_may_run_at_once_are_refused() {
    // `all-ops` on tp=2 makes several calls over `tp`; move the second call of the group
    // onto a stream of its own with no waits, so nothing orders it after the first.
    let g = example("tests/data/all-ops.json", None);
    let mut plan = serial(&g);
    verify_plan(&plan, &g).unwrap();
    let rp = &mut plan.ranks[0];
    let calls: Vec<usize> = (0..rp.tasks.len())
        .filter(|&t| rp.tasks[t].collective.is_some())
        .collect();
    let (first, second) = (calls[0], calls[1]);
    let (c0, c1) = (
        rp.tasks[first].collective.clone().unwrap(),
        rp.tasks[second].collective.clone().unwrap(),
    );
    assert_eq!((&c0.axis, &c0.group, c0.seq), (&c1.axis, &c1.group, 0));
    assert_eq!(c1.seq, 1);
    let old = &rp.streams[rp.tasks[second].stream.0 as usize];
    let id = StreamId(rp.streams.len() as u32);
    rp.streams.push(Stream {
        id,
        kind: old.kind,
        name: format!("{}.loose", old.name),
    });
    rp.tasks[second].stream = id;
    rp.tasks[second].waits.clear();
    let e = broken(&plan, &g);
    assert!(e.has(PlanRule::Collectives), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "task {first} (stream {}",
            plan.ranks[0].streams[plan.ranks[0].tasks[first].stream.0 as usize].name
        )) && text.contains("are consecutive calls of group `tp`")
            && text.contains("may run at once"),
        "{text}"
    );
}

#[test]
fn a_plan_mesh_too_large_for_its_ranks_is_refused_not_a_panic() {
    // An axis of 2^64 − 1 devices: the rank checks would size the `tp` group by it
    // (a capacity-overflow panic before this was fixed); the header says what is wrong.
    let g = example("examples/tiny-llama.json", Some("tp=2"));
    for size in [u64::MAX, u64::from(u32::MAX)] {
        let mut plan = serial(&g);
        plan.mesh[0].size = size;
        let e = broken(&plan, &g);
        assert!(e.has(PlanRule::Header), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("is not the program's") && text.contains("but the plan has 2 rank(s)"),
            "{text}"
        );
    }
}

#[test]
fn the_plan_format_docs_example_is_what_to_text_prints() {
    // docs/plan-format.md shows rank 0 of the serial two-branch plan as text, sizes
    // included: keep it equal to what `Plan::to_text` prints today.
    let doc = std::fs::read_to_string(fixtures::repo("docs/plan-format.md")).unwrap();
    let example = &doc[doc.find("## Example").expect("the docs have an example")..];
    let start = example.find("```\n").expect("the example is a code block") + 4;
    let block = &example[start..start + example[start..].find("```").unwrap()];
    let g = fixtures::two_branches(true);
    let text = serial(&g).to_text();
    let printed: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("rank 1"))
        .filter(|l| !l.trim().is_empty())
        .collect();
    let shown: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(shown, printed, "docs/plan-format.md's example is stale");
}
