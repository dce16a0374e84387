//! Weft's integration tests, linked as one binary (naga's layout): the bundled examples,
//! the JSON round trip, error reporting, and the CLI end to end.

mod cli;
mod conformance;
mod errors;
mod examples;
mod onnx;
mod raise;
mod roundtrip;
mod run;
mod saturate;
mod saturate_models;
mod shard;

use std::path::{Path, PathBuf};

/// A path below the repository root.
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Loads a model with default options, panicking with the rendered error.
pub fn load(rel: &str) -> weft::ir::Graph {
    weft::load_model(&repo(rel), &weft::LoadOptions::default())
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The largest |got − want| over the largest |want|, over every output; outputs must
/// agree in name and shape.
pub fn worst_relative(
    want: &[(String, weft::ir::Tensor)],
    got: &[(String, weft::ir::Tensor)],
) -> f64 {
    assert_eq!(want.len(), got.len(), "output counts differ");
    let mut worst = 0f64;
    for ((nw, w), (ng, g)) in want.iter().zip(got) {
        assert_eq!(nw, ng);
        assert_eq!(w.shape(), g.shape(), "output {nw}");
        let (w, g) = (w.to_f64_vec(), g.to_f64_vec());
        let scale = w.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
        for (a, b) in w.iter().zip(&g) {
            worst = worst.max((a - b).abs() / scale);
        }
    }
    worst
}
