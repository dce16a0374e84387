//! Raising: recognise decomposed patterns that exporters write (scaled dot-product
//! attention as `matmul`/`softmax`/`matmul` in the forms torch's dynamo export writes for
//! GPT-2, BERT, Qwen2, Llama and Mistral, SDPA's and eager: keys transposed directly
//! (head- or sequence-major) or through SDPA's batched reshapes, with or without
//! grouped-query KV repeats, scaled
//! before or after the product, masked by an added bias, `where(keep, s, fill)` or
//! `masked_fill`'s `where(drop, fill, s)`, taken only where a fully masked query gives
//! the same result as the op's zeros, see [`View::masked`]), RMSNorm as
//! `pow`/`reduce`/`add`/`sqrt`/`reciprocal`/`mul`, rotary embedding as
//! `x * cos + cat(-x2, x1) * sin` with tables whose halves repeat, SiLU as
//! `x * sigmoid(x)`, and the batched-matmul MoE block, see [`crate::raise_moe`]) and
//! replace them with the IR ops they spell out, so later passes see one `rms_norm`
//! instead of seven primitives.
//!
//! A pattern is raised only when it matches exactly: the constants have the expected
//! values, the reduction runs over the last axis, and every interior value is used by the
//! pattern alone. Anything that almost matches is left as it is; the pass never guesses.

use std::collections::{BTreeMap, HashSet};

use weft_ir::{Graph, Init, NodeId, Op, ReduceKind, ValueId};

use crate::manager::{Pass, PassError};
use crate::raise_moe::MoeBlock;
use crate::rebuild::{Fate, NewNode, Ref, rebuild};

/// Replaces decomposed attention, RMSNorm, rotary embedding, SiLU and MoE blocks with
/// `attention`, `rms_norm`, `rope`, `silu` and `moe_route`/`moe_dispatch`/`expert_matmul`/
/// `moe_combine`.
#[derive(Debug, Default)]
pub struct RaisePatterns {
    /// How many of each pattern the last run raised.
    pub raised: BTreeMap<&'static str, usize>,
}

/// A match: the node whose output the raised op takes over, the op and its inputs, and
/// the interior nodes it absorbs.
struct Match {
    root: NodeId,
    op: Op,
    inputs: Vec<ValueId>,
    absorbed: Vec<NodeId>,
    pattern: &'static str,
    /// Rotary tables (cos, sin) this match reads; they are replaced by their first halves.
    tables: Vec<ValueId>,
    /// The last input is a bool mask of the keys to drop (`masked_fill`'s), which the
    /// raised op reads negated, as the keys to keep.
    invert_mask: bool,
    /// The second input holds the keys sequence-major, `[b, t, h, d]`, and the raised op
    /// reads them through an inserted `transpose [0, 2, 1, 3]`.
    transpose_keys: bool,
}

/// The mask a decomposed attention applies to its scores, as the `attention` op reads it.
#[derive(Clone, Copy, Debug)]
enum Mask {
    /// Added to the scores (float).
    Bias(ValueId),
    /// `where(keep, scores, fill)`: true keeps a key.
    Keep(ValueId),
    /// `where(drop, fill, scores)` (`masked_fill`): true drops a key.
    Drop(ValueId),
}

impl Mask {
    fn value(self) -> ValueId {
        match self {
            Mask::Bias(v) | Mask::Keep(v) | Mask::Drop(v) => v,
        }
    }
}

struct View<'g> {
    g: &'g Graph,
    uses: Vec<usize>,
}

