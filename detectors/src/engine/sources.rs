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
