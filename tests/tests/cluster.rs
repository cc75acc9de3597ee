//! Scale-out on NATS JetStream, with every part real: three `nats-server` processes in a
//! JetStream cluster, two ingest nodes, two workers, and the official OpenTelemetry Python
//! SDK sending. Mid-stream the test kill -9s a worker, then an ingest node, then a NATS
//! server; at the end every acknowledged record is searchable exactly once through the query
//! root, the surviving worker took the dead one's partitions within a lease period, and the
//! killed worker, restarted on its data, takes its share back without duplicating anything;
//! a trace whose services live on different workers comes back whole through the root.
//! A second test kills the active correlator (`--role rca`) between two faults: its standby
//! takes over without paging the first incident again, and pages the second once.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use vigil_e2e::nats::NatsCluster;
use vigil_e2e::otlp::{kv, string_value};
use vigil_e2e::{Collector, Options, eventually, get_json, post_protobuf};

const PARTITIONS: u64 = 8;
const LEASE_SECS: u64 = 4;
const BATCHES: usize = 300;
const RECORDS: usize = 8;

fn role(role: &str, nats: &str, config: &Path, data_dir: Option<&Path>) -> Result<Collector> {
    Collector::start_with(Options {
        data_dir: data_dir.map(Path::to_path_buf),
        // Correlators share their signing secrets (a failover must not change them).
        env: vec![
            ("VIGIL_LINK_SECRET".into(), "cluster-test-link-secret".into()),
            ("VIGIL_WEBHOOK_SECRET".into(), "cluster-test-webhook-secret".into()),
        ],
        args: vec![
            "--role".into(),
            role.into(),
            "--nats".into(),
            nats.into(),
            "--config".into(),
            config.display().to_string(),
        ],
        ..Options::default()
    })
}

/// A worker's value of one of its own metrics (0 when absent).
async fn metric(client: &reqwest::Client, c: &Collector, name: &str) -> Result<f64> {
    let text = client.get(c.api_url("/metrics")).send().await?.text().await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0))
}

/// Every record of the run through the query root: how often each (batch, record) is there.
async fn records(client: &reqwest::Client, root: &Collector, run: &str) -> Result<(u64, BTreeMap<(i64, i64), usize>)> {
    let url = reqwest::Url::parse_with_params(
        &root.api_url("/api/v1/logs/search"),
        &[("q", format!("attributes.run:{run}")), ("limit", "10000".to_string())],
    )?;
    let (status, body) = get_json(client, url.as_str()).await?;
    ensure!(status == 200, "root search answered {status}: {body}");
    let mut seen = BTreeMap::new();
    for hit in body["hits"].as_array().into_iter().flatten() {
        let key = (
            hit["attributes"]["batch"].as_i64().unwrap_or(-1),
            hit["attributes"]["record"].as_i64().unwrap_or(-1),
        );
        *seen.entry(key).or_insert(0) += 1;
    }
    Ok((body["total"].as_u64().unwrap_or(0), seen))
}

