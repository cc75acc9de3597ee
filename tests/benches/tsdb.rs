//! Bytes per sample of Vigil's time-series store against Prometheus' own TSDB, on the same
//! real samples, in the same run: a real `prometheus-node-exporter` (and Prometheus itself)
//! scraped every second by Debian's Prometheus 2.42 for `BENCH_SECONDS` (default 600);
//! then Prometheus writes its head out as a block (a snapshot: chunks and index, as its
//! blocks are on disk), every raw sample is read back from it with a range selector, and the
//! same samples go into `vigil-tsdb`, one WAL entry per scrape, sealed and synced.
//!
//! Both figures divide the bytes on disk by the same sample count. The snapshot may hold one
//! more scrape than the query read (taken a moment later): Prometheus' figure is a little
//! generous, by 1 / BENCH_SECONDS at most.
//!
//! Then the same days are downsampled to a sample a minute (`Tsdb::downsample_day`): the
//! samples and bytes kept, and the rewrite's time against the read-back's.
//!
//! Run: `cargo bench -p vigil-e2e --bench tsdb`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;
use vigil_e2e::{dir_bytes, until_ready};

use vigil_e2e::prometheus::{NODE_EXPORTER, PROMETHEUS, free_port, spawn};
use vigil_tsdb::{Labels, Matcher, Tsdb};

type Scrapes = BTreeMap<i64, Vec<(Labels, f64)>>;

/// Every raw sample of every series up to `at`, grouped by timestamp (one scrape each).
fn samples_of(matrix: &Value) -> Result<(Scrapes, usize)> {
    let mut by_time: Scrapes = BTreeMap::new();
    let mut n = 0;
    for series in matrix["data"]["result"].as_array().context("a matrix")? {
        let labels = Labels::new(
            series["metric"]
                .as_object()
                .context("labels")?
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())),
        );
        for pair in series["values"].as_array().context("values")? {
            let t = (pair[0].as_f64().context("time")? * 1000.0).round() as i64;
            let v: f64 = pair[1].as_str().context("value")?.parse()?;
            by_time.entry(t).or_default().push((labels.clone(), v));
            n += 1;
        }
    }
    Ok((by_time, n))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    vigil_e2e::init_tls();
    let seconds: u64 = vigil_e2e::env_or("BENCH_SECONDS", 600);
    let dir = tempfile::tempdir()?;
    let exporter_port = free_port()?;
    let _exporter = spawn(
        NODE_EXPORTER,
        &[format!("--web.listen-address=127.0.0.1:{exporter_port}")],
        &dir.path().join("node-exporter.log"),
    )?;
    let port = free_port()?;
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: [\"127.0.0.1:{exporter_port}\"]\n  - job_name: prometheus\n    static_configs:\n      - targets: [\"127.0.0.1:{port}\"]\n"
        ),
    )?;
    let data = dir.path().join("prometheus-data");
    let _prometheus = spawn(
        PROMETHEUS,
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", data.display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--web.enable-admin-api".into(),
        ],
        &dir.path().join("prometheus.log"),
    )?;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    until_ready(&client, &format!("{base}/-/ready"), Duration::from_secs(60)).await?;
    println!("scraping node-exporter and prometheus every second for {seconds} s");
    // Not synchronisation: this is how long the data takes to be made.
    tokio::time::sleep(Duration::from_secs(seconds)).await;

    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    let snap: Value = client
        .post(format!("{base}/api/v1/admin/tsdb/snapshot"))
        .send()
        .await?
        .json()
        .await?;
    let name = snap["data"]["name"].as_str().context("snapshot name")?;
    let theirs_bytes = dir_bytes(&data.join("snapshots").join(name));
    let matrix: Value = client
        .post(format!("{base}/api/v1/query"))
        .form(&[
            ("query", format!(r#"{{__name__=~".+"}}[{}s]"#, seconds + 120)),
            ("time", format!("{at}")),
        ])
        .send()
        .await?
        .json()
        .await?;
    let (scrapes, total) = samples_of(&matrix)?;
    let series = matrix["data"]["result"].as_array().map_or(0, Vec::len);
    println!("{series} series, {total} samples, {} scrape timestamps", scrapes.len());

    let ours_dir = dir.path().join("vigil-tsdb");
    let db = Tsdb::open(&ours_dir)?;
    let started = Instant::now();
    for (lsn, (t, samples)) in scrapes.iter().enumerate() {
        for (labels, v) in samples {
            db.append(lsn as u64 + 1, labels, *t, *v)?;
        }
    }
    db.seal_all_heads()?;
    db.sync()?;
    let ingest = started.elapsed();
    let read_started = Instant::now();
    let read: usize = db
        .select(&[Matcher::regex("__name__", ".+")?], i64::MIN, i64::MAX, usize::MAX)?
        .series
        .iter()
        .map(|s| s.samples.len())
        .sum();
    let read_time = read_started.elapsed();
    anyhow::ensure!(read == total, "read back {read} of {total} samples");
    let ours_bytes = dir_bytes(&ours_dir);
    let (theirs, ours) = (theirs_bytes as f64 / total as f64, ours_bytes as f64 / total as f64);
    println!(
        "bytes per sample: prometheus block {theirs:.2}, vigil-tsdb {ours:.2}, ratio {:.2}",
        ours / theirs
    );
    println!(
        "vigil-tsdb: {:.0} samples/s appended (sealed and synced), {:.0} samples/s read back",
        total as f64 / ingest.as_secs_f64(),
        total as f64 / read_time.as_secs_f64()
    );

    // Downsampling: every day rewritten at one sample a minute, timed against reading the
    // same samples back above (the rewrite reads each once and writes what it keeps).
    let rewrite_started = Instant::now();
    let mut kept = 0;
    for day in db.days() {
        kept += db.downsample_day(day, 60_000)?.map_or(0, |d| d.samples_after);
    }
    let rewrite_time = rewrite_started.elapsed();
    let downsampled_bytes = dir_bytes(&ours_dir);
    println!(
        "downsampled to a sample a minute: {kept} of {total} samples kept, {:.1} % of the bytes; \
         rewrite {:.0} ms, {:.2}× the read-back time",
        100.0 * downsampled_bytes as f64 / ours_bytes as f64,
        rewrite_time.as_secs_f64() * 1000.0,
        rewrite_time.as_secs_f64() / read_time.as_secs_f64()
    );
    Ok(())
}
