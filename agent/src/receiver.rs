//! The local OTLP receiver: applications on the node export to the agent (gRPC or
//! HTTP/protobuf, gzip accepted), which adds the host's resource attributes and puts
//! the request in the disk buffer. The application is answered only once its data is
//! durable; a full buffer answers "retry later" (HTTP 503 + Retry-After /
//! UNAVAILABLE), so the application's own retry logic holds the data meanwhile.

use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes as AxumBytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;

use crate::buffer::{BufferError, DiskBuffer, Kind};
use crate::config::ReceiverConfig;
use crate::otlp::HostResource;
use crate::telemetry::AgentMetrics;

/// Largest request accepted, decompressed.
const MAX_REQUEST: usize = 16 * 1024 * 1024;

#[derive(Clone)]
struct Receiver {
    /// `Bearer <token>` expected from applications, when configured.
    expected_auth: Option<Arc<str>>,
    host: HostResource,
    buffer: Arc<DiskBuffer>,
    metrics: Arc<AgentMetrics>,
}

#[derive(Debug)]
enum ReceiveError {
    Unauthenticated,
    Invalid(String),
    Busy,
    Failed(String),
}

impl Receiver {
    fn authorize(&self, presented: Option<&str>) -> Result<(), ReceiveError> {
        match &self.expected_auth {
            None => Ok(()),
            Some(expected) if presented.is_some_and(|p| constant_time_eq(p.as_bytes(), expected.as_bytes())) => Ok(()),
            Some(_) => Err(ReceiveError::Unauthenticated),
        }
    }

    /// Enriches, encodes and durably buffers one request.
    async fn accept<M: Message + Send + 'static>(
        &self,
        mut message: M,
        kind: Kind,
        enrich: fn(&HostResource, &mut M),
    ) -> Result<(), ReceiveError> {
        self.metrics.receiver_requests.inc();
        enrich(&self.host, &mut message);
        let payload = Bytes::from(message.encode_to_vec());
        if payload.is_empty() {
            return Ok(());
        }
        let buffer = Arc::clone(&self.buffer);
        match tokio::task::spawn_blocking(move || buffer.try_append(kind, vec![], payload)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(BufferError::Full | BufferError::Closed)) => Err(ReceiveError::Busy),
            Ok(Err(BufferError::TooLarge(n))) => {
                Err(ReceiveError::Invalid(format!("request of {n} bytes is too large")))
            }
            Ok(Err(e)) => Err(ReceiveError::Failed(e.to_string())),
            Err(e) => Err(ReceiveError::Failed(e.to_string())),
        }
    }
}

fn enrich_logs(host: &HostResource, m: &mut ExportLogsServiceRequest) {
    for r in &mut m.resource_logs {
        host.enrich(r.resource.get_or_insert_with(Default::default));
    }
}
fn enrich_metrics(host: &HostResource, m: &mut ExportMetricsServiceRequest) {
    for r in &mut m.resource_metrics {
        host.enrich(r.resource.get_or_insert_with(Default::default));
    }
}
fn enrich_traces(host: &HostResource, m: &mut ExportTraceServiceRequest) {
    for r in &mut m.resource_spans {
        host.enrich(r.resource.get_or_insert_with(Default::default));
    }
}

/// Comparison whose time does not depend on where the inputs first differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn grpc_auth<T>(r: &Receiver, request: &tonic::Request<T>) -> Result<(), tonic::Status> {
    let presented = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
    r.authorize(presented).map_err(status)
}

fn status(e: ReceiveError) -> tonic::Status {
    match e {
        ReceiveError::Unauthenticated => tonic::Status::unauthenticated("missing or wrong bearer token"),
        ReceiveError::Invalid(m) => tonic::Status::invalid_argument(m),
        ReceiveError::Busy => tonic::Status::unavailable("agent buffer full; retry later"),
        ReceiveError::Failed(m) => tonic::Status::internal(m),
    }
}

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        grpc_auth(self, &request)?;
        self.accept(request.into_inner(), Kind::Logs, enrich_logs)
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        grpc_auth(self, &request)?;
        self.accept(request.into_inner(), Kind::Metrics, enrich_metrics)
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        grpc_auth(self, &request)?;
        self.accept(request.into_inner(), Kind::Traces, enrich_traces)
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn decode_body<M: Message + Default>(r: &Receiver, headers: &HeaderMap, body: &[u8]) -> Result<M, ReceiveError> {
    r.authorize(headers.get("authorization").and_then(|v| v.to_str().ok()))?;
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.starts_with("application/x-protobuf") {
        return Err(ReceiveError::Invalid(format!(
            "content-type {content_type:?} is not supported; send application/x-protobuf"
        )));
    }
    let gz = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let decoded;
    let bytes = if gz {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .take(MAX_REQUEST as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| ReceiveError::Invalid(format!("gzip body: {e}")))?;
        if out.len() > MAX_REQUEST {
            return Err(ReceiveError::Invalid(format!(
                "decompressed body over {MAX_REQUEST} bytes"
            )));
        }
        decoded = out;
        &decoded[..]
    } else {
        body
    };
    M::decode(bytes).map_err(|e| ReceiveError::Invalid(format!("not an OTLP protobuf message: {e}")))
}

