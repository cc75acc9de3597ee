//! OTLP metrics read back in PromQL through the Prometheus HTTP API: names and labels as the
//! OpenTelemetry Prometheus compatibility spec maps them, counters, histograms and summaries
//! as Prometheus series, and the listing endpoints Grafana fills its pickers from.

use std::time::Duration;

use anyhow::{Context, Result};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, Summary, SummaryDataPoint, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::Value;
use vigil_e2e::otlp::{kv, string_value};
use vigil_e2e::{Collector, eventually, get_json, now_ns, post_protobuf};

const STEP_NS: u64 = 15_000_000_000;
const POINTS: u64 = 20;

fn request(t0: u64) -> ExportMetricsServiceRequest {
    let times = (0..POINTS).map(|i| (i, t0 + i * STEP_NS));
    let counter = Metric {
        name: "http.server.request.count".into(),
        data: Some(Data::Sum(Sum {
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
            data_points: times
                .clone()
                .map(|(i, t)| NumberDataPoint {
                    start_time_unix_nano: t0,
                    time_unix_nano: t,
                    value: Some(number_data_point::Value::AsDouble(10.0 * i as f64)),
                    ..Default::default()
                })
                .collect(),
        })),
        ..Default::default()
    };
    let histogram = Metric {
        name: "http.server.duration".into(),
        unit: "s".into(),
        data: Some(Data::Histogram(Histogram {
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            data_points: times
                .clone()
                .map(|(i, t)| HistogramDataPoint {
                    start_time_unix_nano: t0,
                    time_unix_nano: t,
                    count: 10 * i,
                    sum: Some(5.0 * i as f64),
                    explicit_bounds: vec![0.1, 0.5, 1.0],
                    bucket_counts: vec![2 * i, 3 * i, 4 * i, i],
                    ..Default::default()
                })
                .collect(),
        })),
        ..Default::default()
    };
    let summary = Metric {
        name: "rpc.latency".into(),
        data: Some(Data::Summary(Summary {
            data_points: times
                .clone()
                .map(|(i, t)| SummaryDataPoint {
                    start_time_unix_nano: t0,
                    time_unix_nano: t,
                    count: 100 * i,
                    sum: 25.0 * i as f64,
                    quantile_values: vec![
                        ValueAtQuantile {
                            quantile: 0.5,
                            value: 0.2,
                        },
                        ValueAtQuantile {
                            quantile: 0.99,
                            value: 0.9,
                        },
                    ],
                    ..Default::default()
                })
                .collect(),
        })),
        ..Default::default()
    };
    let gauge = Metric {
        name: "process.memory.usage".into(),
        data: Some(Data::Gauge(Gauge {
            data_points: times
                .map(|(i, t)| NumberDataPoint {
                    time_unix_nano: t,
                    value: Some(number_data_point::Value::AsDouble(1000.0 + i as f64)),
                    attributes: vec![kv("memory.state", string_value("used"))],
                    ..Default::default()
                })
                .collect(),
        })),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", string_value("checkout")),
                    kv("service.namespace", string_value("shop")),
                    kv("service.instance.id", string_value("pod-1")),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![counter, histogram, summary, gauge],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// An instant query's result at `t_s`.
async fn query(client: &reqwest::Client, c: &Collector, expr: &str, t_s: f64) -> Result<Value> {
    let url = reqwest::Url::parse_with_params(
        &c.api_url("/prometheus/api/v1/query"),
        &[("query", expr), ("time", &t_s.to_string())],
    )?;
    let (status, body) = get_json(client, url.as_str()).await?;
    anyhow::ensure!(status == 200, "{expr}: {status} {body}");
    assert_eq!(body["status"], "success", "{body}");
    Ok(body["data"]["result"].clone())
}

/// A range query's answer at every 30 s of the two minutes before `t_s`, and its first
/// series' values.
async fn last_two_minutes(
    client: &reqwest::Client,
    c: &Collector,
    expr: &str,
    t_s: f64,
) -> Result<(Value, Vec<Value>)> {
    let url = reqwest::Url::parse_with_params(
        &c.api_url("/prometheus/api/v1/query_range"),
        &[
            ("query", expr),
            ("start", &(t_s - 120.0).to_string()),
            ("end", &t_s.to_string()),
            ("step", "30s"),
        ],
    )?;
    let (status, range) = get_json(client, url.as_str()).await?;
    anyhow::ensure!(status == 200, "{expr}: {status} {range}");
    let values = range["data"]["result"][0]["values"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok((range, values))
}

/// The one value of an instant vector.
fn one(result: &Value) -> Result<f64> {
    let items = result.as_array().context("a vector")?;
    anyhow::ensure!(items.len() == 1, "one series expected: {result}");
    items[0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("a value in {result}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_metrics_answer_promql_as_prometheus_series() -> Result<()> {
    let c = Collector::start()?;
    let client = reqwest::Client::new();
    // Ten minutes back, on a whole second.
    let t0 = (now_ns() - 600_000_000_000) / 1_000_000_000 * 1_000_000_000;
    post_protobuf(&client, c.http_url("/v1/metrics"), request(t0).encode_to_vec()).await?;
    // The 17th point (i = 16) is 240 s in; a 1 min window ending there holds i = 12..=16.
    let t = (t0 / 1_000_000) as f64 / 1000.0 + 240.0;
    let counter = r#"http_server_request_count_total{job="shop/checkout", instance="pod-1"}"#;
    // Gauges and sums are queryable once applied (the time-series store), histograms and
    // summaries at the next index commit (documents): wait for both.
    let raw = eventually(Duration::from_secs(10), "the counter and the histogram, stored", || {
        let (client, c) = (&client, &c);
        async move {
            let r = query(client, c, counter, t).await?;
            let h = query(client, c, "http_server_duration_count", t).await?;
            let found = |v: &Value| v.as_array().is_some_and(|a| !a.is_empty());
            Ok((found(&r) && found(&h)).then_some(r))
        }
    })
    .await?;
    assert_eq!(one(&raw)?, 160.0);
    assert_eq!(raw[0]["metric"]["__name__"], "http_server_request_count_total");
    // 40 over the minute, edges on samples: no extrapolation.
    let rate = one(&query(&client, &c, &format!("rate({counter}[1m])"), t).await?)?;
    assert!((rate - 40.0 / 60.0).abs() < 1e-12, "{rate}");

    // The histogram as cumulative `_bucket` series with `le`, and `_count`/`_sum`.
    let buckets = query(&client, &c, "http_server_duration_bucket", t).await?;
    let mut by_le: Vec<(String, f64)> = buckets
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            (
                b["metric"]["le"].as_str().unwrap_or("").to_string(),
                b["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN),
            )
        })
        .collect();
    by_le.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        by_le,
        [
            ("+Inf".to_string(), 160.0),
            ("0.1".into(), 32.0),
            ("0.5".into(), 80.0),
            ("1".into(), 144.0)
        ]
    );
    assert_eq!(one(&query(&client, &c, "http_server_duration_count", t).await?)?, 160.0);
    assert_eq!(one(&query(&client, &c, "http_server_duration_sum", t).await?)?, 80.0);
    // Half the requests of the last minute took at most: rank 5 of 10 falls at the top of
    // (0.1, 0.5].
    let median = one(&query(
        &client,
        &c,
        "histogram_quantile(0.5, sum by (le) (rate(http_server_duration_bucket[1m])))",
        t,
    )
    .await?)?;
    assert!((median - 0.5).abs() < 1e-12, "{median}");

    // The summary: its quantiles, count and sum.
    assert_eq!(
        one(&query(&client, &c, r#"rpc_latency{quantile="0.99"}"#, t).await?)?,
        0.9
    );
    assert_eq!(one(&query(&client, &c, "rpc_latency_count", t).await?)?, 1600.0);
    // A gauge with a dotted attribute.
    let gauge = query(&client, &c, r#"process_memory_usage{memory_state="used"}"#, t).await?;
    assert_eq!(one(&gauge)?, 1016.0);

    // A range query: the counter's rate at every 30 s of the last two minutes.
    let (range, values) = last_two_minutes(&client, &c, &format!("rate({counter}[1m])"), t).await?;
    assert_eq!(values.len(), 5, "{range}");
    assert!(values.iter().all(|v| v[1] == "0.6666666666666666"), "{range}");
    // The histogram's median over the same steps, its buckets read series by series from
    // their documents: at every step what the instant query answers there.
    let median_expr = "histogram_quantile(0.5, sum by (le) (rate(http_server_duration_bucket[1m])))";
    let (range, medians) = last_two_minutes(&client, &c, median_expr, t).await?;
    assert_eq!(medians.len(), 5, "{range}");
    for step in &medians {
        let at = step[0].as_f64().context("a step time")?;
        let instant = query(&client, &c, median_expr, at).await?;
        assert_eq!(instant[0]["value"][1], step[1], "at {at}: {instant} against {range}");
    }

    // What Grafana fills its pickers with.
    let (_, names) = get_json(&client, &c.api_url("/prometheus/api/v1/label/__name__/values")).await?;
    for name in ["http_server_request_count_total", "process_memory_usage"] {
        assert!(
            names["data"].as_array().into_iter().flatten().any(|n| n == name),
            "{name}: {names}"
        );
    }
    let (_, jobs) = get_json(&client, &c.api_url("/prometheus/api/v1/label/job/values")).await?;
    assert_eq!(jobs["data"], serde_json::json!(["shop/checkout"]), "{jobs}");
    let (_, meta) = get_json(&client, &c.api_url("/prometheus/api/v1/metadata")).await?;
    assert_eq!(
        meta["data"]["http_server_request_count_total"][0]["type"], "counter",
        "{meta}"
    );
    assert_eq!(meta["data"]["process_memory_usage"][0]["type"], "gauge", "{meta}");
    let url = reqwest::Url::parse_with_params(
        &c.api_url("/prometheus/api/v1/series"),
        &[
            (
                "match[]",
                r#"{__name__=~"http_server_duration_.*", job="shop/checkout"}"#,
            ),
            ("start", &(t - 600.0).to_string()),
            ("end", &t.to_string()),
        ],
    )?;
    let (status, series) = get_json(&client, url.as_str()).await?;
    assert_eq!(status, 200, "{series}");
    assert_eq!(
        series["data"].as_array().map(Vec::len),
        Some(6),
        "4 buckets, count, sum: {series}"
    );

    // An unknown metric is an empty answer; a bad query says what is wrong, with a 400.
    assert_eq!(query(&client, &c, "no_such_metric", t).await?, serde_json::json!([]));
    let r = client
        .post(c.api_url("/prometheus/api/v1/query"))
        .form(&[("query", "rate(up[5m]")])
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await?;
    assert_eq!(body["errorType"], "bad_data", "{body}");
    // A query nested 20,000 deep is answered, and the collector lives on (evaluation
    // recurses: on a blocking thread's stack it aborted the process).
    let deep = format!("{}1{}", "(".repeat(20_000), ")".repeat(20_000));
    let r = client
        .post(c.api_url("/prometheus/api/v1/query"))
        .form(&[("query", deep.as_str())])
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await?;
    assert_eq!(body["data"]["result"][1], "1", "{body}");
    assert_eq!(query(&client, &c, "vector(2)", t).await?[0]["value"][1], "2");
    // A range query too fine to answer is refused, saying how to fix it.
    let url = reqwest::Url::parse_with_params(
        &c.api_url("/prometheus/api/v1/query_range"),
        &[("query", "up"), ("start", "0"), ("end", "86400"), ("step", "1")],
    )?;
    let (status, body) = get_json(&client, url.as_str()).await?;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("step")), "{body}");
    Ok(())
}
