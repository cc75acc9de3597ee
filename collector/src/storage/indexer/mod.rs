//! The indexer: documents of durable WAL entries in (made by the processing stage,
//! `crate::process`, which runs the thread), committed index documents out.
//!
//! It adds documents as entries arrive and commits every dirty partition on a fixed
//! interval (the freshness bound), stamping each commit with the last applied LSN.
//! After a successful commit cycle it persists the dedup table and lets the WAL drop
//! segments the indexes now hold. It also enforces retention (`retention.rs`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tantivy::TantivyDocument;

use super::partition::{Partition, day_of, payload_for};
use super::{MetricSample, Store, TimedDocs};
use crate::telemetry::SignalLabel;
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
    /// Validated `[[storage.downsampling]]` levels, finest first.
    pub downsampling: Vec<crate::config::downsampling::Level>,
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
    /// Days whose downsampling failed since the start: passed by until the next start, so
    /// one bad day does not hold the others back.
    downsample_failed: std::collections::BTreeSet<i64>,
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
            downsample_failed: std::collections::BTreeSet::new(),
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
            self.downsample_one_day(now_ns());
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

mod downsample;
mod retention;
#[cfg(test)]
mod tests;
