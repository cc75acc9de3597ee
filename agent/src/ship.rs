//! Shipping the buffer to the collector: in order, one batch at a time (the next one
//! compressed while this one is in flight), each with its idempotency key, retried with exponential backoff and jitter until the collector
//! takes it (honouring `Retry-After` and RESOURCE_EXHAUSTED), acknowledged in the
//! buffer only after the collector said yes.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::{BufMut, Bytes};
use http_body_util::BodyExt;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::buffer::{DiskBuffer, Kind};
use crate::config::{CollectorConfig, Protocol};
use crate::telemetry::AgentMetrics;

pub const BATCH_ID_HEADER: &str = "x-vigil-batch-id";

enum Transport {
    Http { client: reqwest::Client, base: String },
    Grpc(Channel),
}

/// The shape the three OTLP export responses share: a partial success with a count of
/// rejected items (field 1, whatever it is called) and a message.
#[derive(Clone, PartialEq, prost::Message)]
struct ExportResponse {
    #[prost(message, optional, tag = "1")]
    partial_success: Option<PartialSuccess>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PartialSuccess {
    #[prost(int64, tag = "1")]
    rejected: i64,
    #[prost(string, tag = "2")]
    error_message: String,
}

/// A record ready to go: its wire body prepared (compressed) ahead of sending.
struct Prepared {
    seq: u64,
    kind: Kind,
    /// Empty for checkpoint-only records, which are acknowledged without sending.
    body: Bytes,
}

/// How one attempt ended.
#[derive(Debug)]
enum Outcome {
    Sent,
    /// Try again, after at least this long if the collector said so.
    Retry(String, Option<Duration>),
    /// The collector will never take this batch (malformed): drop it, loudly.
    Rejected(String),
}

pub struct Shipper {
    transport: Transport,
    config: CollectorConfig,
    buffer: Arc<DiskBuffer>,
    metrics: Arc<AgentMetrics>,
    agent_id: String,
    rng: u64,
}

impl Shipper {
    pub fn new(
        config: &CollectorConfig,
        buffer: Arc<DiskBuffer>,
        metrics: Arc<AgentMetrics>,
        agent_id: String,
    ) -> anyhow::Result<Shipper> {
        let timeout = Duration::from_secs(config.timeout_secs);
        let ca = match &config.ca_file {
            Some(path) => Some(std::fs::read(path).with_context(|| format!("collector.ca_file {}", path.display()))?),
            None => None,
        };
        let transport = match config.protocol {
            Protocol::Http => {
                let mut builder = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout);
                if let Some(pem) = &ca {
                    builder = builder.add_root_certificate(
                        reqwest::Certificate::from_pem(pem).context("collector.ca_file is not a PEM certificate")?,
                    );
                }
                Transport::Http {
                    client: builder.build().context("building the HTTP client")?,
                    base: config.endpoint.trim_end_matches('/').to_string(),
                }
            }
            Protocol::Grpc => {
                let mut endpoint = Channel::from_shared(config.endpoint.clone())
                    .context("collector.endpoint")?
                    .timeout(timeout)
                    .connect_timeout(timeout);
                if config.endpoint.starts_with("https://") {
                    let mut tls = tonic::transport::ClientTlsConfig::new();
                    if let Some(pem) = &ca {
                        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
                    }
                    endpoint = endpoint.tls_config(tls).context("collector TLS")?;
                }
                Transport::Grpc(endpoint.connect_lazy())
            }
        };
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Ok(Shipper {
            transport,
            config: config.clone(),
            buffer,
            metrics,
            agent_id,
            rng: seed,
        })
    }

