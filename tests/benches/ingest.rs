//! Ingest and search benchmark, one run, figures printed:
//!
//! (a) ceiling: the same OTLP batches converted with the collector's own code and
//!     indexed straight into tantivy with the same schema and writer budget;
//! (b) end to end: the batches sent through OTLP/HTTP and OTLP/gRPC into a running
//!     `vigil-collector` (release build) until all are searchable — WAL, fsync,
//!     indexing and commits included. Reported as records/s, MB/s and b/a.
//! (c) log search latency over `BENCH_SEARCH_RECORDS` records (default 10 M) through
//!     the API, against the baseline of the same query on the same index opened
//!     directly, sorting every match by time (tantivy's plain `TopDocs` + `Count`).
//!
//! Run: `cargo bench -p vigil-e2e --bench ingest` (env: BENCH_RECORDS,
//! BENCH_SEARCH_RECORDS, BENCH_CONCURRENCY).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use vigil_collector::{LogFields, log_docs};
use vigil_detectors::PatternMiner;
use vigil_e2e::otlp::{int_value, kv, string_value};
use vigil_e2e::{Collector, now_ns};

const BATCH: usize = 1000;

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Deterministic pseudo-random numbers (xorshift), so every run sends the same data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SERVICES: [&str; 8] = [
    "frontend",
    "checkout",
    "payment",
    "inventory",
    "cart",
    "shipping",
    "auth",
    "search",
];
const TEMPLATES: [&str; 8] = [
    "GET /api/v1/products/{} returned 200 in {} ms",
    "user {} logged in from 10.0.{}.17",
    "payment authorization failed for order {}: card declined (code {})",
    "cache miss for key session:{} after {} ms",
    "connection to postgres://db-{}:5432/orders reset, retry {}",
    "processed batch {} with {} items",
    "timeout calling inventory service after {} ms (attempt {})",
    "slow query: SELECT * FROM items WHERE id = {} took {} ms",
];

