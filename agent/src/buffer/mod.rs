//! The disk buffer: every batch the agent produces is appended here (and fsynced)
//! before its source moves on, and stays until the collector has acknowledged it.
//!
//! * **Records, in order.** Sequence numbers are dense and increase; the sender ships
//!   them in order and acknowledges them in order. The acknowledged sequence is kept
//!   in `acked`, so after a restart only the rest is replayed. A record's sequence
//!   number (with the agent's id) is its idempotency key at the collector, so a record
//!   sent just before a crash and sent again after it is stored once.
//! * **Checkpoints ride with the data.** A record carries the checkpoint entries (file
//!   offsets) that become true once its data is durable, in the same write: there is
//!   no moment at which the offsets say "read" but the lines are not in the buffer, or
//!   the reverse. On open, the entries of all surviving records are merged over the
//!   snapshot (`checkpoint.json`, written before any segment is deleted).
//! * **Crash safety.** A kill at any point leaves at most a torn last record, never
//!   acknowledged to its producer; opening truncates it. Corruption elsewhere skips
//!   the damaged rest of that segment with an error, and the agent keeps running.
//! * **Bounded.** At `max_bytes` of unacknowledged data, `append` either waits for
//!   space (block) or deletes the oldest unsent segments (drop_oldest, counted).
//!
//! One file per job, as Vector's disk buffer splits them: this file holds the types and the
//! API; `writer.rs` appends and rolls segments, `reader.rs` reads a record back,
//! `ledger.rs` releases what was acknowledged and deletes or drops segments,
//! `recover.rs` opens the buffer after a stop, `segment.rs` is the record format.

mod ledger;
mod reader;
mod recover;
mod segment;
mod writer;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use recover::merge;
pub use segment::{Entry, Kind, Record, encoded_len};
use writer::{create_segment, write_atomic};

use crate::config::WhenFull;

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("disk buffer I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("record of {0} bytes does not fit in the disk buffer")]
    TooLarge(usize),
    #[error("disk buffer is full")]
    Full,
    #[error("disk buffer is closed")]
    Closed,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BufferError + '_ {
    move |source| BufferError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A record to append.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub kind: Kind,
    pub lz4: bool,
    pub entries: Vec<Entry>,
    pub payload: Bytes,
}

impl NewRecord {
    pub fn new(kind: Kind, entries: Vec<Entry>, payload: Bytes) -> NewRecord {
        NewRecord {
            kind,
            lz4: false,
            entries,
            payload,
        }
    }

