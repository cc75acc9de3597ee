//! What the detectors need from each request, extracted in the same pass that makes the
//! index documents (the pattern ids come from the same miner call that stamps the index).

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::pipeline::DetectorInput;
use crate::storage::convert::{
    IDENTIFYING_RESOURCE_KEYS, attributes_to_json, label_string, mean, number_value, resource_attrs, string_attr,
    to_i64,
};
use crate::storage::{point_labels, series_id};

/// Who sent a resource's records: its service (`unknown_service` when unnamed, to be joined
/// by host or pod later), host and pod.
fn who(resource: &Option<Resource>) -> (&str, Option<String>, Option<String>) {
    let attrs = resource_attrs(resource);
    (
        string_attr(attrs, "service.name").unwrap_or("unknown_service"),
        string_attr(attrs, "host.name").map(str::to_string),
        string_attr(attrs, "k8s.pod.name").map(str::to_string),
    )
}

/// What the detectors need from a log request: one entry per record, in request order;
/// `assignments` are the pattern ids the miner gave the same records, in the same order.
pub(crate) fn log_inputs(req: &ExportLogsServiceRequest, assignments: &[(u64, bool, String)]) -> Vec<DetectorInput> {
    let mut out = Vec::with_capacity(assignments.len());
    let mut next = assignments.iter();
    for rl in &req.resource_logs {
        let (service, host, pod) = who(&rl.resource);
        for sl in &rl.scope_logs {
            for rec in &sl.log_records {
                let Some((pattern_id, is_new, template)) = next.next() else {
                    return out;
                };
                let ts = if rec.time_unix_nano != 0 {
                    rec.time_unix_nano
                } else {
                    rec.observed_time_unix_nano
                };
                out.push(DetectorInput::Log {
                    service: service.to_string(),
                    pattern_id: *pattern_id,
                    is_new: *is_new,
                    template: template.clone(),
                    severity: rec.severity_number,
                    ts_ms: to_i64(ts) / 1_000_000,
                    host: host.clone(),
                    pod: pod.clone(),
                    trace_id: (!rec.trace_id.is_empty()).then(|| hex::encode(&rec.trace_id)),
                });
            }
        }
    }
    out
}

/// The service a client span calls, as OpenTelemetry names it: `peer.service`, or the newer
/// `service.peer.name`.
fn peer_service(attrs: &[KeyValue]) -> Option<&str> {
    string_attr(attrs, "peer.service").or_else(|| string_attr(attrs, "service.peer.name"))
}

/// Finished spans for trace RED: service, operation (span name), end time, duration, error.
pub(crate) fn span_inputs(req: &ExportTraceServiceRequest) -> Vec<DetectorInput> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let (service, host, pod) = who(&rs.resource);
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                // Only entry points measure what callers see (RED): server and consumer spans,
                // or roots of unknown kind. Every span feeds the topology.
                let entry =
                    matches!(span.kind, 2 | 5) || (span.kind == 0 || span.kind == 1) && span.parent_span_id.is_empty();
                if span.end_time_unix_nano < span.start_time_unix_nano {
                    continue;
                }
                let id8 = |b: &[u8]| <[u8; 8]>::try_from(b).ok().map(u64::from_be_bytes);
                let Some(span_id) = id8(&span.span_id) else { continue };
                let error = span.status.as_ref().is_some_and(|s| s.code == 2);
                // A client or producer span that names the service it calls: the edge to it
                // exists even when that service answers nothing (it is down).
                let peer = if matches!(span.kind, 3 | 4) {
                    peer_service(&span.attributes)
                        .filter(|p| *p != service)
                        .map(str::to_string)
                } else {
                    None
                };
                out.push(DetectorInput::Span {
                    service: service.to_string(),
                    operation: span.name.clone(),
                    end_ms: to_i64(span.end_time_unix_nano) / 1_000_000,
                    duration_s: (span.end_time_unix_nano - span.start_time_unix_nano) as f64 / 1e9,
                    error,
                    entry,
                    span_id,
                    parent_span_id: id8(&span.parent_span_id),
                    trace_id: hex::encode(&span.trace_id),
                    host: host.clone(),
                    pod: pod.clone(),
                    peer,
                });
            }
        }
    }
    out
}

/// Gauge and sum points with the same labels the index gives them; histograms contribute
/// their mean. Cumulative monotonic sums are marked so the pipeline can turn them into rates.
pub(crate) fn metric_inputs(req: &ExportMetricsServiceRequest) -> Vec<DetectorInput> {
    let mut out = Vec::new();
    for rm in &req.resource_metrics {
        let rattrs = resource_attrs(&rm.resource);
        let service = string_attr(rattrs, "service.name").map(str::to_string);
        let resource = attributes_to_json(rattrs);
        let resource_labels: BTreeMap<String, String> = IDENTIFYING_RESOURCE_KEYS
            .iter()
            .filter_map(|k| resource.get(*k).map(|v| (k.to_string(), label_string(v))))
            .collect();
        let mut push = |name: &str, unit: &str, attrs: &[KeyValue], time: u64, value: f64, cumulative: bool| {
            let labels = point_labels(&resource_labels, attrs);
            out.push(DetectorInput::Metric {
                series_id: series_id(name, &labels),
                name: name.to_string(),
                service: service.clone(),
                labels,
                unit: unit.to_string(),
                ts_ms: to_i64(time) / 1_000_000,
                value,
                cumulative,
            });
        };
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                match &m.data {
                    // A point without a recorded value marks a series' end, not a value.
                    Some(Data::Gauge(g)) => {
                        for p in g.data_points.iter().filter(|p| p.flags & 1 == 0) {
                            push(
                                &m.name,
                                &m.unit,
                                &p.attributes,
                                p.time_unix_nano,
                                number_value(p),
                                false,
                            );
                        }
                    }
                    Some(Data::Sum(s)) => {
                        let cumulative = s.is_monotonic && s.aggregation_temporality == 2;
                        for p in s.data_points.iter().filter(|p| p.flags & 1 == 0) {
                            push(
                                &m.name,
                                &m.unit,
                                &p.attributes,
                                p.time_unix_nano,
                                number_value(p),
                                cumulative,
                            );
                        }
                    }
                    Some(Data::Histogram(h)) => {
                        for p in &h.data_points {
                            if h.aggregation_temporality == 1 && p.count > 0 {
                                push(
                                    &m.name,
                                    &m.unit,
                                    &p.attributes,
                                    p.time_unix_nano,
                                    mean(p.count, p.sum.unwrap_or(0.0)),
                                    false,
                                );
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}
