//! Finding the files to tail: globs expanded, new files opened at their checkpoint or
//! start, renamed files found again by inode after a restart, checkpoints of files that are
//! gone forgotten, and a source that matches nothing explained.

use super::*;

/// Why a glob matches nothing, in words an operator can act on: the directory it looks in
/// (the part before the first wildcard) is missing, unreadable, or holds no matching file.
pub(super) fn why_nothing_matches(pattern: &str) -> String {
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

impl Tailer {
    /// Files recorded in checkpoints whose path no longer leads to them were renamed
    /// while the agent was down: find them by inode next to their old path and read
    /// their rest before anything else.
    pub(super) fn resume_renamed(&mut self) -> Result<(), BufferError> {
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
    pub(super) fn forget_vanished(&mut self) -> Result<(), BufferError> {
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

    pub(super) fn source_of(&self, path: &Path) -> Option<usize> {
        self.sources.iter().position(|s| {
            s.include
                .iter()
                .any(|g| glob::Pattern::new(g).is_ok_and(|p| p.matches_path(path)))
                && !s.exclude.iter().any(|p| p.matches_path(path))
        })
    }

    pub(super) fn discover(&mut self) -> Result<(), BufferError> {
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
}

#[cfg(test)]
mod tests {
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
