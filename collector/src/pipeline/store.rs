//! Anomalies and feedback on disk.
//!
//! Anomalies are appended, one JSON object per line, to `anomalies.jsonl` as they open,
//! grow and close; the latest line of an id wins on load. The file is rewritten compacted
//! when it holds many superseded lines. Verdicts live in `feedback.json`, rewritten through
//! a temporary file and a rename so a crash leaves the old or the new file, never half.
//! (The embedded transactional store arrives with alerting; this is its small precursor.)

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use vigil_detectors::Anomaly;
use vigil_detectors::{SignalFeedback, Verdict};

/// Anomalies kept (newest by end time); older ones are dropped from memory and disk.
const MAX_ANOMALIES: usize = 20_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct VerdictRecord {
    pub anomaly_id: String,
    pub verdict: Verdict,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FeedbackFile {
    signals: BTreeMap<String, SignalFeedback>,
    verdicts: Vec<VerdictRecord>,
}

struct Inner {
    anomalies: BTreeMap<String, Anomaly>,
    log: File,
    log_lines: usize,
    feedback: FeedbackFile,
}

pub(crate) struct AnomalyStore {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum FeedbackError {
    #[error("no anomaly with id {0:?}")]
    UnknownAnomaly(String),
    #[error("could not save feedback: {0}")]
    Io(#[from] std::io::Error),
}

impl AnomalyStore {
    pub(crate) fn open(dir: &Path) -> std::io::Result<AnomalyStore> {
        std::fs::create_dir_all(dir)?;
        let log_path = dir.join("anomalies.jsonl");
        let mut anomalies = BTreeMap::new();
        let mut log_lines = 0;
        if let Ok(f) = File::open(&log_path) {
            for line in BufReader::new(f).lines() {
                let line = line?;
                log_lines += 1;
                // A torn last line (crash mid-append) is skipped; earlier lines stand.
                match serde_json::from_str::<Anomaly>(&line) {
                    Ok(a) => {
                        anomalies.insert(a.id.clone(), a);
                    }
                    Err(e) => tracing::warn!(error = %e, "skipping unreadable line in anomalies.jsonl"),
                }
            }
        }
        let feedback = match std::fs::read(dir.join("feedback.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("feedback.json: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FeedbackFile::default(),
            Err(e) => return Err(e),
        };
        let log = OpenOptions::new().create(true).append(true).open(&log_path)?;
        Ok(AnomalyStore {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner {
                anomalies,
                log,
                log_lines,
                feedback,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn feedback_state(&self) -> BTreeMap<String, SignalFeedback> {
        self.lock().feedback.signals.clone()
    }

    /// Records new or updated anomalies.
    pub(crate) fn upsert(&self, updates: Vec<Anomaly>) {
        let mut inner = self.lock();
        let mut buf = Vec::new();
        for a in updates {
            if let Ok(line) = serde_json::to_vec(&a) {
                buf.extend_from_slice(&line);
                buf.push(b'\n');
                inner.log_lines += 1;
            }
            inner.anomalies.insert(a.id.clone(), a);
        }
        if let Err(e) = inner.log.write_all(&buf) {
            tracing::error!(error = %e, "could not append to anomalies.jsonl");
        }
        if inner.anomalies.len() > MAX_ANOMALIES {
            let mut by_end: Vec<(i64, String)> = inner.anomalies.values().map(|a| (a.end_ms, a.id.clone())).collect();
            by_end.sort_unstable();
            let excess = inner.anomalies.len() - MAX_ANOMALIES;
            for (_, id) in by_end.into_iter().take(excess) {
                inner.anomalies.remove(&id);
            }
        }
        if inner.log_lines > 4 * inner.anomalies.len().max(1000)
            && let Err(e) = self.compact(&mut inner)
        {
            tracing::error!(error = %e, "could not compact anomalies.jsonl");
        }
    }

    fn compact(&self, inner: &mut Inner) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        for a in inner.anomalies.values() {
            bytes.extend_from_slice(&serde_json::to_vec(a).map_err(std::io::Error::other)?);
            bytes.push(b'\n');
        }
        let path = self.dir.join("anomalies.jsonl");
        crate::files::write_atomically(&path, &bytes)?;
        inner.log = OpenOptions::new().append(true).open(&path)?;
        inner.log_lines = inner.anomalies.len();
        Ok(())
    }

    /// Syncs the append log to disk.
    pub(crate) fn flush(&self) -> std::io::Result<()> {
        let inner = self.lock();
        inner.log.sync_data()
    }

    /// Anomalies overlapping [start_ms, end_ms], optionally of one service, newest first.
    pub(crate) fn query(&self, start_ms: i64, end_ms: i64, service: Option<&str>, limit: usize) -> Vec<Anomaly> {
        let inner = self.lock();
        let mut out: Vec<Anomaly> = inner
            .anomalies
            .values()
            .filter(|a| a.end_ms >= start_ms && a.start_ms <= end_ms)
            .filter(|a| service.is_none_or(|s| a.signal.service.as_deref() == Some(s)))
            .cloned()
            .collect();
        out.sort_by(|a, b| b.start_ms.cmp(&a.start_ms).then_with(|| a.id.cmp(&b.id)));
        out.truncate(limit);
        out
    }

    pub(crate) fn get(&self, id: &str) -> Option<Anomaly> {
        self.lock().anomalies.get(id).cloned()
    }

    /// Records a verdict durably and returns the anomaly's signal key and its counts.
    pub(crate) fn record_feedback(
        &self,
        id: &str,
        verdict: Verdict,
    ) -> Result<(String, SignalFeedback), FeedbackError> {
        let mut inner = self.lock();
        let key = inner
            .anomalies
            .get(id)
            .map(|a| a.signal.key.clone())
            .ok_or_else(|| FeedbackError::UnknownAnomaly(id.to_string()))?;
        let counts = {
            let f = inner.feedback.signals.entry(key.clone()).or_default();
            match verdict {
                Verdict::Noise => f.noise += 1,
                Verdict::Real => f.real += 1,
            }
            f.clone()
        };
        inner.feedback.verdicts.push(VerdictRecord {
            anomaly_id: id.to_string(),
            verdict,
        });
        let bytes = serde_json::to_vec_pretty(&inner.feedback).map_err(std::io::Error::other)?;
        crate::files::write_atomically(&self.dir.join("feedback.json"), &bytes)?;
        Ok((key, counts))
    }
}
