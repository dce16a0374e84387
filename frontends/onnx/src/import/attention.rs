//! ONNX's `Attention` (opsets 23–25) → IR.
//!
//! The common case — no softcap, no `qk_matmul_output`, no padded-KV lengths, no sliding
//! window, no softmax precision change, a causal mask aligned the way the IR's is —
//! becomes one IR `attention` op, which the compiler understands and the executor
//! computes blockwise (in f32 whatever the input type, rounding only the result).
//! Everything else is imported as the op's definition spelled out in primitive ops
//! (scale, matmul, softcap, additive bias, softmax, fully-masked-row guard, matmul), so
//! every attribute and output is honoured rather than dropped.

use weft_ir::{DType, Dim, Init, Op, ReduceKind, Shape, ValueId};

use super::{Importer, NResult, attr, attr_float, attr_int, check_attrs, dtype_of};
use crate::proto::NodeProto;

/// The ONNX attributes of `Attention`, all honoured.
const ATTRS: &[&str] = &[
    "is_causal",
    "kv_num_heads",
    "q_num_heads",
    "qk_matmul_output_mode",
    "scale",
    "softcap",
    "softmax_precision",
    "left_window_size",
    "right_window_size",
];

/// Most elements of a mask written out as a constant (16 Mi values, 128 MB as f64).
const MAX_MASK_ELEMENTS: u64 = 1 << 24;

/// Everything the attributes and optional inputs ask for, checked.
struct Spec {
    causal: bool,
    scale: f64,
    softcap: f64,
    mode: i64,
    softmax_dtype: Option<DType>,
    left: i64,
    right: i64,
}

