//! Prometheus remote write into Vigil, with the real thing: Debian's `prometheus` scrapes a
//! real `prometheus-node-exporter` and remote-writes (with a bearer token) to the collector.
//! What Vigil stores must be what Prometheus scraped — the same series, the same values —
//! and the receiver must refuse what is not a remote-write body with a message saying why.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use prost::Message;
use serde_json::Value;
use vigil_e2e::{Collector, Options, eventually, get_json};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
const INGEST_TOKEN: &str = "remote-write-token-0123456789";

/// A child process killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn(program: &str, args: &[String], log: &Path) -> Result<Daemon> {
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .with_context(|| format!("cannot start {program} (Debian package; .ci/run installs it)"))?;
    Ok(Daemon(child))
}

/// The smallest remote-write 1.0 message the test sends by hand: `prometheus.WriteRequest`
/// with one series.
#[derive(Clone, PartialEq, Message)]
struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, Message)]
struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Message)]
struct Label {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, Message)]
struct Sample {
    #[prost(double, tag = "1")]
    value: f64,
    #[prost(int64, tag = "2")]
    timestamp: i64,
}

async fn series(client: &reqwest::Client, c: &Collector, selector: &str) -> Result<Vec<Value>> {
    let url = reqwest::Url::parse_with_params(
        &c.api_url("/api/v1/metrics/series"),
        &[("match", selector), ("limit", "1000")],
    )?;
    let (status, body) = get_json(client, url.as_str()).await?;
    anyhow::ensure!(status == 200, "series {selector}: {status} {body}");
    Ok(body["series"].as_array().cloned().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_writes_node_exporter_metrics_into_vigil() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let vigil = Collector::start_with(Options {
        env: vec![("VIGIL_INGEST_TOKEN".into(), INGEST_TOKEN.into())],
        ..Options::default()
    })?;
    let exporter_port = free_port()?;
    let _exporter = spawn(
        NODE_EXPORTER,
        &[format!("--web.listen-address=127.0.0.1:{exporter_port}")],
        &dir.path().join("node-exporter.log"),
    )?;
    let prometheus_port = free_port()?;
    let config = dir.path().join("prometheus.yml");
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
remote_write:
  - url: {url}
    authorization:
      credentials: {INGEST_TOKEN}
    queue_config:
      batch_send_deadline: 1s
    metadata_config:
      send_interval: 1s
"#,
            url = vigil.http_url("/prometheus/api/v1/write"),
        ),
    )?;
    let _prometheus = spawn(
        PROMETHEUS,
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.path().join("prometheus-data").display()),
            format!("--web.listen-address=127.0.0.1:{prometheus_port}"),
        ],
        &dir.path().join("prometheus.log"),
    )?;
    let client = reqwest::Client::new();

    // The scraped series arrive, with job and instance on the resource, counters as
    // monotonic sums and gauges as gauges.
    let instance = format!("127.0.0.1:{exporter_port}");
    let selector = format!(r#"node_boot_time_seconds{{service.name="node",service.instance.id="{instance}"}}"#);
    let boot = eventually(Duration::from_secs(60), "node_boot_time_seconds in Vigil", || {
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
