//! Prometheus remote-write 1.0 receiver: `POST /prometheus/api/v1/write`, a snappy-compressed
//! `prometheus.WriteRequest`, turned into an OTLP metrics request and sent down the same path
//! as OTLP (limits, WAL, acknowledgement only once durable).
//!
//! The mapping follows the OpenTelemetry Prometheus compatibility spec: the metric keeps its
//! Prometheus name; `job` becomes `service.name` (a `namespace/name` job also sets
//! `service.namespace`) and `instance` becomes `service.instance.id` on the resource; every
//! other label is a point attribute. A series is a monotonic cumulative sum when the
//! metadata Prometheus sends (every minute, in requests of their own) says it is a counter,
//! or a histogram's or summary's `_bucket`/`_count`/`_sum`; without metadata, a `_total`
//! name or a `_bucket` with an `le` label is one; everything else is a gauge (the spec's
//! rule for unknown types). A staleness marker becomes what the OpenTelemetry Prometheus
//! receiver makes of it: a point flagged `FLAG_NO_RECORDED_VALUE`; it is stored (it ends the
//! series for PromQL, as in Prometheus) and the detectors skip it.
//!
//! Prometheus retries a failed request with the same body, so a retry is recognised by a
//! hash of its compressed body and stored once. Answers: 204 when everything was stored;
//! 400 for a body that is not a snappy-compressed WriteRequest (Prometheus drops it, as it
//! should: resending cannot fix it); 429 and 503 with `Retry-After` under pressure (which
//! Prometheus backs off on and retries).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, StatusCode};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use sha2::Digest;

use super::IngestError;
use super::service::{ExportRequest, Ingest, Transport};
use crate::wal::Signal;

/// Metric families whose type is remembered from metadata; past it, new families fall back
/// to the naming rules (bounded like every other table).
const MAX_KNOWN_FAMILIES: usize = 100_000;

/// The bit pattern Prometheus writes as a staleness marker (a NaN no sample can have).
const STALE_NAN: u64 = vigil_promql::STALE_MARKER_BITS;
/// OTLP's `DataPointFlags.FLAG_NO_RECORDED_VALUE`.
const NO_RECORDED_VALUE: u32 = 1;

/// `prometheus.WriteRequest` (remote-write 1.0, `prompb/remote.proto`).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub(crate) timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub(crate) metadata: Vec<MetricMetadata>,
}

/// `prometheus.TimeSeries`; exemplars (3) are not read, native histograms (4) are counted and
/// refused.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub(crate) labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub(crate) samples: Vec<Sample>,
    #[prost(message, repeated, tag = "4")]
    pub(crate) histograms: Vec<NativeHistogram>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Label {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(string, tag = "2")]
    pub(crate) value: String,
}

/// `prometheus.Sample`: a value at a time in unix milliseconds.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Sample {
    #[prost(double, tag = "1")]
    pub(crate) value: f64,
    #[prost(int64, tag = "2")]
    pub(crate) timestamp: i64,
}

/// A native histogram sample; only its presence is read (its timestamp, field 15).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct NativeHistogram {
    #[prost(int64, tag = "15")]
    pub(crate) timestamp: i64,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct MetricMetadata {
    /// `MetricType`: 0 unknown, 1 counter, 2 gauge, 3 histogram, 4 gauge histogram, 5 summary,
    /// 6 info, 7 stateset.
    #[prost(int32, tag = "1")]
    pub(crate) r#type: i32,
    #[prost(string, tag = "2")]
    pub(crate) metric_family_name: String,
    #[prost(string, tag = "4")]
    pub(crate) help: String,
    #[prost(string, tag = "5")]
    pub(crate) unit: String,
}

const COUNTER: i32 = 1;
const HISTOGRAM: i32 = 3;
const GAUGE_HISTOGRAM: i32 = 4;
const SUMMARY: i32 = 5;

/// What the receiver remembers between requests: metric family types and help texts from
/// metadata.
#[derive(Default)]
pub(crate) struct Families {
    types: Mutex<HashMap<String, i32>>,
    help: Mutex<HashMap<String, String>>,
}

