//! What `weft dump --stage saturated` prints, and `weft rules`.

use std::fmt::Write;

use serde::Serialize;
use weft_passes::saturate::{RULES, SaturationReport};

/// One rule, as `weft rules` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct RuleEntry {
    pub name: &'static str,
    pub ruleset: &'static str,
    pub exact: bool,
    pub paper: &'static str,
    pub doc: &'static str,
    /// For a model-changing rule: what it changes in the model (absent for exact rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<&'static str>,
}

/// Every rule: the exact e-graph rules, then the opt-in model-changing rewrites (ruleset
/// `model-changing`, `exact: false`), which never enter the e-graph.
pub fn rule_entries() -> Vec<RuleEntry> {
    let exact = RULES.iter().map(|r| RuleEntry {
        name: r.name,
        ruleset: r.ruleset,
        exact: r.exact,
        paper: r.paper,
        doc: r.doc,
        changes: None,
    });
    let changing = weft_passes::model_change::MODEL_CHANGING_RULES
        .iter()
        .map(|r| RuleEntry {
            name: r.name,
            ruleset: "model-changing",
            exact: false,
            paper: r.paper,
            doc: r.doc,
            changes: Some(r.changes),
        });
    exact.chain(changing).collect()
}

/// The rules as text, one block per rule.
pub fn rules_text() -> String {
    let mut out = String::new();
    for r in rule_entries() {
        let _ = writeln!(
            out,
            "{} [{}{}]\n    {}\n    source: {}",
            r.name,
            r.ruleset,
            if r.exact {
                ", exact"
            } else {
                ", changes the model: opt in with --allow"
            },
            r.doc,
            r.paper
        );
        if let Some(changes) = r.changes {
            let _ = writeln!(out, "    changes: {changes}");
        }
    }
    out
}

/// A saturation report as JSON-friendly data.
#[derive(Clone, Debug, Serialize)]
pub struct SaturationSummary {
    pub nodes: usize,
    pub classes: usize,
    pub seconds: f64,
    pub phases: Vec<PhaseSummary>,
    /// How many rounds of phases ran, and why no further one did.
    pub rounds: usize,
    pub rounds_stop_reason: String,
    pub unsound: Vec<String>,
    pub not_fired: Vec<&'static str>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PhaseSummary {
    pub ruleset: &'static str,
    pub round: usize,
    pub iterations: usize,
    pub stop_reason: String,
    pub nodes: usize,
    pub classes: usize,
    pub seconds: f64,
    pub rules: Vec<RuleCount>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RuleCount {
    pub name: &'static str,
    pub matches: usize,
    pub applied: usize,
}

impl SaturationSummary {
    pub fn new(r: &SaturationReport) -> SaturationSummary {
        SaturationSummary {
            nodes: r.nodes,
            classes: r.classes,
            seconds: r.elapsed.as_secs_f64(),
            unsound: r.unsound.clone(),
            not_fired: r.not_fired.clone(),
            rounds: r.rounds.rounds,
            rounds_stop_reason: r.rounds.stop_reason.clone(),
            phases: r
                .phases
                .iter()
                .map(|p| PhaseSummary {
                    ruleset: p.ruleset,
                    round: p.round,
                    iterations: p.iterations,
                    stop_reason: p.stop_reason.clone(),
                    nodes: p.nodes,
                    classes: p.classes,
                    seconds: p.elapsed.as_secs_f64(),
                    rules: p
                        .rules
                        .iter()
                        .map(|s| RuleCount {
                            name: s.name,
                            matches: s.matches,
                            applied: s.applied,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "e-graph: {} e-nodes in {} e-classes after {:.1} ms; {} round(s) of phases, stopped: {}",
            self.nodes,
            self.classes,
            self.seconds * 1e3,
            self.rounds,
            self.rounds_stop_reason
        );
        for p in &self.phases {
            let _ = writeln!(
                out,
                "phase {} (round {}): {} iteration(s), stopped: {}; {} e-nodes, {} e-classes, {:.1} ms",
                p.ruleset,
                p.round,
                p.iterations,
                p.stop_reason,
                p.nodes,
                p.classes,
                p.seconds * 1e3
            );
            for r in &p.rules {
                let _ = writeln!(
                    out,
                    "    {:<44} {:>7} matches {:>7} applied",
                    r.name, r.matches, r.applied
                );
            }
        }
        for u in &self.unsound {
            let _ = writeln!(out, "UNSOUND MERGE (a rule is wrong): {u}");
        }
        for n in &self.not_fired {
            let _ = writeln!(out, "rule `{n}` was asked for and never applied");
        }
        out
    }
}