/// Waits until the root sees every record of the run exactly once (the workers catch up),
/// failing with what it saw last.
async fn exactly_once(client: &reqwest::Client, root: &Collector, run: &str) -> Result<()> {
    let expected = (BATCHES * RECORDS) as u64;
    eventually(Duration::from_secs(90), "every record exactly once", || async move {
        let (total, seen) = records(client, root, run).await?;
        ensure!(total == expected, "root total {total}, expected {expected}");
        ensure!(
            seen.len() == BATCHES * RECORDS,
            "{} distinct records of {expected}",
            seen.len()
        );
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).take(5).collect();
        ensure!(twice.is_empty(), "records seen more than once: {twice:?}");
        Ok(Some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_worker_an_ingest_node_and_a_nats_server_loses_and_duplicates_nothing() -> Result<()> {
    vigil_e2e::init_tls();
    let mut nats = NatsCluster::start(3)?;
    let urls = nats.urls();
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("cluster.toml");
    std::fs::write(
        &config,
        format!("[cluster]\npartitions = {PARTITIONS}\nreplicas = 3\nlease_secs = {LEASE_SECS}\n"),
    )?;
    let ingest = [
        role("ingest", &urls, &config, None)?,
        role("ingest", &urls, &config, None)?,
    ];
    let w1_dir = dir.path().join("w1");
    let w1 = role("worker", &urls, &config, Some(&w1_dir))?;
    let w2 = role("worker", &urls, &config, Some(&dir.path().join("w2")))?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;

    // Both workers hold their share before the load starts.
    eventually(Duration::from_secs(60), "the workers to split the partitions", || {
        let (client, w1, w2) = (&client, &w1, &w2);
        async move {
            let a = metric(client, w1, "vigil_stream_partitions_owned").await?;
            let b = metric(client, w2, "vigil_stream_partitions_owned").await?;
            Ok((a + b == PARTITIONS as f64 && a > 0.0 && b > 0.0).then_some(()))
        }
    })
    .await?;

    let run = format!("run{}", std::process::id());
    let endpoints = ingest
        .iter()
        .map(|c| format!("http://{}", c.http))
        .collect::<Vec<_>>()
        .join(",");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/cluster_sender.py");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let mut sender = Command::new(&python)
        .arg(script)
        .args(["--endpoints", &endpoints, "--run", &run])
        .args([
            "--batches",
            &BATCHES.to_string(),
            "--records",
            &RECORDS.to_string(),
            "--services",
            "12",
        ])
        .args(["--pace-ms", "15"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("run {python} (pip install -r tests/python/requirements.txt)"))?;
    let acked = Arc::new(AtomicUsize::new(0));
    let stdout = sender.stdout.take().context("sender stdout")?;
    let counter = Arc::clone(&acked);
    let reader = std::thread::spawn(move || {
        let mut summary = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("acked ") {
                counter.fetch_add(1, Ordering::SeqCst);
            } else {
                summary = line;
            }
        }
        summary
    });
    let reached = |n: usize| {
        let acked = Arc::clone(&acked);
        eventually(Duration::from_secs(120), "the sender to get further", move || {
            let a = acked.load(Ordering::SeqCst);
            async move { Ok((a >= n).then_some(())) }
        })
    };

    // A worker dies: the other takes its partitions once its leases lapse.
    reached(BATCHES / 5).await?;
    let killed_at = Instant::now();
    w1.kill()?;
    let consumed_before = metric(&client, &w2, "vigil_stream_consumed_total").await?;
    eventually(
        Duration::from_secs(4 * LEASE_SECS),
        "the surviving worker to hold every partition",
        || {
            let (client, w2) = (&client, &w2);
            async move {
                Ok((metric(client, w2, "vigil_stream_partitions_owned").await? == PARTITIONS as f64).then_some(()))
            }
        },
    )
    .await?;
    let takeover = killed_at.elapsed();

    // An ingest node dies: the sender's retries go to the other one.
    reached(BATCHES / 2).await?;
    let [first_ingest, second_ingest] = ingest;
    first_ingest.kill()?;
    // A NATS server dies: the stream keeps a quorum of two.
    reached(BATCHES * 7 / 10).await?;
    nats.kill(2)?;

    let status = tokio::task::spawn_blocking(move || sender.wait()).await??;
    let summary = reader.join().map_err(|_| anyhow::anyhow!("reader thread panicked"))?;
    ensure!(status.success(), "the sender gave up: {summary}");
    let summary: serde_json::Value = serde_json::from_str(&summary).context("sender summary")?;
    let acked_batches: Vec<i64> = summary["acked"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_i64)
        .collect();
    assert_eq!(acked_batches.len(), BATCHES, "every batch is acknowledged in the end");
    assert!(
        summary["attempts"].as_u64().unwrap_or(0) > BATCHES as u64,
        "the ingest node's death must have failed some attempts: {summary}"
    );
    // Detection resumed on the survivor: it consumed the dead worker's partitions.
    assert!(
        takeover <= Duration::from_secs(2 * LEASE_SECS + 2),
        "takeover took {takeover:?} with {LEASE_SECS} s leases"
    );
    assert!(metric(&client, &w2, "vigil_stream_consumed_total").await? > consumed_before);

    if let Err(e) = exactly_once(&client, &second_ingest, &run).await {
        let (_, seen) = records(&client, &second_ingest, &run).await?;
        let missing: Vec<usize> = (0..BATCHES).filter(|b| !seen.contains_key(&(*b as i64, 0))).collect();
        let worker_log: String = w2
            .logs()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("partition"))
            .collect::<Vec<_>>()
            .join("\n");
        anyhow::bail!("after the kills: {e}; batches missing: {missing:?}\nsurviving worker:\n{worker_log}");
    }

    // The killed worker comes back on its data: it takes half the partitions back (its
    // copy of the others is purged), and the root still sees each record once.
    let w1 = role("worker", &urls, &config, Some(&w1_dir))?;
    eventually(
        Duration::from_secs(60),
        "the restarted worker to take its share",
        || {
            let (client, w1, w2) = (&client, &w1, &w2);
            async move {
                let a = metric(client, w1, "vigil_stream_partitions_owned").await?;
                let b = metric(client, w2, "vigil_stream_partitions_owned").await?;
                Ok((a > 0.0 && a + b == PARTITIONS as f64).then_some(()))
            }
        },
    )
    .await?;
    exactly_once(&client, &second_ingest, &run)
        .await
        .context("after the worker's return")?;
    // A trace crossing two services held by different workers comes back whole.
    let (status, view) = get_json(&client, &second_ingest.api_url("/api/v1/cluster")).await?;
    ensure!(status == 200, "cluster view: {view}");
    let owner = |service: &str| -> Option<String> {
        let p = partition_of(service);
        view["workers"].as_array()?.iter().find_map(|w| {
            w["partitions"]
                .as_array()?
                .iter()
                .any(|x| x.as_u64() == Some(p))
                .then(|| w["node"].as_str().unwrap_or_default().to_string())
        })
    };
    let caller = "cluster-svc-0".to_string();
    let callee = (1..100)
        .map(|i| format!("cluster-svc-{i}"))
        .find(|s| owner(s).is_some() && owner(s) != owner(&caller))
        .context("no service on the other worker")?;
    let trace_id = [0x5au8; 16];
    let now = vigil_e2e::now_ns();
    let span = |service: &str, id: u8, parent: Option<u8>| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", string_value(service))],
            ..Resource::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: vec![Span {
                trace_id: trace_id.to_vec(),
                span_id: vec![id; 8],
                parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
                name: format!("{service} op"),
                kind: 2,
                start_time_unix_nano: now + u64::from(id),
                end_time_unix_nano: now + 1_000_000,
                ..Span::default()
            }],
            ..ScopeSpans::default()
        }],
        ..ResourceSpans::default()
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![span(&caller, 1, None), span(&callee, 2, Some(1))],
    };
    post_protobuf(&client, second_ingest.http_url("/v1/traces"), request.encode_to_vec()).await?;
    let url = second_ingest.api_url(&format!("/api/v1/traces/{}", hex::encode(trace_id)));
    let services = eventually(Duration::from_secs(60), "the trace from both workers", || {
        let (client, url) = (&client, &url);
        async move {
            let (status, body) = get_json(client, url).await?;
            let services: Vec<String> = body["spans"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["service"].as_str().map(str::to_string))
                .collect();
            Ok((status == 200 && services.len() == 2).then_some(services))
        }
    })
    .await?;
    assert_eq!(services, vec![caller, callee], "both spans, in start order");
    drop(w1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_workers_reach_the_stream_over_tls() -> Result<()> {
    vigil_e2e::init_tls();
    let dir = tempfile::tempdir()?;
    let (cert, key) = vigil_e2e::make_cert(dir.path())?;
    let nats = NatsCluster::start_tls(&cert, &key)?;
    let config = dir.path().join("cluster.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nreplicas = 1\nlease_secs = {LEASE_SECS}\ntls_ca_file = {:?}\n",
            cert.display().to_string()
        ),
    )?;
    let ingest = role("ingest", &nats.urls(), &config, None)?;
    let _worker = role("worker", &nats.urls(), &config, None)?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let request = vigil_e2e::otlp::logs_request(
        "tls-svc",
        vec![vigil_e2e::otlp::log_record(
            vigil_e2e::now_ns(),
            "over tls",
            &[("tls", 1)],
        )],
    );
    post_protobuf(&client, ingest.http_url("/v1/logs"), request.encode_to_vec()).await?;
    let url = ingest.api_url("/api/v1/logs/search?q=attributes.tls:1&limit=1");
    eventually(
        Duration::from_secs(60),
        "the record through a TLS-only NATS server",
        || {
            let (client, url) = (&client, &url);
            async move {
                let (status, body) = get_json(client, url).await?;
                Ok((status == 200 && body["total"] == 1).then_some(()))
            }
        },
    )
    .await
}

