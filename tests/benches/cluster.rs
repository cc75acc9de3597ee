//! Scale-out benchmark, one run, figures printed: the same OTLP log batches sent into
//!
//! (a) the baseline: one `vigil-collector` on its local write-ahead log;
//! (b) a cluster on one NATS server (stream replicas = 1): one ingest node, one worker;
//! (c) a cluster on three NATS servers (replicas = 3) with one, two and three workers.
//!
//! For each: records/s until every batch is acknowledged (the durable hop: fsync of the local
//! log, or the stream's Raft commit), and until every record is searchable (through the
//! ingest node's query root for a cluster), each as a ratio to (a). All processes share this
//! machine's cores, so more workers add CPU contention, not CPU: the worker ratios say what the
//! protocol costs here, not what more machines would give.
//!
//! Run: `cargo bench -p vigil-e2e --bench cluster` (env: BENCH_RECORDS, BENCH_CONCURRENCY).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message;
use vigil_e2e::nats::NatsCluster;
use vigil_e2e::otlp::{log_record, logs_request};
use vigil_e2e::{Collector, now_ns};

const BATCH: usize = 500;
const SERVICES: usize = 12;

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn batches(records: usize) -> Vec<Vec<u8>> {
    let start = now_ns() - 3_600_000_000_000;
    (0..records.div_ceil(BATCH))
        .map(|b| {
            let n = BATCH.min(records - b * BATCH);
            let logs = (0..n)
                .map(|r| {
                    let i = (b * BATCH + r) as i64;
                    log_record(
                        start + i as u64 * 1_000,
                        &format!("request {i} served in {} ms by shard {}", i % 997, i % 13),
                        &[("bench", 1), ("i", i)],
                    )
                })
                .collect();
            let request: ExportLogsServiceRequest = logs_request(&format!("bench-svc-{}", b % SERVICES), logs);
            request.encode_to_vec()
        })
        .collect()
}

/// Sends every batch (retrying on backpressure, as an exporter does); the time until the last
/// acknowledgement.
async fn send_all(
    client: &reqwest::Client,
    urls: &[String],
    encoded: &[Vec<u8>],
    concurrency: usize,
) -> Result<Duration> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let url = urls[worker % urls.len()].clone();
        let mine: Vec<(usize, Vec<u8>)> = encoded
            .iter()
            .enumerate()
            .filter(|(i, _)| i % concurrency == worker)
            .map(|(i, b)| (i, b.clone()))
            .collect();
        tasks.push(tokio::spawn(async move {
            for (i, bytes) in mine {
                loop {
                    let ok = client
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .header("x-vigil-batch-id", format!("bench-{i}"))
                        .body(bytes.clone())
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    if ok {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed())
}

async fn wait_searchable(client: &reqwest::Client, api: &str, expected: u64) -> Result<()> {
    let url = format!("{api}/api/v1/logs/search?q=attributes.bench:1&limit=1&start=0");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let body: serde_json::Value = client.get(&url).send().await?.json().await.unwrap_or_default();
        if body["total"].as_u64() == Some(expected) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "not all searchable after 10 min: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Figures {
    acked: Duration,
    searchable: Duration,
}

async fn single(client: &reqwest::Client, encoded: &[Vec<u8>], total: u64, concurrency: usize) -> Result<Figures> {
    let c = Collector::start()?;
    let started = Instant::now();
    let acked = send_all(client, &[c.http_url("/v1/logs")], encoded, concurrency).await?;
    wait_searchable(client, &c.api_url(""), total).await?;
    Ok(Figures {
        acked,
        searchable: started.elapsed(),
    })
}

async fn cluster(
    client: &reqwest::Client,
    encoded: &[Vec<u8>],
    total: u64,
    concurrency: usize,
    servers: usize,
    workers: usize,
) -> Result<Figures> {
    let nats = NatsCluster::start(servers)?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("cluster.toml");
    std::fs::write(&config, format!("[cluster]\nreplicas = {servers}\nlease_secs = 5\n"))?;
    let start = |role: &str| vigil_e2e::nats::start_role(role, &nats.urls(), &config, None);
    let ingest = start("ingest")?;
    let mut started_workers = Vec::new();
    for _ in 0..workers {
        started_workers.push(start("worker")?);
    }
    // Every partition held before the clock starts.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body: serde_json::Value = client
            .get(ingest.api_url("/api/v1/cluster"))
            .send()
            .await?
            .json()
            .await?;
        let held: usize = body["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| w["partitions"].as_array().map_or(0, Vec::len))
            .sum();
        let live = body["workers"].as_array().map_or(0, Vec::len);
        if held == 16 && live == workers {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "workers did not take the partitions: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    let acked = send_all(client, &[ingest.http_url("/v1/logs")], encoded, concurrency).await?;
    wait_searchable(client, &ingest.api_url(""), total)
        .await
        .context("cluster search")?;
    Ok(Figures {
        acked,
        searchable: started.elapsed(),
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    vigil_e2e::init_tls();
    let records = env_usize("BENCH_RECORDS", 200_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 8);
    let encoded = batches(records);
    let total = records as u64;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    println!(
        "{records} log records in {} batches of {BATCH}, {concurrency} senders, {SERVICES} services",
        encoded.len()
    );

    let base = single(&client, &encoded, total, concurrency).await?;
    let rate = |d: Duration| records as f64 / d.as_secs_f64();
    let line = |name: &str, f: &Figures| {
        println!(
            "{name:<44} acked {:>9.0} rec/s ({:.2}x)   searchable {:>9.0} rec/s ({:.2}x)",
            rate(f.acked),
            base.acked.as_secs_f64() / f.acked.as_secs_f64(),
            rate(f.searchable),
            base.searchable.as_secs_f64() / f.searchable.as_secs_f64(),
        );
    };
    line("(a) one collector, local WAL (baseline)", &base);
    let one = cluster(&client, &encoded, total, concurrency, 1, 1).await?;
    line("(b) 1 NATS server, replicas 1, 1 worker", &one);
    for workers in 1..=3 {
        let f = cluster(&client, &encoded, total, concurrency, 3, workers).await?;
        line(&format!("(c) 3 NATS servers, replicas 3, {workers} worker(s)"), &f);
    }
    Ok(())
}