    /// Ships until cancelled. After cancellation it keeps going until the buffer is
    /// empty or `drain` has passed; whatever is left stays in the buffer for next time.
    ///
    /// Two stages: one reads records in order and compresses them, the other sends and
    /// acknowledges; compressing the next batch overlaps sending this one.
    pub async fn run(mut self, cancel: CancellationToken, drain: Duration) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Prepared>(2);
        let gzip_body = self.config.gzip;
        let preparer = tokio::spawn(prepare(Arc::clone(&self.buffer), gzip_body, tx, cancel.clone()));
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let next = tokio::select! {
                next = rx.recv() => next,
                () = cancel.cancelled(), if deadline.is_none() => {
                    deadline = Some(tokio::time::Instant::now() + drain);
                    continue;
                }
            };
            let Some(prepared) = next else { break };
            if cancel.is_cancelled() && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + drain);
            }
            if !prepared.body.is_empty() && !self.deliver(&prepared, &cancel, deadline).await {
                // Out of time while draining; the record stays in the buffer.
                break;
            }
            let buffer = Arc::clone(&self.buffer);
            let seq = prepared.seq;
            match tokio::task::spawn_blocking(move || buffer.ack(seq)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "recording an acknowledgement failed"),
                Err(_) => break,
            }
        }
        preparer.abort();
        let _ = preparer.await;
    }

    /// Sends one record until it is taken or rejected. False if it gave up because the
    /// drain deadline passed.
    async fn deliver(
        &mut self,
        record: &Prepared,
        cancel: &CancellationToken,
        deadline: Option<tokio::time::Instant>,
    ) -> bool {
        let batch_id = format!("{}-{}", self.agent_id, record.seq);
        let mut backoff = Duration::from_millis(self.config.initial_backoff_ms.max(1));
        let max_backoff = Duration::from_secs(self.config.max_backoff_secs.max(1));
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let outcome = self.send(record, &batch_id).await;
            match outcome {
                Outcome::Sent => {
                    self.metrics.batches_sent.inc();
                    if attempt > 1 {
                        tracing::info!(seq = record.seq, attempt, "batch delivered after retries");
                    }
                    return true;
                }
                Outcome::Rejected(why) => {
                    self.metrics.batches_rejected.inc();
                    tracing::error!(seq = record.seq, reason = %why, "collector rejected a batch as invalid; dropping it");
                    return true;
                }
                Outcome::Retry(why, retry_after) => {
                    self.metrics.send_retries.inc();
                    let deadline = deadline.or_else(|| cancel.is_cancelled().then(tokio::time::Instant::now));
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        return false;
                    }
                    // Full jitter on the exponential step, never below the server's ask.
                    let jittered = backoff.mul_f64(0.5 + 0.5 * self.random());
                    let wait = retry_after
                        .map_or(jittered, |r| r.max(jittered))
                        .min(max_backoff.max(retry_after.unwrap_or_default()));
                    if attempt == 1 || attempt.is_power_of_two() {
                        tracing::warn!(seq = record.seq, attempt, reason = %why, wait_ms = wait.as_millis() as u64, "collector unavailable; will retry");
                    }
                    if !self.pause(wait, cancel, deadline).await {
                        return false;
                    }
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
        }
    }

    /// Waits `wait`; false if the drain deadline passes first.
    async fn pause(&self, wait: Duration, cancel: &CancellationToken, deadline: Option<tokio::time::Instant>) -> bool {
        let until = tokio::time::Instant::now() + wait;
        match deadline {
            Some(d) if d < until => {
                tokio::time::sleep_until(d).await;
                false
            }
            Some(_) => {
                tokio::time::sleep_until(until).await;
                true
            }
            None => {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => true,
                    // Cancellation starts the drain clock; keep trying within it.
                    () = cancel.cancelled() => true,
                }
            }
        }
    }

    fn random(&mut self) -> f64 {
        // xorshift64*: jitter needs no cryptographic quality.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    async fn send(&mut self, record: &Prepared, batch_id: &str) -> Outcome {
        let token = self.config.token.as_ref().map(|t| format!("Bearer {}", t.expose()));
        let (http_path, grpc_path) = match record.kind {
            Kind::Logs => ("/v1/logs", "/opentelemetry.proto.collector.logs.v1.LogsService/Export"),
            Kind::Metrics => (
                "/v1/metrics",
                "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            ),
            Kind::Traces => (
                "/v1/traces",
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            ),
        };
        let outcome = match &mut self.transport {
            Transport::Http { client, base } => {
                let mut request = client
                    .post(format!("{base}{http_path}"))
                    .header("content-type", "application/x-protobuf")
                    .header(BATCH_ID_HEADER, batch_id);
                if let Some(t) = &token {
                    request = request.header("authorization", t);
                }
                if self.config.gzip {
                    request = request.header("content-encoding", "gzip");
                }
                match request.body(record.body.clone()).send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        let retry_after = resp
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .map(Duration::from_secs);
                        let headers = resp.headers().clone();
                        let body = resp.bytes().await.unwrap_or_default();
                        if status.is_success() {
                            // A 2xx is delivery only if it is an OTLP answer: anything else
                            // keeps the batch (and says why) rather than dropping it unseen.
                            otlp_http_answer(&headers, &body).map_err(|why| Outcome::Retry(why, None))
                        } else {
                            let text = String::from_utf8_lossy(&body).chars().take(300).collect::<String>();
                            let why = format!("HTTP {status}: {text}");
                            Err(match status.as_u16() {
                                400 | 413 | 415 | 422 => Outcome::Rejected(why),
                                _ => Outcome::Retry(why, retry_after),
                            })
                        }
                    }
                    Err(e) => Err(Outcome::Retry(causes(&e), None)),
                }
            }
            Transport::Grpc(channel) => {
                let request = grpc_request(grpc_path, &record.body, self.config.gzip, batch_id, token.as_deref());
                match grpc_call(channel, request).await {
                    Ok(response) => Ok(response),
                    Err(status) => {
                        let why = format!("gRPC {:?}: {}", status.code(), status.message());
                        Err(match status.code() {
                            tonic::Code::InvalidArgument => Outcome::Rejected(why),
                            _ => Outcome::Retry(why, None),
                        })
                    }
                }
            }
        };
        match outcome {
            Ok(response) => {
                if let Some(p) = response.partial_success.filter(|p| p.rejected > 0) {
                    tracing::warn!(seq = record.seq, rejected = p.rejected, message = %p.error_message, "collector accepted the batch but rejected part of it");
                }
                Outcome::Sent
            }
            Err(outcome) => outcome,
        }
    }
}