/// An ingest node's API asks for the API token like a single collector's: its `/metrics`
/// and every cluster query, not the probes. (It answered without one at first.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_nodes_api_asks_for_the_token() -> Result<()> {
    vigil_e2e::init_tls();
    let nats = NatsCluster::start(1)?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("cluster.toml");
    std::fs::write(&config, format!("[cluster]\nreplicas = 1\nlease_secs = {LEASE_SECS}\n"))?;
    let token = "cluster-api-token-0123456789";
    let ingest = Collector::start_with(Options {
        args: [
            "--role",
            "ingest",
            "--nats",
            &nats.urls(),
            "--config",
            &config.display().to_string(),
        ]
        .map(String::from)
        .to_vec(),
        env: vec![("VIGIL_API_TOKEN".into(), token.into())],
        ..Options::default()
    })?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    for path in ["/metrics", "/api/v1/cluster", "/api/v1/logs/search?q=x"] {
        let status = client.get(ingest.api_url(path)).send().await?.status().as_u16();
        assert_eq!(status, 401, "{path} without the token");
    }
    let status = client
        .get(ingest.api_url("/api/v1/cluster"))
        .bearer_auth(token)
        .send()
        .await?
        .status()
        .as_u16();
    assert_eq!(status, 200, "with the token");
    let status = client.get(ingest.api_url("/healthz")).send().await?.status().as_u16();
    assert_eq!(status, 200, "the probes need no token");
    Ok(())
}

