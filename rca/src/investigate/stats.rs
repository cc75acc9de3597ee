//! Robust statistics for comparing a window with its baseline.

use std::collections::{BTreeMap, BTreeSet};

/// A signal's count in each of `minutes`, zero where it had none (a minute with data
/// elsewhere but none of this signal is a zero, not a gap).
pub(crate) fn per_minute(counts: Option<&BTreeMap<i64, u64>>, minutes: &BTreeSet<i64>) -> Vec<f64> {
    minutes
        .iter()
        .map(|m| counts.and_then(|c| c.get(m)).copied().unwrap_or(0) as f64)
        .collect()
}

/// The median of `values` (NaN for none). Sorts a copy.
pub(crate) fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// The median absolute deviation around `center`, scaled to a normal σ (× 1.4826).
pub(crate) fn mad_sigma(values: &[f64], center: f64) -> f64 {
    let deviations: Vec<f64> = values.iter().map(|v| (v - center).abs()).collect();
    median(&deviations) * 1.4826
}

/// The `q`-quantile (0..=1) by linear interpolation (NaN for none).
pub(crate) fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// How far `x` lies above the typical baseline value, in robust σ: the baseline's median
/// and MAD, the scale never below `floor` (a baseline that never moved would otherwise
/// turn any wobble into an infinite shift).
pub(crate) fn robust_rise(x: f64, baseline: &[f64], floor: f64) -> f64 {
    let m = median(baseline);
    (x - m) / mad_sigma(baseline, m).max(floor).max(f64::MIN_POSITIVE)
}

/// How far `window` lies above `baseline` by rank, as a normal z-score (Mann–Whitney U,
/// ties sharing their mean rank, the spread corrected for them): unlike a shift of medians
/// it grows with the evidence, so five slow requests can never weigh like five hundred — at
/// most √(3·n₁·n₂/(n₁+n₂+1)), which is below 3 for three requests, whatever the baseline.
/// 0 when either side is empty or every value is the same.
pub(crate) fn rank_rise(window: &[f64], baseline: &[f64]) -> f64 {
    let (n1, n2) = (window.len() as f64, baseline.len() as f64);
    if window.is_empty() || baseline.is_empty() {
        return 0.0;
    }
    let mut all: Vec<(f64, bool)> = window
        .iter()
        .map(|&v| (v, true))
        .chain(baseline.iter().map(|&v| (v, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    // Σ (t³ − t) over groups of t tied values: ties shrink the statistic's spread.
    let mut ties = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += all[i..=j].iter().filter(|x| x.1).count() as f64 * mean_rank;
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        i = j + 1;
    }
    let n = n1 + n2;
    let u = rank_sum - n1 * (n1 + 1.0) / 2.0;
    let variance = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if variance <= 0.0 {
        return 0.0; // every value the same: no evidence either way
    }
    (u - n1 * n2 / 2.0) / variance.sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_quantiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.25), 2.0);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.9), 4.6);
    }

    #[test]
    fn a_rank_rise_grows_with_the_number_of_requests() {
        let baseline: Vec<f64> = (0..500).map(|i| 1.0 + f64::from(i % 10) * 0.1).collect();
        // All slower than every baseline request: the z-score a sample of n can reach
        // is about √(3n), however far the values moved.
        let five = rank_rise(&[100.0; 5], &baseline);
        let fifty = rank_rise(&[100.0; 50], &baseline);
        assert!((3.5..4.0).contains(&five), "{five}");
        assert!((11.5..12.5).contains(&fifty), "{fifty}");
        assert_eq!(rank_rise(&[100.0; 5], &baseline), rank_rise(&[1e9; 5], &baseline));
        // The same values as the baseline's: no rise; faster ones: a fall.
        assert!(rank_rise(&baseline[..50], &baseline).abs() < 1.0);
        assert!(rank_rise(&[0.5; 20], &baseline) < -5.0);
        // Ties share their rank: identical values on both sides are no evidence.
        assert_eq!(rank_rise(&[2.0; 10], &[2.0; 100]), 0.0);
        // Three requests can never reach 3 σ, however large a baseline of distinct values.
        let large: Vec<f64> = (0..100_000).map(|i| f64::from(i) * 1e-5).collect();
        assert!(rank_rise(&[100.0; 3], &large) < 3.0);
        // Ties in the baseline narrow the spread: the same rise reads stronger.
        let tied: Vec<f64> = (0..500).map(|i| f64::from(i % 2)).collect();
        assert!(rank_rise(&[100.0; 5], &tied) > five, "{five}");
        assert_eq!(rank_rise(&[], &baseline), 0.0);
        assert_eq!(rank_rise(&[1.0], &[]), 0.0);
    }

    #[test]
    fn a_rise_is_measured_in_robust_sigma_with_a_floor() {
        let baseline = [10.0, 11.0, 9.0, 10.0, 10.0];
        // MAD = 0 here (three of five at the median) → the floor is the scale.
        assert!((robust_rise(20.0, &baseline, 1.0) - 10.0).abs() < 1e-9);
        let spread = [5.0, 15.0, 10.0, 0.0, 20.0];
        assert!(
            robust_rise(20.0, &spread, 1.0) < 2.0,
            "a wide baseline makes 20 ordinary"
        );
        assert!(robust_rise(5.0, &baseline, 1.0) < 0.0);
    }
}
