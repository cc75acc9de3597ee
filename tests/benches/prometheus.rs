//! Vigil beside a real Prometheus (Debian's 2.42, its remote-write receiver enabled), in the
//! same run, with the same data and the same queries:
//!
//! (a) ingest: the same remote-write 1.0 bodies (snappy protobuf) sent to both with the same
//!     concurrency; samples/s until the last one is queryable;
//! (b) query_range: the same PromQL range queries over the whole span, p50 of repeated runs;
//! (c) bytes per sample on disk: Vigil's time-series store against Prometheus' blocks (a
//!     TSDB snapshot, head included). Vigil's open heads are in its WAL and, after a minute,
//!     in their snapshot: the figure is read after a clean stop, which writes the snapshot.
//!
//! Run: `cargo bench -p vigil-e2e --bench prometheus` (env: BENCH_SERIES, default 1000;
//! BENCH_HOURS, default 6; samples every 15 s). Issue 20's scale, 10 k series over a day, is
//! `BENCH_SERIES=10000 BENCH_HOURS=24` (about 35 minutes); a query Vigil refuses (its
//! selection cap) is reported as refused, Prometheus' time beside it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use prost::Message;
use serde_json::Value;
use vigil_e2e::prometheus::{Label, PROMETHEUS, Sample, TimeSeries, WriteRequest, free_port, spawn};
use vigil_e2e::{Collector, Options, dir_bytes, env_or, eventually, now_ns, until_ready};

const STEP_MS: i64 = 15_000;
/// Samples of one series per request; with 200 series a request holds 2,000 samples, as
/// Prometheus' own remote write sends them (`max_samples_per_send`).
const SAMPLES_PER_SERIES: usize = 10;
const SERIES_PER_REQUEST: usize = 200;
const CONCURRENCY: usize = 4;

/// Counters of `series` request routes on 20 hosts, every 15 s from `start_ms`, as snappy
/// remote-write bodies in rounds: each round holds the next samples of every series (one
/// body per group of series), and a TSDB takes a series' samples in order, so the rounds are
/// sent one after the other (Prometheus' own remote write shards by series the same way).
fn bodies(series: usize, points: usize, start_ms: i64) -> Vec<Vec<Vec<u8>>> {
    let labels = |i: usize| {
        vec![
            Label {
                name: "__name__".into(),
                value: "bench_requests_total".into(),
            },
            Label {
                name: "instance".into(),
                value: format!("host-{}", i % 20),
            },
            Label {
                name: "job".into(),
                value: "bench".into(),
            },
            Label {
                name: "route".into(),
                value: format!("/api/r{}", i / 20),
            },
        ]
    };
    let value = |i: usize, k: usize| ((k * (i % 7 + 1)) + (k * k + i) % 5) as f64;
    let mut out = Vec::new();
    for chunk in (0..points).step_by(SAMPLES_PER_SERIES) {
        let mut round = Vec::new();
        for group in (0..series).step_by(SERIES_PER_REQUEST) {
            let request = WriteRequest {
                timeseries: (group..(group + SERIES_PER_REQUEST).min(series))
                    .map(|i| TimeSeries {
                        labels: labels(i),
                        samples: (chunk..(chunk + SAMPLES_PER_SERIES).min(points))
                            .map(|k| Sample {
                                value: value(i, k),
                                timestamp: start_ms + k as i64 * STEP_MS,
                            })
                            .collect(),
                    })
                    .collect(),
            };
            let raw = request.encode_to_vec();
            round.push(snap::raw::Encoder::new().compress_vec(&raw).expect("snappy"));
        }
        out.push(round);
    }
    out
}

/// Sends every round to `url` in order, each round's bodies `CONCURRENCY` at a time; fails
/// on any non-2xx answer.
async fn send_all(client: &reqwest::Client, url: &str, rounds: &[Vec<Vec<u8>>]) -> Result<()> {
    for round in rounds {
        send_round(client, url, round).await?;
    }
    Ok(())
}

