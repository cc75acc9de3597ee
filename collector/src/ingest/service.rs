//! The transport-independent ingest path.

use std::sync::Arc;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio::sync::Semaphore;

use super::IngestError;
use super::sanitize::{self, Limits, Report};
use crate::auth::TokenCheck;
use crate::config::OtlpConfig;
use crate::telemetry::{KindLabel, Metrics, RejectLabel, RequestLabel, SignalLabel};
use crate::wal::{BatchDedup, Claim};
use crate::wal::{Signal, WalBatch};
use crate::wal::{WalAppender, WalError};

/// A decoded OTLP export request of any signal.
#[derive(Debug, Clone)]
pub(crate) enum ExportRequest {
    Logs(ExportLogsServiceRequest),
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
}

impl ExportRequest {
    pub(crate) fn signal(&self) -> Signal {
        match self {
            ExportRequest::Logs(_) => Signal::Logs,
            ExportRequest::Traces(_) => Signal::Traces,
            ExportRequest::Metrics(_) => Signal::Metrics,
        }
    }

    fn sanitize(&mut self, limits: &Limits) -> Report {
        match self {
            ExportRequest::Logs(r) => sanitize::sanitize_logs(r, limits),
            ExportRequest::Traces(r) => sanitize::sanitize_traces(r, limits),
            ExportRequest::Metrics(r) => sanitize::sanitize_metrics(r, limits),
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            ExportRequest::Logs(r) => r.encode_to_vec(),
            ExportRequest::Traces(r) => r.encode_to_vec(),
            ExportRequest::Metrics(r) => r.encode_to_vec(),
        }
    }

    /// One encoded request per stream partition (by `service.name`).
    fn encode_by_partition(self, partitions: u32) -> Vec<(u32, Vec<u8>)> {
        use crate::cluster::{split_logs, split_metrics, split_traces};
        match self {
            ExportRequest::Logs(r) => split_logs(r, partitions)
                .into_iter()
                .map(|(p, r)| (p, r.encode_to_vec()))
                .collect(),
            ExportRequest::Traces(r) => split_traces(r, partitions)
                .into_iter()
                .map(|(p, r)| (p, r.encode_to_vec()))
                .collect(),
            ExportRequest::Metrics(r) => split_metrics(r, partitions)
                .into_iter()
                .map(|(p, r)| (p, r.encode_to_vec()))
                .collect(),
        }
    }
}

/// Where an accepted batch is made durable before it is acknowledged.
#[derive(Clone)]
pub(crate) enum Durability {
    /// This process's write-ahead log (one process).
    Wal(WalAppender),
    /// The cluster's replicated JetStream stream, one message per partition.
    Stream(Arc<crate::cluster::StreamPublisher>),
}

/// A sanitized batch, encoded for its [`Durability`].
enum Encoded {
    Whole(Vec<u8>),
    Parts(Vec<(u32, Vec<u8>)>),
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Transport {
    Grpc,
    Http,
    /// Prometheus remote write (over HTTP).
    RemoteWrite,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
            Transport::RemoteWrite => "prometheus_remote_write",
        }
    }
}

/// What the client is told on success: the OTLP partial-success fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Accepted {
    pub rejected: u64,
    pub message: String,
}

/// Largest accepted `x-vigil-batch-id`.
const MAX_BATCH_ID_LEN: usize = 128;

/// Shared by both transports.
pub(crate) struct Ingest {
    otlp: OtlpConfig,
    retention_hours: u64,
    durability: Durability,
    dedup: Arc<BatchDedup>,
    metrics: Arc<Metrics>,
    /// Admission control over decoded bytes being processed, in KiB permits.
    in_flight: Arc<Semaphore>,
    token: TokenCheck,
}

impl Ingest {
    pub(crate) fn new(
        otlp: OtlpConfig,
        retention_hours: u64,
        durability: Durability,
        dedup: Arc<BatchDedup>,
        metrics: Arc<Metrics>,
        token: TokenCheck,
    ) -> Ingest {
        let permits = (otlp.max_in_flight_bytes / 1024).clamp(1, Semaphore::MAX_PERMITS);
        Ingest {
            otlp,
            retention_hours,
            durability,
            dedup,
            metrics,
            in_flight: Arc::new(Semaphore::new(permits)),
            token,
        }
    }

    pub(crate) fn config(&self) -> &OtlpConfig {
        &self.otlp
    }

    /// Checks the `authorization` header / metadata value.
    pub(crate) fn authenticate(&self, authorization: Option<&[u8]>) -> Result<(), IngestError> {
        if self.token.check(authorization) {
            Ok(())
        } else {
            Err(IngestError::Unauthenticated)
        }
    }

    pub(crate) fn count_request(&self, transport: Transport, signal: Signal, outcome: &'static str) {
        self.metrics
            .requests
            .get_or_create(&RequestLabel {
                transport: transport.as_str(),
                signal: signal.as_str(),
                outcome,
            })
            .inc();
    }