impl Families {
    fn learn(&self, metadata: &[MetricMetadata]) {
        let mut types = self.types.lock().unwrap_or_else(|e| e.into_inner());
        let mut help = self.help.lock().unwrap_or_else(|e| e.into_inner());
        for m in metadata {
            if types.len() < MAX_KNOWN_FAMILIES || types.contains_key(&m.metric_family_name) {
                types.insert(m.metric_family_name.clone(), m.r#type);
                if !m.help.is_empty() {
                    help.insert(m.metric_family_name.clone(), m.help.clone());
                }
            }
        }
    }

    /// The `# HELP` text of the series `name`: its family's (`foo` for `foo_bucket`,
    /// `foo_count` and `foo_sum` of a histogram or summary), if metadata brought one. It
    /// travels as the OTLP metric's description.
    fn help_of(&self, name: &str) -> String {
        let help = self.help.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(text) = help.get(name) {
            return text.clone();
        }
        ["_bucket", "_count", "_sum"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find_map(|family| help.get(family).cloned())
            .unwrap_or_default()
    }

    /// Whether the series `name` (with label `le` or not) accumulates: a monotonic cumulative
    /// sum rather than a gauge.
    fn is_cumulative(&self, name: &str, has_le: bool) -> bool {
        let types = self.types.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&t) = types.get(name) {
            return t == COUNTER;
        }
        for suffix in ["_total", "_bucket", "_count", "_sum"] {
            let Some(family) = name.strip_suffix(suffix) else {
                continue;
            };
            match types.get(family) {
                Some(&COUNTER) => return suffix == "_total",
                Some(&HISTOGRAM) | Some(&SUMMARY) => return suffix != "_total",
                Some(&GAUGE_HISTOGRAM) | Some(_) => return false,
                None => {}
            }
        }
        name.ends_with("_total") || (name.ends_with("_bucket") && has_le)
    }
}

/// State of the remote-write route.
pub(crate) struct RemoteWrite {
    pub(crate) ingest: Arc<Ingest>,
    pub(crate) families: Families,
}

/// `POST /prometheus/api/v1/write`.
pub(crate) async fn write(State(rw): State<Arc<RemoteWrite>>, headers: HeaderMap, body: Body) -> Response {
    let result = handle(&rw, &headers, body).await;
    let outcome = match &result {
        Ok(rejected) if *rejected > 0 => "partial",
        Ok(_) => "ok",
        Err(e) => e.outcome(),
    };
    rw.ingest
        .count_request(Transport::RemoteWrite, Signal::Metrics, outcome);
    match result {
        Ok(0) => StatusCode::NO_CONTENT.into_response(),
        Ok(rejected) => (
            StatusCode::OK,
            format!("{rejected} samples were not stored (see vigil_ingest_rejected_total)\n"),
        )
            .into_response(),
        Err(err) => failure(err),
    }
}

async fn handle(rw: &RemoteWrite, headers: &HeaderMap, body: Body) -> Result<u64, IngestError> {
    let ingest = &rw.ingest;
    ingest.authenticate(headers.get(AUTHORIZATION).map(HeaderValue::as_bytes))?;
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type.contains("io.prometheus.write.v2") {
        return Err(IngestError::UnsupportedMediaType(
            "remote-write 2.0 is not supported yet; send remote-write 1.0 (protobuf_message: prometheus.WriteRequest)"
                .into(),
        ));
    }
    let encoding = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !encoding.eq_ignore_ascii_case("snappy") {
        return Err(IngestError::UnsupportedMediaType(format!(
            "remote write needs Content-Encoding: snappy, got {encoding:?}"
        )));
    }
    let compressed = super::http::read_body(ingest, headers, body).await?;
    // A retry carries the same body: its hash makes it a duplicate, not a second copy.
    let batch_id = format!("prw-{}", hex::encode(&sha2::Sha256::digest(&compressed)[..16]));
    let max = ingest.config().max_decompressed_bytes;
    let (request, decoded_len, refused) = tokio::task::spawn_blocking(move || decode(&compressed, max))
        .await
        .map_err(|e| IngestError::Internal(format!("decode task failed: {e}")))??;
    rw.families.learn(&request.metadata);
    let (otlp, _stale) = to_otlp(&request, &rw.families);
    if otlp.resource_metrics.is_empty() {
        // Metadata alone: nothing to store.
        return Ok(refused);
    }
    let accepted = ingest
        .export(ExportRequest::Metrics(otlp), Some(&batch_id), decoded_len)
        .await?;
    Ok(accepted.rejected + refused)
}

/// Snappy (block format) and protobuf, under the decompressed-size limit. Also returns the
/// decompressed length (for admission control) and the native-histogram samples refused.
fn decode(compressed: &[u8], max: usize) -> Result<(WriteRequest, usize, u64), IngestError> {
    let len = snap::raw::decompress_len(compressed)
        .map_err(|e| IngestError::Invalid(format!("body is not snappy-compressed (block format): {e}")))?;
    if len > max {
        return Err(IngestError::TooLarge(format!(
            "decompressed body of {len} bytes exceeds the limit of {max} bytes (otlp.max_decompressed_bytes)"
        )));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(compressed)
        .map_err(|e| IngestError::Invalid(format!("body is not snappy-compressed (block format): {e}")))?;
    let request = WriteRequest::decode(raw.as_slice())
        .map_err(|e| IngestError::Invalid(format!("malformed prometheus.WriteRequest: {e}")))?;
    let refused = request.timeseries.iter().map(|t| t.histograms.len() as u64).sum();
    Ok((request, raw.len(), refused))
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// The OTLP request for a WriteRequest, grouped by resource (job, instance) and metric name;
/// also the number of staleness markers among the points.
pub(crate) fn to_otlp(request: &WriteRequest, families: &Families) -> (ExportMetricsServiceRequest, u64) {
    // resource (job, instance) → metric name → points
    type Points = (bool, Vec<NumberDataPoint>);
    let mut grouped: BTreeMap<(String, String), BTreeMap<String, Points>> = BTreeMap::new();
    let mut stale = 0u64;
    for series in &request.timeseries {
        let (mut name, mut job, mut instance) = ("", "", "");
        let mut attributes = Vec::with_capacity(series.labels.len());
        let mut has_le = false;
        for l in &series.labels {
            match l.name.as_str() {
                "__name__" => name = &l.value,
                "job" => job = &l.value,
                "instance" => instance = &l.value,
                other => {
                    has_le |= other == "le";
                    attributes.push(string_kv(other, &l.value));
                }
            }
        }
        if name.is_empty() || series.samples.is_empty() {
            continue;
        }
        let cumulative = families.is_cumulative(name, has_le);
        let points = &mut grouped
            .entry((job.to_string(), instance.to_string()))
            .or_default()
            .entry(name.to_string())
            .or_insert_with(|| (cumulative, Vec::new()))
            .1;
        for s in &series.samples {
            let marker = s.value.to_bits() == STALE_NAN;
            stale += u64::from(marker);
            points.push(NumberDataPoint {
                attributes: attributes.clone(),
                time_unix_nano: u64::try_from(s.timestamp).unwrap_or(0).saturating_mul(1_000_000),
                value: Some(number_data_point::Value::AsDouble(s.value)),
                flags: if marker { NO_RECORDED_VALUE } else { 0 },
                ..Default::default()
            });
        }
    }
    let resource_metrics = grouped
        .into_iter()
        .map(|((job, instance), metrics)| {
            let mut attributes = Vec::new();
            match job.split_once('/') {
                Some((namespace, service)) => {
                    attributes.push(string_kv("service.namespace", namespace));
                    attributes.push(string_kv("service.name", service));
                }
                None if !job.is_empty() => attributes.push(string_kv("service.name", &job)),
                None => {}
            }
            if !instance.is_empty() {
                attributes.push(string_kv("service.instance.id", &instance));
            }
            let metrics = metrics
                .into_iter()
                .filter(|(_, (_, points))| !points.is_empty())
                .map(|(name, (cumulative, data_points))| Metric {
                    description: families.help_of(&name),
                    name,
                    data: Some(if cumulative {
                        metric::Data::Sum(Sum {
                            data_points,
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            is_monotonic: true,
                        })
                    } else {
                        metric::Data::Gauge(Gauge { data_points })
                    }),
                    ..Default::default()
                })
                .collect::<Vec<_>>();
            ResourceMetrics {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .filter(|rm| rm.scope_metrics.iter().any(|s| !s.metrics.is_empty()))
        .collect();
    (ExportMetricsServiceRequest { resource_metrics }, stale)
}

/// Plain text, as Prometheus logs it; `Retry-After` when retrying later can help.
fn failure(err: IngestError) -> Response {
    let status = err.http_status();
    if status.is_server_error() {
        tracing::warn!(error = %err, status = status.as_u16(), "remote write failed");
    } else {
        tracing::debug!(error = %err, status = status.as_u16(), "remote write refused");
    }
    let mut response = (status, format!("{err}\n")).into_response();
    err.add_http_headers(response.headers_mut());
    response
}

#[cfg(test)]
mod tests;
