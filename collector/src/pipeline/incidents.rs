//! Incidents on disk: appended to `incidents.jsonl` as they open, grow and resolve; the
//! latest line of an id wins on load (same scheme as the anomaly store).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use vigil_rca::{Incident, IncidentStatus};

/// Incidents kept in memory (newest by last activity).
const MAX_INCIDENTS: usize = 5_000;

struct Inner {
    incidents: BTreeMap<String, Incident>,
    log: File,
}

pub(crate) struct IncidentStore {
    inner: Mutex<Inner>,
    path: std::path::PathBuf,
}

impl IncidentStore {
    pub(crate) fn open(dir: &Path) -> std::io::Result<IncidentStore> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("incidents.jsonl");
        let mut incidents = BTreeMap::new();
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines() {
                match serde_json::from_str::<Incident>(&line?) {
                    Ok(i) => {
                        incidents.insert(i.id.clone(), i);
                    }
                    Err(e) => tracing::warn!(error = %e, "skipping unreadable line in incidents.jsonl"),
                }
            }
        }
        let log = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(IncidentStore {
            inner: Mutex::new(Inner { incidents, log }),
            path,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn all(&self) -> Vec<Incident> {
        self.lock().incidents.values().cloned().collect()
    }

    pub(crate) fn upsert(&self, updates: &[Incident]) {
        let mut inner = self.lock();
        let mut buf = Vec::new();
        for i in updates {
            if let Ok(line) = serde_json::to_vec(i) {
                buf.extend_from_slice(&line);
                buf.push(b'\n');
            }
            inner.incidents.insert(i.id.clone(), i.clone());
        }
        if let Err(e) = inner.log.write_all(&buf) {
            tracing::error!(error = %e, "could not append to incidents.jsonl");
        }
        if inner.incidents.len() > MAX_INCIDENTS {
            let mut by_end: Vec<(i64, String)> = inner.incidents.values().map(|i| (i.end_ms, i.id.clone())).collect();
            by_end.sort_unstable();
            let excess = inner.incidents.len() - MAX_INCIDENTS;
            for (_, id) in by_end.into_iter().take(excess) {
                inner.incidents.remove(&id);
            }
        }
    }

    /// Replaces every incident with `incidents` (a standby correlator installing the active
    /// one's snapshot): the file is rewritten whole, atomically.
    pub(crate) fn replace_all(&self, incidents: &[Incident]) -> std::io::Result<()> {
        let mut inner = self.lock();
        let path = self.path.clone();
        let mut buf = Vec::new();
        for i in incidents {
            buf.extend_from_slice(&serde_json::to_vec(i).map_err(std::io::Error::other)?);
            buf.push(b'\n');
        }
        crate::files::write_atomically(&path, &buf)?;
        inner.log = OpenOptions::new().append(true).open(&path)?;
        inner.incidents = incidents.iter().map(|i| (i.id.clone(), i.clone())).collect();
        Ok(())
    }

    pub(crate) fn flush(&self) -> std::io::Result<()> {
        self.lock().log.sync_data()
    }

    pub(crate) fn get(&self, id: &str) -> Option<Incident> {
        self.lock().incidents.get(id).cloned()
    }

    /// Incidents overlapping [start_ms, end_ms], optionally of one status, newest first.
    pub(crate) fn query(
        &self,
        start_ms: i64,
        end_ms: i64,
        status: Option<IncidentStatus>,
        limit: usize,
    ) -> Vec<Incident> {
        let mut out: Vec<Incident> = self
            .lock()
            .incidents
            .values()
            .filter(|i| i.end_ms >= start_ms && i.start_ms <= end_ms)
            .filter(|i| status.is_none_or(|s| i.status == s))
            .cloned()
            .collect();
        out.sort_by(|a, b| b.start_ms.cmp(&a.start_ms).then_with(|| a.id.cmp(&b.id)));
        out.truncate(limit);
        out
    }
}
