//! Summaries of a list of latencies: min, percentiles, max, mean.

/// The summary of one command's measured latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Summary {
    /// How many latencies were summarised.
    pub(crate) count: usize,
    pub(crate) min: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
    pub(crate) mean: f64,
}

impl Summary {
    /// Summarises `values` (any order); `None` when there are none.
    ///
    /// Percentiles interpolate linearly between the two closest ranks (the
    /// usual "type 7" definition), so `p50` of an even count is the mean of
    /// the two middle values.
    pub(crate) fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        Some(Summary {
            count: n,
            min: sorted[0],
            p50: percentile(&sorted, 0.50),
            p99: percentile(&sorted, 0.99),
            max: sorted[n - 1],
            mean: sorted.iter().sum::<f64>() / n as f64,
        })
    }
}

/// The `q` quantile (0..=1) of a sorted, non-empty slice.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = q * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_has_no_summary() {
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn one_value_is_every_statistic() {
        let s = Summary::of(&[4.0]).unwrap();
        assert_eq!(
            (s.min, s.p50, s.p99, s.max, s.mean),
            (4.0, 4.0, 4.0, 4.0, 4.0)
        );
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.min, s.p50, s.max, s.mean), (1.0, 2.5, 4.0, 2.5));
        assert!((s.p99 - 3.97).abs() < 1e-9, "{}", s.p99);
        let hundred: Vec<f64> = (1..=101).map(f64::from).collect();
        let s = Summary::of(&hundred).unwrap();
        assert_eq!((s.p50, s.p99), (51.0, 100.0));
    }
}
