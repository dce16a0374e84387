//! Builders for Llama-family model graphs (dense and mixture-of-experts) with seeded
//! random weights. They produce the bundled examples and the synthetic models that
//! tests and benchmarks need at real dimensions, without storing any weights.

use weft_ir::{DType, Dim, Graph, Init, Mesh, Op, Shape, ValueId, VerifyError};

mod decode;
mod gpt_moe;
mod scenarios;

pub use decode::{DEFAULT_KV_LEN, llama_decode};
pub use gpt_moe::{GptMoeConfig, gpt_moe};
pub use scenarios::{
    GemmSublayer, ScenarioModel, SublayerKind, gemm_sublayer, moe_block_only, scenario_models,
};

/// Mixture-of-experts feed-forward settings (Mixtral style: top-k routing,
/// renormalised weights, SiLU-gated experts).
#[derive(Clone, Debug)]
pub struct MoeConfig {
    pub experts: u64,
    pub top_k: u64,
}

/// The shape of a Llama-family decoder.
#[derive(Clone, Debug)]
pub struct LlamaConfig {
    pub name: String,
    pub vocab: u64,
    pub hidden: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub ffn: u64,
    pub layers: u64,
    pub dtype: DType,
    pub batch: u64,
    pub seq: u64,
    pub rope_theta: f64,
    pub norm_eps: f64,
    pub moe: Option<MoeConfig>,
    /// With `false`, the graph is decoder layers alone: it takes hidden states
    /// `[batch, seq, hidden]` instead of token ids and has no embedding, final norm or LM head.
    pub embed_and_head: bool,
}

impl LlamaConfig {
    /// Llama-3-70B: hidden 8192, 64 heads, 8 KV heads, FFN 28672, vocab 128256, 80 layers, bf16.
    pub fn llama3_70b() -> LlamaConfig {
        LlamaConfig {
            name: "llama3-70b".into(),
            vocab: 128_256,
            hidden: 8192,
            heads: 64,
            kv_heads: 8,
            ffn: 28_672,
            layers: 80,
            dtype: DType::Bf16,
            batch: 1,
            seq: 2048,
            rope_theta: 500_000.0,
            norm_eps: 1e-5,
            moe: None,
            embed_and_head: true,
        }
    }

    /// One Mixtral-8x7B decoder layer: hidden 4096, 32 heads, 8 KV heads, 8 experts top-2, FFN 14336.
    pub fn mixtral_8x7b_layer() -> LlamaConfig {
        LlamaConfig {
            name: "mixtral-8x7b-moe-layer".into(),
            vocab: 32_000,
            hidden: 4096,
            heads: 32,
            kv_heads: 8,
            ffn: 14_336,
            layers: 1,
            dtype: DType::Bf16,
            batch: 1,
            seq: 2048,
            rope_theta: 1_000_000.0,
            norm_eps: 1e-5,
            moe: Some(MoeConfig {
                experts: 8,
                top_k: 2,
            }),
            embed_and_head: false,
        }
    }

    /// A 2-layer Llama small enough to execute on a CPU in milliseconds.
    pub fn tiny() -> LlamaConfig {
        LlamaConfig {
            name: "tiny-llama".into(),
            vocab: 256,
            hidden: 64,
            heads: 4,
            kv_heads: 2,
            ffn: 128,
            layers: 2,
            dtype: DType::F32,
            batch: 1,
            seq: 16,
            rope_theta: 10_000.0,
            norm_eps: 1e-5,
            moe: None,
            embed_and_head: true,
        }
    }

    fn head_dim(&self) -> u64 {
        self.hidden / self.heads
    }
}

struct Builder {
    g: Graph,
    dtype: DType,
    next_seed: u64,
}

impl Builder {
    fn weight(
        &mut self,
        name: &str,
        shape: &[u64],
        init: Option<Init>,
    ) -> Result<ValueId, VerifyError> {
        self.next_seed += 1;
        let init = init.unwrap_or(Init::Normal {
            seed: self.next_seed,
            mean: 0.0,
            std: 0.02,
        });
        let op = Op::Weight {
            dtype: self.dtype,
            shape: Shape::new(shape.iter().copied()),
            init,
        };
        self.g.add(name, op, &[])
    }

    /// A norm weight: random around one, so tests notice a misaligned or missing scale.
    fn norm_weight(&mut self, name: &str, dim: u64) -> Result<ValueId, VerifyError> {
        let init = Init::Normal {
            seed: self.next_seed + 1,
            mean: 1.0,
            std: 0.02,
        };
        self.weight(name, &[dim], Some(init))
    }

