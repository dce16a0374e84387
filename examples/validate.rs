//! Writes the validation scenarios' models (`examples/scenarios/models/`, from
//! `weft::zoo::scenario_models`) and then `docs/validation.md`, every scenario compiled
//! under every strategy: `cargo run --release --example validate` (from anywhere: paths
//! are the repository's). `tests/it/validation.rs` checks both are current.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    weft::validation::write_models(root)?;
    let doc = weft::validation::generate(root)?;
    std::fs::write(root.join(weft::validation::DOC), doc)?;
    Ok(())
}
