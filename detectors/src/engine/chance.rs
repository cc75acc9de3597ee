//! How likely a count of events is by chance: the test that keeps a handful of errors in a
//! quiet minute from opening a finding.
//!
//! A ratio or a per-minute rate learnt from history has a band, but the band says nothing of
//! how many events a value stands on: 5 failures of 95 requests is 5.3 %, "beyond anything
//! seen before" when the band ends at 3.3 %, and still what chance gives one minute in five
//! when 3 a minute are usual. Counts of independent events are Poisson, so a count opens a
//! finding only when at least that many would come by chance less than [`RARE`] of the time
//! at the band's upper edge. With much traffic the band decides; with little, the count does.

/// Chance below which a count is more than noise: one interval in a thousand.
pub(super) const RARE: f64 = 1e-3;

/// P(X ≥ `k`) for X ~ Poisson(`lambda`).
pub(super) fn at_least(k: u64, lambda: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if !lambda.is_finite() || lambda <= 0.0 {
        return if lambda.is_nan() || lambda > 0.0 { 1.0 } else { 0.0 };
    }
    if (k as f64) <= lambda {
        // At or below the mean the tail holds about half the mass or more: never rare.
        return 1.0;
    }
    // Sum the upper tail from k: its terms fall by λ/(i+1) < 1 each step, so it converges
    // fast and, done in logs, neither e^-λ nor λ^k overflows.
    let log_first = -lambda + k as f64 * lambda.ln() - ln_factorial(k);
    let mut term = 1.0_f64;
    let mut sum = 0.0_f64;
    let mut i = k;
    while term > 1e-12 * sum.max(1e-300) {
        sum += term;
        i += 1;
        term *= lambda / i as f64;
        if i - k > 100_000 {
            break;
        }
    }
    (log_first + sum.ln()).exp().min(1.0)
}

/// Whether `k` events are rarer than [`RARE`] where `lambda` are expected.
pub(super) fn is_rare(k: u64, lambda: f64) -> bool {
    at_least(k, lambda) < RARE
}

/// Intervals a count must have been observed in before a series that has not learned its
/// band yet is judged by chance alone ([`stopped`], [`rose`]).
pub(super) const ROUTINE_INTERVALS: usize = 5;

/// What a count's last [`ROUTINE_INTERVALS`] intervals showed — the band they draw — and how
/// likely the interval judged against them was by chance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct ColdBand {
    pub(super) lowest: f64,
    pub(super) median: f64,
    pub(super) highest: f64,
    pub(super) chance: f64,
}

impl ColdBand {
    /// The band the last [`ROUTINE_INTERVALS`] of `recent` (oldest first) draw, if it holds
    /// that many; its chance is left for the test that judges against it.
    fn of_last(recent: &[f64]) -> Option<ColdBand> {
        let mut sorted = recent.get(recent.len().checked_sub(ROUTINE_INTERVALS)?..)?.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(ColdBand {
            lowest: sorted[0],
            median: sorted[sorted.len() / 2],
            highest: sorted[sorted.len() - 1],
            chance: 1.0,
        })
    }
}

/// Whether a zero now, after `recent` (the series' last observed values, oldest first,
/// `per_value` events per unit of value), says the thing stopped — judged without a learned
/// band: the count came in each of the last [`ROUTINE_INTERVALS`] intervals, at least so
/// often each time that no event at all would be rarer than [`RARE`] (about seven a minute).
/// A line logged for every request stops when the code path does (an exception thrown
/// before it); a series learns its band over dozens of points, and where logs and spans come
/// in short episodes (the recorded Nezha day: one or two scored minutes every eight) that
/// takes hours — a routine line stopping is plain long before.
pub(super) fn stopped(recent: &[f64], per_value: f64) -> Option<ColdBand> {
    let band = ColdBand::of_last(recent)?;
    let lowest = band.lowest * per_value;
    let chance = (-lowest).exp();
    (lowest.is_finite() && chance < RARE).then_some(ColdBand { chance, ..band })
}

