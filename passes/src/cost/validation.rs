//! The published single-operation figures the cost model is checked against: the ones it
//! was calibrated on, and the ones held aside (never used to choose a constant). The
//! tables in docs/cost-model.md are rendered from here by a test, so the numbers in the
//! doc are always this model's.
//!
//! Every prediction goes through the public [`CostModel::op_cost`] on a synthetic op, so
//! the whole path (shapes, dispatch, dtype, group, algorithm choice) is what is checked.

use std::fmt::Write;

use weft_hardware::Profile;
use weft_ir::{DType, DimBindings, Mesh, Op, ReduceOp, Shape, TensorType};

use super::{CostError, CostModel, OpCost};

/// One published figure and the model's prediction of it.
#[derive(Clone, Debug)]
pub struct Check {
    /// What was measured.
    pub what: String,
    /// Where it was published (reference file, section, primary source).
    pub source: &'static str,
    /// The unit both numbers are in.
    pub unit: &'static str,
    pub published: f64,
    pub predicted: f64,
    /// For a calibration figure used only as an upper bound (the MAMF cap), not fitted.
    pub bound_only: bool,
    /// For a held-aside figure the model misses by more than the tolerance: why. A test
    /// checks that every such row really misses, so the note goes when the miss does.
    pub known_miss: Option<&'static str>,
    /// For a held-aside figure that was looked at while the model's structure was chosen:
    /// how. Such a row is shown, marked, but is not independent evidence and is not
    /// counted among the held-aside figures within tolerance.
    pub seen: Option<&'static str>,
}

impl Check {
    /// |predicted − published| / published.
    pub fn error(&self) -> f64 {
        (self.predicted - self.published).abs() / self.published
    }
}

/// The error the held-aside figures must stay within (issue 11, "Speed and truth").
pub const HELD_ASIDE_TOLERANCE: f64 = 0.15;

const XLA_GEMM: &str = "cost-model.md §2.1: XLA sm_90 matmul_interpolator_data.h";
/// The two GEMM shapes the model's structure was chosen after seeing.
const GEMM_SEEN: &str = "the GEMM model's structure was revised after its predictions for 1·4096·1024·512 and 1·256·2048·4096 were known (a split-K rule was added for them, then removed with the wave-padding fix), so these two rows are not independent evidence and are not counted above";
/// Why the few-tile, long-k GEMM misses.
const NO_SPLIT_K: &str = "the model has no split-K: a GEMM with 32 output tiles and k = 4096 is priced as one partial wave of its FLOPs, faster than measured (which kernel cuBLAS ran is not known); the split-K rule that matched it was removed because it made the time drop when k grew past a split threshold";
const XLA_COLL: &str = "cost-model.md §2.4: XLA sm_90 collective_interpolator_data.h";

fn t(dtype: DType, dims: &[u64]) -> TensorType {
    TensorType::new(dtype, Shape::new(dims.iter().copied()))
}

fn model(profile: &str, n: u64) -> Result<CostModel, CostError> {
    let p = Profile::builtin(profile).map_err(|e| CostError::Profile {
        profile: profile.into(),
        field: String::new(),
        reason: e.to_string(),
    })?;
    let mesh = Mesh::new([("x", n)]).map_err(|e| CostError::Unsupported {
        op: "mesh".into(),
        reason: e.to_string(),
    })?;
    CostModel::new(&p, &mesh)
}

/// TFLOP/s the model predicts for a BF16 `[b, m, k] @ [b, k, n]`.
pub fn gemm_tflops(profile: &str, b: u64, m: u64, n: u64, k: u64) -> Result<f64, CostError> {
    let cm = model(profile, 1)?;
    let (x, y, z) = (
        t(DType::Bf16, &[b, m, k]),
        t(DType::Bf16, &[b, k, n]),
        t(DType::Bf16, &[b, m, n]),
    );
    let op = Op::MatMul {
        transpose_a: false,
        transpose_b: false,
    };
    let c = cm.op_cost(&op, &[&x, &y], &[&z], &DimBindings::new())?;
    #[allow(clippy::cast_precision_loss)]
    let flops = 2.0 * (b * m * n * k) as f64;
    Ok(flops / (c.time_us * 1e-6) / 1e12)
}

