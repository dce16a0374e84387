//! The plan as a Chrome trace (trace-event JSON, which Perfetto and chrome://tracing
//! open): one process per rank, one thread per stream, a complete event per task at its
//! predicted time, and a flow arrow from each event's recorder to each task waiting on it.
//!
//! Format: <https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU>
//! ("Trace Event Format": `ph` X = complete event, M = metadata, s/f = flow start/end,
//! `bp: "e"` binds a flow end to the enclosing slice).

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
                    // The arrow leaves the recorder's slice and arrives at the waiter's start.
                    events.push(
                        json!({"ph": "s", "name": format!("e{}", e.0), "cat": "event",
                        "id": flow, "pid": pid, "tid": from.stream.0, "ts": from.start_us}),
                    );
                    events.push(
                        json!({"ph": "f", "bp": "e", "name": format!("e{}", e.0), "cat": "event",
                        "id": flow, "pid": pid, "tid": t.stream.0, "ts": t.start_us}),
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
