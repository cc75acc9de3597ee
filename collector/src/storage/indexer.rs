//! The indexer: documents of durable WAL entries in (made by the processing stage,
//! `crate::process`, which runs the thread), committed index documents out.
//!
//! It adds documents as entries arrive and commits every dirty partition on a fixed
//! interval (the freshness bound), stamping each commit with the last applied LSN.
//! After a successful commit cycle it persists the dedup table and lets the WAL drop
//! segments the indexes now hold. It also enforces retention.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tantivy::TantivyDocument;

use super::partition::{NANOS_PER_DAY, Partition, day_of, payload_for};
use super::{MetricSample, Store, StoreError, TimedDocs};
use crate::telemetry::{KindLabel, SignalLabel};
use crate::wal::{BatchDedup, Signal, WalTruncator};

/// Writers idle this long are closed to give their memory back.
const IDLE_WRITER: Duration = Duration::from_secs(120);
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// How often the time-series store's open heads are written to their snapshots: the WAL
/// keeps about this much of the samples not yet in chunks (and what came with them).
const SNAPSHOT_EVERY: Duration = Duration::from_secs(60);
/// A series with no sample for this long has its head sealed: it went quiet (a pod gone),
/// and its half-filled head would otherwise be held and snapshotted for ever.
const IDLE_HEAD: Duration = Duration::from_secs(3600);

pub(crate) struct IndexerOptions {
    pub commit_interval: Duration,
    pub writer_memory_bytes: usize,
    pub retention_ns: i64,
    pub max_disk_bytes: u64,
    pub dedup_path: PathBuf,
}

pub(crate) struct Indexer {
    store: Arc<Store>,
    options: IndexerOptions,
    dedup: Arc<BatchDedup>,
    truncator: Option<WalTruncator>,
    /// Partitions with documents added since their last commit.
    dirty: BTreeMap<(Signal, i64), Arc<Partition>>,
    last_write: HashMap<(Signal, i64), Instant>,
    last_applied_lsn: u64,
    last_checkpoint: u64,
    /// The first entry whose samples the time-series store failed to take (a full disk):
    /// the WAL keeps it, and the replay at the next start puts them in.
    samples_failed_at: Option<u64>,
    /// The last applied entry once a snapshot interval, to tell which heads went idle.
    lsn_marks: std::collections::VecDeque<(Instant, u64)>,
    next_commit: Instant,
    next_retention: Instant,
    next_snapshot: Instant,
}

fn now_ns() -> i64 {
    i64::try_from(crate::timeutil::now_ns()).unwrap_or(i64::MAX)
}

impl Indexer {
    pub(crate) fn new(store: Arc<Store>, options: IndexerOptions, dedup: Arc<BatchDedup>) -> Indexer {
        let next_commit = Instant::now() + options.commit_interval;
        // What the partitions committed before a restart is searchable now: without this
        // the gauge would read 0 until new data came, and whoever waits on it (the
        // incidents' investigations) would wait on a quiet system for ever.
        let committed = store.partitions.max_committed_lsn();
        store
            .metrics
            .indexed_lsn
            .set(i64::try_from(committed).unwrap_or(i64::MAX));
        Indexer {
            store,
            options,
            dedup,
            truncator: None,
            dirty: BTreeMap::new(),
            last_write: HashMap::new(),
            last_applied_lsn: 0,
            last_checkpoint: 0,
            samples_failed_at: None,
            lsn_marks: std::collections::VecDeque::new(),
            next_commit,
            next_retention: Instant::now(),
            next_snapshot: Instant::now() + SNAPSHOT_EVERY,
        }
    }

    pub(crate) fn set_truncator(&mut self, truncator: WalTruncator) {
        self.truncator = Some(truncator);
    }

    /// Notes that entry `lsn` was applied without documents (it could not be decoded).
    pub(crate) fn skip(&mut self, lsn: u64) {
        self.last_applied_lsn = self.last_applied_lsn.max(lsn);
    }