impl Importer {
    pub(super) fn attention(&mut self, node: &NodeProto) -> NResult<()> {
        check_attrs(node, ATTRS)?;
        let out = node.output[0].clone();
        let has = |i: usize| node.input.get(i).is_some_and(|n| !n.is_empty());
        let wants = |i: usize| node.output.get(i).filter(|o| !o.is_empty()).cloned();
        let (q, k, v) = (
            self.input(node, 0)?,
            self.input(node, 1)?,
            self.input(node, 2)?,
        );
        let rank = self.rank_of(q);
        if rank != self.rank_of(k) || rank != self.rank_of(v) || !(rank == 3 || rank == 4) {
            return Err(format!(
                "Q, K and V have ranks {}, {} and {}: they must all be 3 or all be 4",
                rank,
                self.rank_of(k),
                self.rank_of(v)
            ));
        }
        let dtype = self.g.value(q).ty.dtype;
        let heads = |name: &str| -> NResult<Option<u64>> {
            match attr(node, name) {
                None => Ok(None),
                Some(_) => match attr_int(node, name, 0)? {
                    n if n > 0 => Ok(Some(n as u64)),
                    n => Err(format!("{name} = {n} must be positive")),
                },
            }
        };
        let (q_heads, kv_heads) = (heads("q_num_heads")?, heads("kv_num_heads")?);
        // Rank 3 is [batch, seq, heads * head_size]: viewed as [batch, heads, seq, head_size].
        let (q4, k4, v4) = if rank == 3 {
            let (Some(hq), Some(hkv)) = (q_heads, kv_heads) else {
                return Err(
                    "3-D Q, K and V need the q_num_heads and kv_num_heads attributes".into(),
                );
            };
            (
                self.split_heads(&format!("{out}.q"), q, hq)?,
                self.split_heads(&format!("{out}.k"), k, hkv)?,
                self.split_heads(&format!("{out}.v"), v, hkv)?,
            )
        } else {
            for (attr_heads, value, what) in
                [(q_heads, q, "q_num_heads"), (kv_heads, k, "kv_num_heads")]
            {
                let dim = self.shape_of(value)?[1];
                if attr_heads.is_some_and(|h| h != dim) {
                    return Err(format!(
                        "{what} = {} disagrees with the input's {dim} heads",
                        attr_heads.unwrap_or(0)
                    ));
                }
            }
            (q, k, v)
        };
        let [b, hq, s, d] = dims4(&self.shape_of(q4)?);
        let [kb, hkv, _, kd] = dims4(&self.shape_of(k4)?);
        let [vb, vh, _, dv] = dims4(&self.shape_of(v4)?);
        if kb != b || vb != b {
            return Err(format!("batch sizes differ: Q {b}, K {kb}, V {vb}"));
        }
        if kd != d {
            return Err(format!("K's head size {kd} differs from Q's {d}"));
        }
        if vh != hkv {
            return Err(format!("K has {hkv} heads and V {vh}: they must agree"));
        }
        if hq % hkv != 0 {
            return Err(format!(
                "{hq} query heads are not a multiple of {hkv} key/value heads"
            ));
        }
        // The KV cache: past entries first, then this call's keys and values.
        let past = match (has(4), has(5)) {
            (false, false) => None,
            (true, true) => Some((self.input(node, 4)?, self.input(node, 5)?)),
            _ => return Err("past_key and past_value must be given together".into()),
        };
        let past_len = match past {
            Some((pk, _)) => self.shape_of(pk)?.get(2).copied().unwrap_or(0),
            None => 0,
        };
        let (k4, v4) = match past {
            Some((pk, pv)) => {
                let key = wants(1).unwrap_or(format!("{out}.present_key"));
                let value = wants(2).unwrap_or(format!("{out}.present_value"));
                (
                    self.emit_named(&key, Op::Concat { axis: 2 }, &[pk, k4])?,
                    self.emit_named(&value, Op::Concat { axis: 2 }, &[pv, v4])?,
                )
            }
            None => {
                // Without a cache the present key and value are this call's, as 4-D.
                for (i, x) in [(1, k4), (2, v4)] {
                    if let Some(name) = wants(i) {
                        let shape = self.g.value(x).ty.shape.clone();
                        self.emit_named(&name, Op::Reshape { shape }, &[x])?;
                    }
                }
                (k4, v4)
            }
        };
        let t = self.shape_of(k4)?[2];
        let nonpad = has(6).then(|| self.input(node, 6)).transpose()?;
        if nonpad.is_some() && past.is_some() {
            return Err("nonpad_kv_seqlen cannot be combined with past_key and past_value".into());
        }
        let spec = Spec {
            causal: attr_int(node, "is_causal", 0)? != 0,
            scale: match attr(node, "scale") {
                Some(_) => attr_float(node, "scale", 1.0)? as f64,
                None => 1.0 / (d as f64).sqrt(),
            },
            softcap: attr_float(node, "softcap", 0.0)? as f64,
            mode: match attr_int(node, "qk_matmul_output_mode", 0)? {
                m @ 0..=3 => m,
                m => return Err(format!("qk_matmul_output_mode = {m} must be 0, 1, 2 or 3")),
            },
            softmax_dtype: match attr(node, "softmax_precision") {
                None => None,
                Some(_) => Some(dtype_of(attr_int(node, "softmax_precision", 1)? as i32)?)
                    .filter(|p| *p != dtype),
            },
            left: attr_int(node, "left_window_size", -1)?,
            right: attr_int(node, "right_window_size", -1)?,
        };
        if spec.left < -1 || spec.right < -1 {
            return Err(format!(
                "window sizes {} and {} must be -1 (unbounded) or non-negative",
                spec.left, spec.right
            ));
        }
        let mask = has(3).then(|| self.input(node, 3)).transpose()?;
        if let Some(m) = mask {
            let mt = &self.g.value(m).ty;
            if mt.dtype != DType::Bool && mt.dtype != dtype {
                return Err(format!(
                    "attn_mask is {}: it must be bool or Q's type {dtype}",
                    mt.dtype
                ));
            }
            let cols = self.shape_of(m)?.last().copied().unwrap_or(1);
            if cols > t {
                return Err(format!(
                    "attn_mask covers {cols} keys but there are only {t}"
                ));
            }
        }
        // The IR's causal mask is aligned bottom-right (query i sees keys j <= i + t - s);
        // ONNX aligns it at the cache length, which is the same when this call's keys and
        // queries are equally many.
        let aligned = !spec.causal || (t >= s && past_len == t - s);
        let mask_full = match mask {
            Some(m) => self.shape_of(m)?.last().copied().unwrap_or(1) == t,
            None => true,
        };
        let fused = wants(3).is_none()
            && spec.softcap <= 0.0
            && spec.softmax_dtype.is_none()
            && nonpad.is_none()
            && spec.left < 0
            && spec.right < 0
            && aligned
            && mask_full;
        let heads_out = if rank == 3 {
            format!("{out}.heads")
        } else {
            out.clone()
        };
        let y = if fused {
            let mut inputs = vec![q4, k4, v4];
            inputs.extend(mask);
            let op = Op::Attention {
                causal: spec.causal,
                scale: attr(node, "scale").map(|_| spec.scale),
            };
            self.emit_named(&heads_out, op, &inputs)?
        } else {
            let shapes = Sizes {
                b,
                hq,
                hkv,
                s,
                t,
                past_len,
            };
            self.spelled_out(node, &spec, shapes, [q4, k4, v4], mask, nonpad, &heads_out)?
        };
        if rank == 3 {
            let tr = self.emit_named(
                &format!("{out}.merge"),
                Op::Transpose {
                    perm: vec![0, 2, 1, 3],
                },
                &[y],
            )?;
            let mut dims = self.g.value(q).ty.shape.dims()[..2].to_vec();
            dims.push(Dim::Fixed(hq * dv));
            self.emit_named(&out, Op::Reshape { shape: Shape(dims) }, &[tr])?;
        }
        Ok(())
    }

