//! The sampling step of a series, estimated from the spacing of its recent points.
//!
//! The step decides how many points a gap is missing (filled with expected values so the
//! seasonal phase stays aligned), how long a season is in points, and whether a series needs
//! the daily view. It must not be taken from one odd spacing: a scrape retried two seconds
//! after the last one, or an SDK's forced flush at shutdown, would otherwise make a
//! one-minute series look like a two-second one, and every later one-minute gap would fill
//! the ring with 29 invented points. So the step is the median of the last [`SPACINGS`]
//! spacings: one or a few odd ones never move it, and a real change of the scrape interval
//! takes over after half of them.

use serde::{Deserialize, Serialize};

/// Spacings remembered (odd, so the median is one of them).
const SPACINGS: usize = 9;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct StepEstimate {
    /// The last spacings in milliseconds, a ring (no allocation: this is per series).
    recent: [i64; SPACINGS],
    /// Spacings recorded so far, up to [`SPACINGS`].
    len: u8,
    /// Slot the next spacing goes to.
    next: u8,
    /// The median of `recent` (0 before any spacing), kept because every point needs it.
    #[serde(default)]
    step_ms: i64,
    /// Running mean of the spacing per counted point (a spacing across a gap counts once
    /// per point it spans), in milliseconds; 0 until the first spacing.
    #[serde(default)]
    mean_ms: f64,
}

/// Weight of one spacing in the running mean.
const MEAN_WEIGHT: f64 = 1.0 / 64.0;
/// How far (as a factor) the mean may be from the median before it starts over from it:
/// wide enough that jitter does not reset it.
const MEAN_TRUST: f64 = 1.5;

impl StepEstimate {
    /// Records the spacing `dt_ms` (> 0) between two accepted points and returns the step.
    fn observe(&mut self, dt_ms: i64) -> i64 {
        let slot = usize::from(self.next) % SPACINGS;
        self.recent[slot] = dt_ms;
        self.next = ((slot + 1) % SPACINGS) as u8;
        self.len = self.len.saturating_add(1).min(SPACINGS as u8);
        // Until the ring is full its filled slots are the first `len`; of an even count the
        // lower middle one, so that two spacings of which one is a gap give the true step.
        let len = usize::from(self.len);
        let mut sorted = self.recent;
        let sorted = &mut sorted[..len];
        sorted.sort_unstable();
        self.step_ms = sorted[(len - 1) / 2];
        self.step_ms
    }

    /// A point at `ts_ms` follows one at `last_ms`: returns the number of points missing
    /// between them.
    pub(crate) fn advance(&mut self, last_ms: i64, ts_ms: i64) -> u64 {
        let dt = ts_ms.saturating_sub(last_ms);
        let step = self.observe(dt);
        let missing = missing_points(dt, step);
        // The mean only converts periods to points; it never decides what is a gap, so it
        // cannot talk itself into a multiple of the true step.
        // Far from the median it starts over from it: the first spacing was an odd one, or
        // the scrape interval changed.
        let per_point = dt as f64 / (missing as f64 + 1.0);
        let ratio = self.mean_ms / step as f64;
        self.mean_ms = if (1.0 / MEAN_TRUST..=MEAN_TRUST).contains(&ratio) {
            self.mean_ms + MEAN_WEIGHT * (per_point - self.mean_ms)
        } else {
            step as f64
        };
        missing
    }

    /// The mean spacing per point, for converting periods in seconds to points: the median
    /// is exact for regular scrapes but, under jitter, a few per cent off from one refit to
    /// the next — and a day of 288 five-minute points read as 298 is a season applied
    /// hours out of phase by evening.
    pub(crate) fn mean_ms(&self) -> Option<f64> {
        (self.mean_ms > 0.0).then_some(self.mean_ms)
    }

    /// The current estimate: the median recent spacing; `None` before the first.
    pub(crate) fn step(&self) -> Option<i64> {
        (self.step_ms > 0).then_some(self.step_ms)
    }
}