    /// Adds the documents of one WAL entry to their partitions, skipping partitions
    /// that already committed this LSN (replay after a crash), and its samples to the
    /// time-series store, which skips those it holds.
    pub(crate) fn apply(
        &mut self,
        lsn: u64,
        signal: Signal,
        batch_id: Option<&str>,
        docs: TimedDocs,
        samples: Vec<MetricSample>,
    ) {
        self.last_applied_lsn = self.last_applied_lsn.max(lsn);
        if let Some(id) = batch_id {
            self.dedup
                .remember(id.to_string(), crate::timeutil::now_ns() / 1_000_000_000);
        }
        let oldest_kept = now_ns().saturating_sub(self.options.retention_ns);
        let mut added = 0u64;
        for (ts, doc) in docs {
            if ts < oldest_kept {
                // Replaying data retention has already deleted would resurrect it.
                continue;
            }
            if let Err(e) = self.add(signal, day_of(ts), lsn, doc) {
                tracing::error!(lsn, error = %e, "could not index document");
                continue;
            }
            added += 1;
        }
        let oldest_kept_ms = oldest_kept.div_euclid(1_000_000);
        for sample in samples.iter().filter(|s| s.t_ms >= oldest_kept_ms) {
            match self.store.tsdb.append(lsn, &sample.labels, sample.t_ms, sample.value) {
                Ok(true) => added += 1,
                Ok(false) => {}
                Err(e) => {
                    self.store.metrics.index_commit_errors.inc();
                    if self.samples_failed_at.is_none() {
                        tracing::error!(lsn, error = %e, "could not store metric samples; the WAL keeps them for the next start");
                    }
                    self.samples_failed_at = Some(self.samples_failed_at.map_or(lsn, |f| f.min(lsn)));
                }
            }
        }
        self.store
            .metrics
            .docs_indexed
            .get_or_create(&SignalLabel {
                signal: signal.as_str(),
            })
            .inc_by(added);
    }

    /// Deletes the documents of every service `doomed` picks, from every partition, and
    /// forgets the batch ids `forget` picks: entry `lsn` says this worker gave up the
    /// stream partition those services hash to (its new owner answers for them now).
    /// Applied in log order, so it deletes only what came before it — on a replay too.
    pub(crate) fn purge(&mut self, lsn: u64, doomed: &dyn Fn(&str) -> bool, forget: &dyn Fn(&str) -> bool) {
        // Documents still in a writer's buffer are deleted too, but their services can
        // only be listed from committed segments: commit first.
        self.commit();
        self.last_applied_lsn = self.last_applied_lsn.max(lsn);
        let forgotten = self.dedup.forget_matching(forget);
        let by_service = |labels: &vigil_tsdb::Labels| labels.get("service.name").is_some_and(doomed);
        if let Err(e) = self.store.tsdb.delete(lsn, &by_service) {
            tracing::error!(lsn, error = %e, "could not purge a stream partition's metric samples");
            self.samples_failed_at = Some(self.samples_failed_at.map_or(lsn, |f| f.min(lsn)));
        }
        let mut deleted_services = 0usize;
        for partition in self.store.partitions.all() {
            if partition.committed_lsn() >= lsn {
                continue;
            }
            let schemas = &self.store.schemas;
            // Logs and spans name the service in a field; metric points carry it as the
            // label pair `service.name=<name>`.
            let (field, prefix) = match partition.signal {
                Signal::Logs => (schemas.logs.service, ""),
                Signal::Traces => (schemas.spans.service, ""),
                Signal::Metrics => (schemas.metrics.label_pairs, "service.name="),
            };
            let terms = match doomed_terms(&partition, field, prefix, doomed) {
                Ok(terms) => terms,
                Err(e) => {
                    tracing::error!(partition = %partition.dir.display(), error = %e, "could not list a partition's services to purge");
                    continue;
                }
            };
            if terms.is_empty() {
                continue;
            }
            let mut writer = partition.writer.lock().unwrap_or_else(|e| e.into_inner());
            if writer.is_none() {
                match partition
                    .index
                    .writer_with_num_threads(1, self.options.writer_memory_bytes)
                {
                    Ok(w) => *writer = Some(w),
                    Err(e) => {
                        tracing::error!(partition = %partition.dir.display(), error = %e, "could not open a writer to purge");
                        continue;
                    }
                }
            }
            if let Some(w) = writer.as_ref() {
                for term in &terms {
                    w.delete_term(tantivy::Term::from_field_text(field, term));
                }
            }
            drop(writer);
            deleted_services += terms.len();
            let key = (partition.signal, partition.day);
            self.last_write.insert(key, Instant::now());
            self.dirty.entry(key).or_insert(partition);
        }
        tracing::info!(
            lsn,
            deleted_services,
            forgotten_batch_ids = forgotten,
            "purged a stream partition's services"
        );
    }

