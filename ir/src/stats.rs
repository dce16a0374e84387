//! Graph summaries: op counts, parameter count and bytes, FLOPs per forward pass.
//!
//! FLOP conventions (also in `docs/json-format.md`): a multiply-add is two FLOPs.
//! `matmul` counts `2·batch·m·n·k`; `expert_matmul` counts `2·N·K·M` (each row meets one
//! expert); `attention` counts `2·b·hq·(d + dv)` per visible score (with `causal`, only the
//! scores a query may see, aligned bottom-right). Elementwise ops count one FLOP per
//! output element, `softmax` five, `rms_norm` four and `layer_norm` seven per element,
//! `rope` three, `moe_combine` two per routed copy element. Layout ops, sources and
//! collectives count zero: communication is reported separately.

use std::collections::BTreeMap;

use crate::graph::Graph;
use crate::op::{Op, OpClass};
use crate::types::{DimBindings, DimError, Shape};

/// What `weft check` reports about a graph.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GraphStats {
    /// Number of nodes by op name.
    pub ops: BTreeMap<&'static str, u64>,
    /// Elements of all `weight` nodes.
    pub params: u64,
    /// Bytes of all `weight` nodes in their dtypes.
    pub param_bytes: u64,
    /// FLOPs of one forward pass under the graph's dim bindings.
    pub flops: u64,
    /// FLOPs split by op family.
    pub flops_by_class: BTreeMap<&'static str, u64>,
}

fn class_name(class: OpClass) -> &'static str {
    match class {
        OpClass::Source => "source",
        OpClass::MatMul => "matmul",
        OpClass::Elementwise => "elementwise",
        OpClass::Normalization => "normalization",
        OpClass::Attention => "attention",
        OpClass::Layout => "layout",
        OpClass::Moe => "moe",
        OpClass::Collective => "collective",
    }
}

/// Summarises a verified graph. Fails only when a shape mentions an unbound symbol,
/// which the verifier already rejects.
pub fn stats(graph: &Graph) -> Result<GraphStats, DimError> {
    let mut s = GraphStats::default();
    for (_, node) in graph.nodes() {
        *s.ops.entry(node.op.name()).or_default() += 1;
        if let Op::Weight { dtype, shape, .. } = &node.op {
            let n = shape.numel(&graph.dims)?;
            s.params = s.params.saturating_add(n);
            s.param_bytes = s
                .param_bytes
                .saturating_add(n.saturating_mul(dtype.size_bytes()));
        }
        let inputs: Vec<&Shape> = node
            .inputs
            .iter()
            .map(|&v| &graph.value(v).ty.shape)
            .collect();
        let output = node.outputs.first().map(|&v| &graph.value(v).ty.shape);
        let f = node_flops(&node.op, &inputs, output, &graph.dims)?;
        if f > 0 {
            s.flops = s.flops.saturating_add(f);
            *s.flops_by_class
                .entry(class_name(node.op.class()))
                .or_default() += f;
        }
    }
    Ok(s)
}

/// FLOPs of one op given its input shapes and (first) output shape.
pub fn node_flops(
    op: &Op,
    inputs: &[&Shape],
    output: Option<&Shape>,
    dims: &DimBindings,
) -> Result<u64, DimError> {
    let out_numel = || output.map_or(Ok(0), |s| s.numel(dims));
    let last =
        |s: &Shape| -> Result<u64, DimError> { s.dims().last().map_or(Ok(1), |d| d.eval(dims)) };
    Ok(match op {
        Op::MatMul { transpose_a, .. } => {
            // output is [.., m, n]; the contracted dim comes from a.
            let a = inputs[0].eval(dims)?;
            let k = if *transpose_a {
                a[a.len() - 2]
            } else {
                a[a.len() - 1]
            };
            2u64.saturating_mul(out_numel()?).saturating_mul(k)
        }
        Op::ExpertMatMul { .. } | Op::AllGatherMatMul { .. } => {
            let k = last(inputs[0])?;
            2u64.saturating_mul(out_numel()?).saturating_mul(k)
        }
        // The producing GEMM (if any), then one op per element per step.
        Op::FusedElementwise { steps } => {
            let n = out_numel()?;
            let gemm = match steps.first() {
                Some(crate::FusedStep::Matmul { .. }) => {
                    2u64.saturating_mul(n).saturating_mul(last(inputs[0])?)
                }
                _ => 0,
            };
            let rest = steps
                .iter()
                .filter(|s| !matches!(s, crate::FusedStep::Matmul { .. }))
                .count() as u64;
            gemm.saturating_add(rest.saturating_mul(n))
        }
        // The GEMM before the scatter: a's rows times b's columns times k.
        Op::MatMulReduceScatter { transpose_b, .. } => {
            let a = inputs[0].eval(dims)?;
            let b = inputs[1].eval(dims)?;
            let n = if *transpose_b {
                b[b.len() - 2]
            } else {
                b[b.len() - 1]
            };
            let rows: u64 = a[..a.len() - 1].iter().product();
            2u64.saturating_mul(rows)
                .saturating_mul(n)
                .saturating_mul(a[a.len() - 1])
        }
        Op::Attention { causal, .. } => {
            let q = inputs[0].eval(dims)?;
            let k = inputs[1].eval(dims)?;
            let v = inputs[2].eval(dims)?;
            let (b, hq, s, d) = (q[0], q[1], q[2], q[3]);
            let (t, dv) = (k[2], v[3]);
            let scores = if *causal {
                visible_causal(s, t)
            } else {
                s.saturating_mul(t)
            };
            2u64.saturating_mul(b)
                .saturating_mul(hq)
                .saturating_mul(d + dv)
                .saturating_mul(scores)
        }
        Op::Add
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
        | Op::Where
        | Op::IsNan => out_numel()?,
        Op::Softmax { .. } => 5u64.saturating_mul(out_numel()?),
        Op::RmsNorm { .. } => 4u64.saturating_mul(out_numel()?),
        Op::LayerNorm { .. } => 7u64.saturating_mul(out_numel()?),
        Op::Rope { .. } => 3u64.saturating_mul(out_numel()?),
        Op::MoeRoute { .. } => 5u64.saturating_mul(inputs[0].numel(dims)?),
        Op::MoeCombine => 2u64.saturating_mul(inputs[0].numel(dims)?),
        Op::Reduce { .. } => inputs[0].numel(dims)?,
        _ => 0,
    })
}

/// Scores a causal (bottom-right aligned) mask leaves visible: query `i` sees keys
/// `j <= i + t - s`.
fn visible_causal(s: u64, t: u64) -> u64 {
    (0..s)
        .map(|i| (i + t).saturating_sub(s).saturating_add(1).min(t))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::visible_causal;

    #[test]
    fn causal_counts_the_lower_triangle() {
        assert_eq!(visible_causal(4, 4), 1 + 2 + 3 + 4);
        // Decoding one token against a cache of 10 sees all 10 keys.
        assert_eq!(visible_causal(1, 10), 10);
        // Two new tokens after 3 cached ones: 4 and 5 keys.
        assert_eq!(visible_causal(2, 5), 4 + 5);
    }
}
