//! Ladder residual (Zhang et al., ICML 2025): see `MODEL_CHANGING_RULES` in `mod.rs`.

use std::fmt;
use std::str::FromStr;

use weft_ir::{Graph, ModelChange};

use crate::PassError;

mod stream;

use stream::ModuleKind;

/// Which layers `--ladder-layers` converts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LadderLayers {
    /// Every layer (the paper's models trained as ladder from scratch).
    #[default]
    All,
    /// Layers `first..=last` (0-based; the paper's conversion of a pretrained model takes
    /// the upper half, e.g. `40..79` of 80).
    Range { first: u32, last: u32 },
    /// A what-if sweep over the number of converted upper layers (`weft compile` only).
    Auto,
}

impl FromStr for LadderLayers {
    type Err = String;
    fn from_str(s: &str) -> Result<LadderLayers, String> {
        let s = s.trim();
        match s {
            "all" => return Ok(LadderLayers::All),
            "auto" => return Ok(LadderLayers::Auto),
            _ => {}
        }
        let (a, b) = s
            .split_once("..")
            .ok_or_else(|| format!("`{s}` is not `all`, `auto` or a layer range `A..B`"))?;
        let b = b.strip_prefix('=').unwrap_or(b);
        let first: u32 = a
            .trim()
            .parse()
            .map_err(|_| format!("`{a}` in `{s}` is not a layer number"))?;
        let last: u32 = b
            .trim()
            .parse()
            .map_err(|_| format!("`{b}` in `{s}` is not a layer number"))?;
        if first > last {
            return Err(format!(
                "layer range `{s}` is empty: its first layer {first} is after its last {last}"
            ));
        }
        Ok(LadderLayers::Range { first, last })
    }
}

impl fmt::Display for LadderLayers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LadderLayers::All => f.write_str("all"),
            LadderLayers::Auto => f.write_str("auto"),
            LadderLayers::Range { first, last } => write!(f, "{first}..{last}"),
        }
    }
}

/// Options of `--allow ladder`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LadderOptions {
    pub layers: LadderLayers,
}

/// Converts the layers `options` names; the record says which.
///
/// On the raised graph's residual stream (see [`stream`]), every converted module `j`
/// (attention or MLP/MoE, numbered `1..=2L` from the first attention) reads `r_{j-2}`
/// where it read `r_{j-1}`: each read of `r_{j-1}` by the module's own nodes (its norm)
/// is re-pointed. The residual adds stay, so the stream is still the sum of every
/// module's output and the head reads the full sum with no extra op; what changes is
/// that `r_{j-1}` (and so module `j-1`'s all-reduce) is no longer needed until module
/// `j+1`.
///
/// The first converted module: for layer 0, `r_{-1}` is the embedding `r_0`, so Attn_0
/// and MLP_0 both read the embedding (the paper's `gpt_ladder_TP.py`, where both
/// previous outputs start at zero). For a hybrid conversion starting at layer `l0 > 0`,
/// the rule is the same and needs no special case: the first converted attention reads
/// `r_{j-2}`, the stream after layer `l0-1`'s attention and before its MLP output was
/// added. That is what the authors' Hugging Face adaptation does
/// (`mayank31398/ladder-residual-inference`, `hf_modeling_utils/modeling_llama_ladder.py`,
/// `LlamaLadderModel.forward`): every layer, ladder or not, hands on
/// `prev_attn_output`, the residual after its attention, and the first layer in
/// `config.ladder_layers` feeds its attention's norm from it, and its MLP's norm from
/// the previous layer's full output. Layers after a converted range read `r_{j-1}`
/// again, as that code's standard layers do.
pub(crate) fn apply(
    graph: &Graph,
    options: &LadderOptions,
) -> Result<(Graph, ModelChange), PassError> {
    let refuse = |reason: String| PassError::Refused {
        pass: "model-change",
        reason: format!("ladder-residual: {reason}"),
    };
    let modules = stream::residual_modules(graph)
        .map_err(|e| refuse(format!("`{}` does not fit: {e}", graph.name)))?;
    let layers =
        layer_of_modules(&modules).map_err(|e| refuse(format!("`{}`: {e}", graph.name)))?;
    let Some(count) = layers.last().map(|&l| l + 1) else {
        return Err(refuse(format!("`{}` has no transformer layer", graph.name)));
    };
    let (first, last) = match options.layers {
        LadderLayers::All => (0, count - 1),
        LadderLayers::Range { first, last } => {
            if last >= count {
                return Err(refuse(format!(
                    "the layer range {first}..{last} runs past the last layer of `{}`, {} \
                     ({count} layers, numbered from 0)",
                    graph.name,
                    count - 1
                )));
            }
            (first, last)
        }
        LadderLayers::Auto => {
            return Err(refuse(
                "`--ladder-layers auto` is a sweep over compiled plans, which only \
                 `weft compile` runs; give `all` or a range `A..B` here"
                    .into(),
            ));
        }
    };
    let mut out = graph.clone();
    let mut rewired = 0usize;
    // `i` is 0-based: module `j = i + 1` reads `r_{j-2}`, the stream input of module
    // `j - 1`; module 1 reads `r_0` either way.
    for (i, module) in modules.iter().enumerate().skip(1) {
        if !(first..=last).contains(&layers[i]) {
            continue;
        }
        let stale = modules[i - 1].stream_in;
        for &n in &module.nodes {
            for v in &mut out.node_mut(n).inputs {
                if *v == module.stream_in {
                    *v = stale;
                    rewired += 1;
                }
            }
        }
    }
    // Every converted layer has an MLP module past module 1, whose norm reads the stream.
    if rewired == 0 {
        return Err(refuse(format!(
            "no module of layers {first}..={last} of `{}` reads the residual stream (a bug \
             in the stream analysis)",
            graph.name
        )));
    }
    let mut kinds: Vec<&str> = Vec::new();
    for m in &modules {
        if !kinds.contains(&m.kind.name()) {
            kinds.push(m.kind.name());
        }
    }
    let converted = last - first + 1;
    let change = ModelChange {
        rule: "ladder-residual".into(),
        detail: format!(
            "layers {first}..={last}, {converted} of {count}: {} {} modules read the residual \
             stream from before the previous module's output",
            2 * converted,
            kinds.join(" + ")
        ),
        untrained: false,
    };
    Ok((out, change))
}

/// The layer of each module: the attentions count layers, and every layer is an
/// attention followed by one MLP or MoE block (the paper's alternation).
fn layer_of_modules(modules: &[stream::Module]) -> Result<Vec<u32>, String> {
    let sequence = || {
        modules
            .iter()
            .map(|m| m.kind.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if modules.len() % 2 != 0 {
        return Err(format!(
            "its residual stream's modules ({}) do not pair into attention + MLP layers",
            sequence()
        ));
    }
    let mut layers = Vec::with_capacity(modules.len());
    for (j, m) in modules.iter().enumerate() {
        let want_attention = j % 2 == 0;
        if (m.kind == ModuleKind::Attention) != want_attention {
            return Err(format!(
                "its residual stream's modules ({}) do not alternate attention, MLP as \
                 ladder residual's layers do",
                sequence()
            ));
        }
        layers.push(u32::try_from(j / 2).map_err(|_| "too many layers".to_owned())?);
    }
    Ok(layers)
}
