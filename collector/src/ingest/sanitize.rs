//! Enforces the per-record limits and validity rules before a batch reaches the WAL.
//!
//! Over-limit *values* are truncated and counted (the record is kept); *records* that
//! cannot be stored meaningfully (bad ids, absurd timestamps, nameless metrics) are
//! removed and reported back to the client as an OTLP partial success. Everything is
//! decided here, once, so the WAL holds exactly what will be indexed and a replay
//! after a crash produces the same documents.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;

use crate::config::OtlpConfig;

/// Limits and the clock used for validation.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub max_attributes: usize,
    pub max_value_bytes: usize,
    pub max_body_bytes: usize,
    /// Records stamped after this (unix ns) are rejected.
    pub newest_allowed_ns: u64,
    /// Records stamped before this (unix ns) are rejected: retention would drop them.
    pub oldest_allowed_ns: u64,
    /// Stamped on log records that carry no observed time.
    pub now_ns: u64,
}

impl Limits {
    pub(crate) fn from_config(otlp: &OtlpConfig, retention_hours: u64, now_ns: u64) -> Limits {
        Limits {
            max_attributes: otlp.max_attributes_per_record,
            max_value_bytes: otlp.max_attribute_value_bytes,
            max_body_bytes: otlp.max_body_bytes,
            newest_allowed_ns: now_ns.saturating_add(otlp.max_future_skew_secs.saturating_mul(1_000_000_000)),
            oldest_allowed_ns: now_ns.saturating_sub(retention_hours.saturating_mul(3_600_000_000_000)),
            now_ns,
        }
    }
}

/// What sanitizing one request found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    /// Records (log records, spans, data points) in the request as received.
    pub received: u64,
    /// Records removed, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Values cut to a limit, by kind (`attribute_value`, `attributes`, `body`).
    pub truncated: BTreeMap<&'static str, u64>,
}

impl Report {
    pub(crate) fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    pub(crate) fn accepted(&self) -> u64 {
        self.received - self.rejected_total()
    }

    fn reject(&mut self, reason: &'static str) {
        *self.rejected.entry(reason).or_default() += 1;
    }

    fn truncate(&mut self, kind: &'static str, n: u64) {
        if n > 0 {
            *self.truncated.entry(kind).or_default() += n;
        }
    }

    /// The OTLP `partialSuccess.errorMessage`: what was rejected and why.
    pub(crate) fn rejection_message(&self, noun: &str, limits: &Limits) -> String {
        if self.rejected.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = self
            .rejected
            .iter()
            .map(|(reason, n)| format!("{n} {}", describe(reason, limits)))
            .collect();
        format!("{} {noun} rejected: {}", self.rejected_total(), parts.join("; "))
    }
}

fn describe(reason: &str, limits: &Limits) -> String {
    match reason {
        "timestamp_in_future" => format!(
            "with a timestamp more than {} s in the future",
            (limits.newest_allowed_ns - limits.now_ns) / 1_000_000_000
        ),
        "timestamp_too_old" => "with a timestamp older than the retention period".to_string(),
        "missing_timestamp" => "without a timestamp".to_string(),
        "invalid_trace_id" => "with a trace id that is not 16 bytes (or all zero)".to_string(),
        "invalid_span_id" => "with a span id that is not 8 bytes (or all zero)".to_string(),
        "invalid_parent_span_id" => "with a parent span id that is not 8 bytes".to_string(),
        "end_before_start" => "ending before they start".to_string(),
        "missing_metric_name" => "belonging to a metric without a name".to_string(),
        other => other.to_string(),
    }
}

fn truncate_utf8(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    true
}

