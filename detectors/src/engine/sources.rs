//! Event time across sources whose clocks disagree.
//!
//! Intervals close when event time passes their end plus the allowed lateness. If event time
//! were simply the newest timestamp seen, one host whose clock runs five minutes fast would
//! close every interval five minutes early, and everything the correctly set hosts send
//! would arrive "late" and be dropped from detection — for as long as that host keeps
//! sending. So event time is the newest timestamp that at least two sources (services, or
//! hosts for metrics without a service) have reached: a single runaway clock cannot move it,
//! and a source that stops sending does not hold it back, because the others overtake it.
//! With a single source its own clock is the only one there is — so a runaway clock that is
//! the very first source a fresh collector hears from does move event time until a second
//! source speaks (the sources are part of the saved detector state, so a restart does not
//! reopen that window).
//!
//! With exactly two sources, one that stops would hold event time back for ever (nobody
//! overtakes it): so when the caller gives wall time (a live collector, not a replay), a
//! source among the two newest that has not been heard for the allowed lateness of wall time
//! leaves the agreement, and the newest times among the sources still heard count instead.
//! It rejoins when it speaks again.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Sources remembered; beyond it the one that has been silent longest is forgotten.
const MAX_SOURCES: usize = 10_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SourceClock {
    /// Newest event time per source.
    latest: HashMap<String, i64>,
    /// The two newest sources and their times, newest first.
    top: Vec<(String, i64)>,
    /// Wall time each source was last heard at, when the caller gives it. Not saved: after
    /// a restart every source counts as just heard.
    #[serde(skip)]
    heard: HashMap<String, i64>,
}

impl SourceClock {
    /// The newest event time of `source`, if it has been heard from.
    pub(crate) fn latest_of(&self, source: &str) -> Option<i64> {
        self.latest.get(source).copied()
    }

    /// Notes an event of `source` at `ts_ms`.
    pub(crate) fn saw(&mut self, source: &str, ts_ms: i64) {
        match self.latest.get_mut(source) {
            Some(t) if *t >= ts_ms => return,
            Some(t) => *t = ts_ms,
            None => {
                if self.latest.len() >= MAX_SOURCES {
                    self.forget_oldest();
                }
                self.latest.insert(source.to_string(), ts_ms);
            }
        }
        if let Some(entry) = self.top.iter_mut().find(|(s, _)| s == source) {
            entry.1 = ts_ms;
        } else if self.top.len() < 2 || self.top.last().is_some_and(|(_, t)| ts_ms > *t) {
            self.top.push((source.to_string(), ts_ms));
        } else {
            return;
        }
        self.top.sort_by_key(|t| std::cmp::Reverse(t.1));
        self.top.truncate(2);
    }

    /// Notes that `source` was heard at wall time `wall_ms`.
    pub(crate) fn heard(&mut self, source: &str, wall_ms: i64) {
        match self.heard.get_mut(source) {
            Some(w) => *w = wall_ms,
            None => {
                self.heard.insert(source.to_string(), wall_ms);
            }
        }
    }

    /// Leaves the sources among the two newest that have not been heard for `idle_after` of
    /// wall time out of the agreement: the newest among those still heard count instead.
    /// Returns whether the agreement changed. Nothing is idle while nothing else is heard
    /// (a quiet system is the lanes' business, see `engine/lanes.rs`).
    pub(crate) fn retire_idle(&mut self, wall_ms: i64, idle_after: i64) -> bool {
        let idle = |s: &str| {
            self.heard
                .get(s)
                .is_some_and(|w| w.saturating_add(idle_after) <= wall_ms)
        };
        if self.top.len() < 2 || !self.top.iter().any(|(s, _)| idle(s)) {
            return false;
        }
        let mut active: Vec<(String, i64)> = self
            .latest
            .iter()
            .filter(|(s, _)| !idle(s))
            .map(|(s, t)| (s.clone(), *t))
            .collect();
        if active.is_empty() {
            return false;
        }
        active.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
        active.truncate(2);
        self.top = active;
        true
    }

