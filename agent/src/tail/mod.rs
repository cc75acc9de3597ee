//! File tailing: discovery by glob, reading, rotation, and checkpoints that survive
//! any kind of stop.
//!
//! * **Identity.** A file is its device and inode, with a CRC of its first KiB to
//!   notice an inode reused by a new file. Two files with the same first KiB are still
//!   two files (the OpenTelemetry filelog receiver skips one of them).
//! * **Exactly once.** Lines become OTLP batches; a batch is appended to the disk
//!   buffer together with the offsets just past its lines, in one fsynced record. On
//!   restart reading resumes at those offsets: lines in the buffer are not read again,
//!   lines not in it are.
//! * **Rotation by rename.** A file whose path now leads elsewhere stays open and is
//!   read to its end, so lines written just before the rename are not lost; the new
//!   file at the path is read from its start. After a restart, a checkpointed file
//!   that was renamed is found again by inode in its directory and drained.
//! * **Copytruncate.** A file that shrank (or whose first KiB changed) was truncated;
//!   the lines between our offset and the truncation are read from the copy (the file
//!   in the same directory whose first KiB matches), then the file is read from 0.

pub mod encode;
pub mod file;
pub mod parse;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use regex::Regex;

use crate::buffer::{BufferError, DiskBuffer, Entry, Kind, NewRecord};
use crate::config::{BatchConfig, LogSource, StartAt};
use crate::otlp::{HostResource, kv, kv_bool, scope};
use crate::telemetry::AgentMetrics;
use file::{Checkpoint, FileId, FingerprintCheck, LineRules, Lines, TailedFile};

const READ_CHUNK: usize = 256 * 1024;
/// Files checked for new data this often when nothing was read.
const IDLE_POLL: Duration = Duration::from_millis(100);
const DISCOVER_EVERY: Duration = Duration::from_millis(500);
/// A rotated-away file with no new data for this long is closed.
const ROTATED_GRACE: Duration = Duration::from_secs(2);

/// A source's compiled settings.
struct Source {
    include: Vec<String>,
    exclude: Vec<glob::Pattern>,
    rules: LineRules,
    parse: crate::config::ParseMode,
    start_at: StartAt,
    /// Marks the source as seen, so `start_at = end` applies only to its first scan.
    marker: String,
    resource: opentelemetry_proto::tonic::resource::v1::Resource,
    batch: Batch,
}

#[derive(Default)]
struct Batch {
    logs: encode::LogBatch,
    started: Option<Instant>,
    /// Checkpoint entries for the files whose lines are in the batch.
    offsets: BTreeMap<String, Checkpoint>,
}

pub struct Tailer {
    sources: Vec<Source>,
    files: HashMap<FileId, (usize, TailedFile)>,
    /// Checkpoints recovered from the buffer, consumed as files are found again.
    checkpoints: BTreeMap<String, Vec<u8>>,
    committer: Committer,
    batch: BatchConfig,
    metrics: Arc<AgentMetrics>,
    warned: HashSet<PathBuf>,
    /// Sources already warned about matching no file (warned again only after they matched).
    empty_warned: HashSet<usize>,
    buf: Vec<u8>,
    last_discover: Option<Instant>,
    scope: opentelemetry_proto::tonic::common::v1::InstrumentationScope,
}

