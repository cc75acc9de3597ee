//! The simulated fleet: seven services, their requests as traces, the logs they write and
//! their CPU and memory gauges, one step of simulated time at a time, with the fault applied.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};

use super::{DemoOptions, FaultKind, MIN_MS, SERVICES, STEP_MS};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// Own processing time of one request, in seconds, before faults.
fn base_self_time(service: &str) -> f64 {
    match service {
        "frontend" => 0.012,
        "catalogue" => 0.020,
        "checkout" => 0.030,
        "payment" => 0.060,
        "inventory" => 0.015,
        "cache" => 0.002,
        "database" => 0.008,
        _ => 0.010,
    }
}

fn text(s: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s.to_string())),
    })
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: text(v),
        ..Default::default()
    }
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv("service.name", service), kv("host.name", &format!("{service}-1"))],
        ..Default::default()
    })
}

pub(super) struct Fleet {
    opts: DemoOptions,
    rng: Rng,
    next_id: u64,
    fault_start_ms: i64,
    spans: BTreeMap<&'static str, Vec<Span>>,
    logs: BTreeMap<&'static str, Vec<LogRecord>>,
    memory: BTreeMap<&'static str, f64>,
    /// Seconds of work done in the current step, per service.
    busy: BTreeMap<&'static str, f64>,
    /// Utilisation (0–1) in the previous step: busier services are slower.
    load: BTreeMap<&'static str, f64>,
}

impl Fleet {
    /// A fleet that starts the fault at `fault_start_ms` (event time); the seed decides
    /// everything else, so a run can be repeated.
    pub(super) fn new(opts: DemoOptions, fault_start_ms: i64) -> Fleet {
        Fleet {
            rng: Rng(opts.seed | 1),
            next_id: opts.seed.wrapping_mul(1_000_003),
            fault_start_ms,
            spans: BTreeMap::new(),
            logs: BTreeMap::new(),
            memory: BTreeMap::new(),
            busy: BTreeMap::new(),
            load: BTreeMap::new(),
            opts,
        }
    }

    fn faulty(&self, service: &str, now_ms: i64) -> Option<FaultKind> {
        (service == self.opts.service && now_ms >= self.fault_start_ms).then_some(self.opts.fault)
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id ^ (self.rng.next() & 0xffff_0000_0000_0000)
    }

    fn log(&mut self, service: &'static str, ts_ms: i64, severity: i32, body: String, trace: &[u8]) {
        let severity_text = match severity {
            17.. => "ERROR",
            13.. => "WARN",
            _ => "INFO",
        };
        self.logs.entry(service).or_default().push(LogRecord {
            time_unix_nano: (ts_ms as u64) * 1_000_000,
            observed_time_unix_nano: (ts_ms as u64) * 1_000_000,
            severity_number: severity,
            severity_text: severity_text.into(),
            body: text(&body),
            trace_id: trace.to_vec(),
            ..Default::default()
        });
    }