/// An error with the causes under it ("transport error: tcp connect error: Connection refused
/// (os error 111)"): the top level alone reads the same for a refused connection, a name
/// that does not resolve and a wrong port.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Checks that a 2xx answer to an OTLP/HTTP export is one: a gRPC endpoint answers HTTP/1.1
/// requests with 200 and a `grpc-status` error, which taken for a delivery dropped every batch
/// without a word when `protocol = "http"` pointed at port 4317.
fn otlp_http_answer(headers: &http::HeaderMap, body: &[u8]) -> Result<ExportResponse, String> {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if let Some(code) = headers.get("grpc-status") {
        return Err(format!(
            "the endpoint answered as gRPC (grpc-status {}): this looks like a gRPC endpoint; set protocol = \"grpc\" or point the endpoint at the OTLP/HTTP port (4318)",
            String::from_utf8_lossy(code.as_bytes())
        ));
    }
    if content_type.starts_with("application/grpc") {
        return Err(
            "the endpoint answered with a gRPC content type: this looks like a gRPC endpoint; set protocol = \"grpc\" or point the endpoint at the OTLP/HTTP port (4318)".into(),
        );
    }
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/x-protobuf" | "application/protobuf" => {
            ExportResponse::decode(body).map_err(|e| format!("the OTLP/HTTP answer does not decode ({e})"))
        }
        "application/json" => {
            let v: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| format!("the OTLP/HTTP JSON answer does not parse ({e})"))?;
            let partial = &v["partialSuccess"];
            let rejected = ["rejectedLogRecords", "rejectedSpans", "rejectedDataPoints"]
                .iter()
                .filter_map(|k| {
                    let n = &partial[*k];
                    n.as_i64().or_else(|| n.as_str().and_then(|s| s.parse().ok()))
                })
                .sum::<i64>();
            Ok(ExportResponse {
                partial_success: (rejected > 0).then(|| PartialSuccess {
                    rejected,
                    error_message: partial["errorMessage"].as_str().unwrap_or("").to_string(),
                }),
            })
        }
        other => Err(format!(
            "the answer is not OTLP/HTTP (content type {:?}): is the endpoint an OTLP/HTTP receiver?",
            other
        )),
    }
}

