//! The write-ahead log: every accepted batch is appended and fsynced here before the
//! client is acknowledged, and replayed into the indexes after a crash. Its record format
//! (`batch.rs`: one sanitized OTLP request with its signal and batch id) and the batch-id
//! table that makes retries exactly-once (`dedup.rs`) live here too, so ingest writes the
//! log and storage reads it without either importing the other.
//!
//! * **Group commit.** Appenders hand their payload to one writer thread through a
//!   bounded queue. The writer takes everything that is waiting, writes it, and covers
//!   the whole group with a single `fdatasync`; only then does each appender learn its
//!   LSN. Under concurrency many requests share one fsync.
//! * **Ordering.** After the sync the writer passes each entry, in LSN order, to the
//!   sink (the indexer). Backpressure from the indexer therefore slows the writer, which
//!   fills the bounded queue, which makes ingest answer "retry later".
//! * **Truncation.** Segments roll at a size limit. The indexer reports, after each
//!   index commit, the highest LSN that is durable in the indexes (the checkpoint);
//!   closed segments entirely at or below it are deleted. The active segment is never
//!   deleted, so its name always tells the next LSN after a restart.

mod batch;
mod dedup;
mod segment;

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

pub(crate) use batch::{Purge, Signal, WalBatch};
pub(crate) use dedup::{BatchDedup, Claim};
pub(crate) use segment::WalRecord;
use segment::{ActiveSegment, Stop};

use crate::telemetry::Metrics;