    fn op(&mut self, name: &str, op: Op, inputs: &[ValueId]) -> Result<ValueId, VerifyError> {
        self.g.add(name, op, inputs)
    }

    fn op2(
        &mut self,
        name: &str,
        op: Op,
        inputs: &[ValueId],
    ) -> Result<(ValueId, ValueId), VerifyError> {
        let node = self.g.add_node(name, op, inputs.to_vec())?;
        let outs = &self.g.node(node).outputs;
        Ok((outs[0], outs[1]))
    }

    fn matmul(&mut self, name: &str, a: ValueId, b: ValueId) -> Result<ValueId, VerifyError> {
        self.op(
            name,
            Op::MatMul {
                transpose_a: false,
                transpose_b: false,
            },
            &[a, b],
        )
    }
}

fn shape(dims: &[Dim]) -> Shape {
    Shape(dims.to_vec())
}

/// Builds the graph described by `cfg`.
pub fn llama(cfg: &LlamaConfig) -> Result<Graph, VerifyError> {
    let mut b = Builder {
        g: Graph::new(cfg.name.clone()),
        dtype: cfg.dtype,
        next_seed: 0,
    };
    b.g.dims.insert("batch".into(), cfg.batch);
    b.g.dims.insert("seq".into(), cfg.seq);
    b.g.mesh = Mesh::default();
    let (batch, seq) = (Dim::sym("batch"), Dim::sym("seq"));
    let hd = cfg.head_dim();

    let mut x = if cfg.embed_and_head {
        let tokens = b.op(
            "tokens",
            Op::Input {
                dtype: DType::I64,
                shape: shape(&[batch.clone(), seq.clone()]),
            },
            &[],
        )?;
        let table = b.weight("embed.weight", &[cfg.vocab, cfg.hidden], None)?;
        b.op("embed", Op::Gather { axis: 0 }, &[table, tokens])?
    } else {
        b.op(
            "hidden_states",
            Op::Input {
                dtype: cfg.dtype,
                shape: shape(&[batch.clone(), seq.clone(), Dim::Fixed(cfg.hidden)]),
            },
            &[],
        )?
    };
    let positions = b.op(
        "positions",
        Op::Constant {
            dtype: DType::I64,
            shape: Shape(vec![seq.clone()]),
            init: Init::Range {
                start: 0.0,
                step: 1.0,
            },
        },
        &[],
    )?;
    let (cos, sin) = b.op2(
        "rope",
        Op::RopeCache {
            theta: cfg.rope_theta,
            dim: hd,
        },
        &[positions],
    )?;

    for l in 0..cfg.layers {
        let p = format!("layers.{l}");
        // Attention block.
        let w = b.norm_weight(&format!("{p}.attn_norm.weight"), cfg.hidden)?;
        let h = b.op(
            &format!("{p}.attn_norm"),
            Op::RmsNorm { eps: cfg.norm_eps },
            &[x, w],
        )?;
        let heads = project_heads(&mut b, cfg, &p, h, &seq)?;
        let q = b.op(
            &format!("{p}.attn.q_rope"),
            Op::Rope { interleaved: false },
            &[heads[0], cos, sin],
        )?;
        let k = b.op(
            &format!("{p}.attn.k_rope"),
            Op::Rope { interleaved: false },
            &[heads[1], cos, sin],
        )?;
        let a = b.op(
            &format!("{p}.attn.sdpa"),
            Op::Attention {
                causal: true,
                scale: None,
            },
            &[q, k, heads[2]],
        )?;
        let (residual, h) = attention_out_and_ffn_norm(&mut b, cfg, &p, a, x, &seq)?;
        x = residual;

        // Feed-forward block.
        let f = match &cfg.moe {
            None => dense_mlp(&mut b, cfg, &p, h)?,
            Some(moe) => moe_block(&mut b, cfg, moe, &p, h)?,
        };
        x = b.op(&format!("{p}.ffn_residual"), Op::Add, &[x, f])?;
    }

    let out = if cfg.embed_and_head {
        let w = b.norm_weight("final_norm.weight", cfg.hidden)?;
        let h = b.op("final_norm", Op::RmsNorm { eps: cfg.norm_eps }, &[x, w])?;
        let w = b.weight("lm_head.weight", &[cfg.hidden, cfg.vocab], None)?;
        b.matmul("logits", h, w)?
    } else {
        x
    };
    b.g.outputs.push(out);
    Ok(b.g)
}

