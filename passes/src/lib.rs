//! # weft-passes — graph transformations
//!
//! Every pass implements [`Pass`]; a [`PassManager`] runs them in order and runs the IR
//! verifier after each one (cranelift's discipline), so a pass that breaks an invariant
//! is named at once instead of surfacing as a wrong answer stages later.

pub mod cost;
mod dce;
mod manager;
pub mod model_change;
mod raise;
pub mod raise_moe;
pub mod rebuild;
pub mod saturate;
pub mod schedule;
pub mod search;
pub mod shard;
pub mod strategy;

pub use dce::DeadCodeElimination;
pub use manager::{Pass, PassError, PassManager, PassReport};
pub use raise::RaisePatterns;
