//! Investigations kept on disk: one JSON object per line in `investigations.jsonl`,
//! appended and fsynced before the API answers, the newest `MAX_KEPT` in memory. The file
//! is rewritten (temporary file, fsync, rename) when it holds twice that many lines.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::Investigation;

const MAX_KEPT: usize = 500;

struct Inner {
    kept: VecDeque<Investigation>,
    log: File,
    lines: usize,
}

pub(crate) struct InvestigationStore {
    path: PathBuf,
    inner: Mutex<Inner>,
}

impl InvestigationStore {
    pub(crate) fn open(dir: &Path) -> std::io::Result<InvestigationStore> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("investigations.jsonl");
        let mut kept = VecDeque::new();
        let mut lines = 0;
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines() {
                let line = line?;
                lines += 1;
                // A torn last line (crash mid-append) is skipped; earlier lines stand.
                match serde_json::from_str::<Investigation>(&line) {
                    Ok(i) => {
                        kept.push_back(i);
                        if kept.len() > MAX_KEPT {
                            kept.pop_front();
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "skipping unreadable line in investigations.jsonl"),
                }
            }
        }
        let log = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(InvestigationStore {
            path,
            inner: Mutex::new(Inner { kept, log, lines }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `inv`, durably, before returning.
    pub(crate) fn add(&self, inv: Investigation) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&inv).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut inner = self.lock();
        inner.log.write_all(&line)?;
        inner.log.sync_data()?;
        inner.lines += 1;
        inner.kept.push_back(inv);
        if inner.kept.len() > MAX_KEPT {
            inner.kept.pop_front();
        }
        if inner.lines > 2 * MAX_KEPT {
            self.compact(&mut inner)?;
        }
        Ok(())
    }

    fn compact(&self, inner: &mut Inner) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut f = File::create(&tmp)?;
        for inv in &inner.kept {
            let mut line = serde_json::to_vec(inv).map_err(std::io::Error::other)?;
            line.push(b'\n');
            f.write_all(&line)?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        inner.log = OpenOptions::new().append(true).open(&self.path)?;
        inner.lines = inner.kept.len();
        Ok(())
    }

    /// The newest first, at most `limit`.
    pub(crate) fn list(&self, limit: usize) -> Vec<Investigation> {
        self.lock().kept.iter().rev().take(limit).cloned().collect()
    }

    /// How many kept investigations were started for `incident`.
    pub(crate) fn count_for_incident(&self, incident: &str) -> usize {
        self.lock()
            .kept
            .iter()
            .filter(|i| i.incident.as_deref() == Some(incident))
            .count()
    }

    /// The newest investigation started for `incident`.
    pub(crate) fn for_incident(&self, incident: &str) -> Option<Investigation> {
        self.lock()
            .kept
            .iter()
            .rev()
            .find(|i| i.incident.as_deref() == Some(incident))
            .cloned()
    }

    pub(crate) fn get(&self, id: &str) -> Option<Investigation> {
        self.lock().kept.iter().find(|i| i.id == id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Investigation, RangeMs, ReadCounts};
    use super::*;

    fn inv(id: &str) -> Investigation {
        Investigation {
            id: id.into(),
            created_ms: 1,
            window: RangeMs { start: 10, end: 20 },
            baseline: RangeMs { start: 0, end: 5 },
            baseline_reason: "given".into(),
            lead_in: None,
            services: Vec::new(),
            incident: None,
            candidates: Vec::new(),
            notes: Vec::new(),
            read: ReadCounts::default(),
            took_ms: 0.0,
        }
    }

    #[test]
    fn kept_across_reopen_and_compacted() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = InvestigationStore::open(dir.path()).expect("open");
            for i in 0..(2 * MAX_KEPT + 5) {
                store.add(inv(&format!("i{i}"))).expect("add");
            }
            assert_eq!(store.list(1)[0].id, format!("i{}", 2 * MAX_KEPT + 4));
        }
        // A torn line at the end (a crash mid-append) is skipped.
        let path = dir.path().join("investigations.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).expect("append");
        f.write_all(b"{\"id\":\"torn").expect("write");
        let store = InvestigationStore::open(dir.path()).expect("reopen");
        assert_eq!(store.list(usize::MAX).len(), MAX_KEPT);
        assert!(store.get(&format!("i{}", 2 * MAX_KEPT + 4)).is_some());
        assert!(store.get("i0").is_none(), "the oldest were dropped");
        let lines = std::fs::read_to_string(&path).expect("read").lines().count();
        assert!(lines <= 2 * MAX_KEPT + 1, "compacted: {lines} lines");
    }
}
