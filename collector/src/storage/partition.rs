//! Time partitions: one tantivy index per signal per UTC day, under
//! `<data_dir>/index/<signal>/<YYYY-MM-DD>/`. Retention deletes whole directories.
//!
//! Each index commit carries, as its payload, the highest WAL sequence number whose
//! documents it contains. Replay after a crash skips records at or below it, so a
//! record is indexed exactly once even when a crash falls between the commits of two
//! partitions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tantivy::directory::MmapDirectory;
use tantivy::schema::Schema;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy};
use time::{Date, OffsetDateTime};

use crate::wal::Signal;

pub(super) const NANOS_PER_DAY: i64 = 86_400_000_000_000;

/// Days since the unix epoch of a unix-ns timestamp.
pub(crate) fn day_of(ts_ns: i64) -> i64 {
    ts_ns.div_euclid(NANOS_PER_DAY)
}

fn day_name(day: i64) -> String {
    OffsetDateTime::from_unix_timestamp(day * 86_400)
        .map(|t| t.date().to_string())
        .unwrap_or_else(|_| format!("day-{day}"))
}

fn parse_day_name(name: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = Date::parse(name, &format).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp().div_euclid(86_400))
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("index error in {path}: {source}")]
    Tantivy {
        path: PathBuf,
        source: tantivy::TantivyError,
    },
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("time-series store: {0}")]
    Samples(#[from] vigil_tsdb::Error),
}

/// One open partition.
pub(crate) struct Partition {
    pub signal: Signal,
    pub day: i64,
    pub dir: PathBuf,
    pub index: Index,
    pub reader: IndexReader,
    /// Highest WAL LSN durably committed in this partition.
    committed_lsn: AtomicU64,
    /// Open only while the partition receives data; owned by the indexer thread.
    pub(crate) writer: Mutex<Option<IndexWriter>>,
}

impl Partition {
    pub(crate) fn committed_lsn(&self) -> u64 {
        self.committed_lsn.load(Ordering::Acquire)
    }

    pub(crate) fn set_committed_lsn(&self, lsn: u64) {
        self.committed_lsn.store(lsn, Ordering::Release);
    }

    fn open(signal: Signal, day: i64, dir: PathBuf, schema: &Schema) -> Result<Partition, StoreError> {
        let tantivy_err = |source| StoreError::Tantivy {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let mmap = MmapDirectory::open(&dir).map_err(|e| tantivy_err(e.into()))?;
        let index = Index::open_or_create(mmap, schema.clone()).map_err(tantivy_err)?;
        let committed = index
            .load_metas()
            .map_err(tantivy_err)?
            .payload
            .as_deref()
            .and_then(parse_payload)
            .unwrap_or(0);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(tantivy_err)?;
        Ok(Partition {
            signal,
            day,
            dir,
            index,
            reader,
            committed_lsn: AtomicU64::new(committed),
            writer: Mutex::new(None),
        })
    }

    /// Bytes on disk.
    pub(crate) fn disk_bytes(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// The commit payload, `{"lsn": N}`.
pub(super) fn payload_for(lsn: u64) -> String {
    serde_json::json!({ "lsn": lsn }).to_string()
}

fn parse_payload(payload: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()?
        .get("lsn")?
        .as_u64()
}

/// The set of open partitions, shared by the indexer (writes) and queries (reads).
pub(crate) struct Partitions {
    root: PathBuf,
    schemas: BTreeMap<&'static str, Schema>,
    open: RwLock<BTreeMap<(u8, i64), Arc<Partition>>>,
}

fn signal_slot(signal: Signal) -> u8 {
    match signal {
        Signal::Logs => 0,
        Signal::Traces => 1,
        Signal::Metrics => 2,
    }
}

fn signal_dir(signal: Signal) -> &'static str {
    match signal {
        Signal::Logs => "logs",
        Signal::Traces => "spans",
        Signal::Metrics => "metrics",
    }
}

impl Partitions {
    /// Opens every partition found under `root`.
    pub(crate) fn open(root: &Path, schemas: [(Signal, Schema); 3]) -> Result<Partitions, StoreError> {
        let partitions = Partitions {
            root: root.to_path_buf(),
            schemas: schemas
                .iter()
                .map(|(s, schema)| (signal_dir(*s), schema.clone()))
                .collect(),
            open: RwLock::new(BTreeMap::new()),
        };
        for (signal, _) in &schemas {
            let dir = root.join(signal_dir(*signal));
            std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
                path: dir.clone(),
                source,
            })?;
            let entries = std::fs::read_dir(&dir).map_err(|source| StoreError::Io {
                path: dir.clone(),
                source,
            })?;
            for entry in entries.filter_map(Result::ok) {
                let Some(day) = entry.file_name().to_str().and_then(parse_day_name) else {
                    continue;
                };
                partitions.get_or_open(*signal, day)?;
            }
        }
        Ok(partitions)
    }

    /// The partition for `signal` and `day`, created on first use.
    pub(crate) fn get_or_open(&self, signal: Signal, day: i64) -> Result<Arc<Partition>, StoreError> {
        let key = (signal_slot(signal), day);
        if let Some(p) = self.read().get(&key) {
            return Ok(Arc::clone(p));
        }
        let mut open = self.write();
        if let Some(p) = open.get(&key) {
            return Ok(Arc::clone(p));
        }
        let dir = self.root.join(signal_dir(signal)).join(day_name(day));
        let schema = &self.schemas[signal_dir(signal)];
        let partition = Arc::new(Partition::open(signal, day, dir, schema)?);
        open.insert(key, Arc::clone(&partition));
        Ok(partition)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<(u8, i64), Arc<Partition>>> {
        self.open.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<(u8, i64), Arc<Partition>>> {
        self.open.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Partitions of `signal` overlapping `[start_ns, end_ns]`, newest first.
    pub(crate) fn covering(&self, signal: Signal, start_ns: i64, end_ns: i64) -> Vec<Arc<Partition>> {
        let slot = signal_slot(signal);
        let (first, last) = (day_of(start_ns), day_of(end_ns));
        let mut found: Vec<Arc<Partition>> = self
            .read()
            .range((slot, first)..=(slot, last))
            .map(|(_, p)| Arc::clone(p))
            .collect();
        found.reverse();
        found
    }

    pub(crate) fn all(&self) -> Vec<Arc<Partition>> {
        self.read().values().cloned().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.read().len()
    }

    /// Highest LSN committed in any partition: the WAL must never hand out a lower one.
    pub(crate) fn max_committed_lsn(&self) -> u64 {
        self.read().values().map(|p| p.committed_lsn()).max().unwrap_or(0)
    }

    /// Removes a partition from the set and deletes its directory.
    pub(crate) fn drop_partition(&self, signal: Signal, day: i64) -> Result<(), StoreError> {
        let removed = self.write().remove(&(signal_slot(signal), day));
        if let Some(p) = removed {
            let writer = p.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(writer) = writer {
                // Merges in flight would keep writing files into the directory.
                let _ = writer.wait_merging_threads();
            }
            std::fs::remove_dir_all(&p.dir).map_err(|source| StoreError::Io {
                path: p.dir.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_names_round_trip() {
        for day in [0, 19_000, 20_415] {
            assert_eq!(parse_day_name(&day_name(day)), Some(day));
        }
        assert_eq!(day_name(20_415), "2025-11-23");
        assert_eq!(parse_day_name("not-a-day"), None);
        assert_eq!(day_of(-1), -1);
    }

    #[test]
    fn payload_round_trips() {
        assert_eq!(parse_payload(&payload_for(42)), Some(42));
        assert_eq!(parse_payload("garbage"), None);
    }
}
