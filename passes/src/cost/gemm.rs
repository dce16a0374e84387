//! GEMM time: the work the SMs do (output tiles, padded to full waves once there is more
//! than one), priced on a size-dependent rate curve, a roofline against HBM, and the
//! launch overhead.
//!
//! ```text
//! tiles  = batch · ⌈m/128⌉ · ⌈n/128⌉              (128×128 output tiles, one CTA each)
//! w      = 2 · 128 · 128 · k                      (FLOPs one CTA does, edge tiles padded)
//! waves  = ⌈tiles / SMs⌉
//! X      = tiles · w            if waves = 1      (one wave: idle SMs cost nothing extra)
//!          waves · SMs · w      otherwise         (the last wave takes as long as a full one)
//! compute = max(X / r(X), F / cap)                F = 2·batch·m·n·k
//! bytes  = A + B + C
//! time   = launch + max(compute, bytes / HBM(bytes))
//! ```
//!
//! `r(X)` is the rate at which the GPU does `X` FLOPs of (padded) work, interpolated
//! log–log between the calibration points of the profile's `gemm_table` (the XLA `sm_90`
//! measured table, cost-model.md §2.1): each point `i` gives `r_i = X_i / (t_i − launch)`
//! at `X_i`, so the model reproduces it exactly (they are all compute-bound and under the
//! cap, checked by tests). `cap` is the measured maximum (MAMF, `achievable_dense_16bit`).
//! Profiles without a table use Calculon's model curve (cost-model.md §2.1: 0.95 from 128
//! GFLOP, 0.90 from 16, 0.60 from 1, 0.10 for tiny work, anchored at 1 FLOP) normalised to
//! its top and multiplied by `cap`, read at `X` (Calculon reads it at the op's FLOPs).
//!
//! Why `X` and not `F`: the model used to look the rate up at the GEMM's own FLOPs and
//! divide by the share of SM slots its waves fill, so adding tiles to a wave raised the
//! rate while the wave took as long, and a larger GEMM came out faster. `X` never drops
//! when batch, m, n or k grows (more tiles or a longer k only add work), and `X / r(X)`
//! never drops as `X` grows because every segment of the curve rises less steeply than
//! `X` (checked when the model is built), so neither does the time.
//!
//! The tile shape (128×128) is the model's assumption, not a measurement: cuBLAS picks
//! among many tilings and split-K schemes, which the model does not (a GEMM with few output
//! tiles and a long k is priced as its one partial wave).
//!
//! Data types: BF16/FP16 use the curve as is; FP8 scales it by
//! `achievable_dense_fp8 / achievable_dense_16bit` (the same shape, an estimate); F32 runs
//! on the CUDA cores at `peak_dense_f32` times the curve's relative efficiency (an
//! estimate: no measured F32 GEMM curve in the reference); integer GEMMs are refused.

use weft_hardware::Profile;
use weft_ir::DType;

use super::CostError;
use super::interp::LogLog;
use super::memory_bound::{MemoryModel, to_f64};

/// Output tile edge the model assumes (rows and columns of C per CTA).
pub(crate) const TILE: u64 = 128;

/// Calculon's H100 matrix-efficiency model curve (`systems/h100_80g_nvl8.json`,
/// cost-model.md §2.1), as (FLOPs, efficiency); the tiny-work point is anchored at 1 FLOP.
const CALCULON_MATRIX: [(f64, f64); 4] = [(1.0, 0.10), (1e9, 0.60), (16e9, 0.90), (128e9, 0.95)];

/// One GEMM problem (a batched GEMM when `batch > 1`; a grouped GEMM is costed as the
/// batch of its groups).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GemmShape {
    pub batch: u64,
    pub m: u64,
    pub n: u64,
    pub k: u64,
}

impl GemmShape {
    /// 2·batch·m·n·k, in `f64` (exact to 53 bits, finite for any `u64` dims).
    pub(crate) fn flops(&self) -> f64 {
        2.0 * to_f64(self.batch) * to_f64(self.m) * to_f64(self.n) * to_f64(self.k)
    }
}

/// How the model lays a GEMM onto the SMs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct TileGrid {
    /// Output tiles (one CTA each).
    pub tiles: u64,
    /// Waves of CTAs.
    pub waves: u64,
    /// FLOPs the SMs are busy for: `X` in the module docs.
    pub work: f64,
}

/// The cost of one GEMM.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct GemmTime {
    /// Launch + max(compute, memory), seconds.
    pub seconds: f64,
    pub grid: TileGrid,
}