/// The attention's output `attn` (`[batch, heads, rows, head_dim]`) merged back into
/// `[batch, rows, heads·head_dim]`, projected by `o_proj` and added to the residual `x`;
/// then the feed-forward block's RMSNorm. Returns the residual and the normed value.
fn attention_out_and_ffn_norm(
    b: &mut Builder,
    cfg: &LlamaConfig,
    p: &str,
    attn: ValueId,
    x: ValueId,
    rows: &Dim,
) -> Result<(ValueId, ValueId), VerifyError> {
    let hd = cfg.head_dim();
    let a = b.op(
        &format!("{p}.attn.out_t"),
        Op::Transpose {
            perm: vec![0, 2, 1, 3],
        },
        &[attn],
    )?;
    let a = b.op(
        &format!("{p}.attn.merge_heads"),
        Op::Reshape {
            shape: shape(&[Dim::sym("batch"), rows.clone(), Dim::Fixed(cfg.heads * hd)]),
        },
        &[a],
    )?;
    let w = b.weight(
        &format!("{p}.attn.o_proj.weight"),
        &[cfg.heads * hd, cfg.hidden],
        None,
    )?;
    let o = b.matmul(&format!("{p}.attn.o_proj"), a, w)?;
    let x = b.op(&format!("{p}.attn_residual"), Op::Add, &[x, o])?;
    let w = b.norm_weight(&format!("{p}.ffn_norm.weight"), cfg.hidden)?;
    let h = b.op(
        &format!("{p}.ffn_norm"),
        Op::RmsNorm { eps: cfg.norm_eps },
        &[x, w],
    )?;
    Ok((x, h))
}

/// The q, k and v projections of `h` (`[batch, seq, hidden]`), split into heads and
/// transposed to `[batch, heads, seq, head_dim]`.
fn project_heads(
    b: &mut Builder,
    cfg: &LlamaConfig,
    p: &str,
    h: ValueId,
    seq: &Dim,
) -> Result<Vec<ValueId>, VerifyError> {
    let hd = cfg.head_dim();
    let batch = Dim::sym("batch");
    let mut heads = Vec::new();
    for (proj, n) in [("q", cfg.heads), ("k", cfg.kv_heads), ("v", cfg.kv_heads)] {
        let w = b.weight(
            &format!("{p}.attn.{proj}_proj.weight"),
            &[cfg.hidden, n * hd],
            None,
        )?;
        let y = b.matmul(&format!("{p}.attn.{proj}_proj"), h, w)?;
        let split = b.op(
            &format!("{p}.attn.{proj}_heads"),
            Op::Reshape {
                shape: shape(&[batch.clone(), seq.clone(), Dim::Fixed(n), Dim::Fixed(hd)]),
            },
            &[y],
        )?;
        let t = b.op(
            &format!("{p}.attn.{proj}_t"),
            Op::Transpose {
                perm: vec![0, 2, 1, 3],
            },
            &[split],
        )?;
        heads.push(t);
    }
    Ok(heads)
}

/// The SiLU-gated feed-forward block of a dense Llama layer.
fn dense_mlp(
    b: &mut Builder,
    cfg: &LlamaConfig,
    p: &str,
    h: ValueId,
) -> Result<ValueId, VerifyError> {
    let wg = b.weight(
        &format!("{p}.mlp.gate_proj.weight"),
        &[cfg.hidden, cfg.ffn],
        None,
    )?;
    let wu = b.weight(
        &format!("{p}.mlp.up_proj.weight"),
        &[cfg.hidden, cfg.ffn],
        None,
    )?;
    let wd = b.weight(
        &format!("{p}.mlp.down_proj.weight"),
        &[cfg.ffn, cfg.hidden],
        None,
    )?;
    let g = b.matmul(&format!("{p}.mlp.gate_proj"), h, wg)?;
    let u = b.matmul(&format!("{p}.mlp.up_proj"), h, wu)?;
    let g = b.op(&format!("{p}.mlp.act"), Op::Silu, &[g])?;
    let m = b.op(&format!("{p}.mlp.gated"), Op::Mul, &[g, u])?;
    b.matmul(&format!("{p}.mlp.down_proj"), m, wd)
}

