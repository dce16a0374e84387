//! A profile flattened to its constants, one row each: the single walk behind validation,
//! `weft hw show` and docs/hardware.md, so the three can never list different fields.

use crate::profile::{Confidence, Profile, Sourced};
use crate::units::{
    Bytes, BytesPerSec, Count, FlopsPerSec, Fraction, GemmPoint, ProtocolSeconds, Seconds,
    SizePoint,
};

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

impl Quantity for Fraction {
    fn problem(&self) -> Option<String> {
        if !self.0.is_finite() || self.0 <= 0.0 || self.0 > 1.0 {
            Some(format!("must be a share in (0, 1], got {}", self.0))
        } else {
            None
        }
    }
}
impl Quantity for ProtocolSeconds {
    fn problem(&self) -> Option<String> {
        // Zero is a real value here: NCCL's NVLS base latency is 0.
        [
            ("ll", self.ll),
            ("ll128", self.ll128),
            ("simple", self.simple),
        ]
        .into_iter()
        .find_map(|(name, s)| {
            (!s.0.is_finite() || s.0 < 0.0)
                .then(|| format!("`{name}` must be a finite time of at least 0, got {}", s.0))
        })
    }
}

/// A table entry that knows where it sorts, so a table can be checked for order.
trait Entry: std::fmt::Display {
    fn problem(&self) -> Option<String>;
    /// The size the entry is keyed by; a table is strictly increasing in it.
    fn key(&self) -> f64;
}

impl Entry for GemmPoint {
    fn problem(&self) -> Option<String> {
        if [self.batch, self.m, self.n, self.k].contains(&0) {
            return Some(format!("GEMM `{self}` has a zero dimension"));
        }
        positive_finite(self.throughput.0)
    }
    fn key(&self) -> f64 {
        // FLOPs; f64 is exact enough for ordering any table a source gives.
        #[allow(clippy::cast_precision_loss)]
        let dims = [self.batch, self.m, self.n, self.k].map(|d| d as f64);
        2.0 * dims.iter().product::<f64>()
    }
}

impl Entry for SizePoint {
    fn problem(&self) -> Option<String> {
        self.bytes.problem().or_else(|| self.efficiency.problem())
    }
    fn key(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let b = self.bytes.0 as f64;
        b
    }
}

/// A table of entries, rendered `a; b; c`.
struct Table<'a, T>(&'a [T]);
impl<T: Entry> std::fmt::Display for Table<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
impl<T: Entry> Quantity for Table<'_, T> {
    fn problem(&self) -> Option<String> {
        if self.0.is_empty() {
            return Some("must hold at least one entry".into());
        }
        if let Some(p) = self.0.iter().find_map(Entry::problem) {
            return Some(p);
        }
        self.0
            .windows(2)
            .find(|w| w[0].key() >= w[1].key())
            .map(|w| {
                format!(
                    "entries must be strictly increasing in size: `{}` then `{}`",
                    w[0], w[1]
                )
            })
    }
}

fn table<'a, T>(c: Option<&'a Sourced<Vec<T>>>) -> Option<Sourced<Table<'a, T>>> {
    c.map(|c| Sourced {
        value: Table(&c.value),
        confidence: c.confidence,
        source: c.source.clone(),
    })
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
        row(&mut v, "device.peak_dense_f32", d.peak_dense_f32.as_ref());
        row(
            &mut v,
            "device.gemm_table",
            table(d.gemm_table.as_ref()).as_ref(),
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
            "device.memory_efficiency",
            table(d.memory_efficiency.as_ref()).as_ref(),
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
        row(
            &mut v,
            "intra_node.comm_sm_fraction",
            l.comm_sm_fraction.as_ref(),
        );
        row(&mut v, "intra_node.nvls_sms", l.nvls_sms.as_ref());
        if let Some(t) = &l.nccl {
            let p = "intra_node.nccl.";
            row(
                &mut v,
                &format!("{p}ring_base_latency"),
                Some(&t.ring_base_latency),
            );
            row(
                &mut v,
                &format!("{p}ring_step_latency"),
                Some(&t.ring_step_latency),
            );
            row(
                &mut v,
                &format!("{p}tree_base_latency"),
                Some(&t.tree_base_latency),
            );
            row(
                &mut v,
                &format!("{p}tree_step_latency"),
                Some(&t.tree_step_latency),
            );
            row(&mut v, &format!("{p}nvls_latency"), t.nvls_latency.as_ref());
            row(
                &mut v,
                &format!("{p}ll_max_bus_bandwidth"),
                Some(&t.ll_max_bus_bandwidth),
            );
            row(
                &mut v,
                &format!("{p}ll128_channel_bandwidth"),
                Some(&t.ll128_channel_bandwidth),
            );
            row(&mut v, &format!("{p}channels"), Some(&t.channels));
            row(
                &mut v,
                &format!("{p}ll128_ring_factor"),
                Some(&t.ll128_ring_factor),
            );
        }
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
            row(
                &mut v,
                "inter_node.comm_sm_fraction",
                i.comm_sm_fraction.as_ref(),
            );
        }
        v
    }
}
