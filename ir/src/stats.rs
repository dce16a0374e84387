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

/// A figure of `weft check`: exact in 128 bits, or `None` where even that cannot hold it
/// (reported as "not representable", never wrapped or saturated).
pub type Figure = Option<u128>;

/// What `weft check` reports about a graph.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GraphStats {
    /// Number of nodes by op name.
    pub ops: BTreeMap<&'static str, u64>,
    /// Elements of all `weight` nodes.
    pub params: Figure,
    /// Bytes of all `weight` nodes in their dtypes.
    pub param_bytes: Figure,
    /// FLOPs of one forward pass under the graph's dim bindings.
    pub flops: Figure,
    /// FLOPs split by op family.
    pub flops_by_class: BTreeMap<&'static str, Figure>,
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

fn add(total: Figure, x: Figure) -> Figure {
    total?.checked_add(x?)
}

/// Summarises a verified graph. Fails only when a shape mentions an unbound symbol,
/// which the verifier already rejects; a figure too large for 128 bits is `None`.
pub fn stats(graph: &Graph) -> Result<GraphStats, DimError> {
    let mut s = GraphStats {
        params: Some(0),
        param_bytes: Some(0),
        flops: Some(0),
        ..GraphStats::default()
    };
    for (_, node) in graph.nodes() {
        *s.ops.entry(node.op.name()).or_default() += 1;
        if let Op::Weight { dtype, shape, .. } = &node.op {
            let n = numel(shape, &graph.dims)?;
            s.params = add(s.params, n);
            s.param_bytes = add(
                s.param_bytes,
                n.and_then(|n| n.checked_mul(u128::from(dtype.size_bytes()))),
            );
        }
        let inputs: Vec<&Shape> = node
            .inputs
            .iter()
            .map(|&v| &graph.value(v).ty.shape)
            .collect();
        let output = node.outputs.first().map(|&v| &graph.value(v).ty.shape);
        let f = match node_flops(&node.op, &inputs, output, &graph.dims) {
            Ok(f) => Some(f),
            Err(DimError::Overflow(_)) => None,
            Err(e) => return Err(e),
        };
        if f != Some(0) {
            s.flops = add(s.flops, f);
            let class = s
                .flops_by_class
                .entry(class_name(node.op.class()))
                .or_insert(Some(0));
            *class = add(*class, f);
        }
    }
    Ok(s)
}

/// Elements of `shape` in 128 bits (`None` past that); dims themselves are `u64`.
fn numel(shape: &Shape, dims: &DimBindings) -> Result<Figure, DimError> {
    Ok(shape
        .eval(dims)?
        .into_iter()
        .try_fold(1u128, |acc, d| acc.checked_mul(u128::from(d))))
}

/// The product of `factors` in 128 bits, or [`DimError::Overflow`].
fn product(what: &str, factors: &[u128]) -> Result<u128, DimError> {
    factors
        .iter()
        .try_fold(1u128, |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| DimError::Overflow(format!("the FLOP count of `{what}` (even in 128 bits)")))
}

