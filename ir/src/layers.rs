//! Layer segmentation: which transformer layer each node belongs to, so that plans,
//! reports and passes can say "layer 17".
//!
//! A transformer's residual stream is the chain of values every path to the outputs
//! passes through: the residual adds (and, post-norm, the norms after them). In graph
//! terms these are post-dominators. The method:
//!
//! 1. A petgraph view of the graph's computing nodes (every op but inputs, weights and
//!    constants) with a virtual entry before the nodes that read a graph input or no
//!    computed value, and a virtual exit after the outputs and after every node nothing
//!    consumes.
//! 2. Post-dominators: `petgraph::algo::dominators` on the reversed view, rooted at the
//!    exit.
//! 3. The *spine*: the post-dominator chain of the start of the stream. Shared side inputs
//!    (a rotary cache or an attention mask read by every layer) join the stream only near
//!    the end, so the chain from the virtual entry can skip most layers, and the chain
//!    from the first norm runs through the first attention's value path. The start is
//!    the candidate (the first attention's ancestors and the entry, whose chain holds no
//!    attention) that puts the most attentions in segments of their own, the earliest on
//!    ties: the embedding, in a whole model; the entry, for a graph that starts at a
//!    layer's input.
//! 4. Segments: a node belongs to the segment of the latest spine node among its strict
//!    ancestors (a spine node to its predecessor's). A layer starts at the segment holding
//!    its attention; it runs to the next layer's, and the last layer spans as many
//!    segments as the one before it (a lone layer, through the last residual join:
//!    a spine node merging two values computed from the stream). Segments before the
//!    first layer (the embedding) and after the last (the head) belong to no layer.
//!
//! 5. Where single nodes do not separate the layers (a program whose residual adds read
//!    values from two layers back, as the former tree extraction's re-summed residuals
//!    did, merges layers on the spine), the count is the most attentions on one path, and
//!    a node's layer follows from the attentions before it: a node that runs into an
//!    attention before any residual join is that attention's layer; any other node after
//!    `k + 1` attentions is layer `k`, the head (past the last residual join) none.
//!
//! Attention is an `attention` op or, in graphs that spell it out (ONNX GPT-2, BERT), a
//! softmax between two products of computed values (`Q·Kᵀ` in, `·V` out), which a MoE
//! router's softmax (over `x·W`) is not. Everything is linear in the graph's size except
//! petgraph's dominator iteration (Cooper, Harvey and Kennedy), which converges in a few
//! passes over a DAG in reverse post-order.

use petgraph::algo::dominators::simple_fast;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::Reversed;

use crate::graph::{Graph, NodeId};
use crate::occupancy::Occupancy;
use crate::op::{Op, OpClass};

/// The layer of every node of a graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layers {
    /// Per node (by arena index): its layer, `None` for the embedding, the head, sources
    /// and side computations shared by all layers (a rotary cache).
    of_node: Vec<Option<u32>>,
    count: u32,
}

impl Layers {
    /// The layer of node `id`; `None` outside every layer (or for an id not in the graph).
    pub fn of(&self, id: NodeId) -> Option<u32> {
        self.of_node.get(id.index()).copied().flatten()
    }

    /// How many layers the graph has (0 when it has no attention).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The nodes of layer `layer`, in arena (execution) order.
    pub fn nodes_of(&self, layer: u32) -> impl Iterator<Item = NodeId> + '_ {
        self.of_node
            .iter()
            .enumerate()
            .filter(move |(_, l)| **l == Some(layer))
            .map(|(i, _)| NodeId::from_index(i))
    }
}

