//! Which priority rule list scheduling ran the plan's tasks in, and what each rule tried
//! predicted.
//!
//! List scheduling with one priority is a heuristic: where two branches are independent
//! (a ladder layer's attention and MLP), the critical-path rule can start the one whose
//! collective then finds nothing left to run under. The scheduler therefore simulates a
//! small fixed set of rules and keeps the fastest (ties to the critical path), and the
//! plan records the winner and every rule's figure so the choice can be read back.

use serde::{Deserialize, Serialize};

/// A priority rule of list scheduling: among a stream's ready tasks, which starts first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulePriority {
    /// Longest remaining path first (bottom level over predicted times, communication
    /// counted at its own time).
    #[default]
    CriticalPath,
    /// Program order: the earliest node of the program first.
    ProgramOrder,
    /// Bottom level with communication counted twice: the work that feeds a collective
    /// starts earlier, so the collective has more compute left to run under.
    CommWeighted,
}

impl SchedulePriority {
    /// Every rule, in the order ties are broken (the first is the default).
    pub const ALL: [SchedulePriority; 3] = [
        SchedulePriority::CriticalPath,
        SchedulePriority::ProgramOrder,
        SchedulePriority::CommWeighted,
    ];

    /// The rule's name, as written in plans (`critical_path`, …) with spaces.
    pub fn describe(self) -> &'static str {
        match self {
            SchedulePriority::CriticalPath => "critical path",
            SchedulePriority::ProgramOrder => "program order",
            SchedulePriority::CommWeighted => "critical path, communication counted twice",
        }
    }
}

impl std::fmt::Display for SchedulePriority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// One rule the scheduler simulated for the plan's program.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityTried {
    pub priority: SchedulePriority,
    /// The predicted step (µs) of the list schedule under this rule, rank 0's last end.
    pub predicted_us: f64,
    /// Whether its memory plan was made and fit the limit: `false` when it was faster
    /// than the winner but did not fit (so the winner is slower than the fastest rule),
    /// `null` when its memory plan was not needed (a faster rule fit first).
    pub fits_memory: Option<bool>,
}
