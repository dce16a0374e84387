//! One decode step of a dense Llama-family model with a KV cache.
//!
//! Each of `batch` sequences brings one new token; the keys and values of the `kv_len`
//! tokens before it are graph inputs (`layers.{l}.k_cache` / `v_cache`, `[batch,
//! kv_heads, kv_len, head_dim]`, keys already rotated, as inference servers store them).
//! Each layer appends the new token's key and value to its cache (a concat along the
//! sequence axis) and attends over all `kv_len + 1` positions; `Attention`'s causal mask
//! is aligned bottom-right, so the one query sees every key. The new token's position is
//! the input `position` (`[1]`, i64; `kv_len` for a cache of that length), which the
//! rotary embedding needs and no shape carries.
//!
//! Outputs: the logits `[batch, 1, vocab]`, then per layer the new token's rotated key
//! and its value (`layers.{l}.k_new` / `v_new`, `[batch, kv_heads, 1, head_dim]`): the
//! next step's cache is this step's plus these, so a server needs them back, and
//! returning only the new row (not the concatenated cache) is what lets it append in
//! place instead of copying the cache every step.

use weft_ir::{DType, Dim, Graph, Mesh, Op, Rule, VerifyError};

use super::{Builder, LlamaConfig, attention_out_and_ffn_norm, dense_mlp, project_heads, shape};

/// The default cache length of the bundled decode example (the other Llama examples'
/// sequence length); `--dim kv_len=N` changes it.
pub const DEFAULT_KV_LEN: u64 = 2048;

/// Builds one decode step of the dense model `cfg` (its `seq` is unused: one new token;
/// `batch` and `kv_len` are symbolic dims, bound to `cfg.batch` and [`DEFAULT_KV_LEN`]).
/// A mixture-of-experts or headless config is refused.
pub fn llama_decode(cfg: &LlamaConfig) -> Result<Graph, VerifyError> {
    if cfg.moe.is_some() || !cfg.embed_and_head {
        return Err(VerifyError {
            node: None,
            rule: Box::new(Rule::Attr(format!(
                "{}: the decode builder makes dense models with embedding and head only",
                cfg.name
            ))),
        });
    }
    let mut b = Builder {
        g: Graph::new(cfg.name.clone()),
        dtype: cfg.dtype,
        next_seed: 0,
    };
    b.g.dims.insert("batch".into(), cfg.batch);
    b.g.dims.insert("kv_len".into(), DEFAULT_KV_LEN);
    b.g.mesh = Mesh::default();
    let (batch, kv_len, one) = (Dim::sym("batch"), Dim::sym("kv_len"), Dim::Fixed(1));
    let hd = cfg.head_dim();

    let tokens = b.op(
        "tokens",
        Op::Input {
            dtype: DType::I64,
            shape: shape(&[batch.clone(), one.clone()]),
        },
        &[],
    )?;
    let position = b.op(
        "position",
        Op::Input {
            dtype: DType::I64,
            shape: shape(std::slice::from_ref(&one)),
        },
        &[],
    )?;
    let cache_shape = shape(&[
        batch.clone(),
        Dim::Fixed(cfg.kv_heads),
        kv_len,
        Dim::Fixed(hd),
    ]);
    let mut caches = Vec::new();
    for l in 0..cfg.layers {
        let mut pair = Vec::new();
        for kv in ["k", "v"] {
            pair.push(b.op(
                &format!("layers.{l}.{kv}_cache"),
                Op::Input {
                    dtype: cfg.dtype,
                    shape: cache_shape.clone(),
                },
                &[],
            )?);
        }
        caches.push(pair);
    }
    let table = b.weight("embed.weight", &[cfg.vocab, cfg.hidden], None)?;
    let mut x = b.op("embed", Op::Gather { axis: 0 }, &[table, tokens])?;
    let (cos, sin) = b.op2(
        "rope",
        Op::RopeCache {
            theta: cfg.rope_theta,
            dim: hd,
        },
        &[position],
    )?;

    let mut new_kv = Vec::new();
    for (l, cache) in caches.iter().enumerate() {
        let p = format!("layers.{l}");
        let w = b.norm_weight(&format!("{p}.attn_norm.weight"), cfg.hidden)?;
        let h = b.op(
            &format!("{p}.attn_norm"),
            Op::RmsNorm { eps: cfg.norm_eps },
            &[x, w],
        )?;
        let heads = project_heads(&mut b, cfg, &p, h, &one)?;
        let q = b.op(
            &format!("{p}.attn.q_rope"),
            Op::Rope { interleaved: false },
            &[heads[0], cos, sin],
        )?;
        let k_new = b.op(
            &format!("{p}.k_new"),
            Op::Rope { interleaved: false },
            &[heads[1], cos, sin],
        )?;
        // The value needs no op of its own; a copy names it as an output.
        let v_new = b.op(
            &format!("{p}.v_new"),
            Op::Reshape {
                shape: shape(&[
                    batch.clone(),
                    Dim::Fixed(cfg.kv_heads),
                    one.clone(),
                    Dim::Fixed(hd),
                ]),
            },
            &[heads[2]],
        )?;
        let k = b.op(
            &format!("{p}.attn.k_all"),
            Op::Concat { axis: 2 },
            &[cache[0], k_new],
        )?;
        let v = b.op(
            &format!("{p}.attn.v_all"),
            Op::Concat { axis: 2 },
            &[cache[1], v_new],
        )?;
        let a = b.op(
            &format!("{p}.attn.sdpa"),
            Op::Attention {
                causal: true,
                scale: None,
            },
            &[q, k, v],
        )?;
        let (residual, h) = attention_out_and_ffn_norm(&mut b, cfg, &p, a, x, &one)?;
        x = residual;
        let f = dense_mlp(&mut b, cfg, &p, h)?;
        x = b.op(&format!("{p}.ffn_residual"), Op::Add, &[x, f])?;
        new_kv.push((k_new, v_new));
    }
    let w = b.norm_weight("final_norm.weight", cfg.hidden)?;
    let h = b.op("final_norm", Op::RmsNorm { eps: cfg.norm_eps }, &[x, w])?;
    let w = b.weight("lm_head.weight", &[cfg.hidden, cfg.vocab], None)?;
    let logits = b.matmul("logits", h, w)?;
    b.g.outputs.push(logits);
    for (k, v) in new_kv {
        b.g.outputs.push(k);
        b.g.outputs.push(v);
    }
    Ok(b.g)
}
