//! OTLP records to index documents. Each document comes with its event time, which
//! picks its day partition.

use std::borrow::Cow;
use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{NumberDataPoint, metric::Data, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::{Map, Value as Json, json};
use tantivy::TantivyDocument;
use tantivy::schema::OwnedValue;

use super::samples::{MetricSample, number_samples};
use super::schema::{LogFields, MetricFields, SpanFields};

/// Renders an OTLP value as JSON: maps become objects, bytes become base64 like in
/// OTLP/JSON, ints stay exact.
pub(crate) fn any_value_to_json(value: &AnyValue) -> Json {
    match &value.value {
        // String-table references only occur in the profiles signal.
        None | Some(any_value::Value::StringValueStrindex(_)) => Json::Null,
        Some(any_value::Value::StringValue(s)) => Json::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Json::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Json::from(*i),
        Some(any_value::Value::DoubleValue(d)) => serde_json::Number::from_f64(*d).map_or(Json::Null, Json::Number),
        Some(any_value::Value::BytesValue(b)) => Json::String(hex::encode(b)),
        Some(any_value::Value::ArrayValue(a)) => Json::Array(a.values.iter().map(any_value_to_json).collect()),
        Some(any_value::Value::KvlistValue(kv)) => Json::Object(attributes_to_json(&kv.values)),
    }
}

pub(crate) fn attributes_to_json(attributes: &[KeyValue]) -> Map<String, Json> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Json::Null, any_value_to_json)))
        .collect()
}

pub(crate) fn string_attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
}

/// A resource naming `service` (tests).
#[cfg(test)]
pub(crate) fn service_resource(service: &str) -> Resource {
    Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(service.into())),
            }),
            ..KeyValue::default()
        }],
        ..Resource::default()
    }
}

pub(crate) fn resource_attrs(resource: &Option<Resource>) -> &[KeyValue] {
    resource.as_ref().map_or(&[], |r| r.attributes.as_slice())
}