    /// `[b, s, h * d]` → `[b, h, s, d]`.
    fn split_heads(&mut self, name: &str, x: ValueId, heads: u64) -> NResult<ValueId> {
        let shape = self.g.value(x).ty.shape.clone();
        let hidden = self.shape_of(x)?[2];
        if hidden % heads != 0 {
            return Err(format!(
                "{heads} heads do not divide the hidden size {hidden} of {name}"
            ));
        }
        let mut view = shape.dims()[..2].to_vec();
        view.extend([Dim::Fixed(heads), Dim::Fixed(hidden / heads)]);
        let r = self.emit_named(
            &format!("{name}_heads"),
            Op::Reshape { shape: Shape(view) },
            &[x],
        )?;
        self.emit_named(
            &format!("{name}4"),
            Op::Transpose {
                perm: vec![0, 2, 1, 3],
            },
            &[r],
        )
    }

    /// A constant of the given shape and values (non-finite values allowed).
    fn tensor_constant(
        &mut self,
        name: &str,
        dtype: DType,
        dims: &[u64],
        values: Vec<f64>,
    ) -> NResult<ValueId> {
        let op = Op::Constant {
            dtype,
            shape: Shape::new(dims.iter().copied()),
            init: Init::Inline(values),
        };
        self.emit_named(name, op, &[])
    }

