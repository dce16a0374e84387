//! Errors of ONNX model import. Each names the file, and the node (name, op type,
//! domain, opset) where one is at fault.

use std::fmt;
use std::path::PathBuf;

use crate::tensor::OnnxTensorError;

/// A node Weft cannot import, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeProblem {
    pub name: String,
    pub op_type: String,
    pub domain: String,
    pub opset: i64,
    pub reason: String,
}

impl fmt::Display for NodeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let domain = if self.domain.is_empty() {
            "ai.onnx"
        } else {
            &self.domain
        };
        write!(
            f,
            "node {:?} ({} from {domain}, opset {}): {}",
            self.name, self.op_type, self.opset, self.reason
        )
    }
}

/// Why a model could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("{}: cannot read the model file: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a valid ONNX model: {source}", .path.display())]
    Decode {
        path: PathBuf,
        source: prost::DecodeError,
    },
    #[error("{}: {message}", .path.display())]
    Model { path: PathBuf, message: String },
    #[error("{}: initializer {name:?}: {source}", .path.display())]
    Initializer {
        path: PathBuf,
        name: String,
        source: Box<OnnxTensorError>,
    },
    #[error("{}: {} node(s) cannot be imported:\n{}", .path.display(), .problems.len(), list(.problems))]
    Nodes {
        path: PathBuf,
        problems: Vec<NodeProblem>,
    },
}

fn list(problems: &[NodeProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}