    /// Stores the payload LZ4-compressed: OTLP logs shrink several times, so the
    /// buffer holds that much more and the disk writes that much less.
    pub fn compressed(kind: Kind, entries: Vec<Entry>, payload: &[u8]) -> NewRecord {
        NewRecord {
            kind,
            lz4: true,
            entries,
            payload: Bytes::from(lz4_flex::block::compress_prepend_size(payload)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BufferOptions {
    pub max_bytes: u64,
    pub when_full: WhenFull,
    /// Segments roll at this size; deletion (after ack or drop) is per segment.
    pub segment_bytes: u64,
    /// Recently appended records kept in memory so the sender rarely reads the disk.
    pub memory_bytes: usize,
    /// fsync each append. Off only in benchmarks that isolate other costs.
    pub fsync: bool,
}

impl BufferOptions {
    pub fn new(max_bytes: u64, when_full: WhenFull) -> BufferOptions {
        BufferOptions {
            max_bytes,
            when_full,
            segment_bytes: (max_bytes / 8).clamp(4096, 32 * 1024 * 1024),
            memory_bytes: ((max_bytes / 4) as usize).min(4 * 1024 * 1024),
            fsync: true,
        }
    }
}

/// What the buffer found on open.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Merged checkpoint entries: the snapshot plus every surviving record's.
    pub checkpoints: BTreeMap<String, Vec<u8>>,
    /// Records waiting to be sent.
    pub pending_records: u64,
    pub pending_bytes: u64,
    /// Torn or corrupt tails cut off (each cost at most one never-acknowledged record,
    /// except corruption inside a closed segment, which loses that segment's rest).
    pub truncated: Vec<String>,
}

/// Counters the agent exports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BufferStats {
    pub pending_records: u64,
    pub pending_bytes: u64,
    pub dropped_records: u64,
    pub dropped_bytes: u64,
}

#[derive(Debug)]
struct SegmentInfo {
    first_seq: u64,
    /// Last sequence written to it; `first_seq - 1` while empty.
    last_seq: u64,
    bytes: u64,
    path: PathBuf,
}

#[derive(Serialize, Deserialize, Default)]
struct Snapshot {
    /// Every record up to and including this sequence is reflected.
    upto_seq: u64,
    entries: BTreeMap<String, String>,
}

struct Inner {
    dir: PathBuf,
    opts: BufferOptions,
    segments: VecDeque<SegmentInfo>,
    active: File,
    next_seq: u64,
    /// Highest sequence fsynced: the sender sees nothing beyond it.
    durable: u64,
    acked: u64,
    /// Checkpoint entries merged over every record appended so far.
    checkpoints: BTreeMap<String, Vec<u8>>,
    recent: VecDeque<Arc<Record>>,
    recent_bytes: usize,
    /// On-disk size of each unacknowledged record, oldest (seq `acked + 1`) first.
    sizes: VecDeque<u32>,
    /// Sequential reader for records no longer in memory: (segment first_seq, next seq, reader).
    cursor: Option<(u64, u64, BufReader<File>)>,
    stats: BufferStats,
}

/// The buffer, shared by producers (threads that may block) and the sender.
pub struct DiskBuffer {
    inner: Mutex<Inner>,
    space: Condvar,
    data: tokio::sync::Notify,
    closed: AtomicBool,
}

const ACKED_FILE: &str = "acked";
const SNAPSHOT_FILE: &str = "checkpoint.json";

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

impl DiskBuffer {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a record, durable when this returns. With the block policy it waits for
    /// space; returns `Closed` if the buffer is closed while waiting.
    pub fn append(&self, kind: Kind, entries: Vec<Entry>, payload: Bytes) -> Result<u64, BufferError> {
        self.append_inner(vec![NewRecord::new(kind, entries, payload)], true)
    }

    /// Like `append`, but answers `Full` instead of waiting.
    pub fn try_append(&self, kind: Kind, entries: Vec<Entry>, payload: Bytes) -> Result<u64, BufferError> {
        self.append_inner(vec![NewRecord::new(kind, entries, payload)], false)
    }

    /// Appends several records in order under one fsync (group commit); returns the
    /// last sequence number. None of them is visible to the sender before the fsync.
    pub fn append_many(&self, records: Vec<NewRecord>) -> Result<u64, BufferError> {
        self.append_inner(records, true)
    }

    fn append_inner(&self, records: Vec<NewRecord>, wait: bool) -> Result<u64, BufferError> {
        let mut inner = self.lock();
        let mut last = inner.next_seq - 1;
        let mut result = Ok(());
        for record in records {
            let size = encoded_len(&record.entries, record.payload.len()) as u64;
            if size > inner.opts.max_bytes / 2 {
                result = Err(BufferError::TooLarge(size as usize));
                break;
            }
            loop {
                if self.closed.load(Ordering::Acquire) {
                    result = Err(BufferError::Closed);
                    break;
                }
                if inner.stats.pending_bytes + size <= inner.opts.max_bytes {
                    break;
                }
                match inner.opts.when_full {
                    WhenFull::DropOldest => {
                        if let Err(e) = inner.drop_oldest() {
                            result = Err(e);
                            break;
                        }
                    }
                    WhenFull::Block if wait => {
                        // Whatever this group wrote so far becomes durable before we
                        // wait, so the sender can ship it and make room.
                        if let Err(e) = inner.sync() {
                            result = Err(e);
                            break;
                        }
                        self.data.notify_one();
                        inner = self
                            .space
                            .wait_timeout(inner, Duration::from_millis(200))
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    WhenFull::Block => {
                        result = Err(BufferError::Full);
                        break;
                    }
                }
            }
            if result.is_err() {
                break;
            }
            match inner.write(record) {
                Ok(seq) => last = seq,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let synced = inner.sync();
        drop(inner);
        self.data.notify_one();
        result.and(synced).map(|()| last)
    }

    /// The next record after `after`, if one is waiting (a dropped range is skipped).
    pub fn next_after(&self, after: u64) -> Result<Option<Arc<Record>>, BufferError> {
        self.lock().read_after(after)
    }

    /// Waits until a record after `after` may be available (or the buffer closes).
    pub async fn wait_after(&self, after: u64) {
        loop {
            let notified = self.data.notified();
            if self.closed.load(Ordering::Acquire) || self.lock().durable > after {
                return;
            }
            notified.await;
        }
    }

    /// Everything up to `seq` reached the collector.
    pub fn ack(&self, seq: u64) -> Result<(), BufferError> {
        let mut inner = self.lock();
        if seq <= inner.acked {
            return Ok(());
        }
        let (records, bytes) = inner.release_through(seq);
        inner.stats.pending_records = inner.stats.pending_records.saturating_sub(records);
        inner.stats.pending_bytes = inner.stats.pending_bytes.saturating_sub(bytes);
        inner.acked = seq;
        let path = inner.dir.join(ACKED_FILE);
        // Not fsynced: losing it to a power cut only re-sends, and the collector drops
        // the duplicates by batch id.
        write_atomic(&path, seq.to_string().as_bytes(), false)?;
        inner.delete_acked_segments()?;
        drop(inner);
        self.space.notify_all();
        Ok(())
    }

    pub fn acked(&self) -> u64 {
        self.lock().acked
    }

    pub fn stats(&self) -> BufferStats {
        self.lock().stats
    }

    /// Wakes every waiter; later appends fail with `Closed`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.space.notify_all();
        self.data.notify_waiters();
        self.data.notify_one();
    }
}

#[cfg(test)]
mod tests;
