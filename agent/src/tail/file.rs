//! One tailed file: reading from an offset, cutting lines (with a length cap and
//! multiline joining), and knowing which byte offset is safe to checkpoint.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Bytes hashed to tell a file from a different one that reused its inode.
pub const FINGERPRINT_BYTES: u64 = 1024;

/// Identity of a file on this host: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
    pub fn key(&self) -> String {
        format!("file:{}:{}", self.dev, self.ino)
    }
}

/// What is checkpointed per file, with the data, in the disk buffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub path: String,
    pub offset: u64,
    pub fp: u32,
    pub fp_len: u64,
}

/// CRC of the first `len` bytes, or None if the file is shorter.
pub fn fingerprint(file: &File, len: u64) -> io::Result<Option<u32>> {
    let mut buf = vec![0u8; len as usize];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => return Ok(None),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(crc32fast::hash(&buf)))
}

/// How a file compares with a checkpoint taken of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FingerprintCheck {
    Same,
    /// Same beginning but shorter than the checkpointed offset, or shorter than the
    /// beginning that was fingerprinted.
    Truncated,
    Different,
}

/// `pread` at `pos`, retried when interrupted.
fn read_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    loop {
        match file.read_at(buf, pos) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// A complete line or multiline record, with the file offset just past it.
#[derive(Debug, PartialEq)]
pub struct Line<'a> {
    pub bytes: &'a [u8],
    pub end: u64,
    pub truncated: bool,
}

/// Lines cut from reads, stored back to back in one reused buffer: no allocation per
/// line on the hot path.
#[derive(Debug, Default)]
pub struct Lines {
    data: Vec<u8>,
    /// (start, len, end offset in the file, truncated)
    items: Vec<(usize, usize, u64, bool)>,
}

impl Lines {
    pub fn push(&mut self, bytes: &[u8], end: u64, truncated: bool) {
        self.items.push((self.data.len(), bytes.len(), end, truncated));
        self.data.extend_from_slice(bytes);
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = Line<'_>> {
        self.items.iter().map(|&(start, len, end, truncated)| Line {
            bytes: &self.data[start..start + len],
            end,
            truncated,
        })
    }
    pub fn clear(&mut self) {
        self.data.clear();
        self.items.clear();
    }
}

/// How lines are cut.
#[derive(Debug, Clone)]
pub struct LineRules {
    pub max_line_bytes: usize,
    pub multiline: Option<(Regex, Duration)>,
}

struct Pending {
    bytes: Vec<u8>,
    end: u64,
    truncated: bool,
    since: Instant,
}

pub struct TailedFile {
    pub id: FileId,
    pub path: PathBuf,
    pub file: File,
    /// Bytes consumed from the file: complete lines plus the partial line held.
    pub read_pos: u64,
    pub fp: u32,
    pub fp_len: u64,
    /// The path no longer leads here (renamed away or deleted): drain, then close.
    pub rotated: bool,
    pub idle_since: Option<Instant>,
    /// Binary content: skipped.
    pub binary: bool,
    partial: Vec<u8>,
    partial_truncated: bool,
    /// Inside an over-long line: drop bytes until its newline.
    discarding: bool,
    pending: Option<Pending>,
}

impl TailedFile {
    pub fn open(path: &Path, file: File, id: FileId, offset: u64) -> io::Result<TailedFile> {
        let len = file.metadata()?.len();
        let fp_len = len.min(FINGERPRINT_BYTES);
        let fp = fingerprint(&file, fp_len)?.unwrap_or(0);
        Ok(TailedFile {
            id,
            path: path.to_path_buf(),
            file,
            read_pos: offset,
            fp,
            fp_len,
            rotated: false,
            idle_since: None,
            binary: false,
            partial: Vec::new(),
            partial_truncated: false,
            discarding: false,
            pending: None,
        })
    }

    pub fn checkpoint(&self, offset: u64) -> Checkpoint {
        Checkpoint {
            path: self.path.to_string_lossy().into_owned(),
            offset,
            fp: self.fp,
            fp_len: self.fp_len,
        }
    }

    /// Grows the fingerprint while the file is shorter than the fingerprint length, so
    /// it always covers what identifies the file.
    pub fn refresh_fingerprint(&mut self, len: u64) -> io::Result<()> {
        if self.fp_len < FINGERPRINT_BYTES && len > self.fp_len {
            let want = len.min(FINGERPRINT_BYTES);
            if let Some(fp) = fingerprint(&self.file, want)? {
                self.fp = fp;
                self.fp_len = want;
            }
        }
        Ok(())
    }

