//! Progress of long work (materialising weights, executing nodes), reported to a callback
//! the caller chooses: the CLI draws a bar on a terminal and nothing when piped; a
//! library user gets nothing unless they ask.

use std::fmt;
use std::sync::Arc;

/// What the executor is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Generating or loading weights and constants, counted per (rank, node).
    Weights,
    /// Running the graph's nodes, counted on rank 0 (the ranks run in lockstep).
    Execute,
}

impl Phase {
    /// What a progress line calls this phase.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Weights => "materialising weights",
            Phase::Execute => "executing",
        }
    }
}

/// A callback `(phase, done, total)`, called after each step of a phase, from the
/// executor's threads.
#[derive(Clone)]
pub struct Progress(pub Arc<dyn Fn(Phase, u64, u64) + Send + Sync>);

impl Progress {
    /// Reports `done` of `total` steps of `phase`.
    pub fn report(&self, phase: Phase, done: u64, total: u64) {
        (self.0)(phase, done, total);
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress(..)")
    }
}
