//! Typed units, so a bandwidth can never be passed where a FLOP rate or a time is wanted.
//!
//! Every quantity is stored in SI base units (bytes, bytes per second, FLOP per second,
//! seconds) and serialises as a bare JSON number; `Display` renders the unit people read
//! (GB, GB/s, TFLOP/s, µs), decimal prefixes throughout as the sources use them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Bytes(pub u64);

/// A bandwidth in bytes per second.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BytesPerSec(pub f64);

/// A compute rate in floating-point operations per second.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FlopsPerSec(pub f64);

/// A duration in seconds.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seconds(pub f64);

/// A count of hardware units (SMs, registers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Count(pub u64);

/// A dimensionless share in `(0, 1]` (an efficiency, a fraction of the SMs).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fraction(pub f64);

/// One time per NCCL protocol (LL, LL128, Simple), as NCCL's tuner tabulates latencies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolSeconds {
    /// The low-latency protocol (8-byte stores with a flag).
    pub ll: Seconds,
    /// The 128-byte-line low-latency protocol.
    pub ll128: Seconds,
    /// The bandwidth protocol.
    pub simple: Seconds,
}

/// One measured GEMM: problem size and the throughput it reached.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GemmPoint {
    /// Batch count.
    pub batch: u64,
    /// Rows of the result.
    pub m: u64,
    /// Columns of the result.
    pub n: u64,
    /// Contraction length.
    pub k: u64,
    /// Measured rate, `2·batch·m·n·k / time`.
    pub throughput: FlopsPerSec,
}

/// One point of a size-dependent efficiency curve: at transfers of `bytes`, this share of
/// the nominal rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizePoint {
    /// Transfer size.
    pub bytes: Bytes,
    /// Share of the nominal bandwidth reached.
    pub efficiency: Fraction,
}

/// `x` with at most three decimals and no trailing zeros: `794.5`, `480`, `0.001`.
fn short(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Lossless for every size a profile holds (far below 2^53).
        #[allow(clippy::cast_precision_loss)]
        let gb = self.0 as f64 / 1e9;
        write!(f, "{} GB", short(gb))
    }
}

impl fmt::Display for BytesPerSec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} GB/s", short(self.0 / 1e9))
    }
}

impl fmt::Display for FlopsPerSec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} TFLOP/s", short(self.0 / 1e12))
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} µs", short(self.0 * 1e6))
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Fraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&short(self.0))
    }
}

impl fmt::Display for ProtocolSeconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LL {} / LL128 {} / Simple {}",
            self.ll, self.ll128, self.simple
        )
    }
}

/// A GEMM table renders as `b·m·n·k → TFLOP/s` entries.
impl fmt::Display for GemmPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}·{}·{}·{} → {}",
            self.batch, self.m, self.n, self.k, self.throughput
        )
    }
}

impl fmt::Display for SizePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} B → {}", self.bytes.0, self.efficiency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_uses_the_units_people_read() {
        assert_eq!(FlopsPerSec(794.5e12).to_string(), "794.5 TFLOP/s");
        assert_eq!(BytesPerSec(480e9).to_string(), "480 GB/s");
        assert_eq!(Seconds(10.8e-6).to_string(), "10.8 µs");
        assert_eq!(Bytes(141_000_000_000).to_string(), "141 GB");
        assert_eq!(Count(132).to_string(), "132");
    }
}