    /// Event time: the second newest source's time (the newest's, with one source);
    /// `i64::MIN` before any event.
    pub(crate) fn event_time(&self) -> i64 {
        match self.top.as_slice() {
            [] => i64::MIN,
            [(_, only)] => *only,
            [_, (_, second), ..] => *second,
        }
    }

    fn forget_oldest(&mut self) {
        let oldest = self.latest.iter().min_by_key(|(_, t)| **t).map(|(s, _)| s.clone());
        if let Some(s) = oldest {
            self.latest.remove(&s);
            self.heard.remove(&s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn a_runaway_clock_does_not_move_event_time() {
        let mut clock = SourceClock::default();
        for m in 0..10 {
            clock.saw("checkout", m * MIN);
            clock.saw("payment", m * MIN + 500);
            clock.saw("skewed", m * MIN + 10 * MIN);
        }
        assert_eq!(clock.event_time(), 9 * MIN + 500);
    }

    #[test]
    fn a_source_that_stops_does_not_hold_event_time_back() {
        let mut clock = SourceClock::default();
        clock.saw("gone", 2 * MIN);
        for m in 0..10 {
            clock.saw("checkout", m * MIN);
            clock.saw("payment", m * MIN + 500);
        }
        assert_eq!(clock.event_time(), 9 * MIN);
    }

    /// Two services, one of them stops (it crashed): with wall time given, once it has been
    /// silent for the idle time the other's clock is event time; when it comes back it
    /// rejoins. (Before, event time stayed at the stopped one's last event for good.)
    #[test]
    fn with_two_sources_one_that_stops_leaves_the_agreement_after_the_idle_time() {
        let idle_after = 2 * MIN;
        let wall0 = 1_800_000_000_000;
        let mut clock = SourceClock::default();
        for m in 0..5 {
            for s in ["checkout", "payment"] {
                clock.saw(s, m * MIN);
                clock.heard(s, wall0 + m * 1_000);
            }
        }
        // Checkout stops; payment goes on for ten more minutes of data within 30 s of wall time.
        for m in 5..15 {
            clock.saw("payment", m * MIN);
            clock.heard("payment", wall0 + m * 1_000);
        }
        assert_eq!(clock.event_time(), 4 * MIN, "held back by the silent one");
        assert!(!clock.retire_idle(wall0 + 30_000, idle_after), "not idle yet");
        assert_eq!(clock.event_time(), 4 * MIN);
        clock.heard("payment", wall0 + 200_000);
        assert!(clock.retire_idle(wall0 + 200_000, idle_after));
        assert_eq!(clock.event_time(), 14 * MIN, "payment alone is the clock");
        // Checkout comes back: two sources agree again.
        clock.saw("checkout", 15 * MIN);
        clock.heard("checkout", wall0 + 201_000);
        clock.saw("payment", 16 * MIN);
        assert_eq!(clock.event_time(), 15 * MIN);
        // Without wall time (a replay) nothing is ever retired.
        let mut replay = SourceClock::default();
        replay.saw("a", MIN);
        replay.saw("b", 5 * MIN);
        assert!(!replay.retire_idle(wall0, idle_after));
        assert_eq!(replay.event_time(), MIN);
    }

    #[test]
    fn one_source_is_its_own_clock_and_older_events_change_nothing() {
        let mut clock = SourceClock::default();
        assert_eq!(clock.event_time(), i64::MIN);
        clock.saw("only", 5 * MIN);
        clock.saw("only", 3 * MIN);
        assert_eq!(clock.event_time(), 5 * MIN);
    }

    #[test]
    fn sources_are_bounded() {
        let mut clock = SourceClock::default();
        for i in 0..MAX_SOURCES as i64 + 10 {
            clock.saw(&format!("host-{i}"), i);
        }
        assert_eq!(clock.latest.len(), MAX_SOURCES);
        assert!(!clock.latest.contains_key("host-0"), "the longest silent is forgotten");
        assert_eq!(clock.event_time(), MAX_SOURCES as i64 + 8);
    }
}
