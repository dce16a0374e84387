//! Running execution plans: serial plans of sharded programs reproduce the plain
//! executor's outputs bit for bit (the same kernels run in the same order per value);
//! the plan's chunk count is the one a fused op runs with; a dependency removed by hand
//! is a detected race on every run; a cycle of waits is a reported hang; and streams are
//! threads that honour events, not the plan's issue order.

use std::path::PathBuf;
use std::time::Duration;

use weft_backend_cpu::{
    ExecError, RunOptions, Tensors, random_input, run, run_plan, run_plan_unverified,
};
use weft_ir::{DType, Graph, Mesh, Op, Placement, Shape, Sharding, Tensor};
use weft_plan::{
    CompileOptions, HardwareRef, KernelConfig, Plan, PlanHeader, RankPlan, SourceModel, TaskId,
    serial_plan,
};

fn opts() -> RunOptions {
    RunOptions {
        timeout: Duration::from_secs(20),
        threads: 1,
        ..RunOptions::default()
    }
}

fn example(file: &str, mesh: Option<&str>) -> Graph {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(file);
    let mut g = weft_frontend_json::load(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let Some(spec) = mesh else {
        return g;
    };
    let mesh: Mesh = spec.parse().unwrap();
    if let Some(dp) = mesh.axis_size("dp") {
        g.dims.insert("batch".into(), dp);
    }
    let options = weft_passes::shard::ShardOptions {
        mesh,
        sp_norms: false,
    };
    weft_passes::shard::shard(&g, &options).unwrap_or_else(|e| panic!("{file} {spec}: {e}"))
}

fn serial(g: &Graph) -> Plan {
    let header = PlanHeader {
        compiler: "weft test".into(),
        source: SourceModel {
            path: g.name.clone(),
            format: "json".into(),
            sha256: String::new(),
        },
        hardware: HardwareRef {
            name: "none (serial plan)".into(),
            sha256: String::new(),
        },
        options: CompileOptions::default(),
        rules_applied: Vec::new(),
        model_changing_rewrites: Vec::new(),
        program: serde_json::Value::Null,
    };
    serial_plan(g, header).unwrap()
}

fn inputs(g: &Graph, seed: u64) -> Tensors {
    g.inputs()
        .map(|v| (g.value(v).name.clone(), random_input(g, v, seed).unwrap()))
        .collect()
}

/// Same names, dtypes, shapes and bits; no NaN anywhere (a NaN never counts as equal).
fn assert_bit_exact(want: &[(String, Tensor)], got: &[(String, Tensor)]) {
    assert_eq!(want.len(), got.len());
    for ((wn, w), (gn, g)) in want.iter().zip(got) {
        assert_eq!(wn, gn);
        assert_eq!((w.dtype(), w.shape()), (g.dtype(), g.shape()), "{wn}");
        let (wf, gf) = (w.to_f64_vec(), g.to_f64_vec());
        assert!(wf.iter().chain(&gf).all(|x| !x.is_nan()), "{wn}: NaN");
        assert!(
            wf.iter().any(|&x| x != 0.0),
            "{wn}: all zeros proves nothing"
        );
        let same = wf.iter().zip(&gf).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{wn}: outputs differ");
    }
}

#[test]
fn serial_plans_reproduce_the_executor_bit_for_bit() {
    for mesh in [None, Some("tp=2"), Some("dp=2,tp=2")] {
        let g = example("examples/tiny-llama.json", mesh);
        let plan = serial(&g);
        let x = inputs(&g, 11);
        let want = run(&g, &x, &opts()).unwrap();
        let got = run_plan(&g, &plan, &x, &opts()).unwrap_or_else(|e| panic!("{mesh:?}: {e}"));
        assert_bit_exact(&want, &got);
    }
}

#[test]
fn serial_plans_of_the_onnx_fixtures_at_tp2_reproduce_the_executor() {
    for fixture in ["llama-gqa", "qwen2", "mixtral", "gpt2", "bert", "mlp"] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/onnx-models")
            .join(fixture)
            .join("model.onnx");
        let g = weft_frontend_onnx::load(&path, &weft_frontend_onnx::ImportOptions::default())
            .unwrap_or_else(|e| panic!("{fixture}: {e}"));
        let (g, _) = weft_passes::PassManager::new()
            .with(weft_passes::RaisePatterns::default())
            .with(weft_passes::DeadCodeElimination)
            .run(g)
            .unwrap();
        let options = weft_passes::shard::ShardOptions {
            mesh: "tp=2".parse().unwrap(),
            sp_norms: false,
        };
        let g = weft_passes::shard::shard(&g, &options).unwrap();
        let plan = serial(&g);
        let x = inputs(&g, 17);
        let want = run(&g, &x, &opts()).unwrap();
        let got = run_plan(&g, &plan, &x, &opts()).unwrap_or_else(|e| panic!("{fixture}: {e}"));
        assert_bit_exact(&want, &got);
    }
}

