//! Raising the mixture-of-experts block that PyTorch exports for
//! `experts_implementation="batched_mm"`: route with `softmax` → `top_k` → renormalise,
//! repeat each token `k` times, gather each copy's expert weights and multiply
//! (`gather` + batched `matmul`), weight the copies and sum them per token. It becomes
//! `moe_route` → `moe_dispatch` → `expert_matmul` (×2, with the row-wise activation in
//! between kept as it is) → `moe_combine`, which later passes can shard over experts.
//!
//! Rows between the two expert products are processed one by one (split, activation,
//! gating), so dispatch order can replace copy order there; the matcher checks that every
//! node on that path is row-wise before it raises anything.

use std::collections::HashSet;

use weft_ir::{Graph, NodeId, Op, ReduceKind, ValueId};

use crate::rebuild::{Fate, NewNode, Ref};

/// One raised MoE block.
#[derive(Debug)]
pub struct MoeBlock {
    topk: NodeId,
    logits: ValueId,
    k: u64,
    experts: u64,
    tokens: ValueId,
    ids: ValueId,
    weights: ValueId,
    first: NodeId,
    w1: ValueId,
    second: NodeId,
    act: ValueId,
    w2: ValueId,
    root: NodeId,
    y: ValueId,
    pub absorbed: Vec<NodeId>,
}

/// Whether `op` computes each output row from the same row of its inputs only: the ops an
/// expert's activation may use between its two products (activations, gating arithmetic,
/// a split of the fused gate-up along the last axis). `model_change::dcca` relies on the
/// same list to find what lies between an MoE layer's expert products.
pub(crate) fn row_wise_between_experts(op: &Op) -> bool {
    match op {
        Op::Split { axis, .. } => *axis == 1 || *axis == -1,
        Op::Silu
        | Op::Gelu { .. }
        | Op::Relu
        | Op::Sigmoid
        | Op::Tanh
        | Op::Neg
        | Op::Exp
        | Op::Mul
        | Op::Add
        | Op::Sub
        | Op::Div => true,
        _ => false,
    }
}

impl MoeBlock {
    /// Every node the block absorbs or replaces.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.absorbed
            .iter()
            .copied()
            .chain([self.topk, self.first, self.second, self.root])
    }
}

struct Finder<'g> {
    g: &'g Graph,
    users: Vec<Vec<NodeId>>,
}

impl<'g> Finder<'g> {
    fn producer(&self, v: ValueId) -> (NodeId, &'g weft_ir::Node) {
        let id = self.g.value(v).producer;
        (id, self.g.node(id))
    }

    fn dims(&self, v: ValueId) -> Option<Vec<u64>> {
        self.g.value(v).ty.shape.eval(&self.g.dims).ok()
    }

    /// Follows reshapes back from `v`; returns the first non-reshape value and the nodes passed.
    fn unreshape(&self, mut v: ValueId, passed: &mut Vec<NodeId>) -> ValueId {
        loop {
            let (id, node) = self.producer(v);
            if !matches!(node.op, Op::Reshape { .. }) {
                return v;
            }
            passed.push(id);
            v = node.inputs[0];
        }
    }

    /// `gather(reshape*(w [E, M, K]), reshape*(ids))` on axis 0 → `(w, ids)`.
    fn expert_weights(&self, v: ValueId, seen: &mut Vec<NodeId>) -> Option<(ValueId, ValueId)> {
        let (gid, gather) = self.producer(v);
        if gather.op != (Op::Gather { axis: 0 }) {
            return None;
        }
        seen.push(gid);
        let w = self.unreshape(gather.inputs[0], seen);
        // Reshapes of the weight must not change it.
        if self.dims(w)? != self.dims(gather.inputs[0])? || self.dims(w)?.len() != 3 {
            return None;
        }
        let ids = self.unreshape(gather.inputs[1], seen);
        Some((w, ids))
    }

