//! The stable, readable text form: one op per line, in execution order.
//!
//! ```text
//! graph "tiny-llama" {
//!   mesh tp=2
//!   dims batch=1, seq=16
//!   %tokens: i64[batch, seq] = input
//!   %embed: f32[256, 64] = weight normal(seed=1, std=0.02)
//!   %x: f32[batch, seq, 64] = gather(%embed, %tokens) {axis=0}
//!   %scores:0: f32[batch, seq, 2], %scores:1: i64[batch, seq, 2] = top_k(%x) {k=2, axis=-1}
//!   return %x
//! }
//! ```
//!
//! A value's sharding follows its type when it is not replicated (`{tp: S(1)}`), and a
//! node's name follows the line as `@name` when it differs from its value's name.
//! The form is for people and snapshot tests; JSON is the exchange format.

use std::fmt::Write;

use crate::graph::{Graph, Node};
use crate::op::Op;

/// The text form of `graph`.
pub fn to_text(graph: &Graph) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = write_graph(graph, &mut out);
    out
}

fn write_graph(graph: &Graph, out: &mut String) -> std::fmt::Result {
    writeln!(out, "graph {:?} {{", graph.name)?;
    if !graph.mesh.axes().is_empty() {
        writeln!(out, "  mesh {}", graph.mesh)?;
    }
    if !graph.dims.is_empty() {
        let dims: Vec<String> = graph.dims.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(out, "  dims {}", dims.join(", "))?;
    }
    if !graph.model_changes.is_empty() {
        writeln!(out, "  // {}:", crate::model_change::OUTPUTS_DIFFER)?;
        for change in &graph.model_changes {
            writeln!(out, "  //   {}", change.summary())?;
        }
    }
    for (_, node) in graph.nodes() {
        write_node(graph, node, out)?;
    }
    let outs: Vec<String> = graph
        .outputs
        .iter()
        .map(|&v| format!("%{}", graph.value(v).name))
        .collect();
    writeln!(out, "  return {}", outs.join(", "))?;
    writeln!(out, "}}")
}

fn write_node(graph: &Graph, node: &Node, out: &mut String) -> std::fmt::Result {
    out.push_str("  ");
    let results: Vec<String> = node
        .outputs
        .iter()
        .map(|&v| {
            let value = graph.value(v);
            if value.sharding.is_replicated() {
                format!("%{}: {}", value.name, value.ty)
            } else {
                format!("%{}: {} {}", value.name, value.ty, value.sharding)
            }
        })
        .collect();
    if !results.is_empty() {
        write!(out, "{} = ", results.join(", "))?;
    }
    out.push_str(node.op.name());
    match &node.op {
        Op::Weight { init, .. } | Op::Constant { init, .. } => {
            write!(out, " {}", init.describe())?;
        }
        Op::Input { .. }
        | Op::MatMul { .. }
        | Op::Add
        | Op::Sub
        | Op::Mul
        | Op::Div
        | Op::Pow
        | Op::Neg
        | Op::Exp
        | Op::Sqrt
        | Op::Rsqrt
        | Op::Reciprocal
        | Op::Silu
        | Op::Gelu { .. }
        | Op::Relu
        | Op::Sigmoid
        | Op::Tanh
        | Op::Softmax { .. }
        | Op::RmsNorm { .. }
        | Op::LayerNorm { .. }
        | Op::Attention { .. }
        | Op::RopeCache { .. }
        | Op::Rope { .. }
        | Op::Gather { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Slice { .. }
        | Op::Cast { .. }
        | Op::Reduce { .. }
        | Op::TopK { .. }
        | Op::Expand { .. }
        | Op::Where
        | Op::IsNan
        | Op::MoeRoute { .. }
        | Op::MoeDispatch { .. }
        | Op::ExpertMatMul { .. }
        | Op::MoeCombine
        | Op::MoePad { .. }
        | Op::MoeUnpad { .. }
        | Op::AllReduce { .. }
        | Op::AllGather { .. }
        | Op::ReduceScatter { .. }
        | Op::AllToAll { .. }
        | Op::Send { .. }
        | Op::Recv { .. }
        | Op::Broadcast { .. }
        | Op::AllSlice { .. }
        | Op::ShardedGather { .. }
        | Op::MatMulReduceScatter { .. }
        | Op::AllGatherMatMul { .. }
        | Op::NormMatMul { .. }
        | Op::MoeRegroup
        | Op::ReduceScatterAddNormAllGather { .. }
        | Op::FusedElementwise { .. } => {
            if node.op.arity() != crate::op::Arity::Exactly(0) {
                let args: Vec<String> = node
                    .inputs
                    .iter()
                    .map(|&v| format!("%{}", graph.value(v).name))
                    .collect();
                write!(out, "({})", args.join(", "))?;
            }
            let attrs = node.op.attr_text();
            if !attrs.is_empty() {
                write!(out, " {{{}}}", attrs.join(", "))?;
            }
        }
    }
    let default_names = match node.outputs.as_slice() {
        [v] => graph.value(*v).name == node.name,
        outs => outs
            .iter()
            .enumerate()
            .all(|(i, &v)| graph.value(v).name == format!("{}:{i}", node.name)),
    };
    if !default_names || node.outputs.is_empty() {
        write!(out, " @{}", node.name)?;
    }
    out.push('\n');
    Ok(())
}