fn http_response(result: Result<(), ReceiveError>) -> Response {
    match result {
        Ok(()) => (
            StatusCode::OK,
            [("content-type", "application/x-protobuf")],
            Vec::<u8>::new(),
        )
            .into_response(),
        Err(ReceiveError::Unauthenticated) => {
            (StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response()
        }
        Err(ReceiveError::Invalid(m)) => (StatusCode::BAD_REQUEST, m).into_response(),
        Err(ReceiveError::Busy) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "1")],
            "agent buffer full; retry later",
        )
            .into_response(),
        Err(ReceiveError::Failed(m)) => (StatusCode::INTERNAL_SERVER_ERROR, m).into_response(),
    }
}

async fn http_logs(State(r): State<Receiver>, headers: HeaderMap, body: AxumBytes) -> Response {
    let result = match decode_body::<ExportLogsServiceRequest>(&r, &headers, &body) {
        Ok(m) => r.accept(m, Kind::Logs, enrich_logs).await,
        Err(e) => Err(e),
    };
    http_response(result)
}

async fn http_metrics(State(r): State<Receiver>, headers: HeaderMap, body: AxumBytes) -> Response {
    let result = match decode_body::<ExportMetricsServiceRequest>(&r, &headers, &body) {
        Ok(m) => r.accept(m, Kind::Metrics, enrich_metrics).await,
        Err(e) => Err(e),
    };
    http_response(result)
}

async fn http_traces(State(r): State<Receiver>, headers: HeaderMap, body: AxumBytes) -> Response {
    let result = match decode_body::<ExportTraceServiceRequest>(&r, &headers, &body) {
        Ok(m) => r.accept(m, Kind::Traces, enrich_traces).await,
        Err(e) => Err(e),
    };
    http_response(result)
}

/// Binds both receivers (so a port clash fails the start, naming the key) and serves
/// them until `cancel`.
pub async fn start(
    config: &ReceiverConfig,
    host: HostResource,
    buffer: Arc<DiskBuffer>,
    metrics: Arc<AgentMetrics>,
    cancel: CancellationToken,
) -> anyhow::Result<(
    Vec<tokio::task::JoinHandle<()>>,
    std::net::SocketAddr,
    std::net::SocketAddr,
)> {
    use anyhow::Context;
    let receiver = Receiver {
        expected_auth: config
            .token
            .as_ref()
            .map(|t| Arc::from(format!("Bearer {}", t.expose()))),
        host,
        buffer,
        metrics,
    };
    let http_listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("receiver.http_addr {}", config.http_addr))?;
    let grpc_listener = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("receiver.grpc_addr {}", config.grpc_addr))?;
    let (grpc_addr, http_addr) = (grpc_listener.local_addr()?, http_listener.local_addr()?);
    tracing::info!(grpc = %grpc_addr, http = %http_addr, "local OTLP receiver listening");

    let app = axum::Router::new()
        .route("/v1/logs", post(http_logs))
        .route("/v1/metrics", post(http_metrics))
        .route("/v1/traces", post(http_traces))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST))
        .with_state(receiver.clone());
    let c = cancel.clone();
    let http = tokio::spawn(async move {
        let _ = axum::serve(http_listener, app)
            .with_graceful_shutdown(async move { c.cancelled().await })
            .await;
    });

    let logs = LogsServiceServer::new(receiver.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_REQUEST);
    let metrics = MetricsServiceServer::new(receiver.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_REQUEST);
    let traces = TraceServiceServer::new(receiver)
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_REQUEST);
    let incoming = tokio_stream_listener(grpc_listener);
    let grpc = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(logs)
            .add_service(metrics)
            .add_service(traces)
            .serve_with_incoming_shutdown(incoming, async move { cancel.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "local gRPC receiver failed");
        }
    });
    Ok((vec![http, grpc], grpc_addr, http_addr))
}

/// A listener as the stream of connections tonic serves.
fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| s);
        Some((next, l))
    })
}
