//! # weft-frontend-json — Weft's JSON graph format
//!
//! The format is documented in `docs/json-format.md`. It round-trips exactly:
//! [`to_json`] of a parsed graph parses back to an identical graph, and prints to
//! identical bytes. Errors carry the file, line and column, and list the valid choices
//! when an op or attribute name is unknown.

mod error;
pub mod external;
mod parse;
mod write;

use std::path::Path;

pub use error::{ErrorDetails, ErrorKind, JsonError};
pub use parse::{FORMAT_VERSION, LoadOptions, parse_str, parse_str_with};
pub use write::to_json;

/// Reads and verifies the model at `path`.
pub fn load(path: &Path) -> Result<weft_ir::Graph, JsonError> {
    load_with(path, &LoadOptions::default())
}

/// [`load`] with options.
pub fn load_with(path: &Path, options: &LoadOptions) -> Result<weft_ir::Graph, JsonError> {
    let bytes = std::fs::read(path).map_err(|e| {
        JsonError::file(
            ErrorKind::Io,
            path,
            format!("cannot read the model file: {e}"),
        )
    })?;
    let src = String::from_utf8(bytes).map_err(|e| {
        JsonError::file(
            ErrorKind::Syntax,
            path,
            format!(
                "the file is not UTF-8 text (bad byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    tracing::debug!(path = %path.display(), bytes = src.len(), "parsing JSON model");
    parse_str_with(&src, path, options)
}
