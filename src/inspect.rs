//! `weft inspect PLAN`: what a plan predicts, in a few lines (or one JSON object).
//!
//! Every figure is read from the plan or computed from its tasks here; nothing is
//! re-predicted, so `inspect` shows exactly what `weft compile` decided.

use std::collections::BTreeMap;

use serde::Serialize;
use weft_plan::{Plan, RuleCount, StreamKind};

use crate::memory::human_bytes;

/// The summary `weft inspect` prints.
#[derive(Clone, Debug, Serialize)]
pub struct InspectReport {
    pub source: String,
    pub source_sha256: String,
    pub hardware: String,
    /// The mesh as `tp=8,dp=2` (empty for one device).
    pub mesh: String,
    pub dims: BTreeMap<String, u64>,
    pub ranks: usize,
    /// Predicted step time: the latest task end over all ranks.
    pub predicted_us: f64,
    /// The same program with every stream of a rank serialised (no overlap).
    pub baseline_us: f64,
    /// The busiest resource's unavoidable work: no schedule beats it.
    pub bound_us: f64,
    /// Communication not hidden behind compute.
    pub exposed_comm_us: f64,
    /// Fraction of communication hidden behind compute (1 when there is none).
    pub overlap_efficiency: f64,
    /// Whether any task communicates (a plan for one device, or with only local ops,
    /// has nothing to hide).
    pub communicates: bool,
    /// `baseline_us / predicted_us`.
    pub speedup_over_baseline: f64,
    /// Peak bytes per rank (weights plus the activation pool), in rank order.
    pub peak_memory_bytes: Vec<u64>,
    /// Weight bytes per rank, in rank order.
    pub weight_bytes: Vec<u64>,
    /// Tasks per rank, in rank order.
    pub tasks: Vec<usize>,
    /// Total predicted busy time per stream kind on rank 0 (µs): `compute`, `comm`.
    pub busy_us: BTreeMap<String, f64>,
    /// Per layer on rank 0: the predicted span from its first task's start to its last
    /// task's end (µs); layers overlap when the schedule interleaves them.
    pub layers: Vec<LayerSpan>,
    pub rules_applied: Vec<RuleCount>,
    pub model_changing_rewrites: Vec<weft_ir::ModelChange>,
    /// How the program was decided (`--strategy`).
    pub strategy: String,
    /// The candidate that won: `search`, `greedy extraction`, `as sharded`, or a fixed
    /// strategy.
    pub chosen_by: String,
    /// The predicted step of the program as sharded, with no rewrite (µs).
    pub as_sharded_us: Option<f64>,
    /// Per layer: the rules its rewritten nodes come from, its span on rank 0 here and
    /// in the as-sharded plan, and the difference (what the choice saved in it).
    pub per_layer: Vec<LayerChoiceRow>,
    /// The rules of nodes outside every layer.
    pub outside_layers_rewrites: Vec<RuleCount>,
    /// Whether the per-layer rewrites were traced node by node. Only the search's
    /// candidates record which rule made each node; a fixed strategy's program (chosen by
    /// `--strategy` or by `best`) applies rules without that record, so its per-layer
    /// rewrites are unknown, not none.
    pub rewrites_traced: bool,
    /// Per rule: how much slower the search's scope is predicted without it.
    pub rule_savings: Vec<weft_plan::RuleSaving>,
    /// The list scheduler's priority rule, and every rule it simulated with its predicted
    /// step (empty for a serial plan).
    pub schedule_priority: weft_plan::SchedulePriority,
    pub schedule_priorities: Vec<weft_plan::PriorityTried>,
}

/// One layer of the per-layer view.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LayerChoiceRow {
    pub layer: u32,
    pub rewrites: Vec<RuleCount>,
    pub span_us: f64,
    /// What the layer adds to the step: its last task's end minus the previous layer's
    /// (its first task's start for the first layer). Layers overlap when the schedule
    /// interleaves them (token halves), so spans do not add up to the step; advances do.
    pub advance_us: f64,
    pub as_sharded_advance_us: Option<f64>,
    /// `as_sharded_advance_us - advance_us`.
    pub saved_us: Option<f64>,
}