pub(crate) fn to_i64(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

fn object(map: Map<String, Json>) -> OwnedValue {
    OwnedValue::from(map)
}

/// Documents of one signal with their event time (unix ns).
pub(crate) type TimedDocs = Vec<(i64, TantivyDocument)>;

/// `pattern_of(body, ts)` gives each record's log pattern id (the miner lives with the
/// caller, so this conversion stays a pure function of its inputs).
pub fn log_docs(
    f: &LogFields,
    req: &ExportLogsServiceRequest,
    pattern_of: &mut dyn FnMut(&str, i64) -> u64,
) -> TimedDocs {
    let mut out = Vec::new();
    for rl in &req.resource_logs {
        let rattrs = resource_attrs(&rl.resource);
        let service = string_attr(rattrs, "service.name").unwrap_or("unknown_service");
        let host = string_attr(rattrs, "host.name");
        let resource = attributes_to_json(rattrs);
        for sl in &rl.scope_logs {
            let scope = sl.scope.as_ref().map(|s| s.name.as_str()).unwrap_or("");
            for rec in &sl.log_records {
                let ts = if rec.time_unix_nano != 0 {
                    rec.time_unix_nano
                } else {
                    rec.observed_time_unix_nano
                };
                let ts = to_i64(ts);
                let mut doc = TantivyDocument::default();
                doc.add_i64(f.ts, ts);
                doc.add_i64(f.observed_ts, to_i64(rec.observed_time_unix_nano));
                doc.add_i64(f.severity_number, i64::from(rec.severity_number));
                doc.add_text(f.severity_text, &rec.severity_text);
                doc.add_text(f.service, service);
                if let Some(h) = host {
                    doc.add_text(f.host, h);
                }
                let body_text = match rec.body.as_ref().map(|b| (b, &b.value)) {
                    Some((_, Some(any_value::Value::StringValue(s)))) => {
                        doc.add_text(f.body, s);
                        Cow::Borrowed(s.as_str())
                    }
                    Some((b, Some(_))) => {
                        let structured = any_value_to_json(b);
                        let text = structured.to_string();
                        doc.add_text(f.body, &text);
                        doc.add_field_value(
                            f.body_structured,
                            &object(Map::from_iter([("value".to_string(), structured)])),
                        );
                        Cow::Owned(text)
                    }
                    _ => Cow::Borrowed(""),
                };
                doc.add_u64(f.pattern_id, pattern_of(&body_text, ts));
                doc.add_field_value(f.attributes, &object(attributes_to_json(&rec.attributes)));
                doc.add_field_value(f.resource, &object(resource.clone()));
                if !rec.trace_id.is_empty() {
                    doc.add_text(f.trace_id, hex::encode(&rec.trace_id));
                }
                if !rec.span_id.is_empty() {
                    doc.add_text(f.span_id, hex::encode(&rec.span_id));
                }
                doc.add_text(f.scope, scope);
                if !rec.event_name.is_empty() {
                    doc.add_text(f.event_name, &rec.event_name);
                }
                doc.add_u64(f.flags, u64::from(rec.flags));
                doc.add_u64(f.dropped_attributes, u64::from(rec.dropped_attributes_count));
                out.push((ts, doc));
            }
        }
    }
    out
}

pub(crate) fn span_docs(f: &SpanFields, req: &ExportTraceServiceRequest) -> TimedDocs {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let rattrs = resource_attrs(&rs.resource);
        let service = string_attr(rattrs, "service.name").unwrap_or("unknown_service");
        let resource = attributes_to_json(rattrs);
        for ss in &rs.scope_spans {
            let scope = ss.scope.as_ref().map(|s| s.name.as_str()).unwrap_or("");
            for span in &ss.spans {
                let start = to_i64(span.start_time_unix_nano);
                let end = to_i64(span.end_time_unix_nano.max(span.start_time_unix_nano));
                let mut doc = TantivyDocument::default();
                doc.add_text(f.trace_id, hex::encode(&span.trace_id));
                doc.add_text(f.span_id, hex::encode(&span.span_id));
                if !span.parent_span_id.is_empty() {
                    doc.add_text(f.parent_span_id, hex::encode(&span.parent_span_id));
                }
                if !span.trace_state.is_empty() {
                    doc.add_text(f.trace_state, &span.trace_state);
                }
                doc.add_text(f.service, service);
                doc.add_text(f.name, &span.name);
                doc.add_i64(f.kind, i64::from(span.kind));
                doc.add_i64(f.start_ts, start);
                doc.add_i64(f.end_ts, end);
                doc.add_i64(f.duration_ns, end - start);
                let (code, message) = span.status.as_ref().map_or((0, ""), |s| (s.code, s.message.as_str()));
                doc.add_i64(f.status_code, i64::from(code));
                if !message.is_empty() {
                    doc.add_text(f.status_message, message);
                }
                doc.add_field_value(f.attributes, &object(attributes_to_json(&span.attributes)));
                doc.add_field_value(f.resource, &object(resource.clone()));
                doc.add_text(f.scope, scope);
                let events: Vec<Json> = span
                    .events
                    .iter()
                    .map(|e| json!({"time_unix_nano": e.time_unix_nano.to_string(), "name": e.name, "attributes": attributes_to_json(&e.attributes)}))
                    .collect();
                let links: Vec<Json> = span
                    .links
                    .iter()
                    .map(|l| json!({"trace_id": hex::encode(&l.trace_id), "span_id": hex::encode(&l.span_id), "attributes": attributes_to_json(&l.attributes)}))
                    .collect();
                doc.add_field_value(
                    f.extra,
                    &object(Map::from_iter([
                        ("events".to_string(), Json::Array(events)),
                        ("links".to_string(), Json::Array(links)),
                        (
                            "dropped_attributes_count".to_string(),
                            Json::from(span.dropped_attributes_count),
                        ),
                    ])),
                );
                doc.add_u64(f.flags, u64::from(span.flags));
                out.push((start, doc));
            }
        }
    }
    out
}

/// Resource attributes that identify where a series comes from and therefore become
/// labels. The rest of the resource is stored beside the point but does not split
/// series (as Prometheus keeps it in `target_info`).
pub(crate) const IDENTIFYING_RESOURCE_KEYS: [&str; 7] = [
    "service.name",
    "service.namespace",
    "service.instance.id",
    "host.name",
    "k8s.namespace.name",
    "k8s.pod.name",
    "container.name",
];

/// FNV-1a: a stable 64-bit hash for what is persisted or agreed between processes (series
/// ids, stream partitions), where std's randomly seeded hasher will not do.
pub(crate) fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// [`fnv1a`] of several strings, each ended by 0xff (so `["ab", "c"]` and `["a", "bc"]`
/// differ).
fn fnv1a_parts(parts: &[&str]) -> u64 {
    fnv1a(parts.iter().flat_map(|p| p.bytes().chain(std::iter::once(0xff))))
}

