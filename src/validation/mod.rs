//! Validation against the literature: each overlap paper's reported speedup beside the
//! speedup Weft predicts for the same setup under every strategy (`docs/validation.md`).
//!
//! - [`scenario`]: the scenario files (`examples/scenarios/*.json`), checked;
//! - [`measure`]: every setting compiled under every strategy (errors kept as text);
//! - [`compare`]: speedups, errors against the paper, ranking agreement;
//! - [`render`]: the doc.
//!
//! `cargo run --release --example validate` writes the scenario models and the doc;
//! `tests/it/validation.rs` checks both are current.

pub mod compare;
pub mod measure;
pub mod render;
pub mod scenario;

use std::path::Path;

pub use render::COMMAND;
pub use scenario::{MODEL_DIR, SCENARIO_DIR, Scenario, ScenarioError, load_scenarios};

/// The doc's path below the repository root.
pub const DOC: &str = "docs/validation.md";

/// Reads the scenarios below `root`, compiles every setting under every strategy and
/// renders `docs/validation.md`'s text.
pub fn generate(root: &Path) -> Result<String, ScenarioError> {
    let scenarios = load_scenarios(root)?;
    let measured: Vec<render::Measured<'_>> = scenarios
        .iter()
        .map(|scenario| render::Measured {
            scenario,
            results: measure::measure_scenario(root, scenario),
        })
        .collect();
    Ok(render::render(&measured))
}

/// Writes every model of [`crate::zoo::scenario_models`] into `root/examples/scenarios/models`.
pub fn write_models(root: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let dir = root.join(MODEL_DIR);
    std::fs::create_dir_all(&dir)?;
    for (file, model) in crate::zoo::scenario_models() {
        let graph = model.build()?;
        std::fs::write(dir.join(file), crate::json::to_json(&graph))?;
    }
    Ok(())
}