/// Points missing in a spacing of `dt_ms` at `step_ms`: the spacing rounded to whole
/// steps, less the one that arrived (scrape jitter of under half a step is not a gap).
fn missing_points(dt_ms: i64, step_ms: i64) -> u64 {
    if step_ms <= 0 {
        return 0;
    }
    let steps = dt_ms.saturating_add(step_ms / 2) / step_ms;
    u64::try_from(steps.saturating_sub(1)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds points `dt_ms` apart; returns the step after each.
    fn feed(est: &mut StepEstimate, clock: &mut i64, dts: &[i64]) -> Vec<i64> {
        dts.iter()
            .map(|&dt| {
                est.advance(*clock, *clock + dt);
                *clock += dt;
                est.step().expect("a step after a spacing")
            })
            .collect()
    }

    #[test]
    fn one_odd_spacing_moves_neither_the_step_nor_the_mean() {
        let (mut est, mut clock) = (StepEstimate::default(), 0);
        feed(&mut est, &mut clock, &[60_000; 20]);
        // A retried scrape two seconds later, then the regular rhythm again.
        let steps = feed(&mut est, &mut clock, &[2_000, 58_000, 60_000, 60_000]);
        assert_eq!(steps, vec![60_000; 4]);
        let mean = est.mean_ms().expect("estimated");
        assert!((mean - 60_000.0).abs() < 1_000.0, "mean {mean}");
    }

    #[test]
    fn a_new_scrape_interval_takes_over_after_half_the_window() {
        let (mut est, mut clock) = (StepEstimate::default(), 0);
        feed(&mut est, &mut clock, &[60_000; 20]);
        let steps = feed(&mut est, &mut clock, &[10_000; SPACINGS]);
        assert_eq!(steps[SPACINGS / 2 - 1], 60_000, "{steps:?}");
        assert_eq!(steps[SPACINGS / 2], 10_000, "{steps:?}");
        assert_eq!(est.mean_ms(), Some(10_000.0), "the mean starts over");
    }

    #[test]
    fn an_odd_first_spacing_does_not_linger_in_the_mean() {
        // The first spacing is the odd one: the mean must not start from it and creep back
        // over hundreds of points (the first refit would convert the day with it).
        let (mut est, mut clock) = (StepEstimate::default(), 0);
        feed(&mut est, &mut clock, &[60_000]);
        feed(&mut est, &mut clock, &[300_000; 5]);
        assert_eq!(est.mean_ms(), Some(300_000.0));
    }

    #[test]
    fn the_first_spacings_give_a_step_even_with_a_gap_among_them() {
        let (mut est, mut clock) = (StepEstimate::default(), 0);
        assert_eq!(est.step(), None);
        assert_eq!(feed(&mut est, &mut clock, &[300_000, 900_000]), vec![300_000, 300_000]);
    }

    #[test]
    fn jitter_is_not_a_gap_and_whole_missing_steps_are() {
        assert_eq!(missing_points(10_400, 10_000), 0);
        assert_eq!(missing_points(14_000, 10_000), 0);
        assert_eq!(missing_points(15_000, 10_000), 1);
        assert_eq!(missing_points(30_000, 10_000), 2);
        assert_eq!(missing_points(2_000, 60_000), 0);
        assert!(missing_points(i64::MAX, 1) > 1_000_000);
        assert_eq!(missing_points(5_000, 0), 0);
    }

    #[test]
    fn the_mean_step_is_precise_under_jitter_and_lost_points() {
        // Five-minute points, each up to ±10 % off its slot, one in ten lost: single medians
        // wander by several seconds, the mean per point must not.
        let mut x: u64 = 7;
        let mut uniform = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut est = StepEstimate::default();
        let mut last = 0;
        for k in 1..5_000i64 {
            let jitter = ((uniform() * 2.0 - 1.0) * 30_000.0) as i64;
            if uniform() < 0.1 {
                continue;
            }
            let t = k * 300_000 + jitter;
            est.advance(last, t);
            last = t;
        }
        let mean = est.mean_ms().expect("estimated");
        assert!((mean - 300_000.0).abs() < 3_000.0, "mean step {mean}");
    }
}
