//! The record a model-changing rewrite leaves on the graph it changed.
//!
//! Exact rewrites (saturation) keep the function a graph computes; a *model-changing*
//! rewrite (ladder residual, BigMac's DCCA) computes a different function that needs
//! weights trained for it. Whoever holds a changed graph — a dump, a plan, a report —
//! must be able to say so without re-deriving it, so the fact travels with the graph:
//! every pass that builds a new graph from an old one copies [`Graph::model_changes`]
//! (rebuild, sharding, extraction, the JSON format), and every printer lists it.
//!
//! [`Graph::model_changes`]: crate::Graph::model_changes

/// One model-changing rewrite applied to a graph.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ModelChange {
    /// The rule's name, as `weft rules` lists it (`ladder-residual`, `dcca`).
    pub rule: String,
    /// What it changed, in one line: the layers converted, the ratio, the parameters added.
    pub detail: String,
    /// Some new weights were drawn from the seeded generator rather than read from the
    /// model: the graph is a what-if study whose outputs mean nothing.
    #[cfg_attr(feature = "serde", serde(default))]
    pub untrained: bool,
}

impl ModelChange {
    /// One line for reports: `ladder-residual (layers 40..=79) [untrained]`.
    pub fn summary(&self) -> String {
        format!(
            "{} ({}){}",
            self.rule,
            self.detail,
            if self.untrained { " [untrained]" } else { "" }
        )
    }
}

/// The summaries of `changes`, comma-separated, for one-line reports.
pub fn summaries(changes: &[ModelChange]) -> String {
    changes
        .iter()
        .map(ModelChange::summary)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The warning every printer puts beside a changed graph's list of changes.
pub const OUTPUTS_DIFFER: &str =
    "model-changing rewrites applied: outputs differ from the source model's";