    /// Whether the file was truncated (or truncated and rewritten) under us. The first
    /// KiB is compared only when there is something new to read: an idle file costs one
    /// `fstat` per poll, and a rewritten one is caught before any of it is read.
    pub fn was_truncated(&self, len: u64) -> io::Result<bool> {
        if len < self.read_pos {
            return Ok(true);
        }
        if self.fp_len == 0 || len == self.read_pos {
            return Ok(false);
        }
        Ok(fingerprint(&self.file, self.fp_len)? != Some(self.fp))
    }

    /// Starts over at the beginning (after a copytruncate).
    pub fn restart(&mut self) -> io::Result<()> {
        self.read_pos = 0;
        self.partial.clear();
        self.partial_truncated = false;
        self.discarding = false;
        let len = self.file.metadata()?.len();
        self.fp_len = len.min(FINGERPRINT_BYTES);
        self.fp = fingerprint(&self.file, self.fp_len)?.unwrap_or(0);
        Ok(())
    }

    /// Reads up to `buf.len()` bytes of this file at `read_pos`, cutting lines into
    /// `out`. Returns the bytes read (0 at end of file).
    pub fn read(&mut self, buf: &mut [u8], rules: &LineRules, out: &mut Lines) -> io::Result<usize> {
        let n = read_at(&self.file, buf, self.read_pos)?;
        Ok(self.consume(&buf[..n], rules, out))
    }

    /// Like `read`, but from another file holding this one's bytes (a copytruncate copy).
    pub fn read_from(
        &mut self,
        source: &File,
        buf: &mut [u8],
        rules: &LineRules,
        out: &mut Lines,
    ) -> io::Result<usize> {
        let n = read_at(source, buf, self.read_pos)?;
        Ok(self.consume(&buf[..n], rules, out))
    }

    /// Cuts the bytes just read at `read_pos` into lines; returns how many were consumed.
    fn consume(&mut self, chunk: &[u8], rules: &LineRules, out: &mut Lines) -> usize {
        let n = chunk.len();
        if n == 0 {
            return 0;
        }
        if self.read_pos == 0 && chunk[..chunk.len().min(1024)].contains(&0) {
            self.binary = true;
            return 0;
        }
        let max = rules.max_line_bytes;
        let mut start = 0;
        for i in memchr::memchr_iter(b'\n', chunk) {
            let piece = &chunk[start..i];
            let end = self.read_pos + (i + 1) as u64;
            if self.partial.is_empty() && !self.discarding {
                // The whole line is in this chunk: no copy until it lands in `out`.
                let (mut line, truncated) = if piece.len() > max {
                    (&piece[..max], true)
                } else {
                    (piece, false)
                };
                if !truncated && line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                self.emit(line, end, truncated, rules, out);
            } else {
                self.append_partial(piece, max);
                let mut bytes = std::mem::take(&mut self.partial);
                if bytes.last() == Some(&b'\r') && !self.partial_truncated {
                    bytes.pop();
                }
                let truncated = std::mem::take(&mut self.partial_truncated);
                self.discarding = false;
                self.emit(&bytes, end, truncated, rules, out);
                bytes.clear();
                self.partial = bytes;
            }
            start = i + 1;
        }
        if start < chunk.len() {
            self.append_partial(&chunk[start..], max);
        }
        self.read_pos += n as u64;
        n
    }

    fn append_partial(&mut self, piece: &[u8], max: usize) {
        if self.discarding {
            return;
        }
        let room = max.saturating_sub(self.partial.len());
        if piece.len() > room {
            self.partial.extend_from_slice(&piece[..room]);
            self.partial_truncated = true;
            self.discarding = true;
        } else {
            self.partial.extend_from_slice(piece);
        }
    }

