//! Finding the MoE layers DCCA rewrites in a raised graph: each `moe_dispatch`, the
//! expert computation between it and its `moe_combine`, and the widths involved.
//!
//! The expert side must be what the raised graph's MoE blocks are (the zoo's builders
//! and `raise_moe`): expert matmuls that read the dispatched rows (*entries*: one for a
//! GELU expert, gate and up — or one fused gate-up — for SwiGLU), row-wise ops on their
//! results, and one expert matmul whose result is combined (the *exit*). Anything else
//! — a deeper expert, an op that mixes rows, a value used outside the block — is refused
//! naming the layer, never skipped: DCCA changes every expert's widths, so a part of the
//! block it cannot see would be left computing at the old width.

use std::collections::HashSet;

use weft_ir::{DType, Graph, NodeId, Op, ValueId};

/// One MoE layer of the raised graph, as DCCA sees it.
#[derive(Clone, Debug)]
pub(crate) struct MoeLayer {
    /// The name its new weights and nodes are derived from: the dispatch's name without
    /// a trailing `.dispatch` (`layers.0.moe`).
    pub prefix: String,
    pub dispatch: NodeId,
    pub combine: NodeId,
    /// The tokens `[T, h]` the dispatch reads (the router reads them, or its own input,
    /// unchanged).
    pub tokens: ValueId,
    pub hidden: u64,
    pub experts: u64,
    pub dtype: DType,
    /// Expert matmuls reading the dispatched rows, in graph order.
    pub entries: Vec<NodeId>,
    /// The expert matmul whose rows are combined.
    pub exit: NodeId,
    /// Row-wise nodes between the entries and the exit.
    pub interior: Vec<NodeId>,
    /// The inner widths: each entry's output width and the exit's input width (one value
    /// for a GELU or SwiGLU expert; a fused gate-up entry is twice the exit's).
    pub inner: Vec<u64>,
}

impl MoeLayer {
    /// Every expert matmul of the layer: the entries, then the exit.
    pub fn expert_matmuls(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.entries.iter().copied().chain([self.exit])
    }
}

/// A weight's dims `[E, K, M]` as `(K, M)` of the product it takes part in.
fn expert_km(graph: &Graph, node: NodeId) -> Option<(u64, u64)> {
    let n = graph.node(node);
    let Op::ExpertMatMul { transpose_b, .. } = n.op else {
        return None;
    };
    let dims = graph.value(n.inputs[2]).ty.shape.eval(&graph.dims).ok()?;
    match dims.as_slice() {
        [_, k, m] if !transpose_b => Some((*k, *m)),
        [_, m, k] => Some((*k, *m)),
        _ => None,
    }
}

/// The MoE layers of `graph`, in graph order, or why one cannot be rewritten.
pub(crate) fn find(graph: &Graph) -> Result<Vec<MoeLayer>, String> {
    let mut users: Vec<Vec<NodeId>> = vec![Vec::new(); graph.values().len()];
    for (id, n) in graph.nodes() {
        for &v in &n.inputs {
            users[v.index()].push(id);
        }
    }
    let mut layers = Vec::new();
    for (id, node) in graph.nodes() {
        if let Op::MoeDispatch { num_experts } = node.op {
            layers.push(layer(graph, &users, id, num_experts)?);
        }
    }
    Ok(layers)
}

