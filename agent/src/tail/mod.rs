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
//!
//! One file per job, as Vector's file server splits them: this file reads and batches,
//! `discover.rs` finds the files (globs, renamed files after a restart, vanished ones),
//! `rotation.rs` handles truncation and copies, `commit.rs` appends batches with their
//! checkpoints to the buffer, `file.rs` is one tailed file and its fingerprint, `parse.rs`
//! and `encode.rs` turn lines into OTLP.

mod commit;
mod discover;
pub mod encode;
pub mod file;
pub mod parse;
mod rotation;
#[cfg(test)]
mod tests;

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
use commit::{Committer, Payload};
use file::{Checkpoint, FileId, FingerprintCheck, LineRules, Lines, TailedFile};
use rotation::find_copy;

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
