//! Detection end to end: spans and logs sent over OTLP/HTTP to the real collector produce
//! the expected anomalies on the API, with explanations a human can check; verdicts are
//! recorded, change sensitivity, and survive a restart.

use std::time::Duration;

use anyhow::{Result, bail};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::Value;
use vigil_e2e::otlp::{kv, log_record, logs_request, string_value};
use vigil_e2e::{Collector, Options, eventually, get_json, now_ns, post_protobuf};

const MIN_NS: u64 = 60_000_000_000;

fn jitter(i: u64) -> f64 {
    let x = i
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(17)
        .wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn spans_request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![resource_spans("checkout", spans)],
    }
}

fn resource_spans(service: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", string_value(service))],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Minutes in the checkout regression stream of [`regression_spans`]; the last twenty are slow.
const STREAM_MINUTES: u64 = 200;

/// Start of a regression stream that ended an hour ago, so every interval of it can close.
fn hour_old_stream() -> u64 {
    (now_ns() / MIN_NS - STREAM_MINUTES - 60) * MIN_NS
}

/// Event time (ms) of the first slow minute of the regression stream starting at `base`.
fn slow_from_ms(base: u64) -> i64 {
    ((base + (STREAM_MINUTES - 20) * MIN_NS) / 1_000_000) as i64
}

/// Requests to `name` on checkout for minutes `range` of the [`STREAM_MINUTES`]-long run
/// starting at `base`: 20 a minute, 200–300 ms, except that in the last twenty minutes one
/// request in four takes over two seconds. Sorted by end time, as a live stream would send
/// them.
fn regression_spans(base: u64, range: std::ops::Range<u64>, name: &str) -> Vec<Span> {
    let mut spans: Vec<Span> = range
        .flat_map(|m| (0..20u64).map(move |k| (m, k)))
        .map(|(m, k)| {
            let i = m * 20 + k;
            let slow = m >= STREAM_MINUTES - 20 && k.is_multiple_of(4);
            let secs = 0.2 + 0.1 * jitter(i) + if slow { 2.2 } else { 0.0 };
            let start = base + m * MIN_NS + k * 3_000_000_000;
            Span {
                trace_id: (i as u128 + 1).to_be_bytes().to_vec(),
                span_id: (i + 1).to_be_bytes().to_vec(),
                name: name.into(),
                kind: 2,
                start_time_unix_nano: start,
                end_time_unix_nano: start + (secs * 1e9) as u64,
                ..Default::default()
            }
        })
        .collect();
    spans.sort_by_key(|s| s.end_time_unix_nano);
    spans
}

/// Sends spans over OTLP/HTTP in requests of a thousand.
async fn post_spans(client: &reqwest::Client, c: &Collector, spans: &[Span]) -> Result<()> {
    post_spans_by(client, c, spans, 1000).await
}

/// Sends spans over OTLP/HTTP, `per_request` in each request.
async fn post_spans_by(client: &reqwest::Client, c: &Collector, spans: &[Span], per_request: usize) -> Result<()> {
    for chunk in spans.chunks(per_request) {
        post_protobuf(
            client,
            c.http_url("/v1/traces"),
            spans_request(chunk.to_vec()).encode_to_vec(),
        )
        .await?;
    }
    Ok(())
}

async fn post_feedback(client: &reqwest::Client, c: &Collector, id: &str, body: &str) -> Result<(u16, Value)> {
    let response = client
        .post(c.api_url(&format!("/api/v1/anomalies/{id}/feedback")))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn latency_regression_and_new_error_pattern_become_anomalies_and_take_feedback() -> Result<()> {
    let data = tempfile::tempdir()?;
    let c = Collector::start_with(Options {
        data_dir: Some(data.path().to_path_buf()),
        ..Options::default()
    })?;
    let client = reqwest::Client::new();
    let minutes = STREAM_MINUTES;
    let base = (now_ns() / MIN_NS - minutes) * MIN_NS;

    // Three hours of steady POST /pay traffic, then twenty minutes where one request in four
    // takes over two seconds.
    let spans = regression_spans(base, 0..minutes, "POST /pay");
    post_spans(&client, &c, &spans).await?;
    // Routine INFO logs all along, and an ERROR line never seen before near the end, five
    // times in its minute (one line would be a one-off: a finding to look at, info).
    let mut records: Vec<_> = (0..minutes)
        .map(|m| log_record(base + m * MIN_NS + 1, &format!("payment accepted for order {m}"), &[]))
        .collect();
    let errors: Vec<_> = (0..5u64)
        .map(|k| {
            let mut error = log_record(
                base + (minutes - 5) * MIN_NS + 7 + k * 1_000_000_000,
                "card processor unreachable at 10.0.0.7:443",
                &[],
            );
            error.severity_number = 17;
            error.severity_text = "ERROR".into();
            // These lines come from a process that sets no service.name (say, a sidecar): they
            // carry the trace id of one of checkout's requests, which is how they are joined
            // to checkout.
            error.trace_id = spans[spans.len() - 1].trace_id.clone();
            error
        })
        .collect();
    records.sort_by_key(|r| r.time_unix_nano);
    post_protobuf(
        &client,
        c.http_url("/v1/logs"),
        logs_request("checkout", records).encode_to_vec(),
    )
    .await?;
    let mut anonymous = logs_request("ignored", errors);
    anonymous.resource_logs[0].resource = None;
    post_protobuf(&client, c.http_url("/v1/logs"), anonymous.encode_to_vec()).await?;

    let url = c.api_url("/api/v1/anomalies?service=checkout");
    let found = eventually(Duration::from_secs(60), "p99 and new-pattern anomalies", || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let (status, body) = get_json(&client, &url).await?;
            if status != 200 {
                bail!("anomalies API answered {status}: {body}");
            }
            let list = body["anomalies"].as_array().cloned().unwrap_or_default();
            let p99 = list
                .iter()
                .find(|a| a["signal"]["key"] == "red:checkout:POST /pay:p99")
                .cloned();
            let new = list.iter().find(|a| a["detector"] == "log_new_pattern").cloned();
            Ok(p99.zip(new).map(|(p, n)| (p, n, list)))
        }
    })
    .await?;
    let (p99, new_pattern, all) = found;

    // Nothing during the steady three hours.
    let slow_from = slow_from_ms(base);
    let early: Vec<_> = all
        .iter()
        .filter(|a| a["start_ms"].as_i64().unwrap_or(0) < slow_from)
        .collect();
    assert!(early.is_empty(), "false alarms before the regression: {early:#?}");

    assert_eq!(p99["detector"], "trace_red");
    assert_eq!(
        p99["start_ms"].as_i64(),
        Some(slow_from),
        "stamped with the first slow interval's start"
    );
    assert!(p99["observed"].as_f64().unwrap_or(0.0) > 2.0, "{p99}");
    assert!(p99["upper"].as_f64().unwrap_or(9.0) < 1.0, "{p99}");
    assert!((0.0..=1.0).contains(&p99["score"].as_f64().unwrap_or(-1.0)));
    let text = p99["explanation"].as_str().unwrap_or_default();
    assert!(text.starts_with("p99 latency of checkout POST /pay was 2."), "{text}");
    assert!(text.contains("expected ") && text.contains(" since "), "{text}");

    let text = new_pattern["explanation"].as_str().unwrap_or_default();
    assert!(text.contains("card processor unreachable at"), "{text}");
    assert!(text.contains("(5 lines)"), "{text}");
    assert_eq!(new_pattern["severity"], "critical");

    // The detection thread reports itself on /metrics.
    let text = client.get(c.api_url("/metrics")).send().await?.text().await?;
    let value_of = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        value_of("vigil_anomaly_updates_total{detector=\"trace_red\"}") >= 1.0,
        "{text}"
    );
    assert!(value_of("vigil_detect_points_total") >= 200.0, "{text}");
    assert!(value_of("vigil_detect_series") >= 5.0, "{text}");

    // Feedback: bad input is refused with a reason; a verdict is recorded.
    let id = p99["id"].as_str().unwrap_or_default().to_string();
    let (status, body) = post_feedback(&client, &c, &id, r#"{"verdict":"maybe"}"#).await?;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("verdict"), "{body}");
    let (status, _) = post_feedback(&client, &c, "no-such-id", r#"{"verdict":"noise"}"#).await?;
    assert_eq!(status, 404);
    let (status, body) = post_feedback(&client, &c, &id, r#"{"verdict":"noise"}"#).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["noise"], 1);
    assert!(
        body["threshold"].as_f64().unwrap_or(0.0) > 0.5,
        "noise must raise the threshold: {body}"
    );

    // Anomalies and verdicts survive a restart.
    assert!(c.terminate()?, "collector did not shut down cleanly");
    let c = Collector::start_with(Options {
        data_dir: Some(data.path().to_path_buf()),
        ..Options::default()
    })?;
    let (status, again) = get_json(&client, &c.api_url(&format!("/api/v1/anomalies/{id}"))).await?;
    assert_eq!(status, 200, "{again}");
    // The same finding; if it was still open and grew after the verdict, its sentence now
    // also says that sensitivity was lowered.
    let before = p99["explanation"].as_str().unwrap_or_default();
    let after = again["explanation"].as_str().unwrap_or_default();
    assert!(
        after == before || after == format!("{before}. Sensitivity lowered after 1 noise verdict."),
        "{after}"
    );
    let (status, body) = post_feedback(&client, &c, &id, r#"{"verdict":"real"}"#).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["noise"].as_u64(), body["real"].as_u64()),
        (Some(1), Some(1)),
        "{body}"
    );

    // The two findings on checkout are one incident, checkout ranked first, with evidence.
    let (status, incidents) = get_json(&client, &c.api_url("/api/v1/incidents")).await?;
    assert_eq!(status, 200);
    let list = incidents["incidents"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 1, "{incidents}");
    let inc = &list[0];
    assert_eq!(inc["candidates"][0]["service"], "checkout");
    let timeline: Vec<String> = inc["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["anomaly_id"].as_str().map(str::to_string))
        .collect();
    assert!(timeline.contains(&id), "{inc}");
    assert!(timeline.len() >= 2, "p99 and the new pattern: {inc}");
    assert!(
        inc["summary"]
            .as_str()
            .unwrap_or_default()
            .starts_with("checkout likely root cause: "),
        "{inc}"
    );
    let inc_id = inc["id"].as_str().unwrap_or_default();
    let (status, report) = get_json(&client, &c.api_url(&format!("/api/v1/incidents/{inc_id}"))).await?;
    assert_eq!(status, 200);
    assert_eq!(report["evidence"].as_array().map(Vec::len), Some(timeline.len()));
    let evidence = report["evidence"].as_array().cloned().unwrap_or_default();
    // The p99 finding links exemplar slow traces that really are in the store …
    let p99_evidence = evidence
        .iter()
        .find(|e| e["anomaly"]["id"] == id.as_str())
        .cloned()
        .unwrap_or(Value::Null);
    let trace_url = p99_evidence["traces"][0].as_str().unwrap_or_default().to_string();
    assert!(trace_url.starts_with("/api/v1/traces/"), "{p99_evidence}");
    let (status, trace) = get_json(&client, &c.api_url(&trace_url)).await?;
    assert_eq!(status, 200, "{trace}");
    let dur = |s: &Value| s["duration_ns"].as_i64().unwrap_or(0);
    assert!(
        trace["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| dur(s) > 2_000_000_000),
        "{trace}"
    );
    // … and the new log pattern comes with its sample line.
    let log_evidence = evidence
        .iter()
        .find(|e| e["anomaly"]["detector"] == "log_new_pattern")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(
        log_evidence["anomaly"]["signal"]["service"], "checkout",
        "joined by trace id"
    );
    let sample = log_evidence["sample_lines"][0]["body"].as_str().unwrap_or_default();
    assert!(sample.starts_with("card processor unreachable"), "{log_evidence}");
    assert_eq!(get_json(&client, &c.api_url("/api/v1/incidents/nope")).await?.0, 404);
    let (_, graph) = get_json(&client, &c.api_url("/api/v1/services/graph")).await?;
    assert!(
        graph["services"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s == "checkout"),
        "{graph}"
    );

    // The incident raised one alert (not one per anomaly); feedback on it reaches the
    // detectors through every anomaly it holds.
    let (_, alerts) = get_json(&client, &c.api_url("/api/v1/alerts")).await?;
    let all_alerts = alerts["alerts"].as_array().cloned().unwrap_or_default();
    assert_eq!(all_alerts.len(), 1, "{alerts}");
    let alert = &all_alerts[0];
    assert_eq!(alert["labels"]["alertname"], "VigilIncident", "{alerts}");
    assert_eq!(alert["labels"]["incident"], inc_id);
    assert_eq!(alert["annotations"]["service"], "checkout");
    let alert_id = alert["id"].as_str().unwrap_or_default();
    let response = client
        .post(c.api_url(&format!("/api/v1/alerts/{alert_id}/feedback")))
        .json(&serde_json::json!({"verdict": "noise", "by": "ana"}))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await?;
    assert_eq!(
        body["forwarded_to_detectors"].as_u64(),
        Some(timeline.len() as u64),
        "{body}"
    );
    let (status, body) = post_feedback(&client, &c, &id, r#"{"verdict":"real"}"#).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["noise"].as_u64(), body["real"].as_u64()),
        (Some(2), Some(2)),
        "{body}"
    );
    Ok(())
}

/// Regression: a pause in a stream of old data (a backfill, an agent draining its disk
/// buffer, the demo's fast-forward on a busy CI machine) used to move event time straight to
/// the wall clock, so every later point of that stream arrived "late" and was dropped from
/// detection. The 3 s pause below is the scenario itself, not a wait for something.
#[tokio::test]
async fn a_pause_in_a_backfill_does_not_make_the_rest_of_it_late() -> Result<()> {
    let c = Collector::start()?;
    let client = reqwest::Client::new();
    let base = hour_old_stream();
    post_spans(&client, &c, &regression_spans(base, 0..150, "GET /stock")).await?;
    // The detection thread's idle tick is 1 s: pause for longer than that.
    tokio::time::sleep(Duration::from_secs(3)).await;
    post_spans(&client, &c, &regression_spans(base, 150..STREAM_MINUTES, "GET /stock")).await?;

    let p99 = stock_p99(&client, &c, "the p99 anomaly after the pause").await?;
    assert_eq!(p99["start_ms"].as_i64(), Some(slow_from_ms(base)), "{p99}");
    assert_eq!(late_events(&client, &c).await?, "vigil_detect_late_events_total 0");
    Ok(())
}

#[tokio::test]
async fn a_host_whose_clock_runs_fast_does_not_make_the_others_late() -> Result<()> {
    // checkout's regression stream, and in every request after it a span from a batch host
    // whose clock is ten minutes ahead. Event time used to be the newest timestamp seen: the
    // batch host closed every interval ten minutes early and checkout's spans were all
    // dropped as late, so its regression was never found.
    let c = Collector::start()?;
    let client = reqwest::Client::new();
    let base = hour_old_stream();
    let checkout = regression_spans(base, 0..STREAM_MINUTES, "GET /stock");
    for chunk in checkout.chunks(1000) {
        let ahead = chunk.last().map_or(0, |s| s.end_time_unix_nano) + 10 * MIN_NS;
        let batch = Span {
            trace_id: ahead.to_be_bytes().repeat(2),
            span_id: ahead.to_be_bytes().to_vec(),
            name: "run".into(),
            kind: 2,
            start_time_unix_nano: ahead - 1_000_000_000,
            end_time_unix_nano: ahead,
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![
                resource_spans("checkout", chunk.to_vec()),
                resource_spans("batch", vec![batch]),
            ],
        };
        post_protobuf(&client, c.http_url("/v1/traces"), request.encode_to_vec()).await?;
    }
    let p99 = stock_p99(&client, &c, "the p99 anomaly next to a fast clock").await?;
    assert_eq!(p99["start_ms"].as_i64(), Some(slow_from_ms(base)), "{p99}");
    assert_eq!(late_events(&client, &c).await?, "vigil_detect_late_events_total 0");
    Ok(())
}

/// Regression: an exporter groups a request's records by resource, so a request covering
/// ten minutes lists checkout's ten minutes, then payment's, then cart's. Taken in that
/// order, cart's first eight minutes came after checkout and payment had moved event time
/// on, and were dropped as late; a request is now taken in event-time order.
#[tokio::test]
async fn records_grouped_by_resource_in_one_request_are_not_late() -> Result<()> {
    let c = Collector::start()?;
    let client = reqwest::Client::new();
    let base = hour_old_stream();
    let checkout = regression_spans(base, 0..STREAM_MINUTES, "GET /stock");
    let copy = |spans: &[Span], salt: u8| -> Vec<Span> {
        spans
            .iter()
            .map(|s| {
                let mut s = s.clone();
                s.span_id[0] = salt;
                s.trace_id[0] = salt;
                s
            })
            .collect()
    };
    // Ten minutes (200 spans) per request.
    for chunk in checkout.chunks(200) {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![
                resource_spans("checkout", chunk.to_vec()),
                resource_spans("payment", copy(chunk, 1)),
                resource_spans("cart", copy(chunk, 2)),
            ],
        };
        post_protobuf(&client, c.http_url("/v1/traces"), request.encode_to_vec()).await?;
    }
    let p99 = stock_p99(&client, &c, "the p99 anomaly of resource-grouped requests").await?;
    assert_eq!(p99["start_ms"].as_i64(), Some(slow_from_ms(base)), "{p99}");
    assert_eq!(late_events(&client, &c).await?, "vigil_detect_late_events_total 0");
    Ok(())
}

/// Waits for checkout's `GET /stock` p99 anomaly (the regression of [`regression_spans`]).
async fn stock_p99(client: &reqwest::Client, c: &Collector, what: &str) -> Result<Value> {
    let url = c.api_url("/api/v1/anomalies?service=checkout");
    eventually(Duration::from_secs(60), what, || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let (_, body) = get_json(&client, &url).await?;
            Ok(body["anomalies"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["signal"]["key"] == "red:checkout:GET /stock:p99")
                .cloned())
        }
    })
    .await
}

/// The vigil_detect_late_events_total line of the collector's /metrics.
async fn late_events(client: &reqwest::Client, c: &Collector) -> Result<String> {
    let metrics = client.get(c.api_url("/metrics")).send().await?.text().await?;
    Ok(metrics
        .lines()
        .find(|l| l.starts_with("vigil_detect_late_events_total "))
        .unwrap_or_default()
        .to_string())
}

/// Sends the first 180 minutes of the checkout regression stream, stops the collector
/// with SIGTERM, starts it again on the same data directory with `config` (TOML), and sends
/// the last 20 minutes, in requests of five minutes (36 before the restart).
async fn restart_midway(config: &str) -> Result<Restarted> {
    vigil_e2e::init_tls();
    let dir = tempfile::tempdir()?;
    let config_path = dir.path().join("collector.toml");
    std::fs::write(&config_path, config)?;
    let options = Options {
        data_dir: Some(dir.path().join("data")),
        args: vec!["--config".into(), config_path.display().to_string()],
        ..Options::default()
    };
    let client = reqwest::Client::new();
    let base = hour_old_stream();

    let c = Collector::start_with(options.clone())?;
    let before = regression_spans(base, 0..STREAM_MINUTES - 20, "GET /stock");
    post_spans_by(&client, &c, &before, 100).await?;
    assert!(c.terminate()?, "SIGTERM must exit cleanly");
    assert!(
        dir.path().join("data/detect/engine-state.json").exists(),
        "detector state saved at shutdown"
    );

    let c = Collector::start_with(options)?;
    let after = regression_spans(base, STREAM_MINUTES - 20..STREAM_MINUTES, "GET /stock");
    post_spans_by(&client, &c, &after, 100).await?;
    let p99 = stock_p99(&client, &c, "the p99 anomaly after the restart").await?;
    assert!(c.logs().contains("detector state restored"), "{}", c.logs());
    Ok(Restarted {
        slow_from_ms: slow_from_ms(base),
        p99,
        client,
        c,
        _dir: dir,
    })
}

/// What [`restart_midway`] leaves: the restarted collector (dropped before its directory).
struct Restarted {
    slow_from_ms: i64,
    /// The p99 anomaly of GET /stock found after the restart.
    p99: Value,
    client: reqwest::Client,
    c: Collector,
    _dir: tempfile::TempDir,
}

/// What the detectors learned survives a graceful restart: a regression that starts right
/// after it is found from its first minute. The WAL is cut into 4 KiB segments, so the
/// restart has nothing left to replay: a cold start would see only the 20 new one-minute
/// points, inside its 32-point warm-up, and find nothing.
#[tokio::test]
async fn detectors_keep_what_they_learned_across_a_restart() -> Result<()> {
    let r = restart_midway("[wal]\nsegment_bytes = 4096\n").await?;
    assert_eq!(r.p99["start_ms"].as_i64(), Some(r.slow_from_ms), "{}", r.p99);
    Ok(())
}

/// With the default 64 MiB segments the restart replays every entry (the indexes skip what
/// they committed); the detectors must not take them a second time: their intervals are
/// closed in the restored state, so fed again they would all be late events — or, for the
/// interval still open, double counts.
#[tokio::test]
async fn replay_after_a_restart_does_not_feed_the_detectors_twice() -> Result<()> {
    let r = restart_midway("").await?;
    assert_eq!(r.p99["start_ms"].as_i64(), Some(r.slow_from_ms), "{}", r.p99);
    let logs = r.c.logs();
    assert!(logs.contains("write-ahead log replayed replayed=36"), "{logs}");
    assert_eq!(late_events(&r.client, &r.c).await?, "vigil_detect_late_events_total 0");
    Ok(())
}

#[tokio::test]
async fn anomalies_api_rejects_bad_ranges() -> Result<()> {
    let c = Collector::start()?;
    let client = reqwest::Client::new();
    let (status, body) = get_json(&client, &c.api_url("/api/v1/anomalies?start=20&end=10")).await?;
    assert_eq!(status, 400, "{body}");
    let (status, body) = get_json(&client, &c.api_url("/api/v1/anomalies?limit=zero")).await?;
    assert_eq!(status, 400, "{body}");
    let (status, body) = get_json(&client, &c.api_url("/api/v1/anomalies")).await?;
    assert_eq!(status, 200);
    assert_eq!(body["anomalies"], Value::Array(vec![]));
    Ok(())
}
