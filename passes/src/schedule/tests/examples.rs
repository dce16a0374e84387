//! The bundled examples and JSON fixtures, loaded through the JSON frontend, sharded at
//! `tp=2` and `tp=8` by the shard pass, and scheduled: every plan invariant that scales
//! holds, `bound ≤ predicted ≤ baseline`, overlap gains where there is communication,
//! and the activation peak is compared with `weft_ir::memory::peak_memory`.

use std::path::PathBuf;

use weft_ir::memory::peak_memory;
use weft_ir::{DType, Graph};

use super::{check_plan, h100_rates, le};
use crate::schedule::{ScheduleOptions, schedule};
use crate::shard::{ShardOptions, shard};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn load(path: &str) -> Graph {
    weft_frontend_json::load(&repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The largest activation bytes live at one instant of the plan's timeline (a buffer
/// from its producer's start, or the step's start, to its last reader's end, or the
/// step's end): no placement can use fewer bytes.
fn live_lower_bound(plan: &weft_plan::RankPlan) -> u64 {
    let end = plan.tasks.iter().map(|t| t.end_us).fold(0.0, f64::max);
    let mut points: Vec<(f64, i128)> = Vec::new();
    for b in plan
        .buffers
        .iter()
        .filter(|b| b.kind != weft_plan::BufferKind::Weight)
    {
        let from = b
            .producer
            .map_or(0.0, |p| plan.tasks[p.0 as usize].start_us);
        let to = b.last_reader.map_or(
            if b.kind == weft_plan::BufferKind::Output {
                end
            } else {
                from
            },
            |r| plan.tasks[r.0 as usize].end_us,
        );
        // Half-open [from, to): a buffer whose last reader ends exactly when another's
        // producer starts may share its bytes.
        points.push((from, i128::from(b.bytes)));
        points.push((to.max(from), -i128::from(b.bytes)));
    }
    points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut live, mut peak) = (0i128, 0i128);
    for (_, d) in points {
        live += d;
        peak = peak.max(live);
    }
    peak as u64
}

#[allow(clippy::print_stderr)] // the figures side by side, for `--nocapture` readers
fn check(name: &str, g: &Graph) {
    for comm_streams in [1, 2] {
        let options = ScheduleOptions {
            comm_streams,
            ..ScheduleOptions::default()
        };
        let s = schedule(g, &h100_rates(), &options).unwrap_or_else(|e| panic!("{name}: {e}"));
        check_plan(g, &s, s.ranks[0].tasks.len() <= 128);
        let p = &s.prediction;
        // Communication hidden behind compute is time gained over the serial baseline.
        let comm_us: f64 = s.ranks[0]
            .tasks
            .iter()
            .filter(|t| t.stream.0 != 0)
            .map(|t| t.end_us - t.start_us)
            .sum();
        if comm_us - p.exposed_comm_us > 1e-6 {
            assert!(
                p.predicted_us < p.baseline_us,
                "{name}: overlap without gain"
            );
        }
        assert!(le(p.bound_us, p.predicted_us) && le(p.predicted_us, p.baseline_us));
        let plan = &s.ranks[0];
        let est = peak_memory(g, DType::size_bytes).unwrap();
        let lower = live_lower_bound(plan);
        assert!(
            plan.memory.activation_peak_bytes >= lower,
            "{name}: pool {} below the live bytes {lower}",
            plan.memory.activation_peak_bytes
        );
        // The weights' own bytes are the IR estimate's; the pool packs each at its
        // aligned size.
        let weights = plan
            .buffers
            .iter()
            .filter(|b| b.kind == weft_plan::BufferKind::Weight);
        let own: u64 = weights.clone().map(|b| b.bytes).sum();
        let padded: u64 = weights
            .map(|b| weft_plan::aligned_size(b.bytes).unwrap())
            .sum();
        assert_eq!(u128::from(own), est.weights, "{name}");
        assert_eq!(plan.memory.weight_bytes, padded, "{name}");
        // The figures side by side (see the module documentation of `memory`).
        eprintln!(
            "{name} ({comm_streams} comm): predicted {:.1} µs, baseline {:.1}, bound {:.1}, \
             exposed {:.1}; activations {} B (live lower bound {lower}), \
             ir estimate {} B + inputs {} B",
            p.predicted_us,
            p.baseline_us,
            p.bound_us,
            p.exposed_comm_us,
            plan.memory.activation_peak_bytes,
            est.peak_activations,
            est.inputs
        );
    }
}

#[test]
fn examples_and_fixtures_schedule_at_tp2_and_tp8() {
    for path in ["tests/data/collectives.json", "tests/data/all-ops.json"] {
        check(path, &load(path));
    }
    // tiny-llama has 4 heads: tp=8 cannot split them, so it goes to tp=4.
    for (path, meshes) in [
        ("examples/tiny-llama.json", ["tp=2", "tp=4"]),
        ("examples/llama3-70b-layer.json", ["tp=2", "tp=8"]),
        ("examples/mixtral-8x7b-moe-layer.json", ["tp=2", "tp=8"]),
    ] {
        let g = load(path);
        check(path, &g);
        for mesh in meshes {
            let options = ShardOptions {
                mesh: mesh.parse().unwrap(),
                sp_norms: false,
            };
            let sharded = shard(&g, &options).unwrap_or_else(|e| panic!("{path} at {mesh}: {e}"));
            check(&format!("{path} at {mesh}"), &sharded);
        }
    }
}

#[test]
fn llama3_70b_schedules_at_tp8() {
    let g = load("examples/llama3-70b.json");
    let options = ShardOptions {
        mesh: "tp=8".parse().unwrap(),
        sp_norms: false,
    };
    let sharded = shard(&g, &options).unwrap();
    check("examples/llama3-70b.json at tp=8", &sharded);
}