pub(crate) fn label_string(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An attribute's value as a label value, as [`label_string`] gives it, without making a
/// JSON value first for the common case, a string (this runs for every metric point).
pub(crate) fn attribute_label(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        _ => label_string(&value.map_or(Json::Null, any_value_to_json)),
    }
}

/// The series identity of a point: name plus sorted labels.
pub(crate) fn series_id(name: &str, labels: &BTreeMap<String, String>) -> u64 {
    let mut parts: Vec<&str> = vec![name];
    for (k, v) in labels {
        parts.push(k);
        parts.push(v);
    }
    fnv1a_parts(&parts)
}

/// What every point of one OTLP metric shares.
pub(super) struct PointCommon<'a> {
    pub(super) name: &'a str,
    pub(super) unit: &'a str,
    pub(super) kind: &'static str,
    pub(super) temporality: &'static str,
    pub(super) monotonic: bool,
    pub(super) resource_labels: &'a BTreeMap<String, String>,
    pub(super) resource: &'a Map<String, Json>,
}

fn temporality_name(t: i32) -> &'static str {
    match t {
        1 => "delta",
        2 => "cumulative",
        _ => "",
    }
}

// The arguments are the parts of one OTLP data point; a struct for them would only
// be unpacked again here.
#[allow(clippy::too_many_arguments)]
fn point_doc(
    f: &MetricFields,
    c: &PointCommon<'_>,
    attributes: &[KeyValue],
    start: u64,
    time: u64,
    value: f64,
    count_sum: Option<(u64, f64)>,
    detail: Option<Map<String, Json>>,
) -> (i64, TantivyDocument) {
    let labels = super::samples::point_labels(c.resource_labels, attributes);
    let ts = to_i64(time);
    let mut doc = TantivyDocument::default();
    doc.add_text(f.name, c.name);
    doc.add_u64(f.series_id, series_id(c.name, &labels));
    for (k, v) in &labels {
        doc.add_text(f.label_pairs, format!("{k}={v}"));
    }
    let label_json: Map<String, Json> = labels.into_iter().map(|(k, v)| (k, Json::String(v))).collect();
    doc.add_field_value(f.labels, &object(label_json));
    doc.add_i64(f.ts, ts);
    doc.add_i64(f.start_ts, to_i64(start));
    doc.add_f64(f.value, value);
    doc.add_text(f.kind, c.kind);
    if !c.temporality.is_empty() {
        doc.add_text(f.temporality, c.temporality);
    }
    doc.add_bool(f.monotonic, c.monotonic);
    if let Some((count, sum)) = count_sum {
        doc.add_u64(f.count, count);
        doc.add_f64(f.sum, sum);
    }
    if let Some(detail) = detail {
        doc.add_field_value(f.detail, &object(detail));
    }
    if !c.unit.is_empty() {
        doc.add_text(f.unit, c.unit);
    }
    doc.add_field_value(f.resource, &object(c.resource.clone()));
    (ts, doc)
}

/// A point's value; a point without a recorded value (a staleness marker) is stored as
/// Prometheus' marker NaN, which ends the series for PromQL and which every other reader skips
/// as non-finite.
pub(crate) fn number_value(p: &NumberDataPoint) -> f64 {
    if p.flags & 1 != 0 {
        return f64::from_bits(vigil_promql::STALE_MARKER_BITS);
    }
    match p.value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => f64::NAN,
    }
}

pub(crate) fn mean(count: u64, sum: f64) -> f64 {
    if count == 0 { 0.0 } else { sum / count as f64 }
}

fn f64_json(v: f64) -> Json {
    serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number)
}

