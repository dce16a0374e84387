//! The residual stream of a pre-norm transformer, as ladder residual needs it: the
//! chain of adds `r_j = r_{j-1} + y_j`, one per module (attention, MLP or MoE block),
//! and for each module the nodes that compute `y_j` from `r_{j-1}`.
//!
//! Layer segmentation ([`weft_ir::layers`]) says which layer a node is in; ladder needs
//! more: which value is the stream *before* each module, and which reads of it are the
//! module's (its norm's). So the stream is found from its adds directly:
//!
//! 1. A *residual add* is an `add` of two values of its own type (no broadcast) where
//!    one depends on the other: the ancestor is the stream `r_{j-1}`, the other the
//!    module's output `y_j`.
//! 2. Residual adds link into chains (an add whose stream input is another's output);
//!    the stream is the longest chain. A chain that forks (two adds reading one stream
//!    value as their stream input) is refused rather than guessed.
//! 3. A module's nodes are those between `r_{j-1}` and `y_j`: descendants of the one and
//!    ancestors of the other.
//!
//! Every `attention` of the graph must lie in one module of the chain: a post-norm
//! model (whose stream runs through a norm after each add) or a parallel block
//! (attention and MLP reading one norm) has no such chain, and is refused.

use weft_ir::{Graph, NodeId, Op, ValueId};

/// What a module computes, by the ops it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ModuleKind {
    Attention,
    Mlp,
    Moe,
}

impl ModuleKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ModuleKind::Attention => "attention",
            ModuleKind::Mlp => "MLP",
            ModuleKind::Moe => "MoE",
        }
    }
}

/// One module `r_j = r_{j-1} + y_j` of the stream.
#[derive(Clone, Debug)]
pub(crate) struct Module {
    /// `r_{j-1}`.
    pub stream_in: ValueId,
    /// The nodes computing `y_j` from `r_{j-1}` (the add left out), in arena order.
    pub nodes: Vec<NodeId>,
    pub kind: ModuleKind,
}

/// Per node, the nodes reading its outputs.
fn consumers(graph: &Graph) -> Vec<Vec<NodeId>> {
    let mut out = vec![Vec::new(); graph.num_nodes()];
    for (id, node) in graph.nodes() {
        for &v in &node.inputs {
            let p = graph.value(v).producer.index();
            if out[p].last() != Some(&id) {
                out[p].push(id);
            }
        }
    }
    out
}

/// The ancestors of `from` (itself included) whose arena index is at least `floor`:
/// nodes are in topological arena order, so nothing before `floor` can lead back up.
fn ancestors_above(graph: &Graph, from: NodeId, floor: usize) -> Vec<bool> {
    let mut seen = vec![false; graph.num_nodes()];
    let mut stack = vec![from];
    seen[from.index()] = true;
    while let Some(n) = stack.pop() {
        for &v in &graph.node(n).inputs {
            let p = graph.value(v).producer;
            if p.index() >= floor && !seen[p.index()] {
                seen[p.index()] = true;
                stack.push(p);
            }
        }
    }
    seen
}

/// The descendants of `from` (itself included) up to arena index `ceiling`.
fn descendants_below(consumers: &[Vec<NodeId>], from: NodeId, ceiling: usize) -> Vec<bool> {
    let mut seen = vec![false; consumers.len()];
    let mut stack = vec![from];
    seen[from.index()] = true;
    while let Some(n) = stack.pop() {
        for &c in &consumers[n.index()] {
            if c.index() <= ceiling && !seen[c.index()] {
                seen[c.index()] = true;
                stack.push(c);
            }
        }
    }
    seen
}

/// A residual add: (stream input, module output, add's output).
struct Candidate {
    node: NodeId,
    stream_in: ValueId,
    branch: ValueId,
    out: ValueId,
}