/// Segments `graph` into layers (see the module documentation). Never fails: a graph
/// without attention has 0 layers and every node is `None`.
pub fn segment_layers(graph: &Graph) -> Layers {
    let n = graph.num_nodes();
    let nodes: Vec<&Op> = graph.nodes().map(|(_, node)| &node.op).collect();
    let computes = |i: usize| !matches!(nodes[i].occupancy(), Occupancy::Source);
    // The producing nodes of each node's inputs that compute (sources left out).
    let producers: Vec<Vec<usize>> = graph
        .nodes()
        .map(|(_, node)| {
            let mut p: Vec<usize> = node
                .inputs
                .iter()
                .map(|&v| graph.value(v).producer.index())
                .filter(|&p| computes(p))
                .collect();
            p.sort_unstable();
            p.dedup();
            p
        })
        .collect();
    // Nodes the entry leads to: those reading no computed value, and those reading a
    // graph input (a layer's input feeds its norm and, past it, its residual add).
    let rooted: Vec<bool> = graph
        .nodes()
        .map(|(id, node)| {
            computes(id.index())
                && (producers[id.index()].is_empty()
                    || node.inputs.iter().any(|&v| {
                        matches!(nodes[graph.value(v).producer.index()], Op::Input { .. })
                    }))
        })
        .collect();
    let none = Layers {
        of_node: vec![None; n],
        count: 0,
    };
    let markers = attention_markers(graph, &nodes, &producers);
    let Some(&first) = markers.first() else {
        return none;
    };

    // 1. The view: node i is petgraph node i; the entry is n, the exit n + 1.
    let (entry, exit) = (n, n + 1);
    let mut view = DiGraph::<(), ()>::with_capacity(n + 2, n * 2);
    for _ in 0..n + 2 {
        view.add_node(());
    }
    let ix = NodeIndex::new;
    let mut consumed = vec![false; n];
    for i in (0..n).filter(|&i| computes(i)) {
        if rooted[i] {
            view.add_edge(ix(entry), ix(i), ());
        }
        for &p in &producers[i] {
            view.add_edge(ix(p), ix(i), ());
            consumed[p] = true;
        }
    }
    for &v in &graph.outputs {
        let p = graph.value(v).producer.index();
        if computes(p) {
            view.add_edge(ix(p), ix(exit), ());
            consumed[p] = true;
        }
    }
    for i in (0..n).filter(|&i| computes(i) && !consumed[i]) {
        view.add_edge(ix(i), ix(exit), ());
    }

    // 2. Post-dominators; each node's immediate one comes later in arena order (or is the
    // exit), so depths and "an attention on the chain" fill in reverse order.
    let pdom = simple_fast(Reversed(&view), ix(exit));
    let ipdom = |i: usize| pdom.immediate_dominator(ix(i)).map(NodeIndex::index);
    let is_marker = {
        let mut m = vec![false; n + 2];
        for &i in &markers {
            m[i] = true;
        }
        m
    };
    let mut marked = vec![false; n + 2];
    for i in (0..n).rev().filter(|&i| computes(i)).chain([entry]) {
        if let Some(d) = ipdom(i) {
            marked[i] = is_marker[i] || marked[d];
        }
    }

    // 3. The spine's start: among the first attention's ancestors (the entry included)
    // whose chain holds no attention, the one that separates the most attentions into
    // segments of their own; on ties the earliest (an ancestor before its descendants:
    // the embedding before the first norm, whose chain runs through the first
    // attention's value path).
    let mut ancestor = vec![false; n];
    let mut stack = vec![first];
    while let Some(i) = stack.pop() {
        for &p in &producers[i] {
            if !ancestor[p] {
                ancestor[p] = true;
                stack.push(p);
            }
        }
    }
    let cx = Cx {
        n,
        entry,
        exit,
        ops: &nodes,
        producers: &producers,
        rooted: &rooted,
        computes: &computes,
    };
    let (spine, segment, starts) = std::iter::once(entry)
        .chain((0..n).filter(|&i| ancestor[i]))
        .filter(|&i| !marked[i] && ipdom(i).is_some())
        .map(|start| {
            let (spine, segment) = cx.segments(start, &ipdom);
            let starts = layer_starts(&markers, &segment);
            (spine, segment, starts)
        })
        .reduce(|best, next| {
            if next.2.len() > best.2.len() {
                next
            } else {
                best
            }
        })
        .unwrap_or_default();
    // Layers no single node separates (residuals that read values from two layers back)
    // merge on the spine; counting attentions along paths still separates them.
    let depth = attention_depth(&cx, &is_marker);
    let deepest = depth.iter().copied().max().unwrap_or(0);
    if deepest as usize > starts.len() {
        return by_attention_depth(&cx, &is_marker, &depth, deepest, &ipdom);
    }
    let Some(&last) = starts.last() else {
        return none;
    };
    let segments = spine.len() as u32;
    let end = match starts.len() {
        1 => last_join(&spine, &producers, &segment)
            .filter(|&s| s >= last)
            .map_or(last + 1, |s| s + 1),
        k => last + (last - starts[k - 2]),
    }
    .min(segments.max(last + 1));
    let mut layer_of_segment = vec![None; end as usize];
    for (layer, pair) in starts.iter().enumerate() {
        let next = starts.get(layer + 1).copied().unwrap_or(end);
        for s in *pair..next {
            layer_of_segment[s as usize] = Some(layer as u32);
        }
    }
    let of_node = segment
        .iter()
        .map(|s| s.and_then(|s| layer_of_segment.get(s as usize).copied().flatten()))
        .collect();
    Layers {
        of_node,
        count: starts.len() as u32,
    }
}