    fn add(&mut self, signal: Signal, day: i64, lsn: u64, doc: TantivyDocument) -> Result<(), String> {
        let key = (signal, day);
        let partition = match self.dirty.get(&key) {
            Some(p) => Arc::clone(p),
            None => self
                .store
                .partitions
                .get_or_open(signal, day)
                .map_err(|e| e.to_string())?,
        };
        if partition.committed_lsn() >= lsn {
            return Ok(());
        }
        let mut writer = partition.writer.lock().unwrap_or_else(|e| e.into_inner());
        if writer.is_none() {
            let w = partition
                .index
                .writer_with_num_threads(1, self.options.writer_memory_bytes)
                .map_err(|e| e.to_string())?;
            *writer = Some(w);
        }
        if let Some(w) = writer.as_ref() {
            w.add_document(doc).map_err(|e| e.to_string())?;
        }
        drop(writer);
        self.dirty.entry(key).or_insert(partition);
        self.last_write.insert(key, Instant::now());
        Ok(())
    }

    /// Commits every dirty partition. On full success the WAL may drop what is now
    /// held by the indexes.
    pub(crate) fn commit(&mut self) {
        if let Err(e) = self.store.tsdb.sync() {
            self.store.metrics.index_commit_errors.inc();
            tracing::error!(error = %e, "time-series store sync failed; will retry");
            return;
        }
        if self.dirty.is_empty() {
            self.advance_checkpoint();
            return;
        }
        let started = Instant::now();
        let payload = payload_for(self.last_applied_lsn);
        let mut failed = BTreeMap::new();
        let mut committed = Vec::new();
        for (key, partition) in std::mem::take(&mut self.dirty) {
            match commit_partition(&partition, &payload) {
                Ok(()) => committed.push(partition),
                Err(e) => {
                    self.store.metrics.index_commit_errors.inc();
                    tracing::error!(partition = %partition.dir.display(), error = %e, "index commit failed; will retry");
                    failed.insert(key, partition);
                }
            }
        }
        // Readers reload only after every commit of the cycle, so searches see the
        // cycle's data in all partitions at (nearly) the same moment.
        for partition in committed {
            partition.set_committed_lsn(self.last_applied_lsn);
            if let Err(e) = partition.reader.reload() {
                tracing::error!(partition = %partition.dir.display(), error = %e, "index reader reload failed");
            }
        }
        self.store
            .metrics
            .index_commit_seconds
            .observe(started.elapsed().as_secs_f64());
        if failed.is_empty() {
            self.advance_checkpoint();
        } else {
            self.dirty = failed;
        }
    }

