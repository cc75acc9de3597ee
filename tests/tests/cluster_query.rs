//! A cluster's query root answers as one collector would. A real `nats-server`, an ingest
//! node, two workers and a correlator get the same OTLP metrics and spans as a single
//! collector, for services held by both workers; then the same PromQL (instant and range:
//! sums across services, rates, a histogram quantile, offsets, a subquery, `topk`), the same
//! Prometheus listings and Vigil's own metric query, asked of the ingest node and of the
//! single collector, must give the same answers. The ingest node's web UI shows the whole
//! cluster: metrics of both workers' services, the correlator's service graph, incidents.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::Value;
use vigil_e2e::nats::{NatsCluster, owner, partition_of, partitions_split, start_role};
use vigil_e2e::otlp::{kv, log_record, string_value};
use vigil_e2e::{Collector, eventually, get_json, now_ns, post_protobuf};

const PARTITIONS: u64 = 8;
const STEP_NS: u64 = 15_000_000_000;
const POINTS: u64 = 40;
/// The step from which one service fails.
const FAULT_STEP: u64 = 28;

fn number(t: u64, v: f64) -> NumberDataPoint {
    NumberDataPoint {
        time_unix_nano: t,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

/// Ten minutes of one service's metrics from `t0`: a counter, a gauge and a latency
/// histogram, each service at its own rates so no two series tie.
fn metrics(service: &str, k: u64, t0: u64) -> ResourceMetrics {
    let times = || (0..POINTS).map(move |i| (i, t0 + i * STEP_NS));
    let kf = k as f64 + 1.0;
    let counter = Metric {
        name: "q.requests".into(),
        data: Some(Data::Sum(Sum {
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
            data_points: times()
                .map(|(i, t)| NumberDataPoint {
                    start_time_unix_nano: t0,
                    ..number(t, kf * (i * i) as f64)
                })
                .collect(),
        })),
        ..Default::default()
    };
    let gauge = Metric {
        name: "q.inflight".into(),
        data: Some(Data::Gauge(Gauge {
            data_points: times()
                .map(|(i, t)| number(t, kf * 10.0 + (i % 7) as f64 * 0.5))
                .collect(),
        })),
        ..Default::default()
    };
    let histogram = Metric {
        name: "q.latency".into(),
        data: Some(Data::Histogram(Histogram {
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            data_points: times()
                .map(|(i, t)| HistogramDataPoint {
                    start_time_unix_nano: t0,
                    time_unix_nano: t,
                    count: 10 * i * (k + 1),
                    sum: Some(i as f64 * kf),
                    explicit_bounds: vec![0.1, 0.5, 1.0],
                    bucket_counts: vec![(4 + k) * i, 3 * i, (2 + k) * i, i],
                    ..Default::default()
                })
                .collect(),
        })),
        ..Default::default()
    };
    ResourceMetrics {
        resource: Some(Resource {
            attributes: vec![kv("service.name", string_value(service))],
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            metrics: vec![counter, gauge, histogram],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A call from `caller` to `callee`, so the correlator's service graph has an edge across
/// the two workers.
fn call(caller: &str, callee: &str, t: u64) -> ExportTraceServiceRequest {
    let span = |service: &str, id: u8, parent: Option<u8>| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", string_value(service))],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: vec![Span {
                trace_id: vec![0x7c; 16],
                span_id: vec![id; 8],
                parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
                name: format!("{service} op"),
                kind: if parent.is_some() { 2 } else { 3 },
                start_time_unix_nano: t,
                end_time_unix_nano: t + 2_000_000,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![span(caller, 1, None), span(callee, 2, Some(1))],
    }
}

/// The services' own traffic over the ten minutes: one request a step each, quick and
/// fine, and a routine log line; from step [`FAULT_STEP`] on, `faulty` answers slowly with
/// errors and logs a new error line.
fn traffic(services: &[String], faulty: &str, t0: u64) -> (ExportTraceServiceRequest, ExportLogsServiceRequest) {
    let mut spans = Vec::new();
    let mut logs = Vec::new();
    for (k, service) in services.iter().enumerate() {
        let broken = |i: u64| service == faulty && i >= FAULT_STEP;
        let resource = Some(Resource {
            attributes: vec![kv("service.name", string_value(service))],
            ..Default::default()
        });
        spans.push(ResourceSpans {
            resource: resource.clone(),
            scope_spans: vec![ScopeSpans {
                spans: (0..POINTS)
                    .map(|i| {
                        let start = t0 + i * STEP_NS + 1_000_000;
                        Span {
                            trace_id: [[k as u8 + 1; 8], i.to_be_bytes()].concat(),
                            span_id: [k as u8 + 1, 0, 0, 0, 0, 0, 0, i as u8].to_vec(),
                            name: "GET /api".into(),
                            kind: 2,
                            start_time_unix_nano: start,
                            end_time_unix_nano: start
                                + if broken(i) {
                                    300_000_000
                                } else {
                                    2_000_000 + k as u64 * 10_000
                                },
                            status: broken(i).then(|| Status {
                                code: 2,
                                message: "timeout".into(),
                            }),
                            ..Default::default()
                        }
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        });
        // The second worker's services log a line of their own first, so the two workers'
        // pattern ids for the shared routine line differ.
        let warmed = (k >= 3).then(|| log_record(t0, &format!("cache warmed for {service}"), &[]));
        let lines = warmed.into_iter().chain((0..POINTS).flat_map(|i| {
            let t = t0 + i * STEP_NS + 5_000_000;
            let routine = log_record(t, &format!("served request {i} in 2 ms"), &[]);
            let error = broken(i).then(|| LogRecord {
                severity_number: 17,
                severity_text: "ERROR".into(),
                ..log_record(
                    t + 1_000,
                    &format!("backend timed out after 300 ms on attempt {i}"),
                    &[],
                )
            });
            std::iter::once(routine).chain(error)
        }));
        logs.push(ResourceLogs {
            resource,
            scope_logs: vec![ScopeLogs {
                log_records: lines.collect(),
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    (
        ExportTraceServiceRequest { resource_spans: spans },
        ExportLogsServiceRequest { resource_logs: logs },
    )
}

/// `path?params` of `c`'s API, as JSON.
async fn ask(client: &reqwest::Client, c: &Collector, path: &str, params: &[(&str, String)]) -> Result<Value> {
    let url = reqwest::Url::parse_with_params(&c.api_url(path), params)?;
    let (status, body) = get_json(client, url.as_str()).await?;
    ensure!(status == 200, "{url} answered {status}: {body}");
    Ok(body)
}

/// An answer with the elements of an instant vector (or a list) in one order: the engine
/// orders them by how its storage listed the series, which differs between the two.
fn canonical(mut answer: Value) -> Value {
    let data = &mut answer["data"];
    let list = if data.get("result").is_some() {
        &mut data["result"]
    } else {
        data
    };
    if let Value::Array(items) = list {
        items.sort_by_cached_key(|v| v.to_string());
    }
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_root_answers_as_one_collector_would() -> Result<()> {
    vigil_e2e::init_tls();
    let nats = NatsCluster::start(1)?;
    let urls = nats.urls();
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("cluster.toml");
    std::fs::write(
        &config,
        format!("[cluster]\npartitions = {PARTITIONS}\nreplicas = 1\nlease_secs = 4\n"),
    )?;
    let ingest = start_role("ingest", &urls, &config, None)?;
    let w1 = start_role("worker", &urls, &config, Some(&dir.path().join("w1")))?;
    let w2 = start_role("worker", &urls, &config, Some(&dir.path().join("w2")))?;
    let rca = start_role("rca", &urls, &config, Some(&dir.path().join("rca")))?;
    let single = Collector::start()?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;

    partitions_split(&client, &[&w1, &w2], PARTITIONS).await?;
    // Three services on each worker.
    let view = ask(&client, &ingest, "/api/v1/cluster", &[]).await?;
    let nodes: Vec<String> = view["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["node"].as_str().map(str::to_string))
        .collect();
    ensure!(nodes.len() == 2, "two workers: {view}");
    let mut services: Vec<String> = Vec::new();
    for node in &nodes {
        services.extend(
            (0..200)
                .map(|i| format!("q-svc-{i}"))
                .filter(|s| owner(&view, partition_of(s, PARTITIONS)).as_ref() == Some(node))
                .take(3),
        );
    }
    ensure!(services.len() == 6, "services for both workers: {services:?}");

    let t0 = now_ns() - POINTS * STEP_NS - 60_000_000_000;
    let request = ExportMetricsServiceRequest {
        resource_metrics: services
            .iter()
            .enumerate()
            .map(|(k, s)| metrics(s, k as u64, t0))
            .collect(),
    };
    let spans = call(&services[0], &services[5], t0 + 20 * STEP_NS);
    let faulty = services[4].clone();
    let (traces, logs) = traffic(&services, &faulty, t0);
    for c in [&ingest, &single] {
        post_protobuf(&client, c.http_url("/v1/metrics"), request.encode_to_vec()).await?;
        post_protobuf(&client, c.http_url("/v1/traces"), spans.encode_to_vec()).await?;
        post_protobuf(&client, c.http_url("/v1/traces"), traces.encode_to_vec()).await?;
        post_protobuf(&client, c.http_url("/v1/logs"), logs.encode_to_vec()).await?;
    }

    let in_range = |i: u64| format!("{:.3}", (t0 + i * STEP_NS) as f64 / 1e9);
    let listing = [("match[]", r#"{__name__=~"q_.*"}"#.to_string()), ("start", in_range(0))];
    // 6 services × (counter, gauge, 4 buckets, sum, count).
    let expected = eventually(Duration::from_secs(60), "every series in the single collector", || {
        let (client, single, listing) = (&client, &single, &listing);
        async move {
            let body = ask(client, single, "/prometheus/api/v1/series", listing).await?;
            Ok((body["data"].as_array().map(Vec::len) == Some(6 * 8)).then_some(body))
        }
    })
    .await?;
    eventually(Duration::from_secs(60), "every series through the root", || {
        let (client, ingest, listing, expected) = (&client, &ingest, &listing, &expected);
        async move {
            let got = ask(client, ingest, "/prometheus/api/v1/series", listing).await?;
            Ok((canonical(got) == canonical(expected.clone())).then_some(()))
        }
    })
    .await?;

    let at = in_range(35);
    let instant = [
        "sum(rate(q_requests_total[2m]))",
        "sum by (job) (rate(q_requests_total[2m]))",
        "histogram_quantile(0.9, sum by (le) (rate(q_latency_bucket[2m])))",
        "max_over_time(q_inflight[5m])",
        "count(q_inflight > 25)",
        "q_inflight offset 2m",
        "q_inflight / scalar(sum(q_inflight))",
        "max_over_time(sum(q_inflight)[5m:30s])",
        "topk(2, q_inflight)",
        "q_requests_total[1m]",
    ];
    for expr in instant {
        let params = [("query", expr.to_string()), ("time", at.clone())];
        let want = ask(&client, &single, "/prometheus/api/v1/query", &params).await?;
        let got = ask(&client, &ingest, "/prometheus/api/v1/query", &params).await?;
        ensure!(
            !want["data"]["result"].as_array().is_some_and(Vec::is_empty),
            "{expr}: the single collector's answer is empty: {want}"
        );
        assert_eq!(canonical(got), canonical(want), "{expr} at {at}");
    }
    for expr in [
        "sum(rate(q_requests_total[1m]))",
        "histogram_quantile(0.5, sum by (le, job) (rate(q_latency_bucket[1m])))",
        "avg(q_inflight)",
    ] {
        let params = [
            ("query", expr.to_string()),
            ("start", in_range(5)),
            ("end", in_range(39)),
            ("step", "30".to_string()),
        ];
        let want = ask(&client, &single, "/prometheus/api/v1/query_range", &params).await?;
        let got = ask(&client, &ingest, "/prometheus/api/v1/query_range", &params).await?;
        ensure!(
            want["data"]["result"].as_array().is_some_and(|r| !r.is_empty()),
            "{expr}: {want}"
        );
        assert_eq!(got, want, "range {expr}");
    }
    for (path, params) in [
        ("/prometheus/api/v1/labels", listing.to_vec()),
        ("/prometheus/api/v1/label/job/values", listing.to_vec()),
        ("/prometheus/api/v1/metadata", vec![]),
    ] {
        let want = ask(&client, &single, path, &params).await?;
        let got = ask(&client, &ingest, path, &params).await?;
        assert_eq!(canonical(got), canonical(want), "{path}");
    }
    let (status, bad) = get_json(
        &client,
        &ingest.api_url("/prometheus/api/v1/query?query=sum(rate(q_requests_total[2m])"),
    )
    .await?;
    assert_eq!((status, bad["errorType"].as_str()), (400, Some("bad_data")), "{bad}");

    // Vigil's own metric query: the same series on the same step grid.
    let params = [
        ("name", "q.inflight".to_string()),
        ("start", ((t0 / 1_000_000) as i64).to_string()),
        ("end", ((t0 + POINTS * STEP_NS) / 1_000_000).to_string()),
        ("step", "60s".to_string()),
    ];
    let want = ask(&client, &single, "/api/v1/metrics/query", &params).await?;
    let got = ask(&client, &ingest, "/api/v1/metrics/query", &params).await?;
    assert_eq!(want["result"]["series"].as_array().map(Vec::len), Some(6), "{want}");
    assert_eq!(got, want, "metric query");

    // One template logged on both workers is one pattern at the root; its id there finds
    // the template's lines on both (each worker's own ids would not).
    let logged = [
        ("start", ((t0 / 1_000_000) as i64).to_string()),
        ("end", ((t0 + POINTS * STEP_NS) / 1_000_000).to_string()),
        ("limit", "1000".to_string()),
    ];
    let routine = |answer: &Value| -> Option<u64> {
        answer["patterns"]
            .as_array()?
            .iter()
            .find(|p| p["template"].as_str().is_some_and(|t| t.starts_with("served request")))?["pattern_id"]
            .as_u64()
    };
    let single_id = routine(&ask(&client, &single, "/api/v1/logs/patterns", &logged).await?).context("single")?;
    let root_patterns = ask(&client, &ingest, "/api/v1/logs/patterns", &logged).await?;
    let root_id = routine(&root_patterns).context("root")?;
    let by_pattern = |id: u64| {
        let mut params = logged.to_vec();
        params.push(("pattern", id.to_string()));
        params
    };
    let lines = ask(&client, &single, "/api/v1/logs/search", &by_pattern(single_id)).await?["total"].clone();
    assert_eq!(lines, serde_json::json!(6 * POINTS), "every service's routine line");
    let through_root = ask(&client, &ingest, "/api/v1/logs/search", &by_pattern(root_id)).await?["total"].clone();
    assert_eq!(through_root, lines, "the root's pattern finds it on both workers");

    // An investigation through the ingest node is ranked by the correlator over both
    // workers' rows: the same candidates, scores and filled-in log evidence as one collector.
    let ms = |i: u64| ((t0 + i * STEP_NS) / 1_000_000) as i64;
    let asked = serde_json::json!({
        "start": ms(FAULT_STEP) - 30_000, "end": ms(POINTS),
        "baseline": {"start": ms(0), "end": ms(FAULT_STEP - 4)},
    });
    let mut answers = Vec::new();
    for c in [&single, &ingest] {
        let response = client
            .post(c.api_url("/api/v1/investigations"))
            .json(&asked)
            .send()
            .await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await?;
        ensure!(status == 201, "investigation answered {status}: {body}");
        answers.push(body);
    }
    let ranking = |inv: &Value| -> Vec<(String, String)> {
        inv["candidates"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["service"].as_str().unwrap_or_default().to_string(),
                    format!("{:.9}", c["score"].as_f64().unwrap_or(f64::NAN)),
                )
            })
            .collect()
    };
    let (want, got) = (&answers[0], &answers[1]);
    assert_eq!(ranking(got), ranking(want), "the cluster's ranking");
    assert_eq!(
        ranking(want).first().map(|c| c.0.as_str()),
        Some(faulty.as_str()),
        "{want}"
    );
    // Pattern ids (and the signal and queries naming them) are each store's own.
    let evidence = |inv: &Value| {
        let mut e = inv["candidates"][0]["evidence"].clone();
        for item in e.as_array_mut().into_iter().flatten() {
            if let Some(fields) = item.as_object_mut()
                && fields.remove("pattern_id").is_some()
            {
                fields.remove("query");
                fields.remove("signal");
            }
        }
        e
    };
    assert_eq!(evidence(got), evidence(want), "the top candidate's evidence");
    ensure!(
        evidence(got).to_string().contains("backend timed out after"),
        "the new error line's template and samples, filled in by its worker: {}",
        evidence(got)
    );
    let kept = ask(
        &client,
        &ingest,
        &format!("/api/v1/investigations/{}", got["id"].as_str().unwrap_or_default()),
        &[],
    )
    .await?;
    assert_eq!(kept["candidates"], got["candidates"], "kept by the correlator");

    // The UI on the ingest node: one chart with both workers' services, the correlator's
    // graph with the edge across workers, the incidents page.
    let page = |path: &str| {
        let (client, url) = (client.clone(), ingest.api_url(path));
        async move {
            let response = client.get(&url).send().await?;
            let status = response.status().as_u16();
            let body = response.text().await?;
            ensure!(status == 200, "{url} answered {status}: {body}");
            Ok::<String, anyhow::Error>(body)
        }
    };
    let chart = page("/ui/metrics?name=q.inflight&range=6h").await?;
    for s in &services {
        ensure!(chart.contains(s.as_str()), "{s} missing from the metrics page");
    }
    let (caller, callee) = (services[0].clone(), services[5].clone());
    eventually(Duration::from_secs(60), "the correlator's edge across workers", || {
        let (client, ingest, caller, callee) = (&client, &ingest, &caller, &callee);
        async move {
            let graph = ask(client, ingest, "/api/v1/services/graph", &[]).await?;
            let edge = graph["edges"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["from"] == caller.as_str() && e["to"] == callee.as_str());
            Ok(edge.then_some(()))
        }
    })
    .await?;
    let html = page("/ui/services").await?;
    ensure!(
        html.contains(caller.as_str()) && html.contains(callee.as_str()),
        "the services page through the root"
    );
    page("/ui/incidents").await?;
    let filtered = page(&format!("/ui/logs?pattern={root_id}&range=6h")).await?;
    ensure!(
        filtered.contains("served request"),
        "the UI's pattern filter through the root"
    );

    // The callee's worker dies; the other rebuilds its partitions from the stream, and
    // keeps their history's spans from the correlator: the call is still counted once.
    let calls = |graph: &Value| -> Option<u64> {
        graph["edges"]
            .as_array()?
            .iter()
            .find(|e| e["from"] == caller.as_str() && e["to"] == callee.as_str())?["calls"]
            .as_u64()
    };
    let before = calls(&ask(&client, &ingest, "/api/v1/services/graph", &[]).await?);
    assert_eq!(before, Some(1), "one call before the kill");
    let holds_callee = |c: &Collector| {
        let (client, url) = (client.clone(), c.api_url("/api/v1/services"));
        let callee = callee.clone();
        async move {
            let (_, body) = get_json(&client, &url).await?;
            Ok::<bool, anyhow::Error>(body.to_string().contains(&format!("\"{callee}\"")))
        }
    };
    let (dead, survivor) = if holds_callee(&w1).await? { (w1, w2) } else { (w2, w1) };
    let published_by_dead = dead.metric(&client, "vigil_findings_published").await?;
    dead.kill()?;
    let logs_of = |c: &Collector| {
        let (client, url) = (
            client.clone(),
            c.api_url(&format!("/api/v1/logs/search?q=*&service={callee}&limit=1")),
        );
        async move { Ok::<Value, anyhow::Error>(get_json(&client, &url).await?.1["total"].clone()) }
    };
    let expected_logs = logs_of(&single).await?;
    eventually(
        Duration::from_secs(60),
        "the survivor to rebuild the dead worker's partitions",
        || {
            let (logs_of, survivor, expected) = (&logs_of, &survivor, &expected_logs);
            async move { Ok((logs_of(survivor).await? == *expected).then_some(())) }
        },
    )
    .await?;
    let rebuilt = survivor.metric(&client, "vigil_index_checkpoint_lsn").await?;
    eventually(Duration::from_secs(60), "detection to pass the rebuilt history", || {
        let (client, survivor) = (&client, &survivor);
        async move { Ok((survivor.metric(client, "vigil_detect_applied_lsn").await? >= rebuilt).then_some(())) }
    })
    .await?;
    let held = survivor.metric(&client, "vigil_findings_history_spans").await?;
    ensure!(held > 0.0, "the rebuilt history's spans were held back");
    // Every findings message sent so far (the survivor sends at least one a second, so two
    // more carry whatever detection of the history let through) reaches the correlator.
    let flushed = survivor.metric(&client, "vigil_findings_published").await? + 2.0;
    eventually(Duration::from_secs(30), "the survivor to send its findings", || {
        let (client, survivor) = (&client, &survivor);
        async move { Ok((survivor.metric(client, "vigil_findings_published").await? >= flushed).then_some(())) }
    })
    .await?;
    let sent = published_by_dead + flushed;
    eventually(Duration::from_secs(30), "the correlator to read them", || {
        let (client, rca) = (&client, &rca);
        async move { Ok((rca.metric(client, "vigil_findings_consumed").await? >= sent).then_some(())) }
    })
    .await?;
    let after = calls(&ask(&client, &ingest, "/api/v1/services/graph", &[]).await?);
    assert_eq!(after, Some(1), "the call counted once after the rebuild");
    Ok(())
}
