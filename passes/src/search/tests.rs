//! The layer moves on `examples/tiny-llama.json` (two layers) at `tp=2` on `h100-sxm-8`:
//! every class a layer move sets is in one of its layers, the two layers (the first reads
//! the embedding, the second the first's residual) are two groups, a move's counterpart
//! made from its key is the move itself, and a climb over the layer moves alone from the
//! program as sharded keeps one (a layer put on the greedy program is faster there) and
//! keeps nothing that is not strictly faster.

use std::path::PathBuf;
use std::time::Duration;

use weft_ir::Graph;

use super::layer_moves::{class_layers, layer_move_for, layer_moves};
use super::local::{Budget, Evaluator, climb};
use super::moves::MoveKey;
use super::seed_list;
use super::signature::Signatures;
use crate::cost::CostModel;
use crate::saturate::extract::{Tables, greedy};
use crate::saturate::{SaturateOptions, saturate};
use crate::schedule::ScheduleOptions;
use crate::shard::{ShardOptions, shard};

fn tiny_llama_tp2() -> (Graph, CostModel) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/tiny-llama.json");
    let graph = weft_frontend_json::load(&path).expect("the example loads");
    let sharded = shard(
        &graph,
        &ShardOptions {
            mesh: "tp=2".parse().expect("a mesh"),
            sp_norms: false,
        },
    )
    .expect("it shards");
    let profile = weft_hardware::Profile::builtin("h100-sxm-8").expect("a built-in profile");
    let cost = CostModel::new(&profile, &sharded.mesh).expect("a cost model");
    (sharded, cost)
}

#[test]
fn layer_moves_set_one_group_of_layers_to_a_seeds_choices() {
    let (sharded, cost) = tiny_llama_tp2();
    let sat = saturate(&sharded, &SaturateOptions::default()).expect("it saturates");
    let (tables, uncosted, _) = Tables::new(&sat, &cost);
    let greedy = greedy(&tables, &uncosted).expect("a greedy program");
    let original = tables.original_choice();
    let seeds = seed_list("the program", &tables, &greedy.best.choice, &original);
    let sigs = Signatures::new(&tables);
    let of = class_layers(&tables, &sharded);
    let moves = layer_moves(&tables, &sigs, &sharded, &seeds, None, 0);
    // One group per layer (their signatures differ), one move per seed that has
    // choices there.
    let groups: std::collections::BTreeSet<u64> = moves
        .iter()
        .map(|m| match m.key {
            MoveKey::Layer(sig, _) => sig,
            _ => panic!("a layer move keyed {:?}", m.key),
        })
        .collect();
    assert_eq!(groups.len(), 2, "{:?}", moves.iter().map(|m| &m.label));
    assert!(moves.iter().any(|m| m.label.starts_with("layer 0's")));
    assert!(moves.iter().any(|m| m.label.starts_with("layer 1's")));
    for m in &moves {
        let MoveKey::Layer(sig, seed) = m.key else {
            unreachable!()
        };
        assert!(!m.revertible, "{}", m.label);
        // Each pick is a class of one layer, set to the seed's e-node there.
        let layer = of[m.picks[0].0];
        assert!(layer.is_some(), "{}", m.label);
        for &(c, k) in &m.picks {
            assert_eq!(of[c], layer, "{}: class {c}", m.label);
            assert_eq!(seeds[seed].1[c], Some(k), "{}: class {c}", m.label);
        }
        // The counterpart made from the key (as the replay makes it) is the same move.
        let again =
            layer_move_for(&tables, &sigs, &sharded, sig, &seeds[seed].1).expect("a counterpart");
        assert_eq!(again.picks, m.picks, "{}", m.label);
    }
    // Classes outside every layer (sources, the embedding, the head) are never set.
    let outside: Vec<usize> = (0..of.len()).filter(|&c| of[c].is_none()).collect();
    assert!(!outside.is_empty());
    assert!(
        moves
            .iter()
            .all(|m| m.picks.iter().all(|(c, _)| !outside.contains(c)))
    );
}

#[test]
fn a_climb_keeps_a_layer_move_only_when_it_is_faster() {
    let (sharded, cost) = tiny_llama_tp2();
    let sat = saturate(&sharded, &SaturateOptions::default()).expect("it saturates");
    let (tables, uncosted, _) = Tables::new(&sat, &cost);
    let greedy = greedy(&tables, &uncosted).expect("a greedy program");
    let original = tables.original_choice();
    let seeds = seed_list("the program", &tables, &greedy.best.choice, &original);
    let sigs = Signatures::new(&tables);
    let moves = layer_moves(&tables, &sigs, &sharded, &seeds, None, 0);
    let mut eval = Evaluator {
        tables: &tables,
        template: &sharded,
        costs: &cost,
        options: ScheduleOptions {
            comm_streams: 1,
            max_memory: None,
            layer_of: Vec::new(),
        },
        evaluations: 0,
    };
    let start_us = eval
        .evaluate(&original)
        .expect("the program as sharded schedules");
    let greedy_us = eval
        .evaluate(&greedy.best.choice)
        .expect("greedy schedules");
    assert!(
        greedy_us < start_us,
        "greedy {greedy_us} µs, as sharded {start_us} µs"
    );
    let mut steps = Vec::new();
    let budget = Budget {
        evaluations: 1000,
        time: Duration::from_secs(600),
    };
    let climbed = climb(
        &mut eval,
        original.clone(),
        start_us,
        &moves,
        &original,
        budget,
        &mut steps,
    );
    assert!(
        !climbed.kept.is_empty(),
        "no layer move was kept: {steps:#?}"
    );
    assert!(climbed.predicted_us < start_us);
    // Every step: kept exactly when strictly faster than the program it started from.
    let mut current = start_us;
    for s in &steps {
        let faster = matches!(s.outcome, Ok(t) if t < current * (1.0 - 1e-9));
        assert_eq!(s.accepted, faster, "{s:?} from {current} µs");
        if s.accepted {
            current = s.outcome.clone().expect("a kept step scheduled");
        }
    }
    assert_eq!(current, climbed.predicted_us);
}
