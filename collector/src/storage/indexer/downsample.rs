//! Downsampling (`[[storage.downsampling]]`): on the retention tick, one day of the
//! time-series store old enough for a coarser level is rewritten at that level's step. One
//! day a tick, on the indexer's thread (the store's only writer): a rewrite holds that day's
//! block for a few seconds, and ingest waits meanwhile, so the pauses stay short and
//! spread out.

use super::Indexer;
use crate::config::downsampling::step_for;
use crate::storage::partition::{NANOS_PER_DAY, day_of};

impl Indexer {
    /// Rewrites the oldest day (never today, none that failed before) whose resolution is
    /// finer than its level's step by `now`. Returns whether one was rewritten. Not while a
    /// sample the store failed to take waits in the WAL for the restart's replay: a rewrite
    /// marks each series complete up to its newest entry, and the replay would pass it by.
    pub(crate) fn downsample_one_day(&mut self, now: i64) -> bool {
        if self.options.downsampling.is_empty() || self.samples_failed_at.is_some() {
            return false;
        }
        let today = day_of(now);
        let tsdb = &self.store.tsdb;
        let failed = &self.downsample_failed;
        let due = tsdb
            .days()
            .into_iter()
            .filter(|&day| day < today && !failed.contains(&day))
            .find_map(|day| {
                let day_end = (day + 1).saturating_mul(NANOS_PER_DAY);
                let step = step_for(&self.options.downsampling, day_end, now)?;
                (tsdb.resolution(day).is_none_or(|r| r < step)).then_some((day, step))
            });
        let Some((day, step_ms)) = due else {
            return false;
        };
        match tsdb.downsample_day(day, step_ms) {
            Ok(Some(done)) => {
                tracing::info!(
                    day,
                    step_ms,
                    series = done.series,
                    samples_before = done.samples_before,
                    samples_after = done.samples_after,
                    "downsampled a day of metric samples"
                );
                self.store.metrics.tsdb_days_downsampled.inc();
                true
            }
            Ok(None) => false,
            Err(e) => {
                self.downsample_failed.insert(day);
                self.store.metrics.index_commit_errors.inc();
                tracing::error!(error = %e, day, "could not downsample a day of metric samples; it stays as it was until the next start");
                false
            }
        }
    }
}
