//! Errors: reading a plan file ([`PlanError`]) and the rules a plan breaks
//! ([`Violation`], collected into [`PlanErrors`] so a reader sees every problem at once).

use std::fmt;

/// Why a plan could not be read or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The text is not JSON of the plan's shape (serde's message, which names the line and
    /// column; they are also kept as fields).
    #[error("the plan is not valid plan JSON: {message}")]
    Json {
        message: String,
        line: usize,
        column: usize,
    },
    /// The `format` tag is not `weft-plan`.
    #[error("the file's `format` is `{found}`, not `{expected}`: it is not a Weft plan")]
    Format { found: String, expected: String },
    /// A plan of another version.
    #[error(
        "the plan has version {found}, but this Weft reads version {expected} only; compile the model again with this Weft"
    )]
    Version { found: String, expected: u32 },
    /// The program is not the one the plan was compiled with.
    #[error(
        "the plan's program was edited after compilation (its SHA-256 is {found}, the plan records {recorded}); compile the model again rather than editing the program"
    )]
    ProgramEdited { found: String, recorded: String },
    /// A program value's size could not be computed (an unbound dim, or past 64 bits).
    #[error("value `{value}`: {message}")]
    Size { value: String, message: String },
    /// The program does not fit the plan's assumptions (named in the message).
    #[error("{0}")]
    Program(String),
}

/// The rule a plan breaks, for grouping and for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PlanRule {
    /// Format, version, mesh, dims, rank count or coordinates disagree with the program.
    Header,
    /// A task, stream, buffer or event id is out of range or not its position.
    Ids,
    /// A task names a node the program lacks, a source node, or a node twice; or a node
    /// is run by no task.
    Nodes,
    /// An event is recorded twice or never, or waited on by its own stream.
    Events,
    /// The waits and stream orders form a cycle: the ranks would hang.
    Deadlock,
    /// A task reads a value whose producer is not ordered before it.
    Dependency,
    /// A buffer's values, kind, size, producer, reader or the task's reads/writes are wrong.
    Buffers,
    /// Two buffers share bytes while their lifetimes are not ordered.
    Overlap,
    /// A collective call is missing, misdescribed, or ordered differently across a group.
    Collectives,
    /// A kernel configuration does not fit its task.
    Kernel,
    /// A predicted time is not finite, ends before it starts, or starts before a
    /// dependency ends.
    Times,
    /// The memory summary or the prediction's figures disagree with the plan.
    Memory,
}

impl PlanRule {
    /// The rule's short name, shown in brackets in messages.
    pub fn name(self) -> &'static str {
        match self {
            PlanRule::Header => "header",
            PlanRule::Ids => "ids",
            PlanRule::Nodes => "nodes",
            PlanRule::Events => "events",
            PlanRule::Deadlock => "deadlock",
            PlanRule::Dependency => "dependency",
            PlanRule::Buffers => "buffers",
            PlanRule::Overlap => "overlap",
            PlanRule::Collectives => "collectives",
            PlanRule::Kernel => "kernel",
            PlanRule::Times => "times",
            PlanRule::Memory => "memory",
        }
    }
}

/// One broken rule: where (rank), which rule, and a message naming the task(s),
/// node(s) or buffer(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rank, or `None` for a plan-wide problem.
    pub rank: Option<u32>,
    pub rule: PlanRule,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rank {
            Some(r) => write!(f, "rank {r}: [{}] {}", self.rule.name(), self.message),
            None => write!(f, "[{}] {}", self.rule.name(), self.message),
        }
    }
}

/// Every rule a plan breaks (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanErrors(pub Vec<Violation>);

impl PlanErrors {
    /// Whether some violation is of `rule`.
    pub fn has(&self, rule: PlanRule) -> bool {
        self.0.iter().any(|v| v.rule == rule)
    }
}

impl fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the plan breaks {} rule(s):", self.0.len())?;
        for v in &self.0 {
            write!(f, "\n  {v}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PlanErrors {}