    /// The definition of `Attention` in primitive ops, step for step as ONNX states it.
    #[allow(clippy::too_many_arguments)]
    fn spelled_out(
        &mut self,
        node: &NodeProto,
        spec: &Spec,
        n: Sizes,
        [q, k, v]: [ValueId; 3],
        mask: Option<ValueId>,
        nonpad: Option<ValueId>,
        y_name: &str,
    ) -> NResult<ValueId> {
        let out = node.output[0].clone();
        let dtype = self.g.value(q).ty.dtype;
        let name = |part: &str| format!("{out}.{part}");
        // ONNX scales Q and K by sqrt(scale) each, in Q's type.
        let root = self.constant(&name("sqrt_scale"), dtype, vec![spec.scale.sqrt()])?;
        let qs = self.emit_named(&name("q_scaled"), Op::Mul, &[q, root])?;
        let ks = self.emit_named(&name("k_scaled"), Op::Mul, &[k, root])?;
        // Grouped-query attention: each KV head serves hq / hkv consecutive query heads.
        let (ks, v) = if n.hq != n.hkv {
            (
                self.repeat_heads(&name("k_rep"), ks, n.hq / n.hkv)?,
                self.repeat_heads(&name("v_rep"), v, n.hq / n.hkv)?,
            )
        } else {
            (ks, v)
        };
        let mut scores = self.emit_named(
            &name("scores"),
            Op::MatMul {
                transpose_a: false,
                transpose_b: true,
            },
            &[qs, ks],
        )?;
        if spec.softcap > 0.0 {
            let cap = self.constant(&name("softcap"), dtype, vec![spec.softcap])?;
            let x = self.emit_named(&name("capped_div"), Op::Div, &[scores, cap])?;
            let x = self.emit_named(&name("capped_tanh"), Op::Tanh, &[x])?;
            scores = self.emit_named(&name("capped"), Op::Mul, &[x, cap])?;
        }
        let (bias, may_mask_a_row) = self.attention_bias(&out, spec, &n, dtype, mask, nonpad)?;
        let biased = match bias {
            Some(bias) => self.emit_named(&name("biased"), Op::Add, &[scores, bias])?,
            None => scores,
        };
        let qk_name = node.output.get(3).filter(|o| !o.is_empty()).cloned();
        if let Some(qk) = &qk_name {
            // As ONNX's reference computes it: modes 0 and 1 give the (soft-capped)
            // scores, 2 adds the bias, 3 is the softmax (below).
            match spec.mode {
                0 | 1 => {
                    let shape = self.g.value(scores).ty.shape.clone();
                    self.emit_named(qk, Op::Reshape { shape }, &[scores])?;
                }
                2 => {
                    let shape = self.g.value(biased).ty.shape.clone();
                    self.emit_named(qk, Op::Reshape { shape }, &[biased])?;
                }
                _ => {}
            }
        }
        let soft_in = match spec.softmax_dtype {
            Some(to) => self.emit_named(&name("softmax_in"), Op::Cast { to }, &[biased])?,
            None => biased,
        };
        let mut probs = self.emit_named(&name("probs"), Op::Softmax { axis: -1 }, &[soft_in])?;
        // A query whose every key is masked attends to nothing: its row is zero.
        if let (Some(bias), true) = (bias, may_mask_a_row) {
            let soft_dtype = spec.softmax_dtype.unwrap_or(dtype);
            let row_max = self.emit_named(
                &name("bias_row_max"),
                Op::Reduce {
                    kind: ReduceKind::Max,
                    axes: vec![-1],
                    keepdims: true,
                },
                &[bias],
            )?;
            // max - max is NaN exactly when the max is infinite, i.e. -inf: all masked.
            let diff = self.emit_named(&name("bias_row_diff"), Op::Sub, &[row_max, row_max])?;
            let masked = self.emit_named(&name("row_masked"), Op::IsNan, &[diff])?;
            let zero = self.constant(&name("zero"), soft_dtype, vec![0.0])?;
            probs = self.emit_named(&name("probs_guarded"), Op::Where, &[masked, zero, probs])?;
        }
        if let Some(to) = spec.softmax_dtype.map(|_| dtype) {
            probs = self.emit_named(&name("probs_cast"), Op::Cast { to }, &[probs])?;
        }
        if let (Some(qk), 3) = (&qk_name, spec.mode) {
            let shape = self.g.value(probs).ty.shape.clone();
            self.emit_named(qk, Op::Reshape { shape }, &[probs])?;
        }
        self.emit_named(
            y_name,
            Op::MatMul {
                transpose_a: false,
                transpose_b: false,
            },
            &[probs, v],
        )
    }