    /// Everything applied is searchable now; the WAL may drop what is also durable, which
    /// for samples still in the time-series store's open heads waits for their snapshot.
    fn advance_checkpoint(&mut self) {
        let applied = self.last_applied_lsn;
        self.store
            .metrics
            .indexed_lsn
            .set(i64::try_from(applied).unwrap_or(i64::MAX));
        let floor = [self.store.tsdb.wal_floor(), self.samples_failed_at]
            .into_iter()
            .flatten()
            .min();
        let checkpoint = floor.map_or(applied, |f| applied.min(f.saturating_sub(1)));
        if checkpoint <= self.last_checkpoint {
            return;
        }
        self.last_checkpoint = checkpoint;
        let Some(truncator) = &self.truncator else {
            return;
        };
        if !truncator.can_truncate(checkpoint) {
            return;
        }
        // Batch ids in the segments about to go must survive in the snapshot first.
        if let Err(e) = self
            .dedup
            .save(&self.options.dedup_path, crate::timeutil::now_ns() / 1_000_000_000)
        {
            tracing::error!(path = %self.options.dedup_path.display(), error = %e, "could not save the batch id table; keeping WAL segments");
            return;
        }
        if let Err(e) = truncator.truncate(checkpoint) {
            tracing::error!(error = %e, "could not delete checkpointed WAL segments");
        }
    }