/// Errors of the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WalError {
    #[error("write-ahead log I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("write-ahead log segment {path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: &'static str,
    },
    #[error("write-ahead log queue is full")]
    QueueFull,
    #[error("write-ahead log is closed")]
    Closed,
    #[error("write-ahead log append failed: {0}")]
    AppendFailed(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Tuning of the write-ahead log.
#[derive(Debug, Clone)]
pub(crate) struct WalOptions {
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Appends waiting for the writer; more are refused with [`WalError::QueueFull`].
    pub queue_len: usize,
    /// Upper bound on the bytes written under one fsync.
    pub max_group_bytes: usize,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 * 1024 * 1024,
            queue_len: 1024,
            max_group_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A record made durable by the writer, on its way to the indexer.
#[derive(Debug, Clone)]
pub(crate) struct WalEntry {
    pub lsn: u64,
    pub payload: Bytes,
}

struct Pending {
    payload: Bytes,
    done: oneshot::Sender<Result<u64, WalError>>,
}

enum Msg {
    Append(Pending),
    /// Stop taking appends; finish those already queued, then exit.
    Close,
}

/// Closed segments, oldest first, shared between the writer (which adds them when it
/// rolls) and the truncator (which deletes them once checkpointed).
#[derive(Default)]
struct ClosedSegments {
    /// `(first_lsn, last_lsn, path)`.
    segments: VecDeque<(u64, u64, PathBuf)>,
}

/// A write-ahead log opened on a directory, replayed, and not yet writing.
pub(crate) struct Wal {
    dir: PathBuf,
    options: WalOptions,
    active: ActiveSegment,
    next_lsn: u64,
    closed: Arc<Mutex<ClosedSegments>>,
}

impl Wal {
    /// Opens the log in `dir`, calling `on_record` for every durable record in LSN
    /// order (the replay), and cutting off a torn tail left by a crash.
    ///
    /// `min_next_lsn` guards against LSN reuse when the log directory was emptied
    /// while the indexes still remember higher LSNs.
    pub(crate) fn open(
        dir: &Path,
        options: WalOptions,
        min_next_lsn: u64,
        mut on_record: impl FnMut(WalRecord),
    ) -> Result<Wal, WalError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut firsts: Vec<u64> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            if let Some(first) = entry.file_name().to_str().and_then(segment::parse_segment_name) {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();

        let mut closed = ClosedSegments::default();
        let mut last_lsn: u64 = 0;
        let mut active: Option<(u64, u64)> = None;
        for (i, &first) in firsts.iter().enumerate() {
            let path = segment::segment_path(dir, first);
            let is_last = i + 1 == firsts.len();
            let mut seg_last = first.saturating_sub(1);
            let mut order_error = None;
            let (valid_len, stop) = segment::read_segment(&path, |record| {
                if record.lsn <= last_lsn || record.lsn < first {
                    order_error.get_or_insert(record.lsn);
                    return Ok(());
                }
                last_lsn = record.lsn;
                seg_last = record.lsn;
                on_record(record);
                Ok(())
            })
            .map_err(io_err(&path))?;
            if order_error.is_some() {
                return Err(WalError::Corrupt {
                    path,
                    offset: 0,
                    reason: "log sequence numbers out of order",
                });
            }
            match stop {
                Stop::End => {}
                Stop::Invalid { offset, reason } if !is_last => {
                    // Only the segment being written when the process died may have a
                    // torn tail; damage anywhere else is real corruption, and guessing
                    // past it could drop acknowledged data silently.
                    return Err(WalError::Corrupt { path, offset, reason });
                }
                Stop::Invalid { offset, reason } => {
                    tracing::warn!(
                        segment = %path.display(),
                        offset,
                        reason,
                        "truncating torn tail of the write-ahead log left by a crash"
                    );
                }
            }
            if is_last {
                active = Some((first, valid_len));
            } else {
                closed.segments.push_back((first, seg_last, path));
            }
        }

        // An empty active segment (just rolled) holds no record but its name still
        // tells the next LSN: without it a fully truncated log would restart at 1.
        let name_floor = firsts.last().copied().unwrap_or(1);
        let next_lsn = (last_lsn + 1).max(min_next_lsn).max(name_floor);
        let active = match active {
            // The active segment's name must stay <= its first record's LSN.
            Some((first, len)) if first <= next_lsn && (len > 0 || first == next_lsn) => {
                ActiveSegment::open(dir, first, len).map_err(io_err(dir))?
            }
            Some((first, len)) => {
                // An empty or stale active segment whose name no longer fits: close it
                // and start one named after the next LSN.
                let path = segment::segment_path(dir, first);
                if len == 0 {
                    std::fs::remove_file(&path).map_err(io_err(&path))?;
                } else {
                    closed.segments.push_back((first, last_lsn, path));
                }
                ActiveSegment::open(dir, next_lsn, 0).map_err(io_err(dir))?
            }
            None => ActiveSegment::open(dir, next_lsn, 0).map_err(io_err(dir))?,
        };
        segment::sync_dir(dir).map_err(io_err(dir))?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            options,
            active,
            next_lsn,
            closed: Arc::new(Mutex::new(closed)),
        })
    }

    /// The LSN the next append will get.
    pub(crate) fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Starts the writer thread. Durable entries go to `sink` in LSN order; the
    /// thread ends (and drops `sink`) once every [`WalAppender`] is dropped and the
    /// queue is drained.
    pub(crate) fn start<S>(
        self,
        metrics: Arc<Metrics>,
        sink: S,
    ) -> io::Result<(WalAppender, WalTruncator, JoinHandle<()>)>
    where
        S: FnMut(WalEntry) + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(self.options.queue_len);
        let truncator = WalTruncator {
            dir: self.dir.clone(),
            closed: Arc::clone(&self.closed),
            metrics: Arc::clone(&metrics),
        };
        metrics.wal_bytes.set(self.disk_bytes() as i64);
        let writer = Writer { wal: self, rx, metrics };
        let handle = std::thread::Builder::new()
            .name("vigil-wal".into())
            .spawn(move || writer.run(sink))?;
        Ok((WalAppender { tx }, truncator, handle))
    }

    fn disk_bytes(&self) -> u64 {
        let closed = self.closed.lock().map(|c| {
            c.segments
                .iter()
                .filter_map(|(_, _, p)| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum::<u64>()
        });
        closed.unwrap_or(0) + self.active.len
    }

    fn roll(&mut self) -> io::Result<()> {
        let next = ActiveSegment::open(&self.dir, self.next_lsn, 0)?;
        segment::sync_dir(&self.dir)?;
        let old = std::mem::replace(&mut self.active, next);
        if let Ok(mut closed) = self.closed.lock() {
            closed.segments.push_back((old.first_lsn, self.next_lsn - 1, old.path));
        }
        Ok(())
    }
}

struct Writer {
    wal: Wal,
    rx: mpsc::Receiver<Msg>,
    metrics: Arc<Metrics>,
}