/// Applies the value-length limit inside one value, recursively. Returns how many
/// values were cut.
fn limit_value(value: &mut AnyValue, max: usize) -> u64 {
    match &mut value.value {
        Some(any_value::Value::StringValue(s)) => u64::from(truncate_utf8(s, max)),
        Some(any_value::Value::BytesValue(b)) if b.len() > max => {
            b.truncate(max);
            1
        }
        Some(any_value::Value::ArrayValue(a)) => a.values.iter_mut().map(|v| limit_value(v, max)).sum(),
        Some(any_value::Value::KvlistValue(kv)) => kv
            .values
            .iter_mut()
            .filter_map(|kv| kv.value.as_mut())
            .map(|v| limit_value(v, max))
            .sum(),
        _ => 0,
    }
}

/// Caps the number of attributes and the length of each value; returns how many
/// attributes were dropped.
fn limit_attributes(attributes: &mut Vec<KeyValue>, limits: &Limits, report: &mut Report) -> u32 {
    let mut dropped = 0u32;
    if attributes.len() > limits.max_attributes {
        dropped = u32::try_from(attributes.len() - limits.max_attributes).unwrap_or(u32::MAX);
        attributes.truncate(limits.max_attributes);
        report.truncate("attributes", u64::from(dropped));
    }
    let mut cut = 0;
    for kv in attributes.iter_mut() {
        if truncate_utf8(&mut kv.key, limits.max_value_bytes) {
            cut += 1;
        }
        if let Some(v) = kv.value.as_mut() {
            cut += limit_value(v, limits.max_value_bytes);
        }
    }
    report.truncate("attribute_value", cut);
    dropped
}

fn valid_id(id: &[u8], len: usize) -> bool {
    id.len() == len && id.iter().any(|&b| b != 0)
}

fn check_time(ts: u64, limits: &Limits) -> Result<(), &'static str> {
    if ts == 0 {
        Err("missing_timestamp")
    } else if ts > limits.newest_allowed_ns {
        Err("timestamp_in_future")
    } else if ts < limits.oldest_allowed_ns {
        Err("timestamp_too_old")
    } else {
        Ok(())
    }
}

fn limit_resource_and_scope(
    resource: &mut Option<opentelemetry_proto::tonic::resource::v1::Resource>,
    limits: &Limits,
    report: &mut Report,
) {
    if let Some(r) = resource.as_mut() {
        let dropped = limit_attributes(&mut r.attributes, limits, report);
        r.dropped_attributes_count = r.dropped_attributes_count.saturating_add(dropped);
    }
}

fn limit_scope(
    scope: &mut Option<opentelemetry_proto::tonic::common::v1::InstrumentationScope>,
    limits: &Limits,
    report: &mut Report,
) {
    if let Some(s) = scope.as_mut() {
        let dropped = limit_attributes(&mut s.attributes, limits, report);
        s.dropped_attributes_count = s.dropped_attributes_count.saturating_add(dropped);
    }
}

pub(super) fn sanitize_logs(req: &mut ExportLogsServiceRequest, limits: &Limits) -> Report {
    let mut report = Report::default();
    for rl in &mut req.resource_logs {
        limit_resource_and_scope(&mut rl.resource, limits, &mut report);
        for sl in &mut rl.scope_logs {
            limit_scope(&mut sl.scope, limits, &mut report);
            report.received += sl.log_records.len() as u64;
            sl.log_records.retain_mut(|rec| {
                if rec.observed_time_unix_nano == 0 {
                    rec.observed_time_unix_nano = limits.now_ns;
                }
                let ts = if rec.time_unix_nano != 0 {
                    rec.time_unix_nano
                } else {
                    rec.observed_time_unix_nano
                };
                let verdict = check_time(ts, limits).and_then(|()| {
                    if !rec.trace_id.is_empty() && !valid_id(&rec.trace_id, 16) {
                        Err("invalid_trace_id")
                    } else if !rec.span_id.is_empty() && !valid_id(&rec.span_id, 8) {
                        Err("invalid_span_id")
                    } else {
                        Ok(())
                    }
                });
                if let Err(reason) = verdict {
                    report.reject(reason);
                    return false;
                }
                let dropped = limit_attributes(&mut rec.attributes, limits, &mut report);
                rec.dropped_attributes_count = rec.dropped_attributes_count.saturating_add(dropped);
                if let Some(body) = rec.body.as_mut() {
                    let n = match &mut body.value {
                        Some(any_value::Value::StringValue(s)) => u64::from(truncate_utf8(s, limits.max_body_bytes)),
                        _ => limit_value(body, limits.max_value_bytes),
                    };
                    report.truncate("body", n);
                }
                true
            });
        }
        rl.scope_logs.retain(|sl| !sl.log_records.is_empty());
    }
    req.resource_logs.retain(|rl| !rl.scope_logs.is_empty());
    report
}

