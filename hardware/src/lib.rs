//! Weft's hardware profiles as data.
//!
//! A [`Profile`] describes a machine the cost model, the plan and the backends reason about:
//! per-GPU compute and memory, kernel launch overheads, the link inside a node and the link
//! between nodes. Every constant carries its source and how far it can be trusted, because no
//! GPU was at hand to measure them; docs/hardware.md lists them all. Built-in profiles live in
//! `hardware/profiles/*.json`; a user's file is loaded with [`Profile::from_json_file`] and
//! validated the same way. This crate depends on no other Weft crate so every layer can read it.

mod constants;
mod load;
mod profile;
mod render;
mod units;

pub use constants::Constant;
pub use load::{MAX_COMM_SM_FRACTION, ProfileError};
pub use profile::{
    Confidence, Device, InterNodeKind, InterNodeLink, IntraNodeKind, IntraNodeLink, NcclTuning,
    Profile, Sourced,
};
pub use units::{
    Bytes, BytesPerSec, Count, FlopsPerSec, Fraction, GemmPoint, ProtocolSeconds, Seconds,
    SizePoint,
};