    /// `[b, h, t, d]` → `[b, h * r, t, d]`, each head repeated `r` times in place.
    fn repeat_heads(&mut self, name: &str, x: ValueId, r: u64) -> NResult<ValueId> {
        let dims = self.g.value(x).ty.shape.dims().to_vec();
        let mut wide = dims.clone();
        wide.insert(2, Dim::Fixed(1));
        let x1 = self.emit_named(
            &format!("{name}_1"),
            Op::Reshape {
                shape: Shape(wide.clone()),
            },
            &[x],
        )?;
        wide[2] = Dim::Fixed(r);
        let xr = self.emit_named(
            &format!("{name}_r"),
            Op::Expand { shape: Shape(wide) },
            &[x1],
        )?;
        let mut merged = dims;
        let h = self.shape_of(x)?[1];
        merged[1] = Dim::Fixed(h * r);
        self.emit_named(
            name,
            Op::Reshape {
                shape: Shape(merged),
            },
            &[xr],
        )
    }

    /// The additive bias (0 where a key is visible, -inf where not) from the mask, the
    /// causal and sliding-window constraints and the per-batch KV lengths; `None` when
    /// nothing is masked. The flag says whether some query row may be fully masked.
    fn attention_bias(
        &mut self,
        out: &str,
        spec: &Spec,
        n: &Sizes,
        dtype: DType,
        mask: Option<ValueId>,
        nonpad: Option<ValueId>,
    ) -> NResult<(Option<ValueId>, bool)> {
        let name = |part: &str| format!("{out}.{part}");
        let mut parts: Vec<ValueId> = Vec::new();
        let mut dynamic = false;
        if let Some(m) = mask {
            dynamic = true;
            let shape = self.shape_of(m)?;
            let cols = shape.last().copied().unwrap_or(1);
            let is_bool = self.g.value(m).ty.dtype == DType::Bool;
            // A mask shorter than the keys leaves the extra keys masked.
            let m = if cols < n.t && !shape.is_empty() {
                let mut pad_dims = shape.clone();
                *pad_dims.last_mut().unwrap_or(&mut 0) = n.t - cols;
                let (pad_dtype, fill) = if is_bool {
                    (DType::Bool, 0.0)
                } else {
                    (dtype, f64::NEG_INFINITY)
                };
                let op = Op::Constant {
                    dtype: pad_dtype,
                    shape: Shape::new(pad_dims),
                    init: Init::Fill { value: fill },
                };
                let pad = self.emit_named(&name("mask_pad"), op, &[])?;
                self.emit_named(&name("mask_padded"), Op::Concat { axis: -1 }, &[m, pad])?
            } else {
                m
            };
            parts.push(if is_bool {
                self.keep_to_bias(&name("mask_bias"), m, dtype)?
            } else {
                m
            });
        }
        let (s, t) = (n.s as i64, n.t as i64);
        // Causal, window and KV-length masks are written out as [s, t] constants here;
        // past a size that would be a memory hazard, say so rather than allocate it.
        let needs_grid = spec.causal || spec.left >= 0 || spec.right >= 0 || nonpad.is_some();
        if needs_grid && n.s.saturating_mul(n.t) > MAX_MASK_ELEMENTS {
            return Err(format!(
                "this Attention needs its mask spelled out as a {}×{} constant (more than {MAX_MASK_ELEMENTS} values); only the IR's fused attention handles sequences this long",
                n.s, n.t
            ));
        }
        match nonpad {
            None => {
                // Causal and window constraints are known now: one constant [s, t].
                let offset = n.past_len as i64;
                let visible = |i: i64, j: i64| {
                    let diff = i + offset - j;
                    (!spec.causal || diff >= 0)
                        && (spec.left < 0 || diff <= spec.left)
                        && (spec.right < 0 || -diff <= spec.right)
                };
                if spec.causal || spec.left >= 0 || spec.right >= 0 {
                    let mut values = Vec::with_capacity((s * t) as usize);
                    let mut row_empty = false;
                    for i in 0..s {
                        let before = values.len();
                        values.extend((0..t).map(|j| {
                            if visible(i, j) {
                                0.0
                            } else {
                                f64::NEG_INFINITY
                            }
                        }));
                        row_empty |= values[before..].iter().all(|x| x.is_infinite());
                    }
                    dynamic |= row_empty;
                    parts.push(self.tensor_constant(
                        &name("causal_bias"),
                        dtype,
                        &[n.s, n.t],
                        values,
                    )?);
                }
            }
            Some(lengths) => {
                // Per-batch valid KV lengths L[b]: key j is visible when j < L[b], and the
                // causal and window frontiers sit at offset L[b] - s. Each condition is
                // `±L[b] + c[i, j] > 0` on exact small integers held in f32.
                dynamic = true;
                let lf =
                    self.emit_named(&name("kv_len"), Op::Cast { to: DType::F32 }, &[lengths])?;
                let lb = self.emit_named(
                    &name("kv_len_b"),
                    Op::Reshape {
                        shape: Shape::new([n.b, 1, 1, 1]),
                    },
                    &[lf],
                )?;
                let mut conditions: Vec<(i64, Vec<f64>)> =
                    vec![(1, grid(s, t, |_, j| -(j as f64)))];
                if spec.causal {
                    // j <= i + L - s  ⇔  L + (i - j - s + 1) > 0
                    conditions.push((1, grid(s, t, |i, j| (i - j - s + 1) as f64)));
                }
                if spec.left >= 0 {
                    // i + L - s - j <= left  ⇔  -L + (left - i + s + j + 1) > 0
                    conditions.push((-1, grid(s, t, |i, j| (spec.left - i + s + j + 1) as f64)));
                }
                if spec.right >= 0 {
                    // j - (i + L - s) <= right  ⇔  L + (right + i - s - j + 1) > 0
                    conditions.push((1, grid(s, t, |i, j| (spec.right + i - s - j + 1) as f64)));
                }
                let mut allowed: Option<ValueId> = None;
                for (c, (sign, values)) in conditions.into_iter().enumerate() {
                    let cst = self.tensor_constant(
                        &name(&format!("kv_c{c}")),
                        DType::F32,
                        &[n.s, n.t],
                        values,
                    )?;
                    let x = if sign > 0 {
                        self.emit_named(&name(&format!("kv_d{c}")), Op::Add, &[lb, cst])?
                    } else {
                        self.emit_named(&name(&format!("kv_d{c}")), Op::Sub, &[cst, lb])?
                    };
                    let x = self.emit_named(&name(&format!("kv_r{c}")), Op::Relu, &[x])?;
                    allowed = Some(match allowed {
                        None => x,
                        Some(a) => {
                            self.emit_named(&name(&format!("kv_and{c}")), Op::Mul, &[a, x])?
                        }
                    });
                }
                let allowed = allowed.ok_or("no KV-length condition")?;
                let keep =
                    self.emit_named(&name("kv_keep"), Op::Cast { to: DType::Bool }, &[allowed])?;
                parts.push(self.keep_to_bias(&name("kv_bias"), keep, dtype)?);
            }
        }
        let mut bias = None;
        for (i, p) in parts.into_iter().enumerate() {
            bias = Some(match bias {
                None => p,
                Some(b) => self.emit_named(&name(&format!("bias_sum{i}")), Op::Add, &[b, p])?,
            });
        }
        Ok((bias, dynamic))
    }

    /// A boolean keep-mask as an additive bias: `where(keep, 0, -inf)`.
    fn keep_to_bias(&mut self, name: &str, keep: ValueId, dtype: DType) -> NResult<ValueId> {
        let zero = self.constant(&format!("{name}_zero"), dtype, vec![0.0])?;
        let ninf = self.constant(&format!("{name}_ninf"), dtype, vec![f64::NEG_INFINITY])?;
        self.emit_named(name, Op::Where, &[keep, zero, ninf])
    }
}

/// The sizes the spelled-out form needs, all known at import.
struct Sizes {
    b: u64,
    hq: u64,
    hkv: u64,
    s: u64,
    t: u64,
    past_len: u64,
}

fn dims4(shape: &[u64]) -> [u64; 4] {
    [shape[0], shape[1], shape[2], shape[3]]
}

/// Row-major `[s, t]` values of `f(i, j)`.
fn grid(s: i64, t: i64, f: impl Fn(i64, i64) -> f64) -> Vec<f64> {
    let f = &f;
    (0..s).flat_map(|i| (0..t).map(move |j| f(i, j))).collect()
}