pub(super) fn sanitize_traces(req: &mut ExportTraceServiceRequest, limits: &Limits) -> Report {
    let mut report = Report::default();
    for rs in &mut req.resource_spans {
        limit_resource_and_scope(&mut rs.resource, limits, &mut report);
        for ss in &mut rs.scope_spans {
            limit_scope(&mut ss.scope, limits, &mut report);
            report.received += ss.spans.len() as u64;
            ss.spans.retain_mut(|span| {
                let verdict = if !valid_id(&span.trace_id, 16) {
                    Err("invalid_trace_id")
                } else if !valid_id(&span.span_id, 8) {
                    Err("invalid_span_id")
                } else if !span.parent_span_id.is_empty() && span.parent_span_id.len() != 8 {
                    Err("invalid_parent_span_id")
                } else if span.end_time_unix_nano != 0 && span.end_time_unix_nano < span.start_time_unix_nano {
                    Err("end_before_start")
                } else {
                    check_time(span.start_time_unix_nano, limits)
                };
                if let Err(reason) = verdict {
                    report.reject(reason);
                    return false;
                }
                let dropped = limit_attributes(&mut span.attributes, limits, &mut report);
                span.dropped_attributes_count = span.dropped_attributes_count.saturating_add(dropped);
                for event in &mut span.events {
                    truncate_utf8(&mut event.name, limits.max_value_bytes);
                    let d = limit_attributes(&mut event.attributes, limits, &mut report);
                    event.dropped_attributes_count = event.dropped_attributes_count.saturating_add(d);
                }
                for link in &mut span.links {
                    let d = limit_attributes(&mut link.attributes, limits, &mut report);
                    link.dropped_attributes_count = link.dropped_attributes_count.saturating_add(d);
                }
                if let Some(status) = span.status.as_mut() {
                    report.truncate(
                        "attribute_value",
                        u64::from(truncate_utf8(&mut status.message, limits.max_value_bytes)),
                    );
                }
                true
            });
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    req.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
    report
}

/// Filters the points of one metric, applying `check` to each point's timestamp and
/// the attribute limits to its attributes.
macro_rules! filter_points {
    ($points:expr, $limits:expr, $report:expr, $name_ok:expr) => {{
        $report.received += $points.len() as u64;
        $points.retain_mut(|p| {
            let verdict = if $name_ok {
                check_time(p.time_unix_nano, $limits)
            } else {
                Err("missing_metric_name")
            };
            if let Err(reason) = verdict {
                $report.reject(reason);
                return false;
            }
            limit_attributes(&mut p.attributes, $limits, $report);
            true
        });
        !$points.is_empty()
    }};
}

pub(super) fn sanitize_metrics(req: &mut ExportMetricsServiceRequest, limits: &Limits) -> Report {
    let mut report = Report::default();
    for rm in &mut req.resource_metrics {
        limit_resource_and_scope(&mut rm.resource, limits, &mut report);
        for sm in &mut rm.scope_metrics {
            limit_scope(&mut sm.scope, limits, &mut report);
            sm.metrics.retain_mut(|metric| {
                let name_ok = !metric.name.trim().is_empty();
                let r = &mut report;
                match metric.data.as_mut() {
                    Some(Data::Gauge(g)) => filter_points!(g.data_points, limits, r, name_ok),
                    Some(Data::Sum(s)) => filter_points!(s.data_points, limits, r, name_ok),
                    Some(Data::Histogram(h)) => filter_points!(h.data_points, limits, r, name_ok),
                    Some(Data::ExponentialHistogram(h)) => filter_points!(h.data_points, limits, r, name_ok),
                    Some(Data::Summary(s)) => filter_points!(s.data_points, limits, r, name_ok),
                    None => false,
                }
            });
        }
        rm.scope_metrics.retain(|sm| !sm.metrics.is_empty());
    }
    req.resource_metrics.retain(|rm| !rm.scope_metrics.is_empty());
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    const NOW: u64 = 1_700_000_000_000_000_000;

    fn limits() -> Limits {
        Limits::from_config(&OtlpConfig::default(), 24, NOW)
    }

    fn string_kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    fn logs(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn over_limit_values_are_cut_at_a_char_boundary_and_counted() {
        let mut l = limits();
        l.max_value_bytes = 16;
        l.max_attributes = 2;
        let record = LogRecord {
            time_unix_nano: NOW,
            attributes: vec![
                string_kv("a", &"é".repeat(20)),
                string_kv("b", "short"),
                string_kv("c", "dropped"),
            ],
            ..Default::default()
        };
        let mut req = logs(vec![record]);
        let report = sanitize_logs(&mut req, &l);
        let rec = &req.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(rec.attributes.len(), 2);
        assert_eq!(rec.dropped_attributes_count, 1);
        match &rec.attributes[0].value.as_ref().and_then(|v| v.value.clone()) {
            Some(any_value::Value::StringValue(s)) => assert_eq!(s, &"é".repeat(8)),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(report.truncated.get("attribute_value"), Some(&1));
        assert_eq!(report.truncated.get("attributes"), Some(&1));
        assert_eq!(report.accepted(), 1);
    }

    #[test]
    fn absurd_timestamps_and_bad_ids_are_rejected_with_reasons() {
        let good = LogRecord {
            time_unix_nano: NOW - 1,
            ..Default::default()
        };
        let future = LogRecord {
            time_unix_nano: NOW + 10 * 3_600_000_000_000,
            ..Default::default()
        };
        let ancient = LogRecord {
            time_unix_nano: 1,
            ..Default::default()
        };
        let bad_trace = LogRecord {
            time_unix_nano: NOW,
            trace_id: vec![1, 2, 3],
            ..Default::default()
        };
        let mut req = logs(vec![good, future, ancient, bad_trace]);
        let report = sanitize_logs(&mut req, &limits());
        assert_eq!(report.received, 4);
        assert_eq!(report.accepted(), 1);
        assert_eq!(report.rejected.get("timestamp_in_future"), Some(&1));
        assert_eq!(report.rejected.get("timestamp_too_old"), Some(&1));
        assert_eq!(report.rejected.get("invalid_trace_id"), Some(&1));
        let message = report.rejection_message("log records", &limits());
        assert!(message.starts_with("3 log records rejected"), "{message}");
        assert!(message.contains("3600 s in the future"), "{message}");
    }

    #[test]
    fn a_log_without_any_time_gets_the_receive_time() {
        let mut req = logs(vec![LogRecord::default()]);
        let report = sanitize_logs(&mut req, &limits());
        assert_eq!(report.accepted(), 1);
        assert_eq!(
            req.resource_logs[0].scope_logs[0].log_records[0].observed_time_unix_nano,
            NOW
        );
    }

    #[test]
    fn fully_rejected_containers_are_removed() {
        let mut req = logs(vec![LogRecord {
            time_unix_nano: 1,
            ..Default::default()
        }]);
        sanitize_logs(&mut req, &limits());
        assert!(req.resource_logs.is_empty());
    }
}