/// One layer's predicted span on rank 0.
#[derive(Clone, Debug, Serialize)]
pub struct LayerSpan {
    pub layer: u32,
    pub start_us: f64,
    pub end_us: f64,
    pub tasks: usize,
}

impl InspectReport {
    /// Summarises `plan`.
    pub fn new(plan: &Plan) -> InspectReport {
        let p = &plan.prediction;
        let mesh = plan
            .mesh
            .iter()
            .map(|a| format!("{}={}", a.name, a.size))
            .collect::<Vec<_>>()
            .join(",");
        let mut busy = BTreeMap::new();
        let mut layers: BTreeMap<u32, LayerSpan> = BTreeMap::new();
        if let Some(rank) = plan.ranks.first() {
            for task in &rank.tasks {
                let kind = rank
                    .streams
                    .get(task.stream.0 as usize)
                    .map_or("unknown", |s| match s.kind {
                        StreamKind::Compute => "compute",
                        StreamKind::Comm => "comm",
                    });
                *busy.entry(kind.to_owned()).or_insert(0.0) += task.end_us - task.start_us;
                if let Some(layer) = task.layer {
                    let span = layers.entry(layer).or_insert(LayerSpan {
                        layer,
                        start_us: task.start_us,
                        end_us: task.end_us,
                        tasks: 0,
                    });
                    span.start_us = span.start_us.min(task.start_us);
                    span.end_us = span.end_us.max(task.end_us);
                    span.tasks += 1;
                }
            }
        }
        InspectReport {
            source: plan.source.path.clone(),
            source_sha256: plan.source.sha256.clone(),
            hardware: plan.hardware.name.clone(),
            mesh,
            dims: plan.dims.clone(),
            ranks: plan.ranks.len(),
            predicted_us: p.predicted_us,
            baseline_us: p.baseline_us,
            bound_us: p.bound_us,
            exposed_comm_us: p.exposed_comm_us,
            overlap_efficiency: p.overlap_efficiency,
            communicates: plan
                .ranks
                .iter()
                .any(|r| r.tasks.iter().any(|t| t.collective.is_some())),
            speedup_over_baseline: if p.predicted_us > 0.0 {
                p.baseline_us / p.predicted_us
            } else {
                1.0
            },
            peak_memory_bytes: p.peak_memory_bytes.clone(),
            weight_bytes: plan.ranks.iter().map(|r| r.memory.weight_bytes).collect(),
            tasks: plan.ranks.iter().map(|r| r.tasks.len()).collect(),
            busy_us: busy,
            per_layer: per_layer(plan, &layers),
            outside_layers_rewrites: plan
                .choice
                .layer_rewrites
                .iter()
                .find(|l| l.layer.is_none())
                .map(|l| l.rewrites.clone())
                .unwrap_or_default(),
            layers: layers.into_values().collect(),
            rewrites_traced: plan.rules_applied.is_empty()
                || !plan.choice.layer_rewrites.is_empty(),
            rules_applied: plan.rules_applied.clone(),
            model_changing_rewrites: plan.model_changing_rewrites.clone(),
            strategy: plan.options.strategy.clone(),
            chosen_by: plan.choice.chosen_by.clone(),
            as_sharded_us: plan.choice.as_sharded_us,
            rule_savings: plan.choice.rule_savings.clone(),
            schedule_priority: plan.choice.schedule_priority,
            schedule_priorities: plan.choice.schedule_priorities.clone(),
        }
    }

