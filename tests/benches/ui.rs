//! Web UI page times with a big store, one run, figures printed.
//!
//! Loads BENCH_UI_RECORDS log records (default 1,000,000) from BENCH_UI_SERVICES services
//! (default 100) over the past 20 hours of event time into a release `vigil-collector` over
//! OTLP/HTTP, each service with an error burst at its own time, so the detectors open
//! incidents (up to one per service). Then fetches every page BENCH_UI_ROUNDS times
//! (default 10) and prints p50 and max per page, next to the JSON API call the page is
//! built on, measured the same way in the same run (the ratio is the UI's own cost).
//! Goal: every page under 300 ms.
//!
//! Run: `cargo bench -p vigil-e2e --bench ui`

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use prost::Message;
use vigil_e2e::otlp::{kv, logs_request, string_value};
use vigil_e2e::{Collector, eventually, get_json, now_ns};

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const TEMPLATES: &[&str] = &[
    "GET /api/items/{} answered 200 in {} ms",
    "user {} logged in from 10.0.{}.7",
    "cache hit ratio {} over {} keys",
    "flushed {} rows to table orders_{}",
    "scheduled job {} finished after {} ms",
    "request {} retried {} times",
];

fn record(ts: u64, i: u64, error: bool) -> opentelemetry_proto::tonic::logs::v1::LogRecord {
    let body = if error {
        format!("connection refused to db-{} after {} ms", i % 7, 100 + i % 900)
    } else {
        let t = TEMPLATES[(i % TEMPLATES.len() as u64) as usize];
        t.replacen("{}", &(i % 9973).to_string(), 1)
            .replacen("{}", &(i % 313).to_string(), 1)
    };
    opentelemetry_proto::tonic::logs::v1::LogRecord {
        time_unix_nano: ts,
        severity_number: if error { 17 } else { 9 },
        severity_text: if error { "ERROR" } else { "INFO" }.into(),
        body: string_value(&body),
        attributes: vec![kv("request.id", string_value(&format!("r{i}")))],
        ..Default::default()
    }
}

async fn time_get(client: &reqwest::Client, url: &str, rounds: usize) -> Result<(f64, f64)> {
    let mut ms = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let r = client.get(url).send().await?;
        ensure!(r.status().is_success(), "{url} answered {}", r.status());
        r.bytes().await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms[ms.len() / 2], ms[ms.len() - 1]))
}

#[tokio::main]
async fn main() -> Result<()> {
    let records = env_usize("BENCH_UI_RECORDS", 1_000_000) as u64;
    let services = env_usize("BENCH_UI_SERVICES", 100) as u64;
    let rounds = env_usize("BENCH_UI_ROUNDS", 10);
    let c = Collector::start()?;
    let client = reqwest::Client::new();

    // Event time: the past 20 hours, in order, every service in every slice.
    let span_ns: u64 = 20 * 3_600_000_000_000;
    let start_ns = now_ns() - span_ns;
    let per_service = records / services;
    let step_ns = span_ns / per_service;
    let slice = (5_000 / services).max(1);
    let load_started = Instant::now();
    let mut sent = 0u64;
    let mut k = 0u64;
    while k < per_service {
        let mut batches = Vec::new();
        for s in 0..services {
            // Service s bursts errors for 10 minutes at its own time in the last 8 hours.
            let burst_start = span_ns - 8 * 3_600_000_000_000 + s * (8 * 3_600_000_000_000 / services);
            let recs = (k..(k + slice).min(per_service))
                .flat_map(|j| {
                    let offset = j * step_ns;
                    let ts = start_ns + offset;
                    let in_burst = offset >= burst_start && offset < burst_start + 600_000_000_000;
                    let n = if in_burst { 6 } else { 1 };
                    (0..n).map(move |m| record(ts + m * 1000, j * 7 + s + m, in_burst && m > 0))
                })
                .collect();
            batches.push(logs_request(&format!("svc-{s:03}"), recs));
        }
        let mut request = batches.remove(0);
        for b in batches {
            request.resource_logs.extend(b.resource_logs);
        }
        let n: u64 = request
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len() as u64)
            .sum();
        let r = client
            .post(c.http_url("/v1/logs"))
            .header("content-type", "application/x-protobuf")
            .body(request.encode_to_vec())
            .send()
            .await?;
        ensure!(r.status() == 200, "ingest answered {}", r.status());
        sent += n;
        k += slice;
    }
    let search = c.api_url("/api/v1/logs/search?limit=1");
    eventually(Duration::from_secs(600), "every record searchable", || {
        let (client, search) = (client.clone(), search.clone());
        async move {
            let (_, body) = get_json(&client, &search).await?;
            Ok((body["total"].as_u64() == Some(sent)).then_some(()))
        }
    })
    .await?;
    let loaded = load_started.elapsed();
    let (_, incidents) = get_json(&client, &c.api_url("/api/v1/incidents?limit=100")).await?;
    let list = incidents["incidents"].as_array().cloned().unwrap_or_default();
    let first = list
        .first()
        .and_then(|i| i["id"].as_str())
        .unwrap_or("none")
        .to_string();
    let (_, alerts) = get_json(&client, &c.api_url("/api/v1/alerts")).await?;
    println!(
        "store: {sent} log records from {services} services ({:.1} s to load and index), {} incidents, {} alerts",
        loaded.as_secs_f64(),
        list.len(),
        alerts["alerts"].as_array().map_or(0, Vec::len)
    );

    let pages: Vec<(&str, String, String)> = vec![
        (
            "incident list",
            "/ui/incidents".into(),
            "/api/v1/incidents?limit=100".into(),
        ),
        (
            "incident report",
            format!("/ui/incidents/{first}"),
            format!("/api/v1/incidents/{first}"),
        ),
        ("alerts", "/ui/alerts".into(), "/api/v1/alerts?state=firing".into()),
        (
            "logs (24 h, all)",
            "/ui/logs".into(),
            "/api/v1/logs/search?limit=100".into(),
        ),
        (
            "logs query",
            "/ui/logs?q=body%3Arefused".into(),
            "/api/v1/logs/search?q=body%3Arefused&limit=100".into(),
        ),
        (
            "log patterns",
            "/ui/logs?tab=patterns".into(),
            "/api/v1/logs/patterns?limit=100".into(),
        ),
        ("metrics", "/ui/metrics".into(), "/api/v1/metrics/names".into()),
        ("services", "/ui/services".into(), "/api/v1/services/graph".into()),
        ("silences", "/ui/silences".into(), "/api/v1/silences".into()),
        ("audit log", "/ui/audit".into(), "/api/v1/audit".into()),
    ];
    println!(
        "{:<18} {:>10} {:>10} {:>12} {:>8}",
        "page", "p50 ms", "max ms", "API p50 ms", "ratio"
    );
    let mut worst = 0.0f64;
    for (name, page, api) in &pages {
        let (p50, max) = time_get(&client, &c.api_url(page), rounds).await?;
        let (api50, _) = time_get(&client, &c.api_url(api), rounds).await?;
        worst = worst.max(max);
        println!(
            "{name:<18} {p50:>10.1} {max:>10.1} {api50:>12.1} {:>8.1}",
            p50 / api50.max(0.01)
        );
    }
    println!("slowest page load: {worst:.1} ms (goal < 300 ms)");
    Ok(())
}
