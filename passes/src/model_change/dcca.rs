//! BigMac's DCCA (Jin et al., AAAI 2025): see `MODEL_CHANGING_RULES` in `mod.rs`.

mod find;
mod rewrite;
mod weights;

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

/// Applies DCCA to every MoE layer of `graph` (see the module's files: `find` names the
/// layers, `weights` the new weights and their source, `rewrite` writes the graph).
///
/// Per layer (BigMac Eq. 2 and 4): `x' = x W'_down` (`[h, r·h]`) before the dispatch,
/// the router still reading `x`; every expert takes and returns width `r·h`, its inner
/// width scaled by `1/r` so its parameter count is unchanged (for the paper's
/// fine-grained experts, inner width `r·h`, this is exactly its reversed expert
/// `σ(x' W_up) W_down` with `W_up: [r·h, h]`, `W_down: [h, r·h]`); `y = y' W'_up`
/// (`[r·h, h]`) after the combine. Refused, naming the layer, where a width would not
/// be a whole number or the block is not one DCCA understands; refused for a graph with
/// no MoE layer, one DCCA was already applied to, or a model holding only some of the
/// new weights.
pub(crate) fn apply(
    graph: &Graph,
    options: &DccaOptions,
) -> Result<(Graph, ModelChange), PassError> {
    let refused = |reason: String| PassError::Refused {
        pass: "model-change",
        reason: format!("dcca: {reason}"),
    };
    let (num, den) = options.ratio;
    if num == 0 || den == 0 || num >= den {
        return Err(refused(format!(
            "the ratio {num}/{den} must be strictly between 0 and 1"
        )));
    }
    if graph.model_changes.iter().any(|c| c.rule == "dcca") {
        return Err(refused(format!(
            "`{}` already has DCCA applied; applying it twice would shrink the all-to-alls \
             again with weights nobody trained",
            graph.name
        )));
    }
    let layers = find::find(graph).map_err(refused)?;
    if layers.is_empty() {
        return Err(refused(format!(
            "`{}` has no MoE layer (moe_dispatch ... moe_combine) to project",
            graph.name
        )));
    }
    let weights = layers
        .iter()
        .map(|l| weights::plan(graph, l, options.ratio))
        .collect::<Result<Vec<_>, _>>()
        .map_err(refused)?;
    let wanted: Vec<&weights::NewWeight> = weights.iter().flat_map(|w| w.all()).collect();
    let source = weights::source(graph, &wanted, options.seed).map_err(refused)?;
    let changed = rewrite::rewrite(graph, &layers, &weights, &source, options.ratio)?;
    let added = layers.iter().try_fold(0u64, |acc, l| {
        let r = weights::scale(l.hidden, num, den)?;
        acc.checked_add(r.checked_mul(l.hidden)?.checked_mul(2)?)
    });
    let first = &layers[0];
    // Distinct widths in order (a GELU expert's entry and exit share one).
    let widths = |v: &[u64]| {
        let mut seen: Vec<u64> = Vec::new();
        for &w in v {
            if !seen.contains(&w) {
                seen.push(w);
            }
        }
        seen.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("/")
    };
    let detail = format!(
        "r = {num}/{den}: {} MoE layer{} ({}{}); all-to-alls at width {} instead of {}; \
         expert inner width {} -> {}; +{} parameters (2·r·h² per layer); new weights {}",
        layers.len(),
        if layers.len() == 1 { "" } else { "s" },
        first.prefix,
        if layers.len() > 1 {
            format!(" … {}", layers[layers.len() - 1].prefix)
        } else {
            String::new()
        },
        weights[0].reduced,
        first.hidden,
        widths(&first.inner),
        widths(&weights[0].inner),
        added.map_or_else(|| "more than 2^64".to_owned(), |a| a.to_string()),
        match source {
            weights::Source::Read(_) => "read from the model".to_owned(),
            weights::Source::Drawn { seed } => format!("drawn from seed {seed}"),
        }
    );
    let untrained = matches!(source, weights::Source::Drawn { .. });
    Ok((
        changed,
        ModelChange {
            rule: "dcca".into(),
            detail,
            untrained,
        },
    ))
}