/// Why a glob matches nothing, in words an operator can act on: the directory it looks in
/// (the part before the first wildcard) is missing, unreadable, or holds no matching file.
fn why_nothing_matches(pattern: &str) -> String {
    let wild = pattern.find(['*', '?', '[']).unwrap_or(pattern.len());
    let fixed = &pattern[..wild];
    let dir = match fixed.rfind('/') {
        Some(0) => Path::new("/"),
        Some(i) => Path::new(&fixed[..i]),
        None => Path::new("."),
    };
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("{pattern}: directory {} does not exist", dir.display())
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            format!(
                "{pattern}: directory {} cannot be read (permission denied)",
                dir.display()
            )
        }
        Err(e) => format!("{pattern}: directory {} cannot be read ({e})", dir.display()),
        Ok(_) => format!("{pattern}: no file in {} matches", dir.display()),
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Tailer {
    pub fn new(
        sources: &[LogSource],
        host: &HostResource,
        checkpoints: BTreeMap<String, Vec<u8>>,
        buffer: Arc<DiskBuffer>,
        batch: BatchConfig,
        metrics: Arc<AgentMetrics>,
    ) -> anyhow::Result<Tailer> {
        let mut compiled = Vec::new();
        for (i, s) in sources.iter().enumerate() {
            let mut more: Vec<KeyValue> = s.attributes.iter().map(|(k, v)| kv(k, v.clone())).collect();
            if let Some(name) = &s.service_name {
                more.push(kv("service.name", name.clone()));
            }
            let multiline = match &s.multiline {
                Some(m) => Some((Regex::new(&m.start_pattern)?, Duration::from_millis(m.timeout_ms))),
                None => None,
            };
            compiled.push(Source {
                include: s.include.clone(),
                exclude: s
                    .exclude
                    .iter()
                    .map(|g| glob::Pattern::new(g))
                    .collect::<Result<_, _>>()?,
                rules: LineRules {
                    max_line_bytes: s.max_line_bytes,
                    multiline,
                },
                parse: s.parse,
                start_at: s.start_at,
                marker: format!("source:{i}:{}", s.include.join(",")),
                resource: host.resource(&more),
                batch: Batch::default(),
            });
        }
        Ok(Tailer {
            sources: compiled,
            files: HashMap::new(),
            checkpoints,
            committer: Committer::start(buffer),
            batch,
            metrics,
            warned: HashSet::new(),
            empty_warned: HashSet::new(),
            buf: vec![0u8; READ_CHUNK],
            last_discover: None,
            scope: scope(),
        })
    }

    /// Runs until `stop` is set; then flushes every batch (and held multiline record)
    /// into the buffer, so a graceful stop leaves nothing half-read.
    pub fn run(mut self, stop: &AtomicBool) -> Result<(), BufferError> {
        self.resume_renamed()?;
        while !stop.load(Ordering::Acquire) {
            if self.last_discover.is_none_or(|t| t.elapsed() >= DISCOVER_EVERY) {
                let first = self.last_discover.is_none();
                self.discover()?;
                self.last_discover = Some(Instant::now());
                if first {
                    self.forget_vanished()?;
                }
            }
            let read = self.poll_files()?;
            self.flush_due()?;
            if read == 0 {
                std::thread::park_timeout(IDLE_POLL);
            }
        }
        self.shutdown()
    }

    fn shutdown(mut self) -> Result<(), BufferError> {
        // Held multiline records and unterminated last lines stay unread: their offsets
        // are not checkpointed, so they are read again, complete, after the restart.
        let mut result = Ok(());
        for i in 0..self.sources.len() {
            if let Err(e) = self.flush_source(i) {
                result = Err(e);
                break;
            }
        }
        let finished = self.committer.finish();
        result.and(finished)
    }

    /// Files recorded in checkpoints whose path no longer leads to them were renamed
    /// while the agent was down: find them by inode next to their old path and read
    /// their rest before anything else.
    fn resume_renamed(&mut self) -> Result<(), BufferError> {
        let entries: Vec<(String, Checkpoint)> = self
            .checkpoints
            .iter()
            .filter(|(k, _)| k.starts_with("file:"))
            .filter_map(|(k, v)| Some((k.clone(), serde_json::from_slice(v).ok()?)))
            .collect();
        for (key, cp) in entries {
            let old = PathBuf::from(&cp.path);
            let still_there = std::fs::metadata(&old).is_ok_and(|m| FileId::of(&m).key() == key);
            if still_there {
                continue;
            }
            let Some(source) = self.source_of(&old) else { continue };
            let Some(dir) = old.parent() else { continue };
            let Ok(listing) = std::fs::read_dir(dir) else { continue };
            for entry in listing.flatten() {
                let path = entry.path();
                let Ok(meta) = std::fs::metadata(&path) else { continue };
                let id = FileId::of(&meta);
                if id.key() != key || !meta.is_file() {
                    continue;
                }
                if let Ok(f) = File::open(&path)
                    && let Ok(mut t) = TailedFile::open(&path, f, id, cp.offset)
                    && t.fp_matches(&cp) == FingerprintCheck::Same
                {
                    t.rotated = true;
                    tracing::info!(path = %path.display(), was = %old.display(), offset = cp.offset, "resuming a file renamed while the agent was stopped");
                    self.files.insert(id, (source, t));
                }
            }
        }
        Ok(())
    }

    /// After the first scan every file we may still read is open: checkpoints of the
    /// others (deleted, or rotated out of every glob) are dropped, so the checkpoint
    /// map does not grow with every file ever rotated.
    fn forget_vanished(&mut self) -> Result<(), BufferError> {
        let open: HashSet<String> = self.files.keys().map(FileId::key).collect();
        let vanished: Vec<String> = self
            .checkpoints
            .keys()
            .filter(|k| k.starts_with("file:") && !open.contains(*k))
            .cloned()
            .collect();
        if vanished.is_empty() {
            return Ok(());
        }
        tracing::info!(files = vanished.len(), "forgetting checkpoints of files that are gone");
        for k in &vanished {
            self.checkpoints.remove(k);
        }
        self.committer
            .append(vanished.into_iter().map(|k| (k, Vec::new())).collect(), Payload::Empty)
    }

    fn source_of(&self, path: &Path) -> Option<usize> {
        self.sources.iter().position(|s| {
            s.include
                .iter()
                .any(|g| glob::Pattern::new(g).is_ok_and(|p| p.matches_path(path)))
                && !s.exclude.iter().any(|p| p.matches_path(path))
        })
    }

    fn discover(&mut self) -> Result<(), BufferError> {
        let mut seen: HashMap<PathBuf, FileId> = HashMap::new();
        for si in 0..self.sources.len() {
            let first_scan = !self.checkpoints.contains_key(&self.sources[si].marker);
            let mut found = Vec::new();
            for pattern in self.sources[si].include.clone() {
                let Ok(paths) = glob::glob(&pattern) else { continue };
                for path in paths.flatten() {
                    if self.sources[si].exclude.iter().any(|p| p.matches_path(&path)) || seen.contains_key(&path) {
                        continue;
                    }
                    found.push(path);
                }
            }
            if found.is_empty() {
                if self.empty_warned.insert(si) {
                    let patterns = &self.sources[si].include;
                    let why: Vec<String> = patterns.iter().map(|p| why_nothing_matches(p)).collect();
                    tracing::warn!(
                        patterns = ?patterns,
                        why = %why.join("; "),
                        "a log source matches no file"
                    );
                }
            } else {
                self.empty_warned.remove(&si);
            }
            for path in found {
                let meta = match std::fs::metadata(&path) {
                    Ok(m) if m.is_file() => m,
                    _ => continue,
                };
                let id = FileId::of(&meta);
                seen.insert(path.clone(), id);
                if self.files.contains_key(&id) {
                    continue;
                }
                let file = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) => {
                        if self.warned.insert(path.clone()) {
                            self.metrics.files_unreadable.inc();
                            tracing::warn!(path = %path.display(), error = %e, "cannot read log file; skipping it");
                        }
                        continue;
                    }
                };
                let checkpoint: Option<Checkpoint> = self
                    .checkpoints
                    .get(&id.key())
                    .and_then(|v| serde_json::from_slice(v).ok());
                let Ok(mut tailed) = TailedFile::open(&path, file, id, 0) else {
                    continue;
                };
                let check = checkpoint.as_ref().map(|cp| tailed.fp_matches(cp));
                // Copied and truncated while we were stopped, then written again past the
                // fingerprinted first KiB: the beginning no longer matches, but the copy
                // beside it still does, and holds the lines we had not read.
                let copied_away = matches!(check, Some(FingerprintCheck::Different))
                    && checkpoint
                        .as_ref()
                        .is_some_and(|cp| find_copy(&path, id, cp.fp, cp.fp_len, cp.offset).is_some());
                let offset = match &checkpoint {
                    Some(cp) if check == Some(FingerprintCheck::Same) => cp.offset,
                    Some(cp) if check == Some(FingerprintCheck::Truncated) || copied_away => {
                        // Truncated while we were stopped: its copy has the rest.
                        self.files.insert(id, (si, tailed));
                        self.handle_truncation(id, cp.offset, cp.fp, cp.fp_len)?;
                        continue;
                    }
                    _ if first_scan && self.sources[si].start_at == StartAt::End => meta.len(),
                    _ => 0,
                };
                tailed.read_pos = offset;
                if offset > 0 && checkpoint.is_none() {
                    // Remember "start at end" durably, so a restart does not read the file whole.
                    let entry = (
                        id.key(),
                        serde_json::to_vec(&tailed.checkpoint(offset)).unwrap_or_default(),
                    );
                    self.committer.append(vec![entry], Payload::Empty)?;
                }
                tracing::info!(path = %path.display(), offset, "tailing");
                self.metrics.files_tailed.inc();
                self.files.insert(id, (si, tailed));
            }
            if first_scan {
                self.committer
                    .append(vec![(self.sources[si].marker.clone(), b"1".to_vec())], Payload::Empty)?;
                self.checkpoints.insert(self.sources[si].marker.clone(), b"1".to_vec());
            }
        }
        // Rename rotation: the path leads to another file, or nowhere.
        for (id, (_, t)) in self.files.iter_mut() {
            if !t.rotated && seen.get(&t.path) != Some(id) {
                t.rotated = true;
                tracing::info!(path = %t.path.display(), "file rotated away; reading it to its end");
            }
        }
        self.metrics
            .sources_empty
            .set(i64::try_from(self.empty_warned.len()).unwrap_or(i64::MAX));
        Ok(())
    }

    fn poll_files(&mut self) -> Result<usize, BufferError> {
        let ids: Vec<FileId> = self.files.keys().copied().collect();
        let mut total = 0;
        let mut lines = Lines::default();
        for id in ids {
            let Some((si, t)) = self.files.get_mut(&id) else {
                continue;
            };
            let si = *si;
            if t.binary {
                continue;
            }
            let len = match t.file.metadata() {
                Ok(m) => m.len(),
                Err(_) => continue,
            };
            if !t.rotated && t.was_truncated(len).unwrap_or(false) {
                let (pos, fp, fp_len) = (t.read_pos, t.fp, t.fp_len);
                self.handle_truncation(id, pos, fp, fp_len)?;
                continue;
            }
            let Some((_, t)) = self.files.get_mut(&id) else {
                continue;
            };
            let _ = t.refresh_fingerprint(len);
            let rules = self.sources[si].rules.clone();
            let mut read_here = 0;
            // Bounded per file per round, so one busy file cannot starve the others.
            for _ in 0..16 {
                match t.read(&mut self.buf, &rules, &mut lines) {
                    Ok(0) => break,
                    Ok(n) => read_here += n,
                    Err(e) => {
                        tracing::warn!(path = %t.path.display(), error = %e, "read failed");
                        break;
                    }
                }
                if lines.len() >= self.batch.max_records {
                    break;
                }
            }
            if t.binary {
                self.metrics.files_binary.inc();
                tracing::warn!(path = %t.path.display(), "file looks binary (NUL bytes); skipping it");
            }
            t.flush_pending(&rules, false, &mut lines);
            if read_here > 0 {
                t.idle_since = None;
            } else if t.idle_since.is_none() {
                t.idle_since = Some(Instant::now());
            }
            let done = t.rotated && t.idle_since.is_some_and(|s| s.elapsed() >= ROTATED_GRACE);
            if done {
                t.flush_partial(&rules, &mut lines);
            }
            total += read_here;
            self.push_lines(si, id, &mut lines)?;
            if done {
                tracing::info!(path = %self.files[&id].1.path.display(), "rotated file drained; closing it");
                self.files.remove(&id);
            }
        }
        Ok(total)
    }

    /// The file was truncated: read what the copy has past `offset`, then start over.
    fn handle_truncation(&mut self, id: FileId, offset: u64, fp: u32, fp_len: u64) -> Result<(), BufferError> {
        let Some((si, t)) = self.files.get_mut(&id) else {
            return Ok(());
        };
        let si = *si;
        let rules = self.sources[si].rules.clone();
        let mut lines = Lines::default();
        if let Some(copy) = find_copy(&t.path, id, fp, fp_len, offset) {
            tracing::info!(path = %t.path.display(), copy = %copy.display(), offset, "copytruncate: reading the rest from the copy");
            if let Ok(f) = File::open(&copy) {
                t.read_pos = offset;
                let mut buf = std::mem::take(&mut self.buf);
                let mut pushed = Ok(());
                while pushed.is_ok() {
                    let Some((_, t)) = self.files.get_mut(&id) else { break };
                    match t.read_from(&f, &mut buf, &rules, &mut lines) {
                        Ok(0) | Err(_) => {
                            t.flush_partial(&rules, &mut lines);
                            break;
                        }
                        Ok(_) => {}
                    }
                    if lines.len() >= 4096 {
                        pushed = self.push_lines(si, id, &mut lines);
                    }
                }
                self.buf = buf;
                pushed?;
            }
        } else {
            tracing::warn!(path = %t.path.display(), offset, "file truncated and no copy found; reading it from the start");
        }
        self.push_lines(si, id, &mut lines)?;
        self.flush_source(si)?;
        if let Some((_, t)) = self.files.get_mut(&id) {
            let _ = t.restart();
            // Checkpoint the restart, so a crash now does not take the new content for old.
            let entry = (id.key(), serde_json::to_vec(&t.checkpoint(0)).unwrap_or_default());
            self.committer.append(vec![entry], Payload::Empty)?;
        }
        Ok(())
    }

    fn push_lines(&mut self, si: usize, id: FileId, lines: &mut Lines) -> Result<(), BufferError> {
        if lines.is_empty() {
            return Ok(());
        }
        let Some((_, t)) = self.files.get(&id) else {
            return Ok(());
        };
        let path = t.path.to_string_lossy().into_owned();
        let name = t
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file_attributes = encode::encode_string_attributes(&[("log.file.path", &path), ("log.file.name", &name)]);
        let truncated_attribute = [kv_bool("log.record.truncated", true)];
        let key = id.key();
        let mode = self.sources[si].parse;
        let observed = now_ns();
        let mut last_end = None;
        let mut read = 0;
        for line in lines.iter() {
            // Valid UTF-8 (the common case) is borrowed; anything else is repaired.
            let text = match std::str::from_utf8(line.bytes) {
                Ok(t) => std::borrow::Cow::Borrowed(t),
                Err(_) => String::from_utf8_lossy(line.bytes),
            };
            let parsed = parse::parse(&text, mode);
            let mut extra = parsed.attributes;
            if line.truncated {
                extra.extend_from_slice(&truncated_attribute);
                self.metrics.lines_truncated.inc();
            }
            let (severity_number, severity_text) = parsed.severity.unwrap_or((0, String::new()));
            let batch = &mut self.sources[si].batch;
            batch.logs.push(&encode::Fields {
                time_unix_nano: parsed.time_unix_nano.unwrap_or(observed),
                observed_time_unix_nano: observed,
                severity_number,
                severity_text: &severity_text,
                body: parsed.body.as_deref().unwrap_or(&text),
                encoded_attributes: &file_attributes,
                attributes: &extra,
            });
            batch.started.get_or_insert_with(Instant::now);
            last_end = Some(line.end);
            read += 1;
            if batch.logs.len() >= self.batch.max_records || batch.logs.bytes() >= self.batch.max_bytes {
                // The batch carries the offset just past its last line.
                if let (Some(end), Some((_, t))) = (last_end.take(), self.files.get(&id)) {
                    self.sources[si].batch.offsets.insert(key.clone(), t.checkpoint(end));
                }
                self.flush_source(si)?;
            }
        }
        lines.clear();
        if let (Some(end), Some((_, t))) = (last_end, self.files.get(&id)) {
            self.sources[si].batch.offsets.insert(key, t.checkpoint(end));
        }
        self.metrics.lines_read.inc_by(read);
        Ok(())
    }

    fn flush_due(&mut self) -> Result<(), BufferError> {
        let timeout = Duration::from_millis(self.batch.timeout_ms);
        for si in 0..self.sources.len() {
            if self.sources[si].batch.started.is_some_and(|s| s.elapsed() >= timeout) {
                self.flush_source(si)?;
            }
        }
        Ok(())
    }

    /// Appends the source's batch, with its files' offsets, to the buffer (blocking
    /// while the buffer is full under the block policy).
    fn flush_source(&mut self, si: usize) -> Result<(), BufferError> {
        let source = &mut self.sources[si];
        if source.batch.logs.is_empty() {
            return Ok(());
        }
        let request = source.batch.logs.finish(&source.resource, &self.scope);
        source.batch.started = None;
        let offsets = std::mem::take(&mut source.batch.offsets);
        let entries: Vec<Entry> = offsets
            .iter()
            .map(|(k, cp)| (k.clone(), serde_json::to_vec(cp).unwrap_or_default()))
            .collect();
        self.committer.append(entries, Payload::Logs(request))?;
        self.metrics.batches_buffered.inc();
        Ok(())
    }
}