    fn close_idle_writers(&mut self) {
        let now = Instant::now();
        let idle: Vec<(Signal, i64)> = self
            .last_write
            .iter()
            .filter(|(key, at)| !self.dirty.contains_key(key) && now.duration_since(**at) > IDLE_WRITER)
            .map(|(key, _)| *key)
            .collect();
        for key in idle {
            self.last_write.remove(&key);
            if let Ok(p) = self.store.partitions.get_or_open(key.0, key.1) {
                let writer = p.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(w) = writer {
                    let _ = w.wait_merging_threads();
                }
            }
        }
    }

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
        for (day, _) in store.tsdb.day_bytes() {
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

    /// How long until the next commit is due.
    pub(crate) fn until_due(&self) -> Duration {
        self.next_commit.saturating_duration_since(Instant::now())
    }

    /// Commits, closes idle writers and enforces retention when each is due.
    pub(crate) fn tick(&mut self) {
        let now = Instant::now();
        if now >= self.next_commit {
            self.commit();
            self.close_idle_writers();
            self.next_commit = now + self.options.commit_interval;
        }
        if now >= self.next_retention {
            self.enforce_retention();
            self.next_retention = now + RETENTION_EVERY;
        }
        if now >= self.next_snapshot {
            self.snapshot_samples();
            self.next_snapshot = now + SNAPSHOT_EVERY;
        }
    }

    /// Seals the heads of series quiet for [`IDLE_HEAD`] and snapshots the others, so the
    /// WAL need keep only what came since.
    fn snapshot_samples(&mut self) {
        let now = Instant::now();
        self.lsn_marks.push_back((now, self.last_applied_lsn));
        let mut idle_before = None;
        while let Some(&(at, lsn)) = self.lsn_marks.front() {
            if now.duration_since(at) < IDLE_HEAD {
                break;
            }
            idle_before = Some(lsn);
            self.lsn_marks.pop_front();
        }
        let tsdb = &self.store.tsdb;
        let sealed = idle_before.map_or(Ok(0), |lsn| tsdb.seal_idle_heads(lsn));
        // A snapshot says every entry up to its LSN is held: not past one the store failed
        // to take, which the replay at the next start must give it again.
        let applied = self.samples_failed_at.map_or(self.last_applied_lsn, |failed| {
            self.last_applied_lsn.min(failed.saturating_sub(1))
        });
        if let Err(e) = sealed.and_then(|_| tsdb.snapshot_heads(applied)) {
            self.store.metrics.index_commit_errors.inc();
            tracing::error!(error = %e, "could not snapshot the time-series store's heads; the WAL keeps their samples");
        }
        let stats = tsdb.stats();
        let m = &self.store.metrics;
        m.tsdb_series.set(i64::try_from(stats.series).unwrap_or(i64::MAX));
        m.tsdb_chunks.set(i64::try_from(stats.chunks).unwrap_or(i64::MAX));
        m.tsdb_head_samples
            .set(i64::try_from(stats.head_samples).unwrap_or(i64::MAX));
    }

    /// At shutdown: commits what is left, saves the batch-id table and waits for merges.
    pub(crate) fn finish(mut self) {
        self.commit();
        // The heads' snapshot at shutdown: the next start replays nothing for them.
        self.snapshot_samples();
        self.advance_checkpoint();
        if let Err(e) = self
            .dedup
            .save(&self.options.dedup_path, crate::timeutil::now_ns() / 1_000_000_000)
        {
            tracing::error!(error = %e, "could not save the batch id table at shutdown");
        }
        for p in self.store.partitions.all() {
            let writer = p.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(w) = writer {
                let _ = w.wait_merging_threads();
            }
        }
        tracing::info!(checkpoint = self.last_checkpoint, "indexer stopped");
    }
}

/// The terms of `field` (past `prefix`) that `doomed` picks, over a partition's segments.
fn doomed_terms(
    partition: &Partition,
    field: tantivy::schema::Field,
    prefix: &str,
    doomed: &dyn Fn(&str) -> bool,
) -> Result<std::collections::BTreeSet<String>, tantivy::TantivyError> {
    let mut terms = std::collections::BTreeSet::new();
    let searcher = partition.reader.searcher();
    for segment in searcher.segment_readers() {
        let inverted = segment.inverted_index(field)?;
        let mut stream = inverted.terms().stream()?;
        while stream.advance() {
            let Ok(term) = std::str::from_utf8(stream.key()) else {
                continue;
            };
            if let Some(service) = term.strip_prefix(prefix)
                && doomed(service)
            {
                terms.insert(term.to_string());
            }
        }
    }
    Ok(terms)
}

fn commit_partition(partition: &Partition, payload: &str) -> Result<(), tantivy::TantivyError> {
    let mut guard = partition.writer.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(writer) = guard.as_mut() {
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(payload);
        prepared.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    use super::*;
    use crate::storage::log_docs;
    use crate::telemetry::Metrics;

    fn setup(dir: &std::path::Path, max_disk_bytes: u64) -> Indexer {
        let store = Arc::new(Store::open(&dir.join("index"), Arc::new(Metrics::default())).expect("store"));
        Indexer::new(
            store,
            IndexerOptions {
                commit_interval: Duration::from_secs(1),
                writer_memory_bytes: 15_000_000,
                retention_ns: 7 * NANOS_PER_DAY,
                max_disk_bytes,
                dedup_path: dir.join("batch-ids"),
            },
            BatchDedup::new(60, 100),
        )
    }

    /// Applies, as entry `lsn`, one sample of gauge `up` at `t_ms`.
    fn apply_sample(indexer: &mut Indexer, lsn: u64, t_ms: i64) {
        let sample = MetricSample {
            labels: vigil_tsdb::Labels::new([("__name__", "up"), ("__kind__", "gauge")]),
            t_ms,
            value: lsn as f64,
        };
        indexer.apply(lsn, Signal::Metrics, None, Vec::new(), vec![sample]);
    }

    fn stored_samples(store: &Store) -> usize {
        let all = store.tsdb.select(&[], i64::MIN, i64::MAX, usize::MAX).expect("select");
        all.series.iter().map(|s| s.samples.len()).sum()
    }

    #[test]
    fn samples_in_open_heads_hold_the_wal_back_until_their_snapshot() {
        let dir = tempfile::tempdir().expect("dir");
        let mut indexer = setup(dir.path(), 0);
        let now_ms = now_ns() / 1_000_000;
        apply_logs(&mut indexer, 1, now_ns() as u64, 3);
        apply_sample(&mut indexer, 2, now_ms);
        apply_logs(&mut indexer, 3, now_ns() as u64, 3);
        indexer.commit();
        // Everything applied is searchable; the WAL must keep entry 2 on.
        assert_eq!(indexer.store.metrics.indexed_lsn.get(), 3);
        assert_eq!(indexer.last_checkpoint, 1);
        indexer.snapshot_samples();
        indexer.commit();
        assert_eq!(indexer.last_checkpoint, 3);
        assert_eq!(indexer.store.metrics.tsdb_head_samples.get(), 1);
    }

    #[test]
    fn a_clean_stop_snapshots_the_heads_and_a_restart_finds_every_sample() {
        let dir = tempfile::tempdir().expect("dir");
        let now_ms = now_ns() / 1_000_000;
        let mut indexer = setup(dir.path(), 0);
        for lsn in 1..=5 {
            apply_sample(&mut indexer, lsn, now_ms + lsn as i64);
        }
        indexer.finish();
        let indexer = setup(dir.path(), 0);
        assert_eq!(stored_samples(&indexer.store), 5);
        // The snapshot holds entries 1 to 5: a replay of them is skipped.
        let labels = vigil_tsdb::Labels::new([("__name__", "up"), ("__kind__", "gauge")]);
        for lsn in 1..=5 {
            let taken = indexer.store.tsdb.append(lsn, &labels, now_ms + lsn as i64, 0.0);
            assert!(!taken.expect("append"), "entry {lsn} is held already");
        }
        assert_eq!(indexer.store.tsdb.max_lsn(), 5);
    }

    #[test]
    fn a_purge_deletes_its_services_metric_samples_too() {
        let dir = tempfile::tempdir().expect("dir");
        let mut indexer = setup(dir.path(), 0);
        let now_ms = now_ns() / 1_000_000;
        let sample = |service: &str, t_ms: i64| MetricSample {
            labels: vigil_tsdb::Labels::new([("__name__", "up"), ("service.name", service)]),
            t_ms,
            value: 1.0,
        };
        let both = vec![sample("gone", now_ms), sample("kept", now_ms)];
        indexer.apply(1, Signal::Metrics, None, Vec::new(), both);
        indexer.purge(2, &|service| service == "gone", &|_| false);
        indexer.apply(3, Signal::Metrics, None, Vec::new(), vec![sample("gone", now_ms + 1)]);
        let all = indexer
            .store
            .tsdb
            .select(&[], i64::MIN, i64::MAX, usize::MAX)
            .expect("select");
        let left: Vec<(Option<&str>, usize)> = all
            .series
            .iter()
            .map(|s| (s.labels.get("service.name"), s.samples.len()))
            .collect();
        // What came after the purge stays: the service may come back to this worker.
        assert_eq!(left, vec![(Some("gone"), 1), (Some("kept"), 1)]);
    }

    /// Applies, as entry `lsn`, a log request of `n` records from `ts`.
    fn apply_logs(indexer: &mut Indexer, lsn: u64, ts: u64, n: usize) {
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: (0..n)
                        .map(|i| LogRecord {
                            time_unix_nano: ts + i as u64,
                            observed_time_unix_nano: ts,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let docs = log_docs(&indexer.store.schemas.logs, &request, &mut |_, _| 0);
        indexer.apply(lsn, Signal::Logs, None, docs, Vec::new());
    }

    fn doc_count(indexer: &Indexer) -> u64 {
        indexer
            .store
            .partitions
            .all()
            .iter()
            .map(|p| p.reader.searcher().num_docs())
            .sum()
    }

    #[test]
    fn replay_skips_what_a_partition_already_committed() {
        let dir = tempfile::tempdir().expect("dir");
        let now = now_ns() as u64;
        let yesterday = now - NANOS_PER_DAY as u64;
        {
            let mut indexer = setup(dir.path(), 0);
            apply_logs(&mut indexer, 1, now, 3);
            apply_logs(&mut indexer, 2, yesterday, 2);
            indexer.commit();
            assert_eq!(doc_count(&indexer), 5);
        }
        // A restart replays the same WAL entries plus one new one.
        let mut indexer = setup(dir.path(), 0);
        apply_logs(&mut indexer, 1, now, 3);
        apply_logs(&mut indexer, 2, yesterday, 2);
        apply_logs(&mut indexer, 3, now, 4);
        indexer.commit();
        assert_eq!(doc_count(&indexer), 9, "entries 1 and 2 must not be indexed twice");
        assert_eq!(indexer.store.partitions.max_committed_lsn(), 3);
    }

    /// Applies, as entry `lsn`, `n` records of `service` (with a batch id).
    fn apply_service_logs(indexer: &mut Indexer, lsn: u64, ts: u64, n: usize, service: &str, batch_id: &str) {
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(crate::storage::convert::service_resource(service)),
                scope_logs: vec![ScopeLogs {
                    log_records: (0..n)
                        .map(|i| LogRecord {
                            time_unix_nano: ts + i as u64,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let docs = log_docs(&indexer.store.schemas.logs, &request, &mut |_, _| 0);
        indexer.apply(lsn, Signal::Logs, Some(batch_id), docs, Vec::new());
    }

    #[test]
    fn a_purge_deletes_its_services_and_ids_and_nothing_after_it() {
        let dir = tempfile::tempdir().expect("dir");
        let now = now_ns() as u64;
        let doomed = |s: &str| s == "gone";
        let forget = |id: &str| id.ends_with("/p3");
        let run = |indexer: &mut Indexer| {
            apply_service_logs(indexer, 1, now, 3, "kept", "a/p4");
            apply_service_logs(indexer, 2, now, 2, "gone", "b/p3");
            indexer.commit();
            // Not committed when the purge comes: deleted all the same.
            apply_service_logs(indexer, 3, now, 4, "gone", "c/p3");
            indexer.purge(4, &doomed, &forget);
            // The partition taken back and rebuilt: after the purge, so it stays.
            apply_service_logs(indexer, 5, now, 5, "gone", "d/p3");
            indexer.commit();
        };
        let mut indexer = setup(dir.path(), 0);
        run(&mut indexer);
        assert_eq!(doc_count(&indexer), 3 + 5, "the purge removed entries 2 and 3 only");
        let dedup = Arc::clone(&indexer.dedup);
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        runtime.block_on(async {
            assert!(
                matches!(dedup.claim("b/p3").await, crate::wal::Claim::New(_)),
                "a purged partition's ids are forgotten"
            );
            assert!(
                matches!(dedup.claim("a/p4").await, crate::wal::Claim::Duplicate),
                "other partitions' ids stay"
            );
            assert!(
                matches!(dedup.claim("d/p3").await, crate::wal::Claim::Duplicate),
                "ids after the purge stay"
            );
        });
        drop(indexer);
        // A replay of the same log after a restart ends in the same place.
        let mut indexer = setup(dir.path(), 0);
        run(&mut indexer);
        assert_eq!(doc_count(&indexer), 3 + 5);
    }

    #[test]
    fn retention_drops_partitions_by_age_then_by_disk_budget() {
        let dir = tempfile::tempdir().expect("dir");
        let today = day_of(now_ns());
        let mut indexer = setup(dir.path(), 0);
        let partitions = &indexer.store.partitions;
        let old = partitions.get_or_open(Signal::Logs, today - 10).expect("old");
        let old_dir = old.dir.clone();
        drop(old);
        for day in [today - 2, today - 1, today] {
            partitions.get_or_open(Signal::Traces, day).expect("partition");
        }
        // Samples, each in its day's block of the time-series store.
        let labels = vigil_tsdb::Labels::new([("__name__", "up")]);
        for (lsn, day) in [(1, today - 10), (2, today - 1), (3, today)] {
            let t_ms = day * 86_400_000 + 1;
            indexer.store.tsdb.append(lsn, &labels, t_ms, 1.0).expect("append");
        }
        let sample_days = |indexer: &Indexer| -> Vec<i64> {
            indexer.store.tsdb.day_bytes().into_iter().map(|(day, _)| day).collect()
        };
        indexer.enforce_retention();
        assert!(!old_dir.exists(), "a partition past retention must be deleted");
        assert_eq!(indexer.store.partitions.len(), 3);
        assert_eq!(sample_days(&indexer), vec![today - 1, today]);

        indexer.options.max_disk_bytes = 1;
        indexer.enforce_retention();
        let left: Vec<i64> = indexer.store.partitions.all().iter().map(|p| p.day).collect();
        assert_eq!(left, vec![today], "over the disk budget everything but today goes");
        assert_eq!(sample_days(&indexer), vec![today]);
    }
}