impl<'g> View<'g> {
    fn new(g: &'g Graph) -> View<'g> {
        let mut uses = vec![0usize; g.values().len()];
        for (_, n) in g.nodes() {
            for &v in &n.inputs {
                uses[v.index()] += 1;
            }
        }
        for &v in &g.outputs {
            uses[v.index()] += 1;
        }
        View { g, uses }
    }

    /// The single-output node producing `v`, if `v` has exactly one use.
    fn private(&self, v: ValueId) -> Option<(NodeId, &'g weft_ir::Node)> {
        let value = self.g.value(v);
        let node = self.g.node(value.producer);
        (self.uses[v.index()] == 1 && node.outputs.len() == 1).then_some((value.producer, node))
    }

    /// The value of a one-element constant or weight, if `v` is one.
    fn scalar(&self, v: ValueId) -> Option<f64> {
        let node = self.g.node(self.g.value(v).producer);
        let init = match &node.op {
            Op::Constant { init, .. } | Op::Weight { init, .. } => init,
            _ => return None,
        };
        if self.g.value(v).ty.shape.numel(&self.g.dims).ok()? != 1 {
            return None;
        }
        match init {
            Init::Fill { value } => Some(*value),
            Init::Inline(values) => values.first().copied(),
            _ => None,
        }
    }

    /// `x * sigmoid(x)` (either order) rooted at `root`.
    fn silu(&self, root: NodeId) -> Option<Match> {
        let node = self.g.node(root);
        if node.op != Op::Mul {
            return None;
        }
        for (a, b) in [
            (node.inputs[0], node.inputs[1]),
            (node.inputs[1], node.inputs[0]),
        ] {
            if let Some((sid, s)) = self.private(b)
                && s.op == Op::Sigmoid
                && s.inputs[0] == a
            {
                return Some(Match {
                    root,
                    op: Op::Silu,
                    inputs: vec![a],
                    absorbed: vec![sid],
                    pattern: "silu",
                    tables: Vec::new(),
                    invert_mask: false,
                    transpose_keys: false,
                });
            }
        }
        None
    }

    /// `w * (x * rsqrt(mean(x^2, last axis) + eps))`, with `rsqrt` written as `rsqrt(.)`
    /// or `reciprocal(sqrt(.))`, and either operand order of the two products.
    fn rms_norm(&self, root: NodeId) -> Option<Match> {
        let node = self.g.node(root);
        if node.op != Op::Mul {
            return None;
        }
        for (w, m) in [
            (node.inputs[0], node.inputs[1]),
            (node.inputs[1], node.inputs[0]),
        ] {
            if let Some(found) = self.rms_norm_with(root, w, m) {
                return Some(found);
            }
        }
        None
    }

    fn rms_norm_with(&self, root: NodeId, w: ValueId, m: ValueId) -> Option<Match> {
        let (mid, mnode) = self.private(m)?;
        if mnode.op != Op::Mul {
            return None;
        }
        let mut absorbed = vec![mid];
        for (x, r) in [
            (mnode.inputs[0], mnode.inputs[1]),
            (mnode.inputs[1], mnode.inputs[0]),
        ] {
            absorbed.truncate(1);
            let Some(denominator) = self.inverse_sqrt(r, &mut absorbed) else {
                continue;
            };
            let Some((aid, add)) = self.private(denominator) else {
                continue;
            };
            if add.op != Op::Add {
                continue;
            }
            let (mean, eps) = match (self.scalar(add.inputs[1]), self.scalar(add.inputs[0])) {
                (Some(e), _) => (add.inputs[0], e),
                (None, Some(e)) => (add.inputs[1], e),
                _ => continue,
            };
            let Some((rid, reduce)) = self.private(mean) else {
                continue;
            };
            let rank = self.g.value(x).ty.shape.rank() as i64;
            let last_axis = matches!(&reduce.op, Op::Reduce { kind: ReduceKind::Mean, axes, keepdims: true }
                if axes.len() == 1 && (axes[0] == -1 || axes[0] == rank - 1));
            if !last_axis {
                continue;
            }
            let Some((pid, square)) = self.private(reduce.inputs[0]) else {
                continue;
            };
            let squares_x = match square.op {
                Op::Pow => square.inputs[0] == x && self.scalar(square.inputs[1]) == Some(2.0),
                Op::Mul => square.inputs[0] == x && square.inputs[1] == x,
                _ => false,
            };
            // The weight must be the per-channel scale rms_norm takes: [last dim], same dtype.
            let (wt, xt) = (&self.g.value(w).ty, &self.g.value(x).ty);
            let weight_fits = wt.dtype == xt.dtype
                && wt.shape.rank() == 1
                && xt
                    .shape
                    .dims()
                    .last()
                    .is_some_and(|d| d.same(&wt.shape.dims()[0], &self.g.dims));
            if !(squares_x && weight_fits && eps.is_finite() && eps >= 0.0) {
                continue;
            }
            absorbed.extend([aid, rid, pid]);
            return Some(Match {
                root,
                op: Op::RmsNorm { eps },
                inputs: vec![x, w],
                absorbed,
                pattern: "rms_norm",
                tables: Vec::new(),
                invert_mask: false,
                transpose_keys: false,
            });
        }
        None
    }

    /// If `r` is `rsqrt(d)` or `reciprocal(sqrt(d))` (privately used), returns `d`.
    fn inverse_sqrt(&self, r: ValueId, absorbed: &mut Vec<NodeId>) -> Option<ValueId> {
        let (rid, rnode) = self.private(r)?;
        match rnode.op {
            Op::Rsqrt => {
                absorbed.push(rid);
                Some(rnode.inputs[0])
            }
            Op::Reciprocal => {
                let (sid, snode) = self.private(rnode.inputs[0])?;
                (snode.op == Op::Sqrt).then(|| {
                    absorbed.extend([rid, sid]);
                    snode.inputs[0]
                })
            }
            _ => None,
        }
    }
}

impl View<'_> {
    /// Elements `lo..hi` of the last axis of `x`, if `v` is such a (privately used) slice.
    fn last_axis_slice(&self, v: ValueId, x: ValueId) -> Option<(NodeId, u64, u64)> {
        let (id, node) = self.private(v)?;
        let Op::Slice { axis, start, end } = node.op else {
            return None;
        };
        let shape = self.g.value(x).ty.shape.eval(&self.g.dims).ok()?;
        let (rank, len) = (shape.len() as i64, *shape.last()? as i64);
        let clamp = |i: i64| (if i < 0 { i + len } else { i }).clamp(0, len) as u64;
        (node.inputs[0] == x && (axis == -1 || axis == rank - 1))
            .then(|| (id, clamp(start), clamp(end)))
    }

