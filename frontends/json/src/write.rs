//! IR graph → JSON text, in the canonical layout: one node per line, keys in a fixed
//! order, defaults left out. Reading this text back gives an identical graph, and
//! writing that graph again gives identical bytes.

use serde::Serialize;
use weft_ir::{Graph, Sharding};

use crate::parse::{FORMAT_VERSION, ShardingDoc};

#[derive(Serialize)]
struct NodeOut<'a> {
    name: &'a str,
    op: serde_json::Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    inputs: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attrs: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outputs: Option<Vec<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sharding: Option<ShardingDoc>,
}

fn json<T: Serialize + ?Sized>(value: &T) -> String {
    // Serialising plain data (strings, numbers, maps with string keys) cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// The canonical JSON text of `graph`.
pub fn to_json(graph: &Graph) -> String {
    let mut out = String::new();
    out.push_str("{\n");
    out.push_str(&format!("  \"weft\": {FORMAT_VERSION},\n"));
    out.push_str(&format!("  \"name\": {},\n", json(&graph.name)));
    if !graph.mesh.axes().is_empty() {
        out.push_str(&format!("  \"mesh\": {},\n", json(&graph.mesh)));
    }
    if !graph.dims.is_empty() {
        out.push_str(&format!("  \"dims\": {},\n", json(&graph.dims)));
    }
    if !graph.model_changes.is_empty() {
        out.push_str(&format!(
            "  \"model_changes\": {},\n",
            json(&graph.model_changes)
        ));
    }
    out.push_str("  \"nodes\": [\n");
    let count = graph.num_nodes();
    for (i, (_, node)) in graph.nodes().enumerate() {
        let mut tagged = serde_json::to_value(&node.op).unwrap_or_default();
        let (op, attrs) = match tagged.as_object_mut() {
            Some(obj) => (
                obj.remove("op").unwrap_or_default(),
                obj.remove("attrs")
                    .filter(|a| a.as_object().is_none_or(|m| !m.is_empty())),
            ),
            None => (tagged, None),
        };
        let names: Vec<&str> = node
            .outputs
            .iter()
            .map(|&v| graph.value(v).name.as_str())
            .collect();
        let default_names = match names.as_slice() {
            [one] => *one == node.name,
            many => many
                .iter()
                .enumerate()
                .all(|(i, n)| *n == format!("{}:{i}", node.name)),
        };
        let shardings: Vec<Sharding> = node
            .outputs
            .iter()
            .map(|&v| graph.value(v).sharding.clone())
            .collect();
        let sharding = if shardings.iter().all(Sharding::is_replicated) {
            None
        } else if shardings.len() == 1 {
            shardings.into_iter().next().map(ShardingDoc::One)
        } else {
            Some(ShardingDoc::Many(shardings))
        };
        let line = NodeOut {
            name: &node.name,
            op,
            inputs: node
                .inputs
                .iter()
                .map(|&v| graph.value(v).name.as_str())
                .collect(),
            attrs,
            outputs: (!default_names).then_some(names),
            sharding,
        };
        out.push_str("    ");
        out.push_str(&json(&line));
        out.push_str(if i + 1 < count { ",\n" } else { "\n" });
    }
    out.push_str("  ],\n");
    let outputs: Vec<&str> = graph
        .outputs
        .iter()
        .map(|&v| graph.value(v).name.as_str())
        .collect();
    out.push_str(&format!("  \"outputs\": {}\n", json(&outputs)));
    out.push_str("}\n");
    out
}