/// The cost of one collective over a group of `n` on `profile`, with nccl-tests `size`
/// `bytes` (f32 elements, as XLA's table).
pub fn collective_cost(profile: &str, kind: &str, n: u64, bytes: u64) -> Result<OpCost, CostError> {
    let cm = model(profile, n)?;
    let e = bytes / 4;
    let axis = "x".to_string();
    let (op, input, output) = match kind {
        "all_reduce" => (
            Op::AllReduce {
                axis,
                op: ReduceOp::Sum,
            },
            e,
            e,
        ),
        "all_gather" => (Op::AllGather { axis, dim: 0 }, e / n, e),
        "reduce_scatter" => (
            Op::ReduceScatter {
                axis,
                dim: 0,
                op: ReduceOp::Sum,
            },
            e,
            e / n,
        ),
        "send" => (Op::Send { axis, shift: 8 }, e, 0),
        _ => (
            Op::AllToAll {
                axis,
                split_dim: 0,
                concat_dim: 0,
                payload: weft_ir::A2aPayload::Dense,
            },
            e,
            e,
        ),
    };
    let (i, o) = (t(DType::F32, &[input]), t(DType::F32, &[output]));
    if kind == "send" {
        return cm.op_cost(&op, &[&i], &[], &DimBindings::new());
    }
    cm.op_cost(&op, &[&i], &[&o], &DimBindings::new())
}

/// nccl-tests bus bandwidth (GB/s) the model predicts, from the whole op time.
pub fn busbw(profile: &str, kind: &str, n: u64, bytes: u64) -> Result<f64, CostError> {
    let c = collective_cost(profile, kind, n, bytes)?;
    #[allow(clippy::cast_precision_loss)]
    let (b, nf) = (bytes as f64, n as f64);
    let factor = match kind {
        "all_reduce" => 2.0 * (nf - 1.0) / nf,
        "send" => 1.0,
        _ => (nf - 1.0) / nf,
    };
    Ok(b / (c.time_us * 1e-6) * factor / 1e9)
}

/// Why the NVLS all-reduce rows between 256 MiB and 2 GiB miss.
const NVLS_RAMP: &str = "the α–β NVLS model (25 µs + S/274 GB/s) reaches 95% of its 480 GB/s asymptote by 256 MiB; the framework-level measurements (XLA's op timings, PyTorch's NCCL calls) sit near 400 GB/s up to 2 GiB, while a user's nccl-tests run reports 470 GB/s at 1 GB (NVIDIA/nccl #1506, held aside above and met): the published figures disagree by 18% at the same size, and the model follows NCCL's own benchmark. Not tuned toward the lower ones: fitting a slower ramp would use these very figures, and a GPU run of Weft's own all-reduce would decide which describes it";

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The figures the model's constants were fitted to or read from.
pub fn calibrated() -> Result<Vec<Check>, CostError> {
    let mut v = Vec::new();
    for (b, m, n, k, tf) in [
        (1, 512, 256, 256, 11.5),
        (1, 1024, 2048, 256, 139.5),
        (1, 1024, 2048, 2048, 524.3),
        (1, 4096, 4096, 4096, 783.3),
    ] {
        v.push(Check {
            what: format!("h100 BF16 GEMM {b}·{m}·{n}·{k}"),
            source: XLA_GEMM,
            unit: "TFLOP/s",
            published: tf,
            predicted: gemm_tflops("h100-sxm-8", b, m, n, k)?,
            bound_only: false,
            known_miss: None,
            seen: None,
        });
    }
    v.push(Check {
        what: "h100 BF16 GEMM 1·2048·2048·13312 (MAMF best shape: a cap the model never exceeds, not a fitted point)".into(),
        source: "cost-model.md §2.1: stas00/ml-engineering MAMF table",
        unit: "TFLOP/s",
        published: 794.5,
        predicted: gemm_tflops("h100-sxm-8", 1, 2048, 2048, 13312)?,
        bound_only: true,
        known_miss: None,
        seen: None,
    });
    v.push(Check {
        what: "h100 all-reduce busbw, 8 GPUs, 64 GiB (NVLS asymptote)".into(),
        source: "cost-model.md §2.4: nccl-tests #212, nccl #2140",
        unit: "GB/s",
        published: 480.0,
        predicted: busbw("h100-sxm-8", "all_reduce", 8, 64 * GIB)?,
        bound_only: false,
        known_miss: None,
        seen: None,
    });
    v.push(Check {
        what: "h100 all-gather busbw, 8 GPUs, 64 GiB (ring asymptote)".into(),
        source: "cost-model.md §2.4: nccl-tests #212",
        unit: "GB/s",
        published: 370.0,
        predicted: busbw("h100-sxm-8", "all_gather", 8, 64 * GIB)?,
        bound_only: false,
        known_miss: None,
        seen: None,
    });
    let lat = |kind: &str| -> Result<f64, CostError> {
        Ok(collective_cost("h100-sxm-8", kind, 8, 4)?.time_us - 5.0)
    };
    v.push(Check {
        what: "h100 all-reduce latency, 8 GPUs (ring LL, NCCL launch excluded)".into(),
        source: "cost-model.md §2.4: NCCL tuning.cc, derived",
        unit: "µs",
        published: 15.0,
        predicted: lat("all_reduce")?,
        bound_only: false,
        known_miss: None,
        seen: None,
    });
    v.push(Check {
        what: "h100 all-gather latency, 8 GPUs (ring LL, NCCL launch excluded)".into(),
        source: "cost-model.md §2.4: NCCL tuning.cc, derived",
        unit: "µs",
        published: 10.8,
        predicted: lat("all_gather")?,
        bound_only: false,
        known_miss: None,
        seen: None,
    });
    v.push(Check {
        what: "h100×2 send bandwidth to the other node, 64 GiB".into(),
        source: "cost-model.md §2.6: nccl-tests #319, ~48 GB/s per CX7 NIC",
        unit: "GB/s",
        published: 48.0,
        predicted: busbw("h100-sxm-8x2-ndr", "send", 16, 64 * GIB)?,
        bound_only: false,
        known_miss: None,
        seen: None,
    });
    Ok(v)
}