    /// Serves one request at `service` (and its downstream calls); returns (duration s, ok).
    fn call(
        &mut self,
        service: &'static str,
        op: &str,
        trace: &[u8],
        parent: Option<u64>,
        start_ms: f64,
    ) -> (f64, bool) {
        let fault = self.faulty(service, start_ms as i64);
        if fault == Some(FaultKind::Down) {
            // Nothing answers: the caller waits for its connect timeout and fails.
            return (1.0, false);
        }
        let span_id = self.id();
        let mut self_time = base_self_time(service) * (0.7 + 0.6 * self.rng.unit());
        self_time *= 1.0 + 0.6 * self.load.get(service).copied().unwrap_or(0.0);
        match fault {
            Some(FaultKind::Cpu) => self_time *= 6.0,
            Some(FaultKind::Latency) => self_time += 0.8 + 0.2 * self.rng.unit(),
            Some(FaultKind::Memory) => {
                let minutes = (start_ms as i64 - self.fault_start_ms) as f64 / MIN_MS as f64;
                self_time *= 1.0 + (minutes / 3.0).min(6.0);
            }
            _ => {}
        }
        let mut elapsed = self_time;
        let mut ok = true;
        let children: &[(&'static str, &str)] = match (service, op) {
            ("frontend", "GET /catalogue") => &[("catalogue", "GET /items")],
            ("frontend", "GET /cart") => &[("inventory", "GET /stock")],
            ("frontend", "POST /checkout") => &[("checkout", "POST /orders")],
            ("catalogue", _) => &[("cache", "GET")],
            ("inventory", _) => &[("cache", "GET"), ("database", "SELECT stock")],
            ("checkout", _) => &[("inventory", "GET /stock"), ("payment", "POST /pay")],
            ("payment", _) => &[("database", "INSERT payment")],
            _ => &[],
        };
        for &(child, child_op) in children {
            // Each call goes out through a client span naming its callee, as HTTP client
            // instrumentation records it; a callee that is down leaves only this span.
            let call_id = self.id();
            let call_start = start_ms + elapsed * 1000.0;
            let (d, child_ok) = self.call(child, child_op, trace, Some(call_id), call_start);
            self.spans.entry(service).or_default().push(Span {
                trace_id: trace.to_vec(),
                span_id: call_id.to_be_bytes().to_vec(),
                parent_span_id: span_id.to_be_bytes().to_vec(),
                name: child_op.to_string(),
                kind: 3,
                start_time_unix_nano: (call_start * 1e6) as u64,
                end_time_unix_nano: ((call_start + d * 1000.0) * 1e6) as u64,
                attributes: vec![kv("peer.service", child)],
                status: Some(Status {
                    code: if child_ok {
                        status::StatusCode::Ok as i32
                    } else {
                        status::StatusCode::Error as i32
                    },
                    ..Default::default()
                }),
                ..Default::default()
            });
            elapsed += d;
            if !child_ok {
                ok = false;
                let ts = (start_ms + elapsed * 1000.0) as i64;
                if self.faulty(child, ts) == Some(FaultKind::Down) {
                    self.log(
                        service,
                        ts,
                        17,
                        format!("connection refused calling {child} ({child_op}) after 1000 ms"),
                        trace,
                    );
                } else {
                    self.log(
                        service,
                        ts,
                        17,
                        format!("upstream {child} failed on {child_op}: 500"),
                        trace,
                    );
                }
            }
        }
        if fault == Some(FaultKind::Errors) && self.rng.chance(0.4) {
            ok = false;
            let ts = (start_ms + elapsed * 1000.0) as i64;
            self.log(
                service,
                ts,
                17,
                format!("error handling {op}: internal error in request pipeline"),
                trace,
            );
        } else if self.rng.chance(0.002) {
            ok = false;
        }
        if fault == Some(FaultKind::Memory) && self.rng.chance(0.05) {
            let ts = (start_ms + elapsed * 1000.0) as i64;
            self.log(
                service,
                ts,
                13,
                format!(
                    "GC overhead high: {} ms paused of last 1000 ms",
                    (self_time * 900.0) as u64
                ),
                trace,
            );
        }
        let end_ms = start_ms + elapsed * 1000.0;
        if self.rng.chance(0.2) {
            self.log(
                service,
                end_ms as i64,
                9,
                format!(
                    "{op} {} in {} ms",
                    if ok { 200 } else { 500 },
                    (elapsed * 1000.0) as u64
                ),
                trace,
            );
        }
        self.spans.entry(service).or_default().push(Span {
            trace_id: trace.to_vec(),
            span_id: span_id.to_be_bytes().to_vec(),
            parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
            name: op.to_string(),
            kind: 2,
            start_time_unix_nano: (start_ms * 1e6) as u64,
            end_time_unix_nano: (end_ms * 1e6) as u64,
            status: Some(Status {
                code: if ok {
                    status::StatusCode::Ok as i32
                } else {
                    status::StatusCode::Error as i32
                },
                ..Default::default()
            }),
            ..Default::default()
        });
        *self.busy.entry(service).or_default() += elapsed;
        (elapsed, ok)
    }

    /// Simulates one step starting at `t_ms`; returns the three OTLP requests.
    pub(super) fn step(
        &mut self,
        t_ms: i64,
    ) -> (
        ExportTraceServiceRequest,
        ExportLogsServiceRequest,
        ExportMetricsServiceRequest,
    ) {
        let day = ((t_ms % 86_400_000) as f64 / 86_400_000.0) * std::f64::consts::TAU;
        let rps = 2.0 * (1.0 + 0.5 * (day - 1.2).sin());
        let requests = (rps * STEP_MS as f64 / 1000.0 * (0.8 + 0.4 * self.rng.unit())).round() as u64;
        for _ in 0..requests {
            let start = t_ms as f64 + self.rng.unit() * STEP_MS as f64;
            let op = match self.rng.unit() {
                x if x < 0.6 => "GET /catalogue",
                x if x < 0.85 => "GET /cart",
                _ => "POST /checkout",
            };
            let trace = [self.id().to_be_bytes(), self.id().to_be_bytes()].concat();
            self.call("frontend", op, &trace, None, start);
        }
        self.load = std::mem::take(&mut self.busy)
            .into_iter()
            .map(|(k, v)| (k, (v / (STEP_MS as f64 / 1000.0)).min(1.0)))
            .collect();
        let mut resource_metrics = Vec::new();
        for service in SERVICES {
            let load = self.load.get(service).copied().unwrap_or(0.0);
            let fault = self.faulty(service, t_ms);
            let cpu = match fault {
                Some(FaultKind::Cpu) => 92.0 + 6.0 * self.rng.unit(),
                Some(FaultKind::Down) => 0.0,
                _ => 8.0 + 40.0 * load + 4.0 * self.rng.unit(),
            };
            let mem = self.memory.entry(service).or_insert(200e6);
            if fault == Some(FaultKind::Memory) {
                *mem += 15e6;
            } else {
                *mem = 200e6 + 5e6 * self.rng.unit();
            }
            let mem = *mem;
            let gauge = |name: &str, unit: &str, v: f64| Metric {
                name: name.into(),
                unit: unit.into(),
                data: Some(metric::Data::Gauge(Gauge {
                    data_points: vec![NumberDataPoint {
                        time_unix_nano: (t_ms as u64 + STEP_MS as u64) * 1_000_000,
                        value: Some(number_data_point::Value::AsDouble(v)),
                        ..Default::default()
                    }],
                })),
                ..Default::default()
            };
            resource_metrics.push(ResourceMetrics {
                resource: resource(service),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        gauge("process.cpu.utilization", "%", cpu),
                        gauge("process.memory.usage", "By", mem),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        let traces = ExportTraceServiceRequest {
            resource_spans: std::mem::take(&mut self.spans)
                .into_iter()
                .map(|(svc, spans)| ResourceSpans {
                    resource: resource(svc),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        };
        let logs = ExportLogsServiceRequest {
            resource_logs: std::mem::take(&mut self.logs)
                .into_iter()
                .map(|(svc, log_records)| ResourceLogs {
                    resource: resource(svc),
                    scope_logs: vec![ScopeLogs {
                        log_records,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        };
        (traces, logs, ExportMetricsServiceRequest { resource_metrics })
    }
}
