//! Storage: tantivy indexes partitioned by signal and UTC day, fed by the indexer
//! thread from the write-ahead log, read by the query API.

mod collectors;
mod convert;
mod indexer;
mod metrics_query;
mod partition;
mod schema;
mod search;

use std::path::Path;
use std::sync::Arc;

pub use convert::{TimedDocs, any_value_to_json, log_docs, metric_docs, series_id, span_docs};
pub use indexer::{Indexer, IndexerOptions};
pub use metrics_query::{Agg, MetricQuery, MetricQueryResult, Selector, SeriesInfo, parse_label_list};
pub use partition::{Partition, Partitions, StoreError, day_of};
pub use schema::{LogFields, MetricFields, Schemas, SpanFields};
pub use search::{HistogramBucket, LogHits, LogQuery, QueryError, ServiceSummary};

use crate::ingest::Signal;
use crate::telemetry::Metrics;

/// The indexes of all signals.
pub struct Store {
    pub schemas: Schemas,
    pub partitions: Partitions,
    pub metrics: Arc<Metrics>,
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
        Ok(Store {
            schemas,
            partitions,
            metrics,
        })
    }
}
