//! GEMM time: a size-dependent efficiency curve, wave quantization over the SMs, a
//! roofline against HBM, and the launch overhead.
//!
//! ```text
//! tiles  = batch · ⌈m/128⌉ · ⌈n/128⌉                    (128×128 output tiles, one CTA each)
//! split  = largest power of two with tiles·split ≤ SMs and k/split ≥ 256   (split-K, 1 if none)
//! waves  = ⌈tiles·split / SMs⌉,   util = tiles·split / (waves · SMs)
//! rate   = min(r(F) · util, cap)                        F = 2·batch·m·n·k FLOPs
//! bytes  = A + B + C  (+ 2 · split · m·n·batch · 4 for the f32 split-K partials when split > 1)
//! time   = launch + max(F / rate, bytes / HBM(bytes))
//! ```
//!
//! `r(F)` is the rate per fully occupied wave, interpolated log–log in F between the
//! calibration points of the profile's `gemm_table` (the XLA `sm_90` measured table,
//! cost-model.md §2.1). Each point is turned into `r` by removing what the model adds on
//! top: `r_i = F_i / ((t_i − launch) · util_i)`, so the model reproduces every calibration
//! point exactly (they are all compute-bound, checked by a test). `cap` is the measured
//! maximum (MAMF, `achievable_dense_16bit`). Profiles without a table use Calculon's model
//! curve (cost-model.md §2.1: 0.95 from 128 GFLOP, 0.90 from 16, 0.60 from 1, 0.10 for tiny
//! work, anchored at 1 FLOP) normalised to its top and multiplied by `cap`.
//!
//! The tile shape (128×128) and the split-K rule (keep ≥ 256 of K per split, never
//! exceed one wave) are the model's assumptions, not measurements: cuBLAS picks among many
//! tilings. Split-K is what lets a GEMM with few output tiles (M=256, N=2048) use the
//! whole GPU; its partial sums cost HBM traffic, which the roofline charges.
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
/// The least contraction length one split-K slice keeps.
pub(crate) const MIN_SPLIT_K: u64 = 256;

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
    /// Output tiles.
    pub tiles: u64,
    /// Split-K factor (1: none).
    pub split: u64,
    /// Waves of CTAs.
    pub waves: u64,
    /// Share of the SM slots the waves fill.
    pub util: f64,
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
    /// Rate per full wave by FLOPs, FLOP/s (absolute for a table, relative × cap otherwise).
    curve: LogLog,
    cap16: f64,
    cap8: Option<f64>,
    f32: Option<f64>,
}

fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

/// Tiles, split-K and waves of `g` on `sms` SMs; `None` if the tile count overflows.
pub(crate) fn tile_grid(g: GemmShape, sms: u64) -> Option<TileGrid> {
    let tiles =
        u128::from(g.batch) * u128::from(div_ceil(g.m, TILE)) * u128::from(div_ceil(g.n, TILE));
    let tiles = u64::try_from(tiles).ok()?.max(1);
    let mut split = 1u64;
    while tiles.checked_mul(split * 2)? <= sms && g.k / (split * 2) >= MIN_SPLIT_K {
        split *= 2;
    }
    let ctas = tiles.checked_mul(split)?;
    let waves = div_ceil(ctas, sms);
    let util = to_f64(ctas) / (to_f64(waves) * to_f64(sms));
    Some(TileGrid {
        tiles,
        split,
        waves,
        util,
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
        let curve = match &d.gemm_table {
            Some(table) => {
                let mut pts = Vec::with_capacity(table.value.len());
                for p in &table.value {
                    let g = GemmShape {
                        batch: p.batch,
                        m: p.m,
                        n: p.n,
                        k: p.k,
                    };
                    let f = g.flops();
                    let t = f / p.throughput.0 - launch;
                    let grid = tile_grid(g, sms)
                        .ok_or_else(|| CostError::missing(profile, "device.gemm_table"))?;
                    if t.is_nan() || t <= 0.0 {
                        return Err(CostError::Profile {
                            profile: profile.name.clone(),
                            field: "device.gemm_table".into(),
                            reason: format!(
                                "GEMM {}·{}·{}·{} takes less than the launch overhead",
                                p.batch, p.m, p.n, p.k
                            ),
                        });
                    }
                    pts.push((f, f / (t * grid.util)));
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

    /// The 16-bit rate the model predicts for `g` alone (FLOP/s), without launch or memory.
    fn rate16(&self, g: GemmShape, grid: TileGrid) -> f64 {
        (self.curve.at(g.flops()) * grid.util).min(self.cap16)
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
        let r16 = self.rate16(g, grid);
        let rate = match dtype {
            DType::Bf16 | DType::F16 => r16,
            DType::F8e4m3 => {
                let cap8 = self.cap8.ok_or_else(|| CostError::Unsupported {
                    op: what.to_string(),
                    reason: format!(
                        "an FP8 GEMM needs `device.achievable_dense_fp8`, which profile `{}` does not give",
                        profile.name
                    ),
                })?;
                r16 * cap8 / self.cap16
            }
            DType::F32 => {
                let f32 = self.f32.ok_or_else(|| CostError::Unsupported {
                    op: what.to_string(),
                    reason: format!(
                        "an f32 GEMM needs `device.peak_dense_f32`, which profile `{}` does not give",
                        profile.name
                    ),
                })?;
                r16 / self.cap16 * f32
            }
            DType::I64 | DType::I32 | DType::Bool => {
                return Err(CostError::Unsupported {
                    op: what.to_string(),
                    reason: format!("no GEMM rate for {dtype:?} elements"),
                });
            }
        };
        Ok((g.flops() / rate, grid))
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
        let mut bytes = b * (m * k + k * n + m * n) * e + extra_bytes;
        if grid.split > 1 {
            bytes += 2.0 * to_f64(grid.split) * b * m * n * 4.0;
        }
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
        // The inversion r_i = F/((t-launch)·util) assumes the compute term wins.
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
        // 132 tiles fill the H100's 132 SMs; 133 need a second, nearly empty wave.
        let full = tile_grid(shape(1, 128 * 12, 128 * 11, 4096), 132).unwrap();
        assert_eq!((full.tiles, full.waves, full.split), (132, 1, 1));
        assert!((full.util - 1.0).abs() < 1e-12);
        let past = tile_grid(shape(1, 128 * 133, 128, 4096), 132).unwrap();
        assert_eq!((past.tiles, past.waves), (133, 2));
        assert!(past.util < 0.51);
    }

    #[test]
    fn split_k_fills_the_gpu_when_output_tiles_are_few() {
        let g = tile_grid(shape(1, 256, 2048, 4096), 132).unwrap();
        assert_eq!((g.tiles, g.split, g.waves), (32, 4, 1));
        // Too short a K to split.
        let g = tile_grid(shape(1, 256, 2048, 256), 132).unwrap();
        assert_eq!(g.split, 1);
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
