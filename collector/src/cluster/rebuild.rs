//! Partitions a worker is rebuilding from the stream, so that their history's spans do not
//! reach the correlator a second time.
//!
//! A worker that takes a partition consumes it from its checkpoint (from the stream's
//! beginning if it never held it): hours of history its detectors must learn from, whose
//! spans the partition's last owner already sent the correlator when they were live. Sent
//! again, the service graph would count those calls twice. So on taking a partition the
//! worker notes the stream's last message of it; until detection has passed that message's
//! entry in the local log, the partition's spans stay on the worker. Detection itself runs
//! on them as on any data, and anomalies are sent (an anomaly update is idempotent).

use std::collections::HashMap;
use std::sync::Mutex;

/// How far each rebuilt partition's history reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// The consumer has not stored this stream sequence yet.
    Sequence(u64),
    /// Stored by this local log entry: detection has not passed it yet.
    Entry(u64),
}

/// One partition being rebuilt.
#[derive(Debug, Clone, Copy)]
struct Rebuild {
    until: Until,
    /// Spans that ended before this (unix ms) are history: the last owner, alive then, sent
    /// them. Later ones it may not have sent (it was dying, or behind): they go, at the risk
    /// of counting a few seconds of calls twice rather than losing them.
    cutoff_ms: i64,
    /// The highest local log entry a message of the partition was stored as so far (appends
    /// of one consumer may land out of order).
    max_entry: u64,
}

/// Shared by a worker's partition consumers (which start and end rebuilds) and its detection
/// thread (which keeps the history's spans back).
pub(crate) struct Rebuilding {
    partitions: u32,
    rebuilds: Mutex<HashMap<u32, Rebuild>>,
}

impl Rebuilding {
    pub(crate) fn new(partitions: u32) -> Rebuilding {
        Rebuilding {
            partitions,
            rebuilds: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Rebuild>> {
        self.rebuilds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A consumer takes `partition`, whose last message in the stream is `last_sequence`;
    /// spans ending before `cutoff_ms` were sent by the last owner.
    pub(crate) fn start(&self, partition: u32, last_sequence: u64, cutoff_ms: i64) {
        self.lock().insert(
            partition,
            Rebuild {
                until: Until::Sequence(last_sequence),
                cutoff_ms,
                max_entry: 0,
            },
        );
    }

    /// The consumer stored message `sequence` of `partition` as local log entry `entry`
    /// (`None`: the log had it already, or it was unreadable).
    pub(crate) fn stored(&self, partition: u32, sequence: u64, entry: Option<u64>) {
        let mut rebuilds = self.lock();
        if let Some(r) = rebuilds.get_mut(&partition) {
            r.max_entry = r.max_entry.max(entry.unwrap_or(0));
            if matches!(r.until, Until::Sequence(last) if sequence >= last) {
                r.until = Until::Entry(r.max_entry);
            }
        }
    }

    /// The partition was given up: nothing of it comes any more.
    pub(crate) fn stop(&self, partition: u32) {
        self.lock().remove(&partition);
    }

    /// Drops the spans from index `from` on (those of local log entry `entry`) that are
    /// rebuilt history (`service_and_end` gives a span's service and end, unix ms); says how
    /// many. Partitions whose history detection has passed are forgotten on the way. One
    /// lock per entry, and nothing more while no partition is being rebuilt.
    pub(crate) fn drop_history<T>(
        &self,
        entry: u64,
        spans: &mut Vec<T>,
        from: usize,
        service_and_end: impl Fn(&T) -> (&str, i64),
    ) -> u64 {
        let mut rebuilds = self.lock();
        if rebuilds.is_empty() {
            return 0;
        }
        rebuilds.retain(|_, r| !matches!(r.until, Until::Entry(last) if entry > last));
        let mut added = spans.split_off(from.min(spans.len()));
        let before = added.len();
        added.retain(|span| {
            let (service, end_ms) = service_and_end(span);
            let partition = super::partition_of(service, self.partitions);
            !rebuilds.get(&partition).is_some_and(|r| {
                end_ms < r.cutoff_ms
                    && match r.until {
                        Until::Sequence(_) => true,
                        Until::Entry(last) => entry <= last,
                    }
            })
        });
        let held = (before - added.len()) as u64;
        spans.append(&mut added);
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Rebuilding {
        /// Whether one span is history, through the one entry point.
        fn is_history(&self, service: &str, entry: u64, end_ms: i64) -> bool {
            let mut spans = vec![(service.to_string(), end_ms)];
            self.drop_history(entry, &mut spans, 0, |(s, end)| (s.as_str(), *end)) == 1
        }
    }

    #[test]
    fn history_ends_with_the_entry_of_the_last_message_at_takeover() {
        let rebuilding = Rebuilding::new(8);
        let service = "cart";
        let p = super::super::partition_of(service, 8);
        let other = (0..100)
            .map(|i| format!("svc-{i}"))
            .find(|s| super::super::partition_of(s, 8) != p)
            .expect("a service of another partition");
        let (old, recent) = (1_000, 9_000);
        assert!(!rebuilding.is_history(service, 1, old), "nothing rebuilt yet");
        rebuilding.start(p, 40, 5_000);
        assert!(rebuilding.is_history(service, 5, old));
        assert!(!rebuilding.is_history(service, 5, recent), "maybe never sent: it goes");
        assert!(!rebuilding.is_history(&other, 5, old), "other partitions are live");
        rebuilding.stored(p, 38, Some(76));
        rebuilding.stored(p, 39, Some(70));
        assert!(rebuilding.is_history(service, 77, old), "message 40 is not stored yet");
        // The last message was in the log already: the hold ends after everything stored.
        rebuilding.stored(p, 40, None);
        assert!(
            rebuilding.is_history(service, 76, old),
            "up to the highest entry stored"
        );
        assert!(!rebuilding.is_history(service, 77, old), "live after it");
        assert!(!rebuilding.is_history(service, 76, old), "and forgotten once passed");
        rebuilding.start(p, 90, 5_000);
        rebuilding.stop(p);
        assert!(
            !rebuilding.is_history(service, 80, old),
            "a partition given up rebuilds nothing"
        );
    }
}