    /// The text form.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let mesh = if self.mesh.is_empty() {
            "one device".to_owned()
        } else {
            self.mesh.clone()
        };
        let _ = writeln!(
            s,
            "plan of {} (sha256 {})",
            self.source,
            short(&self.source_sha256)
        );
        let _ = writeln!(
            s,
            "  mesh {mesh} on {}, {}",
            self.hardware,
            weft_plan::rank_count(self.ranks)
        );
        if !self.dims.is_empty() {
            let dims: Vec<String> = self.dims.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(s, "  dims {}", dims.join(" "));
        }
        let _ = writeln!(s, "predicted step   {}", us(self.predicted_us));
        let _ = writeln!(
            s,
            "no-overlap base  {}  ({:.2}x slower than the plan)",
            us(self.baseline_us),
            self.speedup_over_baseline
        );
        let _ = writeln!(s, "lower bound      {}", us(self.bound_us));
        let _ = writeln!(s, "exposed comm     {}", us(self.exposed_comm_us));
        if self.communicates {
            let _ = writeln!(
                s,
                "overlap          {:.1}% of communication hidden",
                100.0 * self.overlap_efficiency
            );
        } else {
            let _ = writeln!(s, "overlap          no communication");
        }
        for (kind, t) in &self.busy_us {
            let _ = writeln!(s, "busy on rank 0   {kind}: {}", us(*t));
        }
        let peaks = summarize_per_rank(&self.peak_memory_bytes);
        let weights = summarize_per_rank(&self.weight_bytes);
        let _ = writeln!(s, "peak memory      {peaks} per rank (weights {weights})");
        let tasks = summarize_counts(&self.tasks);
        let _ = writeln!(s, "tasks            {tasks} per rank");
        let _ = writeln!(s, "priority rule    {}", self.priority_text());
        if !self.layers.is_empty() {
            let n = self.layers.len();
            let slowest = self
                .layers
                .iter()
                .max_by(|a, b| (a.end_us - a.start_us).total_cmp(&(b.end_us - b.start_us)));
            if let Some(l) = slowest {
                let _ = writeln!(
                    s,
                    "layers           {n}; longest span: layer {} ({}, {} tasks)",
                    l.layer,
                    us(l.end_us - l.start_us),
                    l.tasks
                );
            }
        }
        if self.rules_applied.is_empty() {
            let _ = writeln!(
                s,
                "rules applied    none (the program is the sharded model as is)"
            );
        } else {
            let rules: Vec<String> = self
                .rules_applied
                .iter()
                .map(|r| format!("{} x{}", r.rule, r.count))
                .collect();
            let _ = writeln!(s, "rules applied    {}", rules.join(", "));
        }
        self.choice_text(&mut s);
        if self.model_changing_rewrites.is_empty() {
            let _ = writeln!(
                s,
                "model-changing   none (outputs equal the source model's)"
            );
        } else {
            let _ = writeln!(
                s,
                "model-changing   {}\n                 {}",
                weft_ir::model_change::summaries(&self.model_changing_rewrites),
                weft_ir::model_change::OUTPUTS_DIFFER
            );
        }
        s
    }
}

impl InspectReport {
    /// The priority rule the tasks were list-scheduled by, with the other rules' steps.
    fn priority_text(&self) -> String {
        let others: Vec<String> = self
            .schedule_priorities
            .iter()
            .filter(|t| t.priority != self.schedule_priority)
            .map(|t| {
                let memory = if t.fits_memory == Some(false) {
                    ", does not fit the memory limit"
                } else {
                    ""
                };
                format!("{}: {}{memory}", t.priority, us(t.predicted_us))
            })
            .collect();
        if others.is_empty() {
            self.schedule_priority.to_string()
        } else {
            format!("{} (others: {})", self.schedule_priority, others.join("; "))
        }
    }