    /// A rotary table: a constant or weight whose last dim is `d` and whose two halves
    /// along it are equal (`cat([c, c], -1)`), as exporters write `cos` and `sin`.
    fn rotary_table(&self, v: ValueId, d: u64) -> bool {
        let node = self.g.node(self.g.value(v).producer);
        let (Op::Constant {
            init: Init::Inline(values),
            ..
        }
        | Op::Weight {
            init: Init::Inline(values),
            ..
        }) = &node.op
        else {
            return false;
        };
        let d = d as usize;
        let h = d / 2;
        d > 0
            && self
                .g
                .value(v)
                .ty
                .shape
                .dims()
                .last()
                .and_then(|x| x.eval(&self.g.dims).ok())
                == Some(d as u64)
            && values
                .chunks(d)
                .all(|row| row.len() == d && row[..h] == row[h..])
    }

    /// `x * cos + rotate_half(x) * sin` with `rotate_half(x) = cat(-x[.., h:], x[.., :h])`.
    fn rope(&self, root: NodeId) -> Option<Match> {
        let node = self.g.node(root);
        if node.op != Op::Add {
            return None;
        }
        for (a, b) in [
            (node.inputs[0], node.inputs[1]),
            (node.inputs[1], node.inputs[0]),
        ] {
            if let Some(m) = self.rope_with(root, a, b) {
                return Some(m);
            }
        }
        None
    }

    fn rope_with(&self, root: NodeId, plain: ValueId, rotated: ValueId) -> Option<Match> {
        let (m1, n1) = self.private(plain)?;
        let (m2, n2) = self.private(rotated)?;
        if n1.op != Op::Mul || n2.op != Op::Mul {
            return None;
        }
        for (r, sin) in [(n2.inputs[0], n2.inputs[1]), (n2.inputs[1], n2.inputs[0])] {
            let Some((cid, cat)) = self.private(r) else {
                continue;
            };
            let x_rank = |v: ValueId| self.g.value(v).ty.shape.rank() as i64;
            let Op::Concat { axis } = cat.op else {
                continue;
            };
            if cat.inputs.len() != 2 {
                continue;
            }
            let Some((nid, neg)) = self.private(cat.inputs[0]) else {
                continue;
            };
            if neg.op != Op::Neg {
                continue;
            }
            for (x, cos) in [(n1.inputs[0], n1.inputs[1]), (n1.inputs[1], n1.inputs[0])] {
                let rank = x_rank(x);
                if !(axis == -1 || axis == rank - 1) {
                    continue;
                }
                let Some(d) = self
                    .g
                    .value(x)
                    .ty
                    .shape
                    .dims()
                    .last()
                    .and_then(|d| d.eval(&self.g.dims).ok())
                else {
                    continue;
                };
                let h = d / 2;
                let (Some((s2, lo2, hi2)), Some((s1, lo1, hi1))) = (
                    self.last_axis_slice(neg.inputs[0], x),
                    self.last_axis_slice(cat.inputs[1], x),
                ) else {
                    continue;
                };
                let halves = d % 2 == 0 && (lo2, hi2) == (h, d) && (lo1, hi1) == (0, h);
                if !(halves && self.rotary_table(cos, d) && self.rotary_table(sin, d)) {
                    continue;
                }
                return Some(Match {
                    root,
                    op: Op::Rope { interleaved: false },
                    inputs: vec![x, cos, sin],
                    absorbed: vec![m1, m2, cid, nid, s1, s2],
                    pattern: "rope",
                    tables: vec![cos, sin],
                    invert_mask: false,
                    transpose_keys: false,
                });
            }
        }
        None
    }
}

