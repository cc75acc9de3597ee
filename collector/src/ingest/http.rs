//! OTLP/HTTP receiver: `POST /v1/logs`, `/v1/traces`, `/v1/metrics`, protobuf or JSON,
//! optionally gzip-compressed.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsPartialSuccess, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use prost::Message;

use super::decode::{ContentKind, decode_body};
use super::service::{Accepted, Ingest, Transport};
use super::{IngestError, remote_write};
use crate::wal::Signal;

/// The header carrying a client-chosen idempotency key.
pub(crate) const BATCH_ID_HEADER: &str = "x-vigil-batch-id";

/// Routes of the OTLP/HTTP receiver.
pub(crate) fn router(ingest: Arc<Ingest>) -> Router {
    Router::new()
        .route("/v1/logs", post(|s, h, b| export(s, h, b, Signal::Logs)))
        .route("/v1/traces", post(|s, h, b| export(s, h, b, Signal::Traces)))
        .route("/v1/metrics", post(|s, h, b| export(s, h, b, Signal::Metrics)))
        .with_state(Arc::clone(&ingest))
        .route(
            "/prometheus/api/v1/write",
            post(remote_write::write).with_state(Arc::new(remote_write::RemoteWrite {
                ingest,
                families: remote_write::Families::default(),
            })),
        )
        // The body is read below under our own limit, so the 413 names the setting.
        .layer(DefaultBodyLimit::disable())
}

/// `google.rpc.Status`, the OTLP/HTTP error body.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

async fn export(State(ingest): State<Arc<Ingest>>, headers: HeaderMap, body: Body, signal: Signal) -> Response {
    // Answer in the request's encoding when it is one we know.
    let kind = ContentKind::from_content_type(headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()));
    let reply_kind = kind.as_ref().map(|k| *k).unwrap_or(ContentKind::Json);
    let result = match kind {
        Ok(kind) => handle(&ingest, &headers, body, signal, kind).await,
        Err(e) => Err(e),
    };
    let outcome = match &result {
        Ok(a) if a.rejected > 0 => "partial",
        Ok(_) => "ok",
        Err(e) => e.outcome(),
    };
    ingest.count_request(Transport::Http, signal, outcome);
    match result {
        Ok(accepted) => success(signal, reply_kind, accepted),
        Err(err) => failure(reply_kind, err),
    }
}

async fn handle(
    ingest: &Ingest,
    headers: &HeaderMap,
    body: Body,
    signal: Signal,
    kind: ContentKind,
) -> Result<Accepted, IngestError> {
    ingest.authenticate(headers.get(AUTHORIZATION).map(HeaderValue::as_bytes))?;
    let bytes = read_body(ingest, headers, body).await?;
    let encoding = headers
        .get(CONTENT_ENCODING)
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| IngestError::UnsupportedMediaType("Content-Encoding is not ASCII".into()))?;
    let batch_id = headers
        .get(BATCH_ID_HEADER)
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| IngestError::Invalid(format!("{BATCH_ID_HEADER} must be visible ASCII")))?;
    let max_decompressed = ingest.config().max_decompressed_bytes;
    let (request, decoded_len) = tokio::task::spawn_blocking(move || {
        let len = bytes.len();
        decode_body(signal, kind, encoding.as_deref(), bytes, max_decompressed).map(|r| (r, len))
    })
    .await
    .map_err(|e| IngestError::Internal(format!("decode task failed: {e}")))??;
    ingest.export(request, batch_id.as_deref(), decoded_len).await
}

/// Reads a request body under `otlp.max_request_bytes`.
pub(crate) async fn read_body(ingest: &Ingest, headers: &HeaderMap, body: Body) -> Result<bytes::Bytes, IngestError> {
    let max = ingest.config().max_request_bytes;
    let too_large = || {
        IngestError::TooLarge(format!(
            "request body exceeds the limit of {max} bytes (otlp.max_request_bytes)"
        ))
    };
    // A body somewhat over the limit is read and discarded so the client gets the
    // 413 (which tells an exporter to drop the batch) instead of a reset connection
    // (which it would retry forever). Far over the limit, we do not spend the bandwidth.
    let drain_limit = max.saturating_mul(4);
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > drain_limit) {
        return Err(too_large());
    }
    let mut body = body;
    let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0).min(max));
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| IngestError::Invalid(format!("could not read request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen <= max {
                buf.extend_from_slice(&data);
            } else if seen > drain_limit {
                return Err(too_large());
            }
        }
    }
    if seen > max {
        return Err(too_large());
    }
    Ok(buf.freeze())
}

fn success(signal: Signal, kind: ContentKind, accepted: Accepted) -> Response {
    let rejected = i64::try_from(accepted.rejected).unwrap_or(i64::MAX);
    let partial = accepted.rejected > 0;
    let body = match kind {
        // Written by hand so an absent partial success is `{}` rather than
        // `{"partialSuccess":null}`; int64 counts are strings per the proto3 JSON mapping.
        ContentKind::Json => {
            let field = match signal {
                Signal::Logs => "rejectedLogRecords",
                Signal::Traces => "rejectedSpans",
                Signal::Metrics => "rejectedDataPoints",
            };
            let value = if partial {
                serde_json::json!({"partialSuccess": {field: rejected.to_string(), "errorMessage": accepted.message}})
            } else {
                serde_json::json!({})
            };
            value.to_string().into_bytes()
        }
        ContentKind::Protobuf => match signal {
            Signal::Logs => ExportLogsServiceResponse {
                partial_success: partial.then(|| ExportLogsPartialSuccess {
                    rejected_log_records: rejected,
                    error_message: accepted.message.clone(),
                }),
            }
            .encode_to_vec(),
            Signal::Traces => ExportTraceServiceResponse {
                partial_success: partial.then(|| ExportTracePartialSuccess {
                    rejected_spans: rejected,
                    error_message: accepted.message.clone(),
                }),
            }
            .encode_to_vec(),
            Signal::Metrics => ExportMetricsServiceResponse {
                partial_success: partial.then(|| ExportMetricsPartialSuccess {
                    rejected_data_points: rejected,
                    error_message: accepted.message.clone(),
                }),
            }
            .encode_to_vec(),
        },
    };
    (StatusCode::OK, [(CONTENT_TYPE, kind.mime())], body).into_response()
}

fn failure(kind: ContentKind, err: IngestError) -> Response {
    let status = err.http_status();
    if status.is_server_error() {
        tracing::warn!(error = %err, status = status.as_u16(), "OTLP/HTTP request failed");
    } else {
        tracing::debug!(error = %err, status = status.as_u16(), "OTLP/HTTP request refused");
    }
    let rpc = RpcStatus {
        code: err.grpc_code() as i32,
        message: err.to_string(),
    };
    let body = match kind {
        ContentKind::Protobuf => rpc.encode_to_vec(),
        ContentKind::Json => serde_json::json!({"code": rpc.code, "message": rpc.message})
            .to_string()
            .into_bytes(),
    };
    let mut response = (status, [(CONTENT_TYPE, kind.mime())], body).into_response();
    err.add_http_headers(response.headers_mut());
    response
}
