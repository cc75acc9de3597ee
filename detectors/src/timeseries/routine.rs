//! Remembers when a series made its excursions, so that the nightly backup spike is routine
//! from its second night on instead of an incident every night.
//!
//! A seasonal model cannot learn a one-point spike: MSTL smooths it away, and a day of
//! five-minute points barely fits the history ring. What an SRE checks instead is "did it
//! do this yesterday at the same time?". An excursion is a run of consecutive points on
//! one side of the expected band; each is kept as (start, end, direction, peak distance
//! from the expected value in the signal's units). The current excursion is *routine* when
//! - an excursion in the same direction, at least [`SIMILAR`] of its size, started a whole
//!   number of periods earlier (up to `lookback` periods) within `tolerance` — jobs
//!   scheduled "at 03:00" drift by the run time of what ran before them;
//! - it has not yet lasted much longer than that one did, so a level shift that happens to
//!   start where yesterday's spike did is still a finding once it outlasts the spike;
//! - and the phase is what sets it apart: on a series that makes alike excursions all day,
//!   one a day earlier is chance, so at least [`IN_PHASE_SHARE`] of the alike excursions
//!   in the lookback must be in phase.
//!
//! Sizes are in the signal's units, not sigmas: the residual scale adapts, the size of a
//! backup spike does not. Memory: at most [`CAPACITY`] excursions (24 bytes each); on a
//! series noisier than that the oldest are forgotten and nothing counts as routine, which
//! fails towards reporting.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// A past excursion counts as alike when its peak reaches this share of the current one:
/// a spike three times yesterday's is news.
const SIMILAR: f64 = 0.5;
const IN_PHASE_SHARE: f64 = 0.5;
const CAPACITY: usize = 32;

/// One excursion, finished or in progress.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Excursion {
    start_ms: i64,
    last_ms: i64,
    up: bool,
    peak: f32,
}

/// When excursions recur: every `period_ms`, give or take `tolerance_ms`, looking back
/// `lookback` periods.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Recurrence {
    pub(crate) period_ms: i64,
    pub(crate) tolerance_ms: i64,
    pub(crate) lookback: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Routine {
    past: VecDeque<Excursion>,
    /// Whether the newest excursion is still running (the previous point was outside).
    running: bool,
}

