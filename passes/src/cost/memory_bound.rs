//! Memory-bound kernels: element-wise ops, norms, softmax, layout changes, MoE routing.
//!
//! Time = bytes moved / (achievable HBM bandwidth × the size-dependent share), where bytes
//! are the kernel's reads plus writes. The share comes from the profile's
//! `memory_efficiency` curve (Calculon's model curve, cost-model.md §2.2: 0.3 tiny, 0.6
//! from 1 MB, 0.75 from 10 MB, 0.9 from 100 MB), normalised by its largest point, which is
//! what `memory_achievable_bandwidth` stands for (≈ Calculon's 3072 GB/s × 0.9). Without a
//! curve the achievable bandwidth is used at every size. Small transfers reach a smaller
//! share because a kernel's fixed costs (ramp-up, tail) do not shrink with the data.

use weft_hardware::Profile;

use super::CostError;
use super::interp::LogLog;

/// HBM bandwidth as a function of transfer size.
#[derive(Clone, Debug)]
pub(crate) struct MemoryModel {
    achievable: f64,
    /// Share of `achievable` by bytes (already normalised to 1 at its top), if the profile
    /// gives a curve.
    share: Option<LogLog>,
}

impl MemoryModel {
    pub(crate) fn new(profile: &Profile) -> Result<MemoryModel, CostError> {
        let d = &profile.device;
        let achievable = d
            .memory_achievable_bandwidth
            .as_ref()
            .map(|s| s.value.0)
            .ok_or_else(|| CostError::missing(profile, "device.memory_achievable_bandwidth"))?;
        let share = match &d.memory_efficiency {
            None => None,
            Some(curve) => {
                let pts = curve
                    .value
                    .iter()
                    .map(|p| (to_f64(p.bytes.0), p.efficiency.0))
                    .collect();
                let c = LogLog::new(pts)
                    .ok_or_else(|| CostError::missing(profile, "device.memory_efficiency"))?;
                let top = c.max();
                let normalised = c
                    .points()
                    .iter()
                    .map(|&(x, y)| (x, y / top))
                    .collect::<Vec<_>>();
                LogLog::new(normalised)
            }
        };
        Ok(MemoryModel { achievable, share })
    }

    /// Achievable bandwidth for a transfer of `bytes`, bytes per second.
    pub(crate) fn bandwidth(&self, bytes: f64) -> f64 {
        self.achievable * self.share.as_ref().map_or(1.0, |s| s.at(bytes))
    }

    /// Seconds to move `bytes` (reads plus writes) through HBM, launch excluded.
    pub(crate) fn seconds(&self, bytes: f64) -> f64 {
        if bytes <= 0.0 {
            return 0.0;
        }
        bytes / self.bandwidth(bytes)
    }

    /// The achievable bandwidth at large sizes, bytes per second.
    pub(crate) fn achievable(&self) -> f64 {
        self.achievable
    }
}

/// A byte or FLOP count as `f64` (cost arithmetic is in `f64`; counts past 2^53 lose
/// only low bits, far below the model's accuracy).
#[allow(clippy::cast_precision_loss)]
pub(crate) fn to_f64(x: u64) -> f64 {
    x as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h100() -> MemoryModel {
        MemoryModel::new(&Profile::builtin("h100-sxm-8").unwrap()).unwrap()
    }

    #[test]
    fn large_transfers_reach_the_achievable_bandwidth() {
        let m = h100();
        // 100 MB and above: Calculon's 0.9 point, i.e. the profile's 2.8 TB/s.
        assert!((m.bandwidth(1e9) - 2.8e12).abs() < 1.0);
        // 10 MB: 0.75 / 0.9 of it.
        assert!((m.bandwidth(1e7) - 2.8e12 * 0.75 / 0.9).abs() < 1.0);
        // 1 MB: 0.6 / 0.9.
        assert!((m.bandwidth(1e6) - 2.8e12 * 0.6 / 0.9).abs() < 1.0);
    }

    #[test]
    fn time_grows_with_size() {
        let m = h100();
        let mut last = 0.0;
        for e in 0..40 {
            let t = m.seconds(2f64.powi(e));
            assert!(t > last, "2^{e} bytes");
            last = t;
        }
    }
}
