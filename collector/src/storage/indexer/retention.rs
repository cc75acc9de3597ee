//! Retention: whole days of the indexes and of the time-series store go, by age and then,
//! oldest first, while everything exceeds the disk budget (never today's).

use std::sync::Arc;

use super::{Indexer, now_ns};
use crate::storage::StoreError;
use crate::storage::partition::{NANOS_PER_DAY, day_of};
use crate::telemetry::KindLabel;
use crate::wal::Signal;

impl Indexer {
    /// Deletes partitions past the retention age, then the oldest ones while the
    /// indexes exceed the disk budget (never today's).
    pub(crate) fn enforce_retention(&mut self) {
        let now = now_ns();
        let cutoff = now.saturating_sub(self.options.retention_ns);
        let store = Arc::clone(&self.store);
        let partitions = &store.partitions;
        let metrics = &store.metrics;
        for p in partitions.all() {
            if (p.day + 1).saturating_mul(NANOS_PER_DAY) <= cutoff {
                self.drop(Some(p.signal), p.day, "age");
            }
        }
        // A day is past retention when all of it is: the days before the cutoff's.
        let first_kept = cutoff.div_euclid(NANOS_PER_DAY);
        for day in store.tsdb.days() {
            if day < first_kept {
                self.drop(None, day, "age");
            }
        }
        if self.options.max_disk_bytes > 0 {
            let today = day_of(now);
            // Sizes are read once: each is a directory listing. `None` is the time-series
            // store's block of that day.
            let mut sized: Vec<(i64, Option<Signal>, u64)> = partitions
                .all()
                .iter()
                .map(|p| (p.day, Some(p.signal), p.disk_bytes()))
                .chain(
                    store
                        .tsdb
                        .day_bytes()
                        .into_iter()
                        .map(|(day, bytes)| (day, None, bytes)),
                )
                .collect();
            sized.sort_by_key(|(day, _, _)| *day);
            let mut total: u64 = sized.iter().map(|(_, _, bytes)| bytes).sum();
            for (day, signal, bytes) in sized {
                if total <= self.options.max_disk_bytes || day >= today {
                    break;
                }
                total = total.saturating_sub(bytes);
                self.drop(signal, day, "disk");
            }
        }
        metrics.partitions.set(partitions.len() as i64);
    }

    /// Deletes one day of `signal`'s index, or with `None` of the time-series store.
    fn drop(&mut self, signal: Option<Signal>, day: i64, cause: &'static str) {
        let dropped = match signal {
            Some(signal) => {
                self.dirty.remove(&(signal, day));
                self.last_write.remove(&(signal, day));
                self.store.partitions.drop_partition(signal, day)
            }
            None => self.store.tsdb.drop_day(day).map(|_| ()).map_err(StoreError::from),
        };
        match dropped {
            Ok(()) => {
                let signal = signal.map_or("metric samples", Signal::as_str);
                tracing::info!(signal, day, cause, "retention deleted a partition");
                self.store
                    .metrics
                    .partitions_dropped
                    .get_or_create(&KindLabel { kind: cause })
                    .inc();
            }
            Err(e) => tracing::error!(error = %e, "retention could not delete a partition"),
        }
    }
}