async fn send_round(client: &reqwest::Client, url: &str, bodies: &[Vec<u8>]) -> Result<()> {
    let mut sends = futures::stream::iter(bodies.iter().cloned())
        .map(|body| {
            let client = client.clone();
            let url = url.to_string();
            async move {
                let r = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .header("content-encoding", "snappy")
                    .header("x-prometheus-remote-write-version", "0.1.0")
                    .body(body)
                    .send()
                    .await?;
                let status = r.status();
                anyhow::ensure!(
                    status.is_success(),
                    "{url}: {status} {}",
                    r.text().await.unwrap_or_default()
                );
                Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY);
    while let Some(r) = sends.next().await {
        r?;
    }
    Ok(())
}

/// An instant query's single value (NaN when empty).
async fn scalar(client: &reqwest::Client, base: &str, expr: &str, t_s: f64) -> Result<f64> {
    let url = reqwest::Url::parse_with_params(
        &format!("{base}/api/v1/query"),
        &[("query", expr), ("time", &t_s.to_string())],
    )?;
    let body: Value = client.get(url).send().await?.json().await?;
    Ok(body["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN))
}

/// Time until every sample sent is queryable: all series and the last timestamp counted.
async fn until_queryable(client: &reqwest::Client, base: &str, series: usize, last_s: f64) -> Result<()> {
    let expr = "count(bench_requests_total)";
    eventually(
        Duration::from_secs(1800),
        &format!("{series} series at {base}"),
        || async move {
            let n = scalar(client, base, expr, last_s).await?;
            let at = scalar(client, base, "max(timestamp(bench_requests_total))", last_s).await?;
            Ok((n as usize == series && at >= last_s).then_some(()))
        },
    )
    .await
}

/// Median wall time of `runs` runs of a range query and the answer's series count, or the
/// error the server answered with (a query past its limits is a result to report).
async fn range_p50(
    client: &reqwest::Client,
    base: &str,
    expr: &str,
    start_s: f64,
    end_s: f64,
    runs: usize,
) -> Result<Result<(Duration, usize), String>> {
    let mut times = Vec::new();
    let mut n = 0;
    for _ in 0..runs {
        let url = reqwest::Url::parse_with_params(
            &format!("{base}/api/v1/query_range"),
            &[
                ("query", expr),
                ("start", &start_s.to_string()),
                ("end", &end_s.to_string()),
                ("step", "60"),
            ],
        )?;
        let started = Instant::now();
        let r = client.get(url).send().await?;
        let status = r.status();
        let body: Value = r.json().await?;
        times.push(started.elapsed());
        if !status.is_success() {
            return Ok(Err(format!("{status}: {}", body["error"])));
        }
        n = body["data"]["result"].as_array().map_or(0, Vec::len);
    }
    times.sort();
    Ok(Ok((times[times.len() / 2], n)))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let series = env_or("BENCH_SERIES", 1000);
    let hours = env_or("BENCH_HOURS", 6);
    let points = hours * 3600 * 1000 / STEP_MS as usize;
    let total = (series * points) as f64;
    let now_ms = i64::try_from(now_ns() / 1_000_000)?;
    let start_ms = (now_ms - (hours as i64) * 3_600_000) / STEP_MS * STEP_MS;
    let last_s = (start_ms + (points as i64 - 1) * STEP_MS) as f64 / 1000.0;
    let bodies = bodies(series, points, start_ms);
    let bytes: usize = bodies.iter().flatten().map(Vec::len).sum();
    println!(
        "{series} series x {points} samples ({hours} h at 15 s) = {total} samples in {} remote-write bodies ({:.1} MB snappy)",
        bodies.iter().map(Vec::len).sum::<usize>(),
        bytes as f64 / 1e6
    );

    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let data = dir.path().join("prometheus-data");
    std::fs::write(dir.path().join("prometheus.yml"), "global:\n  scrape_interval: 1h\n")?;
    let _prometheus = spawn(
        PROMETHEUS,
        &[
            format!("--config.file={}", dir.path().join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", data.display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--web.enable-remote-write-receiver".into(),
            "--web.enable-admin-api".into(),
        ],
        &dir.path().join("prometheus.log"),
    )?;
    let prometheus = format!("http://127.0.0.1:{port}");
    let vigil = Collector::start_with(Options {
        data_dir: Some(dir.path().join("vigil-data")),
        ..Options::default()
    })?;
    let ours = vigil.api_url("/prometheus");
    let client = reqwest::Client::new();
    until_ready(&client, &format!("{prometheus}/-/ready"), Duration::from_secs(60)).await?;

    // (a) ingest, one after the other so each has both cores.
    let mut ingest = Vec::new();
    for (name, write, query) in [
        ("prometheus", format!("{prometheus}/api/v1/write"), prometheus.clone()),
        ("vigil", vigil.http_url("/prometheus/api/v1/write"), ours.clone()),
    ] {
        let started = Instant::now();
        send_all(&client, &write, &bodies).await?;
        let acked = started.elapsed();
        until_queryable(&client, &query, series, last_s).await?;
        let queryable = started.elapsed();
        println!(
            "(a) {name:10} acknowledged in {:6.1} s, queryable in {:6.1} s: {:9.0} samples/s",
            acked.as_secs_f64(),
            queryable.as_secs_f64(),
            total / queryable.as_secs_f64()
        );
        ingest.push(total / queryable.as_secs_f64());
    }
    println!("(a) ingest ratio vigil / prometheus: {:.2}", ingest[1] / ingest[0]);

    // (b) range queries over the whole span, one point a minute.
    let start_s = start_ms as f64 / 1000.0 + 300.0;
    for expr in [
        "sum by (instance) (rate(bench_requests_total[5m]))",
        r#"topk(5, rate(bench_requests_total{instance="host-3"}[5m]))"#,
        "sum(increase(bench_requests_total[1h]))",
    ] {
        let (theirs, n_theirs) = range_p50(&client, &prometheus, expr, start_s, last_s, 7)
            .await?
            .map_err(|e| anyhow::anyhow!("prometheus {expr}: {e}"))?;
        let (mine, n_mine) = match range_p50(&client, &ours, expr, start_s, last_s, 7).await? {
            Ok(answer) => answer,
            Err(e) => {
                println!(
                    "(b) query_range p50 {expr}: prometheus {:7.1} ms, vigil refused it ({e})",
                    theirs.as_secs_f64() * 1000.0
                );
                continue;
            }
        };
        anyhow::ensure!(
            n_theirs == n_mine,
            "{expr}: {n_mine} series from Vigil, {n_theirs} from Prometheus"
        );
        println!(
            "(b) query_range p50 {expr}: prometheus {:7.1} ms, vigil {:7.1} ms, ratio {:.1}",
            theirs.as_secs_f64() * 1000.0,
            mine.as_secs_f64() * 1000.0,
            mine.as_secs_f64() / theirs.as_secs_f64()
        );
    }

    // (c) bytes per sample: Prometheus' blocks (a snapshot writes the head out as a block,
    // compressed as it would be) against Vigil's metric index.
    let r = client
        .post(format!("{prometheus}/api/v1/admin/tsdb/snapshot"))
        .send()
        .await?;
    let snap: Value = r.json().await?;
    let name = snap["data"]["name"].as_str().context("snapshot name")?;
    let theirs = dir_bytes(&data.join("snapshots").join(name)) as f64 / total;
    // Gauges and sums live in the time-series store; the metric index holds only
    // histograms and summaries (none here), but is counted all the same.
    let index = vigil.data_dir.join("index");
    anyhow::ensure!(vigil.terminate()?, "the collector did not stop cleanly");
    let mine = (dir_bytes(&index.join("tsdb")) + dir_bytes(&index.join("metrics"))) as f64 / total;
    println!(
        "(c) bytes per sample on disk: prometheus blocks {theirs:.2}, vigil time-series store {mine:.2}, ratio {:.2}",
        mine / theirs
    );
    Ok(())
}