const MIN_NS: u64 = 60_000_000_000;

/// One service's traffic in the fault test.
#[derive(Clone, Copy)]
struct Traffic<'a> {
    service: &'a str,
    seed: u64,
    /// From this minute on, one request in four takes over two seconds.
    slow_from: u64,
    /// Five lines of this error, never logged before, two minutes before the range ends.
    error: Option<&'a str>,
}

/// Minute `m` (after `base`) of a service's requests to `POST /pay` — 20 a minute, 200–300 ms
/// unless slow — and its one routine log line, plus the error lines in their minute.
fn minute(t: &Traffic<'_>, base: u64, m: u64, last: u64) -> (ResourceSpans, ExportLogsServiceRequest) {
    let spans = (0..20u64)
        .map(|k| {
            let i = m * 20 + k;
            let jitter = ((i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) as f64) / (1u64 << 53) as f64;
            let slow = m >= t.slow_from && k % 4 == 0;
            let secs = 0.2 + 0.1 * jitter + if slow { 2.2 } else { 0.0 };
            let start = base + m * MIN_NS + k * 3_000_000_000;
            Span {
                trace_id: (u128::from(t.seed) << 64 | u128::from(i + 1)).to_be_bytes().to_vec(),
                span_id: (t.seed << 32 | (i + 1)).to_be_bytes().to_vec(),
                name: "POST /pay".into(),
                kind: 2,
                start_time_unix_nano: start,
                end_time_unix_nano: start + (secs * 1e9) as u64,
                ..Span::default()
            }
        })
        .collect();
    let spans = ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", string_value(t.service))],
            ..Resource::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..ScopeSpans::default()
        }],
        ..ResourceSpans::default()
    };
    let mut records = vec![vigil_e2e::otlp::log_record(
        base + m * MIN_NS + 1,
        &format!("payment accepted for order {m}"),
        &[],
    )];
    if let Some(text) = t.error.filter(|_| m + 2 == last) {
        for k in 0..5u64 {
            let mut error = vigil_e2e::otlp::log_record(base + m * MIN_NS + 7 + k * 1_000_000_000, text, &[]);
            error.severity_number = 17;
            error.severity_text = "ERROR".into();
            records.push(error);
        }
    }
    (spans, vigil_e2e::otlp::logs_request(t.service, records))
}