/// Published figures no constant was chosen from.
pub fn held_aside() -> Result<Vec<Check>, CostError> {
    let mut v = Vec::new();
    for (b, m, n, k, tf) in [
        (2, 4096, 2048, 4096, 783.2),
        (2, 4096, 4096, 2048, 763.0),
        (1, 2048, 2048, 2048, 632.0),
        (1, 4096, 1024, 512, 343.7),
        (1, 256, 2048, 4096, 285.9),
    ] {
        let seen = [(4096, 1024, 512), (256, 2048, 4096)]
            .contains(&(m, n, k))
            .then_some(GEMM_SEEN);
        v.push(Check {
            what: format!("h100 BF16 GEMM {b}·{m}·{n}·{k}"),
            source: XLA_GEMM,
            unit: "TFLOP/s",
            published: tf,
            predicted: gemm_tflops("h100-sxm-8", b, m, n, k)?,
            bound_only: false,
            known_miss: ((m, n, k) == (256, 2048, 4096)).then_some(NO_SPLIT_K),
            seen,
        });
    }
    for (kind, size, label, bw) in [
        ("all_gather", 256 * MIB, "256 MiB", 322.1),
        ("all_gather", GIB, "1 GiB", 344.1),
        ("all_gather", 2 * GIB, "2 GiB", 351.7),
        ("reduce_scatter", 256 * MIB, "256 MiB", 304.6),
        ("reduce_scatter", GIB, "1 GiB", 321.7),
        ("reduce_scatter", 2 * GIB, "2 GiB", 329.1),
        ("all_to_all", 256 * MIB, "256 MiB", 309.4),
        ("all_to_all", GIB, "1 GiB", 336.0),
        ("all_reduce", 256 * MIB, "256 MiB", 372.2),
        ("all_reduce", GIB, "1 GiB", 398.0),
        ("all_reduce", 2 * GIB, "2 GiB", 402.4),
    ] {
        v.push(Check {
            what: format!("h100 {kind} busbw, 8 GPUs, {label}"),
            source: XLA_COLL,
            unit: "GB/s",
            published: bw,
            predicted: busbw("h100-sxm-8", kind, 8, size)?,
            bound_only: false,
            known_miss: (kind == "all_reduce").then_some(NVLS_RAMP),
            seen: None,
        });
    }
    for (n, bw) in [(5, 420.0), (6, 440.0), (7, 460.0)] {
        v.push(Check {
            what: format!("h100 all-reduce busbw (NVLS), {n} GPUs, 64 GiB"),
            source: "cost-model.md §2.4: NVIDIA/nccl #1455",
            unit: "GB/s",
            published: bw,
            predicted: busbw("h100-sxm-8", "all_reduce", n, 64 * GIB)?,
            bound_only: false,
            known_miss: None,
            seen: None,
        });
    }
    for n in [2, 4] {
        v.push(Check {
            what: format!("h100 all-reduce busbw, {n} GPUs, 64 GiB (365-370, midpoint)"),
            source: "cost-model.md §2.4: NVIDIA/nccl #1455 (ring; NVLS no better at 2-4 GPUs)",
            unit: "GB/s",
            published: 367.5,
            predicted: busbw("h100-sxm-8", "all_reduce", n, 64 * GIB)?,
            bound_only: false,
            known_miss: None,
            seen: None,
        });
    }
    // A user's nccl-tests run at 1 GB (NVIDIA/nccl #1506): the same size as XLA's 1 GiB
    // row, measured by NCCL's own benchmark rather than through a framework.
    v.push(Check {
        what: "h100 all-reduce busbw (NVLS, nccl-tests), 8 GPUs, 1 GiB".into(),
        source: "cost-model.md §2.4: NVIDIA/nccl #1506 (a user's AR NVLS 470 GB/s at 1 GB)",
        unit: "GB/s",
        published: 470.0,
        predicted: busbw("h100-sxm-8", "all_reduce", 8, GIB)?,
        bound_only: false,
        known_miss: None,
        seen: None,
    });
    for (kind, bw) in [("reduce_scatter", 331.0), ("all_gather", 330.0)] {
        v.push(Check {
            what: format!("h100 NCCL {kind} busbw, 8 GPUs, 512 MiB (through PyTorch)"),
            source: "techniques.md §10.3: TokenWeave artifact figure_5.csv",
            unit: "GB/s",
            published: bw,
            predicted: busbw("h100-sxm-8", kind, 8, 512 * MIB)?,
            bound_only: false,
            known_miss: None,
            seen: None,
        });
    }
    v.push(Check {
        what: "h100 NCCL all-reduce busbw, 8 GPUs, 512 MiB (through PyTorch)".into(),
        source: "techniques.md §10.3: TokenWeave artifact figure_5.csv",
        unit: "GB/s",
        published: 391.0,
        predicted: busbw("h100-sxm-8", "all_reduce", 8, 512 * MIB)?,
        bound_only: false,
        known_miss: Some(NVLS_RAMP),
        seen: None,
    });
    v.push(Check {
        what: "h100×2 all-reduce busbw, 16 GPUs over 2 nodes, 64 GiB (NVLS + IB)".into(),
        source: "cost-model.md §2.6: nccl-tests #309 (NVLS/NVLSTree default; the model was fitted to the 48 GB/s NIC rate, not this)",
        unit: "GB/s",
        published: 470.0,
        predicted: busbw("h100-sxm-8x2-ndr", "all_reduce", 16, 64 * GIB)?,
        bound_only: false,
        known_miss: None,
        seen: None,
    });
    Ok(v)
}

