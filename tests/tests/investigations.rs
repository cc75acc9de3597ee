//! Investigations end to end: traces and logs of frontend → checkout → payment sent over
//! OTLP/HTTP to the real collector; in the last minutes payment's own time grows tenfold and
//! it logs a new error, which checkout's error lines only echo. `POST /api/v1/investigations`
//! over those minutes must name payment first, with the evidence and the queries behind it,
//! keep the result across a restart, and refuse malformed requests with a reason.

use std::time::Duration;

use anyhow::Result;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::{Value, json};
use vigil_e2e::otlp::{kv, logs_request, string_value};
use vigil_e2e::{Collector, Options, eventually, get_json, now_ns, post_protobuf};

const MIN_NS: u64 = 60_000_000_000;
/// Minutes of traffic; the last `BROKEN` of them have the fault.
const MINUTES: u64 = 70;
const BROKEN: u64 = 5;
const PER_MINUTE: u64 = 10;

struct Traffic {
    spans: Vec<(String, Span)>,
    logs: Vec<(String, LogRecord)>,
}

fn id8(n: u64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

/// Ten requests a minute through frontend → checkout → payment, starting at `base`.
fn traffic(base: u64) -> Traffic {
    let mut t = Traffic {
        spans: Vec::new(),
        logs: Vec::new(),
    };
    for m in 0..MINUTES {
        let broken = m >= MINUTES - BROKEN;
        for k in 0..PER_MINUTE {
            let i = m * PER_MINUTE + k;
            let trace = (u128::from(i) + 1).to_be_bytes().to_vec();
            let start = base + m * MIN_NS + k * 6_000_000_000;
            let jitter = 1_000_000 * ((i * 7) % 5);
            let payment_ns = if broken { 400_000_000 } else { 30_000_000 } + jitter;
            let checkout_ns = 10_000_000 + jitter + payment_ns;
            let frontend_ns = 2_000_000 + checkout_ns;
            let (f, c, p) = (3 * i + 1, 3 * i + 2, 3 * i + 3);
            let span = |id: u64, parent: Option<u64>, name: &str, at: u64, ns: u64| Span {
                trace_id: trace.clone(),
                span_id: id8(id),
                parent_span_id: parent.map(id8).unwrap_or_default(),
                name: name.into(),
                kind: 2,
                start_time_unix_nano: at,
                end_time_unix_nano: at + ns,
                ..Default::default()
            };
            t.spans
                .push(("frontend".into(), span(f, None, "GET /buy", start, frontend_ns)));
            t.spans.push((
                "checkout".into(),
                span(c, Some(f), "POST /checkout", start + 1_000, checkout_ns),
            ));
            t.spans.push((
                "payment".into(),
                span(p, Some(c), "POST /pay", start + 2_000, payment_ns),
            ));
            let line = |body: &str, severity: i32, span: u64, at: u64| LogRecord {
                time_unix_nano: at,
                severity_number: severity,
                severity_text: if severity >= 17 { "ERROR" } else { "INFO" }.into(),
                body: string_value(body),
                trace_id: trace.clone(),
                span_id: id8(span),
                ..Default::default()
            };
            // Routine lines all along, so the baseline's minutes are known.
            t.logs.push((
                "checkout".into(),
                line(&format!("order {i} placed"), 9, c, start + 5_000),
            ));
            if broken {
                t.logs.push((
                    "payment".into(),
                    line(&format!("card declined by issuer for order {i}"), 17, p, start + 10_000),
                ));
                t.logs.push((
                    "checkout".into(),
                    line(&format!("payment call failed for order {i}"), 17, c, start + 20_000),
                ));
            }
        }
    }
    t
}

async fn send(client: &reqwest::Client, c: &Collector, t: &Traffic) -> Result<()> {
    for chunk in t.spans.chunks(600) {
        let resource_spans = chunk
            .iter()
            .map(|(service, span)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", string_value(service))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span.clone()],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        let request = ExportTraceServiceRequest { resource_spans };
        post_protobuf(client, c.http_url("/v1/traces"), request.encode_to_vec()).await?;
    }
    for service in ["checkout", "payment"] {
        let records: Vec<LogRecord> = t
            .logs
            .iter()
            .filter(|(s, _)| s == service)
            .map(|(_, r)| r.clone())
            .collect();
        for chunk in records.chunks(500) {
            post_protobuf(
                client,
                c.http_url("/v1/logs"),
                logs_request(service, chunk.to_vec()).encode_to_vec(),
            )
            .await?;
        }
    }
    Ok(())
}

async fn investigate(client: &reqwest::Client, c: &Collector, body: &Value) -> Result<(u16, Value)> {
    let response = client
        .post(c.api_url("/api/v1/investigations"))
        .json(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn an_investigation_names_the_slow_failing_callee_not_its_callers() -> Result<()> {
    let data = tempfile::tempdir()?;
    let c = Collector::start_with(Options {
        data_dir: Some(data.path().join("data")),
        ..Options::default()
    })?;
    let client = reqwest::Client::new();
    // Traffic that ended ten minutes ago.
    let base = (now_ns() / MIN_NS - MINUTES - 10) * MIN_NS;
    let t = traffic(base);
    send(&client, &c, &t).await?;
    let expected_spans = t.spans.len() as u64;
    eventually(Duration::from_secs(30), "every span indexed", || {
        let (client, url) = (client.clone(), c.api_url("/api/v1/services?start=0"));
        async move {
            let (_, body) = get_json(&client, &url).await?;
            let spans: u64 = body["services"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["spans"].as_u64())
                .sum();
            Ok((spans == expected_spans).then_some(()))
        }
    })
    .await?;

    let window_start = ((base + (MINUTES - BROKEN) * MIN_NS) / 1_000_000) as i64;
    let window_end = ((base + MINUTES * MIN_NS) / 1_000_000) as i64;
    let (status, inv) = investigate(&client, &c, &json!({ "start": window_start, "end": window_end })).await?;
    assert_eq!(status, 201, "{inv}");
    let ranked: Vec<&str> = inv["candidates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["service"].as_str())
        .collect();
    assert_eq!(ranked.first(), Some(&"payment"), "{inv:#}");
    assert!(
        !ranked.contains(&"frontend"),
        "frontend's own time never changed: {inv:#}"
    );
    let payment = &inv["candidates"][0];
    let kinds: Vec<&str> = payment["evidence"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"self_time"), "{payment:#}");
    assert!(kinds.contains(&"log_pattern"), "{payment:#}");
    let log = payment["evidence"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["kind"] == "log_pattern")
        .cloned()
        .unwrap_or_default();
    assert_eq!(log["new"], true, "{log:#}");
    assert!(
        log["samples"][0].as_str().unwrap_or("").starts_with("card declined"),
        "{log:#}"
    );
    assert!(
        log["template"].as_str().unwrap_or("").contains("card declined"),
        "{log:#}"
    );
    // The query behind the evidence answers with the lines it counted.
    let query = log["query"].as_str().unwrap_or_default().to_string();
    let (s, found) = get_json(&client, &c.api_url(&query)).await?;
    assert_eq!(s, 200, "{query}: {found}");
    assert_eq!(found["total"], BROKEN * PER_MINUTE, "{query}: {found}");
    // checkout's error lines sit above payment's failure: echoed, not where it started.
    if let Some(checkout) = inv["candidates"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["service"] == "checkout")
    {
        assert!(
            checkout["evidence"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|e| e["kind"] != "log_pattern"),
            "{checkout:#}"
        );
    }
    assert!(inv["baseline"]["end"].as_i64().unwrap_or(i64::MAX) <= window_start);
    assert!(
        inv["baseline_reason"]
            .as_str()
            .unwrap_or("")
            .contains("before the window")
    );

    // Kept: listed, fetched by id, and still there after a restart.
    let id = inv["id"].as_str().unwrap_or_default().to_string();
    let (_, list) = get_json(&client, &c.api_url("/api/v1/investigations")).await?;
    assert_eq!(list["investigations"][0]["id"], id.as_str());
    assert_eq!(list["investigations"][0]["candidates"][0]["service"], "payment");
    assert!(c.terminate()?, "clean shutdown");
    let c = Collector::start_with(Options {
        data_dir: Some(data.path().join("data")),
        ..Options::default()
    })?;
    let (s, again) = get_json(&client, &c.api_url(&format!("/api/v1/investigations/{id}"))).await?;
    assert_eq!(s, 200);
    assert_eq!(again["candidates"], inv["candidates"]);
    let (s, _) = get_json(&client, &c.api_url("/api/v1/investigations/nope")).await?;
    assert_eq!(s, 404);

    // Bad requests say what was wrong.
    for (body, says) in [
        (json!({ "start": window_end, "end": window_start }), "before end"),
        (json!({ "start": window_start }), "end"),
        (
            json!({ "start": window_start, "end": window_end, "colour": "red" }),
            "colour",
        ),
        (
            json!({ "start": window_start, "end": window_end, "baseline": { "start": window_start, "end": window_end } }),
            "overlaps",
        ),
    ] {
        let (s, answer) = investigate(&client, &c, &body).await?;
        assert_eq!(s, 400, "{body} → {answer}");
        assert!(
            answer["error"].as_str().unwrap_or("").contains(says),
            "{body} → {answer}"
        );
    }
    // A window with no data says so instead of inventing a cause.
    let (s, empty) = investigate(&client, &c, &json!({ "start": 1_000_000, "end": 1_180_000 })).await?;
    assert_eq!(s, 201);
    assert_eq!(empty["candidates"], json!([]));
    assert!(
        empty["notes"][0].as_str().unwrap_or("").contains("nothing to compare"),
        "{empty}"
    );
    Ok(())
}