impl View<'_> {
    /// Concrete shape of a value.
    fn dims(&self, v: ValueId) -> Option<Vec<u64>> {
        self.g.value(v).ty.shape.eval(&self.g.dims).ok()
    }

    /// `(x, c)` if `v` is a private `x * c` (either order) with `c` a scalar constant.
    fn scaled(&self, v: ValueId, absorbed: &mut Vec<NodeId>) -> Option<(ValueId, f64)> {
        let (id, node) = self.private(v)?;
        if node.op != Op::Mul {
            return None;
        }
        let (x, c) = match (self.scalar(node.inputs[1]), self.scalar(node.inputs[0])) {
            (Some(c), _) => (node.inputs[0], c),
            (None, Some(c)) => (node.inputs[1], c),
            _ => return None,
        };
        absorbed.push(id);
        Some((x, c))
    }

    /// The KV tensor `[b, hkv, t, d]` behind a grouped-query "repeat": `reshape` to
    /// `[b, hkv, 1, t, d]`, `expand` to `[b, hkv, g, t, d]`. Returns it and `g`.
    fn repeated(&self, v: ValueId, absorbed: &mut Vec<NodeId>) -> Option<(ValueId, u64)> {
        let (eid, expand) = self.private(v)?;
        if !matches!(expand.op, Op::Expand { .. }) {
            return None;
        }
        let (rid, unsq) = self.private(expand.inputs[0])?;
        if !matches!(unsq.op, Op::Reshape { .. }) {
            return None;
        }
        let kv = unsq.inputs[0];
        let (k, u, e) = (self.dims(kv)?, self.dims(expand.inputs[0])?, self.dims(v)?);
        let [b, h, t, d] = <[u64; 4]>::try_from(k).ok()?;
        if u != [b, h, 1, t, d] || e.len() != 5 || e[..2] != [b, h] || e[3..] != [t, d] {
            return None;
        }
        absorbed.extend([eid, rid]);
        Some((kv, e[2]))
    }

    /// `v` as attention's value operand: `[b, hq, t, dv]` directly, or a grouped-query
    /// repeat of `[b, hkv, t, dv]` merged back to `hq = hkv * g` heads.
    fn values(&self, v: ValueId, hq: u64, absorbed: &mut Vec<NodeId>) -> Option<ValueId> {
        let mut local = Vec::new();
        if let Some((rid, merge)) = self.private(v)
            && matches!(merge.op, Op::Reshape { .. })
            && let Some((kv, g)) = self.repeated(merge.inputs[0], &mut local)
        {
            let [b, h, t, d] = <[u64; 4]>::try_from(self.dims(kv)?).ok()?;
            if self.dims(v)? == [b, h * g, t, d] && h * g == hq {
                absorbed.push(rid);
                absorbed.extend(local);
                return Some(kv);
            }
            return None;
        }
        (self.dims(v)?.get(1) == Some(&hq)).then_some(v)
    }

    /// `k` behind `kᵀ` as the score matmul reads it: `transpose(k, [0, 1, 3, 2])` (of `k`
    /// or of a grouped-query repeat of it), or the
    /// batched form dynamo writes for `k.transpose(-2, -1)`: `reshape` to `[b*hq, t, d]`,
    /// `transpose [0, 2, 1]`, `reshape` to `[b, hq, d, t]`, reading either `k [b, hq, t, d]`
    /// itself (one KV head per query head: GPT-2, BERT, Qwen2 without grouping) or a
    /// grouped-query repeat of `[b, hkv, t, d]`.
    ///
    /// Also `transpose(x, [0, 2, 3, 1])` of sequence-major keys `x [b, t, hq, d]`: the one
    /// transpose an optimiser leaves of `x.transpose(1, 2).transpose(-2, -1)` (eager BERT,
    /// GPT-2). Then `x` is returned with `true`: the op needs `x` transposed to head-major.
    fn keys(&self, kt: ValueId, hq: u64, absorbed: &mut Vec<NodeId>) -> Option<(ValueId, bool)> {
        let (id, node) = self.private(kt)?;
        match &node.op {
            Op::Transpose { perm } if perm == &[0, 1, 3, 2] => {
                // Eager Llama and Mistral transpose their `repeat_kv` output.
                let mut local = vec![id];
                let k = self.values(node.inputs[0], hq, &mut local)?;
                absorbed.extend(local);
                Some((k, false))
            }
            Op::Transpose { perm } if perm == &[0, 2, 3, 1] => {
                let x = node.inputs[0];
                (self.dims(x)?.len() == 4 && self.dims(x)?.get(2) == Some(&hq)).then(|| {
                    absorbed.push(id);
                    (x, true)
                })
            }
            Op::Reshape { .. } => {
                let (tid, tr) = self.private(node.inputs[0])?;
                if !matches!(&tr.op, Op::Transpose { perm } if perm == &[0, 2, 1]) {
                    return None;
                }
                let (mid, merge) = self.private(tr.inputs[0])?;
                if !matches!(merge.op, Op::Reshape { .. }) {
                    return None;
                }
                let mut local = vec![id, tid, mid];
                let (k, g) = match self.repeated(merge.inputs[0], &mut local) {
                    Some(repeat) => repeat,
                    None if self.dims(merge.inputs[0])?.len() == 4 => (merge.inputs[0], 1),
                    None => return None,
                };
                let [b, h, t, d] = <[u64; 4]>::try_from(self.dims(k)?).ok()?;
                let fits = h * g == hq
                    && self.dims(tr.inputs[0])? == [b * hq, t, d]
                    && self.dims(kt)? == [b, hq, d, t];
                fits.then(|| {
                    absorbed.extend(local);
                    (k, false)
                })
            }
            _ => None,
        }
    }

    /// The scores and mask behind softmax's input `x`: `scores + mask`,
    /// `where(keep, scores, fill)`, `where(drop, fill, scores)` or the scores alone, where
    /// the scores are a [`View::score_product`] of `x`'s own shape (so the mask
    /// broadcasts to them and the result keeps its shape).
    ///
    /// The `attention` op gives zeros to a query that sees no key, where the primitives
    /// give NaN (every score `-inf`) or a uniform average (every score a finite `fill`).
    /// A mask is therefore taken only when the two agree: a constant mask in which every
    /// query keeps a key; or, under the NaN guard that zeroes NaN rows, a computed bias
    /// (a fully masked row is all `-inf`, or finite and then the op too averages it) or
    /// a computed bool mask with `-inf` as the fill. A `where` fill must be `-inf` or the
    /// lowest finite value of the scores' type (`torch.finfo(dtype).min`, whose
    /// exponential underflows to zero as `-inf`'s does).
    fn masked(
        &self,
        x: ValueId,
        guarded: bool,
        absorbed: &mut Vec<NodeId>,
    ) -> Option<(ValueId, Option<Mask>)> {
        let shape = self.dims(x)?;
        let is_scores = |v: ValueId| {
            self.score_product(v, &mut Vec::new()).is_some()
                && self.dims(v).as_ref() == Some(&shape)
        };
        if is_scores(x) {
            return Some((x, None));
        }
        let (id, node) = self.private(x)?;
        let (scores, mask, fill) = match node.op {
            Op::Add => {
                let (s, m) = if is_scores(node.inputs[0]) {
                    (node.inputs[0], node.inputs[1])
                } else if is_scores(node.inputs[1]) {
                    (node.inputs[1], node.inputs[0])
                } else {
                    return None;
                };
                (s, Mask::Bias(m), None)
            }
            Op::Where => {
                let [m, a, b] = <[ValueId; 3]>::try_from(node.inputs.as_slice()).ok()?;
                if is_scores(a) {
                    (a, Mask::Keep(m), Some(self.scalar(b)?))
                } else if is_scores(b) {
                    (b, Mask::Drop(m), Some(self.scalar(a)?))
                } else {
                    return None;
                }
            }
            _ => return None,
        };
        let dtype = self.g.value(scores).ty.dtype;
        if matches!(mask, Mask::Bias(m) if self.g.value(m).ty.dtype != dtype) {
            return None;
        }
        if let Some(fill) = fill {
            let lowest = match dtype {
                weft_ir::DType::F32 => f64::from(f32::MIN),
                weft_ir::DType::F16 => -65504.0,
                weft_ir::DType::Bf16 => -3.3895313892515355e38,
                _ => return None,
            };
            if !(fill == f64::NEG_INFINITY || fill == lowest) {
                return None;
            }
        }
        let exact = match self.constant_rows(mask.value()) {
            Some(rows) => rows.iter().all(|row| {
                row.iter().any(|&e| match mask {
                    Mask::Bias(_) => e != f64::NEG_INFINITY,
                    Mask::Keep(_) => e != 0.0,
                    Mask::Drop(_) => e == 0.0,
                })
            }),
            None => guarded && fill.is_none_or(|f| f == f64::NEG_INFINITY),
        };
        exact.then(|| {
            absorbed.push(id);
            (scores, Some(mask))
        })
    }

    /// The rows (along the last axis) of an inline constant, if `v` is one.
    fn constant_rows(&self, v: ValueId) -> Option<Vec<Vec<f64>>> {
        let (Op::Constant {
            init: Init::Inline(values),
            ..
        }
        | Op::Weight {
            init: Init::Inline(values),
            ..
        }) = &self.g.node(self.g.value(v).producer).op
        else {
            return None;
        };
        let last = self.dims(v)?.last().copied().unwrap_or(1).max(1) as usize;
        Some(values.chunks(last).map(<[f64]>::to_vec).collect())
    }

    /// The score product behind `v` and the scale applied after it: a private
    /// `matmul(a, b)` alone, times a scalar constant `c`, or divided by one (`/ √d`, as
    /// eager BERT and GPT-2 write it).
    fn score_product(
        &self,
        v: ValueId,
        absorbed: &mut Vec<NodeId>,
    ) -> Option<(&weft_ir::Node, f64)> {
        let plain = Op::MatMul {
            transpose_a: false,
            transpose_b: false,
        };
        let (id, node) = self.private(v)?;
        if node.op == plain {
            absorbed.push(id);
            return Some((node, 1.0));
        }
        let post = match node.op {
            Op::Mul => self
                .scalar(node.inputs[1])
                .or_else(|| self.scalar(node.inputs[0]))?,
            Op::Div => 1.0 / self.scalar(node.inputs[1])?,
            _ => return None,
        };
        let product = if node.op == Op::Mul && self.scalar(node.inputs[1]).is_none() {
            node.inputs[1]
        } else {
            node.inputs[0]
        };
        let (mid, mm) = self.private(product)?;
        (mm.op == plain).then(|| {
            absorbed.extend([id, mid]);
            (mm, post)
        })
    }

    /// Scaled dot-product attention as exporters decompose it: `matmul(softmax(matmul(q·c,
    /// kᵀ·c) + mask), v)`, optionally with NaN rows zeroed (`where(is_nan(p), 0, p)`) and
    /// with grouped-query KV repeats; rooted at the final matmul.
    fn attention(&self, root: NodeId) -> Option<Match> {
        let node = self.g.node(root);
        if node.op
            != (Op::MatMul {
                transpose_a: false,
                transpose_b: false,
            })
        {
            return None;
        }
        let mut absorbed = Vec::new();
        let (probs, vx) = (node.inputs[0], node.inputs[1]);
        // Optional NaN guard: `where(is_nan(p), 0, p)`; p is then used twice, by both.
        let p = match self.private(probs) {
            Some((wid, w)) if w.op == Op::Where => {
                let (cond, zero, p) = (w.inputs[0], w.inputs[1], w.inputs[2]);
                let (nid, nan) = self.private(cond)?;
                if nan.op != Op::IsNan
                    || nan.inputs[0] != p
                    || self.scalar(zero) != Some(0.0)
                    || self.uses[p.index()] != 2
                {
                    return None;
                }
                absorbed.extend([wid, nid]);
                p
            }
            _ => probs,
        };
        let pnode = self.g.node(self.g.value(p).producer);
        let rank = self.g.value(p).ty.shape.rank() as i64;
        if !matches!(pnode.op, Op::Softmax { axis } if axis == -1 || axis == rank - 1) || rank != 4
        {
            return None;
        }
        if p == probs && self.uses[p.index()] != 1 {
            return None;
        }
        absorbed.push(self.g.value(p).producer);
        let guarded = p != probs;
        let softmax_in = pnode.inputs[0];
        let (scores, mask) = self.masked(softmax_in, guarded, &mut absorbed)?;
        let (smm, post) = self.score_product(scores, &mut absorbed)?;
        let (q, cq) = self
            .scaled(smm.inputs[0], &mut absorbed)
            .unwrap_or((smm.inputs[0], 1.0));
        let (kt, ck) = self
            .scaled(smm.inputs[1], &mut absorbed)
            .unwrap_or((smm.inputs[1], 1.0));
        let qd = self.dims(q)?;
        if qd.len() != 4 {
            return None;
        }
        let hq = qd[1];
        let (k, transpose_keys) = self.keys(kt, hq, &mut absorbed)?;
        let v = self.values(vx, hq, &mut absorbed)?;
        // Keys and values must share their KV heads (one repeated and the other not is
        // not a form the op has).
        let key_heads = *self.dims(k)?.get(if transpose_keys { 2 } else { 1 })?;
        if self.dims(v)?.get(1) != Some(&key_heads) {
            return None;
        }
        let scale = cq * ck * post;
        if !(scale.is_finite() && scale > 0.0) {
            return None;
        }
        let mut inputs = vec![q, k, v];
        let invert_mask = matches!(mask, Some(Mask::Drop(_)));
        inputs.extend(mask.map(Mask::value));
        Some(Match {
            invert_mask,
            transpose_keys,
            root,
            op: Op::Attention {
                causal: false,
                scale: Some(scale),
            },
            inputs,
            absorbed,
            pattern: "attention",
            tables: Vec::new(),
        })
    }
}