impl Routine {
    /// Feeds a point: its timestamp, its residual, whether it lies outside the band, and
    /// the series' step. Returns whether the excursion it belongs to is routine (false for
    /// points inside the band).
    pub(crate) fn observe(&mut self, r: &Recurrence, ts_ms: i64, resid: f64, outside: bool, step_ms: i64) -> bool {
        if !outside || r.period_ms <= 0 {
            self.running = false;
            return false;
        }
        let up = resid > 0.0;
        let size = resid.abs() as f32;
        match self.past.back_mut() {
            Some(e) if self.running && e.up == up => {
                e.peak = e.peak.max(size);
                e.last_ms = ts_ms;
            }
            _ => {
                if self.past.len() == CAPACITY {
                    self.past.pop_front();
                }
                self.past.push_back(Excursion {
                    start_ms: ts_ms,
                    last_ms: ts_ms,
                    up,
                    peak: size,
                });
                self.running = true;
            }
        }
        let Some(&now) = self.past.back() else { return false };
        let horizon = r.period_ms.saturating_mul(r.lookback).saturating_add(r.tolerance_ms);
        let (mut alike, mut in_phase) = (0usize, 0usize);
        for e in self.past.iter().rev().skip(1) {
            let age = now.start_ms - e.start_ms;
            if age > horizon {
                break;
            }
            if e.up != now.up || f64::from(e.peak) < SIMILAR * f64::from(size) {
                continue;
            }
            alike += 1;
            let periods = age.saturating_add(r.period_ms / 2) / r.period_ms;
            let off = age.saturating_sub(periods.saturating_mul(r.period_ms)).saturating_abs();
            let lasted = now.last_ms - now.start_ms;
            let allowed = (e.last_ms - e.start_ms).saturating_add(step_ms).saturating_mul(2);
            if periods >= 1 && off <= r.tolerance_ms && lasted <= allowed {
                in_phase += 1;
            }
        }
        in_phase > 0 && in_phase as f64 >= IN_PHASE_SHARE * alike as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const DAY: i64 = 24 * 60 * MIN;
    const DAILY: Recurrence = Recurrence {
        period_ms: DAY,
        tolerance_ms: 60 * MIN,
        lookback: 2,
    };

    /// Feeds one excursion of `points` five-minute points of size `size` starting at
    /// `start`, then one quiet point; returns whether each excursion point was routine.
    fn excursion(r: &mut Routine, start: i64, points: i64, size: f64) -> Vec<bool> {
        let verdicts = (0..points)
            .map(|k| r.observe(&DAILY, start + k * 5 * MIN, size, true, 5 * MIN))
            .collect();
        r.observe(&DAILY, start + points * 5 * MIN, 0.0, false, 5 * MIN);
        verdicts
    }

    #[test]
    fn the_same_spike_at_the_same_time_tomorrow_is_routine() {
        let mut r = Routine::default();
        assert_eq!(
            excursion(&mut r, 3 * 60 * MIN, 1, 1.4),
            [false],
            "the first night is news"
        );
        // 40 minutes later than yesterday, a little smaller: the same job.
        assert_eq!(excursion(&mut r, DAY + 3 * 60 * MIN + 40 * MIN, 1, 1.2), [true]);
        // Skipped a night: two days back still counts.
        assert_eq!(excursion(&mut r, 3 * DAY + 3 * 60 * MIN, 1, 1.5), [true]);
    }

    #[test]
    fn a_bigger_spike_another_hour_or_the_other_way_is_news() {
        let mut r = Routine::default();
        excursion(&mut r, 3 * 60 * MIN, 1, 1.4);
        assert_eq!(
            excursion(&mut r, DAY + 3 * 60 * MIN, 1, 4.0),
            [false],
            "three times yesterday's"
        );
        assert_eq!(excursion(&mut r, DAY + 9 * 60 * MIN, 1, 1.4), [false], "six hours off");
        assert_eq!(
            excursion(&mut r, 2 * DAY + 3 * 60 * MIN, 1, -1.4),
            [false],
            "a dip, not a spike"
        );
    }

    #[test]
    fn a_shift_that_starts_like_yesterdays_spike_stops_being_routine_once_it_outlasts_it() {
        let mut r = Routine::default();
        excursion(&mut r, 3 * 60 * MIN, 2, 1.4);
        let verdicts = excursion(&mut r, DAY + 3 * 60 * MIN, 12, 1.4);
        assert!(verdicts[0] && verdicts[1], "{verdicts:?}");
        assert!(
            !verdicts[11],
            "an hour-long excursion is not yesterday's ten-minute spike: {verdicts:?}"
        );
    }

    #[test]
    fn on_a_series_that_spikes_all_day_yesterdays_spike_is_chance() {
        let mut r = Routine::default();
        // Alike spikes every 90 minutes for two days.
        let mut t = 0;
        while t < 2 * DAY {
            excursion(&mut r, t, 1, 1.0);
            t += 90 * MIN;
        }
        assert_eq!(excursion(&mut r, 2 * DAY + 5 * MIN, 1, 1.0), [false]);
    }

    #[test]
    fn absurd_periods_do_not_overflow() {
        let mut r = Routine::default();
        let huge = Recurrence {
            period_ms: i64::MAX,
            tolerance_ms: i64::MAX,
            lookback: i64::MAX,
        };
        // Tests run with overflow checks: getting through is the assertion.
        for k in 0..3 {
            r.observe(&huge, k * DAY, 1.0, true, i64::MAX);
            r.observe(&huge, k * DAY + 1, 0.0, false, i64::MAX);
        }
        assert_eq!(r.past.len(), 3);
    }

    #[test]
    fn memory_is_bounded() {
        let mut r = Routine::default();
        for k in 0..1000 {
            excursion(&mut r, k * 10 * MIN, 1, 1.0);
        }
        assert!(r.past.len() <= CAPACITY);
    }
}