/// Sends minutes `range` (after `base`) of every service's traffic through an ingest node, a
/// minute at a time with all services together: the way live traffic arrives, so no service's
/// data reaches the detectors behind another's.
async fn send_traffic(
    client: &reqwest::Client,
    ingest: &Collector,
    base: u64,
    range: std::ops::Range<u64>,
    services: &[Traffic<'_>],
) -> Result<()> {
    for m in range.clone() {
        let (spans, logs): (Vec<_>, Vec<_>) = services.iter().map(|t| minute(t, base, m, range.end)).unzip();
        let traces = ExportTraceServiceRequest { resource_spans: spans };
        post_protobuf(client, ingest.http_url("/v1/traces"), traces.encode_to_vec()).await?;
        let logs = ExportLogsServiceRequest {
            resource_logs: logs.into_iter().flat_map(|l| l.resource_logs).collect(),
        };
        post_protobuf(client, ingest.http_url("/v1/logs"), logs.encode_to_vec()).await?;
    }
    Ok(())
}

/// The API address of the cluster's active correlator, as the root names it.
async fn correlator(client: &reqwest::Client, root: &Collector) -> Result<Option<String>> {
    let (status, view) = get_json(client, &root.api_url("/api/v1/cluster")).await?;
    ensure!(status == 200, "cluster view: {view}");
    Ok(view["correlator"]["api"].as_str().map(str::to_string))
}

/// The incident whose first candidate is `service`, through the root, once there is one.
async fn incident_on(client: &reqwest::Client, root: &Collector, service: &str) -> Result<serde_json::Value> {
    let url = root.api_url("/api/v1/incidents");
    eventually(Duration::from_secs(120), "an incident through the root", || {
        let (client, url) = (client, &url);
        async move {
            let (status, body) = get_json(client, url).await?;
            ensure!(status == 200, "incidents through the root answered {status}: {body}");
            Ok(body["incidents"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|i| i["candidates"][0]["service"] == service)
                .cloned())
        }
    })
    .await
    .with_context(|| format!("no incident on {service}"))
}

/// Successful webhook deliveries saying the alert of incident `id` fires.
fn notified(hook: &vigil_e2e::receiver::Receiver, id: &str) -> Vec<vigil_e2e::receiver::Captured> {
    hook.captured()
        .into_iter()
        .filter(|c| c.status == 200 && c.json["groupLabels"]["incident"] == id && c.json["status"] == "firing")
        .collect()
}

/// The correlator (`--role rca`): one active, one standby, a worker and an ingest node on a
/// three-server JetStream cluster. A fault becomes an incident on the active correlator,
/// pages once, and reaches the standby through the replicated log; the active one is
/// killed -9; the standby takes the lease, does not page the first incident again, and
/// pages the next fault once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_correlator_fails_over_without_paging_twice() -> Result<()> {
    vigil_e2e::init_tls();
    let nats = NatsCluster::start(3)?;
    let urls = nats.urls();
    let hook = vigil_e2e::receiver::Receiver::start().await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("cluster.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\npartitions = {PARTITIONS}\nreplicas = 3\nlease_secs = {LEASE_SECS}\n\
             rca_snapshot_records = 4\n\
             [alerting.route]\nreceiver = \"hook\"\ngroup_by = [\"incident\"]\ngroup_wait_secs = 1\n\
             group_interval_secs = 1\nrepeat_interval_secs = 3600\n\
             [[alerting.receivers]]\nname = \"hook\"\nurl = \"{}\"\n",
            hook.url("/hook")
        ),
    )?;
    let ingest = role("ingest", &urls, &config, None)?;
    let worker = role("worker", &urls, &config, None)?;
    let mut rcas = [
        Some(role("rca", &urls, &config, Some(&dir.path().join("rca1")))?),
        Some(role("rca", &urls, &config, Some(&dir.path().join("rca2")))?),
    ];
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let leader = eventually(Duration::from_secs(60), "a correlator to lead", || {
        let (client, ingest) = (&client, &ingest);
        async move { correlator(client, ingest).await }
    })
    .await?;
    let first = rcas
        .iter()
        .position(|c| c.as_ref().is_some_and(|c| format!("http://{}", c.api) == leader))
        .with_context(|| format!("no correlator answers at {leader}"))?;
    let standby = 1 - first;

    // Three hours of two services' traffic, with a fault on checkout in the last twenty
    // minutes: one incident, one page, and the standby holds the incident too. Payment's
    // fault comes later, in the last fifteen of the 200 minutes that end now.
    let base = (vigil_e2e::now_ns() / MIN_NS - 200) * MIN_NS;
    let checkout = Traffic {
        service: "checkout",
        seed: 1,
        slow_from: 160,
        error: Some("card processor unreachable at 10.0.0.7:443"),
    };
    let mut payment = Traffic {
        service: "payment",
        seed: 2,
        slow_from: u64::MAX,
        error: None,
    };
    send_traffic(&client, &ingest, base, 0..180, &[checkout, payment]).await?;
    let a = incident_on(&client, &ingest, "checkout").await?;
    let a_id = a["id"].as_str().unwrap_or_default().to_string();
    eventually(Duration::from_secs(60), "the page for the first incident", || {
        let n = notified(&hook, &a_id).len();
        async move { Ok((n > 0).then_some(())) }
    })
    .await?;
    let standby_url = rcas[standby]
        .as_ref()
        .context("standby")?
        .api_url(&format!("/api/v1/incidents/{a_id}"));
    eventually(Duration::from_secs(30), "the incident on the standby", || {
        let (client, url) = (&client, &standby_url);
        async move { Ok((get_json(client, url).await?.0 == 200).then_some(())) }
    })
    .await?;
    // A standby changes nothing: an acknowledgement there is refused, naming why.
    let (status, body) = {
        let response = client
            .get(rcas[standby].as_ref().context("standby")?.api_url("/api/v1/alerts"))
            .send()
            .await?;
        let status = response.status().as_u16();
        (status, response.json::<serde_json::Value>().await.unwrap_or_default())
    };
    ensure!(status == 200, "the standby's alerts: {body}");
    let alert_id = body["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["labels"]["incident"] == a_id.as_str())
        .and_then(|x| x["id"].as_str())
        .context("the standby holds the incident's alert")?
        .to_string();
    let refused = client
        .post(
            rcas[standby]
                .as_ref()
                .context("standby")?
                .api_url(&format!("/api/v1/alerts/{alert_id}/ack")),
        )
        .send()
        .await?;
    assert_eq!(refused.status().as_u16(), 503, "a standby refuses changes");

    // The active correlator dies; the standby takes over within the lease.
    let killed_at = Instant::now();
    rcas[first].take().context("leader")?.kill()?;
    let new_leader = eventually(Duration::from_secs(6 * LEASE_SECS), "the standby to lead", || {
        let (client, ingest, leader) = (&client, &ingest, &leader);
        async move { Ok(correlator(client, ingest).await?.filter(|n| n != leader)) }
    })
    .await?;
    let takeover = killed_at.elapsed();
    assert_ne!(new_leader, leader);

    // The next fault pages once, from the new leader; the first is not paged again.
    payment.slow_from = 185;
    payment.error = Some("ledger write timed out after 5000 ms");
    let checkout = Traffic {
        error: None,
        ..checkout
    };
    send_traffic(&client, &ingest, base, 185..200, &[checkout, payment]).await?;
    let b = match incident_on(&client, &ingest, "payment").await {
        Ok(b) => b,
        Err(e) => {
            let (_, anomalies) = get_json(&client, &ingest.api_url("/api/v1/anomalies?limit=20")).await?;
            let (_, incidents) = get_json(&client, &ingest.api_url("/api/v1/incidents")).await?;
            let survivor = rcas[standby].as_ref().map(Collector::logs).unwrap_or_default();
            let text = client.get(worker.api_url("/metrics")).send().await?.text().await?;
            let detect: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.starts_with("vigil_detect") || l.starts_with("vigil_findings") || l.starts_with("vigil_anomaly")
                })
                .collect();
            eprintln!("worker metrics:\n{}", detect.join("\n"));
            anyhow::bail!(
                "{e}\nanomalies: {anomalies}\nincidents: {incidents}\nnew leader:\n{survivor}\nworker:\n{}",
                worker.logs()
            );
        }
    };
    let b_id = b["id"].as_str().unwrap_or_default().to_string();
    ensure!(b_id != a_id, "the second fault opened its own incident");
    eventually(Duration::from_secs(60), "the page for the second incident", || {
        let n = notified(&hook, &b_id).len();
        async move { Ok((n > 0).then_some(())) }
    })
    .await?;
    // Acknowledged through the root: the new leader takes it.
    let acked = client
        .post(ingest.api_url(&format!("/api/v1/alerts/{alert_id}/ack")))
        .send()
        .await?;
    assert_eq!(
        acked.status().as_u16(),
        200,
        "an acknowledgement through the root reaches the new leader"
    );

    let pages = hook.captured();
    let keys: Vec<String> = pages
        .iter()
        .filter(|c| c.status == 200)
        .filter_map(|c| {
            c.headers
                .get("x-vigil-idempotency-key")?
                .to_str()
                .ok()
                .map(str::to_string)
        })
        .collect();
    let mut distinct = keys.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        keys.len(),
        "a notification was delivered twice: {keys:?}"
    );
    assert_eq!(notified(&hook, &a_id).len(), 1, "the first incident paged once");
    assert_eq!(notified(&hook, &b_id).len(), 1, "the second incident paged once");
    assert!(
        takeover <= Duration::from_secs(2 * LEASE_SECS + 4),
        "takeover took {takeover:?} with {LEASE_SECS} s leases"
    );

    // The log is kept short by snapshots: a correlator started now, on an empty data dir,
    // starts from the snapshot and the log after it, and holds both incidents and the
    // acknowledgement.
    let leader = rcas[standby].as_ref().context("new leader")?;
    ensure!(
        metric(&client, leader, "vigil_rca_snapshots_total").await? >= 1.0,
        "the leader wrote no snapshot"
    );
    let late = role("rca", &urls, &config, Some(&dir.path().join("rca3")))?;
    eventually(Duration::from_secs(30), "the new standby to hold the state", || {
        let (client, late, a_id, b_id) = (&client, &late, &a_id, &b_id);
        async move {
            let a = get_json(client, &late.api_url(&format!("/api/v1/incidents/{a_id}")))
                .await?
                .0;
            let b = get_json(client, &late.api_url(&format!("/api/v1/incidents/{b_id}")))
                .await?
                .0;
            let (_, alerts) = get_json(client, &late.api_url("/api/v1/alerts")).await?;
            let acked = alerts["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|x| x["labels"]["incident"] == a_id.as_str() && x["acknowledged_by"].is_string());
            Ok((a == 200 && b == 200 && acked).then_some(()))
        }
    })
    .await?;
    assert_eq!(metric(&client, &late, "vigil_rca_snapshot_installs_total").await?, 1.0);
    Ok(())
}

/// The stream's partition of a service: FNV-1a 64 of the name, mod the partitions (the
/// mapping is part of the stream's format, fixed in `cluster/partition.rs`).
fn partition_of(service: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in service.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h % PARTITIONS
}
