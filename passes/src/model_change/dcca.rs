//! BigMac's DCCA (Jin et al., AAAI 2025): see `MODEL_CHANGING_RULES` in `mod.rs`.

use weft_ir::{Graph, ModelChange};

use crate::PassError;

/// Options of `--allow dcca`.
#[derive(Clone, Debug, PartialEq)]
pub struct DccaOptions {
    /// The downscale ratio `r` as a fraction `num/den` (the paper's 0.25 is `1/4`), so
    /// that `r·h` is checked to be a whole number rather than rounded.
    pub ratio: (u64, u64),
    /// Seed of the generator that draws new weights the model does not hold (the plan is
    /// then marked `untrained`).
    pub seed: u64,
}

impl Default for DccaOptions {
    /// The paper's `r = 0.25`.
    fn default() -> DccaOptions {
        DccaOptions {
            ratio: (1, 4),
            seed: 0,
        }
    }
}

/// Parses `--dcca-ratio`: a fraction `1/4` or a decimal `0.25` (read exactly as a
/// fraction of a power of ten), strictly between 0 and 1.
pub fn parse_ratio(s: &str) -> Result<(u64, u64), String> {
    let s = s.trim();
    let (num, den) = if let Some((a, b)) = s.split_once('/') {
        let a: u64 = a
            .trim()
            .parse()
            .map_err(|_| format!("`{a}` in `{s}` is not a whole number"))?;
        let b: u64 = b
            .trim()
            .parse()
            .map_err(|_| format!("`{b}` in `{s}` is not a whole number"))?;
        (a, b)
    } else {
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if frac.len() > 9 || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "`{s}` is not a ratio such as 0.25 or 1/4 (at most 9 decimals)"
            ));
        }
        let int: u64 = if int.is_empty() {
            0
        } else {
            int.parse()
                .map_err(|_| format!("`{s}` is not a ratio such as 0.25 or 1/4"))?
        };
        let den = 10u64.pow(frac.len() as u32);
        let frac_v: u64 = if frac.is_empty() {
            0
        } else {
            frac.parse().unwrap_or(0)
        };
        // A ratio below 1 has a whole part of 0; anything larger is refused below, and the
        // checked arithmetic keeps a huge whole part from overflowing first.
        let num = int
            .checked_mul(den)
            .and_then(|n| n.checked_add(frac_v))
            .ok_or_else(|| format!("the DCCA ratio `{s}` must be strictly between 0 and 1"))?;
        (num, den)
    };
    if den == 0 || num == 0 || num >= den {
        return Err(format!(
            "the DCCA ratio `{s}` must be strictly between 0 and 1 (the paper uses 0.25)"
        ));
    }
    let g = gcd(num, den);
    Ok((num / g, den / g))
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Applies DCCA to every MoE layer of `graph`.
pub(crate) fn apply(
    _graph: &Graph,
    _options: &DccaOptions,
) -> Result<(Graph, ModelChange), PassError> {
    Err(PassError::Refused {
        pass: "model-change",
        reason: "dcca is not built yet".into(),
    })
}
