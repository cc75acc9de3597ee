//! What the detection thread is fed: the signals extracted from a WAL entry, and how each
//! reaches the service graph, the service joiner and the detectors.

use std::collections::BTreeMap;

use vigil_detectors::{Engine, MetricPoint};
use vigil_rca::{SpanRef, Topology};

use super::findings::SpanFact;
use super::{join, state_file};

/// One signal for the detectors, as extracted from an OTLP request.
#[derive(Debug, Clone)]
pub(crate) enum DetectorInput {
    Log {
        service: String,
        pattern_id: u64,
        is_new: bool,
        template: String,
        severity: i32,
        ts_ms: i64,
        /// For joining a line without `service.name`.
        host: Option<String>,
        pod: Option<String>,
        trace_id: Option<String>,
    },
    Span {
        service: String,
        operation: String,
        end_ms: i64,
        duration_s: f64,
        error: bool,
        /// A server, consumer or root span: counts for RED.
        entry: bool,
        span_id: u64,
        parent_span_id: Option<u64>,
        /// Hex trace id, kept as an exemplar for slow or failing requests.
        trace_id: String,
        host: Option<String>,
        pod: Option<String>,
        /// The service a client span calls (`peer.service`), when it names one.
        peer: Option<String>,
    },
    Metric {
        series_id: u64,
        name: String,
        service: Option<String>,
        labels: BTreeMap<String, String>,
        unit: String,
        ts_ms: i64,
        value: f64,
        /// A cumulative monotonic counter: the detector sees its rate.
        cumulative: bool,
    },
}

impl DetectorInput {
    /// The event time the detectors file it under.
    fn event_ms(&self) -> i64 {
        match self {
            DetectorInput::Log { ts_ms, .. } | DetectorInput::Metric { ts_ms, .. } => *ts_ms,
            DetectorInput::Span { end_ms, .. } => *end_ms,
        }
    }
}

/// One request's signals in event-time order. A request groups its records by resource
/// (an exporter batches per pod or host), so a batch that spans minutes — a log batch held
/// until it filled — lists one pod's late minutes before another's early ones; taken as
/// listed, the early ones would arrive after their interval closed. A request arrives at
/// once: the order inside it carries no meaning, so it is sorted (stably) by event time.
pub(super) fn in_event_order(inputs: &mut [DetectorInput]) {
    if inputs.windows(2).any(|w| w[0].event_ms() > w[1].event_ms()) {
        inputs.sort_by_key(DetectorInput::event_ms);
    }
}

/// Feeds one input to the service graph and the service joiner and, unless `context_only`,
/// to the detectors. Replayed entries the restored detector state already holds are
/// context only: the graph and the joiner are not saved and are rebuilt from the replay.
pub(super) fn feed(
    engine: &mut Engine,
    topo: &mut Topology,
    joiner: &mut join::Joiner,
    counters: &mut state_file::Counters,
    input: DetectorInput,
    context_only: bool,
    spans_out: Option<&mut Vec<SpanFact>>,
) {
    match input {
        DetectorInput::Log {
            service,
            pattern_id,
            is_new,
            template,
            severity,
            ts_ms,
            host,
            pod,
            trace_id,
        } => {
            let service = if service == "unknown_service" {
                joiner
                    .resolve(host.as_deref(), pod.as_deref(), trace_id.as_deref())
                    .unwrap_or(service)
            } else {
                joiner.learn(&service, host.as_deref(), pod.as_deref(), None);
                service
            };
            if context_only {
                return;
            }
            engine.observe_log(&service, pattern_id, is_new, &template, severity, ts_ms);
        }
        DetectorInput::Span {
            service,
            operation,
            end_ms,
            duration_s,
            error,
            entry,
            span_id,
            parent_span_id,
            trace_id,
            host,
            pod,
            peer,
        } => {
            joiner.learn(&service, host.as_deref(), pod.as_deref(), Some(&trace_id));
            topo.observe(&SpanRef {
                service: &service,
                span_id,
                parent_span_id,
                end_ms,
                duration_s,
                error,
                peer: peer.as_deref(),
            });
            if context_only {
                return;
            }
            if let Some(out) = spans_out {
                out.push(SpanFact {
                    service: service.clone(),
                    span_id,
                    parent_span_id,
                    end_ms,
                    duration_s,
                    error,
                    peer: peer.clone(),
                });
            }
            if entry {
                engine.observe_traced_span(&service, &operation, end_ms, duration_s, error, &trace_id);
            }
        }
        DetectorInput::Metric {
            series_id,
            name,
            service,
            labels,
            unit,
            ts_ms,
            value,
            cumulative,
        } => {
            let host = labels.get("host.name").map(String::as_str);
            let pod = labels.get("k8s.pod.name").map(String::as_str);
            let service = match service {
                Some(s) => {
                    joiner.learn(&s, host, pod, None);
                    Some(s)
                }
                None => joiner.resolve(host, pod, None),
            };
            if context_only {
                return;
            }
            let (value, unit) = if cumulative {
                // Counters: the rate since the previous point; a reset (drop) starts over.
                let prev = counters.insert(series_id, (ts_ms, value));
                match prev {
                    Some((pts, pv)) if ts_ms > pts && value >= pv => {
                        ((value - pv) / ((ts_ms - pts) as f64 / 1000.0), "/s".to_string())
                    }
                    _ => return,
                }
            } else {
                (value, unit)
            };
            let key = format!("{name}|{series_id:016x}");
            engine.observe_metric(&MetricPoint {
                key: &key,
                name: &name,
                service: service.as_deref(),
                labels: &labels,
                unit: &unit,
                ts_ms,
                value,
            });
        }
    }
}
