//! The models of the validation scenarios (`examples/scenarios/`, `docs/validation.md`):
//! each paper's setup reduced to the part its reported speedup measures, built here so
//! the committed model files can be rebuilt and checked byte for byte.
//!
//! - a mixture-of-experts block alone (router, experts, combine: Comet's "single MoE
//!   layer", without the attention that Comet's single-layer runs leave out);
//! - a stack of dense Llama decoder layers without embedding or LM head (TokenWeave,
//!   PyTorch async-TP);
//! - one decode step of the whole Llama-3-70B (80 layers, embedding and LM head): ladder
//!   residual's decode figures are end to end;
//! - one GEMM sublayer as Flux and T3 measure it: an all-gather feeding a
//!   column-parallel GEMM, or a row-parallel GEMM feeding a reduce-scatter;
//! - a two-layer GPT3-XL-MoE (embedding, layers and LM head; BigMac's inference runs).

use weft_ir::{DType, Dim, Graph, Mesh, Op, Placement, Rule, Sharding, VerifyError};

use super::{Builder, GptMoeConfig, LlamaConfig, gpt_moe, llama, llama_decode, moe_block, shape};

/// Which collective the GEMM sublayer overlaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SublayerKind {
    /// `RMSNorm(x)` on the token shard, all-gathered, times a column-parallel weight: the
    /// first GEMM of a Megatron-SP MLP. It needs `--sp-norms`: that is how the sharder
    /// writes the gather (a whole-activation request alone lets it gather the weight).
    AllGatherGemm,
    /// `x` split by columns times a row-parallel weight, the partial sums reduce-scattered
    /// by tokens: the second GEMM of a Megatron-SP MLP (layout requested on the nodes).
    GemmReduceScatter,
}

/// One `[tokens, k] × [k, n]` GEMM sublayer; `tokens` is the symbolic dim `tokens`.
#[derive(Clone, Debug)]
pub struct GemmSublayer {
    pub name: String,
    pub kind: SublayerKind,
    pub tokens: u64,
    pub k: u64,
    pub n: u64,
    pub dtype: DType,
}

/// Builds the sublayer `s` describes.
pub fn gemm_sublayer(s: &GemmSublayer) -> Result<Graph, VerifyError> {
    let mut b = Builder {
        g: Graph::new(s.name.clone()),
        dtype: s.dtype,
        next_seed: 0,
    };
    b.g.dims.insert("tokens".into(), s.tokens);
    b.g.mesh = Mesh::default();
    let tokens = Dim::sym("tokens");
    let x = b.op(
        "x",
        Op::Input {
            dtype: s.dtype,
            shape: shape(&[tokens, Dim::Fixed(s.k)]),
        },
        &[],
    )?;
    let y = match s.kind {
        SublayerKind::AllGatherGemm => {
            let w = b.norm_weight("norm.weight", s.k)?;
            let h = b.op("norm", Op::RmsNorm { eps: 1e-5 }, &[x, w])?;
            let w = b.weight("gemm.weight", &[s.k, s.n], None)?;
            b.matmul("gemm", h, w)?
        }
        SublayerKind::GemmReduceScatter => {
            let w = b.weight("gemm.weight", &[s.k, s.n], None)?;
            let y = b.matmul("gemm", x, w)?;
            let request = |d: usize| Sharding::on("tp", Placement::Split(d));
            b.g.value_mut(x).sharding = request(1);
            b.g.value_mut(w).sharding = request(0);
            b.g.value_mut(y).sharding = request(0);
            y
        }
    };
    b.g.outputs.push(y);
    Ok(b.g)
}

/// The mixture-of-experts block of `cfg` alone: `hidden_states` (`[batch, seq, hidden]`)
/// routed, run through the experts and combined. A dense `cfg` is refused.
pub fn moe_block_only(cfg: &LlamaConfig) -> Result<Graph, VerifyError> {
    let Some(moe) = &cfg.moe else {
        return Err(VerifyError {
            node: None,
            rule: Box::new(Rule::Attr(format!(
                "{}: a mixture-of-experts block needs a config with `moe` set",
                cfg.name
            ))),
        });
    };
    let mut b = Builder {
        g: Graph::new(cfg.name.clone()),
        dtype: cfg.dtype,
        next_seed: 0,
    };
    b.g.dims.insert("batch".into(), cfg.batch);
    b.g.dims.insert("seq".into(), cfg.seq);
    b.g.mesh = Mesh::default();
    let x = b.op(
        "hidden_states",
        Op::Input {
            dtype: cfg.dtype,
            shape: shape(&[Dim::sym("batch"), Dim::sym("seq"), Dim::Fixed(cfg.hidden)]),
        },
        &[],
    )?;
    let y = moe_block(&mut b, cfg, moe, "layers.0", x)?;
    // Tokens arrive and leave split by sequence over whichever of `tp` and `ep` the mesh
    // has (a request on an axis the mesh lacks is dropped): each device routes its own
    // tokens, as Comet's layers do, instead of all of them followed by a gather.
    let split = Sharding::on("tp", Placement::Split(1)).with("ep", Placement::Split(1));
    b.g.value_mut(x).sharding = split.clone();
    b.g.value_mut(y).sharding = split;
    b.g.outputs.push(y);
    Ok(b.g)
}

