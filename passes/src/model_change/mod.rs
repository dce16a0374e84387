//! Opt-in **model-changing** rewrites: ladder residual and BigMac's DCCA.
//!
//! Saturation's rules are equalities, so the e-graph may mix them freely and extraction
//! picks among programs that all compute the source model's function. The rewrites here
//! are not equalities — each computes a different function, which needs weights trained
//! for it — so they never enter the e-graph (where a union of two different functions
//! of the same type would go unnoticed by the merge check). They run as one pass on the
//! raised graph, before sharding and saturation, and only for the names the user lists
//! with `--allow`. The pass records each rewrite on the graph
//! ([`weft_ir::Graph::model_changes`]); every later artefact (dumps, checks, plans,
//! `weft inspect`) carries and prints that record.
//!
//! Each rewrite lives in its own file and is listed in [`MODEL_CHANGING_RULES`] as data,
//! so `weft rules` shows it beside the exact rules with `exact: false` and what it
//! changes. docs/rewrites.md ("Model-changing rewrites") documents both.

mod dcca;
mod ladder;

use std::fmt;
use std::str::FromStr;

use weft_ir::{Graph, ModelChange};

use crate::{Pass, PassError};

pub use dcca::{DccaOptions, parse_ratio};
pub use ladder::{LadderLayers, LadderOptions};

/// A model-changing rewrite as data, for `weft rules` and the docs.
#[derive(Clone, Copy, Debug)]
pub struct ModelChangingRule {
    /// The name `--allow` takes and every record carries.
    pub name: &'static str,
    pub paper: &'static str,
    /// One line: what it does.
    pub doc: &'static str,
    /// What it changes in the model (and so why it needs weights trained for it).
    pub changes: &'static str,
}

/// Every model-changing rewrite, in the order the pass applies them.
pub const MODEL_CHANGING_RULES: &[ModelChangingRule] = &[
    ModelChangingRule {
        name: "ladder-residual",
        paper: "Ladder Residual (Zhang et al., ICML 2025, arXiv 2501.06589)",
        doc: "each converted attention or MLP module reads the residual stream from before the \
              previous module's output was added, so that module's all-reduce runs under this \
              module's compute",
        changes: "module inputs: module j reads r[j-2] instead of r[j-1] (the stream itself is \
                  still the sum of every module's output); no parameter is added",
    },
    ModelChangingRule {
        name: "dcca",
        paper: "BigMac (Jin et al., AAAI 2025, arXiv 2502.16927)",
        doc: "descend-communicate-communicate-ascend: a shared down-projection h -> r*h before \
              the MoE dispatch and a shared up-projection r*h -> h after the combine, so both \
              all-to-alls carry r*h; the router still reads the full-width input",
        changes: "adds two dense projections per MoE layer (2*r*h^2 parameters) and gives every \
                  expert input and output width r*h (its inner width scaled by 1/r, so its \
                  parameter count is unchanged)",
    },
];

/// Which model-changing rewrites to apply, with their options (`--allow`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AllowOptions {
    pub ladder: Option<LadderOptions>,
    pub dcca: Option<DccaOptions>,
}

impl AllowOptions {
    /// Whether no rewrite is asked for.
    pub fn is_empty(&self) -> bool {
        self.ladder.is_none() && self.dcca.is_none()
    }

    /// The names asked for, in [`MODEL_CHANGING_RULES`] order.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.ladder.is_some() {
            names.push("ladder-residual");
        }
        if self.dcca.is_some() {
            names.push("dcca");
        }
        names
    }
}

/// An `--allow` name: `ladder` (or `ladder-residual`) and `dcca`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllowName {
    Ladder,
    Dcca,
}

impl FromStr for AllowName {
    type Err = String;
    fn from_str(s: &str) -> Result<AllowName, String> {
        match s.trim() {
            "ladder" | "ladder-residual" => Ok(AllowName::Ladder),
            "dcca" | "bigmac" => Ok(AllowName::Dcca),
            other => Err(format!(
                "unknown model-changing rewrite `{other}`; known: ladder (ladder-residual), dcca \
                 (see `weft rules`)"
            )),
        }
    }
}

impl fmt::Display for AllowName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AllowName::Ladder => "ladder",
            AllowName::Dcca => "dcca",
        })
    }
}

/// The pass that applies the rewrites `options` asks for, in [`MODEL_CHANGING_RULES`]
/// order, and records each on the graph. With no rewrite asked for it returns the graph
/// untouched — the only way these rewrites fire is through this pass with a non-empty
/// [`AllowOptions`].
#[derive(Clone, Debug, Default)]
pub struct ModelChangePass {
    pub options: AllowOptions,
}

impl Pass for ModelChangePass {
    fn name(&self) -> &'static str {
        "model-change"
    }

    fn run(&mut self, graph: Graph) -> Result<(Graph, String), PassError> {
        let mut graph = graph;
        let mut done: Vec<ModelChange> = Vec::new();
        if let Some(options) = &self.options.ladder {
            let (next, change) = ladder::apply(&graph, options)?;
            graph = next;
            done.push(change);
        }
        if let Some(options) = &self.options.dcca {
            let (next, change) = dcca::apply(&graph, options)?;
            graph = next;
            done.push(change);
        }
        let summary = if done.is_empty() {
            "no model-changing rewrite asked for".to_owned()
        } else {
            done.iter()
                .map(ModelChange::summary)
                .collect::<Vec<_>>()
                .join("; ")
        };
        graph.model_changes.extend(done);
        Ok((graph, summary))
    }
}
