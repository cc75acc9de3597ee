//! Shipping the buffer to the collector: in order, one batch at a time, each with its
//! idempotency key, retried with exponential backoff and jitter until the collector
//! takes it (honouring `Retry-After` and RESOURCE_EXHAUSTED), acknowledged in the
//! buffer only after the collector said yes.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, logs_service_client::LogsServiceClient,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, metrics_service_client::MetricsServiceClient,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, trace_service_client::TraceServiceClient,
};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

use crate::buffer::{DiskBuffer, Kind, Record};
use crate::config::{CollectorConfig, Protocol};
use crate::telemetry::AgentMetrics;

pub const BATCH_ID_HEADER: &str = "x-vigil-batch-id";

enum Transport {
    Http { client: reqwest::Client, base: String },
    Grpc(Box<GrpcClients>),
}

struct GrpcClients {
    logs: LogsServiceClient<Channel>,
    metrics: MetricsServiceClient<Channel>,
    traces: TraceServiceClient<Channel>,
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
                let channel = endpoint.connect_lazy();
                let limit = 64 * 1024 * 1024;
                let mut logs = LogsServiceClient::new(channel.clone()).max_encoding_message_size(limit);
                let mut metrics = MetricsServiceClient::new(channel.clone()).max_encoding_message_size(limit);
                let mut traces = TraceServiceClient::new(channel).max_encoding_message_size(limit);
                if config.gzip {
                    logs = logs.send_compressed(CompressionEncoding::Gzip);
                    metrics = metrics.send_compressed(CompressionEncoding::Gzip);
                    traces = traces.send_compressed(CompressionEncoding::Gzip);
                }
                Transport::Grpc(Box::new(GrpcClients { logs, metrics, traces }))
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
    pub async fn run(mut self, cancel: CancellationToken, drain: Duration) {
        let mut after = self.buffer.acked();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if deadline.is_none() && cancel.is_cancelled() {
                deadline = Some(tokio::time::Instant::now() + drain);
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return;
            }
            let buffer = Arc::clone(&self.buffer);
            let next = tokio::task::spawn_blocking(move || buffer.next_after(after)).await;
            let record = match next {
                Ok(Ok(Some(r))) => r,
                Ok(Ok(None)) => {
                    if deadline.is_some() {
                        return;
                    }
                    tokio::select! {
                        () = self.buffer.wait_after(after) => {}
                        () = cancel.cancelled() => {}
                    }
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "reading the disk buffer failed; retrying");
                    self.pause(Duration::from_secs(1), &cancel, deadline).await;
                    continue;
                }
                Err(_) => return,
            };
            if !record.payload.is_empty() && !self.deliver(&record, &cancel, deadline).await {
                // Cancelled and out of time; the record stays in the buffer.
                return;
            }
            after = record.seq;
            let buffer = Arc::clone(&self.buffer);
            let seq = record.seq;
            match tokio::task::spawn_blocking(move || buffer.ack(seq)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "recording an acknowledgement failed"),
                Err(_) => return,
            }
            self.metrics.update_buffer(self.buffer.stats());
        }
    }

    /// Sends one record until it is taken or rejected. False if it gave up because the
    /// drain deadline passed.
    async fn deliver(
        &mut self,
        record: &Record,
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

    async fn send(&mut self, record: &Record, batch_id: &str) -> Outcome {
        let token = self.config.token.as_ref().map(|t| format!("Bearer {}", t.expose()));
        match &mut self.transport {
            Transport::Http { client, base } => {
                let path = match record.kind {
                    Kind::Logs => "/v1/logs",
                    Kind::Metrics => "/v1/metrics",
                    Kind::Traces => "/v1/traces",
                };
                let mut request = client
                    .post(format!("{base}{path}"))
                    .header("content-type", "application/x-protobuf")
                    .header(BATCH_ID_HEADER, batch_id);
                if let Some(t) = &token {
                    request = request.header("authorization", t);
                }
                let body = if self.config.gzip {
                    request = request.header("content-encoding", "gzip");
                    gzip(&record.payload)
                } else {
                    record.payload.clone()
                };
                match request.body(body).send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        let retry_after = resp
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .map(Duration::from_secs);
                        if status.is_success() {
                            return Outcome::Sent;
                        }
                        let text = resp.text().await.unwrap_or_default();
                        let why = format!("HTTP {status}: {}", text.chars().take(300).collect::<String>());
                        match status.as_u16() {
                            400 | 413 | 415 | 422 => Outcome::Rejected(why),
                            _ => Outcome::Retry(why, retry_after),
                        }
                    }
                    Err(e) => Outcome::Retry(format!("{e}"), None),
                }
            }
            Transport::Grpc(clients) => {
                let GrpcClients { logs, metrics, traces } = &mut **clients;
                let result = match record.kind {
                    Kind::Logs => match ExportLogsServiceRequest::decode(record.payload.clone()) {
                        Ok(m) => logs
                            .export(grpc_request(m, batch_id, token.as_deref()))
                            .await
                            .map(|_| ()),
                        Err(e) => return Outcome::Rejected(format!("undecodable buffered batch: {e}")),
                    },
                    Kind::Metrics => match ExportMetricsServiceRequest::decode(record.payload.clone()) {
                        Ok(m) => metrics
                            .export(grpc_request(m, batch_id, token.as_deref()))
                            .await
                            .map(|_| ()),
                        Err(e) => return Outcome::Rejected(format!("undecodable buffered batch: {e}")),
                    },
                    Kind::Traces => match ExportTraceServiceRequest::decode(record.payload.clone()) {
                        Ok(m) => traces
                            .export(grpc_request(m, batch_id, token.as_deref()))
                            .await
                            .map(|_| ()),
                        Err(e) => return Outcome::Rejected(format!("undecodable buffered batch: {e}")),
                    },
                };
                match result {
                    Ok(()) => Outcome::Sent,
                    Err(status) => {
                        let why = format!("gRPC {:?}: {}", status.code(), status.message());
                        match status.code() {
                            tonic::Code::InvalidArgument => Outcome::Rejected(why),
                            _ => Outcome::Retry(why, None),
                        }
                    }
                }
            }
        }
    }
}

fn grpc_request<T>(message: T, batch_id: &str, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(v) = batch_id.parse() {
        request.metadata_mut().insert(BATCH_ID_HEADER, v);
    }
    if let Some(t) = token
        && let Ok(v) = t.parse()
    {
        request.metadata_mut().insert("authorization", v);
    }
    request
}

fn gzip(data: &[u8]) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 4), flate2::Compression::fast());
    let _ = enc.write_all(data);
    Bytes::from(enc.finish().unwrap_or_default())
}