    /// `reshape(matmul(gather(W), reshape(x → [N, K, 1])) → [N, M])` → `(node, W, ids, x)`.
    fn expert_product(
        &self,
        v: ValueId,
        seen: &mut Vec<NodeId>,
    ) -> Option<(NodeId, ValueId, ValueId, ValueId)> {
        let (rid, squeeze) = self.producer(v);
        if !matches!(squeeze.op, Op::Reshape { .. }) {
            return None;
        }
        let (mid, mm) = self.producer(squeeze.inputs[0]);
        if mm.op
            != (Op::MatMul {
                transpose_a: false,
                transpose_b: false,
            })
        {
            return None;
        }
        let (cid, col) = self.producer(mm.inputs[1]);
        if !matches!(col.op, Op::Reshape { .. }) {
            return None;
        }
        let x = col.inputs[0];
        let (n, k) = match self.dims(x)?.as_slice() {
            [n, k] => (*n, *k),
            _ => return None,
        };
        let (w, ids) = self.expert_weights(mm.inputs[0], seen)?;
        let wd = self.dims(w)?;
        if self.dims(col.outputs[0])? != [n, k, 1] || wd[2] != k || self.dims(v)? != [n, wd[1]] {
            return None;
        }
        seen.extend([mid, cid]);
        Some((rid, w, ids, x))
    }

    /// Whether `to` is computed from `from` by row-wise ops only (each output row depends
    /// on the same input row), and from nothing else but scalar constants.
    fn row_wise(&self, to: ValueId, from: ValueId) -> bool {
        let mut stack = vec![to];
        let mut visited = HashSet::new();
        let mut reached = false;
        while let Some(v) = stack.pop() {
            if v == from {
                reached = true;
                continue;
            }
            if !visited.insert(v) {
                continue;
            }
            let (_, node) = self.producer(v);
            let ok = match &node.op {
                Op::Constant { .. } | Op::Weight { .. } => {
                    self.g.value(v).ty.shape.numel(&self.g.dims).ok() == Some(1)
                }
                op => row_wise_between_experts(op),
            };
            if !ok {
                return false;
            }
            if !matches!(node.op, Op::Constant { .. } | Op::Weight { .. }) {
                stack.extend(node.inputs.iter().copied());
            }
        }
        reached
    }

    /// The block rooted at `sum(reshape(y * reshape*(weights) → [T, k, H]), axis 1)`.
    fn block(&self, root: NodeId) -> Option<MoeBlock> {
        let node = self.g.node(root);
        if node.op
            != (Op::Reduce {
                kind: ReduceKind::Sum,
                axes: vec![1],
                keepdims: false,
            })
        {
            return None;
        }
        let mut seen = Vec::new();
        let (vid, view) = self.producer(node.inputs[0]);
        if !matches!(view.op, Op::Reshape { .. }) {
            return None;
        }
        let (t, k, h) = match self.dims(view.outputs[0])?.as_slice() {
            [t, k, h] => (*t, *k, *h),
            _ => return None,
        };
        let (mid, mul) = self.producer(view.inputs[0]);
        if mul.op != Op::Mul {
            return None;
        }
        seen.extend([vid, mid]);
        for (y, wcol) in [
            (mul.inputs[0], mul.inputs[1]),
            (mul.inputs[1], mul.inputs[0]),
        ] {
            let mut local = seen.clone();
            if self.dims(wcol)? != [t * k, 1] {
                continue;
            }
            let div = self.unreshape(wcol, &mut local);
            let (did, d) = self.producer(div);
            if d.op != Op::Div {
                continue;
            }
            let (vals, s1) = (d.inputs[0], d.inputs[1]);
            let (sid, sum1) = self.producer(s1);
            let sums_last = matches!(&sum1.op, Op::Reduce { kind: ReduceKind::Sum, axes, keepdims: true } if axes == &[-1] || axes == &[1]);
            let (tid, topk) = self.producer(vals);
            let top = matches!(topk.op, Op::TopK { k: kk, axis, largest: true } if kk == k && (axis == -1 || axis == 1));
            if !sums_last || sum1.inputs[0] != vals || !top || topk.outputs[0] != vals {
                continue;
            }
            let ids = topk.outputs[1];
            let (pid, probs) = self.producer(topk.inputs[0]);
            if !matches!(probs.op, Op::Softmax { axis } if axis == -1 || axis == 1) {
                continue;
            }
            let logits = probs.inputs[0];
            let experts = *self.dims(logits)?.get(1)?;
            local.extend([did, sid, pid]);
            let Some((second, w2, ids2, act)) = self.expert_product(y, &mut local) else {
                continue;
            };
            if ids2 != ids || self.dims(w2)?[1] != h {
                continue;
            }
            // The first product: the one the activation is computed from.
            let candidates: Vec<_> = self
                .g
                .nodes()
                .filter(|(_, n)| matches!(n.op, Op::Reshape { .. }))
                .filter_map(|(_, n)| {
                    let mut s = Vec::new();
                    self.expert_product(n.outputs[0], &mut s)
                        .map(|p| (n.outputs[0], p, s))
                })
                .filter(|(v, p, _)| p.0 != second && p.2 == ids && self.row_wise(act, *v))
                .collect();
            let [(_, (first, w1, _, xrep), s)] = candidates.as_slice() else {
                continue;
            };
            local.extend(s.iter().copied());
            // The repeated tokens: reshape(expand(reshape(tokens → [T, 1, H]) → [T, k, H]) → [T*k, H]).
            let mut rep = Vec::new();
            let (e_id, expand) = self.producer(self.unreshape(*xrep, &mut rep));
            if !matches!(expand.op, Op::Expand { .. }) || self.dims(expand.outputs[0])? != [t, k, h]
            {
                continue;
            }
            let (uid, unsqueeze) = self.producer(expand.inputs[0]);
            if !matches!(unsqueeze.op, Op::Reshape { .. }) {
                continue;
            }
            let tokens = unsqueeze.inputs[0];
            if self.dims(tokens)? != [t, h] || self.dims(expand.inputs[0])? != [t, 1, h] {
                continue;
            }
            rep.push(uid);
            local.extend(rep);
            local.push(e_id);
            local.push(tid);
            return Some(MoeBlock {
                topk: tid,
                logits,
                k,
                experts,
                tokens,
                ids,
                weights: vals,
                first: *first,
                w1: *w1,
                second,
                act,
                w2,
                root,
                y,
                absorbed: local,
            });
        }
        None
    }
}