/// What the committer writes: an encoded OTLP logs request, or only checkpoints.
enum Payload {
    Logs(Vec<u8>),
    Empty,
}

/// Appends the tailer's records to the buffer on a thread of its own, in order, so
/// reading and building the next batch overlap encoding and fsyncing this one. Order
/// is what keeps checkpoints right (a restart-at-0 after a truncation must land after
/// the batch before it), so every append of the tailer goes through here. The channel
/// is short: when the buffer blocks, the committer blocks, and so does the tailer.
struct Committer {
    tx: Option<std::sync::mpsc::SyncSender<(Vec<Entry>, Payload)>>,
    thread: Option<std::thread::JoinHandle<Result<(), BufferError>>>,
}

impl Committer {
    fn start(buffer: Arc<DiskBuffer>) -> Committer {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<Entry>, Payload)>(4);
        let thread = std::thread::Builder::new()
            .name("vigil-commit".into())
            .spawn(move || {
                let to_record = |(entries, payload): (Vec<Entry>, Payload)| match payload {
                    Payload::Logs(request) => NewRecord::compressed(Kind::Logs, entries, &request),
                    Payload::Empty => NewRecord::new(Kind::Logs, entries, Bytes::new()),
                };
                while let Ok(first) = rx.recv() {
                    // Group commit: whatever queued up during the last fsync shares the next.
                    let mut group = vec![to_record(first)];
                    while let Ok(more) = rx.try_recv() {
                        group.push(to_record(more));
                    }
                    buffer.append_many(group)?;
                }
                Ok(())
            })
            .ok();
        Committer { tx: Some(tx), thread }
    }

    fn append(&mut self, entries: Vec<Entry>, payload: Payload) -> Result<(), BufferError> {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send((entries, payload)).is_ok());
        if sent {
            return Ok(());
        }
        // The committer stopped: report why.
        Err(self.finish().err().unwrap_or(BufferError::Closed))
    }

    /// Waits until everything handed over is in the buffer.
    fn finish(&mut self) -> Result<(), BufferError> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t.join().unwrap_or(Err(BufferError::Closed)),
            None => Err(BufferError::Closed),
        }
    }
}

