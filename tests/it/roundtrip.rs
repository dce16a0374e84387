//! The JSON round trip is exact: parse → print → parse gives an identical graph, and
//! printing that graph again gives identical bytes.

use std::path::Path;

use weft::json::{parse_str, to_json};

use crate::repo;

fn assert_round_trip(src: &str) -> String {
    let path = Path::new("mem.json");
    let first = parse_str(src, path).unwrap_or_else(|e| panic!("{e}"));
    let printed = to_json(&first);
    let second = parse_str(&printed, path).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(first, second, "the graph changed in the round trip");
    assert_eq!(printed, to_json(&second), "printing is not byte-stable");
    printed
}

#[test]
fn examples_round_trip_byte_for_byte() {
    for file in [
        "tiny-llama",
        "llama3-70b-layer",
        "mixtral-8x7b-moe-layer",
        "llama3-70b",
    ] {
        let src = std::fs::read_to_string(repo(&format!("examples/{file}.json"))).unwrap();
        // The committed examples are already canonical, so one print reproduces them.
        assert_eq!(assert_round_trip(&src), src, "{file}");
    }
}

#[test]
fn collectives_shardings_and_renamed_outputs_round_trip() {
    let src = std::fs::read_to_string(repo("tests/data/collectives.json")).unwrap();
    let printed = assert_round_trip(&src);
    assert!(printed.contains(r#""mesh": "tp=2,ep=2""#), "{printed}");
    assert!(printed.contains(r#""outputs":["vals","idx"]"#), "{printed}");
    assert!(
        printed.contains(r#""sharding":[{"ep":"S(1)"},{"ep":"S(1)"}]"#),
        "{printed}"
    );
    assert!(
        printed.contains(r#""sharding":{"ep":"S(2)","tp":"S(1)"}"#),
        "{printed}"
    );
    assert!(
        printed.contains(r#""sharding":{"ep":"P(max)"}"#),
        "{printed}"
    );
}

#[test]
fn loose_input_becomes_canonical() {
    // Defaults written out, keys out of order, `attrs: {}` on an op without attributes,
    // integers where floats are expected, whitespace everywhere.
    let src = r#"{ "nodes": [
        { "op": "input", "name": "x", "attrs": { "shape": [2, 4], "dtype": "f32" } },
        { "name": "w", "op": "weight",
          "attrs": { "dtype": "f32", "shape": [4, 3], "init": { "inline": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] } } },
        { "name": "y", "op": "matmul", "inputs": ["x", "w"], "attrs": { "transpose_a": false, "transpose_b": false } },
        { "name": "z", "op": "exp", "inputs": ["y"], "attrs": {} },
        { "name": "s", "op": "softmax", "inputs": ["z"], "attrs": { "axis": -1 } }
      ],
      "outputs": ["s"], "name": "loose", "weft": 1 }"#;
    let printed = assert_round_trip(src);
    assert!(
        printed.contains(r#"{"name":"y","op":"matmul","inputs":["x","w"]}"#),
        "{printed}"
    );
    assert!(
        printed.contains(r#"{"name":"z","op":"exp","inputs":["y"]}"#),
        "{printed}"
    );
    assert!(
        printed.contains(r#""init":{"inline":[1.0,2.0,3.0"#),
        "{printed}"
    );
}

#[test]
fn every_op_round_trips() {
    // One node of every op the IR has, so no attribute escapes the round trip.
    let src = std::fs::read_to_string(repo("tests/data/all-ops.json")).unwrap();
    assert_round_trip(&src);
    let g = parse_str(&src, Path::new("all-ops.json")).unwrap();
    let mut used: Vec<&str> = g.nodes().map(|(_, n)| n.op.name()).collect();
    used.sort_unstable();
    used.dedup();
    let mut all = weft::ir::Op::NAMES.to_vec();
    all.sort_unstable();
    assert_eq!(used, all, "tests/data/all-ops.json must use every op");
    // The JSON spelling of every op is the name the text form and errors use.
    let printed = to_json(&g);
    for (_, node) in g.nodes() {
        let line = format!(r#"{{"name":"{}","op":"{}""#, node.name, node.op.name());
        assert!(printed.contains(&line), "{line} not in\n{printed}");
    }
}

/// Expert parallelism's per-device values are written `"L"` (local) and read back.
#[test]
fn local_placements_round_trip() {
    use weft::zoo::{LlamaConfig, llama};
    let cfg = LlamaConfig {
        hidden: 64,
        heads: 4,
        kv_heads: 2,
        ffn: 128,
        vocab: 128,
        seq: 8,
        ..LlamaConfig::mixtral_8x7b_layer()
    };
    let graph = llama(&cfg).unwrap();
    let sharded = weft::shard(&graph, &"ep=2".parse().unwrap()).unwrap();
    let printed = assert_round_trip(&to_json(&sharded));
    assert!(printed.contains(r#""sharding":{"ep":"L"}"#), "{printed}");
}
