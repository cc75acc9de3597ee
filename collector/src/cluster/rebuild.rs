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
    /// Stored as this local log entry: detection has not passed it yet.
    Entry(u64),
}

/// Shared by a worker's partition consumers (which start and end rebuilds) and its detection
/// thread (which keeps the history's spans back).
pub(crate) struct Rebuilding {
    partitions: u32,
    until: Mutex<HashMap<u32, Until>>,
}

impl Rebuilding {
    pub(crate) fn new(partitions: u32) -> Rebuilding {
        Rebuilding {
            partitions,
            until: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Until>> {
        self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A consumer takes `partition`, whose last message in the stream is `last_sequence`.
    pub(crate) fn start(&self, partition: u32, last_sequence: u64) {
        self.lock().insert(partition, Until::Sequence(last_sequence));
    }

    /// The consumer stored message `sequence` of `partition` as local log entry `entry`.
    pub(crate) fn stored(&self, partition: u32, sequence: u64, entry: u64) {
        let mut until = self.lock();
        if let Some(u) = until.get_mut(&partition)
            && matches!(*u, Until::Sequence(last) if sequence >= last)
        {
            *u = Until::Entry(entry);
        }
    }

    /// The partition was given up: nothing of it comes any more.
    pub(crate) fn stop(&self, partition: u32) {
        self.lock().remove(&partition);
    }

    /// Whether a span of `service` in local log entry `entry` is rebuilt history. Partitions
    /// whose history detection has passed are forgotten on the way.
    pub(crate) fn is_history(&self, service: &str, entry: u64) -> bool {
        let mut until = self.lock();
        if until.is_empty() {
            return false;
        }
        until.retain(|_, u| !matches!(*u, Until::Entry(last) if entry > last));
        let partition = super::partition_of(service, self.partitions);
        match until.get(&partition) {
            Some(Until::Sequence(_)) => true,
            Some(Until::Entry(last)) => entry <= *last,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_ends_with_the_entry_of_the_last_message_at_takeover() {
        let rebuilding = Rebuilding::new(8);
        let service = "cart";
        let p = super::super::partition_of(service, 8);
        let other = (0..100)
            .map(|i| format!("svc-{i}"))
            .find(|s| super::super::partition_of(s, 8) != p)
            .expect("a service of another partition");
        assert!(!rebuilding.is_history(service, 1), "nothing rebuilt yet");
        rebuilding.start(p, 40);
        assert!(rebuilding.is_history(service, 5));
        assert!(!rebuilding.is_history(&other, 5), "other partitions are live");
        rebuilding.stored(p, 39, 70);
        assert!(rebuilding.is_history(service, 71), "message 40 is not stored yet");
        rebuilding.stored(p, 40, 75);
        assert!(rebuilding.is_history(service, 75), "up to the entry holding message 40");
        assert!(!rebuilding.is_history(service, 76), "live after it");
        assert!(!rebuilding.is_history(service, 75), "and forgotten once passed");
        rebuilding.start(p, 90);
        rebuilding.stop(p);
        assert!(
            !rebuilding.is_history(service, 80),
            "a partition given up rebuilds nothing"
        );
    }
}