    fn emit(&mut self, bytes: &[u8], end: u64, truncated: bool, rules: &LineRules, out: &mut Lines) {
        let Some((start, _)) = &rules.multiline else {
            out.push(bytes, end, truncated);
            return;
        };
        let starts = start.is_match(&String::from_utf8_lossy(bytes));
        match self.pending.as_mut() {
            Some(p) if !starts => {
                let room = rules.max_line_bytes.saturating_sub(p.bytes.len() + 1);
                if bytes.len() > room {
                    p.truncated = true;
                }
                if room > 0 {
                    p.bytes.push(b'\n');
                    p.bytes.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
                p.truncated |= truncated;
                p.end = end;
            }
            _ => {
                if let Some(done) = self.pending.take() {
                    out.push(&done.bytes, done.end, done.truncated);
                }
                self.pending = Some(Pending {
                    bytes: bytes.to_vec(),
                    end,
                    truncated,
                    since: Instant::now(),
                });
            }
        }
    }

    /// Emits a multiline record that has waited its timeout (or any, when `force`).
    pub fn flush_pending(&mut self, rules: &LineRules, force: bool, out: &mut Lines) {
        let timeout = rules.multiline.as_ref().map_or(Duration::ZERO, |(_, t)| *t);
        if let Some(p) = &self.pending
            && (force || p.since.elapsed() >= timeout)
            && let Some(done) = self.pending.take()
        {
            out.push(&done.bytes, done.end, done.truncated);
        }
    }

    /// At the end of a file that will not grow again: the last line had no newline.
    pub fn flush_partial(&mut self, rules: &LineRules, out: &mut Lines) {
        if !self.partial.is_empty() {
            let bytes = std::mem::take(&mut self.partial);
            let truncated = std::mem::take(&mut self.partial_truncated);
            self.discarding = false;
            let end = self.read_pos;
            self.emit(&bytes, end, truncated, rules, out);
        }
        self.flush_pending(rules, true, out);
    }

    /// Whether a multiline record is being held.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn tailed(content: &[u8]) -> (tempfile::NamedTempFile, TailedFile) {
        let mut f = tempfile::NamedTempFile::new().expect("temp");
        f.write_all(content).expect("write");
        let file = File::open(f.path()).expect("open");
        let id = FileId::of(&file.metadata().expect("meta"));
        let t = TailedFile::open(f.path(), file, id, 0).expect("tail");
        (f, t)
    }

    fn read_all(t: &mut TailedFile, rules: &LineRules, chunk: usize) -> Lines {
        let mut out = Lines::default();
        let mut buf = vec![0u8; chunk];
        while t.read(&mut buf, rules, &mut out).expect("read") > 0 {}
        out
    }

    fn text(lines: &Lines) -> Vec<String> {
        lines
            .iter()
            .map(|l| String::from_utf8_lossy(l.bytes).into_owned())
            .collect()
    }
    fn ends(lines: &Lines) -> Vec<u64> {
        lines.iter().map(|l| l.end).collect()
    }
    fn flags(lines: &Lines) -> Vec<(usize, bool)> {
        lines.iter().map(|l| (l.bytes.len(), l.truncated)).collect()
    }

    #[test]
    fn lines_split_across_reads_come_out_whole_with_their_end_offsets() {
        let (_f, mut t) = tailed(b"alpha\r\nbeta\ngam");
        let rules = LineRules {
            max_line_bytes: 100,
            multiline: None,
        };
        let lines = read_all(&mut t, &rules, 3);
        assert_eq!(text(&lines), ["alpha", "beta"]);
        assert_eq!(ends(&lines), [7, 12]);
        assert_eq!(t.read_pos, 15, "the partial line is consumed but not emitted");
        let mut out = Lines::default();
        t.flush_partial(&rules, &mut out);
        assert_eq!(text(&out), ["gam"]);
    }

    #[test]
    fn overlong_lines_are_cut_and_marked_and_the_rest_dropped() {
        let mut content = vec![b'x'; 10_000];
        content.extend_from_slice(b"\nnext\n");
        let (_f, mut t) = tailed(&content);
        let rules = LineRules {
            max_line_bytes: 64,
            multiline: None,
        };
        let lines = read_all(&mut t, &rules, 1000);
        assert_eq!(flags(&lines), [(64, true), (4, false)]);
        assert_eq!(text(&lines)[1], "next");
    }

    #[test]
    fn multiline_records_join_until_the_next_start_and_hold_their_offset() {
        let (_f, mut t) = tailed(b"2026 ERROR boom\n  at a()\n  at b()\n2026 INFO ok\n  more");
        let rules = LineRules {
            max_line_bytes: 1000,
            multiline: Some((Regex::new(r"^\d{4} ").expect("re"), Duration::from_secs(3600))),
        };
        let lines = read_all(&mut t, &rules, 7);
        assert_eq!(text(&lines), ["2026 ERROR boom\n  at a()\n  at b()"]);
        assert_eq!(ends(&lines), [34]);
        assert!(t.has_pending(), "the second record waits for its end");
        let mut out = Lines::default();
        t.flush_partial(&rules, &mut out);
        assert_eq!(text(&out), ["2026 INFO ok\n  more"]);
    }

    #[test]
    fn binary_files_are_recognised() {
        let (_f, mut t) = tailed(b"\x7fELF\x00\x00\x01binary");
        let rules = LineRules {
            max_line_bytes: 100,
            multiline: None,
        };
        assert!(read_all(&mut t, &rules, 100).is_empty());
        assert!(t.binary);
    }
}
