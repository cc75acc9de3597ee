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

mod segment;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use segment::{Entry, Kind, Record, encoded_len};

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
    /// Opens (or creates) the buffer in `dir`, recovering after any kind of stop.
    pub fn open(dir: &Path, opts: BufferOptions) -> Result<(Arc<DiskBuffer>, Recovered), BufferError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut recovered = Recovered::default();
        let acked_path = dir.join(ACKED_FILE);
        let acked: u64 = match fs::read_to_string(&acked_path) {
            Ok(s) => s.trim().parse().unwrap_or(0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_err(&acked_path)(e)),
        };
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let snapshot: Snapshot = match fs::read(&snapshot_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| io_err(&snapshot_path)(io::Error::new(io::ErrorKind::InvalidData, e)))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Snapshot::default(),
            Err(e) => return Err(io_err(&snapshot_path)(e)),
        };
        let mut checkpoints: BTreeMap<String, Vec<u8>> =
            snapshot.entries.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();

        let mut firsts: Vec<u64> = fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".seg").and_then(|s| s.parse().ok())
            })
            .collect();
        firsts.sort_unstable();

        let mut segments = VecDeque::new();
        let mut stats = BufferStats::default();
        let mut sizes = VecDeque::new();
        let mut next_seq = acked.max(snapshot.upto_seq) + 1;
        let count = firsts.len();
        for (i, first) in firsts.into_iter().enumerate() {
            let path = segment_path(dir, first);
            let is_last = i + 1 == count;
            let file = File::open(&path).map_err(io_err(&path))?;
            let mut reader = BufReader::new(file);
            let mut good = 0u64;
            let mut last_seq = first.saturating_sub(1);
            loop {
                match segment::read_record(&mut reader).map_err(io_err(&path))? {
                    Ok(Some((record, used))) => {
                        if record.seq != last_seq + 1 && good > 0 {
                            recovered
                                .truncated
                                .push(format!("{}: sequence gap at byte {good}", path.display()));
                            break;
                        }
                        last_seq = record.seq;
                        good += used as u64;
                        if record.seq > snapshot.upto_seq {
                            merge(&mut checkpoints, &record.entries);
                        }
                        if record.seq > acked {
                            stats.pending_records += 1;
                            stats.pending_bytes += used as u64;
                            sizes.push_back(used as u32);
                        }
                    }
                    Ok(None) => break,
                    Err(torn) => {
                        recovered
                            .truncated
                            .push(format!("{}: {torn:?} at byte {good}", path.display()));
                        break;
                    }
                }
            }
            let len = fs::metadata(&path).map_err(io_err(&path))?.len();
            if good < len && is_last {
                // A torn tail from a crash mid-append: never acknowledged, cut it off.
                let f = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
                f.set_len(good).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
            }
            next_seq = next_seq.max(last_seq + 1);
            segments.push_back(SegmentInfo {
                first_seq: first,
                last_seq,
                bytes: good,
                path,
            });
        }
        // Sequence numbers must continue past everything ever acknowledged.
        let active = match segments.back() {
            Some(last) if last.last_seq + 1 == next_seq && last.bytes < opts.segment_bytes => OpenOptions::new()
                .append(true)
                .open(&last.path)
                .map_err(io_err(&last.path))?,
            _ => {
                let path = segment_path(dir, next_seq);
                let f = create_segment(dir, &path)?;
                segments.push_back(SegmentInfo {
                    first_seq: next_seq,
                    last_seq: next_seq - 1,
                    bytes: 0,
                    path,
                });
                f
            }
        };
        recovered.checkpoints = checkpoints.clone();
        recovered.pending_records = stats.pending_records;
        recovered.pending_bytes = stats.pending_bytes;
        let buffer = Arc::new(DiskBuffer {
            inner: Mutex::new(Inner {
                dir: dir.to_path_buf(),
                opts,
                segments,
                active,
                next_seq,
                durable: next_seq - 1,
                acked: acked.min(next_seq - 1),
                checkpoints,
                recent: VecDeque::new(),
                recent_bytes: 0,
                sizes,
                cursor: None,
                stats,
            }),
            space: Condvar::new(),
            data: tokio::sync::Notify::new(),
            closed: AtomicBool::new(false),
        });
        buffer.lock().delete_acked_segments()?;
        Ok((buffer, recovered))
    }

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

fn merge(checkpoints: &mut BTreeMap<String, Vec<u8>>, entries: &[Entry]) {
    for (k, v) in entries {
        if v.is_empty() {
            checkpoints.remove(k);
        } else {
            checkpoints.insert(k.clone(), v.clone());
        }
    }
}

fn create_segment(dir: &Path, path: &Path) -> Result<File, BufferError> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    sync_dir(dir)?;
    Ok(f)
}

