//! The plan as a Chrome trace (trace-event JSON, which Perfetto and chrome://tracing
//! open): one process per rank, one thread per stream, a complete event per task at its
//! predicted time, and a flow arrow from each event's recorder to each task waiting on it.
//!
//! Format: <https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU>
//! ("Trace Event Format": `ph` X = complete event, M = metadata, s/f = flow start/end;
//! a flow start binds to the slice enclosing its `ts`, and `bp: "e"` makes a flow end do
//! the same). An arrow starts at its recorder's end (when the event is recorded) and
//! ends at the waiter's start.

use serde_json::{Value, json};

use crate::Plan;
use crate::text::kernel_text;

impl Plan {
    /// The Chrome trace-event JSON (see the module docs).
    pub fn to_trace_json(&self) -> String {
        let mut events: Vec<Value> = Vec::new();
        let mut flow = 0u64;
        for rp in &self.ranks {
            let pid = rp.rank;
            events.push(
                json!({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                "args": {"name": format!("rank {pid}")}}),
            );
            events.push(
                json!({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
                "args": {"sort_index": pid}}),
            );
            for s in &rp.streams {
                events.push(
                    json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": s.id.0,
                    "args": {"name": s.name}}),
                );
                // Tracks in stream order (compute first), not by name.
                events.push(
                    json!({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": s.id.0,
                    "args": {"sort_index": s.id.0}}),
                );
            }
            // Each event's recorder, to draw arrows from it.
            let mut recorder = vec![None; rp.tasks.len()];
            for t in &rp.tasks {
                if let Some(e) = t.record.filter(|e| (e.0 as usize) < recorder.len()) {
                    recorder[e.0 as usize] = Some(t);
                }
            }
            for t in &rp.tasks {
                let name = match t.nodes.as_slice() {
                    [one] => one.clone(),
                    many => format!(
                        "{} (+{})",
                        many.first().map_or("", String::as_str),
                        many.len() - 1
                    ),
                };
                events.push(json!({
                    "ph": "X", "name": name, "cat": "task", "pid": pid, "tid": t.stream.0,
                    "ts": t.start_us, "dur": (t.end_us - t.start_us).max(0.0),
                    "args": {
                        "task": t.id.0,
                        "nodes": t.nodes,
                        "layer": t.layer,
                        "kernel": kernel_text(&t.kernel),
                        "collective": t.collective.as_ref().map(|c| format!("{} over {} #{}", c.kind, c.axis, c.seq)),
                    }
                }));
                for e in &t.waits {
                    let Some(Some(from)) = recorder.get(e.0 as usize) else {
                        continue;
                    };
                    flow += 1;
                    // The arrow leaves the recorder where it records (at its end) and
                    // arrives at the waiter's start. A flow event binds to the slice of
                    // its thread enclosing its `ts`, and the next task of a stream may
                    // start exactly when the previous one ends, so each end sits just
                    // inside its own slice: the recorder's end minus a nudge, the
                    // waiter's start plus one.
                    let (from_start, from_end) = (from.start_us, from.end_us.max(from.start_us));
                    let (to_start, to_end) = (t.start_us, t.end_us.max(t.start_us));
                    events.push(
                        json!({"ph": "s", "name": format!("e{}", e.0), "cat": "event",
                        "id": flow, "pid": pid, "tid": from.stream.0,
                        "ts": from_end - nudge(from_start, from_end)}),
                    );
                    events.push(
                        json!({"ph": "f", "bp": "e", "name": format!("e{}", e.0), "cat": "event",
                        "id": flow, "pid": pid, "tid": t.stream.0,
                        "ts": to_start + nudge(to_start, to_end)}),
                    );
                }
            }
        }
        let doc = json!({
            "traceEvents": events,
            "displayTimeUnit": "ns",
            "otherData": {
                "source": self.source.path,
                "hardware": self.hardware.name,
                "predicted_us": self.prediction.predicted_us,
            }
        });
        doc.to_string()
    }
}

/// How far inside a slice `[start, end]` (µs) a flow event sits from the slice's edge:
/// [`FLOW_NUDGE_US`], or half the slice when it is shorter (0 for an empty slice, whose
/// only instant is its start).
fn nudge(start: f64, end: f64) -> f64 {
    FLOW_NUDGE_US.min((end - start) / 2.0).max(0.0)
}

/// 1 ns: far below any task's predicted duration, and above the rounding of a `ts`
/// printed as a float of µs.
const FLOW_NUDGE_US: f64 = 1e-3;
