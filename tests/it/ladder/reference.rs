//! The ladder-residual paper's equations written out directly, in plain loops over the
//! model's weights: no Weft IR, rewrite or executor is involved, only the weights'
//! values (materialised from the graph's initialisers) and the hyper-parameters the
//! model was built with.
//!
//! The loop is techniques.md §1.1's (the paper's `x_{i+1} = h_{i+1}(x_{i-1}) + x_i`):
//!
//! ```text
//! r_0 = Embed(tokens)
//! for j in 1..=2L:                          // Attn_1, MLP_1, Attn_2, ...
//!     input = r_{max(j-2, 0)} if module j is converted else r_{j-1}
//!     r_j   = r_{j-1} + h_j(input)
//! logits = RMSNorm(r_2L) @ W_head
//! ```
//!
//! `h_j` is pre-norm attention (RMSNorm, q/k/v projections, rotary embedding on the
//! first and second halves of each head, grouped-query causal softmax attention, output
//! projection), a SwiGLU MLP, or a Mixtral MoE block (softmax router, top-k renormalised,
//! SwiGLU experts).

use std::collections::BTreeMap;

use weft::ir::{Dim, Graph, Op, Tensor};
use weft::zoo::LlamaConfig;

/// The model's weights by name, as f32.
pub struct Weights(BTreeMap<String, Vec<f32>>);

impl Weights {
    pub fn of(graph: &Graph) -> Weights {
        let mut map = BTreeMap::new();
        for (_, node) in graph.nodes() {
            if let Op::Weight { dtype, shape, init } = &node.op {
                let dims: Vec<usize> = shape
                    .0
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => *n as usize,
                        other => panic!("weight `{}` has a symbolic dim {other:?}", node.name),
                    })
                    .collect();
                let zeros = vec![0; dims.len()];
                let t = weft::cpu::materialize::materialize(
                    init,
                    *dtype,
                    &dims,
                    &dims,
                    &zeros,
                    std::path::Path::new("."),
                    1,
                )
                .unwrap();
                let v = t.to_f64_vec().into_iter().map(|x| x as f32).collect();
                map.insert(node.name.clone(), v);
            }
        }
        Weights(map)
    }

    fn get(&self, name: &str) -> &[f32] {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("no weight `{name}`"))
    }
}

/// `a [m, k] @ b [k, n]`.
fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    assert_eq!(a.len(), m * k);
    assert_eq!(b.len(), k * n);
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for p in 0..k {
            let x = a[i * k + p];
            for j in 0..n {
                c[i * n + j] += x * b[p * n + j];
            }
        }
    }
    c
}

/// `x / sqrt(mean(x²) + eps) * w`, row by row.
fn rms_norm(x: &[f32], w: &[f32], eps: f64) -> Vec<f32> {
    let h = w.len();
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks_exact(h) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / h as f32;
        let r = 1.0 / (ms + eps as f32).sqrt();
        y.extend(row.iter().zip(w).map(|(v, g)| v * r * g));
    }
    y
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Rotates one head vector (`[d]`) for position `pos`: pairs `(i, i + d/2)` turn by
/// `pos · θ^(-2i/d)`.
fn rotate(v: &mut [f32], pos: i64, theta: f64) {
    let d = v.len();
    let h = d / 2;
    for i in 0..h {
        let angle = pos as f64 * theta.powf(-2.0 * i as f64 / d as f64);
        let (c, s) = (angle.cos() as f32, angle.sin() as f32);
        let (a, b) = (v[i], v[i + h]);
        v[i] = a * c - b * s;
        v[i + h] = b * c + a * s;
    }
}

/// Per layer, the new token's keys and values (`[B, kv, rows, hd]`).
pub type NewKv = Vec<(Vec<f32>, Vec<f32>)>;

/// Which modules are converted (1-based module index `j`, two per layer).
pub type Converted<'a> = &'a dyn Fn(usize) -> bool;

/// The KV cache of one decode step: per layer, keys and values `[B, kv, T, hd]` (keys
/// already rotated), and the new token's position.
pub struct Cache {
    pub k: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    pub len: usize,
    pub position: i64,
}

pub struct Reference<'a> {
    pub cfg: &'a LlamaConfig,
    pub w: &'a Weights,
}