/// The layer of the dispatch `dispatch`.
fn layer(
    graph: &Graph,
    users: &[Vec<NodeId>],
    dispatch: NodeId,
    experts: u64,
) -> Result<MoeLayer, String> {
    let d = graph.node(dispatch);
    let prefix = d
        .name
        .strip_suffix(".dispatch")
        .unwrap_or(&d.name)
        .to_owned();
    let refuse = |why: String| format!("MoE layer `{prefix}`: {why}");
    let (tokens, ids) = (d.inputs[0], d.inputs[1]);
    let (rows, counts) = (d.outputs[0], d.outputs[1]);
    let tokens_ty = &graph.value(tokens).ty;
    let hidden = match tokens_ty.shape.eval(&graph.dims).ok().as_deref() {
        Some([_, h]) => *h,
        _ => {
            return Err(refuse(format!(
                "its tokens have shape {}, not [T, h] with known sizes",
                tokens_ty.shape
            )));
        }
    };

    // Walk forward from the dispatched rows: expert matmuls on these counts and row-wise
    // ops are the expert side; a combine ends it.
    let mut region: Vec<NodeId> = Vec::new();
    let mut seen: HashSet<NodeId> = HashSet::new();
    let mut combines: Vec<NodeId> = Vec::new();
    let mut stack: Vec<ValueId> = vec![rows];
    while let Some(v) = stack.pop() {
        for &u in &users[v.index()] {
            let n = graph.node(u);
            let fits = match n.op {
                Op::ExpertMatMul { .. } => n.inputs[0] == v && n.inputs[1] == counts,
                Op::MoeCombine => n.inputs[0] == v,
                ref op => v != rows && crate::raise_moe::row_wise_between_experts(op),
            };
            if !fits {
                return Err(refuse(format!(
                    "`{}` ({}) uses the expert-side value `{}`, and DCCA rewrites only expert \
                     matmuls, row-wise ops between them and the combine",
                    n.name,
                    n.op.name(),
                    graph.value(v).name
                )));
            }
            if !seen.insert(u) {
                continue;
            }
            if matches!(n.op, Op::MoeCombine) {
                combines.push(u);
            } else {
                region.push(u);
                stack.extend(n.outputs.iter().copied());
            }
        }
    }
    region.sort();
    let combine = match combines.as_slice() {
        [c] => *c,
        [] => return Err(refuse("its experts' rows reach no moe_combine".into())),
        _ => {
            return Err(refuse(
                "its experts' rows reach more than one moe_combine".into(),
            ));
        }
    };
    let c = graph.node(combine);
    if c.inputs[2] != ids {
        return Err(refuse(format!(
            "its combine `{}` reads other expert ids than the dispatch",
            c.name
        )));
    }
    let exit = graph.value(c.inputs[0]).producer;
    if !matches!(graph.node(exit).op, Op::ExpertMatMul { .. }) {
        return Err(refuse(format!(
            "the rows combined come from `{}` ({}), not an expert matmul",
            graph.node(exit).name,
            graph.node(exit).op.name()
        )));
    }
    // Everything the region computes from must be the dispatched rows, values inside it,
    // expert weights (expert matmuls' third input) or scalars.
    let inside: HashSet<ValueId> = region
        .iter()
        .flat_map(|&n| graph.node(n).outputs.iter().copied())
        .chain([rows, counts])
        .collect();
    for &n in &region {
        let node = graph.node(n);
        let outside: Vec<ValueId> = match node.op {
            Op::ExpertMatMul { .. } => Vec::new(),
            _ => node
                .inputs
                .iter()
                .copied()
                .filter(|v| !inside.contains(v))
                .collect(),
        };
        for v in outside {
            if graph.value(v).ty.shape.numel(&graph.dims).ok() != Some(1) {
                return Err(refuse(format!(
                    "`{}` ({}) mixes the expert rows with `{}`, which is not a scalar",
                    node.name,
                    node.op.name(),
                    graph.value(v).name
                )));
            }
        }
    }
    let mut entries = Vec::new();
    let mut interior = Vec::new();
    for &n in &region {
        let node = graph.node(n);
        match node.op {
            Op::ExpertMatMul { .. } if node.inputs[0] == rows => entries.push(n),
            Op::ExpertMatMul { .. } if n == exit => {}
            Op::ExpertMatMul { .. } => {
                return Err(refuse(format!(
                    "`{}` is an expert matmul between the first and the last: DCCA's \
                     reversed expert has two products (three with a gate)",
                    node.name
                )));
            }
            _ => interior.push(n),
        }
    }
    if entries.contains(&exit) {
        return Err(refuse(
            "its experts are a single matmul; DCCA's reversed expert needs an activation \
             between two products"
                .into(),
        ));
    }
    let mut inner = Vec::new();
    for &e in &entries {
        let (k, m) = expert_km(graph, e).ok_or_else(|| {
            refuse(format!(
                "`{}`'s weight has no known [E, K, M] sizes",
                graph.node(e).name
            ))
        })?;
        if k != hidden {
            return Err(refuse(format!(
                "`{}` multiplies width {k}, not the hidden width {hidden}",
                graph.node(e).name
            )));
        }
        inner.push(m);
    }
    let (k, m) = expert_km(graph, exit).ok_or_else(|| {
        refuse(format!(
            "`{}`'s weight has no known [E, K, M] sizes",
            graph.node(exit).name
        ))
    })?;
    if m != hidden {
        return Err(refuse(format!(
            "`{}` returns width {m}, not the hidden width {hidden}",
            graph.node(exit).name
        )));
    }
    inner.push(k);
    // The exit's rows must go to the combine only (a use elsewhere would see width r·h).
    let exit_out = graph.node(exit).outputs[0];
    if users[exit_out.index()].iter().any(|&u| u != combine) || graph.outputs.contains(&exit_out) {
        return Err(refuse(format!(
            "the experts' result `{}` is used besides the combine",
            graph.value(exit_out).name
        )));
    }
    if region
        .iter()
        .flat_map(|&n| graph.node(n).outputs.iter())
        .any(|v| graph.outputs.contains(v))
        || graph.outputs.contains(&rows)
    {
        return Err(refuse("an expert-side value is a graph output".into()));
    }
    Ok(MoeLayer {
        prefix,
        dispatch,
        combine,
        tokens,
        hidden,
        experts,
        dtype: tokens_ty.dtype,
        entries,
        exit,
        interior,
        inner,
    })
}