/// What the spine and segment computation needs of the view.
struct Cx<'a> {
    n: usize,
    entry: usize,
    exit: usize,
    ops: &'a [&'a Op],
    producers: &'a [Vec<usize>],
    rooted: &'a [bool],
    computes: &'a dyn Fn(usize) -> bool,
}

impl Cx<'_> {
    /// The spine from `start` (its post-dominator chain, exit left out) and each node's
    /// segment: the spine index of the latest spine node among its strict ancestors.
    fn segments(
        &self,
        start: usize,
        ipdom: &dyn Fn(usize) -> Option<usize>,
    ) -> (Vec<usize>, Vec<Option<u32>>) {
        let mut spine_index = vec![None::<u32>; self.n + 2];
        let mut spine = Vec::new();
        let mut at = Some(start);
        while let Some(i) = at.filter(|&i| i != self.exit) {
            spine_index[i] = Some(spine.len() as u32);
            spine.push(i);
            at = ipdom(i);
        }
        let mut segment = vec![None::<u32>; self.n];
        for i in (0..self.n).filter(|&i| (self.computes)(i)) {
            let from_entry = spine_index[self.entry].filter(|_| self.rooted[i]);
            segment[i] = self.producers[i]
                .iter()
                .map(|&p| spine_index[p].or(segment[p]))
                .chain([from_entry])
                .max()
                .flatten();
        }
        (spine, segment)
    }
}

/// Per node, the most attentions on one path from the entry to it, itself included: an
/// attention's is its layer plus one (token-split halves of one layer share it).
fn attention_depth(cx: &Cx<'_>, is_marker: &[bool]) -> Vec<u32> {
    let mut depth = vec![0u32; cx.n];
    for i in (0..cx.n).filter(|&i| (cx.computes)(i)) {
        let before = cx.producers[i].iter().map(|&p| depth[p]).max().unwrap_or(0);
        depth[i] = before + u32::from(is_marker[i]);
    }
    depth
}

/// Layers by attention depth, for graphs whose layers no single node separates: a node
/// every path from which runs into an attention before any residual join (the norm and
/// projections before it) is that attention's layer; any other node after `k + 1` attentions is layer `k`, except
/// what follows the last layer's last residual join (the head); nodes before the first
/// attention are in none.
fn by_attention_depth(
    cx: &Cx<'_>,
    is_marker: &[bool],
    depth: &[u32],
    count: u32,
    ipdom: &dyn Fn(usize) -> Option<usize>,
) -> Layers {
    // A join adds up values computed after an attention (a residual add, or an
    // element-wise kernel fusing one); a concat of token-split halves is not one.
    let join = |i: usize| {
        cx.ops[i].class() == OpClass::Elementwise
            && cx.producers[i].iter().filter(|&&p| depth[p] >= 1).count() >= 2
    };
    // The attention each node's post-dominator chain runs into before any join (the
    // chain runs forward in arena order, so it fills in reverse); a join is a residual,
    // the end of a layer, never the start of the next.
    let mut nearest = vec![None::<usize>; cx.n + 2];
    for i in (0..cx.n).rev().filter(|&i| (cx.computes)(i)) {
        nearest[i] = if is_marker[i] {
            Some(i)
        } else if join(i) {
            None
        } else {
            ipdom(i).and_then(|d| nearest[d])
        };
    }
    let last_join = (0..cx.n).rev().find(|&i| depth[i] == count && join(i));
    let mut after_join = vec![false; cx.n];
    let mut of_node = vec![None; cx.n];
    for i in (0..cx.n).filter(|&i| (cx.computes)(i)) {
        after_join[i] = cx.producers[i]
            .iter()
            .any(|&p| Some(p) == last_join || after_join[p]);
        of_node[i] = match nearest[i] {
            Some(m) => Some(depth[m] - 1),
            None if depth[i] == 0 || (depth[i] == count && after_join[i]) => None,
            None => Some(depth[i] - 1),
        };
    }
    Layers { of_node, count }
}