/// How a scenario model is built.
#[derive(Clone, Debug)]
pub enum ScenarioModel {
    /// Decoder layers of a dense Llama-family model ([`llama`]).
    Llama(LlamaConfig),
    /// One decode step of a dense Llama-family model with a KV cache ([`llama_decode`]).
    LlamaDecode(LlamaConfig),
    /// A mixture-of-experts block alone ([`moe_block_only`]).
    MoeBlock(LlamaConfig),
    /// One GEMM sublayer ([`gemm_sublayer`]).
    Gemm(GemmSublayer),
    /// A GPT-style fine-grained mixture-of-experts model ([`gpt_moe`]).
    GptMoe(GptMoeConfig),
}

impl ScenarioModel {
    pub fn build(&self) -> Result<Graph, VerifyError> {
        match self {
            ScenarioModel::Llama(cfg) => llama(cfg),
            ScenarioModel::LlamaDecode(cfg) => llama_decode(cfg),
            ScenarioModel::MoeBlock(cfg) => moe_block_only(cfg),
            ScenarioModel::Gemm(s) => gemm_sublayer(s),
            ScenarioModel::GptMoe(cfg) => gpt_moe(cfg),
        }
    }
}

/// Every model in `examples/scenarios/models/`, by file name.
pub fn scenario_models() -> Vec<(&'static str, ScenarioModel)> {
    let two_layers = LlamaConfig {
        name: "llama3-70b-2-layers".into(),
        layers: 2,
        embed_and_head: false,
        ..LlamaConfig::llama3_70b()
    };
    let moe = LlamaConfig {
        name: "mixtral-8x7b-moe-block".into(),
        seq: 8192,
        ..LlamaConfig::mixtral_8x7b_layer()
    };
    // Flux's dense MLP benchmark (bytedance/flux docs/performance.md): M=4096, K=12288,
    // N=49152, fp16; the first GEMM is (M×K)@(K×N), the second (M×N)@(N×K).
    let flux = |name: &str, kind, k, n| GemmSublayer {
        name: name.into(),
        kind,
        tokens: 4096,
        k,
        n,
        dtype: DType::F16,
    };
    // Llama-3-70B's two GEMM+RS sublayers at 2048 tokens (see the T3 scenario: T3's own
    // shapes are not in the stored sources).
    let llama_rs = |name: &str, k| GemmSublayer {
        name: name.into(),
        kind: SublayerKind::GemmReduceScatter,
        tokens: 2048,
        k,
        n: 8192,
        dtype: DType::Bf16,
    };
    vec![
        (
            "flux-ag-gemm.json",
            ScenarioModel::Gemm(flux(
                "flux-ag-gemm",
                SublayerKind::AllGatherGemm,
                12_288,
                49_152,
            )),
        ),
        (
            "flux-gemm-rs.json",
            ScenarioModel::Gemm(flux(
                "flux-gemm-rs",
                SublayerKind::GemmReduceScatter,
                49_152,
                12_288,
            )),
        ),
        ("llama3-70b-2-layers.json", ScenarioModel::Llama(two_layers)),
        // Ladder residual's end-to-end decode figures: the whole 80-layer model with
        // embedding and LM head, one decode step.
        (
            "llama3-70b-80-layers-decode.json",
            ScenarioModel::LlamaDecode(LlamaConfig {
                name: "llama3-70b-80-layers-decode".into(),
                ..LlamaConfig::llama3_70b()
            }),
        ),
        (
            "llama3-70b-down-proj-rs.json",
            ScenarioModel::Gemm(llama_rs("llama3-70b-down-proj-rs", 28_672)),
        ),
        (
            "llama3-70b-o-proj-rs.json",
            ScenarioModel::Gemm(llama_rs("llama3-70b-o-proj-rs", 8192)),
        ),
        ("mixtral-8x7b-moe-block.json", ScenarioModel::MoeBlock(moe)),
        // BigMac's inference runs (DCCA): GPT3-XL-MoE's shape, two layers, 128k tokens
        // per batch (prompt 128 × 1024 sequences; a setting binds other prompts).
        (
            "gpt3-xl-moe-2-layers.json",
            ScenarioModel::GptMoe(GptMoeConfig {
                name: "gpt3-xl-moe-2-layers".into(),
                layers: 2,
                batch: 1024,
                seq: 128,
                ..GptMoeConfig::gpt3_xl_moe()
            }),
        ),
    ]
}
