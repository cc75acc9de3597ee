//! The collector observes itself: counters and histograms exposed at `/metrics` in the
//! Prometheus text format, and structured logs through `tracing`.
//!
//! Label values are always from small fixed sets (signal, transport, reason), never
//! from user data, so the self-metrics cannot explode in cardinality.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SignalLabel {
    pub signal: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RejectLabel {
    pub signal: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabel {
    pub transport: &'static str,
    pub signal: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EndpointLabel {
    pub endpoint: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// All self-metrics of the collector.
pub(crate) struct Metrics {
    registry: Mutex<Registry>,
    pub records_received: Family<SignalLabel, Counter>,
    pub records_accepted: Family<SignalLabel, Counter>,
    pub records_rejected: Family<RejectLabel, Counter>,
    pub values_truncated: Family<KindLabel, Counter>,
    pub requests: Family<RequestLabel, Counter>,
    pub duplicate_batches: Counter,
    pub wal_appends: Counter,
    pub wal_fsyncs: Counter,
    pub wal_bytes: Gauge,
    pub docs_indexed: Family<SignalLabel, Counter>,
    pub index_commit_seconds: Histogram,
    pub index_commit_errors: Counter,
    pub indexed_lsn: Gauge,
    pub partitions: Gauge,
    pub partitions_dropped: Family<KindLabel, Counter>,
    pub tsdb_series: Gauge,
    pub tsdb_chunks: Gauge,
    pub tsdb_head_samples: Gauge,
    pub tsdb_days_downsampled: Counter,
    pub query_seconds: Family<EndpointLabel, Histogram, fn() -> Histogram>,
    pub detect_series: Gauge,
    pub detect_points: Counter,
    pub detect_points_rejected: Counter,
    pub detect_late_events: Counter,
    pub detect_intervals_graced: Counter,
    /// Event time the detectors have reached (unix seconds): what their intervals close on.
    pub detect_event_time: Gauge,
    /// Event time up to which every kind of signal is final (unix seconds).
    pub detect_settled_time: Gauge,
    /// The last write-ahead log entry the detectors have applied.
    pub detect_applied_lsn: Gauge,
    pub detect_series_evicted: Counter,
    /// Incidents whose first minutes have settled and that are not investigated yet.
    pub investigations_due: Gauge,
    /// The settled event time the incident investigations last finished a pass at (unix
    /// seconds).
    pub investigations_settled_time: Gauge,
    pub anomaly_updates: Family<DetectorLabel, Counter>,
    /// Messages the stream acknowledged to this ingest node (cluster roles).
    pub stream_published: Counter,
    /// Of those, ones the stream already held (a retry within its duplicate window).
    pub stream_duplicates: Counter,
    /// Stream messages a worker made durable in its local write-ahead log.
    pub stream_consumed: Counter,
    /// Stream partitions this worker holds a lease on.
    pub stream_partitions_owned: Gauge,
    /// Leases this worker lost or gave up.
    pub stream_leases_lost: Counter,
    /// Partition consumers started again from their checkpoint after an error or a stall.
    pub stream_consumer_restarts: Counter,
    /// Findings messages this worker published for the cluster's correlator.
    pub findings_published: Counter,
    /// Findings messages this correlator read from the workers.
    pub findings_consumed: Counter,
    /// Spans of a partition's rebuilt history this worker kept from the correlator (the
    /// partition's last owner sent them when they were live).
    pub findings_history_spans: Counter,
    /// 1 while this process is the cluster's active correlator.
    pub rca_leader: Gauge,
    /// Snapshots of the correlator's replicated state this process wrote.
    pub rca_snapshots: Counter,
    /// Snapshots of the correlator's replicated state this process installed.
    pub rca_snapshot_installs: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DetectorLabel {
    pub detector: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("vigil")),
            records_received: Family::default(),
            records_accepted: Family::default(),
            records_rejected: Family::default(),
            values_truncated: Family::default(),
            requests: Family::default(),
            duplicate_batches: Counter::default(),
            wal_appends: Counter::default(),
            wal_fsyncs: Counter::default(),
            wal_bytes: Gauge::default(),
            docs_indexed: Family::default(),
            index_commit_seconds: latency_histogram(),
            index_commit_errors: Counter::default(),
            indexed_lsn: Gauge::default(),
            partitions: Gauge::default(),
            partitions_dropped: Family::default(),
            tsdb_series: Gauge::default(),
            tsdb_chunks: Gauge::default(),
            tsdb_head_samples: Gauge::default(),
            tsdb_days_downsampled: Counter::default(),
            query_seconds: Family::new_with_constructor(latency_histogram),
            detect_series: Gauge::default(),
            detect_points: Counter::default(),
            detect_points_rejected: Counter::default(),
            detect_late_events: Counter::default(),
            detect_intervals_graced: Counter::default(),
            detect_settled_time: Gauge::default(),
            detect_applied_lsn: Gauge::default(),
            detect_event_time: Gauge::default(),
            detect_series_evicted: Counter::default(),
            investigations_due: Gauge::default(),
            investigations_settled_time: Gauge::default(),
            anomaly_updates: Family::default(),
            stream_published: Counter::default(),
            stream_duplicates: Counter::default(),
            stream_consumed: Counter::default(),
            stream_partitions_owned: Gauge::default(),
            stream_leases_lost: Counter::default(),
            stream_consumer_restarts: Counter::default(),
            findings_published: Counter::default(),
            findings_consumed: Counter::default(),
            findings_history_spans: Counter::default(),
            rca_leader: Gauge::default(),
            rca_snapshots: Counter::default(),
            rca_snapshot_installs: Counter::default(),
        };
        if let Ok(mut r) = m.registry.lock() {
            r.register(
                "ingest_records_received",
                "Records (log records, spans, metric data points) received over OTLP",
                m.records_received.clone(),
            );
            r.register(
                "ingest_records_accepted",
                "Records acknowledged after being made durable in the write-ahead log",
                m.records_accepted.clone(),
            );
            r.register(
                "ingest_records_rejected",
                "Records refused, by reason (reported to the client as partial success or an error)",
                m.records_rejected.clone(),
            );
            r.register(
                "ingest_values_truncated",
                "Attribute values, bodies and attribute lists cut to the configured limits",
                m.values_truncated.clone(),
            );
            r.register(
                "ingest_requests",
                "OTLP export requests by transport, signal and outcome",
                m.requests.clone(),
            );
            r.register(
                "ingest_duplicate_batches",
                "Batches whose x-vigil-batch-id was already stored and were not stored again",
                m.duplicate_batches.clone(),
            );
            r.register(
                "stream_published",
                "Messages the JetStream stream acknowledged to this ingest node",
                m.stream_published.clone(),
            );
            r.register(
                "stream_duplicates",
                "Published messages the stream already held (retries inside its duplicate window)",
                m.stream_duplicates.clone(),
            );
            r.register(
                "stream_consumed",
                "Stream messages this worker made durable in its local write-ahead log",
                m.stream_consumed.clone(),
            );
            r.register(
                "stream_partitions_owned",
                "Stream partitions this worker holds a lease on",
                m.stream_partitions_owned.clone(),
            );
            r.register(
                "stream_leases_lost",
                "Partition leases this worker lost or released",
                m.stream_leases_lost.clone(),
            );
            r.register(
                "stream_consumer_restarts",
                "Partition consumers started again from their checkpoint after an error or a stall",
                m.stream_consumer_restarts.clone(),
            );
            r.register(
                "findings_published",
                "Findings messages this worker published for the cluster's correlator",
                m.findings_published.clone(),
            );
            r.register(
                "findings_consumed",
                "Findings messages this correlator read from the workers",
                m.findings_consumed.clone(),
            );
            r.register(
                "findings_history_spans",
                "Spans of a partition's rebuilt history this worker kept from the correlator (its last owner sent them)",
                m.findings_history_spans.clone(),
            );
            r.register(
                "rca_leader",
                "1 while this process is the cluster's active correlator",
                m.rca_leader.clone(),
            );
            r.register(
                "rca_snapshots",
                "Snapshots of the correlator's replicated state this process wrote",
                m.rca_snapshots.clone(),
            );
            r.register(
                "rca_snapshot_installs",
                "Snapshots of the correlator's replicated state this process installed",
                m.rca_snapshot_installs.clone(),
            );
            r.register(
                "wal_appends",
                "Records appended to the write-ahead log",
                m.wal_appends.clone(),
            );
            r.register(
                "wal_fsyncs",
                "fdatasync calls on the write-ahead log (one per commit group)",
                m.wal_fsyncs.clone(),
            );
            r.register(
                "wal_bytes",
                "Bytes held in write-ahead log segments",
                m.wal_bytes.clone(),
            );
            r.register("index_docs", "Documents added to the indexes", m.docs_indexed.clone());
            r.register(
                "index_commit_seconds",
                "Latency of one index commit cycle (all dirty partitions)",
                m.index_commit_seconds.clone(),
            );
            r.register(
                "index_commit_errors",
                "Failed index commits",
                m.index_commit_errors.clone(),
            );
            r.register(
                "index_checkpoint_lsn",
                "Highest write-ahead log sequence number committed to the indexes",
                m.indexed_lsn.clone(),
            );
            r.register(
                "index_partitions",
                "Open time partitions over all signals",
                m.partitions.clone(),
            );
            r.register(
                "retention_partitions_dropped",
                "Partitions deleted by retention, by cause (age, disk)",
                m.partitions_dropped.clone(),
            );
            r.register(
                "tsdb_days_downsampled",
                "Days of metric samples rewritten at a coarser step ([[storage.downsampling]])",
                m.tsdb_days_downsampled.clone(),
            );
            r.register(
                "tsdb_series",
                "Series in the time-series store (gauges and sums), summed over its day blocks",
                m.tsdb_series.clone(),
            );
            r.register(
                "tsdb_chunks",
                "Sealed compressed chunks in the time-series store",
                m.tsdb_chunks.clone(),
            );
            r.register(
                "tsdb_head_samples",
                "Samples in the time-series store's open heads (in memory and in their snapshots)",
                m.tsdb_head_samples.clone(),
            );
            r.register(
                "query_seconds",
                "Query API latency by endpoint",
                m.query_seconds.clone(),
            );
            r.register(
                "detect_series",
                "Series tracked by the detectors",
                m.detect_series.clone(),
            );
            r.register(
                "detect_points",
                "Points scored by the detectors",
                m.detect_points.clone(),
            );
            r.register(
                "detect_points_rejected",
                "Points the detectors refused (NaN/inf, late or duplicate timestamps)",
                m.detect_points_rejected.clone(),
            );
            r.register(
                "detect_late_events",
                "Log records and spans that arrived after their interval was closed",
                m.detect_late_events.clone(),
            );
            r.register(
                "detect_intervals_graced",
                "Intervals of logs or spans left unscored as holding part of a minute: a kind of signal's first minute back after a silence longer than detect.allowed_lateness, or the one in which it stopped",
                m.detect_intervals_graced.clone(),
            );
            r.register(
                "detect_settled_time_seconds",
                "Event time up to which every kind of signal is final (unix seconds): the slowest kind's event time minus detect.allowed_lateness; incidents are investigated once it passes their window",
                m.detect_settled_time.clone(),
            );
            r.register(
                "detect_applied_lsn",
                "The last write-ahead log entry the detectors have applied",
                m.detect_applied_lsn.clone(),
            );
            r.register(
                "investigations_due",
                "Incidents whose first minutes have settled and that are not investigated yet (waiting for the indexes, or queued)",
                m.investigations_due.clone(),
            );
            r.register(
                "investigations_settled_time_seconds",
                "The settled event time (unix seconds) at which the incident investigations last finished a pass: with investigations_due at 0, every incident whose window ended by then is investigated (or failed, with a warning)",
                m.investigations_settled_time.clone(),
            );
            r.register(
                "detect_event_time_seconds",
                "Event time the detectors have reached (unix seconds); intervals close once it passes their end plus detect.allowed_lateness",
                m.detect_event_time.clone(),
            );
            r.register(
                "detect_series_evicted",
                "Series dropped at the tracked-series cap (least recently seen first)",
                m.detect_series_evicted.clone(),
            );
            r.register(
                "anomaly_updates",
                "Anomalies opened, extended or closed, by detector",
                m.anomaly_updates.clone(),
            );
        }
        m
    }
}

impl Metrics {
    /// Renders every metric in the Prometheus text exposition format.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            // Writing into a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}
