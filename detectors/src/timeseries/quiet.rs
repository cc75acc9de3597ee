//! Quiet spells of an intermittent series: one that mostly sits at its floor and now and
//! then bursts (disk writes of a batch host, network-in of an instance that syncs, a queue
//! drained by a cron job). Such a series has no flat-line — it repeats its floor all the
//! time — and its silence is invisible to a residual: the expected value *is* the floor.
//! What an SRE notices is that the bursts stopped: "no writes for longer than ever before".
//!
//! So the series keeps the lengths of its finished quiet spells (runs of points at the
//! floor, counted in points received: a gap in delivery is not known to be quiet, and an
//! outage must not set a record that no real silence could beat), and a
//! spell that outlasts the longest one before it by [`RECORD_MARGIN`] — and is long against
//! the typical spell, [`TYPICAL_MULTIPLE`] times the mean — is a finding, once per spell.
//! It is the time-domain twin of a breakout: a record, with a margin so that a series of
//! random quiet spells does not report every small new record. Records come often while few
//! spells are known, so nothing is judged before [`MIN_SPELLS`] of them and a day of event
//! time ([`MIN_WATCHED_MS`]: traffic, and so bursts, thin out at night); and a series that
//! sits at its floor for less than [`MIN_FLOOR_SHARE`] of its points is not intermittent
//! (a CPU series that touched its minimum once has no quiet spells worth the name).
//!
//! Memory: eight numbers and a flag per series.

use serde::{Deserialize, Serialize};

/// A point lies at the floor when it is within this share of the all-time range above the
/// all-time minimum.
const FLOOR_BAND: f64 = 0.01;
/// Share of all points at the floor that makes a series intermittent.
const MIN_FLOOR_SHARE: f64 = 0.3;
/// Finished spells needed before a spell is judged.
const MIN_SPELLS: u32 = 30;
/// And event time the series must have been watched: a bursty log line or endpoint is
/// quieter at night, so its first night would otherwise set a record.
const MIN_WATCHED_MS: i64 = 86_400_000;
/// How much longer than the longest finished spell a spell must last.
const RECORD_MARGIN: f64 = 1.2;
/// And against the mean finished spell: a job that runs like clockwork is late, not gone,
/// until it has missed two runs.
const TYPICAL_MULTIPLE: f64 = 3.0;

/// What the series has shown of its quiet spells.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct QuietSpells {
    first_ms: Option<i64>,
    points: u64,
    at_floor: u64,
    /// Start of the current spell and its points so far, if the last point was at the floor.
    since_ms: Option<i64>,
    current: u64,
    spells: u32,
    total: u64,
    longest: u64,
    /// The current spell has already been reported.
    reported: bool,
}

