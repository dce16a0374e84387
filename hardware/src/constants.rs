//! A profile flattened to its constants, one row each: the single walk behind validation,
//! `weft hw show` and docs/hardware.md, so the three can never list different fields.

use crate::profile::{Confidence, Profile, Sourced};
use crate::units::{Bytes, BytesPerSec, Count, FlopsPerSec, Seconds};

/// One constant of a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Constant {
    /// Its JSON path, e.g. `device.peak_dense_16bit`.
    pub field: String,
    /// The value with its unit (`989.4 TFLOP/s`), or `None` for an optional field the profile
    /// leaves out.
    pub value: Option<String>,
    /// How far to trust it (`None` when absent).
    pub confidence: Option<Confidence>,
    /// Its citation (empty when absent).
    pub source: String,
    /// Why the value is invalid, if it is.
    pub problem: Option<String>,
}

/// A value a profile may hold: it renders with its unit and knows when it is meaningless.
trait Quantity: std::fmt::Display {
    fn problem(&self) -> Option<String>;
}

fn positive_finite(x: f64) -> Option<String> {
    if !x.is_finite() {
        Some(format!("must be a finite number, got {x}"))
    } else if x <= 0.0 {
        Some(format!("must be positive, got {x}"))
    } else {
        None
    }
}

impl Quantity for BytesPerSec {
    fn problem(&self) -> Option<String> {
        positive_finite(self.0)
    }
}
impl Quantity for FlopsPerSec {
    fn problem(&self) -> Option<String> {
        positive_finite(self.0)
    }
}
impl Quantity for Seconds {
    fn problem(&self) -> Option<String> {
        positive_finite(self.0)
    }
}
impl Quantity for Bytes {
    fn problem(&self) -> Option<String> {
        (self.0 == 0).then(|| "must be positive, got 0".to_string())
    }
}
impl Quantity for Count {
    fn problem(&self) -> Option<String> {
        (self.0 == 0).then(|| "must be positive, got 0".to_string())
    }
}

/// A yes/no fact (NVLink SHARP), rendered as `yes`/`no`.
struct YesNo(bool);
impl std::fmt::Display for YesNo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0 { "yes" } else { "no" })
    }
}
impl Quantity for YesNo {
    fn problem(&self) -> Option<String> {
        None
    }
}

fn row<T: Quantity>(out: &mut Vec<Constant>, field: &str, c: Option<&Sourced<T>>) {
    out.push(match c {
        Some(c) => Constant {
            field: field.to_string(),
            value: Some(c.value.to_string()),
            confidence: Some(c.confidence),
            source: c.source.clone(),
            problem: c.value.problem().or_else(|| {
                c.source
                    .trim()
                    .is_empty()
                    .then(|| "its `source` is empty; every constant cites one".to_string())
            }),
        },
        None => Constant {
            field: field.to_string(),
            value: None,
            confidence: None,
            source: String::new(),
            problem: None,
        },
    });
}

impl Profile {
    /// Every constant of the profile in a fixed order, absent optional ones included.
    pub fn constants(&self) -> Vec<Constant> {
        let mut v = Vec::new();
        let d = &self.device;
        row(&mut v, "device.sm_count", d.sm_count.as_ref());
        row(
            &mut v,
            "device.shared_memory_per_sm",
            d.shared_memory_per_sm.as_ref(),
        );
        row(
            &mut v,
            "device.registers_per_sm",
            d.registers_per_sm.as_ref(),
        );
        row(&mut v, "device.peak_dense_16bit", Some(&d.peak_dense_16bit));
        row(
            &mut v,
            "device.achievable_dense_16bit",
            d.achievable_dense_16bit.as_ref(),
        );
        row(&mut v, "device.peak_dense_fp8", d.peak_dense_fp8.as_ref());
        row(
            &mut v,
            "device.achievable_dense_fp8",
            d.achievable_dense_fp8.as_ref(),
        );
        row(&mut v, "device.memory_capacity", Some(&d.memory_capacity));
        row(
            &mut v,
            "device.memory_peak_bandwidth",
            d.memory_peak_bandwidth.as_ref(),
        );
        row(
            &mut v,
            "device.memory_achievable_bandwidth",
            d.memory_achievable_bandwidth.as_ref(),
        );
        row(
            &mut v,
            "kernel_launch_overhead",
            Some(&self.kernel_launch_overhead),
        );
        row(
            &mut v,
            "collective_launch_overhead",
            Some(&self.collective_launch_overhead),
        );
        let l = &self.intra_node;
        row(
            &mut v,
            "intra_node.line_rate_per_direction",
            l.line_rate_per_direction.as_ref(),
        );
        row(
            &mut v,
            "intra_node.allreduce_bus_bandwidth",
            Some(&l.allreduce_bus_bandwidth),
        );
        row(
            &mut v,
            "intra_node.allgather_bus_bandwidth",
            Some(&l.allgather_bus_bandwidth),
        );
        row(
            &mut v,
            "intra_node.allreduce_latency",
            Some(&l.allreduce_latency),
        );
        row(
            &mut v,
            "intra_node.allgather_latency",
            Some(&l.allgather_latency),
        );
        let sharp = l.nvlink_sharp.as_ref().map(|s| Sourced {
            value: YesNo(s.value),
            confidence: s.confidence,
            source: s.source.clone(),
        });
        row(&mut v, "intra_node.nvlink_sharp", sharp.as_ref());
        if let Some(i) = &self.inter_node {
            row(
                &mut v,
                "inter_node.line_rate_per_gpu",
                i.line_rate_per_gpu.as_ref(),
            );
            row(
                &mut v,
                "inter_node.bandwidth_per_gpu",
                Some(&i.bandwidth_per_gpu),
            );
            row(&mut v, "inter_node.step_latency", Some(&i.step_latency));
            row(
                &mut v,
                "inter_node.allreduce_bus_bandwidth",
                i.allreduce_bus_bandwidth.as_ref(),
            );
        }
        v
    }
}