    /// Validates, stores durably and acknowledges one export request.
    /// `decoded_len` is the request's decoded size, for admission control.
    pub(crate) async fn export(
        &self,
        mut request: ExportRequest,
        batch_id: Option<&str>,
        decoded_len: usize,
    ) -> Result<Accepted, IngestError> {
        let signal = request.signal();
        if let Some(id) = batch_id {
            validate_batch_id(id)?;
        }
        let kib = u32::try_from(decoded_len.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        let _permit = self
            .in_flight
            .clone()
            .try_acquire_many_owned(kib)
            .map_err(|_| IngestError::Overloaded)?;

        let limits = Limits::from_config(&self.otlp, self.retention_hours, crate::timeutil::now_ns());
        let message_limits = limits.clone();
        let partitions = match &self.durability {
            Durability::Wal(_) => None,
            Durability::Stream(s) => Some(s.partitions()),
        };
        // Sanitizing and re-encoding a big batch is CPU work: keep it off the reactor.
        let (report, encoded) = tokio::task::spawn_blocking(move || {
            let report = request.sanitize(&limits);
            let encoded = match partitions {
                _ if report.accepted() == 0 => Encoded::Whole(Vec::new()),
                None => Encoded::Whole(request.encode()),
                Some(n) => Encoded::Parts(request.encode_by_partition(n)),
            };
            (report, encoded)
        })
        .await
        .map_err(|e| IngestError::Internal(format!("sanitize task failed: {e}")))?;

        self.record_report(signal, &report);
        let accepted = Accepted {
            rejected: report.rejected_total(),
            message: report.rejection_message(signal.record_noun(), &message_limits),
        };
        if report.accepted() == 0 {
            return Ok(accepted);
        }

        let guard = match batch_id {
            Some(id) => match self.dedup.claim(id).await {
                Claim::Duplicate => {
                    self.metrics.duplicate_batches.inc();
                    return Ok(accepted);
                }
                Claim::New(guard) => Some(guard),
            },
            None => None,
        };
        // The write and the claim's outcome run in a task of their own: when the client
        // goes away mid-request its future is dropped, but once the log or the stream has
        // taken the batch it is stored all the same, so the id must still be marked stored —
        // released instead, the client's retry would store the batch a second time.
        let durability = self.durability.clone();
        let owned_id = batch_id.map(str::to_string);
        let stored = tokio::spawn(async move {
            let result = match (durability, encoded) {
                (Durability::Wal(wal), Encoded::Whole(otlp)) => {
                    let payload = WalBatch {
                        signal,
                        batch_id: owned_id,
                        otlp: Bytes::from(otlp),
                    }
                    .encode();
                    wal.append(payload).await.map(|_| ()).map_err(|e| match e {
                        WalError::QueueFull => IngestError::Unavailable("write-ahead log queue is full".into()),
                        WalError::Closed => IngestError::Unavailable("collector is shutting down".into()),
                        other => IngestError::Unavailable(format!("could not make the batch durable: {other}")),
                    })
                }
                (Durability::Stream(stream), Encoded::Parts(parts)) => stream
                    .publish(signal, owned_id.as_deref(), parts)
                    .await
                    .map_err(|e| match e {
                        crate::cluster::PublishError::TooLarge { .. } => IngestError::TooLarge(e.to_string()),
                        crate::cluster::PublishError::Unavailable(_) => IngestError::Unavailable(e.to_string()),
                    }),
                _ => Err(IngestError::Internal(
                    "batch encoded for another kind of storage".into(),
                )),
            };
            if result.is_ok()
                && let Some(guard) = guard
            {
                guard.stored(crate::timeutil::now_ns() / 1_000_000_000);
            }
            result
        })
        .await
        .map_err(|e| IngestError::Internal(format!("append task failed: {e}")))?;
        stored?;
        self.metrics
            .records_accepted
            .get_or_create(&SignalLabel {
                signal: signal.as_str(),
            })
            .inc_by(report.accepted());
        Ok(accepted)
    }

    /// Appends waiting for the WAL writer.
    #[cfg(test)]
    pub(crate) fn wal_queued(&self) -> usize {
        match &self.durability {
            Durability::Wal(wal) => wal.queued(),
            Durability::Stream(_) => 0,
        }
    }

    fn record_report(&self, signal: Signal, report: &Report) {
        let s = signal.as_str();
        self.metrics
            .records_received
            .get_or_create(&SignalLabel { signal: s })
            .inc_by(report.received);
        for (reason, n) in &report.rejected {
            self.metrics
                .records_rejected
                .get_or_create(&RejectLabel { signal: s, reason })
                .inc_by(*n);
        }
        for (kind, n) in &report.truncated {
            self.metrics
                .values_truncated
                .get_or_create(&KindLabel { kind })
                .inc_by(*n);
        }
    }
}

fn validate_batch_id(id: &str) -> Result<(), IngestError> {
    if id.is_empty() || id.len() > MAX_BATCH_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(IngestError::Invalid(format!(
            "x-vigil-batch-id must be 1 to {MAX_BATCH_ID_LEN} visible ASCII characters"
        )));
    }
    Ok(())
}