/// A metric request's points: gauges and sums as samples for the time-series store,
/// histograms and summaries as documents of the metric index.
pub(crate) fn metric_docs(f: &MetricFields, req: &ExportMetricsServiceRequest) -> (TimedDocs, Vec<MetricSample>) {
    let mut out = Vec::new();
    let mut samples = Vec::new();
    for rm in &req.resource_metrics {
        let rattrs = resource_attrs(&rm.resource);
        let resource = attributes_to_json(rattrs);
        let resource_labels: BTreeMap<String, String> = IDENTIFYING_RESOURCE_KEYS
            .iter()
            .filter_map(|k| resource.get(*k).map(|v| (k.to_string(), label_string(v))))
            .collect();
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let mut c = PointCommon {
                    name: &m.name,
                    unit: &m.unit,
                    kind: "gauge",
                    temporality: "",
                    monotonic: false,
                    resource_labels: &resource_labels,
                    resource: &resource,
                };
                match &m.data {
                    Some(Data::Gauge(g)) => number_samples(&c, &g.data_points, &mut samples),
                    Some(Data::Sum(s)) => {
                        c.kind = "sum";
                        c.temporality = temporality_name(s.aggregation_temporality);
                        c.monotonic = s.is_monotonic;
                        number_samples(&c, &s.data_points, &mut samples);
                    }
                    Some(Data::Histogram(h)) => {
                        c.kind = "histogram";
                        c.temporality = temporality_name(h.aggregation_temporality);
                        for p in &h.data_points {
                            let sum = p.sum.unwrap_or(0.0);
                            let mut detail = Map::new();
                            detail.insert("bucket_counts".into(), Json::from(p.bucket_counts.clone()));
                            detail.insert(
                                "explicit_bounds".into(),
                                Json::Array(p.explicit_bounds.iter().map(|b| f64_json(*b)).collect()),
                            );
                            if let Some(min) = p.min {
                                detail.insert("min".into(), f64_json(min));
                            }
                            if let Some(max) = p.max {
                                detail.insert("max".into(), f64_json(max));
                            }
                            out.push(point_doc(
                                f,
                                &c,
                                &p.attributes,
                                p.start_time_unix_nano,
                                p.time_unix_nano,
                                mean(p.count, sum),
                                Some((p.count, sum)),
                                Some(detail),
                            ));
                        }
                    }
                    Some(Data::ExponentialHistogram(h)) => {
                        c.kind = "exponential_histogram";
                        c.temporality = temporality_name(h.aggregation_temporality);
                        for p in &h.data_points {
                            let sum = p.sum.unwrap_or(0.0);
                            let buckets = |b: &Option<
                                opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets,
                            >| {
                                b.as_ref().map_or(
                                    Json::Null,
                                    |b| json!({"offset": b.offset, "bucket_counts": b.bucket_counts}),
                                )
                            };
                            let detail = Map::from_iter([
                                ("scale".to_string(), Json::from(p.scale)),
                                ("zero_count".to_string(), Json::from(p.zero_count)),
                                ("positive".to_string(), buckets(&p.positive)),
                                ("negative".to_string(), buckets(&p.negative)),
                            ]);
                            out.push(point_doc(
                                f,
                                &c,
                                &p.attributes,
                                p.start_time_unix_nano,
                                p.time_unix_nano,
                                mean(p.count, sum),
                                Some((p.count, sum)),
                                Some(detail),
                            ));
                        }
                    }
                    Some(Data::Summary(s)) => {
                        c.kind = "summary";
                        for p in &s.data_points {
                            let quantiles: Vec<Json> = p
                                .quantile_values
                                .iter()
                                .map(|q| json!({"quantile": f64_json(q.quantile), "value": f64_json(q.value)}))
                                .collect();
                            let detail = Map::from_iter([("quantiles".to_string(), Json::Array(quantiles))]);
                            out.push(point_doc(
                                f,
                                &c,
                                &p.attributes,
                                p.start_time_unix_nano,
                                p.time_unix_nano,
                                mean(p.count, p.sum),
                                Some((p.count, p.sum)),
                                Some(detail),
                            ));
                        }
                    }
                    None => {}
                }
            }
        }
    }
    (out, samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_id_is_stable_and_label_order_independent() {
        let a: BTreeMap<String, String> = [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        let b: BTreeMap<String, String> = [("b".into(), "2".into()), ("a".into(), "1".into())].into();
        assert_eq!(series_id("m", &a), series_id("m", &b));
        assert_ne!(series_id("m", &a), series_id("n", &a));
        // Pinned: ids are persisted in the indexes, a change would split every series.
        assert_eq!(series_id("m", &a), fnv1a_parts(&["m", "a", "1", "b", "2"]));
        // Separators keep ("ab","c") and ("a","bc") apart.
        assert_ne!(fnv1a_parts(&["ab", "c"]), fnv1a_parts(&["a", "bc"]));
    }
}