/// On mesh `x=2`: `y = matmul_reduce_scatter(a, b)`, plus an all-gather + GEMM of the
/// result.
fn fused() -> Graph {
    let mut g = Graph::new("fused");
    g.mesh = "x=2".parse().unwrap();
    let input = |g: &mut Graph, name: &str, s: &[u64]| {
        let op = Op::Input {
            dtype: DType::F32,
            shape: Shape::new(s.iter().copied()),
        };
        g.add(name, op, &[]).unwrap()
    };
    let a = input(&mut g, "a", &[8, 3]);
    let b = input(&mut g, "b", &[3, 4]);
    let w = input(&mut g, "w", &[4, 3]);
    let rs = Op::MatMulReduceScatter {
        axis: "x".into(),
        dim: 0,
        transpose_b: false,
    };
    let y = g.add("y", rs, &[a, b]).unwrap();
    let ag = Op::AllGatherMatMul {
        axis: "x".into(),
        dim: 0,
        transpose_b: false,
    };
    let z = g.add("z", ag, &[y, w]).unwrap();
    // a·b is a partial sum when a splits its columns and b its rows; y is scattered by
    // rows, and z gathers them back.
    for (v, p) in [
        (a, Placement::Split(1)),
        (b, Placement::Split(0)),
        (y, Placement::Split(0)),
    ] {
        g.value_mut(v).sharding = Sharding::on("x", p);
    }
    g.outputs.push(z);
    g
}

#[test]
fn fused_ops_run_with_the_plans_chunk_count() {
    let g = fused();
    let x = inputs(&g, 5);
    let plan = serial(&g);
    assert_bit_exact(
        &run(&g, &x, &opts()).unwrap(),
        &run_plan(&g, &plan, &x, &opts()).unwrap(),
    );
    // The plan says 4 chunks: the result is the 4-chunk program's, bit for bit.
    let mut four = plan.clone();
    for rp in &mut four.ranks {
        for t in &mut rp.tasks {
            if t.nodes == ["y"] {
                t.kernel = KernelConfig::Unconfigured { chunks: Some(4) };
            }
        }
    }
    // The reference: the plain executor told to run `y` in 4 chunks.
    let mut four_chunks = opts();
    four_chunks.chunks.insert("y".into(), 4);
    let want = run(&g, &x, &four_chunks).unwrap();
    assert_bit_exact(&want, &run_plan(&g, &four, &x, &opts()).unwrap());
    // 3 chunks do not divide y's 8 rows into 2·3 pieces: the plan's count is the one
    // used (the default, 1, would run).
    let mut three = four.clone();
    for rp in &mut three.ranks {
        for t in &mut rp.tasks {
            if t.nodes == ["y"] {
                t.kernel = KernelConfig::Unconfigured { chunks: Some(3) };
            }
        }
    }
    let e = run_plan(&g, &three, &x, &opts()).unwrap_err().to_string();
    assert!(e.contains("`y`") && e.contains("into 2·3 pieces"), "{e}");
    // An all-gather + GEMM runs as its ring of 2 steps whatever chunk count cuts its 8
    // gathered rows (each row is computed alone): 1, 4 and 8 give the plan's values bit
    // for bit. A count that does not divide the rows describes no kernel and is refused,
    // and so is none (by the verifier).
    let want_z = run_plan(&g, &plan, &x, &opts()).unwrap();
    let with_z = |chunks: Option<u64>| {
        let mut p = plan.clone();
        for rp in &mut p.ranks {
            for t in &mut rp.tasks {
                if t.nodes == ["z"] {
                    t.kernel = KernelConfig::Unconfigured { chunks };
                }
            }
        }
        run_plan(&g, &p, &x, &opts())
    };
    for c in [1, 4, 8] {
        assert_bit_exact(&want_z, &with_z(Some(c)).unwrap());
    }
    let e = with_z(Some(3)).unwrap_err().to_string();
    assert!(
        e.contains("3 chunks") && e.contains("8 gathered rows"),
        "{e}"
    );
    let e = with_z(None).unwrap_err().to_string();
    assert!(e.contains("gives no chunk count"), "{e}");
}

/// The first task of `rp` that waits on an event.
fn first_waiter(rp: &RankPlan) -> usize {
    rp.tasks.iter().position(|t| !t.waits.is_empty()).unwrap()
}

