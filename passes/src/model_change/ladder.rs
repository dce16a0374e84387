//! Ladder residual (Zhang et al., ICML 2025): see `MODEL_CHANGING_RULES` in `mod.rs`.

use std::fmt;
use std::str::FromStr;

use weft_ir::{Graph, ModelChange};

use crate::PassError;

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
pub(crate) fn apply(
    _graph: &Graph,
    _options: &LadderOptions,
) -> Result<(Graph, ModelChange), PassError> {
    Err(PassError::Refused {
        pass: "model-change",
        reason: "ladder-residual is not built yet".into(),
    })
}
