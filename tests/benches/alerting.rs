//! Alerting under load, one run, figures printed: BENCH_ALERTS distinct alerts (default
//! 1,000, in 100 groups) re-sent at BENCH_RATE updates per second (default 10,000, in
//! Alertmanager-style batches of 100 per POST over 8 connections) for BENCH_SECS seconds
//! (default 10) into a running release `vigil-collector`, whose webhook receiver runs here.
//!
//! Reports: updates/s sustained at the target rate, and the unpaced capacity against the
//! baseline of the same POSTs to a do-nothing endpoint (the receiver) measured first in the
//! same run; notifications received and
//! duplicates (goal: one per group, zero duplicates); p50/p99 latency from a group's first
//! alert to its notification, minus group_wait (goal: p99 under 1 s); collector peak RSS.
//!
//! Run: `cargo bench -p vigil-e2e --bench alerting`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};
use vigil_e2e::receiver::Receiver;
use vigil_e2e::{Collector, Options};

const BATCH: usize = 100;
const CONNECTIONS: usize = 8;
const GROUPS: usize = 100;
const GROUP_WAIT_SECS: u64 = 1;

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn batches(alerts: usize, round: usize) -> Vec<Value> {
    let all: Vec<Value> = (0..alerts)
        .map(|i| {
            json!({
                "labels": {"alertname": format!("Load{}", i % GROUPS), "instance": format!("host-{i}"), "severity": "warning"},
                "annotations": {"summary": format!("round {round}")},
            })
        })
        .collect();
    all.chunks(BATCH).map(|c| Value::Array(c.to_vec())).collect()
}

/// POSTs `bodies` to `url` over `CONNECTIONS` concurrent clients, paced to `rate` updates/s.
async fn drive(url: &str, rounds: Vec<Vec<Value>>, rate: usize) -> Result<(usize, Duration)> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(CONNECTIONS).build()?;
    let started = Instant::now();
    let mut sent = 0usize;
    for (r, bodies) in rounds.into_iter().enumerate() {
        let n: usize = bodies.iter().map(|b| b.as_array().map_or(0, Vec::len)).sum();
        // Pace: round r may start at r * n / rate seconds.
        let due = started + Duration::from_secs_f64(r as f64 * n as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let mut chunks: Vec<Vec<Value>> = vec![Vec::new(); CONNECTIONS];
        for (i, b) in bodies.into_iter().enumerate() {
            chunks[i % CONNECTIONS].push(b);
        }
        let tasks = chunks.into_iter().map(|chunk| {
            let (client, url) = (client.clone(), url.to_string());
            tokio::spawn(async move {
                for body in chunk {
                    let r = client.post(&url).json(&body).send().await?;
                    anyhow::ensure!(r.status().is_success(), "POST answered {}", r.status());
                }
                Ok::<(), anyhow::Error>(())
            })
        });
        for t in futures_join(tasks).await {
            t??;
        }
        sent += n;
    }
    Ok((sent, started.elapsed()))
}

async fn futures_join<T>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await);
    }
    out
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let alerts = env_usize("BENCH_ALERTS", 1000);
    let rate = env_usize("BENCH_RATE", 10_000);
    let secs = env_usize("BENCH_SECS", 10);
    let rounds = (rate * secs).div_ceil(alerts);
    vigil_e2e::init_tls();
    let receiver = Receiver::start().await?;

    // Baseline: the same batches to an endpoint that does nothing but answer.
    let base_rounds: Vec<Vec<Value>> = (0..rounds).map(|r| batches(alerts, r)).collect();
    let (base_sent, base_time) = drive(&receiver.url("/baseline"), base_rounds, usize::MAX / 2).await?;
    let baseline_rate = base_sent as f64 / base_time.as_secs_f64();

    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "[alerting.route]\nreceiver = \"hook\"\ngroup_by = [\"alertname\"]\ngroup_wait_secs = {GROUP_WAIT_SECS}\n\
             group_interval_secs = 5\nrepeat_interval_secs = 3600\n[[alerting.receivers]]\nname = \"hook\"\nurl = \"{}\"\n",
            receiver.url("/hook")
        ),
    )?;
    let c = Collector::start_with(Options {
        data_dir: Some(dir.path().join("data")),
        env: Vec::new(),
        args: vec!["--config".into(), cfg.display().to_string()],
        ..Options::default()
    })?;
    let url = c.api_url("/api/v2/alerts");

    // Every group's first alert goes out in the first round, right after `started`.
    let started = Instant::now();
    let first_seen: BTreeMap<String, Instant> = (0..GROUPS).map(|g| (format!("Load{g}"), started)).collect();
    let paced: Vec<Vec<Value>> = (0..rounds).map(|r| batches(alerts, r)).collect();
    let (sent, took) = drive(&url, paced, rate).await?;
    let vigil_rate = sent as f64 / took.as_secs_f64();
    // Let every group flush, then count.
    tokio::time::sleep(Duration::from_secs(GROUP_WAIT_SECS + 6)).await;
    let got: Vec<_> = receiver.captured().into_iter().filter(|c| c.path == "/hook").collect();
    let mut per_group: BTreeMap<String, Vec<Instant>> = BTreeMap::new();
    for c in &got {
        if let Some(name) = c.json["groupLabels"]["alertname"].as_str() {
            per_group.entry(name.to_string()).or_default().push(c.received_at);
        }
    }
    let mut latencies: Vec<f64> = per_group
        .iter()
        .filter_map(|(g, times)| {
            let first = times.iter().min()?;
            let sent = first_seen.get(g)?;
            Some(first.duration_since(*sent).as_secs_f64() - GROUP_WAIT_SECS as f64)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    // Capacity: the same updates unpaced (all deduplicated into the existing alerts).
    let unpaced: Vec<Vec<Value>> = (0..rounds).map(|r| batches(alerts, rounds + r)).collect();
    let (max_sent, max_took) = drive(&url, unpaced, usize::MAX / 2).await?;
    let max_rate = max_sent as f64 / max_took.as_secs_f64();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let got: Vec<_> = receiver.captured().into_iter().filter(|c| c.path == "/hook").collect();
    let duplicates = got.len().saturating_sub(per_group.len());
    println!(
        "alerts={alerts} groups={GROUPS} target rate={rate}/s for {secs} s, batches of {BATCH}, {CONNECTIONS} connections"
    );
    println!("baseline (same POSTs to a do-nothing endpoint): {baseline_rate:.0} updates/s");
    println!("vigil /api/v2/alerts paced to the target: {vigil_rate:.0} updates/s sustained");
    println!(
        "vigil /api/v2/alerts unpaced: {max_rate:.0} updates/s, ratio to baseline {:.3}",
        max_rate / baseline_rate
    );
    println!(
        "notifications: {} for {} groups, duplicates {duplicates}",
        got.len(),
        per_group.len()
    );
    println!(
        "latency first alert -> notification, minus group_wait: p50 {:.3} s, p99 {:.3} s, max {:.3} s",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    println!("collector peak RSS: {} MiB", peak_rss_kib(c.pid()) / 1024);
    Ok(())
}
