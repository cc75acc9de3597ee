//! Prometheus remote write into Vigil, with the real thing: Debian's `prometheus` scrapes a
//! real `prometheus-node-exporter` and remote-writes (with a bearer token) to the collector.
//! What Vigil stores must be what Prometheus scraped — the same series, the same values —
//! and the receiver must refuse what is not a remote-write body with a message saying why.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use prost::Message;
use serde_json::Value;
use vigil_e2e::prometheus::{
    Daemon, Label, NODE_EXPORTER, PROMETHEUS, PROMTOOL, Sample, TimeSeries, WriteRequest, free_port, spawn,
};
use vigil_e2e::{Collector, Options, eventually, get_json};

const INGEST_TOKEN: &str = "remote-write-token-0123456789";

async fn series(client: &reqwest::Client, c: &Collector, selector: &str) -> Result<Vec<Value>> {
    let url = reqwest::Url::parse_with_params(
        &c.api_url("/api/v1/metrics/series"),
        &[("match", selector), ("limit", "1000")],
    )?;
    let (status, body) = get_json(client, url.as_str()).await?;
    anyhow::ensure!(status == 200, "series {selector}: {status} {body}");
    Ok(body["series"].as_array().cloned().unwrap_or_default())
}

/// A real node-exporter scraped every second by a real Prometheus that remote-writes what
/// it scrapes (itself included) to `vigil`.
struct Scraped {
    exporter_port: u16,
    prometheus_port: u16,
    exporter: Option<Daemon>,
    _prometheus: Daemon,
}