fn sync_dir(dir: &Path) -> Result<(), BufferError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<(), BufferError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    if durable {
        f.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if durable && let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

impl Inner {
    fn write(&mut self, new: NewRecord) -> Result<u64, BufferError> {
        let active_bytes = self.segments.back().map_or(0, |s| s.bytes);
        if active_bytes >= self.opts.segment_bytes {
            self.roll()?;
        }
        let seq = self.next_seq;
        let record = Record {
            seq,
            kind: new.kind,
            lz4: new.lz4,
            entries: new.entries,
            payload: new.payload,
        };
        let bytes = segment::encode(&record);
        let path = self.segments.back().map(|s| s.path.clone()).unwrap_or_default();
        if let Err(e) = self.active.write_all(&bytes) {
            // Whatever reached the file is a torn record: cut it so later appends stay
            // readable, and let the producer retry.
            let good = self.segments.back().map_or(0, |s| s.bytes);
            let _ = self.active.set_len(good);
            return Err(io_err(&path)(e));
        }
        let len = bytes.len() as u64;
        if let Some(s) = self.segments.back_mut() {
            s.last_seq = seq;
            s.bytes += len;
        }
        self.next_seq += 1;
        self.stats.pending_records += 1;
        self.stats.pending_bytes += len;
        self.sizes.push_back(len as u32);
        merge(&mut self.checkpoints, &record.entries);
        self.recent_bytes += bytes.len();
        self.recent.push_back(Arc::new(record));
        while self.recent_bytes > self.opts.memory_bytes && self.recent.len() > 1 {
            if let Some(old) = self.recent.pop_front() {
                self.recent_bytes -= segment::encoded_len(&old.entries, old.payload.len());
            }
        }
        Ok(seq)
    }

    /// Makes everything written so far durable and visible to the sender.
    fn sync(&mut self) -> Result<(), BufferError> {
        if self.durable + 1 == self.next_seq {
            return Ok(());
        }
        if self.opts.fsync {
            let path = self.segments.back().map(|s| s.path.clone()).unwrap_or_default();
            self.active.sync_data().map_err(io_err(&path))?;
        }
        self.durable = self.next_seq - 1;
        Ok(())
    }

    fn roll(&mut self) -> Result<(), BufferError> {
        self.sync()?;
        let path = segment_path(&self.dir, self.next_seq);
        self.active = create_segment(&self.dir, &path)?;
        self.segments.push_back(SegmentInfo {
            first_seq: self.next_seq,
            last_seq: self.next_seq - 1,
            bytes: 0,
            path,
        });
        Ok(())
    }

    /// Forgets the sizes of records up to `to` (they were acknowledged or dropped) and
    /// returns how many records and bytes that was.
    fn release_through(&mut self, to: u64) -> (u64, u64) {
        let n = to.saturating_sub(self.acked).min(self.sizes.len() as u64);
        let bytes: u64 = self.sizes.drain(..n as usize).map(u64::from).sum();
        (n, bytes)
    }

    fn delete_acked_segments(&mut self) -> Result<(), BufferError> {
        let deletable = self
            .segments
            .iter()
            .take(self.segments.len().saturating_sub(1))
            .take_while(|s| s.last_seq <= self.acked)
            .count();
        if deletable == 0 {
            return Ok(());
        }
        self.write_snapshot()?;
        for _ in 0..deletable {
            if let Some(s) = self.segments.pop_front() {
                fs::remove_file(&s.path).map_err(io_err(&s.path))?;
            }
        }
        Ok(())
    }

    /// Deletes the oldest segment holding unacknowledged records, counting its loss.
    fn drop_oldest(&mut self) -> Result<(), BufferError> {
        if self.segments.len() == 1 {
            self.roll()?;
        }
        let Some(oldest) = self.segments.front() else {
            return Ok(());
        };
        let last = oldest.last_seq;
        let (records, bytes) = self.release_through(last);
        self.stats.dropped_records += records;
        self.stats.dropped_bytes += bytes;
        self.stats.pending_records = self.stats.pending_records.saturating_sub(records);
        self.stats.pending_bytes = self.stats.pending_bytes.saturating_sub(bytes);
        if last > self.acked {
            self.acked = last;
            write_atomic(&self.dir.join(ACKED_FILE), last.to_string().as_bytes(), false)?;
        }
        tracing::warn!(records, bytes, "disk buffer full: dropped the oldest unsent records");
        self.delete_acked_segments()
    }

    fn write_snapshot(&mut self) -> Result<(), BufferError> {
        let snapshot = Snapshot {
            upto_seq: self.next_seq - 1,
            entries: self
                .checkpoints
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
        };
        let bytes = serde_json::to_vec(&snapshot).unwrap_or_default();
        write_atomic(&self.dir.join(SNAPSHOT_FILE), &bytes, true)
    }

    fn read_after(&mut self, after: u64) -> Result<Option<Arc<Record>>, BufferError> {
        let want = after.max(self.acked) + 1;
        if want > self.durable {
            return Ok(None);
        }
        if let Some(first) = self.recent.front()
            && first.seq <= want
        {
            let idx = (want - first.seq) as usize;
            return Ok(self.recent.get(idx).cloned());
        }
        // Read from disk, sequentially from the cursor when it is in the right place.
        let Some(seg) = self
            .segments
            .iter()
            .find(|s| s.last_seq >= want && s.last_seq >= s.first_seq)
        else {
            return Ok(None);
        };
        let (first_seq, path) = (seg.first_seq, seg.path.clone());
        let reuse = matches!(&self.cursor, Some((f, next, _)) if *f == first_seq && *next <= want);
        if !reuse {
            let file = File::open(&path).map_err(io_err(&path))?;
            self.cursor = Some((first_seq, first_seq, BufReader::new(file)));
        }
        let Some((_, next, reader)) = self.cursor.as_mut() else {
            return Ok(None);
        };
        loop {
            match segment::read_record(reader).map_err(io_err(&path))? {
                Ok(Some((record, _))) => {
                    *next = record.seq + 1;
                    if record.seq >= want {
                        return Ok(Some(Arc::new(record)));
                    }
                }
                Ok(None) | Err(_) => {
                    // The rest of this segment is unreadable (reported at open): skip it.
                    let skip_to = self
                        .segments
                        .iter()
                        .find(|s| s.first_seq > first_seq)
                        .map(|s| s.first_seq);
                    self.cursor = None;
                    return match skip_to {
                        Some(s) if s > want => self.read_after(s - 1),
                        _ => Ok(None),
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
