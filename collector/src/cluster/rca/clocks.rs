//! The workers' event times as a correlator reads them from the findings stream. The
//! correlator's clock is the furthest worker's (a finding is correlated as soon as any worker
//! has got that far); what the whole cluster holds final — and so when an incident's window
//! may be investigated over every worker's indexes — is the slowest *live* worker's: one
//! silent for a while has died or left (its partitions are another's now) and no longer
//! holds the cluster back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Each worker's latest event time and when it was last heard from.
pub(super) struct WorkerClocks {
    clocks: HashMap<String, (i64, Instant)>,
    /// A worker silent this long no longer counts for the slowest.
    live_for: Duration,
}

impl WorkerClocks {
    pub(super) fn new(live_for: Duration) -> WorkerClocks {
        WorkerClocks {
            clocks: HashMap::new(),
            live_for,
        }
    }

    /// `node` says it has got to `event_ms` (at `now`).
    pub(super) fn heard(&mut self, node: &str, event_ms: i64, now: Instant) {
        let clock = self.clocks.entry(node.to_string()).or_insert((i64::MIN, now));
        *clock = (clock.0.max(event_ms), now);
    }

    /// The furthest worker's event time.
    pub(super) fn furthest(&self) -> i64 {
        self.clocks.values().map(|c| c.0).max().unwrap_or(i64::MIN)
    }

    /// The slowest event time among workers heard from lately that have had data (one
    /// without any has nothing to wait for); the furthest when there is none.
    pub(super) fn slowest_live(&self, now: Instant) -> i64 {
        self.clocks
            .values()
            .filter(|(event_ms, heard)| *event_ms > i64::MIN && now.saturating_duration_since(*heard) <= self.live_for)
            .map(|c| c.0)
            .min()
            .unwrap_or_else(|| self.furthest())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_live_worker_holds_the_cluster_back_and_a_silent_one_does_not() {
        let t0 = Instant::now();
        let mut clocks = WorkerClocks::new(Duration::from_secs(10));
        clocks.heard("a", 1_000, t0);
        clocks.heard("b", 5_000, t0);
        assert_eq!((clocks.furthest(), clocks.slowest_live(t0)), (5_000, 1_000));
        clocks.heard("a", 900, t0 + Duration::from_secs(1));
        assert_eq!(clocks.slowest_live(t0), 1_000, "a clock never goes back");
        // b goes on; a falls silent (it died): after the live period it no longer counts.
        clocks.heard("b", 9_000, t0 + Duration::from_secs(20));
        assert_eq!(clocks.slowest_live(t0 + Duration::from_secs(20)), 9_000);
        assert_eq!(clocks.furthest(), 9_000);
        // A worker without data yet (its partitions are quiet) holds nothing back.
        clocks.heard("c", i64::MIN, t0 + Duration::from_secs(20));
        assert_eq!(clocks.slowest_live(t0 + Duration::from_secs(20)), 9_000);
    }
}
