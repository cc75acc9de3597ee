//! OTLP/gRPC receiver: the logs, traces and metrics services, gzip accepted.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::IngestError;
use super::http::BATCH_ID_HEADER;
use super::service::{Accepted, ExportRequest, Ingest, Transport};
use crate::wal::Signal;

/// The three OTLP gRPC services as routes, ready to be served.
pub(crate) fn routes(ingest: Arc<Ingest>) -> tonic::service::Routes {
    let max = ingest.config().max_decompressed_bytes;
    let svc = Receiver { ingest };
    let logs = LogsServiceServer::new(svc.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max);
    let traces = TraceServiceServer::new(svc.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max);
    let metrics = MetricsServiceServer::new(svc)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max);
    tonic::service::Routes::new(logs)
        .add_service(traces)
        .add_service(metrics)
}

#[derive(Clone)]
struct Receiver {
    ingest: Arc<Ingest>,
}

impl Receiver {
    async fn export<M: Message>(
        &self,
        request: Request<M>,
        signal: Signal,
        wrap: fn(M) -> ExportRequest,
    ) -> Result<Accepted, Status> {
        let result = self.export_inner(request, wrap).await;
        let outcome = match &result {
            Ok(a) if a.rejected > 0 => "partial",
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.ingest.count_request(Transport::Grpc, signal, outcome);
        result.map_err(|err| {
            if err.http_status().is_server_error() {
                tracing::warn!(error = %err, "OTLP/gRPC request failed");
            }
            Status::from(err)
        })
    }

    async fn export_inner<M: Message>(
        &self,
        request: Request<M>,
        wrap: fn(M) -> ExportRequest,
    ) -> Result<Accepted, IngestError> {
        let metadata = request.metadata();
        self.ingest
            .authenticate(metadata.get("authorization").map(|v| v.as_bytes()))?;
        let batch_id = metadata
            .get(BATCH_ID_HEADER)
            .map(|v| v.to_str().map(str::to_string))
            .transpose()
            .map_err(|_| IngestError::Invalid(format!("{BATCH_ID_HEADER} must be visible ASCII")))?;
        let message = request.into_inner();
        let len = message.encoded_len();
        self.ingest.export(wrap(message), batch_id.as_deref(), len).await
    }
}

fn rejected(a: &Accepted) -> i64 {
    i64::try_from(a.rejected).unwrap_or(i64::MAX)
}

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let a = Receiver::export(self, request, Signal::Logs, ExportRequest::Logs).await?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: (a.rejected > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: rejected(&a),
                error_message: a.message.clone(),
            }),
        }))
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let a = Receiver::export(self, request, Signal::Traces, ExportRequest::Traces).await?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: (a.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: rejected(&a),
                error_message: a.message.clone(),
            }),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let a = Receiver::export(self, request, Signal::Metrics, ExportRequest::Metrics).await?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: (a.rejected > 0).then(|| ExportMetricsPartialSuccess {
                rejected_data_points: rejected(&a),
                error_message: a.message.clone(),
            }),
        }))
    }
}
