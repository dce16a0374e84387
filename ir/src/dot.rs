//! A Graphviz DOT writer (naga's `back/dot` idea: DOT is just another backend).
//!
//! Output is a pure function of the graph, so it is stable enough to snapshot. Weights
//! and constants are drawn as small grey notes and collectives in orange, so that the
//! communication a sharded graph adds stands out.

use std::fmt::Write;

use crate::graph::Graph;
use crate::op::{Op, OpClass};

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The DOT form of `graph`.
pub fn to_dot(graph: &Graph) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = write_dot(graph, &mut out);
    out
}

fn write_dot(graph: &Graph, out: &mut String) -> std::fmt::Result {
    writeln!(out, "digraph \"{}\" {{", escape(&graph.name))?;
    writeln!(out, "  rankdir=TB;")?;
    if !graph.model_changes.is_empty() {
        // A changed model says so on the drawing itself, not only in the files beside it.
        let mut label = format!("{}:", crate::model_change::OUTPUTS_DIFFER);
        for change in &graph.model_changes {
            write!(label, "\\n{}", escape(&change.summary()))?;
        }
        writeln!(out, "  labelloc=t;")?;
        writeln!(out, "  label=\"{label}\";")?;
    }
    writeln!(
        out,
        "  node [shape=box, style=\"rounded,filled\", fillcolor=white, fontname=\"Helvetica\"];"
    )?;
    writeln!(out, "  edge [fontname=\"Helvetica\", fontsize=9];")?;
    for (id, node) in graph.nodes() {
        let mut label = format!("{}\\n{}", escape(&node.name), node.op.name());
        match &node.op {
            Op::Input { dtype, shape } => write!(label, "\\n{dtype}{shape}")?,
            Op::Weight { dtype, shape, .. } | Op::Constant { dtype, shape, .. } => {
                write!(label, "\\n{dtype}{shape}")?
            }
            op => {
                for attr in op.attr_text() {
                    write!(label, "\\n{}", escape(&attr))?;
                }
            }
        }
        let style = match node.op.class() {
            OpClass::Source if matches!(node.op, Op::Input { .. }) => {
                ", shape=ellipse, fillcolor=\"#dbeafe\""
            }
            OpClass::Source => ", shape=note, fillcolor=\"#eeeeee\", fontsize=9",
            OpClass::Collective => ", fillcolor=\"#fdba74\"",
            OpClass::MatMul | OpClass::Attention => ", fillcolor=\"#bbf7d0\"",
            OpClass::Moe => ", fillcolor=\"#e9d5ff\"",
            OpClass::Elementwise | OpClass::Normalization | OpClass::Layout => "",
        };
        writeln!(out, "  n{} [label=\"{label}\"{style}];", id.index())?;
    }
    for (id, node) in graph.nodes() {
        for &v in &node.inputs {
            let value = graph.value(v);
            let mut label = value.ty.to_string();
            if !value.sharding.is_replicated() {
                write!(label, " {}", value.sharding)?;
            }
            writeln!(
                out,
                "  n{} -> n{} [label=\"{}\"];",
                value.producer.index(),
                id.index(),
                escape(&label)
            )?;
        }
    }
    for (i, &v) in graph.outputs.iter().enumerate() {
        let value = graph.value(v);
        writeln!(
            out,
            "  out{i} [label=\"{}\", shape=ellipse, fillcolor=\"#fecaca\"];",
            escape(&value.name)
        )?;
        writeln!(
            out,
            "  n{} -> out{i} [label=\"{}\"];",
            value.producer.index(),
            escape(&value.ty.to_string())
        )?;
    }
    writeln!(out, "}}")
}
