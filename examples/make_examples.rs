//! Writes the bundled example models from `weft::zoo`:
//! `cargo run --example make_examples` (run from the repository root).
//! A test checks that the committed files equal what this writes.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for (file, example) in weft::zoo::all_examples() {
        let graph = example.build()?;
        std::fs::write(dir.join(file), weft::json::to_json(&graph))?;
    }
    Ok(())
}
