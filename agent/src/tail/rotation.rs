//! Rotation and truncation: a file that shrank or whose first KiB changed, the copy
//! copytruncate left beside it, and comparing a file with its checkpoint's fingerprint.

use super::*;

impl Tailer {
    /// The file was truncated: read what the copy has past `offset`, then start over.
    pub(super) fn handle_truncation(
        &mut self,
        id: FileId,
        offset: u64,
        fp: u32,
        fp_len: u64,
    ) -> Result<(), BufferError> {
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
}

/// The copy logrotate's copytruncate made: a regular file beside `path`, not the same
/// inode, at least `offset` long, whose first bytes match the fingerprint.
pub(super) fn find_copy(path: &Path, id: FileId, fp: u32, fp_len: u64, offset: u64) -> Option<PathBuf> {
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
    pub(super) fn fp_matches(&self, cp: &Checkpoint) -> FingerprintCheck {
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
