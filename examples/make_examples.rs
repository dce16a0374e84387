//! Writes the bundled example models from `weft::zoo`:
//! `cargo run --example make_examples` (run from the repository root).
//! A test checks that the committed files equal what this writes.

use std::path::Path;

use weft::zoo::llama;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for (file, cfg) in weft::zoo::bundled_examples() {
        let graph = llama(&cfg)?;
        std::fs::write(dir.join(file), weft::json::to_json(&graph))?;
    }
    Ok(())
}