impl Writer {
    fn run<S: FnMut(WalEntry)>(mut self, mut sink: S) {
        let mut frames = Vec::with_capacity(1 << 20);
        let mut group: Vec<Pending> = Vec::new();
        while let Some(msg) = self.rx.blocking_recv() {
            let first = match msg {
                Msg::Append(p) => p,
                Msg::Close => {
                    // Appends already queued still get written; new ones see Closed.
                    self.rx.close();
                    continue;
                }
            };
            let mut group_bytes = first.payload.len();
            group.push(first);
            while group_bytes < self.wal.options.max_group_bytes {
                match self.rx.try_recv() {
                    Ok(Msg::Append(pending)) => {
                        group_bytes += pending.payload.len();
                        group.push(pending);
                    }
                    Ok(Msg::Close) => self.rx.close(),
                    Err(_) => break,
                }
            }
            frames.clear();
            let first_lsn = self.wal.next_lsn;
            for (i, pending) in group.iter().enumerate() {
                segment::encode_frame(&mut frames, first_lsn + i as u64, &pending.payload);
            }
            match self.wal.active.append_durably(&frames) {
                Ok(()) => {
                    self.wal.next_lsn += group.len() as u64;
                    self.metrics.wal_fsyncs.inc();
                    self.metrics.wal_appends.inc_by(group.len() as u64);
                    self.metrics.wal_bytes.inc_by(frames.len() as i64);
                    let mut entries = Vec::with_capacity(group.len());
                    for (i, pending) in group.drain(..).enumerate() {
                        let lsn = first_lsn + i as u64;
                        entries.push(WalEntry {
                            lsn,
                            payload: pending.payload,
                        });
                        // The receiver may have gone (client disconnected); the record
                        // is durable and will be indexed regardless.
                        let _ = pending.done.send(Ok(lsn));
                    }
                    for entry in entries {
                        sink(entry);
                    }
                }
                Err(err) => {
                    tracing::error!(segment = %self.wal.active.path.display(), error = %err, "write-ahead log append failed");
                    for pending in group.drain(..) {
                        let _ = pending.done.send(Err(WalError::AppendFailed(err.to_string())));
                    }
                }
            }
            if self.wal.active.len >= self.wal.options.segment_bytes
                && let Err(err) = self.wal.roll()
            {
                tracing::error!(error = %err, "could not roll write-ahead log segment");
            }
        }
        tracing::debug!(next_lsn = self.wal.next_lsn, "write-ahead log writer stopped");
    }
}

/// Hands payloads to the writer thread. Cheap to clone.
#[derive(Clone)]
pub(crate) struct WalAppender {
    tx: mpsc::Sender<Msg>,
}

impl WalAppender {
    /// Appends waiting for the writer.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Appends one payload and resolves to its LSN once it is on stable storage.
    /// Fails fast with [`WalError::QueueFull`] instead of queueing without bound.
    pub(crate) async fn append(&self, payload: Bytes) -> Result<u64, WalError> {
        let permit = self.tx.try_reserve().map_err(|err| match err {
            mpsc::error::TrySendError::Full(()) => WalError::QueueFull,
            mpsc::error::TrySendError::Closed(()) => WalError::Closed,
        })?;
        let (done, wait) = oneshot::channel();
        permit.send(Msg::Append(Pending { payload, done }));
        wait.await.map_err(|_| WalError::Closed)?
    }

    /// Asks the writer to finish what is queued and stop, even while other clones
    /// of the appender are still alive (e.g. held by a hung connection).
    pub(crate) async fn close(&self) {
        let _ = self.tx.send(Msg::Close).await;
    }
}

/// Deletes closed segments once the indexes hold everything in them.
#[derive(Clone)]
pub(crate) struct WalTruncator {
    dir: PathBuf,
    closed: Arc<Mutex<ClosedSegments>>,
    metrics: Arc<Metrics>,
}

impl WalTruncator {
    /// Whether [`WalTruncator::truncate`] at `checkpoint` would delete anything.
    pub(crate) fn can_truncate(&self, checkpoint: u64) -> bool {
        self.closed
            .lock()
            .map(|c| c.segments.front().is_some_and(|(_, last, _)| *last <= checkpoint))
            .unwrap_or(false)
    }

    /// Deletes every closed segment whose records all have `lsn <= checkpoint`.
    /// Returns how many segments were deleted.
    pub(crate) fn truncate(&self, checkpoint: u64) -> Result<usize, WalError> {
        let mut deleted = 0;
        loop {
            let candidate = {
                let Ok(closed) = self.closed.lock() else {
                    return Ok(deleted);
                };
                match closed.segments.front() {
                    Some((_, last, path)) if *last <= checkpoint => path.clone(),
                    _ => break,
                }
            };
            let len = std::fs::metadata(&candidate).map(|m| m.len()).unwrap_or(0);
            match std::fs::remove_file(&candidate) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(io_err(&candidate)(err)),
            }
            if let Ok(mut closed) = self.closed.lock() {
                closed.segments.pop_front();
            }
            self.metrics.wal_bytes.dec_by(len as i64);
            deleted += 1;
        }
        if deleted > 0 {
            segment::sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests;