impl Reference<'_> {
    fn hd(&self) -> usize {
        (self.cfg.hidden / self.cfg.heads) as usize
    }

    /// Attention module of layer `l` on `x [B, S, H]` (already the module's input).
    /// Returns the output `[B, S, H]` and the new keys and values `[B, kv, S, hd]`.
    fn attention(
        &self,
        l: usize,
        x: &[f32],
        rows: usize,
        cache: Option<&Cache>,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let c = self.cfg;
        let (b, h, hq, hkv, hd) = (
            c.batch as usize,
            c.hidden as usize,
            c.heads as usize,
            c.kv_heads as usize,
            self.hd(),
        );
        let p = format!("layers.{l}");
        let n = rms_norm(x, self.w.get(&format!("{p}.attn_norm.weight")), c.norm_eps);
        let proj = |name: &str, heads: usize| {
            matmul(
                &n,
                self.w.get(&format!("{p}.attn.{name}_proj.weight")),
                b * rows,
                h,
                heads * hd,
            )
        };
        let (mut q, mut k, v) = (proj("q", hq), proj("k", hkv), proj("v", hkv));
        // Positions: 0..S for a whole sequence, the cache's position for a decode step.
        let pos = |s: usize| cache.map_or(s as i64, |c| c.position);
        for bi in 0..b {
            for s in 0..rows {
                for hh in 0..hq {
                    let o = ((bi * rows + s) * hq + hh) * hd;
                    rotate(&mut q[o..o + hd], pos(s), c.rope_theta);
                }
                for hh in 0..hkv {
                    let o = ((bi * rows + s) * hkv + hh) * hd;
                    rotate(&mut k[o..o + hd], pos(s), c.rope_theta);
                }
            }
        }
        // New keys and values head-major, [B, kv, S, hd].
        let head_major = |t: &[f32]| {
            let mut out = vec![0f32; t.len()];
            for bi in 0..b {
                for s in 0..rows {
                    for hh in 0..hkv {
                        for d in 0..hd {
                            out[((bi * hkv + hh) * rows + s) * hd + d] =
                                t[((bi * rows + s) * hkv + hh) * hd + d];
                        }
                    }
                }
            }
            out
        };
        let (k_new, v_new) = (head_major(&k), head_major(&v));
        let past = cache.map_or(0, |c| c.len);
        // Key/value `tk` of head `kh` in batch `bi`: from the cache, then the new rows.
        let key = |bi: usize, kh: usize, tk: usize, which: &[f32], cached: Option<&[f32]>| {
            if tk < past {
                let cached = cached.unwrap();
                let o = ((bi * hkv + kh) * past + tk) * hd;
                cached[o..o + hd].to_vec()
            } else {
                let o = ((bi * hkv + kh) * rows + (tk - past)) * hd;
                which[o..o + hd].to_vec()
            }
        };
        let (ck, cv) = (
            cache.map(|c| c.k[l].as_slice()),
            cache.map(|c| c.v[l].as_slice()),
        );
        let scale = 1.0 / (hd as f32).sqrt();
        let group = hq / hkv;
        let mut merged = vec![0f32; b * rows * hq * hd];
        for bi in 0..b {
            for hh in 0..hq {
                let kh = hh / group;
                for s in 0..rows {
                    let qo = ((bi * rows + s) * hq + hh) * hd;
                    let qv = &q[qo..qo + hd];
                    // Causal, aligned bottom-right: query s sees keys tk <= s + past.
                    let visible = s + past + 1;
                    let scores: Vec<f32> = (0..visible)
                        .map(|tk| {
                            let kv = key(bi, kh, tk, &k_new, ck);
                            qv.iter().zip(&kv).map(|(a, b)| a * b).sum::<f32>() * scale
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f32 = e.iter().sum();
                    let out = &mut merged[qo..qo + hd];
                    for (tk, &p) in e.iter().enumerate() {
                        let vv = key(bi, kh, tk, &v_new, cv);
                        for d in 0..hd {
                            out[d] += p / total * vv[d];
                        }
                    }
                }
            }
        }
        let o = matmul(
            &merged,
            self.w.get(&format!("{p}.attn.o_proj.weight")),
            b * rows,
            hq * hd,
            h,
        );
        (o, k_new, v_new)
    }

    /// The feed-forward module of layer `l` (SwiGLU MLP, or Mixtral MoE) on `x`.
    fn feed_forward(&self, l: usize, x: &[f32], rows: usize) -> Vec<f32> {
        let c = self.cfg;
        let (t, h, f) = (c.batch as usize * rows, c.hidden as usize, c.ffn as usize);
        let p = format!("layers.{l}");
        let n = rms_norm(x, self.w.get(&format!("{p}.ffn_norm.weight")), c.norm_eps);
        let swiglu = |x: &[f32], m: usize, wg: &[f32], wu: &[f32], wd: &[f32]| {
            let g = matmul(x, wg, m, h, f);
            let u = matmul(x, wu, m, h, f);
            let a: Vec<f32> = g.iter().zip(&u).map(|(g, u)| silu(*g) * u).collect();
            matmul(&a, wd, m, f, h)
        };
        let Some(moe) = &c.moe else {
            return swiglu(
                &n,
                t,
                self.w.get(&format!("{p}.mlp.gate_proj.weight")),
                self.w.get(&format!("{p}.mlp.up_proj.weight")),
                self.w.get(&format!("{p}.mlp.down_proj.weight")),
            );
        };
        let (e, k) = (moe.experts as usize, moe.top_k as usize);
        let logits = matmul(&n, self.w.get(&format!("{p}.moe.router.weight")), t, h, e);
        let (w1, w3, w2) = (
            self.w.get(&format!("{p}.moe.experts.gate.weight")),
            self.w.get(&format!("{p}.moe.experts.up.weight")),
            self.w.get(&format!("{p}.moe.experts.down.weight")),
        );
        let mut out = vec![0f32; t * h];
        for ti in 0..t {
            let row = &logits[ti * e..(ti + 1) * e];
            // Softmax over all experts, the top k kept and renormalised (Mixtral).
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let ex: Vec<f32> = row.iter().map(|x| (x - max).exp()).collect();
            let total: f32 = ex.iter().sum();
            let mut order: Vec<usize> = (0..e).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            let top = &order[..k];
            let kept: f32 = top.iter().map(|&i| ex[i] / total).sum();
            let xt = &n[ti * h..(ti + 1) * h];
            for &ei in top {
                let gate = ex[ei] / total / kept;
                let y = swiglu(
                    xt,
                    1,
                    &w1[ei * h * f..(ei + 1) * h * f],
                    &w3[ei * h * f..(ei + 1) * h * f],
                    &w2[ei * f * h..(ei + 1) * f * h],
                );
                for (o, y) in out[ti * h..(ti + 1) * h].iter_mut().zip(&y) {
                    *o += gate * y;
                }
            }
        }
        out
    }

    /// The ladder loop from the stream's start `r_0` (`[B, rows, H]`); returns `r_2L`
    /// and the new keys and values of every layer.
    pub fn stream(
        &self,
        r0: Vec<f32>,
        rows: usize,
        converted: Converted<'_>,
        cache: Option<&Cache>,
    ) -> (Vec<f32>, NewKv) {
        let layers = self.cfg.layers as usize;
        let mut r = vec![r0];
        let mut kv = Vec::new();
        for j in 1..=2 * layers {
            let input = if converted(j) {
                &r[j.saturating_sub(2)]
            } else {
                &r[j - 1]
            };
            let l = (j - 1) / 2;
            let y = if j % 2 == 1 {
                let (y, k, v) = self.attention(l, input, rows, cache);
                kv.push((k, v));
                y
            } else {
                self.feed_forward(l, input, rows)
            };
            let next: Vec<f32> = r[j - 1].iter().zip(&y).map(|(a, b)| a + b).collect();
            r.push(next);
        }
        (r.pop().unwrap(), kv)
    }

    /// Embedding, the ladder loop, final norm and head: the logits `[B, rows, vocab]`.
    pub fn logits(
        &self,
        tokens: &[i64],
        rows: usize,
        converted: Converted<'_>,
        cache: Option<&Cache>,
    ) -> (Vec<f32>, NewKv) {
        let h = self.cfg.hidden as usize;
        let table = self.w.get("embed.weight");
        let r0: Vec<f32> = tokens
            .iter()
            .flat_map(|&t| table[t as usize * h..(t as usize + 1) * h].iter().copied())
            .collect();
        let (last, kv) = self.stream(r0, rows, converted, cache);
        let n = rms_norm(&last, self.w.get("final_norm.weight"), self.cfg.norm_eps);
        let logits = matmul(
            &n,
            self.w.get("lm_head.weight"),
            tokens.len(),
            h,
            self.cfg.vocab as usize,
        );
        (logits, kv)
    }
}

/// An f32 tensor of `shape`.
pub fn tensor(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
    Tensor::from_f32(weft::ir::DType::F32, shape, data).unwrap()
}