/// Reads records in order and prepares their wire bodies, a couple ahead of the sender.
async fn prepare(
    buffer: Arc<DiskBuffer>,
    gzip_body: bool,
    tx: tokio::sync::mpsc::Sender<Prepared>,
    cancel: CancellationToken,
) {
    let mut after = buffer.acked();
    loop {
        let b = Arc::clone(&buffer);
        let next = tokio::task::spawn_blocking(move || -> Result<Option<Prepared>, crate::buffer::BufferError> {
            let Some(record) = b.next_after(after)? else {
                return Ok(None);
            };
            let body = if record.payload.is_empty() {
                Bytes::new()
            } else {
                match record.otlp() {
                    Ok(otlp) if gzip_body => gzip(&otlp),
                    Ok(otlp) => otlp,
                    Err(e) => {
                        // Its CRC checked out, so this is a bug, not disk damage: say so
                        // and skip the record rather than wedge the queue behind it.
                        tracing::error!(seq = record.seq, error = %e, "undecodable buffered record; skipping it");
                        Bytes::new()
                    }
                }
            };
            Ok(Some(Prepared {
                seq: record.seq,
                kind: record.kind,
                body,
            }))
        })
        .await;
        match next {
            Ok(Ok(Some(p))) => {
                after = p.seq;
                if tx.send(p).await.is_err() {
                    return;
                }
            }
            Ok(Ok(None)) => {
                if cancel.is_cancelled() {
                    return;
                }
                tokio::select! {
                    () = buffer.wait_after(after) => {}
                    () = cancel.cancelled() => {}
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reading the disk buffer failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = cancel.cancelled() => return,
                }
            }
            Err(_) => return,
        }
    }
}

/// A unary gRPC request by hand, so the body can be compressed ahead (tonic compresses
/// inside the call, at a fixed slow level) and sent as the buffer holds it: the 5-byte
/// message frame (compressed flag, length) and the OTLP bytes.
fn grpc_request(
    path: &'static str,
    body: &Bytes,
    gzip: bool,
    batch_id: &str,
    token: Option<&str>,
) -> http::Request<tonic::body::Body> {
    let mut framed = bytes::BytesMut::with_capacity(5 + body.len());
    framed.put_u8(u8::from(gzip));
    framed.put_u32(body.len() as u32);
    framed.put_slice(body);
    let mut request = http::Request::builder()
        .method(http::Method::POST)
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-accept-encoding", "gzip")
        .header(BATCH_ID_HEADER, batch_id);
    if gzip {
        request = request.header("grpc-encoding", "gzip");
    }
    if let Some(t) = token {
        request = request.header("authorization", t);
    }
    let full = http_body_util::Full::new(framed.freeze());
    request
        .body(tonic::body::Body::new(full.map_err(|never| match never {})))
        .unwrap_or_default()
}