#[test]
fn a_removed_dependency_is_refused_and_without_the_verifier_is_a_detected_race() {
    let g = example("examples/tiny-llama.json", Some("tp=2"));
    let x = inputs(&g, 3);
    let mut plan = serial(&g);
    let t = first_waiter(&plan.ranks[1]);
    plan.ranks[1].tasks[t].waits.clear();
    let e = run_plan(&g, &plan, &x, &opts()).unwrap_err();
    assert!(
        matches!(&e, ExecError::Plan(m) if m.contains("missing dependency")),
        "{e}"
    );
    // Bypassing the verifier: the executor's clocks catch the race on every run,
    // whichever thread happens to be first.
    for _ in 0..5 {
        match run_plan_unverified(&g, &plan, &x, &opts()) {
            Err(ExecError::Schedule {
                rank,
                task,
                message,
            }) => {
                assert_eq!(rank, 1);
                assert!(task.starts_with(&format!("task {t} ")), "{task}");
                assert!(message.starts_with("race: reads"), "{message}");
            }
            other => panic!("the race was not detected: {other:?}"),
        }
    }
}

#[test]
fn a_cycle_of_waits_is_a_reported_hang_not_a_hung_test() {
    let g = example("examples/tiny-llama.json", Some("tp=2"));
    let x = inputs(&g, 3);
    let mut plan = serial(&g);
    let rp = &mut plan.ranks[0];
    let w = first_waiter(rp);
    let e = rp.tasks[w].waits[0];
    let recorder = rp.tasks.iter().position(|t| t.record == Some(e)).unwrap();
    let stream = rp.tasks[w].stream;
    let later = (w + 1..rp.tasks.len())
        .find(|&t| rp.tasks[t].stream == stream)
        .unwrap();
    let events = rp.tasks.iter().filter(|t| t.record.is_some()).count() as u32;
    let ev = *rp.tasks[later]
        .record
        .get_or_insert(weft_plan::EventId(events));
    rp.tasks[recorder].waits.push(ev);
    let e = run_plan(&g, &plan, &x, &opts()).unwrap_err();
    assert!(
        matches!(&e, ExecError::Plan(m) if m.contains("cycle")),
        "{e}"
    );
    let quick = RunOptions {
        timeout: Duration::from_millis(500),
        ..opts()
    };
    let e = run_plan_unverified(&g, &plan, &x, &quick)
        .unwrap_err()
        .to_string();
    assert!(e.contains("never came"), "{e}");
}

/// Moves every task of the communication stream ahead of all compute tasks in issue
/// order (each stream keeps its own order), renumbering tasks. Events still order every
/// dependency, but waits now come before their records in issue order, which
/// `verify_plan` refuses (a GPU's wait issued before its record waits for nothing); a
/// runner that followed issue order would wait on compute work it had not started.
fn comm_first(rp: &mut RankPlan) {
    let comm = rp.streams[1].id;
    let mut order: Vec<usize> = (0..rp.tasks.len()).collect();
    order.sort_by_key(|&t| rp.tasks[t].stream != comm);
    let mut new_id = vec![0u32; order.len()];
    for (new, &old) in order.iter().enumerate() {
        new_id[old] = new as u32;
    }
    let map = |t: TaskId| TaskId(new_id[t.0 as usize]);
    let old = std::mem::take(&mut rp.tasks);
    rp.tasks = order.iter().map(|&t| old[t].clone()).collect();
    for t in &mut rp.tasks {
        t.id = map(t.id);
    }
    for b in &mut rp.buffers {
        b.producer = b.producer.map(map);
        b.last_reader = b.last_reader.map(map);
    }
    rp.memory.peak_at = rp.memory.peak_at.map(map);
}

#[test]
fn streams_are_threads_that_follow_events_not_issue_order() {
    let g = example("examples/tiny-llama.json", Some("tp=2"));
    let x = inputs(&g, 9);
    let mut plan = serial(&g);
    for rp in &mut plan.ranks {
        comm_first(rp);
        assert_ne!(rp.tasks[0].stream, rp.streams[0].id, "comm first");
        assert!(
            !rp.tasks[0].waits.is_empty(),
            "the first issued task waits on compute"
        );
    }
    // The order is not a valid plan any more; the executor's threads still follow
    // events, not issue order.
    assert!(weft_plan::verify_plan(&plan, &g).is_err());
    let want = run(&g, &x, &opts()).unwrap();
    assert_bit_exact(&want, &run_plan_unverified(&g, &plan, &x, &opts()).unwrap());
}
