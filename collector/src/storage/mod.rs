//! Storage: tantivy indexes partitioned by signal and UTC day, and the time-series store
//! (`vigil-tsdb`) for gauge and sum samples, fed by the indexer thread from the write-ahead
//! log, read by the query API.

mod collectors;
pub(crate) mod convert;
mod indexer;
mod investigate;
mod metrics_query;
mod partition;
mod prom;
mod prom_select;
mod samples;
mod schema;
mod search;

use std::path::Path;
use std::sync::Arc;

pub use convert::log_docs;
pub(crate) use convert::{TimedDocs, metric_docs, series_id, span_docs};
pub(crate) use indexer::{Indexer, IndexerOptions};
pub(crate) use metrics_query::{Agg, MetricQuery, Selector, parse_label_list};
pub(crate) use partition::{Partitions, StoreError};
pub(crate) use prom::PromView;
pub(crate) use samples::{MetricSample, point_labels};
pub use schema::LogFields;
pub(crate) use schema::Schemas;
pub(crate) use search::{LogQuery, QueryError};

use crate::telemetry::Metrics;
use crate::wal::Signal;

/// The indexes of all signals.
pub(crate) struct Store {
    pub schemas: Schemas,
    pub partitions: Partitions,
    /// Gauge and sum samples, under `<dir>/tsdb/<day number>/`.
    pub tsdb: vigil_tsdb::Tsdb,
    pub metrics: Arc<Metrics>,
}

impl Store {
    /// Opens (or creates) the indexes under `dir`.
    pub(crate) fn open(dir: &Path, metrics: Arc<Metrics>) -> Result<Store, StoreError> {
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
        let tsdb = vigil_tsdb::Tsdb::open(&dir.join("tsdb"))?;
        let cut = tsdb.recovered_cut_bytes();
        if cut > 0 {
            tracing::warn!(
                bytes = cut,
                "cut torn records off the time-series store's files (a crash); the WAL replay restores them"
            );
        }
        Ok(Store {
            schemas,
            partitions,
            tsdb,
            metrics,
        })
    }
}