    /// The strategy line, the per-layer view (consecutive layers with the same rewrites
    /// and spans within 0.1 µs shown as one row) and the rule savings.
    fn choice_text(&self, s: &mut String) {
        use std::fmt::Write;
        let versus = match self.as_sharded_us {
            Some(t) if self.predicted_us > 0.0 => format!(
                "; the program as sharded: {} ({:.3}x this plan)",
                us(t),
                t / self.predicted_us
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "strategy         {} (chosen: {}{versus})",
            self.strategy, self.chosen_by
        );
        if self.per_layer.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "per layer        {:<12} {:>12} {:>12} {:>10}  rewrites (nodes made)",
            "layers", "adds", "as sharded", "saved"
        );
        let mut i = 0;
        while i < self.per_layer.len() {
            let row = &self.per_layer[i];
            let mut j = i + 1;
            while j < self.per_layer.len() && same_row(&self.per_layer[j], row) {
                j += 1;
            }
            let last = self.per_layer[j - 1].layer;
            let label = if last == row.layer {
                row.layer.to_string()
            } else {
                format!("{}–{last}", row.layer)
            };
            let rewrites = if !self.rewrites_traced {
                "not traced (see rules applied)".to_owned()
            } else if row.rewrites.is_empty() {
                "none".to_owned()
            } else {
                row.rewrites
                    .iter()
                    .map(|r| format!("{} x{}", r.rule, r.count))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                s,
                "                 {label:<12} {:>12} {:>12} {:>10}  {rewrites}",
                us(row.advance_us),
                row.as_sharded_advance_us.map_or("n/a".to_owned(), us),
                row.saved_us
                    .map_or("n/a".to_owned(), |v| format!("{v:.1} µs")),
            );
            i = j;
        }
        if !self.outside_layers_rewrites.is_empty() {
            let r: Vec<String> = self
                .outside_layers_rewrites
                .iter()
                .map(|r| format!("{} x{}", r.rule, r.count))
                .collect();
            let _ = writeln!(s, "                 outside layers: {}", r.join(", "));
        }
        if let Some(first) = self.rule_savings.first() {
            let parts: Vec<String> = self
                .rule_savings
                .iter()
                .map(|r| match r.saved_us {
                    Some(v) => format!("{} {v:.1} µs", r.rule),
                    None => format!("{} (cannot run without it)", r.rule),
                })
                .collect();
            // The ablation is of the search's program: say so when the plan is another.
            let whose = if self.chosen_by.starts_with("search") {
                String::new()
            } else {
                format!(
                    " (for the search's program, not this plan's: chosen {})",
                    self.chosen_by
                )
            };
            let _ = writeln!(
                s,
                "rule savings     without each rule, {}{whose} is predicted slower by: {}",
                first.scope,
                parts.join(", ")
            );
        }
    }
}

/// Rows the per-layer view shows as one.
fn same_row(a: &LayerChoiceRow, b: &LayerChoiceRow) -> bool {
    let close = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => (x - y).abs() < 0.1,
        (None, None) => true,
        _ => false,
    };
    a.rewrites == b.rewrites
        && (a.advance_us - b.advance_us).abs() < 0.1
        && close(a.as_sharded_advance_us, b.as_sharded_advance_us)
}

/// The per-layer rows of `plan`, from its layer spans and its choice summary.
fn per_layer(plan: &Plan, spans: &BTreeMap<u32, LayerSpan>) -> Vec<LayerChoiceRow> {
    let mut previous_end: Option<f64> = None;
    spans
        .values()
        .map(|l| {
            let span_us = l.end_us - l.start_us;
            let advance_us = l.end_us - previous_end.unwrap_or(l.start_us);
            previous_end = Some(l.end_us);
            let as_sharded = plan
                .choice
                .as_sharded_layer_spans_us
                .iter()
                .find(|b| b.layer == l.layer)
                .map(|b| b.advance_us);
            LayerChoiceRow {
                layer: l.layer,
                rewrites: plan
                    .choice
                    .layer_rewrites
                    .iter()
                    .find(|r| r.layer == Some(l.layer))
                    .map(|r| r.rewrites.clone())
                    .unwrap_or_default(),
                span_us,
                advance_us,
                as_sharded_advance_us: as_sharded,
                saved_us: as_sharded.map(|b| b - advance_us),
            }
        })
        .collect()
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Microseconds, switching to milliseconds past 10 ms.
fn us(t: f64) -> String {
    if t >= 10_000.0 {
        format!("{:.3} ms", t / 1000.0)
    } else {
        format!("{t:.1} µs")
    }
}

/// One figure when every rank agrees, else the range.
fn summarize_per_rank(bytes: &[u64]) -> String {
    match (bytes.iter().min(), bytes.iter().max()) {
        (Some(lo), Some(hi)) if lo == hi => human_bytes(u128::from(*lo)),
        (Some(lo), Some(hi)) => format!(
            "{}–{}",
            human_bytes(u128::from(*lo)),
            human_bytes(u128::from(*hi))
        ),
        _ => "n/a".to_owned(),
    }
}

fn summarize_counts(counts: &[usize]) -> String {
    match (counts.iter().min(), counts.iter().max()) {
        (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
        (Some(lo), Some(hi)) => format!("{lo}–{hi}"),
        _ => "n/a".to_owned(),
    }
}