/// GEMM rates of one GPU.
#[derive(Clone, Debug)]
pub(crate) struct GemmModel {
    sms: u64,
    launch: f64,
    /// Rate by padded work, FLOP/s (absolute for a table, relative × cap otherwise).
    curve: LogLog,
    cap16: f64,
    cap8: Option<f64>,
    f32: Option<f64>,
}

/// Tiles, waves and padded work of `g` on `sms` SMs; `None` if the tile count overflows
/// 64 bits.
pub(crate) fn tile_grid(g: GemmShape, sms: u64) -> Option<TileGrid> {
    let tiles =
        u128::from(g.batch) * u128::from(g.m.div_ceil(TILE)) * u128::from(g.n.div_ceil(TILE));
    let tiles = u64::try_from(tiles).ok()?.max(1);
    let waves = tiles.div_ceil(sms);
    let slots = if waves == 1 {
        to_f64(tiles)
    } else {
        to_f64(waves) * to_f64(sms)
    };
    Some(TileGrid {
        tiles,
        waves,
        work: slots * 2.0 * to_f64(TILE) * to_f64(TILE) * to_f64(g.k),
    })
}

impl GemmModel {
    pub(crate) fn new(profile: &Profile) -> Result<GemmModel, CostError> {
        let d = &profile.device;
        let sms = d
            .sm_count
            .as_ref()
            .map(|s| s.value.0)
            .ok_or_else(|| CostError::missing(profile, "device.sm_count"))?;
        let cap16 = d
            .achievable_dense_16bit
            .as_ref()
            .map(|s| s.value.0)
            .ok_or_else(|| CostError::missing(profile, "device.achievable_dense_16bit"))?;
        let launch = profile.kernel_launch_overhead.value.0;
        let bad = |reason: String| CostError::Profile {
            profile: profile.name.clone(),
            field: "device.gemm_table".into(),
            reason,
        };
        let curve = match &d.gemm_table {
            Some(table) => {
                let mut pts: Vec<(f64, f64)> = Vec::with_capacity(table.value.len());
                for p in &table.value {
                    let name = format!("{}·{}·{}·{}", p.batch, p.m, p.n, p.k);
                    let g = GemmShape {
                        batch: p.batch,
                        m: p.m,
                        n: p.n,
                        k: p.k,
                    };
                    let t = g.flops() / p.throughput.0 - launch;
                    if t.is_nan() || t <= 0.0 {
                        return Err(bad(format!(
                            "GEMM {name} takes less than the launch overhead"
                        )));
                    }
                    let grid = tile_grid(g, sms)
                        .ok_or_else(|| bad(format!("GEMM {name} has too many tiles")))?;
                    let x = grid.work;
                    if pts.last().is_some_and(|&(px, _)| px >= x) {
                        return Err(bad(format!(
                            "GEMM {name}: points must grow in their padded work (tiles × waves)"
                        )));
                    }
                    pts.push((x, x / t));
                }
                LogLog::new(pts)
            }
            None => {
                let top = CALCULON_MATRIX[3].1;
                LogLog::new(
                    CALCULON_MATRIX
                        .iter()
                        .map(|&(f, e)| (f, e / top * cap16))
                        .collect(),
                )
            }
        }
        .ok_or_else(|| CostError::missing(profile, "device.gemm_table"))?;
        // f(x) = x / r(x) is a power of x on each segment; it rises iff the seconds at the
        // points rise, which is what makes the GEMM time monotone in its dimensions.
        let secs: Vec<f64> = curve.points().iter().map(|&(x, r)| x / r).collect();
        if secs.windows(2).any(|w| w[1] <= w[0]) {
            return Err(bad(
                "more work would take less time: the rate rises faster than the work between two points".into(),
            ));
        }
        Ok(GemmModel {
            sms,
            launch,
            curve,
            cap16,
            cap8: d.achievable_dense_fp8.as_ref().map(|s| s.value.0),
            f32: d.peak_dense_f32.as_ref().map(|s| s.value.0),
        })
    }

    /// The SM count the grid is laid over.
    pub(crate) fn sms(&self) -> u64 {
        self.sms
    }