/// FLOPs of one op given its input shapes and (first) output shape, exact in 128 bits;
/// [`DimError::Overflow`] when the count does not fit even there. Closed forms only: the
/// time taken does not depend on the dims' values.
pub fn node_flops(
    op: &Op,
    inputs: &[&Shape],
    output: Option<&Shape>,
    dims: &DimBindings,
) -> Result<u128, DimError> {
    let name = op.name();
    let too_big = || DimError::Overflow(format!("the FLOP count of `{name}` (even in 128 bits)"));
    let out_numel = || -> Result<u128, DimError> {
        match output {
            Some(s) => numel(s, dims)?.ok_or_else(too_big),
            None => Ok(0),
        }
    };
    let in_numel = |i: usize| numel(inputs[i], dims)?.ok_or_else(too_big);
    let last = |s: &Shape| -> Result<u128, DimError> {
        s.dims()
            .last()
            .map_or(Ok(1), |d| d.eval(dims).map(u128::from))
    };
    let per_element = |k: u128| product(name, &[k, out_numel()?]);
    Ok(match op {
        Op::MatMul { transpose_a, .. } => {
            // output is [.., m, n]; the contracted dim comes from a.
            let a = inputs[0].eval(dims)?;
            let k = if *transpose_a {
                a[a.len() - 2]
            } else {
                a[a.len() - 1]
            };
            product(name, &[2, out_numel()?, u128::from(k)])?
        }
        // The GEMM, plus the norm's arithmetic on every element of `x` (as the ops count it).
        Op::NormMatMul { norm, .. } => {
            let gemm = product(name, &[2, out_numel()?, last(inputs[0])?])?;
            let per = match norm {
                crate::NormKind::RmsNorm => 4,
                crate::NormKind::LayerNorm => 7,
            };
            gemm.checked_add(product(name, &[per, in_numel(0)?])?)
                .ok_or_else(too_big)?
        }
        Op::ExpertMatMul { .. } | Op::AllGatherMatMul { .. } => {
            product(name, &[2, out_numel()?, last(inputs[0])?])?
        }
        // The producing GEMM (if any), then one op per element per step.
        Op::FusedElementwise { steps } => {
            let n = out_numel()?;
            let gemm = match steps.first() {
                Some(crate::FusedStep::Matmul { .. }) => product(name, &[2, n, last(inputs[0])?])?,
                _ => 0,
            };
            let rest = steps
                .iter()
                .filter(|s| !matches!(s, crate::FusedStep::Matmul { .. }))
                .count() as u128;
            gemm.checked_add(product(name, &[rest, n])?)
                .ok_or_else(too_big)?
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
            let mut factors: Vec<u128> = a.iter().map(|&d| u128::from(d)).collect();
            factors.extend([2, u128::from(n)]);
            product(name, &factors)?
        }
        Op::Attention { causal, .. } => {
            let q = inputs[0].eval(dims)?;
            let k = inputs[1].eval(dims)?;
            let v = inputs[2].eval(dims)?;
            let (b, hq, s, d) = (q[0], q[1], q[2], q[3]);
            let (t, dv) = (k[2], v[3]);
            let scores = if *causal {
                visible_causal(s, t).ok_or_else(too_big)?
            } else {
                u128::from(s) * u128::from(t)
            };
            let width = u128::from(d) + u128::from(dv);
            product(name, &[2, u128::from(b), u128::from(hq), width, scores])?
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
        Op::Softmax { .. } => per_element(5)?,
        Op::RmsNorm { .. } => per_element(4)?,
        // On this device's shard (the residual's elements): the add, then the norm's 4.
        Op::ReduceScatterAddNormAllGather { .. } => product(name, &[5, in_numel(1)?])?,
        Op::LayerNorm { .. } => per_element(7)?,
        Op::Rope { .. } => per_element(3)?,
        Op::MoeRoute { .. } => product(name, &[5, in_numel(0)?])?,
        Op::MoeCombine => product(name, &[2, in_numel(0)?])?,
        Op::Reduce { .. } => in_numel(0)?,
        // Sources, layout and data movement, routing bookkeeping and communication: no
        // arithmetic (communication is reported by the comm report).
        Op::Input { .. }
        | Op::Weight { .. }
        | Op::Constant { .. }
        | Op::RopeCache { .. }
        | Op::MoeRegroup
        | Op::Gather { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Slice { .. }
        | Op::Cast { .. }
        | Op::TopK { .. }
        | Op::Expand { .. }
        | Op::MoeDispatch { .. }
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
        | Op::ShardedGather { .. } => 0,
    })
}

/// Scores a causal (bottom-right aligned) mask leaves visible: query `i` of `s` sees keys
/// `j <= i + t - s`, and at least one key (`min(t, max(1, i + t - s + 1))`), in closed
/// form so the time does not grow with the sequence. `None` past 128 bits.
///
/// With `t >= 1` the counts are `max(1, j)` for `j` from `a = t - s + 1` to `t`: an
/// arithmetic series from `a` when `a >= 1`, otherwise `2 - a` ones (for `j <= 1`) plus
/// `2 + 3 + … + t`.
fn visible_causal(s: u64, t: u64) -> Option<u128> {
    if s == 0 || t == 0 {
        return Some(0);
    }
    let (s, t) = (i128::from(s), i128::from(t));
    let a = t - s + 1;
    let sum = if a >= 1 {
        // (a + t)(t - a + 1) / 2, halving whichever factor is even (their sum is odd).
        let (x, y) = (a + t, t - a + 1);
        if x % 2 == 0 {
            (x / 2).checked_mul(y)?
        } else {
            x.checked_mul(y / 2)?
        }
    } else {
        let tail = if t % 2 == 0 {
            (t / 2).checked_mul(t + 1)?
        } else {
            t.checked_mul((t + 1) / 2)?
        };
        (2 - a).checked_add(tail - 1)?
    };
    u128::try_from(sum).ok()
}

#[cfg(test)]
mod tests {
    use super::visible_causal;
    use proptest::prelude::*;

    /// The definition, one query at a time (what the closed form replaced).
    fn visible_by_loop(s: u64, t: u64) -> u128 {
        (0..s)
            .map(|i| u128::from((i + t).saturating_sub(s).saturating_add(1).min(t)))
            .sum()
    }

    #[test]
    fn causal_counts_the_lower_triangle() {
        assert_eq!(visible_causal(4, 4), Some(1 + 2 + 3 + 4));
        // Decoding one token against a cache of 10 sees all 10 keys.
        assert_eq!(visible_causal(1, 10), Some(10));
        // Two new tokens after 3 cached ones: 4 and 5 keys.
        assert_eq!(visible_causal(2, 5), Some(4 + 5));
        // More queries than keys: the first ones still see one key each.
        assert_eq!(visible_causal(5, 2), Some(1 + 1 + 1 + 1 + 2));
        assert_eq!(visible_causal(0, 7), Some(0));
        assert_eq!(visible_causal(7, 0), Some(0));
    }

    #[test]
    fn causal_count_is_exact_for_huge_sequences() {
        // 99,999,999,999 tokens: n(n+1)/2 exceeds u64 but is exact in u128, and instant.
        let n = 99_999_999_999u64;
        let want = u128::from(n) * u128::from(n + 1) / 2;
        assert_eq!(visible_causal(n, n), Some(want));
        let m = u64::MAX;
        assert_eq!(
            visible_causal(m, m),
            Some(u128::from(m) * (u128::from(m) + 1) / 2)
        );
        assert_eq!(visible_causal(m, 1), Some(u128::from(m)));
    }

    #[test]
    fn flops_past_128_bits_are_none_not_wrapped() {
        use crate::{DType, Dim, Graph, Op, Shape};
        let mut g = Graph::new("huge");
        g.dims.insert("s".into(), 1 << 62);
        let qkv: Vec<_> = ["q", "k", "v"]
            .iter()
            .map(|n| {
                let shape =
                    Shape::new([Dim::Fixed(1), Dim::Fixed(4), Dim::sym("s"), Dim::Fixed(16)]);
                let op = Op::Input {
                    dtype: DType::F32,
                    shape,
                };
                g.add(*n, op, &[]).unwrap()
            })
            .collect();
        let op = Op::Attention {
            causal: true,
            scale: None,
        };
        let out = g.add("attn", op, &qkv).unwrap();
        g.outputs.push(out);
        // 2 · 4 heads · 32 · (2^62 (2^62 + 1) / 2) > 2^128.
        let s = super::stats(&g).unwrap();
        assert_eq!(s.flops, None);
        assert_eq!(s.flops_by_class["attention"], None);
        assert_eq!(s.params, Some(0));
    }

    proptest! {
        #[test]
        fn closed_form_equals_the_loop(s in 0u64..300, t in 0u64..300) {
            prop_assert_eq!(visible_causal(s, t), Some(visible_by_loop(s, t)));
        }
    }
}