/// NCCL's algorithm choice by size, published, against the model's.
pub fn algorithm_choices() -> Result<Vec<(String, &'static str, String)>, CostError> {
    let mut v = Vec::new();
    for (size, label, published) in [
        (8u64, "8 B", "ring/ll"),
        (MIB, "1 MiB", "ring/ll"),
        (2 * MIB, "2 MiB", "nvls/simple"),
        (16 * GIB, "16 GiB", "nvls/simple"),
    ] {
        let c = collective_cost("h100-sxm-8", "all_reduce", 8, size.max(4))?;
        let got = match &c.kernel {
            weft_plan::KernelConfig::Collective(cc) => format!("{}/{}", cc.algorithm, cc.protocol),
            other => format!("{other:?}"),
        };
        v.push((format!("h100 all-reduce, 8 GPUs, {label}"), published, got));
    }
    Ok(v)
}

fn table(out: &mut String, rows: &[Check]) {
    let _ = writeln!(
        out,
        "| Figure | Unit | Published | Model | Error | Source |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for r in rows {
        let miss = if r.known_miss.is_some() {
            " **(miss, see below)**"
        } else {
            ""
        };
        let seen = if r.seen.is_some() {
            " **(seen: not independent, see below)**"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "| {}{seen} | {} | {:.1} | {:.1} | {:.1}%{miss} | {} |",
            r.what,
            r.unit,
            r.published,
            r.predicted,
            r.error() * 100.0,
            r.source
        );
    }
    let mut notes: Vec<&str> = rows.iter().filter_map(|r| r.known_miss).collect();
    notes.dedup();
    for n in notes {
        let _ = writeln!(out, "\nMiss: {n}.");
    }
    let mut seen: Vec<&str> = rows.iter().filter_map(|r| r.seen).collect();
    seen.dedup();
    for n in seen {
        let _ = writeln!(out, "\nSeen: {n}.");
    }
}

/// The generated part of docs/cost-model.md.
pub fn render() -> Result<String, CostError> {
    let mut s = String::new();
    let _ = writeln!(s, "### Calibrated on\n");
    table(&mut s, &calibrated()?);
    let held = held_aside()?;
    let independent: Vec<&Check> = held.iter().filter(|r| r.seen.is_none()).collect();
    let within = independent
        .iter()
        .filter(|r| r.error() <= HELD_ASIDE_TOLERANCE)
        .count();
    let _ = writeln!(
        s,
        "\n### Held aside\n\n{within} of {} independent held-aside figures are within {:.0}% \
         ({} more rows, marked, were seen while the model was built).\n",
        independent.len(),
        HELD_ASIDE_TOLERANCE * 100.0,
        held.len() - independent.len()
    );
    table(&mut s, &held);
    let _ = writeln!(
        s,
        "\n### Algorithm choice (held aside: nccl-tests #309, \"8B~1MB: RING/LL; 2MB~16GB: NVLS/SIMPLE\")\n"
    );
    let _ = writeln!(s, "| Case | Published | Model |\n|---|---|---|");
    for (what, published, got) in algorithm_choices()? {
        let _ = writeln!(s, "| {what} | {published} | {got} |");
    }
    Ok(s)
}