    /// Seconds of tensor-core (or CUDA-core, for f32) work for `g` with elements of
    /// `dtype`, neither launch nor memory included, and the grid it was laid on. `what`
    /// names the op in errors.
    pub(crate) fn compute_seconds(
        &self,
        g: GemmShape,
        dtype: DType,
        profile: &Profile,
        what: &str,
    ) -> Result<(f64, TileGrid), CostError> {
        let grid = tile_grid(g, self.sms).ok_or_else(|| CostError::TooLarge {
            op: what.to_string(),
            what: format!("the tile count of GEMM {}·{}·{}·{}", g.batch, g.m, g.n, g.k),
        })?;
        let s16 = (grid.work / self.curve.at(grid.work)).max(g.flops() / self.cap16);
        let seconds = match dtype {
            DType::Bf16 | DType::F16 => s16,
            DType::F8e4m3 => {
                let cap8 = self.cap8.ok_or_else(|| CostError::Unsupported {
                    op: what.to_string(),
                    reason: format!(
                        "an FP8 GEMM needs `device.achievable_dense_fp8`, which profile `{}` does not give",
                        profile.name
                    ),
                })?;
                s16 * self.cap16 / cap8
            }
            DType::F32 => {
                let f32 = self.f32.ok_or_else(|| CostError::Unsupported {
                    op: what.to_string(),
                    reason: format!(
                        "an f32 GEMM needs `device.peak_dense_f32`, which profile `{}` does not give",
                        profile.name
                    ),
                })?;
                s16 * self.cap16 / f32
            }
            DType::I64 | DType::I32 | DType::Bool => {
                return Err(CostError::Unsupported {
                    op: what.to_string(),
                    reason: format!("no GEMM rate for {dtype:?} elements"),
                });
            }
        };
        Ok((seconds, grid))
    }

    /// The time of `g` with elements of `dtype`: launch + max(compute, memory);
    /// `extra_bytes` are further HBM traffic the kernel does (a fused epilogue's operands).
    pub(crate) fn time(
        &self,
        g: GemmShape,
        dtype: DType,
        extra_bytes: f64,
        mem: &MemoryModel,
        profile: &Profile,
        what: &str,
    ) -> Result<GemmTime, CostError> {
        let (compute, grid) = self.compute_seconds(g, dtype, profile, what)?;
        let e = to_f64(dtype.size_bytes());
        let (b, m, n, k) = (to_f64(g.batch), to_f64(g.m), to_f64(g.n), to_f64(g.k));
        let bytes = b * (m * k + k * n + m * n) * e + extra_bytes;
        let memory = mem.seconds(bytes);
        Ok(GemmTime {
            seconds: self.launch + compute.max(memory),
            grid,
        })
    }

    /// The compute-kernel launch overhead, seconds.
    pub(crate) fn launch(&self) -> f64 {
        self.launch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str) -> (GemmModel, MemoryModel, Profile) {
        let p = Profile::builtin(name).unwrap();
        (
            GemmModel::new(&p).unwrap(),
            MemoryModel::new(&p).unwrap(),
            p,
        )
    }

    fn tflops(name: &str, g: GemmShape) -> f64 {
        let (gm, mm, p) = model(name);
        let t = gm.time(g, DType::Bf16, 0.0, &mm, &p, "test").unwrap();
        g.flops() / t.seconds / 1e12
    }

    fn shape(batch: u64, m: u64, n: u64, k: u64) -> GemmShape {
        GemmShape { batch, m, n, k }
    }

    #[test]
    fn calibration_points_are_reproduced_exactly() {
        // The profile's table points (XLA sm_90, cost-model.md §2.1).
        for (g, measured) in [
            (shape(1, 512, 256, 256), 11.5),
            (shape(1, 1024, 2048, 256), 139.5),
            (shape(1, 1024, 2048, 2048), 524.3),
            (shape(1, 4096, 4096, 4096), 783.3),
        ] {
            let got = tflops("h100-sxm-8", g);
            assert!(
                (got - measured).abs() / measured < 1e-9,
                "{g:?}: {got} vs {measured}"
            );
        }
    }

    #[test]
    fn calibration_points_are_compute_bound() {
        // Solving each point's rate from its time assumes the compute term wins.
        let (gm, mm, _) = model("h100-sxm-8");
        for p in Profile::builtin("h100-sxm-8")
            .unwrap()
            .device
            .gemm_table
            .unwrap()
            .value
        {
            let g = shape(p.batch, p.m, p.n, p.k);
            let bytes = to_f64(p.batch * (p.m * p.k + p.k * p.n + p.m * p.n) * 2);
            let compute = g.flops() / p.throughput.0 - gm.launch;
            assert!(mm.seconds(bytes) < compute, "{g:?}");
        }
    }

    #[test]
    fn the_mamf_cap_bounds_every_rate() {
        for e in 8..16 {
            let s = 1u64 << e;
            assert!(tflops("h100-sxm-8", shape(1, s, s, s)) <= 794.5 + 1e-9);
        }
    }

