//! The arithmetic of the comparison: speedups from predicted times, a prediction's error
//! against the paper's figure, and whether two rankings of the settings agree.

use super::scenario::PaperFigure;

/// The error target of the strategy standing for the paper's system: ±20 %.
pub const TARGET: f64 = 0.20;

/// `baseline_us / strategy_us`: how much faster the strategy is predicted to be. `None`
/// when either time is not a positive finite number (nothing to divide by).
pub fn speedup(baseline_us: f64, strategy_us: f64) -> Option<f64> {
    let ok = |x: f64| x.is_finite() && x > 0.0;
    (ok(baseline_us) && ok(strategy_us)).then(|| baseline_us / strategy_us)
}

/// Weft's predicted speedup against the paper's figure: `predicted / paper − 1` for a
/// stated speedup; for a stated range, 0 inside it and the relative distance to the
/// nearer end outside. `None` when the paper gives no figure.
pub fn relative_error(paper: &PaperFigure, predicted: f64) -> Option<f64> {
    match *paper {
        PaperFigure::None => None,
        PaperFigure::Range { low, high } => Some(if predicted < low {
            predicted / low - 1.0
        } else if predicted > high {
            predicted / high - 1.0
        } else {
            0.0
        }),
        PaperFigure::Speedup(_) | PaperFigure::Times { .. } => {
            paper.speedup().map(|p| predicted / p - 1.0)
        }
    }
}

/// Whether an error is within [`TARGET`].
pub fn within_target(error: f64) -> bool {
    error.abs() <= TARGET
}

/// How two rankings of the same settings agree, pair by pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderAgreement {
    /// Pairs the paper orders (its ties are left out).
    pub pairs: usize,
    /// Pairs Weft orders the same way (a tie in Weft's figures is a disagreement).
    pub agreeing: usize,
}

impl OrderAgreement {
    pub fn same_order(&self) -> bool {
        self.agreeing == self.pairs
    }
}

/// Compares the paper's figures with Weft's, setting by setting (same index, same
/// setting): every pair the paper orders strictly must be ordered alike by Weft.
pub fn agreement(paper: &[f64], weft: &[f64]) -> OrderAgreement {
    let mut pairs = 0;
    let mut agreeing = 0;
    for i in 0..paper.len().min(weft.len()) {
        for j in i + 1..paper.len().min(weft.len()) {
            let p = paper[i].partial_cmp(&paper[j]);
            if p.is_none() || p == Some(std::cmp::Ordering::Equal) {
                continue;
            }
            pairs += 1;
            if weft[i].partial_cmp(&weft[j]) == p {
                agreeing += 1;
            }
        }
    }
    OrderAgreement { pairs, agreeing }
}

/// Agreement with an order stated without figures: `weft[i]` is the figure of the
/// setting ranked `i`-th (largest first) by the paper.
pub fn agreement_with_order(weft_largest_first: &[f64]) -> OrderAgreement {
    // Rank i is given the figure −i: larger ranks, smaller figures, no ties.
    let paper: Vec<f64> = (0..weft_largest_first.len()).map(|i| -(i as f64)).collect();
    agreement(&paper, weft_largest_first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speedup_is_baseline_over_strategy_and_refuses_non_positive_times() {
        assert_eq!(speedup(300.0, 200.0), Some(1.5));
        assert_eq!(speedup(0.0, 200.0), None);
        assert_eq!(speedup(300.0, 0.0), None);
        assert_eq!(speedup(f64::NAN, 1.0), None);
    }

    #[test]
    fn error_against_a_speedup_times_and_a_range() {
        let e = relative_error(&PaperFigure::Speedup(1.25), 1.5).unwrap();
        assert!((e - 0.2).abs() < 1e-12);
        assert!(within_target(e));
        let times = PaperFigure::Times {
            baseline: 16.946,
            system: 5.903,
        };
        let e = relative_error(&times, 16.946 / 5.903).unwrap();
        assert_eq!(e, 0.0);
        let range = PaperFigure::Range {
            low: 1.28,
            high: 2.37,
        };
        assert_eq!(relative_error(&range, 2.0), Some(0.0));
        assert!((relative_error(&range, 1.024).unwrap() + 0.2).abs() < 1e-12);
        assert!((relative_error(&range, 2.37 * 1.5).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(relative_error(&PaperFigure::None, 2.0), None);
        assert!(!within_target(-0.21));
    }

    #[test]
    fn agreement_counts_pairs_and_skips_the_papers_ties() {
        let a = agreement(&[1.16, 1.23, 1.27, 1.27], &[1.1, 1.2, 1.3, 1.4]);
        // 6 pairs, one paper tie left out; all 5 others agree.
        assert_eq!(
            a,
            OrderAgreement {
                pairs: 5,
                agreeing: 5
            }
        );
        assert!(a.same_order());
        let b = agreement(&[1.0, 2.0, 3.0], &[3.0, 2.0, 2.0]);
        assert_eq!(
            b,
            OrderAgreement {
                pairs: 3,
                agreeing: 0
            }
        );
        let c = agreement_with_order(&[2.0, 1.5, 1.5]);
        assert_eq!(
            c,
            OrderAgreement {
                pairs: 3,
                agreeing: 2
            }
        );
        assert!(!c.same_order());
    }
}
