//! # weft-ir — the tensor-and-collective IR
//!
//! Every stage of Weft speaks this IR: frontends produce it, passes rewrite it,
//! backends execute or emit it. It is deliberately small and explicit:
//!
//! - **Graph** ([`Graph`]): nodes and values in typed arenas ([`arena`]), addressed by
//!   [`NodeId`] and [`ValueId`]. Arena order is execution order.
//! - **Values** carry a [`TensorType`] (a [`DType`] and a [`Shape`] whose dims are
//!   numbers or symbolic expressions such as `batch*seq`, bound by the graph's `dims`)
//!   and a [`Sharding`] over the graph's named device [`Mesh`].
//! - **Ops** ([`Op`]) are typed enums: compute ops, MoE routing, and collectives that
//!   each name the mesh axis they run over.
//! - **Verifier** ([`verify()`]): handles, names, order and cycles, typing rules
//!   ([`infer`]), stored types, shardings. Every error names the node, its op, its
//!   inputs and the rule broken.
//! - **Printers**: the stable text form ([`text`]) and Graphviz DOT ([`dot`]).
//!
//! This crate depends on no other Weft crate and on nothing heavy; serde support is
//! behind the `serde` feature.

pub mod alloc;
pub mod arena;
pub mod dot;
#[cfg(feature = "serde")]
mod float_json;
pub mod graph;
pub mod infer;
pub mod layers;
pub mod memory;
pub mod mesh;
pub mod model_change;
pub mod norm_matmul;
pub mod occupancy;
pub mod op;
pub mod propagate;
pub mod rng;
pub mod stats;
pub mod tensor;
pub mod text;
pub mod types;
pub mod verify;

pub use alloc::AllocError;
pub use arena::{Arena, Handle};
pub use graph::{Graph, Node, NodeId, Value, ValueId};
pub use layers::{Layers, segment_layers};
pub use memory::{MemoryEstimate, last_uses, peak_memory};
pub use mesh::{Mesh, MeshParseError, Placement, ReduceOp, Sharding};
pub use model_change::ModelChange;
pub use occupancy::{Collective, CollectiveKind, Occupancy};
pub use op::{
    A2aPayload, Arity, CarriedRows, ExpertRows, FusedStep, GeluApprox, Init, NormKind, Op, OpClass,
    ReduceKind,
};
pub use stats::{GraphStats, stats};
pub use tensor::{Tensor, TensorData, TensorError, round_to};
pub use types::{DType, Dim, DimBindings, DimError, Shape, TensorType};
pub use verify::{Rule, VerifyError, VerifyErrors, verify};
