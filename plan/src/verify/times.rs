//! Predicted times and memory figures: every time finite, no task ends before it starts
//! or starts before what it waits for ends; the memory summary and the prediction agree
//! with the plan's buffers and tasks.

use super::{Order, Verifier, task_label};
use crate::{BufferKind, Plan, PlanRule, RankPlan};

/// Slack for comparing times that a scheduler computed by adding floats: 1e-9 relative,
/// 1e-6 µs absolute (a picosecond, far below any kernel's duration).
fn later(a: f64, b: f64) -> bool {
    a > b + 1e-6 + 1e-9 * b.abs()
}

pub(super) fn on_rank(v: &mut Verifier<'_>, rp: &RankPlan, order: &Order) {
    let r = Some(rp.rank);
    for (t, task) in rp.tasks.iter().enumerate() {
        let (s, e) = (task.start_us, task.end_us);
        if !s.is_finite() || !e.is_finite() || s < 0.0 || later(s, e) {
            let m = format!(
                "{} is predicted from {s} to {e} µs (times are finite, from 0, and a task ends after it starts)",
                task_label(rp, t)
            );
            v.err(r, PlanRule::Times, m);
            continue;
        }
        for &p in order.preds(t) {
            let pe = rp.tasks[p].end_us;
            if later(pe, s) {
                let m = format!(
                    "{} is predicted to start at {s} µs, before {} it waits for ends ({pe} µs)",
                    task_label(rp, t),
                    task_label(rp, p)
                );
                v.err(r, PlanRule::Times, m);
            }
        }
    }
    let mut weights = 0u128;
    let mut pool = 0u128;
    for b in &rp.buffers {
        // Each buffer takes its size rounded up to the alignment in its pool.
        let align = u128::from(crate::BUFFER_ALIGNMENT);
        let end = u128::from(b.offset) + u128::from(b.bytes).div_ceil(align) * align;
        match b.kind {
            BufferKind::Weight => weights = weights.max(end),
            BufferKind::Input | BufferKind::Activation | BufferKind::Output => pool = pool.max(end),
        }
    }
    let m = &rp.memory;
    let expected = [
        ("weight_bytes", u128::from(m.weight_bytes), weights),
        (
            "activation_peak_bytes",
            u128::from(m.activation_peak_bytes),
            pool,
        ),
        ("peak_bytes", u128::from(m.peak_bytes), weights + pool),
    ];
    for (field, got, want) in expected {
        if got != want {
            let msg = format!("the memory summary's {field} is {got}, but the buffers give {want}");
            v.err(r, PlanRule::Memory, msg);
        }
    }
}

/// The whole step's figures agree with the ranks.
pub(super) fn prediction(v: &mut Verifier<'_>, plan: &Plan) {
    let p = &plan.prediction;
    let figures = [
        ("predicted_us", p.predicted_us),
        ("baseline_us", p.baseline_us),
        ("bound_us", p.bound_us),
        ("exposed_comm_us", p.exposed_comm_us),
        ("overlap_efficiency", p.overlap_efficiency),
    ];
    for (name, x) in figures {
        if !x.is_finite() || x < 0.0 {
            v.err(
                None,
                PlanRule::Times,
                format!("the prediction's {name} is {x}"),
            );
        }
    }
    let last = plan
        .ranks
        .iter()
        .flat_map(|r| &r.tasks)
        .map(|t| t.end_us)
        .fold(0.0f64, f64::max);
    if later(last, p.predicted_us) || later(p.predicted_us, last) {
        let m = format!(
            "predicted_us is {}, but the latest task ends at {last} µs",
            p.predicted_us
        );
        v.err(None, PlanRule::Times, m);
    }
    let peaks: Vec<u64> = plan.ranks.iter().map(|r| r.memory.peak_bytes).collect();
    if p.peak_memory_bytes != peaks {
        let m = format!(
            "peak_memory_bytes is {:?}, but the ranks' memory summaries give {peaks:?}",
            p.peak_memory_bytes
        );
        v.err(None, PlanRule::Memory, m);
    }
}