/// The fate of an attention root that reads an input through a new node: keys held
/// sequence-major get `transpose [0, 2, 1, 3]`, and a mask that marks the keys to drop
/// becomes `keep = where(drop, false, true)`.
fn with_inserts(m: &Match, graph: &Graph) -> Fate {
    let name = &graph.node(m.root).name;
    let mut nodes = Vec::new();
    let mut inputs: Vec<Ref> = m.inputs.iter().map(|&v| Ref::Old(v)).collect();
    if m.transpose_keys {
        nodes.push(NewNode {
            key: 0,
            name: format!("{name}.keys"),
            op: Op::Transpose {
                perm: vec![0, 2, 1, 3],
            },
            inputs: vec![inputs[1]],
        });
        inputs[1] = Ref::New(0, 0);
    }
    if m.invert_mask {
        let flag = |key: usize, suffix: &str, value: f64| NewNode {
            key,
            name: format!("{name}.{suffix}"),
            op: Op::Constant {
                dtype: weft_ir::DType::Bool,
                shape: weft_ir::Shape::scalar(),
                init: Init::Inline(vec![value]),
            },
            inputs: Vec::new(),
        };
        let drop = *inputs.last().expect("a negated mask is an input");
        nodes.extend([
            flag(1, "masked", 0.0),
            flag(2, "visible", 1.0),
            NewNode {
                key: 3,
                name: format!("{name}.keep"),
                op: Op::Where,
                inputs: vec![drop, Ref::New(1, 0), Ref::New(2, 0)],
            },
        ]);
        *inputs.last_mut().expect("checked") = Ref::New(3, 0);
    }
    Fate::Insert(nodes, m.op.clone(), inputs)
}

