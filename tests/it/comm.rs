//! The communication report (`passes/src/shard/comm.rs`) and `weft check`'s collectives:
//! every communicating op is listed (send, receive and broadcast among them), each with
//! NCCL's message size and the ring's wire bytes from the IR's shared formulas, and the
//! CLI's list agrees with what the sharded graph's ops occupy.

use weft::ir::occupancy::{fused_collective_bytes, message_bytes, payload_bytes, ring_wire_bytes};
use weft::ir::{Graph, Occupancy};
use weft::passes::shard::comm_report;

use crate::cli::{stdout, weft};
use crate::load;

/// Each communicating node of `g`: (name, op name, message bytes, wire bytes), computed
/// here from the values' sizes (the wire bytes from what the message carries).
fn expected(g: &Graph) -> Vec<(String, &'static str, u64, u64)> {
    g.nodes()
        .filter_map(|(_, n)| {
            let occ = n.op.occupancy();
            let c = occ.collective()?;
            let size = |v: Option<&weft::ir::ValueId>| {
                v.map_or(0, |&v| g.value(v).ty.size_bytes(&g.dims).unwrap())
            };
            let (input, output) = (size(n.inputs.first()), size(n.outputs.first()));
            let group = g.mesh.axis_size(c.axis).unwrap();
            let message = match occ {
                Occupancy::Both(_) => fused_collective_bytes(&n.op, input, output, group).unwrap(),
                _ => message_bytes(c.kind, input, output),
            };
            let payload = payload_bytes(&n.op, message).unwrap();
            let wire = ring_wire_bytes(c.kind, payload, group).unwrap();
            Some((n.name.clone(), n.op.name(), message, wire))
        })
        .collect()
}

#[test]
fn send_recv_and_broadcast_are_listed_with_every_collective() {
    let g = load("tests/data/collectives.json");
    let report = comm_report(&g).unwrap();
    let got: Vec<_> = report
        .collectives
        .iter()
        .map(|c| (c.node.clone(), c.kind, c.bytes, c.wire_bytes))
        .collect();
    assert_eq!(got, expected(&g));
    let kinds: Vec<&str> = report.collectives.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [
            "all_reduce",
            "all_gather",
            "reduce_scatter",
            "all_to_all",
            "send",
            "recv",
            "broadcast"
        ]
    );
    // A send sends its whole message, a receive nothing, a broadcast root the whole.
    let by = |k: &str| report.collectives.iter().find(|c| c.kind == k).unwrap();
    assert_eq!(by("send").wire_bytes, by("send").bytes);
    assert!(by("send").bytes > 0);
    assert_eq!(by("recv").wire_bytes, 0);
    assert!(by("recv").bytes > 0);
    assert_eq!(by("broadcast").wire_bytes, by("broadcast").bytes);
    // No attention: no layers, and the per-layer figure is the total.
    assert_eq!(report.layers, 0);
    assert_eq!(report.bytes_per_layer, report.total_bytes);
}

#[test]
fn fused_ops_count_the_collective_inside() {
    let g = load("tests/data/all-ops.json");
    let report = comm_report(&g).unwrap();
    let got: Vec<_> = report
        .collectives
        .iter()
        .map(|c| (c.node.clone(), c.kind, c.bytes, c.wire_bytes))
        .collect();
    assert_eq!(got, expected(&g));
    assert!(
        got.iter().any(|c| c.1 == "matmul_reduce_scatter"),
        "{got:?}"
    );
}

