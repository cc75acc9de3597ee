//! The query API over real data: freshness, histograms, services, traces, metric
//! series and rates, errors, and the self-metrics moving.

use std::time::{Duration, Instant};

use anyhow::Result;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric::Data,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::Value;
use vigil_e2e::otlp::{kv, log_record, logs_request, string_value};
use vigil_e2e::{Collector, eventually, get_json, now_ns, search_logs};

async fn post(client: &reqwest::Client, c: &Collector, path: &str, body: Vec<u8>) -> Result<u16> {
    Ok(client
        .post(c.http_url(path))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await?
        .status()
        .as_u16())
}

fn number_point(t: u64, v: f64, attrs: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        time_unix_nano: t,
        start_time_unix_nano: t - 60_000_000_000,
        value: Some(number_data_point::Value::AsDouble(v)),
        attributes: attrs,
        ..Default::default()
    }
}

fn metrics_request(service: &str, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", string_value(service))],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_api_end_to_end() -> Result<()> {
    let c = Collector::start()?;
    let client = reqwest::Client::new();
    let t0 = now_ns() - 600_000_000_000; // ten minutes ago

    // Freshness: an acknowledged record is searchable within 2 s.
    let body = logs_request("fresh", vec![log_record(now_ns() - 1_000, "freshness probe", &[])]).encode_to_vec();
    assert_eq!(post(&client, &c, "/v1/logs", body).await?, 200);
    let acked = Instant::now();
    eventually(Duration::from_secs(2), "searchable within 2 s of the ack", || async {
        Ok((search_logs(&client, &c, &[("q", "freshness")]).await?.0 == 1).then_some(()))
    })
    .await?;
    println!("searchable {:?} after the ack", acked.elapsed());

    // Logs of two services across one minute.
    let records = (0..60u64)
        .map(|s| {
            log_record(
                t0 + s * 1_000_000_000,
                &format!("checkout step {s} done"),
                &[("step", s as i64)],
            )
        })
        .collect();
    assert_eq!(
        post(
            &client,
            &c,
            "/v1/logs",
            logs_request("checkout", records).encode_to_vec()
        )
        .await?,
        200
    );
    let records = (0..10u64)
        .map(|s| log_record(t0 + s * 1_000_000_000, "payment declined", &[]))
        .collect();
    assert_eq!(
        post(
            &client,
            &c,
            "/v1/logs",
            logs_request("payment", records).encode_to_vec()
        )
        .await?,
        200
    );

    // Spans for the services list.
    let span = Span {
        trace_id: vec![7; 16],
        span_id: vec![8; 8],
        name: "POST /pay".into(),
        kind: 2,
        start_time_unix_nano: t0,
        end_time_unix_nano: t0 + 5_000_000,
        ..Default::default()
    };
    let spans = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", string_value("payment"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    assert_eq!(post(&client, &c, "/v1/traces", spans.encode_to_vec()).await?, 200);

    // A cumulative counter with a reset, and a gauge.
    let s = 1_000_000_000u64;
    let counter = Metric {
        name: "orders.processed".into(),
        data: Some(Data::Sum(Sum {
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
            data_points: [(0, 100.0), (10, 150.0), (20, 250.0), (30, 20.0)]
                .into_iter()
                .map(|(sec, v)| number_point(t0 + sec * s, v, vec![kv("region", string_value("eu"))]))
                .collect(),
        })),
        ..Default::default()
    };
    let gauge = Metric {
        name: "queue.depth".into(),
        unit: "{items}".into(),
        data: Some(Data::Gauge(Gauge {
            data_points: [(0, 3.0), (5, 9.0), (65, 4.0)]
                .into_iter()
                .map(|(sec, v)| number_point(t0 + sec * s, v, vec![]))
                .collect(),
        })),
        ..Default::default()
    };
    let metrics = metrics_request("payment", vec![counter, gauge]).encode_to_vec();
    assert_eq!(post(&client, &c, "/v1/metrics", metrics).await?, 200);

    let start = ((t0 - s) / 1_000_000).to_string();
    let end = ((t0 + 120 * s) / 1_000_000).to_string();
    // Metric samples are queryable as soon as the indexer applies them (the time-series
    // store's heads are in memory); documents, at the next index commit, which makes every
    // entry applied before it searchable at once. The span was acknowledged after the logs,
    // so once it is found and the samples are there, everything is.
    let series_url = reqwest::Url::parse_with_params(
        &c.api_url("/api/v1/metrics/series"),
        &[("match", r#"{service.name="payment"}"#), ("start", start.as_str())],
    )?;
    let trace_url = c.api_url(&format!("/api/v1/traces/{}", "07".repeat(16)));
    eventually(Duration::from_secs(10), "all data", || async {
        let (_, series) = get_json(&client, series_url.as_str()).await?;
        let (trace_status, _) = get_json(&client, &trace_url).await?;
        Ok((series["series"].as_array().map(Vec::len) == Some(2) && trace_status == 200).then_some(()))
    })
    .await?;

    // The names the UI's metric picker offers, from the term dictionary.
    let (status, names) = get_json(&client, &c.api_url("/api/v1/metrics/names")).await?;
    assert_eq!(status, 200, "{names}");
    assert_eq!(
        names["names"],
        serde_json::json!(["orders.processed", "queue.depth"]),
        "{names}"
    );

    // Histogram: 60 records over one minute in 10 s buckets.
    let url = reqwest::Url::parse_with_params(
        &c.api_url("/api/v1/logs/histogram"),
        &[
            ("service", "checkout"),
            ("start", &(t0 / 1_000_000).to_string()),
            ("end", &((t0 + 59 * s) / 1_000_000 + 1).to_string()),
            ("interval", "10s"),
        ],
    )?;
    let (status, hist) = get_json(&client, url.as_str()).await?;
    assert_eq!(status, 200, "{hist}");
    let counts: Vec<u64> = hist["buckets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["count"].as_u64())
        .collect();
    assert_eq!(counts, vec![10, 10, 10, 10, 10, 10], "{hist}");
    assert_eq!(hist["interval_ms"], 10_000);

    // Query-syntax filters, and the total counting beyond the limit.
    let (total, hits) = search_logs(
        &client,
        &c,
        &[
            ("service", "checkout"),
            ("q", "attributes.step:[10 TO 19]"),
            ("start", &start),
            ("limit", "3"),
        ],
    )
    .await?;
    assert_eq!((total, hits.len()), (10, 3));
    assert_eq!(hits[0]["attributes"]["step"], 19, "newest first");

    // Log patterns: the 60 checkout lines are one pattern, found and filterable.
    let url = reqwest::Url::parse_with_params(
        &c.api_url("/api/v1/logs/patterns"),
        &[("service", "checkout"), ("start", start.as_str())],
    )?;
    let (status, patterns) = get_json(&client, url.as_str()).await?;
    assert_eq!(status, 200, "{patterns}");
    let list = patterns["patterns"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 1, "{patterns}");
    assert_eq!(list[0]["template"], "checkout step <*> done");
    assert_eq!(list[0]["count"], 60);
    assert_eq!(list[0]["is_new"], true);
    assert_eq!(list[0]["sample"], "checkout step 59 done");
    let pattern_id = list[0]["pattern_id"].as_u64().expect("id").to_string();
    let (total, hits) = search_logs(&client, &c, &[("pattern", pattern_id.as_str()), ("start", &start)]).await?;
    assert_eq!(total, 60);
    assert_eq!(
        hits[0]["pattern_id"].as_u64().map(|p| p.to_string()),
        Some(pattern_id.clone())
    );
    let (total, _) = search_logs(
        &client,
        &c,
        &[
            ("service", "payment"),
            ("pattern", pattern_id.as_str()),
            ("start", &start),
        ],
    )
    .await?;
    assert_eq!(total, 0, "payment lines are another pattern");

    // Services with their counts.
    let (_, services) = get_json(&client, &c.api_url(&format!("/api/v1/services?start={start}"))).await?;
    let find = |name: &str| {
        services["services"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == name)
            .cloned()
    };
    let payment = find("payment").expect("payment listed");
    assert_eq!(
        (payment["logs"].as_u64(), payment["spans"].as_u64()),
        (Some(10), Some(1))
    );
    assert_eq!(find("checkout").map(|s| s["logs"].clone()), Some(Value::from(60)));

    // Metric series and their kinds.
    let (status, series) = get_json(&client, series_url.as_str()).await?;
    assert_eq!(status, 200, "{series}");
    let names: Vec<&str> = series["series"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, vec!["orders.processed", "queue.depth"]);

    // Counter as rate: 50/10 s, 100/10 s, then a reset (20 after the reset) over 10 s.
    let query = |params: Vec<(&str, &str)>| {
        let mut all = vec![("start", start.as_str()), ("end", end.as_str())];
        all.extend(params);
        let url = reqwest::Url::parse_with_params(&c.api_url("/api/v1/metrics/query"), all);
        let client = client.clone();
        async move { get_json(&client, url?.as_str()).await }
    };
    let (status, rates) = query(vec![("name", "orders.processed"), ("step", "10s"), ("agg", "max")]).await?;
    assert_eq!(status, 200, "{rates}");
    let values: Vec<f64> = rates["result"]["series"][0]["values"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p[1].as_f64())
        .collect();
    assert_eq!(values, vec![5.0, 10.0, 2.0], "{rates}");
    assert_eq!(rates["result"]["series"][0]["rate"], true);
    let (_, raw) = query(vec![
        ("name", "orders.processed"),
        ("step", "1h"),
        ("agg", "max"),
        ("rate", "false"),
    ])
    .await?;
    assert_eq!(raw["result"]["series"][0]["values"][0][1], 250.0);
    // Gauge aggregated per minute step.
    let (_, gauge) = query(vec![("name", "queue.depth"), ("step", "1m"), ("agg", "avg")]).await?;
    let g: Vec<f64> = gauge["result"]["series"][0]["values"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p[1].as_f64())
        .collect();
    assert_eq!(g.len(), 2, "{gauge}");
    assert_eq!(gauge["result"]["series"][0]["unit"], "{items}");

    // Errors say what was wrong.
    for (path, needle) in [
        ("/api/v1/logs/search?q=body:(", "invalid query"),
        ("/api/v1/logs/search?limit=0", "limit"),
        ("/api/v1/logs/search?pattern=abc", "pattern"),
        ("/api/v1/logs/search?limit=100000", "limit"),
        ("/api/v1/logs/search?start=yesterday", "RFC 3339"),
        ("/api/v1/logs/search?start=2000&end=1000", "start is after end"),
        ("/api/v1/traces/xyz", "32 hex"),
        ("/api/v1/metrics/series?match=m%7Ba%3D%22x", "unbalanced braces"),
        ("/api/v1/metrics/series?match=m%7Ba%3D%22x%7D", "unterminated quote"),
        ("/api/v1/metrics/query?name=x&agg=p99", "agg"),
        ("/api/v1/metrics/query?name=x&step=1ms&start=0&end=100000000", "steps"),
    ] {
        let (status, body) = get_json(&client, &c.api_url(path)).await?;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body["error"].as_str().unwrap_or("").contains(needle), "{path}: {body}");
    }
    let (status, _) = get_json(&client, &c.api_url(&format!("/api/v1/traces/{}", "ab".repeat(16)))).await?;
    assert_eq!(status, 404);
    let (status, body) = get_json(&client, &c.api_url("/api/v1/nope")).await?;
    assert_eq!((status, body["error"].as_str()), (404, Some("no such endpoint")));

    // Health and self-metrics.
    assert_eq!(client.get(c.api_url("/readyz")).send().await?.status(), 200);
    let metrics = client.get(c.api_url("/metrics")).send().await?.text().await?;
    for needle in [
        r#"vigil_ingest_records_accepted_total{signal="logs"} 71"#,
        r#"vigil_ingest_records_accepted_total{signal="metrics"} 7"#,
        r#"vigil_index_docs_total{signal="traces"} 1"#,
        "vigil_wal_fsyncs_total",
        "vigil_index_commit_seconds_count",
        r#"vigil_query_seconds_count{endpoint="logs_search"}"#,
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    Ok(())
}

/// Lines that start with a host name made of words (`web-alpha`) are one pattern per event, not
/// one per host: the miner learns the host varies and merges the per-host patterns it began
/// with. The API lists the merged pattern with every line counted, and searching by its id finds
/// the lines stored under the ids merged into it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_before_every_line_makes_one_pattern_per_event() -> Result<()> {
    let c = Collector::start()?;
    let client = reqwest::Client::new();
    let t0 = now_ns() - 600_000_000_000;
    let hosts = ["web-alpha", "web-bravo", "api-charlie", "db-delta", "cache-echo"];
    let events = ["started job", "stopped the job now", "job failed badly here"];
    // Host by host, as a fleet's logs arrive: each host's first lines begin patterns of
    // their own before the hosts prove to vary.
    let mut records = Vec::new();
    for (h, host) in hosts.iter().enumerate() {
        for (e, event) in events.iter().enumerate() {
            for k in 0..4u64 {
                let i = (h * 12 + e * 4) as u64 + k;
                records.push(log_record(t0 + i * 1_000_000_000, &format!("{host} {event} {i}"), &[]));
            }
        }
    }
    let body = logs_request("fleet", records).encode_to_vec();
    assert_eq!(post(&client, &c, "/v1/logs", body).await?, 200);
    let start = (t0 / 1_000_000 - 1000).to_string();
    eventually(Duration::from_secs(10), "all 60 lines searchable", || async {
        Ok((search_logs(&client, &c, &[("service", "fleet"), ("start", &start)])
            .await?
            .0
            == 60)
            .then_some(()))
    })
    .await?;

    let url = reqwest::Url::parse_with_params(
        &c.api_url("/api/v1/logs/patterns"),
        &[("service", "fleet"), ("start", start.as_str())],
    )?;
    let (status, patterns) = get_json(&client, url.as_str()).await?;
    assert_eq!(status, 200, "{patterns}");
    let list = patterns["patterns"].as_array().cloned().unwrap_or_default();
    let mut templates: Vec<&str> = list.iter().filter_map(|p| p["template"].as_str()).collect();
    templates.sort_unstable();
    assert_eq!(
        templates,
        vec![
            "<*> job failed badly here <*>",
            "<*> started job <*>",
            "<*> stopped the job now <*>"
        ],
        "{patterns}"
    );
    for p in &list {
        assert_eq!(p["count"], 20, "{p}");
        let id = p["pattern_id"].as_u64().expect("id").to_string();
        let (total, hits) = search_logs(&client, &c, &[("pattern", id.as_str()), ("start", &start)]).await?;
        assert_eq!(total, 20, "{p}");
        // The lines were stored under more than one id: the search found them all.
        assert!(!hits.is_empty());
    }
    let stored: std::collections::BTreeSet<u64> = search_logs(
        &client,
        &c,
        &[("service", "fleet"), ("start", &start), ("limit", "100")],
    )
    .await?
    .1
    .iter()
    .filter_map(|h| h["pattern_id"].as_u64())
    .collect();
    assert!(stored.len() > 3, "lines kept the ids they were given: {stored:?}");
    Ok(())
}
