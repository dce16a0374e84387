//! The list scheduler's priority rules (critical path, program order, communication
//! counted twice; the fastest kept, ties to the critical path) on real models: the ladder
//! decode step, whose attention and MLP are independent, gets faster by running each
//! module before the next; the standard model's plan is unchanged; and a plan issued by
//! another rule still verifies and, run on the CPU executor's ranks with random inputs,
//! equals the single-device program.

use weft::compile::{CompileRequest, Compiled, compile};
use weft::cpu::{RunOptions, run, run_plan};
use weft::passes::model_change::{AllowOptions, LadderLayers, LadderOptions};
use weft::passes::strategy::Strategy;
use weft::plan::{Plan, SchedulePriority};

use crate::{repo, worst_relative};

fn ladder() -> AllowOptions {
    AllowOptions {
        ladder: Some(LadderOptions {
            layers: LadderLayers::All,
        }),
        dcca: None,
    }
}

fn compile_with(
    model: std::path::PathBuf,
    dims: &[(&str, u64)],
    mesh: &str,
    allow: AllowOptions,
) -> Compiled {
    let request = CompileRequest {
        model,
        dims: dims.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        mesh: Some(mesh.parse().unwrap()),
        sp_norms: false,
        profile: weft::hardware::Profile::resolve("h100-sxm-8").unwrap(),
        max_memory: None,
        strategy: Strategy::None,
        allow,
        plan_path: None,
    };
    compile(&request).unwrap_or_else(|e| panic!("{e}"))
}

/// The figure the plan records for `rule`.
fn tried(plan: &Plan, rule: SchedulePriority) -> f64 {
    plan.choice
        .schedule_priorities
        .iter()
        .find(|t| t.priority == rule)
        .unwrap_or_else(|| panic!("{rule} was not tried"))
        .predicted_us
}

/// `bound ≤ predicted ≤ baseline`, the plan's step equal to its rule's figure, and the
/// winner no slower than any rule tried.
fn assert_consistent(plan: &Plan, what: &str) {
    let p = &plan.prediction;
    assert!(
        p.bound_us <= p.predicted_us && p.predicted_us <= p.baseline_us,
        "{what}: bound {} predicted {} baseline {}",
        p.bound_us,
        p.predicted_us,
        p.baseline_us
    );
    let won = tried(plan, plan.choice.schedule_priority);
    assert!((won - p.predicted_us).abs() <= 1e-9 * won, "{what}");
    assert_eq!(
        plan.choice.schedule_priorities.len(),
        SchedulePriority::ALL.len(),
        "{what}"
    );
    for t in &plan.choice.schedule_priorities {
        assert!(won <= t.predicted_us, "{what}: {} is faster", t.priority);
    }
}

#[test]
fn the_ladder_decode_step_runs_attention_before_mlp_and_gets_faster() {
    let model = repo("examples/scenarios/models/llama3-70b-80-layers-decode.json");
    let dims = [("batch", 1), ("kv_len", 1280)];
    let standard = compile_with(model.clone(), &dims, "tp=8", AllowOptions::default());
    let laddered = compile_with(model, &dims, "tp=8", ladder());
    let (s, l) = (&standard.plan, &laddered.plan);
    assert_consistent(s, "standard");
    assert_consistent(l, "ladder");
    // The standard model is one chain of modules: every rule gives the same step, and the
    // tie keeps the critical path (so the plan is what it was).
    assert_eq!(s.choice.schedule_priority, SchedulePriority::CriticalPath);
    // The ladder's attention and MLP are independent; program order runs attention first,
    // so its all-reduce runs under the MLP instead of waiting exposed.
    assert_eq!(l.choice.schedule_priority, SchedulePriority::ProgramOrder);
    let critical = tried(l, SchedulePriority::CriticalPath);
    assert!(
        l.prediction.predicted_us < 0.9 * critical,
        "ladder {} µs against {critical} µs by critical path",
        l.prediction.predicted_us
    );
    // Nearly every all-reduce is hidden now (the last has nothing after it).
    assert!(
        l.prediction.exposed_comm_us < 0.05 * s.prediction.exposed_comm_us,
        "exposed {} of {} µs",
        l.prediction.exposed_comm_us,
        s.prediction.exposed_comm_us
    );
    weft::plan::verify_plan(l, &laddered.program).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_plan_issued_in_program_order_runs_and_equals_the_single_device_program() {
    let cfg = weft::zoo::LlamaConfig {
        name: "priority-small".into(),
        vocab: 64,
        hidden: 64,
        heads: 4,
        kv_heads: 2,
        ffn: 96,
        layers: 3,
        dtype: weft::ir::DType::F32,
        batch: 1,
        seq: 8,
        ..weft::zoo::LlamaConfig::tiny()
    };
    let source = weft::zoo::llama_decode(&cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small-decode.json");
    std::fs::write(&path, weft::json::to_json(&source)).unwrap();
    let compiled = compile_with(path, &[], "tp=2", ladder());
    let plan = &compiled.plan;
    assert_consistent(plan, "small ladder decode");
    assert_eq!(
        plan.choice.schedule_priority,
        SchedulePriority::ProgramOrder,
        "{:?}",
        plan.choice.schedule_priorities
    );
    weft::plan::verify_plan(plan, &compiled.program).unwrap_or_else(|e| panic!("{e}"));
    // The same laddered model on one device, by the graph executor (no plan).
    let (single, _) = weft::to_stage_allowing(source.clone(), weft::Stage::Raised, &ladder())
        .unwrap_or_else(|e| panic!("{e}"));
    let inputs = weft::inputs::complete_inputs(&single, Vec::new(), 11).unwrap();
    let options = RunOptions::default();
    let want = run(&single, &inputs, &options).unwrap_or_else(|e| panic!("{e}"));
    let got =
        run_plan(&compiled.program, plan, &inputs, &options).unwrap_or_else(|e| panic!("{e}"));
    let err = worst_relative(&want, &got);
    assert!(err <= 1e-4, "relative error {err}");
}