fn moe_block(
    b: &mut Builder,
    cfg: &LlamaConfig,
    moe: &MoeConfig,
    p: &str,
    h: ValueId,
) -> Result<ValueId, VerifyError> {
    let (batch, seq) = (Dim::sym("batch"), Dim::sym("seq"));
    let tokens = b.op(
        &format!("{p}.moe.flatten"),
        Op::Reshape {
            shape: shape(&[Dim::sym("batch*seq"), Dim::Fixed(cfg.hidden)]),
        },
        &[h],
    )?;
    let wr = b.weight(
        &format!("{p}.moe.router.weight"),
        &[cfg.hidden, moe.experts],
        None,
    )?;
    let logits = b.matmul(&format!("{p}.moe.router"), tokens, wr)?;
    let (weights, ids) = b.op2(
        &format!("{p}.moe.route"),
        Op::MoeRoute {
            top_k: moe.top_k,
            normalize: true,
        },
        &[logits],
    )?;
    let (sorted, counts) = b.op2(
        &format!("{p}.moe.dispatch"),
        Op::MoeDispatch {
            num_experts: moe.experts,
        },
        &[tokens, ids],
    )?;
    let e = moe.experts;
    let w1 = b.weight(
        &format!("{p}.moe.experts.gate.weight"),
        &[e, cfg.hidden, cfg.ffn],
        None,
    )?;
    let w3 = b.weight(
        &format!("{p}.moe.experts.up.weight"),
        &[e, cfg.hidden, cfg.ffn],
        None,
    )?;
    let w2 = b.weight(
        &format!("{p}.moe.experts.down.weight"),
        &[e, cfg.ffn, cfg.hidden],
        None,
    )?;
    let emm = Op::ExpertMatMul {
        transpose_b: false,
        rows: weft_ir::ExpertRows::Dense,
    };
    let g = b.op(
        &format!("{p}.moe.experts.gate"),
        emm.clone(),
        &[sorted, counts, w1],
    )?;
    let u = b.op(
        &format!("{p}.moe.experts.up"),
        emm.clone(),
        &[sorted, counts, w3],
    )?;
    let g = b.op(&format!("{p}.moe.experts.act"), Op::Silu, &[g])?;
    let m = b.op(&format!("{p}.moe.experts.gated"), Op::Mul, &[g, u])?;
    let y = b.op(&format!("{p}.moe.experts.down"), emm, &[m, counts, w2])?;
    let combined = b.op(
        &format!("{p}.moe.combine"),
        Op::MoeCombine,
        &[y, weights, ids],
    )?;
    b.op(
        &format!("{p}.moe.unflatten"),
        Op::Reshape {
            shape: shape(&[batch, seq, Dim::Fixed(cfg.hidden)]),
        },
        &[combined],
    )
}

/// How a bundled example is built.
#[derive(Clone, Debug)]
pub enum Example {
    /// A Llama-family model over a whole sequence ([`llama`]).
    Llama(LlamaConfig),
    /// One decode step of a dense Llama-family model with a KV cache ([`llama_decode`]).
    LlamaDecode(LlamaConfig),
    /// A GPT-style fine-grained mixture-of-experts model ([`gpt_moe`]).
    GptMoe(GptMoeConfig),
}

impl Example {
    pub fn build(&self) -> Result<Graph, VerifyError> {
        match self {
            Example::Llama(cfg) => llama(cfg),
            Example::LlamaDecode(cfg) => llama_decode(cfg),
            Example::GptMoe(cfg) => gpt_moe(cfg),
        }
    }
}

/// Every example model shipped in `examples/`, by file name: [`bundled_examples`] and
/// the decode step and the fine-grained MoE model.
pub fn all_examples() -> Vec<(&'static str, Example)> {
    let mut all: Vec<(&'static str, Example)> = bundled_examples()
        .into_iter()
        .map(|(file, cfg)| (file, Example::Llama(cfg)))
        .collect();
    let decode = LlamaConfig {
        name: "llama3-70b-decode".into(),
        ..LlamaConfig::llama3_70b()
    };
    all.push(("llama3-70b-decode.json", Example::LlamaDecode(decode)));
    all.push((
        "gpt3-xl-moe.json",
        Example::GptMoe(GptMoeConfig::gpt3_xl_moe()),
    ));
    all.sort_by_key(|(file, _)| *file);
    all
}

/// The example models shipped in `examples/` that [`llama`] builds over a whole
/// sequence, by file name (the ones tests scale down through [`LlamaConfig`]).
pub fn bundled_examples() -> Vec<(&'static str, LlamaConfig)> {
    let layer = LlamaConfig {
        name: "llama3-70b-layer".into(),
        layers: 1,
        embed_and_head: false,
        ..LlamaConfig::llama3_70b()
    };
    vec![
        ("llama3-70b-layer.json", layer),
        ("llama3-70b.json", LlamaConfig::llama3_70b()),
        (
            "mixtral-8x7b-moe-layer.json",
            LlamaConfig::mixtral_8x7b_layer(),
        ),
        ("tiny-llama.json", LlamaConfig::tiny()),
    ]
}
