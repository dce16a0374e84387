//! Piecewise log–log interpolation over measured points: the one curve shape the cost
//! model uses for every size-dependent efficiency (GEMM rate vs FLOPs, HBM share vs bytes).
//!
//! Log–log (a power law between neighbouring points) rather than linear: the sources'
//! points are spaced by decades, and between two of them throughput grows like a power of
//! the size. Outside the points the curve is flat (the nearest point's value), so nothing
//! is extrapolated past what was measured.

/// A curve through `(x, y)` points with strictly increasing positive `x` and positive `y`.
#[derive(Clone, Debug)]
pub(crate) struct LogLog {
    points: Vec<(f64, f64)>,
}

impl LogLog {
    /// `None` unless the points are non-empty, finite, positive and strictly increasing in
    /// `x` (the profile loader checks the same, so this only fails on a bug).
    pub(crate) fn new(points: Vec<(f64, f64)>) -> Option<LogLog> {
        let ok = !points.is_empty()
            && points
                .iter()
                .all(|&(x, y)| x.is_finite() && y.is_finite() && x > 0.0 && y > 0.0)
            && points.windows(2).all(|w| w[0].0 < w[1].0);
        ok.then_some(LogLog { points })
    }

    /// The curve's value at `x` (flat beyond the first and last points).
    pub(crate) fn at(&self, x: f64) -> f64 {
        let p = &self.points;
        let (first, last) = (p[0], p[p.len() - 1]);
        if x.is_nan() || x <= first.0 {
            return first.1;
        }
        if x >= last.0 {
            return last.1;
        }
        let i = p.partition_point(|&(px, _)| px <= x);
        let (x0, y0) = p[i - 1];
        let (x1, y1) = p[i];
        let t = (x / x0).ln() / (x1 / x0).ln();
        y0 * (y1 / y0).powf(t)
    }

    /// The points, in increasing `x`.
    pub(crate) fn points(&self) -> &[(f64, f64)] {
        &self.points
    }

    /// The largest value on the curve.
    pub(crate) fn max(&self) -> f64 {
        self.points.iter().map(|p| p.1).fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_through_its_points_and_is_flat_outside() {
        let c = LogLog::new(vec![(1.0, 2.0), (100.0, 8.0)]).unwrap();
        assert_eq!(c.at(1.0), 2.0);
        assert_eq!(c.at(100.0), 8.0);
        assert_eq!(c.at(0.5), 2.0);
        assert_eq!(c.at(1e9), 8.0);
        // Halfway in log x is the geometric mean in y.
        assert!((c.at(10.0) - 4.0).abs() < 1e-12);
    }

    #[test]
    fn refuses_unordered_or_non_positive_points() {
        assert!(LogLog::new(vec![]).is_none());
        assert!(LogLog::new(vec![(2.0, 1.0), (1.0, 1.0)]).is_none());
        assert!(LogLog::new(vec![(0.0, 1.0)]).is_none());
        assert!(LogLog::new(vec![(1.0, f64::NAN)]).is_none());
    }
}
