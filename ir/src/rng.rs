//! The counter-based random generator behind `normal` and `uniform` initialisers.
//!
//! Element `i` of a tensor with seed `s` depends only on `(s, i)`, never on the other
//! elements: any rank can generate its own shard of a weight, and a sharded run sees
//! exactly the numbers a single-device run sees. The algorithm is part of the model
//! format (`docs/json-format.md`), so it must never change.

/// SplitMix64's finaliser: a bijective scramble of 64 bits.
pub const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// 64 random bits for draw number `counter` of stream `seed`.
pub const fn bits(seed: u64, counter: u64) -> u64 {
    mix(mix(seed ^ GOLDEN).wrapping_add(counter.wrapping_mul(GOLDEN)))
}

/// A uniform draw in `[0, 1)` with 53 random bits.
pub fn unit(seed: u64, counter: u64) -> f64 {
    (bits(seed, counter) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Element `index` of a `uniform(low, high)` tensor.
pub fn uniform(seed: u64, index: u64, low: f64, high: f64) -> f64 {
    low + (high - low) * unit(seed, index)
}

/// Element `index` of a `normal(mean, std)` tensor (Box–Muller on draws `2i` and `2i+1`).
pub fn normal(seed: u64, index: u64, mean: f64, std: f64) -> f64 {
    let u1 = 1.0 - unit(seed, index.wrapping_mul(2)); // in (0, 1], so ln is finite
    let u2 = unit(seed, index.wrapping_mul(2).wrapping_add(1));
    mean + std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_depend_only_on_seed_and_index() {
        assert_eq!(normal(7, 1234, 0.0, 1.0), normal(7, 1234, 0.0, 1.0));
        assert_ne!(normal(7, 1234, 0.0, 1.0), normal(8, 1234, 0.0, 1.0));
        assert_ne!(normal(7, 1234, 0.0, 1.0), normal(7, 1235, 0.0, 1.0));
    }

    #[test]
    fn moments_are_right() {
        let n = 200_000u64;
        let xs: Vec<f64> = (0..n).map(|i| normal(3, i, 1.5, 2.0)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!((mean - 1.5).abs() < 0.02, "mean {mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.02, "std {}", var.sqrt());
        let us: Vec<f64> = (0..n).map(|i| uniform(3, i, -1.0, 3.0)).collect();
        assert!(us.iter().all(|u| (-1.0..3.0).contains(u)));
        let umean = us.iter().sum::<f64>() / n as f64;
        assert!((umean - 1.0).abs() < 0.02, "uniform mean {umean}");
    }

    #[test]
    fn known_values_never_change() {
        // The generator is part of the model format: these numbers are frozen.
        assert_eq!(bits(0, 0), 5197578548964807871);
        assert_eq!(normal(42, 5, 0.0, 1.0).to_bits(), 13830577712495624222);
    }
}
