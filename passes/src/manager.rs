//! The pass trait and the manager that verifies after every pass.

use std::time::{Duration, Instant};

use weft_ir::{Graph, VerifyError, VerifyErrors};

/// A graph-to-graph transformation.
pub trait Pass {
    /// Short name, used in reports and `--stage` selections.
    fn name(&self) -> &'static str;
    /// Transforms `graph`; returns a one-line account of what changed.
    fn run(&mut self, graph: Graph) -> Result<(Graph, String), PassError>;
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The pass could not build its result (an op it cannot handle, say).
    #[error("pass `{pass}`: {source}")]
    Build {
        pass: &'static str,
        #[source]
        source: VerifyError,
    },
    /// The pass refuses this graph with its options: a model-changing rewrite asked for
    /// on a model it does not fit (no MoE layer for DCCA, a ratio that does not divide
    /// the hidden size, a layer range past the model's last layer).
    #[error("pass `{pass}`: {reason}")]
    Refused { pass: &'static str, reason: String },
    /// The pass produced a graph that breaks an IR rule: a bug in the pass.
    #[error("pass `{pass}` produced an invalid graph (a bug in the pass): {source}")]
    Invalid {
        pass: &'static str,
        #[source]
        source: VerifyErrors,
    },
}

/// What one pass did and how long it took.
#[derive(Clone, Debug)]
pub struct PassReport {
    pub pass: &'static str,
    pub summary: String,
    pub elapsed: Duration,
}

/// Runs passes in order, verifying after each.
#[derive(Default)]
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
}

impl std::fmt::Debug for PassManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.passes.iter().map(|p| p.name()))
            .finish()
    }
}

impl PassManager {
    pub fn new() -> PassManager {
        PassManager::default()
    }

    /// Appends a pass.
    pub fn with(mut self, pass: impl Pass + 'static) -> PassManager {
        self.passes.push(Box::new(pass));
        self
    }

    /// Runs every pass; stops at the first failure.
    pub fn run(&mut self, mut graph: Graph) -> Result<(Graph, Vec<PassReport>), PassError> {
        let mut reports = Vec::new();
        for pass in &mut self.passes {
            let start = Instant::now();
            let _span = tracing::info_span!("pass", name = pass.name()).entered();
            let (next, summary) = pass.run(graph)?;
            weft_ir::verify(&next).map_err(|source| PassError::Invalid {
                pass: pass.name(),
                source,
            })?;
            let elapsed = start.elapsed();
            tracing::info!(%summary, ?elapsed, "pass done");
            reports.push(PassReport {
                pass: pass.name(),
                summary,
                elapsed,
            });
            graph = next;
        }
        Ok((graph, reports))
    }
}