/// The distinct segments the attentions fall in, in order: where each layer starts.
fn layer_starts(markers: &[usize], segment: &[Option<u32>]) -> Vec<u32> {
    let mut starts: Vec<u32> = markers.iter().filter_map(|&m| segment[m]).collect();
    starts.sort_unstable();
    starts.dedup();
    starts
}

/// The segment of the last spine node that merges two values computed from the stream
/// (a residual add), if any.
fn last_join(spine: &[usize], producers: &[Vec<usize>], segment: &[Option<u32>]) -> Option<u32> {
    spine
        .iter()
        .filter(|&&s| s < producers.len())
        .filter(|&&s| {
            producers[s]
                .iter()
                .filter(|&&p| p == spine[0] || segment[p].is_some())
                .count()
                >= 2
        })
        .filter_map(|&s| segment[s])
        .max()
}

/// The nodes that mark a layer, in arena order: `attention` ops, or where there are
/// none, softmaxes of attention spelled out (see the module documentation).
fn attention_markers(graph: &Graph, nodes: &[&Op], producers: &[Vec<usize>]) -> Vec<usize> {
    let fused: Vec<usize> = (0..nodes.len())
        .filter(|&i| matches!(nodes[i], Op::Attention { .. }))
        .collect();
    if !fused.is_empty() {
        return fused;
    }
    // Values computed from a graph input (not from weights and constants alone).
    let mut live = vec![false; nodes.len()];
    for (id, node) in graph.nodes() {
        let i = id.index();
        live[i] = matches!(nodes[i], Op::Input { .. } | Op::Recv { .. })
            || node
                .inputs
                .iter()
                .any(|&v| live[graph.value(v).producer.index()]);
    }
    let mut consumers = vec![Vec::new(); nodes.len()];
    for (i, ps) in producers.iter().enumerate() {
        for &p in ps {
            consumers[p].push(i);
        }
    }
    // A product of two computed values, reached through at most a few element-wise or
    // layout steps (scale, mask, reshape, transpose).
    let product_of_live = |i: usize| {
        matches!(nodes[i], Op::MatMul { .. })
            && producers[i].len() == 2
            && producers[i].iter().all(|&p| live[p])
    };
    let near = |from: usize, next: &dyn Fn(usize) -> Vec<usize>| {
        let mut frontier = vec![from];
        for _ in 0..4 {
            let mut more = Vec::new();
            for &i in &frontier {
                for j in next(i) {
                    if product_of_live(j) {
                        return true;
                    }
                    if passes_through(nodes[j]) {
                        more.push(j);
                    }
                }
            }
            frontier = more;
        }
        false
    };
    (0..nodes.len())
        .filter(|&i| matches!(nodes[i], Op::Softmax { .. }))
        .filter(|&i| near(i, &|j| producers[j].clone()) && near(i, &|j| consumers[j].clone()))
        .collect()
}

/// Ops that may sit between attention's products and its softmax: scaling, masking,
/// casts and layout changes.
fn passes_through(op: &Op) -> bool {
    matches!(
        op,
        Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Where
            | Op::Cast { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Expand { .. }
            | Op::Slice { .. }
    )
}
