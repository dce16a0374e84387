//! # weft-frontend-onnx — reading ONNX
//!
//! Today this crate decodes ONNX `TensorProto` messages into [`weft_ir::Tensor`]s, which is
//! what `weft run` needs to read the ONNX test-data layout (`input_0.pb`, …). Model import
//! (`ModelProto` → [`weft_ir::Graph`]) comes next and will reuse [`proto`].

pub mod proto;
pub mod tensor;

pub use proto::TensorProto;
pub use tensor::{OnnxTensorError, decode_tensor_proto, tensor_from_proto};