/// Sends it and reads the answer: the status from the trailers (or, for a trailers-only
/// answer, the headers), the partial-success message from the body.
async fn grpc_call(
    channel: &mut Channel,
    request: http::Request<tonic::body::Body>,
) -> Result<ExportResponse, tonic::Status> {
    use tower::{Service, ServiceExt};
    let response = channel
        .ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connecting: {}", causes(&e))))?
        .call(request)
        .await
        .map_err(|e| tonic::Status::unavailable(causes(&e)))?;
    if response.status() != http::StatusCode::OK {
        return Err(tonic::Status::unavailable(format!(
            "HTTP {} from a gRPC endpoint",
            response.status()
        )));
    }
    if let Some(status) = tonic::Status::from_header_map(response.headers())
        && status.code() != tonic::Code::Ok
    {
        return Err(status);
    }
    let collected = response
        .into_body()
        .collect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("reading the answer: {e}")))?;
    let trailers = collected.trailers().cloned();
    let data = collected.to_bytes();
    match trailers.as_ref().and_then(tonic::Status::from_header_map) {
        Some(status) if status.code() != tonic::Code::Ok => return Err(status),
        Some(_) => {}
        None if trailers.is_none() => return Err(tonic::Status::unavailable("answer without grpc-status")),
        None => {}
    }
    // One frame: compressed flag, length, message.
    if data.len() >= 5 {
        let compressed = data[0] == 1;
        let message = data.slice(5..);
        let message = if compressed { gunzip(&message) } else { message };
        return Ok(ExportResponse::decode(message).unwrap_or_default());
    }
    Ok(ExportResponse::default())
}

fn gunzip(data: &[u8]) -> Bytes {
    use std::io::Read;
    let mut out = Vec::new();
    let _ = flate2::read::GzDecoder::new(data).take(1 << 20).read_to_end(&mut out);
    Bytes::from(out)
}

fn gzip(data: &[u8]) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 4), flate2::Compression::fast());
    let _ = enc.write_all(data);
    Bytes::from(enc.finish().unwrap_or_default())
}

#[cfg(test)]
mod answer_tests {
    use super::*;

    #[test]
    fn errors_carry_their_causes() {
        let inner = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        #[derive(Debug)]
        struct Transport(std::io::Error);
        impl std::fmt::Display for Transport {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("transport error")
            }
        }
        impl std::error::Error for Transport {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert_eq!(
            causes(&Transport(inner)),
            "transport error: Connection refused (os error 111)"
        );
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn a_grpc_endpoint_is_not_a_delivery() {
        let err = otlp_http_answer(
            &headers(&[("grpc-status", "12"), ("content-type", "application/grpc")]),
            b"",
        )
        .expect_err("grpc");
        assert!(err.contains("looks like a gRPC endpoint"), "{err}");
        assert!(otlp_http_answer(&headers(&[("content-type", "text/html")]), b"<html>").is_err());
        assert!(otlp_http_answer(&headers(&[]), b"").is_err(), "no content type");
        assert!(otlp_http_answer(&headers(&[("content-type", "application/x-protobuf")]), b"\xff\xff").is_err());
    }

    #[test]
    fn otlp_answers_are_deliveries_and_partial_success_is_read() {
        let ok = otlp_http_answer(&headers(&[("content-type", "application/x-protobuf")]), b"").expect("empty");
        assert!(ok.partial_success.is_none());
        let partial = ExportResponse {
            partial_success: Some(PartialSuccess {
                rejected: 3,
                error_message: "bad ids".into(),
            }),
        };
        let body = partial.encode_to_vec();
        let got = otlp_http_answer(&headers(&[("content-type", "application/x-protobuf")]), &body).expect("proto");
        assert_eq!(got.partial_success.map(|p| p.rejected), Some(3));
        let json = br#"{"partialSuccess":{"rejectedLogRecords":"2","errorMessage":"too old"}}"#;
        let got =
            otlp_http_answer(&headers(&[("content-type", "application/json; charset=utf-8")]), json).expect("json");
        assert_eq!(
            got.partial_success.map(|p| (p.rejected, p.error_message)),
            Some((2, "too old".to_string()))
        );
    }
}
