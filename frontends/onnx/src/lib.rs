//! # weft-frontend-onnx — reading ONNX
//!
//! Decodes ONNX protobuf with hand-written `prost` messages ([`proto`]) and imports models
//! into Weft's IR ([`import`]): the default-domain opsets in
//! [`import::OPSETS`], initializers,
//! graph inputs with symbolic dims bound at import, and the ops in
//! [`import::SUPPORTED`]. A model with ops Weft cannot import gets one error that lists
//! every such node. It also decodes single `TensorProto` files, which `weft run` reads
//! from ONNX test-data folders.

mod error;
mod external;
pub mod import;
pub mod proto;
pub mod tensor;

use std::path::Path;

use prost::Message;

pub use error::{NodeProblem, OnnxError};
pub use import::{ImportOptions, import_model};
pub use proto::TensorProto;
pub use tensor::{OnnxTensorError, decode_tensor_proto, tensor_from_proto};

/// Reads, decodes and imports the model at `path`.
pub fn load(path: &Path, options: &ImportOptions) -> Result<weft_ir::Graph, OnnxError> {
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Io {
        path: path.to_owned(),
        source,
    })?;
    let model =
        proto::ModelProto::decode(bytes.as_slice()).map_err(|source| OnnxError::Decode {
            path: path.to_owned(),
            source,
        })?;
    import_model(&model, path, options)
}
