//! Weft's integration tests, linked as one binary (naga's layout): the bundled examples,
//! the JSON round trip, error reporting, and the CLI end to end.

mod cli;
mod comm;
pub mod compare;
mod conformance;
mod dcca;
mod decode_moe;
mod errors;
mod examples;
mod extract;
mod hw;
mod ladder;
mod layers;
mod limits;
mod model_change;
mod onnx;
mod output_names;
mod plan;
mod priority;
mod raise;
mod raise_attention;
mod readme;
mod review_r;
mod review_search;
mod roundtrip;
mod run;
mod saturate;
mod saturate_comet;
mod saturate_models;
mod saturate_prologue;
mod saturate_rounds;
mod search;
mod shard;
mod split_chain;
mod strategies;
mod tokenweave;
mod training;
mod validation;

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

pub use compare::worst_relative;