/// Realistic log batches: 8 services, 64 hosts, templated bodies with varying
/// parameters, a mix of severities, 5 attributes each, trace ids on half of them.
fn make_batches(records: usize, start_ns: u64, span_ns: u64) -> Vec<ExportLogsServiceRequest> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut batches = Vec::new();
    let step = (span_ns / records.max(1) as u64).max(1);
    let mut i = 0usize;
    while i < records {
        let service = SERVICES[(batches.len()) % SERVICES.len()];
        let n = BATCH.min(records - i);
        let mut logs = Vec::with_capacity(n);
        for _ in 0..n {
            let t = TEMPLATES[rng.below(TEMPLATES.len() as u64) as usize];
            let body =
                t.replacen("{}", &rng.below(100_000).to_string(), 1)
                    .replacen("{}", &rng.below(5000).to_string(), 1);
            let severity = match rng.below(100) {
                0..=69 => 9,
                70..=89 => 13,
                _ => 17,
            };
            let trace_id = if rng.below(2) == 0 {
                rng.next().to_le_bytes().repeat(2)
            } else {
                Vec::new()
            };
            logs.push(LogRecord {
                time_unix_nano: start_ns + i as u64 * step,
                observed_time_unix_nano: start_ns + i as u64 * step + 1_000,
                severity_number: severity,
                severity_text: match severity {
                    9 => "INFO",
                    13 => "WARN",
                    _ => "ERROR",
                }
                .into(),
                body: string_value(&body),
                attributes: vec![
                    kv(
                        "http.method",
                        string_value(["GET", "POST", "PUT"][rng.below(3) as usize]),
                    ),
                    kv(
                        "http.status_code",
                        int_value([200, 200, 200, 404, 500][rng.below(5) as usize]),
                    ),
                    kv("user.id", string_value(&format!("u{}", rng.below(50_000)))),
                    kv("thread", int_value(rng.below(64) as i64)),
                    kv(
                        "region",
                        string_value(["eu-west-1", "us-east-1", "ap-south-1"][rng.below(3) as usize]),
                    ),
                ],
                trace_id: trace_id.clone(),
                span_id: if trace_id.is_empty() {
                    Vec::new()
                } else {
                    rng.next().to_le_bytes().to_vec()
                },
                ..Default::default()
            });
            i += 1;
        }
        let resource: Vec<KeyValue> = vec![
            kv("service.name", string_value(service)),
            kv("host.name", string_value(&format!("node-{}", batches.len() % 64))),
            kv("k8s.namespace.name", string_value("prod")),
        ];
        batches.push(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: resource,
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: logs,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
    }
    batches
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// (a) The ceiling: the documents are built beforehand (with the collector's own
/// conversion code), and only tantivy's indexing and commit are timed, with the
/// collector's writer settings (one indexing thread, 64 MiB).
fn bare_tantivy(encoded: &[Vec<u8>]) -> Result<(Duration, f64)> {
    let dir = tempfile::tempdir()?;
    let fields = LogFields::new();
    let index = tantivy::Index::create_in_dir(dir.path(), fields.schema.clone())?;
    let mut docs = Vec::new();
    let mut miner = PatternMiner::default();
    for bytes in encoded {
        let request = ExportLogsServiceRequest::decode(bytes.as_slice())?;
        let mut pattern_of = |body: &str, ts: i64| miner.add(body, ts).pattern_id;
        docs.extend(log_docs(&fields, &request, &mut pattern_of).into_iter().map(|(_, d)| d));
    }
    let started = Instant::now();
    let mut writer: tantivy::IndexWriter = index.writer_with_num_threads(1, 64 * 1024 * 1024)?;
    for doc in docs {
        writer.add_document(doc)?;
    }
    writer.commit()?;
    let reader = index.reader()?;
    reader.reload()?;
    let elapsed = started.elapsed();
    writer.wait_merging_threads()?;
    Ok((elapsed, peak_rss_mib(std::process::id())))
}

async fn wait_searchable(client: &reqwest::Client, c: &Collector, expected: u64) -> Result<()> {
    let url = c.api_url("/api/v1/logs/search?limit=1&start=0");
    loop {
        let body: serde_json::Value = client.get(&url).send().await?.json().await?;
        if body["total"].as_u64() == Some(expected) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Http,
    Grpc,
}

/// (b) End to end through a running collector.
async fn through_collector(
    transport: Transport,
    encoded: &[Vec<u8>],
    requests: &[ExportLogsServiceRequest],
    total: u64,
    concurrency: usize,
) -> Result<(Duration, f64, Collector)> {
    let c = Collector::start()?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let url = c.http_url("/v1/logs");
        let grpc = c.grpc_url();
        let client = client.clone();
        let mine: Vec<(Vec<u8>, ExportLogsServiceRequest)> = encoded
            .iter()
            .zip(requests)
            .enumerate()
            .filter(|(i, _)| i % concurrency == worker)
            .map(|(_, (b, r))| (b.clone(), r.clone()))
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut grpc_client = match transport {
                Transport::Grpc => Some(
                    LogsServiceClient::connect(grpc)
                        .await?
                        .max_encoding_message_size(64 << 20),
                ),
                Transport::Http => None,
            };
            for (bytes, request) in mine {
                loop {
                    let ok = match (&mut grpc_client, transport) {
                        (Some(g), _) => g.export(request.clone()).await.is_ok(),
                        (None, _) => client
                            .post(&url)
                            .header("content-type", "application/x-protobuf")
                            .body(bytes.clone())
                            .send()
                            .await
                            .is_ok_and(|r| r.status() == 200),
                    };
                    if ok {
                        break;
                    }
                    // Backpressure (429/503): retry as an exporter would.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    wait_searchable(&client, &c, total).await?;
    let elapsed = started.elapsed();
    Ok((elapsed, peak_rss_mib(c.pid()), c))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn p95(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() * 95 / 100).min(v.len() - 1)]
}

/// (c) Search latency through the API and directly on the same index.
async fn search_bench(records: usize, concurrency: usize) -> Result<()> {
    let start = now_ns() - 6 * 3_600_000_000_000;
    println!("\n(c) loading {records} records for the search benchmark ...");
    let c = Collector::start()?;
    let client = reqwest::Client::new();
    let mut sent = 0usize;
    let load_started = Instant::now();
    while sent < records {
        // Generated in chunks to bound memory.
        let n = (records - sent).min(200_000);
        let batches = make_batches(n, start + sent as u64 * 1_000_000, n as u64 * 1_000_000);
        let encoded: Vec<Vec<u8>> = batches.iter().map(|b| b.encode_to_vec()).collect();
        let mut tasks = Vec::new();
        for worker in 0..concurrency {
            let mine: Vec<Vec<u8>> = encoded.iter().skip(worker).step_by(concurrency).cloned().collect();
            let (client, url) = (client.clone(), c.http_url("/v1/logs"));
            tasks.push(tokio::spawn(async move {
                for bytes in mine {
                    while !client
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .body(bytes.clone())
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200)
                    {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
        sent += n;
    }
    wait_searchable(&client, &c, records as u64).await?;
    println!(
        "    loaded in {:.1} s; collector peak RSS {:.0} MiB",
        load_started.elapsed().as_secs_f64(),
        peak_rss_mib(c.pid())
    );

    let queries = [
        ("term in body", "timeout"),
        ("phrase in body", "\"card declined\""),
        (
            "attribute filter",
            "attributes.http.status_code:500 AND attributes.region:eu",
        ),
        ("boolean with exclusion", "payment -attributes.http.method:GET"),
        ("match all, newest 100", "*"),
    ];
    // The same index, opened directly: the baseline for API overhead.
    let part_dir = std::fs::read_dir(c.data_dir.join("index/logs"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect::<Vec<_>>();
    let fields = LogFields::new();
    println!(
        "    {:<24} {:>10} {:>10} {:>14} {:>8}",
        "query", "api p50", "api p95", "sort-all p50", "hits"
    );
    for (name, q) in queries {
        let url = reqwest::Url::parse_with_params(
            &c.api_url("/api/v1/logs/search"),
            &[("q", q), ("limit", "100"), ("start", "0")],
        )?;
        let mut api = Vec::new();
        let mut hits = 0;
        for _ in 0..25 {
            let t = Instant::now();
            let body: serde_json::Value = client.get(url.as_str()).send().await?.json().await?;
            api.push(t.elapsed().as_secs_f64() * 1000.0);
            hits = body["total"].as_u64().unwrap_or(0);
        }
        let mut direct = Vec::new();
        for dir in &part_dir {
            let index = tantivy::Index::open_in_dir(dir)?;
            let reader = index.reader()?;
            let searcher = reader.searcher();
            let mut parser = tantivy::query::QueryParser::for_index(&index, vec![fields.body]);
            parser.set_conjunction_by_default();
            let query: Box<dyn tantivy::query::Query> = if q == "*" {
                Box::new(tantivy::query::AllQuery)
            } else {
                parser.parse_query(q)?
            };
            for _ in 0..25 {
                let t = Instant::now();
                let top =
                    tantivy::collector::TopDocs::with_limit(100).order_by_fast_field::<i64>("ts", tantivy::Order::Desc);
                let (docs, _count) = searcher.search(&query, &(top, tantivy::collector::Count))?;
                for (_, addr) in docs {
                    let _doc: tantivy::TantivyDocument = searcher.doc(addr)?;
                }
                direct.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        println!(
            "    {:<24} {:>8.1}ms {:>8.1}ms {:>12.1}ms {:>8}",
            name,
            median(&mut api),
            p95(&mut api),
            median(&mut direct),
            hits
        );
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let records = env_usize("BENCH_RECORDS", 200_000);
    let search_records = env_usize("BENCH_SEARCH_RECORDS", 10_000_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 4);
    let batches = make_batches(records, now_ns() - 3_600_000_000_000, 3_000_000_000_000);
    let encoded: Vec<Vec<u8>> = batches.iter().map(|b| b.encode_to_vec()).collect();
    let mb = encoded.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
    println!(
        "ingest benchmark: {records} log records in {} batches, {mb:.1} MB of OTLP protobuf",
        encoded.len()
    );

    let (ceiling, ceiling_rss) = tokio::task::block_in_place(|| bare_tantivy(&encoded)).context("bare tantivy")?;
    let rate = |d: Duration| records as f64 / d.as_secs_f64();
    println!(
        "(a) bare tantivy     : {:>10.0} records/s {:>7.1} MB/s  ({:.2} s, bench process peak RSS {:.0} MiB)",
        rate(ceiling),
        mb / ceiling.as_secs_f64(),
        ceiling.as_secs_f64(),
        ceiling_rss
    );
    for transport in [Transport::Http, Transport::Grpc] {
        let (elapsed, rss, c) = through_collector(transport, &encoded, &batches, records as u64, concurrency).await?;
        println!(
            "(b) OTLP/{:<5} e2e   : {:>10.0} records/s {:>7.1} MB/s  ({:.2} s, collector peak RSS {:.0} MiB)  b/a = {:.2}",
            format!("{transport:?}"),
            rate(elapsed),
            mb / elapsed.as_secs_f64(),
            elapsed.as_secs_f64(),
            rss,
            ceiling.as_secs_f64() / elapsed.as_secs_f64()
        );
        drop(c);
    }
    if search_records > 0 {
        search_bench(search_records, concurrency).await?;
    }
    Ok(())
}