#[test]
fn check_mesh_json_lists_what_the_sharded_graph_communicates() {
    for (model, spec, layers) in [
        ("examples/tiny-llama.json", "tp=2", 2),
        ("examples/mixtral-8x7b-moe-layer.json", "tp=2,ep=2", 1),
    ] {
        let o = weft(&["check", model, "--mesh", spec, "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        let sharded = weft::shard(&load(model), &spec.parse().unwrap()).unwrap();
        let listed: Vec<(String, String, u64, u64)> = report["collectives"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["node"].as_str().unwrap().to_owned(),
                    c["kind"].as_str().unwrap().to_owned(),
                    c["bytes"].as_u64().unwrap(),
                    c["wire_bytes"].as_u64().unwrap(),
                )
            })
            .collect();
        let want: Vec<(String, String, u64, u64)> = expected(&sharded)
            .into_iter()
            .map(|(n, k, b, w)| (n, k.to_owned(), b, w))
            .collect();
        assert!(!want.is_empty(), "{model} at {spec}");
        assert_eq!(listed, want, "{model} at {spec}");
        let total: u64 = want.iter().map(|c| c.2).sum();
        assert_eq!(report["comm_bytes_total"], total, "{model} at {spec}");
        assert_eq!(report["layers"], layers, "{model} at {spec}");
        // Each collective says its layer: the names say which (`layers.K.…`).
        for c in report["collectives"].as_array().unwrap() {
            let name = c["node"].as_str().unwrap();
            let named = name
                .strip_prefix("layers.")
                .and_then(|r| r.split('.').next())
                .and_then(|k| k.parse::<u64>().ok());
            assert_eq!(c["layer"].as_u64(), named, "{model} at {spec}: {name}");
        }
        assert_eq!(
            report["comm_bytes_per_layer"],
            total / layers,
            "{model} at {spec}"
        );
    }
    // Without a mesh: the layer count, and no communication.
    let o = weft(&["check", "examples/tiny-llama.json", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["layers"], 2);
    assert!(report.get("collectives").is_none());
    let text = stdout(&weft(&["check", "examples/tiny-llama.json"]));
    assert!(text.contains("  layers      2\n"), "{text}");
}

#[test]
fn json_files_that_give_a_chunk_count_are_refused_naming_the_node() {
    let e = weft::json::parse_str(
        r#"{"weft": 1, "name": "old", "mesh": "tp=2", "nodes": [
  {"name": "a", "op": "input", "attrs": {"dtype": "f32", "shape": [4, 8]}, "sharding": {"tp": "S(1)"}},
  {"name": "b", "op": "input", "attrs": {"dtype": "f32", "shape": [8, 6]}, "sharding": {"tp": "S(0)"}},
  {"name": "fused", "op": "matmul_reduce_scatter", "inputs": ["a", "b"], "attrs": {"axis": "tp", "dim": 0, "chunks": 2}, "sharding": {"tp": "S(0)"}}
], "outputs": ["fused"]}"#,
        std::path::Path::new("old.json"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("node `fused`"), "{e}");
    assert!(e.contains("no longer takes `chunks`"), "{e}");
    assert!(e.contains("kernel configuration"), "{e}");
}

#[test]
fn an_expert_block_all_to_all_reads_writes_and_refuses_zero_groups() {
    // The sharded Mixtral layer's padded all-to-alls carry their payload in the JSON form
    // and read back the same.
    let layer = load("examples/mixtral-8x7b-moe-layer.json");
    let sharded = weft::shard(&layer, &"ep=4".parse().unwrap()).unwrap();
    let json = weft::json::to_json(&sharded);
    assert!(
        json.contains(r#""payload":{"expert_blocks":{"groups":4}}"#),
        "{json}"
    );
    let back = weft::json::parse_str(&json, std::path::Path::new("sharded.json")).unwrap();
    assert_eq!(weft::json::to_json(&back), json);
    // Zero groups: a clear error naming the node and the rule.
    let bad = json.replacen(
        r#""payload":{"expert_blocks":{"groups":4}}"#,
        r#""payload":{"expert_blocks":{"groups":0}}"#,
        1,
    );
    let e = weft::json::parse_str(&bad, std::path::Path::new("bad.json"))
        .map(|g| weft::ir::verify(&g).map_err(|e| e.to_string()))
        .map_err(|e| e.to_string());
    let e = match e {
        Ok(Err(e)) | Err(e) => e,
        Ok(Ok(())) => panic!("zero groups accepted"),
    };
    assert!(e.contains("at least one group"), "{e}");
}