impl QuietSpells {
    /// Feeds a point with the all-time minimum and maximum seen *before* it. Returns when
    /// the spell began, when this point makes it a record for the first time.
    pub(crate) fn observe(&mut self, timestamp_ms: i64, value: f64, seen_min: f64, seen_max: f64) -> Option<i64> {
        self.points += 1;
        let first_ms = *self.first_ms.get_or_insert(timestamp_ms);
        let range = seen_max - seen_min;
        let quiet = range > 0.0 && value <= seen_min + FLOOR_BAND * range;
        if !quiet {
            if self.since_ms.take().is_some() {
                self.spells = self.spells.saturating_add(1);
                self.total = self.total.saturating_add(self.current);
                self.longest = self.longest.max(self.current);
            }
            self.current = 0;
            self.reported = false;
            return None;
        }
        self.at_floor += 1;
        self.current += 1;
        let since = *self.since_ms.get_or_insert(timestamp_ms);
        if self.reported || self.spells < MIN_SPELLS || timestamp_ms - first_ms < MIN_WATCHED_MS {
            return None;
        }
        // Judged on the points before this spell: a long enough silence would otherwise make
        // any series look intermittent.
        let before = (self.points - self.current) as f64;
        let intermittent = (self.at_floor - self.current) as f64 >= MIN_FLOOR_SHARE * before;
        let lasted = self.current as f64;
        let mean = self.total as f64 / f64::from(self.spells);
        if intermittent && lasted > RECORD_MARGIN * self.longest as f64 && lasted >= TYPICAL_MULTIPLE * mean {
            self.reported = true;
            return Some(since);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Five-minute points.
    const STEP: i64 = 300_000;

    /// A burst every `gap` points for `spells` spells, points `step` apart; returns the
    /// detector and the next timestamp.
    fn bursty_at(step: i64, spells: u32, gap: i64) -> (QuietSpells, i64) {
        let mut q = QuietSpells::default();
        let mut t = 0;
        for _ in 0..spells {
            assert_eq!(q.observe(t, 100.0, 0.0, 100.0), None);
            t += step;
            for _ in 1..gap {
                assert_eq!(q.observe(t, 0.0, 0.0, 100.0), None);
                t += step;
            }
        }
        (q, t)
    }

    fn bursty(spells: u32, gap: i64) -> (QuietSpells, i64) {
        bursty_at(STEP, spells, gap)
    }

    #[test]
    fn bursts_that_stop_are_found_once_the_silence_outlasts_every_earlier_one() {
        let (mut q, mut t) = bursty(40, 30);
        assert_eq!(q.observe(t, 100.0, 0.0, 100.0), None);
        t += STEP;
        let start = t;
        let mut found = Vec::new();
        for _ in 0..200 {
            if let Some(since) = q.observe(t, 0.0, 0.0, 100.0) {
                found.push((t, since));
            }
            t += STEP;
        }
        assert_eq!(found.len(), 1, "one finding per spell: {found:?}");
        let (at, since) = found[0];
        assert_eq!(since, start);
        assert_eq!(q.longest, 29);
        // Past 1.2 × the longest (35 points) is not enough while it is under three times
        // the mean spell: the 87th quiet point, and not before.
        assert_eq!(at - start, 86 * STEP);
    }

    #[test]
    fn spells_of_the_usual_length_are_not_findings() {
        let (mut q, mut t) = bursty(200, 30);
        assert_eq!(q.observe(t, 100.0, 0.0, 100.0), None);
        t += STEP;
        // 86 points: three times the usual 29 less one.
        for _ in 0..86 {
            assert_eq!(q.observe(t, 0.0, 0.0, 100.0), None);
            t += STEP;
        }
    }

    #[test]
    fn nothing_is_judged_before_enough_spells_are_known() {
        let (mut q, t) = bursty(MIN_SPELLS - 1, 10);
        for k in 0..1_000 {
            assert_eq!(q.observe(t + k * STEP, 0.0, 0.0, 100.0), None);
        }
    }

    #[test]
    fn a_series_that_seldom_touches_its_minimum_has_no_quiet_spells() {
        let mut q = QuietSpells::default();
        let mut t = 0;
        // Forty brief visits to the minimum among mostly higher values.
        for _ in 0..40 {
            q.observe(t, 0.0, 0.0, 100.0);
            t += STEP;
            for _ in 0..9 {
                q.observe(t, 50.0, 0.0, 100.0);
                t += STEP;
            }
        }
        for k in 0..500 {
            assert_eq!(q.observe(t + k * STEP, 0.0, 0.0, 100.0), None, "at {k}");
        }
    }

    #[test]
    fn a_series_without_range_has_no_floor() {
        let mut q = QuietSpells::default();
        for k in 0..1_000 {
            assert_eq!(q.observe(k * STEP, 5.0, 5.0, 5.0), None);
        }
    }

    #[test]
    fn nothing_is_judged_in_the_first_day() {
        // Forty spells of a minute-by-minute series take under seven hours: a silence
        // after them is judged only once the series has been watched for a day.
        const MINUTE: i64 = 60_000;
        let (mut q, mut t) = bursty_at(MINUTE, 40, 10);
        assert_eq!(q.observe(t, 100.0, 0.0, 100.0), None);
        t += MINUTE;
        let mut found = Vec::new();
        while t < 2 * MIN_WATCHED_MS {
            if q.observe(t, 0.0, 0.0, 100.0).is_some() {
                found.push(t);
            }
            t += MINUTE;
        }
        assert_eq!(found, vec![MIN_WATCHED_MS]);
    }
}