/// Finds the MoE blocks of `graph` whose interior values are used nowhere else.
pub fn find(graph: &Graph) -> Vec<MoeBlock> {
    let mut users = vec![Vec::new(); graph.values().len()];
    for (id, n) in graph.nodes() {
        for &v in &n.inputs {
            users[v.index()].push(id);
        }
    }
    let f = Finder { g: graph, users };
    let mut blocks = Vec::new();
    for (id, _) in graph.nodes() {
        if let Some(mut b) = f.block(id) {
            // Interior nodes: everything passed, minus the nodes that get replaced.
            let replaced = [b.topk, b.first, b.second, b.root];
            b.absorbed.retain(|n| !replaced.contains(n));
            b.absorbed.sort();
            b.absorbed.dedup();
            let inside: HashSet<NodeId> = b.absorbed.iter().chain(&replaced).copied().collect();
            let private = b.absorbed.iter().all(|&n| {
                graph.node(n).outputs.iter().all(|v| {
                    !graph.outputs.contains(v)
                        && f.users[v.index()].iter().all(|u| inside.contains(u))
                })
            }) && [b.weights, b.ids]
                .iter()
                .all(|v| f.users[v.index()].iter().all(|u| inside.contains(u)));
            if private {
                blocks.push(b);
            }
        }
    }
    blocks
}

/// What becomes of `id` when `blocks` are raised, if it belongs to one.
pub fn fate(blocks: &[MoeBlock], id: NodeId, graph: &Graph) -> Option<Fate> {
    for (i, b) in blocks.iter().enumerate() {
        if id == b.topk {
            return Some(Fate::Replace(
                Op::MoeRoute {
                    top_k: b.k,
                    normalize: true,
                },
                vec![b.logits],
            ));
        }
        if id == b.first {
            let dispatch = NewNode {
                key: i,
                name: format!("{}.dispatch", graph.node(b.root).name),
                op: Op::MoeDispatch {
                    num_experts: b.experts,
                },
                inputs: vec![Ref::Old(b.tokens), Ref::Old(b.ids)],
            };
            return Some(Fate::Insert(
                vec![dispatch],
                Op::ExpertMatMul {
                    transpose_b: true,
                    rows: weft_ir::ExpertRows::Dense,
                },
                vec![Ref::New(i, 0), Ref::New(i, 1), Ref::Old(b.w1)],
            ));
        }
        if id == b.second {
            return Some(Fate::Insert(
                Vec::new(),
                Op::ExpertMatMul {
                    transpose_b: true,
                    rows: weft_ir::ExpertRows::Dense,
                },
                vec![Ref::Old(b.act), Ref::New(i, 1), Ref::Old(b.w2)],
            ));
        }
        if id == b.root {
            return Some(Fate::Replace(Op::MoeCombine, vec![b.y, b.weights, b.ids]));
        }
        if b.absorbed.contains(&id) {
            return Some(Fate::Drop);
        }
    }
    None
}
