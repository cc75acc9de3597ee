//! The official OpenTelemetry Rust SDK exports logs, spans and metrics over OTLP/gRPC,
//! OTLP/HTTP protobuf and OTLP/HTTP JSON to a running collector; the query API then
//! returns exactly what was sent.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::Value;
use vigil_e2e::{Collector, eventually, get_json, search_logs};

#[derive(Clone, Copy, Debug)]
enum Transport {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

/// What the SDK was asked to send, to compare with what comes back.
struct Sent {
    service: String,
    trace_id: String,
    parent_span_id: String,
    child_span_id: String,
    log_times: Vec<u128>,
    span_start: u128,
    span_end: u128,
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// Runs the SDK on a plain thread: the blocking HTTP client must not run inside a
/// tokio context, and the gRPC client needs one entered.
fn send_with_sdk(c: &Collector, transport: Transport) -> Result<Sent> {
    let service = format!("rust-sdk-{transport:?}").to_lowercase();
    let grpc = c.grpc_url();
    let http = c.http_url("");
    let handle = tokio::runtime::Handle::current();
    let svc = service.clone();
    std::thread::spawn(move || -> Result<Sent> {
        let _guard = matches!(transport, Transport::Grpc).then(|| handle.enter());
        let resource = Resource::builder()
            .with_service_name(svc.clone())
            .with_attributes([KeyValue::new("host.name", "e2e-host")])
            .build();
        let (log_exporter, span_exporter, metric_exporter) = match transport {
            Transport::Grpc => (
                opentelemetry_otlp::LogExporter::builder()
                    .with_tonic()
                    .with_endpoint(&grpc)
                    .build()?,
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(&grpc)
                    .build()?,
                opentelemetry_otlp::MetricExporter::builder()
                    .with_tonic()
                    .with_endpoint(&grpc)
                    .build()?,
            ),
            Transport::HttpProtobuf | Transport::HttpJson => {
                let protocol = if matches!(transport, Transport::HttpJson) {
                    Protocol::HttpJson
                } else {
                    Protocol::HttpBinary
                };
                (
                    opentelemetry_otlp::LogExporter::builder()
                        .with_http()
                        .with_protocol(protocol)
                        .with_endpoint(format!("{http}/v1/logs"))
                        .build()?,
                    opentelemetry_otlp::SpanExporter::builder()
                        .with_http()
                        .with_protocol(protocol)
                        .with_endpoint(format!("{http}/v1/traces"))
                        .build()?,
                    opentelemetry_otlp::MetricExporter::builder()
                        .with_http()
                        .with_protocol(protocol)
                        .with_endpoint(format!("{http}/v1/metrics"))
                        .build()?,
                )
            }
        };

        // Spans: a server span with a client child, explicit times, an event, an error.
        let tracer_provider = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_simple_exporter(span_exporter)
            .build();
        let tracer = tracer_provider.tracer("e2e");
        let span_start = SystemTime::now() - Duration::from_secs(30);
        let span_end = span_start + Duration::from_millis(250);
        let parent = tracer
            .span_builder("POST /checkout")
            .with_kind(SpanKind::Server)
            .with_start_time(span_start)
            .with_attributes([
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("http.response.status_code", 500),
            ])
            .start(&tracer);
        let parent_cx = Context::current_with_span(parent);
        let mut child = tracer
            .span_builder("charge card")
            .with_kind(SpanKind::Client)
            .with_start_time(span_start + Duration::from_millis(10))
            .start_with_context(&tracer, &parent_cx);
        use opentelemetry::trace::Span as _;
        child.add_event("retrying", vec![KeyValue::new("attempt", 2)]);
        child.set_status(Status::error("card declined"));
        let child_span_id = child.span_context().span_id().to_string();
        child.end_with_timestamp(span_end - Duration::from_millis(10));
        let parent_span = parent_cx.span();
        let trace_id = parent_span.span_context().trace_id();
        let parent_span_id = parent_span.span_context().span_id();
        parent_span.end_with_timestamp(span_end);
        drop(parent_cx);
        tracer_provider.shutdown()?;

        // Logs, correlated with the trace.
        let logger_provider = SdkLoggerProvider::builder()
            .with_resource(resource.clone())
            .with_simple_exporter(log_exporter)
            .build();
        let logger = logger_provider.logger("e2e");
        let mut log_times = Vec::new();
        for i in 0..3i64 {
            let t = SystemTime::now() - Duration::from_secs(20) + Duration::from_millis(i as u64);
            log_times.push(nanos(t));
            let mut record = logger.create_log_record();
            record.set_timestamp(t);
            record.set_severity_number(Severity::Warn);
            record.set_severity_text("WARN");
            record.set_body(AnyValue::from(format!("payment retry {i} for order-{i}")));
            record.add_attribute("i", i);
            record.add_attribute("ratio", 0.5);
            record.add_attribute("ok", true);
            record.set_trace_context(trace_id, parent_span_id, None);
            logger.emit(record);
        }
        logger_provider.shutdown()?;

        // Metrics: a counter, a gauge, a histogram; flushed explicitly.
        let meter_provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_periodic_exporter(metric_exporter)
            .build();
        let meter = meter_provider.meter("e2e");
        let counter = meter.u64_counter("e2e.requests").build();
        counter.add(3, &[KeyValue::new("route", "/pay")]);
        counter.add(4, &[KeyValue::new("route", "/pay")]);
        meter
            .f64_gauge("e2e.temperature")
            .with_unit("Cel")
            .build()
            .record(21.5, &[]);
        let histogram = meter.f64_histogram("e2e.latency").with_unit("s").build();
        for v in [0.1, 0.2, 0.3] {
            histogram.record(v, &[KeyValue::new("route", "/pay")]);
        }
        meter_provider.force_flush()?;
        meter_provider.shutdown()?;

        Ok(Sent {
            service: svc,
            trace_id: trace_id.to_string(),
            parent_span_id: parent_span_id.to_string(),
            child_span_id,
            log_times,
            span_start: nanos(span_start),
            span_end: nanos(span_end),
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("SDK thread panicked"))?
}

async fn check_round_trip(c: &Collector, sent: &Sent) -> Result<()> {
    let client = reqwest::Client::new();
    let service = sent.service.as_str();

    // Logs: bodies, attributes, severity, timestamps, trace correlation.
    let (total, hits) = eventually(Duration::from_secs(10), "the SDK's logs", || async {
        let (total, hits) = search_logs(&client, c, &[("service", service), ("q", "payment")]).await?;
        Ok((total == 3).then_some((total, hits)))
    })
    .await?;
    assert_eq!(total, 3);
    for hit in &hits {
        let body = hit["body"].as_str().unwrap_or_default();
        let i: i64 = hit["attributes"]["i"].as_i64().expect("int attribute kept as int");
        assert_eq!(body, format!("payment retry {i} for order-{i}"));
        assert_eq!(hit["attributes"]["ratio"], Value::from(0.5));
        assert_eq!(hit["attributes"]["ok"], Value::from(true));
        assert_eq!(hit["severity_number"], 13);
        assert_eq!(hit["severity_text"], "WARN");
        assert_eq!(hit["trace_id"], sent.trace_id.as_str());
        assert_eq!(hit["span_id"], sent.parent_span_id.as_str());
        assert_eq!(hit["host"], "e2e-host");
        assert_eq!(hit["resource"]["service.name"], service);
        let ts: u128 = hit["time_unix_nano"].as_str().unwrap_or("0").parse()?;
        assert_eq!(ts, sent.log_times[usize::try_from(i)?], "timestamp of log {i}");
    }
    // Newest first.
    let order: Vec<i64> = hits.iter().filter_map(|h| h["attributes"]["i"].as_i64()).collect();
    assert_eq!(order, vec![2, 1, 0]);
    // Attribute search through the JSON field.
    let (total, _) = search_logs(&client, c, &[("service", service), ("q", "attributes.i:1")]).await?;
    assert_eq!(total, 1);

    // The trace: both spans, linked, with times, kinds, status, events.
    let trace_url = c.api_url(&format!("/api/v1/traces/{}", sent.trace_id));
    let trace = eventually(Duration::from_secs(10), "the trace", || async {
        let (status, trace) = get_json(&client, &trace_url).await?;
        Ok((status == 200 && trace["spans"].as_array().map(Vec::len) == Some(2)).then_some(trace))
    })
    .await
    .map_err(|e| {
        let metrics = std::process::Command::new("curl")
            .arg("-s")
            .arg(c.api_url("/metrics"))
            .output();
        anyhow::anyhow!(
            "{e}: {}",
            metrics
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .unwrap_or_default()
        )
    })?;
    let spans = trace["spans"].as_array().cloned().unwrap_or_default();
    assert_eq!(spans.len(), 2, "{trace}");
    let parent = spans
        .iter()
        .find(|s| s["name"] == "POST /checkout")
        .expect("parent span");
    let child = spans.iter().find(|s| s["name"] == "charge card").expect("child span");
    assert_eq!(parent["span_id"], sent.parent_span_id.as_str());
    assert_eq!(parent["kind"], 2);
    assert_eq!(parent["service"], service);
    assert_eq!(parent["attributes"]["http.response.status_code"], 500);
    assert_eq!(parent["start_time_unix_nano"], sent.span_start.to_string());
    assert_eq!(parent["end_time_unix_nano"], sent.span_end.to_string());
    assert_eq!(parent["duration_ns"], 250_000_000);
    assert_eq!(child["span_id"], sent.child_span_id.as_str());
    assert_eq!(child["parent_span_id"], sent.parent_span_id.as_str());
    assert_eq!(child["kind"], 3);
    assert_eq!(child["status"]["code"], 2);
    assert_eq!(child["status"]["message"], "card declined");
    assert_eq!(child["events"][0]["name"], "retrying");
    assert_eq!(child["events"][0]["attributes"]["attempt"], 2);

    // Metrics: raw counter value, gauge, histogram mean.
    let hour_ago = (vigil_e2e::now_ns() / 1_000_000 - 3_600_000).to_string();
    let metric = |name: &str, rate: bool| {
        let url = reqwest::Url::parse_with_params(
            &c.api_url("/api/v1/metrics/query"),
            &[
                ("name", name),
                ("labels", &format!("service.name={service}")),
                ("agg", "last"),
                ("step", "1h"),
                ("start", &hour_ago),
                ("rate", if rate { "true" } else { "false" }),
            ],
        );
        let client = client.clone();
        async move {
            let (status, body) = get_json(&client, url?.as_str()).await?;
            anyhow::ensure!(status == 200, "metrics query {status}: {body}");
            Ok::<Value, anyhow::Error>(body)
        }
    };
    let counter = eventually(Duration::from_secs(10), "the counter", || async {
        let body = metric("e2e.requests", false).await?;
        let series = &body["result"]["series"][0];
        Ok(series["values"]
            .as_array()
            .and_then(|v| v.last())
            .is_some()
            .then(|| series.clone()))
    })
    .await?;
    assert_eq!(counter["kind"], "sum");
    assert_eq!(counter["monotonic"], true);
    assert_eq!(counter["temporality"], "cumulative");
    assert_eq!(counter["labels"]["route"], "/pay");
    assert_eq!(
        counter["values"]
            .as_array()
            .and_then(|v| v.last())
            .map(|p| p[1].clone()),
        Some(Value::from(7.0))
    );
    let gauge = metric("e2e.temperature", false).await?;
    let gauge = &gauge["result"]["series"][0];
    assert_eq!(gauge["kind"], "gauge");
    assert_eq!(gauge["unit"], "Cel");
    assert_eq!(gauge["values"][0][1], 21.5);
    let histogram = metric("e2e.latency", false).await?;
    let histogram = &histogram["result"]["series"][0];
    assert_eq!(histogram["kind"], "histogram");
    let mean = histogram["values"][0][1].as_f64().unwrap_or(f64::NAN);
    assert!((mean - 0.2).abs() < 1e-9, "histogram mean {mean}");
    Ok(())
}

async fn round_trip(transport: Transport) -> Result<()> {
    let c = Collector::start()?;
    let sent = send_with_sdk(&c, transport)?;
    check_round_trip(&c, &sent)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\ncollector log:\n{}", c.logs()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_over_grpc_round_trips_exactly() -> Result<()> {
    round_trip(Transport::Grpc).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_over_http_protobuf_round_trips_exactly() -> Result<()> {
    round_trip(Transport::HttpProtobuf).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_over_http_json_round_trips_exactly() -> Result<()> {
    round_trip(Transport::HttpJson).await
}
