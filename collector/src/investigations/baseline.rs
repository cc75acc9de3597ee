//! Choosing the baseline when the request names none.
//!
//! The baseline ends a guard interval before the window: the engineer's "start" is rough,
//! and the minutes just before it often already hold the onset, which would make the
//! trouble look normal. It reaches back an hour, and further (3 h, 6 h, a day) while it
//! holds fewer than ten minutes of data, so a system that was quiet (or a recording with
//! gaps) still gets a real comparison. On a busy system it is then shortened to its newest
//! part so that reading it stays within what an investigation can afford.

use vigil_rca::TimeRange;

use super::Reader;
use crate::storage::QueryError;

const MINUTE: i64 = 60_000;
/// Between the baseline's end and the window's start.
const GUARD: i64 = 5 * MINUTE;
/// Lengths tried, shortest first.
const LENGTHS: [i64; 4] = [60 * MINUTE, 180 * MINUTE, 360 * MINUTE, 1_440 * MINUTE];
/// Minutes holding data that make a baseline worth comparing with.
const ENOUGH_MINUTES: usize = 10;
/// Spans a baseline may hold before it is shortened.
const MAX_BASELINE_SPANS: u64 = 300_000;

/// The baseline for `window`, and why it was chosen, in words.
pub(crate) fn choose_baseline(reader: &dyn Reader, window: TimeRange) -> Result<(TimeRange, String), QueryError> {
    let end = window.start_ms - GUARD;
    let mut range = TimeRange {
        start_ms: end,
        end_ms: end,
    };
    let mut minutes = 0;
    for length in LENGTHS {
        range.start_ms = end - length;
        minutes = reader.active_minutes(range)?;
        if minutes >= ENOUGH_MINUTES {
            break;
        }
    }
    let spans = reader.span_count(range)?;
    let mut reason = format!(
        "the {} before the window, ending {} min before it ({minutes} minutes of it hold data)",
        describe(range.len_ms()),
        GUARD / MINUTE
    );
    if spans > MAX_BASELINE_SPANS {
        // Keep the newest part, whole minutes, at the rate the range had on average.
        let keep = (range.len_ms() as f64 * MAX_BASELINE_SPANS as f64 / spans as f64) as i64;
        let keep = (keep / MINUTE).max(10) * MINUTE;
        range.start_ms = range.end_ms - keep;
        reason = format!(
            "the {} before the window, ending {} min before it (shortened to read at most about {MAX_BASELINE_SPANS} spans)",
            describe(keep),
            GUARD / MINUTE
        );
    }
    Ok((range, reason))
}

fn describe(ms: i64) -> String {
    if ms % (60 * MINUTE) == 0 {
        let h = ms / (60 * MINUTE);
        if h == 1 { "hour".into() } else { format!("{h} hours") }
    } else {
        format!("{} minutes", ms / MINUTE)
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn lengths_read_naturally() {
        assert_eq!(describe(3_600_000), "hour");
        assert_eq!(describe(6 * 3_600_000), "6 hours");
        assert_eq!(describe(25 * 60_000), "25 minutes");
    }
}