    #[test]
    fn wave_quantization_penalises_one_tile_past_a_full_wave() {
        // 132 tiles fill the H100's 132 SMs; 133 need a second wave of one CTA.
        let full = tile_grid(shape(1, 128 * 12, 128 * 11, 4096), 132).unwrap();
        assert_eq!((full.tiles, full.waves), (132, 1));
        let past = tile_grid(shape(1, 128 * 133, 128, 4096), 132).unwrap();
        assert_eq!((past.tiles, past.waves), (133, 2));
        assert_eq!(past.work, 2.0 * full.work);
        let (gm, mm, p) = model("h100-sxm-8");
        let t = |g| gm.time(g, DType::Bf16, 0.0, &mm, &p, "x").unwrap().seconds;
        assert!(t(shape(1, 128 * 133, 128, 4096)) > t(shape(1, 128 * 132, 128, 4096)));
    }

    #[test]
    fn a_table_where_more_work_takes_less_time_is_refused() {
        // 1·1024·2048·2048 at 1430 TFLOP/s would take 5 µs of compute, less than the
        // 6.7 µs of the smaller 1·1024·2048·256: the time could then drop as k grows.
        let mut p = Profile::builtin("h100-sxm-8").unwrap();
        let table = &mut p.device.gemm_table.as_mut().unwrap().value;
        let pt = table
            .iter_mut()
            .find(|q| (q.m, q.n, q.k) == (1024, 2048, 2048))
            .unwrap();
        pt.throughput.0 = 2.0 * 1024.0 * 2048.0 * 2048.0 / 6e-6;
        let e = GemmModel::new(&p).unwrap_err().to_string();
        assert!(e.contains("device.gemm_table"), "{e}");
        assert!(e.contains("more work would take less time"), "{e}");
    }

    #[test]
    fn edge_tiles_are_padded() {
        // 129 rows take two row tiles, each doing a full tile's work.
        let g = tile_grid(shape(1, 129, 128, 512), 132).unwrap();
        assert_eq!((g.tiles, g.waves), (2, 1));
        assert_eq!(g.work, 2.0 * 2.0 * 128.0 * 128.0 * 512.0);
    }

    #[test]
    fn dtypes_scale_or_refuse() {
        let (gm, mm, p) = model("h100-sxm-8");
        let g = shape(1, 4096, 4096, 4096);
        let t16 = gm.time(g, DType::Bf16, 0.0, &mm, &p, "x").unwrap().seconds;
        let t8 = gm
            .time(g, DType::F8e4m3, 0.0, &mm, &p, "x")
            .unwrap()
            .seconds;
        let t32 = gm.time(g, DType::F32, 0.0, &mm, &p, "x").unwrap().seconds;
        assert!(t8 < t16 && t16 < t32);
        assert!(gm.time(g, DType::I64, 0.0, &mm, &p, "x").is_err());
        // The A100 profile gives no F32 rate: refused, naming the field.
        let (ga, ma, pa) = model("a100-sxm-8");
        let e = ga.time(g, DType::F32, 0.0, &ma, &pa, "mm").unwrap_err();
        assert!(e.to_string().contains("peak_dense_f32"), "{e}");
    }

    #[test]
    fn time_grows_with_every_dimension() {
        let (gm, mm, p) = model("h100-sxm-8");
        let t = |g| gm.time(g, DType::Bf16, 0.0, &mm, &p, "x").unwrap().seconds;
        for base in [
            shape(1, 64, 64, 64),
            shape(2, 512, 1024, 256),
            shape(1, 4096, 8192, 8192),
        ] {
            // Never faster for more work (a GEMM too small to fill the SMs may take the
            // same time at 4× the tiles), and strictly slower across the range.
            let first = t(base);
            let mut last = first;
            for step in 1..8 {
                let f = 1u64 << step;
                let g = shape(base.batch, base.m * f, base.n * f, base.k);
                let now = t(g);
                assert!(now >= last, "{g:?}: {now} < {last}");
                last = now;
            }
            assert!(last > first, "{base:?}");
        }
    }

    #[test]
    fn profiles_without_a_table_use_calculons_curve() {
        let big = tflops("a100-sxm-8", shape(1, 8192, 8192, 8192));
        // ≥128 GFLOP: Calculon's top point, i.e. the A100's MAMF 271.2 (times wave use).
        assert!(big <= 271.2 && big > 0.9 * 271.2, "{big}");
    }
}
