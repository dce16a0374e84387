//! Execution errors: each names the rank, the node and its op, and the reason.

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExecError {
    /// A kernel rejected its inputs at run time (an index out of range, say).
    #[error("rank {rank}: node `{node}` ({op}): {message}")]
    Kernel {
        rank: usize,
        node: String,
        op: &'static str,
        message: String,
    },
    /// Peers disagreed on a collective, or one never arrived.
    #[error("rank {rank}: node `{node}` ({op}) over mesh axis `{axis}`: {message}")]
    Collective {
        rank: usize,
        node: String,
        op: &'static str,
        axis: String,
        message: String,
    },
    /// Another rank failed first; this one stopped waiting for it.
    #[error("rank {rank} stopped because rank {failed_rank} failed: {reason}")]
    PeerFailed {
        rank: usize,
        failed_rank: usize,
        reason: String,
    },
    /// A graph input is missing or does not match its declaration.
    #[error("input `{name}`: {message}")]
    Input { name: String, message: String },
    /// A weight or constant could not be materialised.
    #[error("node `{node}`: {message}")]
    Weight { node: String, message: String },
    /// A plan was refused: `verify_plan` found broken rules, or it does not fit the program
    /// or this executor.
    #[error("the plan cannot run: {0}")]
    Plan(String),
    /// Running a plan showed it unsound: a task read a value its producer had not provably
    /// written (a race), or waited on an event that never came (a hang).
    #[error("rank {rank}: {task}: {message}")]
    Schedule {
        rank: usize,
        task: String,
        message: String,
    },
    /// The run's configuration does not fit the graph.
    #[error("{0}")]
    Config(String),
}

impl ExecError {
    /// Whether this error only reports that another rank failed first.
    pub fn is_secondary(&self) -> bool {
        matches!(self, ExecError::PeerFailed { .. })
    }
}
