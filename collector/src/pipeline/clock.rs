//! Event time while no data arrives.
//!
//! Detection runs on the data's own timestamps. When the stream goes quiet, event time must
//! still move on, or a quiet system's last interval never closes. It moves on at the wall
//! clock's pace *from the last event seen*, not straight to the wall clock: a pause in a
//! stream of old data — a backfill, an agent draining its disk buffer, the demo's
//! fast-forward, a busy machine between two batches — then moves event time by the length
//! of the pause. Jumping to "now" instead would make every later point of that stream late
//! and silently drop it from detection.

/// What the detection thread knows about event time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventClock {
    /// The newest event time seen, and the wall time it was first seen at.
    newest: Option<(i64, i64)>,
}

impl EventClock {
    pub(crate) fn new() -> Self {
        EventClock { newest: None }
    }

    /// Notes the newest event time known after a batch, at wall time `wall_ms`.
    pub(crate) fn saw(&mut self, event_ms: i64, wall_ms: i64) {
        if event_ms == i64::MIN {
            return;
        }
        match self.newest {
            Some((newest, _)) if newest >= event_ms => {}
            _ => self.newest = Some((event_ms, wall_ms)),
        }
    }

    /// Event time to advance to after a quiet spell, at wall time `wall_ms`; `None` before
    /// any event (nothing to close, and a first batch of old data must not arrive late).
    pub(crate) fn idle(&self, wall_ms: i64) -> Option<i64> {
        let (newest, seen_at) = self.newest?;
        let quiet_for = wall_ms.saturating_sub(seen_at).max(0);
        Some(newest.saturating_add(quiet_for).min(wall_ms.max(newest)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn a_pause_in_old_data_moves_event_time_by_the_pause_only() {
        let now = 1_800_000_000_000;
        let mut clock = EventClock::new();
        // A backfill two hours behind the wall clock, then a 1.5 s pause.
        clock.saw(now - 2 * HOUR, now);
        assert_eq!(clock.idle(now + 1_500), Some(now - 2 * HOUR + 1_500));
    }

    #[test]
    fn a_quiet_live_system_follows_the_wall_clock() {
        let now = 1_800_000_000_000;
        let mut clock = EventClock::new();
        clock.saw(now - 200, now);
        assert_eq!(clock.idle(now + 90_000), Some(now + 90_000 - 200));
        // Never beyond the wall clock.
        assert!(clock.idle(now + 90_000).is_some_and(|t| t <= now + 90_000));
    }

    #[test]
    fn nothing_seen_means_nothing_to_advance() {
        assert_eq!(EventClock::new().idle(1_800_000_000_000), None);
    }

    #[test]
    fn older_events_do_not_reset_the_pace() {
        let now = 1_800_000_000_000;
        let mut clock = EventClock::new();
        clock.saw(now - HOUR, now);
        clock.saw(now - 2 * HOUR, now + 5_000);
        assert_eq!(clock.idle(now + 10_000), Some(now - HOUR + 10_000));
    }

    #[test]
    fn events_from_a_fast_clock_are_not_pulled_back() {
        // An agent whose clock runs ahead: event time stays where the data put it.
        let now = 1_800_000_000_000;
        let mut clock = EventClock::new();
        clock.saw(now + 60_000, now);
        assert_eq!(clock.idle(now + 1_000), Some(now + 60_000));
    }
}
