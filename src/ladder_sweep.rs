//! `weft compile --allow ladder --ladder-layers auto`: a what-if sweep over how many of
//! the model's upper layers ladder residual converts.
//!
//! The paper converts the upper half of a pretrained model (retraining it) and trains
//! fully converted models from scratch; how much of the benefit a partial conversion
//! keeps depends on which all-reduces it stops waiting for. The sweep compiles the model
//! with 0, L/8, L/4, L/2, 3L/4 and L converted upper layers (rounded to the nearest
//! layer, halves up; repeated counts dropped), each as an ordinary `weft compile` with
//! `--ladder-layers (L-k)..(L-1)`, and reports each plan's predicted step and its speedup
//! over the unconverted model. Every figure is the cost model's prediction for that
//! compiled plan, nothing else.

use std::fmt::Write as _;

use weft_passes::model_change::{LadderLayers, LadderOptions};

use crate::compile::{CompileError, CompileRequest, Compiled, compile};
use crate::{LoadOptions, Stage, load_model, to_stage};

/// One row of the sweep: `converted` upper layers, and the compiled plan's prediction.
#[derive(Debug)]
pub struct SweepRow {
    pub converted: u32,
    /// The layers converted, `first..=last`; `None` for 0.
    pub layers: Option<(u32, u32)>,
    pub predicted_us: f64,
}

/// The sweep's rows (in increasing `converted`), and the fastest plan.
#[derive(Debug)]
pub struct LadderSweep {
    pub layers: u32,
    pub rows: Vec<SweepRow>,
    /// Index into `rows` of the fastest plan (the fewest converted layers on ties).
    pub best: usize,
    pub best_plan: Compiled,
}

/// The numbers of converted upper layers the sweep compiles for a model of `layers`
/// layers: 0, L/8, L/4, L/2, 3L/4 and L, rounded halves up, distinct, increasing.
pub fn sweep_counts(layers: u32) -> Vec<u32> {
    let mut counts: Vec<u32> = [(0u64, 1u64), (1, 8), (1, 4), (1, 2), (3, 4), (1, 1)]
        .iter()
        .map(|&(num, den)| ((2 * u64::from(layers) * num + den) / (2 * den)) as u32)
        .collect();
    counts.dedup();
    counts
}

impl LadderSweep {
    /// The table `weft compile` prints.
    pub fn to_text(&self) -> String {
        let base = self.rows[0].predicted_us;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "ladder-residual sweep over the upper layers of a model of {} layers \
             (predicted; a converted model needs weights trained for it):",
            self.layers
        );
        let _ = writeln!(
            s,
            "  {:>9}  {:<10} {:>16}  {:>8}",
            "converted", "layers", "step (µs)", "speedup"
        );
        for (i, row) in self.rows.iter().enumerate() {
            let range = row
                .layers
                .map_or("none".to_owned(), |(a, b)| format!("{a}..{b}"));
            let _ = writeln!(
                s,
                "  {:>9}  {:<10} {:>16.3}  {:>7.3}x{}",
                row.converted,
                range,
                row.predicted_us,
                base / row.predicted_us,
                if i == self.best { "  <- fastest" } else { "" }
            );
        }
        let best = &self.rows[self.best];
        let _ = writeln!(
            s,
            "fastest: {} converted layer(s){}",
            best.converted,
            best.layers.map_or(String::new(), |(a, b)| format!(
                " (--ladder-layers {a}..{b})"
            ))
        );
        s
    }
}

/// Runs the sweep for `request`, whose `allow.ladder` must be `auto` (other rewrites it
/// allows apply to every row).
pub fn ladder_sweep(request: &CompileRequest) -> Result<LadderSweep, CompileError> {
    let fail = |reason: String| CompileError::Stage {
        model: request.model.clone(),
        reason,
    };
    if !matches!(
        request.allow.ladder,
        Some(LadderOptions {
            layers: LadderLayers::Auto
        })
    ) {
        return Err(fail(
            "the ladder sweep runs for `--allow ladder --ladder-layers auto` only".into(),
        ));
    }
    // The layer count of the raised source model.
    let graph = load_model(
        &request.model,
        &LoadOptions {
            dims: request.dims.clone(),
        },
    )?;
    let (raised, _) = to_stage(graph, Stage::Raised).map_err(|e| fail(e.to_string()))?;
    let layers = weft_ir::layers::segment_layers(&raised).count();
    if layers == 0 {
        return Err(fail(
            "--ladder-layers auto: the model has no transformer layer (no attention) to convert"
                .into(),
        ));
    }
    let mut rows = Vec::new();
    let mut plans = Vec::new();
    for converted in sweep_counts(layers) {
        let mut one = request.clone();
        let range = (converted > 0).then(|| (layers - converted, layers - 1));
        one.allow.ladder = range.map(|(first, last)| LadderOptions {
            layers: LadderLayers::Range { first, last },
        });
        let compiled = compile(&one)?;
        rows.push(SweepRow {
            converted,
            layers: range,
            predicted_us: compiled.plan.prediction.predicted_us,
        });
        plans.push(compiled);
    }
    let best = rows
        .iter()
        .enumerate()
        .min_by(|(_, a), (_, b)| a.predicted_us.total_cmp(&b.predicted_us))
        .map_or(0, |(i, _)| i);
    let best_plan = plans.swap_remove(best);
    Ok(LadderSweep {
        layers,
        rows,
        best,
        best_plan,
    })
}

#[cfg(test)]
mod tests {
    use super::sweep_counts;

    #[test]
    fn counts_are_rounded_distinct_and_increasing() {
        assert_eq!(sweep_counts(80), vec![0, 10, 20, 40, 60, 80]);
        assert_eq!(sweep_counts(2), vec![0, 1, 2]);
        assert_eq!(sweep_counts(4), vec![0, 1, 2, 3, 4]);
        assert_eq!(sweep_counts(1), vec![0, 1]);
    }
}