/// The copy logrotate's copytruncate made: a regular file beside `path`, not the same
/// inode, at least `offset` long, whose first bytes match the fingerprint.
fn find_copy(path: &Path, id: FileId, fp: u32, fp_len: u64, offset: u64) -> Option<PathBuf> {
    let dir = path.parent()?;
    let mut best: Option<(SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        let Ok(meta) = std::fs::metadata(&p) else { continue };
        if !meta.is_file() || FileId::of(&meta) == id || meta.len() < offset || meta.len() < fp_len {
            continue;
        }
        let Ok(f) = File::open(&p) else { continue };
        if fp_len > 0 && file::fingerprint(&f, fp_len).ok().flatten() != Some(fp) {
            continue;
        }
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        if best.as_ref().is_none_or(|(m, _)| modified > *m) {
            best = Some((modified, p));
        }
    }
    best.map(|(_, p)| p)
}

impl TailedFile {
    /// Compares the file now with a checkpoint taken of it.
    fn fp_matches(&self, cp: &Checkpoint) -> FingerprintCheck {
        let len = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        match file::fingerprint(&self.file, cp.fp_len) {
            Ok(Some(fp)) if fp == cp.fp && len >= cp.offset => FingerprintCheck::Same,
            Ok(Some(fp)) if fp == cp.fp => FingerprintCheck::Truncated,
            // Shorter than the old fingerprint: truncated (or a new file on the inode;
            // the copy search tells them apart).
            Ok(None) if len < cp.offset => FingerprintCheck::Truncated,
            _ => FingerprintCheck::Different,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::buffer::BufferOptions;
    use crate::config::WhenFull;

    #[test]
    fn checkpoints_of_vanished_files_are_forgotten_and_live_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).expect("mkdir");
        let live = logs.join("live.log");
        std::fs::File::create(&live)
            .and_then(|mut f| f.write_all(b"one\n"))
            .expect("write");
        let live_key = FileId::of(&std::fs::metadata(&live).expect("meta")).key();
        let cp = |path: &Path, offset| {
            serde_json::to_vec(&Checkpoint {
                path: path.display().to_string(),
                offset,
                fp: 0,
                fp_len: 0,
            })
            .expect("json")
        };
        let buffer_dir = dir.path().join("buffer");
        let opts = || BufferOptions::new(1 << 20, WhenFull::Block);
        let (buffer, _) = DiskBuffer::open(&buffer_dir, opts()).expect("open");
        buffer
            .append(
                Kind::Logs,
                vec![
                    ("file:1:999999999".into(), cp(&logs.join("deleted.log"), 10)),
                    (live_key.clone(), cp(&live, 0)),
                ],
                Bytes::new(),
            )
            .expect("append");
        drop(buffer);
        let (buffer, recovered) = DiskBuffer::open(&buffer_dir, opts()).expect("reopen");
        let source: LogSource =
            toml::from_str(&format!("include = [{:?}]", logs.join("*.log").display().to_string())).expect("source");
        let host = HostResource::detect(&Default::default());
        let mut tailer = Tailer::new(
            &[source],
            &host,
            recovered.checkpoints,
            Arc::clone(&buffer),
            BatchConfig::default(),
            Arc::new(AgentMetrics::new()),
        )
        .expect("tailer");
        tailer.discover().expect("discover");
        tailer.forget_vanished().expect("gc");
        tailer.committer.finish().expect("committed");
        drop(tailer);
        drop(buffer);
        let (_, recovered) = DiskBuffer::open(&buffer_dir, opts()).expect("reopen");
        assert!(
            !recovered.checkpoints.contains_key("file:1:999999999"),
            "the deleted file is forgotten"
        );
        assert!(
            recovered.checkpoints.contains_key(&live_key),
            "the live file keeps its offset"
        );
    }
}

#[cfg(test)]
mod quiet_source_tests {
    use super::why_nothing_matches;

    #[test]
    fn an_empty_source_says_what_is_wrong_with_its_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = format!("{}/nope/*.log", dir.path().display());
        assert!(
            why_nothing_matches(&missing).contains("does not exist"),
            "{}",
            why_nothing_matches(&missing)
        );
        let empty = format!("{}/*.log", dir.path().display());
        assert!(
            why_nothing_matches(&empty).contains("no file in"),
            "{}",
            why_nothing_matches(&empty)
        );
        let plain = format!("{}/app.log", dir.path().display());
        assert!(why_nothing_matches(&plain).contains(&dir.path().display().to_string()));
    }
}
