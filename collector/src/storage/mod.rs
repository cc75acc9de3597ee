//! Storage: tantivy indexes partitioned by signal and UTC day, fed by the indexer
//! thread from the write-ahead log, read by the query API.

mod collectors;
pub(crate) mod convert;
mod indexer;
mod investigate;
mod metrics_query;
mod partition;
mod schema;
mod search;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vigil_detectors::patterns::{MinerSnapshot, PatternMiner};

pub use convert::{TimedDocs, any_value_to_json, log_docs, metric_docs, series_id, span_docs};
pub use indexer::{Indexer, IndexerOptions};
pub use metrics_query::{Agg, MetricQuery, MetricQueryResult, Selector, SeriesInfo, parse_label_list};
pub use partition::{Partition, Partitions, StoreError, day_of};
pub use schema::{LogFields, MetricFields, Schemas, SpanFields};
pub use search::{HistogramBucket, LogHits, LogQuery, PatternSummary, QueryError, ServiceSummary};

use crate::telemetry::Metrics;
use crate::wal::Signal;

/// The indexes of all signals.
pub struct Store {
    pub schemas: Schemas,
    pub partitions: Partitions,
    pub metrics: Arc<Metrics>,
    /// The log pattern miner: fed by the indexer, read by the patterns API.
    pub patterns: Mutex<PatternMiner>,
    patterns_path: PathBuf,
}

impl Store {
    /// Opens (or creates) the indexes under `dir`.
    pub fn open(dir: &Path, metrics: Arc<Metrics>) -> Result<Store, StoreError> {
        let schemas = Schemas::new();
        let partitions = Partitions::open(
            dir,
            [
                (Signal::Logs, schemas.logs.schema.clone()),
                (Signal::Traces, schemas.spans.schema.clone()),
                (Signal::Metrics, schemas.metrics.schema.clone()),
            ],
        )?;
        metrics.partitions.set(partitions.len() as i64);
        let patterns_path = dir.join("patterns.json");
        let miner = match std::fs::read(&patterns_path) {
            Ok(bytes) => match serde_json::from_slice::<MinerSnapshot>(&bytes) {
                Ok(snapshot) => PatternMiner::restore(snapshot),
                Err(e) => {
                    // Losing pattern ids is bad but recoverable; refusing to start is worse.
                    tracing::error!(path = %patterns_path.display(), error = %e, "unreadable log pattern snapshot; starting a new one");
                    PatternMiner::default()
                }
            },
            Err(_) => PatternMiner::default(),
        };
        Ok(Store {
            schemas,
            partitions,
            metrics,
            patterns: Mutex::new(miner),
            patterns_path,
        })
    }

    pub(crate) fn lock_patterns(&self) -> std::sync::MutexGuard<'_, PatternMiner> {
        self.patterns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the pattern snapshot atomically (temp file, fsync, rename).
    pub(crate) fn save_patterns(&self) -> std::io::Result<()> {
        let snapshot = self.lock_patterns().snapshot();
        let bytes = serde_json::to_vec(&snapshot).map_err(std::io::Error::other)?;
        let tmp = self.patterns_path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.patterns_path)
    }
}