/// Whether `events` now (the count an error rate or ratio stands on), after `recent`, is
/// beyond chance — judged without a learned band, against the highest of the last
/// [`ROUTINE_INTERVALS`] intervals as a Poisson rate, and at least one event an interval
/// (none in five intervals does not make one impossible: six or more are news then). The
/// caller asks for enough events first, as for every error finding.
pub(super) fn rose(recent: &[f64], events: u64, per_value: f64) -> Option<ColdBand> {
    let band = ColdBand::of_last(recent)?;
    let highest = band.highest * per_value;
    let chance = at_least(events, highest.max(1.0));
    (highest.is_finite() && chance < RARE).then_some(ColdBand { chance, ..band })
}

/// ln(k!): exact sums for small k, Stirling's series beyond (error below 1e-10 there).
fn ln_factorial(k: u64) -> f64 {
    if k < 64 {
        return (2..=k).map(|i| (i as f64).ln()).sum();
    }
    let n = k as f64;
    n * n.ln() - n + 0.5 * (2.0 * std::f64::consts::PI * n).ln() + 1.0 / (12.0 * n) - 1.0 / (360.0 * n.powi(3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64) -> bool {
        (got - want).abs() <= 1e-6 * want.max(1e-300)
    }

    #[test]
    fn poisson_tails_agree_with_direct_sums() {
        // Reference values: 1 − Σ_{i<k} e^−λ λ^i / i!, summed in Python.
        for (k, lambda, want) in [
            (5, 3.1, 0.201_810_536_085_534),
            (10, 3.1, 0.001_400_923_730_936_254),
            (11, 3.1, 0.000_383_408_282_642_494_5),
            (5, 1.43, 0.015_470_689_610_345_59),
            (400, 330.0, 0.000_103_216_181_619_828_8),
            (1000, 900.0, 0.000_549_902_265_711_945_1),
            (30, 2.0, 5.855_318_609_378_531e-25),
        ] {
            let got = at_least(k, lambda);
            assert!(close(got, want), "P(X ≥ {k} | λ = {lambda}) = {got}, want {want}");
        }
    }

    #[test]
    fn a_count_that_came_often_every_interval_has_stopped_at_a_zero() {
        let steady = [19.0, 17.0, 21.0, 18.0, 20.0];
        let s = stopped(&steady, 1.0).expect("19 a minute, then none");
        assert_eq!((s.lowest, s.median, s.highest), (17.0, 19.0, 21.0));
        assert!(s.chance < 1e-7, "{}", s.chance);
        // Too few intervals, one without the line, or too few lines for a zero to be rare.
        assert_eq!(stopped(&steady[1..], 1.0), None);
        assert_eq!(stopped(&[19.0, 0.0, 21.0, 18.0, 20.0], 1.0), None);
        assert_eq!(stopped(&[5.0, 6.0, 5.0, 6.0, 5.0], 1.0), None);
        // A rate per second counts its events over the interval: 0.2/s is 12 a minute.
        assert!(stopped(&[0.2; 5], 60.0).is_some());
        assert_eq!(stopped(&[0.1; 5], 60.0), None, "6 a minute: a zero is 1 in 400");
    }

    #[test]
    fn errors_beyond_what_the_last_intervals_had_have_risen() {
        let quiet = [0.0, 1.0, 0.0, 2.0, 0.0];
        let r = rose(&quiet, 12, 1.0).expect("12 errors where at most 2 came");
        assert_eq!((r.lowest, r.median, r.highest), (0.0, 0.0, 2.0));
        assert!(r.chance < 1e-5, "{}", r.chance);
        assert_eq!(rose(&quiet, 5, 1.0), None, "5 where 2 came: 1 in 20");
        assert_eq!(rose(&quiet[1..], 12, 1.0), None, "four intervals are too few");
        assert_eq!(rose(&[0.0; 5], 5, 1.0), None, "none before is not none possible");
        assert!(rose(&[0.0; 5], 6, 1.0).is_some());
        // A ratio stands on its requests: 2 % of 100 is 2 errors a time.
        assert_eq!(rose(&[0.02; 5], 4, 100.0), None);
        assert!(rose(&[0.02; 5], 12, 100.0).is_some());
    }

    #[test]
    fn edges_are_certain_or_impossible() {
        assert_eq!(at_least(0, 5.0), 1.0);
        assert_eq!(at_least(3, 0.0), 0.0, "nothing expected: any count is news");
        assert_eq!(at_least(3, 4.0), 1.0);
        assert_eq!(at_least(3, f64::NAN), 1.0, "no band: not evidence");
        assert!(!is_rare(5, 3.1) && is_rare(11, 3.1));
    }
}