/// The first half (along the last axis) of a rotary table node's op.
fn halved(op: &Op) -> Option<Op> {
    let (dtype, shape, values, weight) = match op {
        Op::Constant {
            dtype,
            shape,
            init: Init::Inline(v),
        } => (*dtype, shape, v, false),
        Op::Weight {
            dtype,
            shape,
            init: Init::Inline(v),
        } => (*dtype, shape, v, true),
        _ => return None,
    };
    let mut dims = shape.dims().to_vec();
    let last = dims.last_mut()?;
    let d = match last {
        weft_ir::Dim::Fixed(d) => *d as usize,
        weft_ir::Dim::Sym(_) => return None,
    };
    *last = weft_ir::Dim::Fixed((d / 2) as u64);
    let init = Init::Inline(
        values
            .chunks(d)
            .flat_map(|row| row[..d / 2].to_vec())
            .collect(),
    );
    let shape = weft_ir::Shape(dims);
    Some(if weight {
        Op::Weight { dtype, shape, init }
    } else {
        Op::Constant { dtype, shape, init }
    })
}

impl Pass for RaisePatterns {
    fn name(&self) -> &'static str {
        "raise"
    }

    fn run(&mut self, graph: Graph) -> Result<(Graph, String), PassError> {
        self.raised.clear();
        let view = View::new(&graph);
        let mut matches: Vec<Match> = Vec::new();
        let mut taken: HashSet<NodeId> = HashSet::new();
        // Later roots first, so a larger pattern is not cut short by a smaller one inside it.
        for (id, _) in graph.nodes().collect::<Vec<_>>().into_iter().rev() {
            if taken.contains(&id) {
                continue;
            }
            let found = view
                .attention(id)
                .or_else(|| view.rms_norm(id))
                .or_else(|| view.rope(id))
                .or_else(|| view.silu(id));
            if let Some(m) = found
                && !m.absorbed.iter().any(|n| taken.contains(n))
            {
                taken.insert(m.root);
                taken.extend(m.absorbed.iter().copied());
                matches.push(m);
            }
        }
        // A rotary table is halved in place, so every one of its uses must belong to a raised
        // rope; where one does not, those ropes stay primitive.
        let table_users = |t: ValueId| -> Vec<NodeId> {
            graph
                .nodes()
                .filter(|(_, n)| n.inputs.contains(&t))
                .map(|(id, _)| id)
                .collect()
        };
        loop {
            let absorbed: HashSet<NodeId> = matches
                .iter()
                .flat_map(|m| m.absorbed.iter().copied())
                .collect();
            let bad = matches.iter().position(|m| {
                m.tables.iter().any(|&t| {
                    graph.outputs.contains(&t)
                        || table_users(t).iter().any(|u| !absorbed.contains(u))
                })
            });
            match bad {
                Some(i) => {
                    matches.remove(i);
                }
                None => break,
            }
        }
        let moe = crate::raise_moe::find(&graph);
        let in_moe: HashSet<NodeId> = moe.iter().flat_map(MoeBlock::nodes).collect();
        matches.retain(|m| {
            !in_moe.contains(&m.root) && !m.absorbed.iter().any(|n| in_moe.contains(n))
        });
        if matches.is_empty() && moe.is_empty() {
            return Ok((graph, "no pattern matched".into()));
        }
        let tables: HashSet<NodeId> = matches
            .iter()
            .flat_map(|m| m.tables.iter().map(|&t| graph.value(t).producer))
            .collect();
        let absorbed: HashSet<NodeId> = matches
            .iter()
            .flat_map(|m| m.absorbed.iter().copied())
            .collect();
        let by_root: BTreeMap<NodeId, &Match> = matches.iter().map(|m| (m.root, m)).collect();
        let out = rebuild(&graph, |id| match by_root.get(&id) {
            _ if crate::raise_moe::fate(&moe, id, &graph).is_some() => {
                crate::raise_moe::fate(&moe, id, &graph).expect("checked")
            }
            Some(m) if m.invert_mask || m.transpose_keys => with_inserts(m, &graph),
            Some(m) => Fate::Replace(m.op.clone(), m.inputs.clone()),
            None if absorbed.contains(&id) => Fate::Drop,
            None if tables.contains(&id) => match halved(&graph.node(id).op) {
                Some(op) => Fate::Replace(op, Vec::new()),
                None => Fate::Keep,
            },
            None => Fate::Keep,
        })
        .map_err(|source| PassError::Build {
            pass: "raise",
            source,
        })?;
        for m in &matches {
            *self.raised.entry(m.pattern).or_default() += 1;
        }
        if !moe.is_empty() {
            self.raised.insert("moe", moe.len());
        }
        let summary = self
            .raised
            .iter()
            .map(|(p, n)| format!("{p}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        Ok((out, format!("raised {summary}")))
    }
}