impl Scraped {
    fn start(dir: &Path, vigil: &Collector, token: Option<&str>) -> Result<Scraped> {
        let exporter_port = free_port()?;
        let exporter = spawn(
            NODE_EXPORTER,
            &[format!("--web.listen-address=127.0.0.1:{exporter_port}")],
            &dir.join("node-exporter.log"),
        )?;
        let prometheus_port = free_port()?;
        let config = dir.join("prometheus.yml");
        let authorization = token.map_or_else(String::new, |t| format!("\n    authorization:\n      credentials: {t}"));
        std::fs::write(
            &config,
            format!(
                r#"
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ["127.0.0.1:{exporter_port}"]
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:{prometheus_port}"]
remote_write:
  - url: {url}{authorization}
    queue_config:
      batch_send_deadline: 1s
    metadata_config:
      send_interval: 1s
"#,
                url = vigil.http_url("/prometheus/api/v1/write"),
            ),
        )?;
        let prometheus = spawn(
            PROMETHEUS,
            &[
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", dir.join("prometheus-data").display()),
                format!("--web.listen-address=127.0.0.1:{prometheus_port}"),
            ],
            &dir.join("prometheus.log"),
        )?;
        Ok(Scraped {
            exporter_port,
            prometheus_port,
            exporter: Some(exporter),
            _prometheus: prometheus,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_writes_node_exporter_metrics_into_vigil() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let vigil = Collector::start_with(Options {
        env: vec![("VIGIL_INGEST_TOKEN".into(), INGEST_TOKEN.into())],
        ..Options::default()
    })?;
    let scraped = Scraped::start(dir.path(), &vigil, Some(INGEST_TOKEN))?;
    let (exporter_port, prometheus_port) = (scraped.exporter_port, scraped.prometheus_port);
    let client = reqwest::Client::new();

    // The scraped series arrive, with job and instance on the resource, counters as
    // monotonic sums and gauges as gauges.
    let instance = format!("127.0.0.1:{exporter_port}");
    let selector = format!(r#"node_boot_time_seconds{{service.name="node",service.instance.id="{instance}"}}"#);
    let boot = eventually(Duration::from_secs(120), "node_boot_time_seconds in Vigil", || {
        let (client, vigil, selector) = (&client, &vigil, selector.as_str());
        async move { Ok(series(client, vigil, selector).await?.into_iter().next()) }
    })
    .await
    .with_context(|| std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default())?;
    assert_eq!(boot["monotonic"], false, "{boot}");
    let cpu = eventually(Duration::from_secs(30), "node_cpu_seconds_total in Vigil", || {
        let (client, vigil) = (&client, &vigil);
        async move {
            let found = series(client, vigil, r#"node_cpu_seconds_total{mode="idle"}"#).await?;
            Ok(found.into_iter().next())
        }
    })
    .await?;
    assert_eq!(cpu["monotonic"], true, "{cpu}");
    assert!(
        cpu["labels"].to_string().contains("\"cpu\""),
        "the cpu label stays on the point: {cpu}"
    );

    // The same value as Prometheus' own store (a gauge that does not move while we look).
    let now_ms = i64::try_from(vigil_e2e::now_ns() / 1_000_000)?;
    let (status, answer) = get_json(
        &client,
        &format!("http://127.0.0.1:{prometheus_port}/api/v1/query?query=node_boot_time_seconds"),
    )
    .await?;
    assert_eq!(status, 200, "{answer}");
    let theirs: f64 = answer["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("prometheus answered {answer}"))?;
    let url = reqwest::Url::parse_with_params(
        &vigil.api_url("/api/v1/metrics/query"),
        &[
            ("name", "node_boot_time_seconds"),
            ("labels", &format!(r#"service.instance.id="{instance}""#)),
            ("rate", "false"),
            ("start", &(now_ms - 600_000).to_string()),
        ],
    )?;
    let (status, ours) = get_json(&client, url.as_str()).await?;
    assert_eq!(status, 200, "{ours}");
    let values = ours["result"]["series"][0]["values"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let last = values
        .iter()
        .rev()
        .find_map(|v| v[1].as_f64())
        .with_context(|| format!("no values: {ours}"))?;
    assert!((last - theirs).abs() < 1e-6, "vigil {last} vs prometheus {theirs}");

    // What is not a remote-write body is refused with a message saying why.
    let url = vigil.http_url("/prometheus/api/v1/write");
    let bearer = format!("Bearer {INGEST_TOKEN}");
    let request = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: "vigil_retry_probe".into(),
                },
                Label {
                    name: "job".into(),
                    value: "probe".into(),
                },
            ],
            samples: (0..3)
                .map(|i| Sample {
                    value: f64::from(i),
                    timestamp: now_ms - 3_000 + i64::from(i) * 1_000,
                })
                .collect(),
        }],
    };
    let body = snap::raw::Encoder::new().compress_vec(&request.encode_to_vec())?;
    let post = |body: Vec<u8>, encoding: Option<&'static str>, auth: bool| {
        let mut r = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .header("x-prometheus-remote-write-version", "0.1.0")
            .body(body);
        if let Some(e) = encoding {
            r = r.header("content-encoding", e);
        }
        if auth {
            r = r.header("authorization", &bearer);
        }
        r.send()
    };
    let r = post(body.clone(), Some("snappy"), false).await?;
    assert_eq!(r.status().as_u16(), 401, "no token, no write");
    let r = post(request.encode_to_vec(), None, true).await?;
    assert_eq!(r.status().as_u16(), 415);
    assert!(r.text().await?.contains("snappy"));
    let r = post(b"not snappy at all".to_vec(), Some("snappy"), true).await?;
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await?.contains("snappy"));

    // A retry (Prometheus resends the same body after an error) is stored once.
    for _ in 0..2 {
        assert_eq!(post(body.clone(), Some("snappy"), true).await?.status().as_u16(), 204);
    }
    let probe = eventually(Duration::from_secs(10), "the probe series", || {
        let (client, vigil) = (&client, &vigil);
        async move { Ok(series(client, vigil, "vigil_retry_probe").await?.into_iter().next()) }
    })
    .await?;
    assert_eq!(probe["points"], 3, "sent twice, stored once: {probe}");
    Ok(())
}

/// `promtool query <flags…> -o json <server> <expr>` (`flags[0]` is `instant` or `range`):
/// the answer's result.
fn promtool(server: &str, flags: &[String], expr: &str) -> Result<Value> {
    let out = Command::new(PROMTOOL)
        .arg("query")
        .args(flags)
        .args(["-o", "json", server, expr])
        .output()
        .context("cannot run promtool (Debian package prometheus; .ci/run installs it)")?;
    anyhow::ensure!(
        out.status.success(),
        "promtool {flags:?} {expr} against {server}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Whether Vigil and Prometheus answer `expr` alike (what differs is printed).
fn agree(ours: &str, theirs: &str, flags: &[String], expr: &str) -> Result<Option<()>> {
    let (a, b) = (promtool(ours, flags, expr)?, promtool(theirs, flags, expr)?);
    Ok(match difference(&a, &b) {
        None => Some(()),
        Some(d) => {
            eprintln!("{expr}: {d}");
            None
        }
    })
}

/// An answer as (labels → values): a vector's one value per series, a matrix's points.
fn normalise(answer: &Value) -> Vec<(String, Vec<(f64, f64)>)> {
    let value = |p: &Value| -> (f64, f64) {
        let t = p[0].as_f64().unwrap_or(f64::NAN);
        let v = p[1].as_str().and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
        (t, v)
    };
    let mut out: Vec<(String, Vec<(f64, f64)>)> = match answer {
        // A scalar: [t, "v"].
        Value::Array(a) if a.len() == 2 && a[0].is_number() => vec![(String::new(), vec![value(answer)])],
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let points = match (&item["value"], &item["values"]) {
                    (Value::Array(_), _) => vec![value(&item["value"])],
                    (_, Value::Array(ps)) => ps.iter().map(value).collect(),
                    _ => Vec::new(),
                };
                (item["metric"].to_string(), points)
            })
            .collect(),
        _ => Vec::new(),
    };
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// What differs between two answers, if anything.
fn difference(ours: &Value, theirs: &Value) -> Option<String> {
    let (ours, theirs) = (normalise(ours), normalise(theirs));
    if ours.len() != theirs.len() {
        return Some(format!(
            "{} series vs {}: {ours:?} vs {theirs:?}",
            ours.len(),
            theirs.len()
        ));
    }
    for ((lo, po), (lt, pt)) in ours.iter().zip(&theirs) {
        if lo != lt {
            return Some(format!("labels {lo} vs {lt}"));
        }
        if po.len() != pt.len() || po.iter().zip(pt).any(|(a, b)| a.0 != b.0 || !same(a.1, b.1)) {
            return Some(format!("{lo}: {po:?} vs {pt:?}"));
        }
    }
    None
}

/// Dashboard queries asked of Vigil and of the Prometheus that remote-writes to it, with
/// `promtool` at the same time: the same series and values (float tolerance 1e-9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_gets_the_same_answers_from_vigil_as_from_prometheus() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let vigil = Collector::start()?;
    let mut scraped = Scraped::start(dir.path(), &vigil, None)?;
    let ours = vigil.api_url("/prometheus");
    let theirs = format!("http://127.0.0.1:{}", scraped.prometheus_port);
    let client = reqwest::Client::new();

    // Half a minute of history in Vigil: enough for the 20 s windows below.
    let history = reqwest::Url::parse_with_params(
        &vigil.api_url("/prometheus/api/v1/query"),
        &[("query", r#"count_over_time(up{job="node"}[30s])"#)],
    )?;
    eventually(Duration::from_secs(120), "30 s of scrapes in Vigil", || {
        let (client, url) = (&client, history.as_str());
        async move {
            let (status, body) = get_json(client, url).await?;
            anyhow::ensure!(status == 200, "{body}");
            let n: f64 = body["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            Ok((n >= 28.0).then_some(()))
        }
    })
    .await
    .with_context(|| std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default())?;

    // A time a few seconds back, which remote write has delivered (eventually: it batches).
    let t = vigil_e2e::now_ns() / 1_000_000_000 - 5;
    let instant = [
        "up",
        "node_load1",
        r#"rate(node_cpu_seconds_total{mode="idle"}[20s])"#,
        "sum by (mode) (rate(node_cpu_seconds_total[20s]))",
        r#"100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[20s])))"#,
        "node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes",
        r#"(1 - node_memory_MemAvailable_bytes{job="node"} / node_memory_MemTotal_bytes{job="node"}) * 100"#,
        r#"increase(node_network_receive_bytes_total{device!="lo"}[20s])"#,
        "sum(irate(node_network_transmit_bytes_total[20s]))",
        "histogram_quantile(0.9, sum by (le) (rate(prometheus_http_request_duration_seconds_bucket[20s])))",
        "count by (cpu) (node_cpu_seconds_total)",
        "topk(3, node_filesystem_avail_bytes)",
        "max_over_time(node_load1[20s])",
        r#"node_filesystem_avail_bytes{fstype!~"tmpfs|ramfs"} / node_filesystem_size_bytes"#,
        r#"rate(node_cpu_seconds_total{mode="idle"}[20s]) * on (instance) group_left (nodename) node_uname_info"#,
        "up == 1",
        "node_load1 > bool 0",
        r#"max_over_time(rate(node_cpu_seconds_total{mode="user"}[10s])[20s:5s])"#,
        r#"label_replace(up, "host", "$1", "instance", "(.*):.*")"#,
        "node_time_seconds - node_boot_time_seconds",
        "node_load1 offset 10s",
        "scalar(count(up))",
        "deriv(node_memory_MemFree_bytes[20s])",
        "quantile(0.5, rate(node_disk_io_time_seconds_total[20s]))",
        "avg_over_time(scrape_duration_seconds[20s])",
        "no_such_metric_anywhere",
    ];
    for expr in instant {
        let flags = ["instant".to_string(), format!("--time={t}")];
        eventually(Duration::from_secs(20), &format!("the same answer to {expr}"), || {
            let (ours, theirs, flags) = (ours.as_str(), theirs.as_str(), &flags);
            async move { agree(ours, theirs, flags, expr) }
        })
        .await?;
        // Agreeing on nothing proves nothing: every expression but the last has an answer.
        let answer = normalise(&promtool(&ours, &flags, expr)?);
        assert_eq!(
            answer.is_empty(),
            expr == "no_such_metric_anywhere",
            "{expr}: {answer:?}"
        );
    }

    // Range queries, as a dashboard panel asks them.
    for expr in [
        "node_load1",
        "sum by (mode) (rate(node_cpu_seconds_total[10s]))",
        "rate(node_network_receive_bytes_total[10s])",
        "count by (cpu) (node_cpu_seconds_total)",
    ] {
        let flags = [
            "range".to_string(),
            format!("--start={}", t - 20),
            format!("--end={t}"),
            "--step=5s".to_string(),
        ];
        eventually(
            Duration::from_secs(20),
            &format!("the same range answer to {expr}"),
            || {
                let (ours, theirs, flags) = (ours.as_str(), theirs.as_str(), &flags);
                async move { agree(ours, theirs, flags, expr) }
            },
        )
        .await?;
        let answer = normalise(&promtool(&ours, &flags, expr)?);
        assert!(answer.iter().all(|(_, points)| points.len() >= 4), "{expr}: {answer:?}");
        assert!(!answer.is_empty(), "{expr}");
    }

    // The exporter goes away: Prometheus marks its series stale at the next scrape and
    // remote-writes the markers; Vigil ends the series there too (without the markers a
    // series would linger for the five-minute lookback).
    drop(scraped.exporter.take());
    let now = reqwest::Url::parse_with_params(
        &vigil.api_url("/prometheus/api/v1/query"),
        &[("query", r#"node_load1{job="node"}"#)],
    )?;
    eventually(
        Duration::from_secs(30),
        "node_load1 ended by its staleness marker",
        || {
            let (client, url) = (&client, now.as_str());
            async move {
                let (status, body) = get_json(client, url).await?;
                anyhow::ensure!(status == 200, "{body}");
                Ok(body["data"]["result"]
                    .as_array()
                    .is_some_and(Vec::is_empty)
                    .then_some(()))
            }
        },
    )
    .await?;

    // What Grafana asks to fill its pickers, and how a bad query is refused.
    let (status, names) = get_json(&client, &vigil.api_url("/prometheus/api/v1/label/__name__/values")).await?;
    assert_eq!(status, 200, "{names}");
    let names: Vec<&str> = names["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        names.contains(&"node_load1") && names.contains(&"node_cpu_seconds_total"),
        "{names:?}"
    );
    let (status, labels) = get_json(&client, &vigil.api_url("/prometheus/api/v1/labels")).await?;
    assert_eq!(status, 200, "{labels}");
    for label in ["__name__", "job", "instance", "mode", "cpu"] {
        assert!(
            labels["data"].as_array().into_iter().flatten().any(|l| l == label),
            "{label}: {labels}"
        );
    }
    // Help texts, as Grafana's metric browser shows them: the `# HELP` node-exporter wrote,
    // carried by the metadata Prometheus remote-writes, the same from Vigil as from Prometheus.
    let theirs_meta = format!(
        "http://127.0.0.1:{}/api/v1/metadata?metric=node_load1",
        scraped.prometheus_port
    );
    let (_, expected) = get_json(&client, &theirs_meta).await?;
    let expected = expected["data"]["node_load1"][0]["help"].clone();
    assert!(expected.as_str().is_some_and(|h| !h.is_empty()), "{expected}");
    let ours_meta = vigil.api_url("/prometheus/api/v1/metadata?metric=node_load1");
    eventually(Duration::from_secs(30), "node_load1's help text in Vigil", || {
        let (client, url, expected) = (&client, ours_meta.as_str(), &expected);
        async move {
            let (status, meta) = get_json(client, url).await?;
            anyhow::ensure!(status == 200, "{meta}");
            anyhow::ensure!(meta["data"]["node_load1"][0]["type"] == "gauge", "{meta}");
            Ok((meta["data"]["node_load1"][0]["help"] == *expected).then_some(()))
        }
    })
    .await?;
    let url = reqwest::Url::parse_with_params(&vigil.api_url("/prometheus/api/v1/series"), &[("match[]", "up")])?;
    let (status, series) = get_json(&client, url.as_str()).await?;
    assert_eq!(status, 200, "{series}");
    assert!(
        series["data"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["job"] == "node" && s["__name__"] == "up"),
        "{series}"
    );
    let (status, build) = get_json(&client, &vigil.api_url("/prometheus/api/v1/status/buildinfo")).await?;
    assert_eq!(status, 200, "{build}");
    assert!(
        build["data"]["version"].as_str().is_some_and(|v| v.starts_with('2')),
        "{build}"
    );
    let r = client
        .post(vigil.api_url("/prometheus/api/v1/query"))
        .form(&[("query", "sum(rate(up[1m])")])
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await?;
    assert_eq!(body["status"], "error");
    assert_eq!(body["errorType"], "bad_data");
    Ok(())
}