fn candidates(graph: &Graph) -> Vec<Candidate> {
    let mut found = Vec::new();
    for (id, node) in graph.nodes() {
        if !matches!(node.op, Op::Add) || node.inputs.len() != 2 || node.outputs.len() != 1 {
            continue;
        }
        let (a, b, out) = (node.inputs[0], node.inputs[1], node.outputs[0]);
        let ty = &graph.value(out).ty;
        if a == b || &graph.value(a).ty != ty || &graph.value(b).ty != ty {
            continue;
        }
        let (pa, pb) = (graph.value(a).producer, graph.value(b).producer);
        // The later-produced value may depend on the earlier one, never the reverse.
        let (early, late) = if pa.index() <= pb.index() {
            (a, b)
        } else {
            (b, a)
        };
        let (pe, pl) = (graph.value(early).producer, graph.value(late).producer);
        if pe == pl {
            continue;
        }
        if ancestors_above(graph, pl, pe.index())[pe.index()] {
            found.push(Candidate {
                node: id,
                stream_in: early,
                branch: late,
                out,
            });
        }
    }
    found
}

/// The residual stream's modules, in order; `Err` says why the graph has none that
/// ladder residual can use.
pub(crate) fn residual_modules(graph: &Graph) -> Result<Vec<Module>, String> {
    let cands = candidates(graph);
    if cands.is_empty() {
        return Err(
            "it has no residual stream (no `add` of a value and something computed \
                    from it)"
                .into(),
        );
    }
    // Chains: next[c] = the candidate whose stream input is c's output.
    let mut by_stream_in: std::collections::HashMap<ValueId, Vec<usize>> = Default::default();
    for (i, c) in cands.iter().enumerate() {
        by_stream_in.entry(c.stream_in).or_default().push(i);
    }
    let outputs: std::collections::HashSet<ValueId> = cands.iter().map(|c| c.out).collect();
    let mut best: Vec<usize> = Vec::new();
    for (start, c) in cands.iter().enumerate() {
        if outputs.contains(&c.stream_in) {
            continue; // not the start of a chain
        }
        let mut chain = vec![start];
        let mut at = start;
        loop {
            match by_stream_in.get(&cands[at].out).map(Vec::as_slice) {
                None | Some([]) => break,
                Some([next]) => {
                    chain.push(*next);
                    at = *next;
                }
                Some(many) => {
                    return Err(format!(
                        "its residual stream forks at `{}`: {} residual adds read it",
                        graph.value(cands[at].out).name,
                        many.len()
                    ));
                }
            }
        }
        if chain.len() > best.len() {
            best = chain;
        }
    }
    let cons = consumers(graph);
    let mut modules = Vec::with_capacity(best.len());
    let mut covered = vec![false; graph.num_nodes()];
    for &i in &best {
        let c = &cands[i];
        let from = graph.value(c.stream_in).producer;
        let to = graph.value(c.branch).producer;
        let down = descendants_below(&cons, from, to.index());
        let up = ancestors_above(graph, to, from.index());
        let nodes: Vec<NodeId> = (from.index() + 1..=to.index())
            .filter(|&n| down[n] && up[n])
            .map(NodeId::from_index)
            .filter(|&n| n != c.node)
            .collect();
        let has = |f: &dyn Fn(&Op) -> bool| nodes.iter().any(|&n| f(&graph.node(n).op));
        let moe = has(&|op| matches!(op, Op::MoeRoute { .. } | Op::MoeDispatch { .. }));
        let attention = has(&|op| matches!(op, Op::Attention { .. }))
            || (!moe && has(&|op| matches!(op, Op::Softmax { .. })));
        let kind = match (attention, moe) {
            (true, true) => {
                return Err(format!(
                    "the module ending at `{}` holds both an attention and a MoE block",
                    graph.value(c.out).name
                ));
            }
            (true, false) => ModuleKind::Attention,
            (false, true) => ModuleKind::Moe,
            (false, false) => ModuleKind::Mlp,
        };
        for &n in &nodes {
            covered[n.index()] = true;
        }
        modules.push(Module {
            stream_in: c.stream_in,
            nodes,
            kind,
        });
    }
    if let Some((_, n)) = graph
        .nodes()
        .find(|(id, n)| matches!(n.op, Op::Attention { .. }) && !covered[id.index()])
    {
        return Err(format!(
            "the attention `{}` is not inside a module of one pre-norm residual stream \
             (`r = r + module(norm(r))`); post-norm and parallel-block models are not \
             ladder-shaped",
            n.name
        ));
    }
    Ok(modules)
}
