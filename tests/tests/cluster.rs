//! Scale-out on NATS JetStream, with every part real: three `nats-server` processes in a
//! JetStream cluster, two ingest nodes, two workers, two correlators, a webhook receiver,
//! and the official OpenTelemetry Python SDK sending. Mid-stream the test kill -9s a worker,
//! then an ingest node, then a NATS server, then the active correlator; at the end every
//! acknowledged record is searchable exactly once through the query root, the surviving
//! worker took the dead one's partitions and the standby correlator the lead within a lease
//! period, no alert was paged twice, and the killed worker, restarted on its data, takes its
//! share back without duplicating anything; a trace whose services live on different
//! workers comes back whole through the root. Incidents paged across a correlator's
//! failover are `cluster_rca.rs`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use vigil_e2e::nats::{
    NatsCluster, alerting_to, correlator, owner, partition_of, partitions_split, role_options, start_role,
};
use vigil_e2e::otlp::{kv, string_value};
use vigil_e2e::{Collector, Options, eventually, get_json, post_protobuf};

const PARTITIONS: u64 = 8;
const LEASE_SECS: u64 = 4;
const BATCHES: usize = 300;
const RECORDS: usize = 8;

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

/// An alert named `name`, through the root's Alertmanager API.
async fn post_alert(client: &reqwest::Client, root: &Collector, name: &str) -> Result<()> {
    let alert = serde_json::json!([{"labels": {"alertname": name, "severity": "critical"}}]);
    let response = client.post(root.api_url("/api/v2/alerts")).json(&alert).send().await?;
    let status = response.status().as_u16();
    ensure!(
        status == 200,
        "posting {name} answered {status}: {}",
        response.text().await?
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_worker_an_ingest_node_a_nats_server_and_the_correlator_loses_and_duplicates_nothing() -> Result<()> {
    vigil_e2e::init_tls();
    let mut nats = NatsCluster::start(3)?;
    let urls = nats.urls();
    let hook = vigil_e2e::receiver::Receiver::start().await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("cluster.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\npartitions = {PARTITIONS}\nreplicas = 3\nlease_secs = {LEASE_SECS}\n{}",
            alerting_to(&hook.url("/hook"), "alertname")
        ),
    )?;
    let ingest = [
        start_role("ingest", &urls, &config, None)?,
        start_role("ingest", &urls, &config, None)?,
    ];
    let w1_dir = dir.path().join("w1");
    let w1 = start_role("worker", &urls, &config, Some(&w1_dir))?;
    let w2 = start_role("worker", &urls, &config, Some(&dir.path().join("w2")))?;
    let mut correlators = vec![
        start_role("rca", &urls, &config, Some(&dir.path().join("rca1")))?,
        start_role("rca", &urls, &config, Some(&dir.path().join("rca2")))?,
    ];
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;

    // The correlator pages an alert before the load: it must never page it again, across
    // every kill below, the correlator's own included.
    let first_leader = eventually(Duration::from_secs(60), "a correlator to lead", || {
        let (client, root) = (&client, &ingest[0]);
        async move { correlator(client, root).await }
    })
    .await?;
    post_alert(&client, &ingest[0], "BeforeTheKills").await?;
    eventually(Duration::from_secs(60), "the page of the first alert", || {
        let n = hook.firing("alertname", "BeforeTheKills").len();
        async move { Ok((n > 0).then_some(())) }
    })
    .await?;

    // Both workers hold their share before the load starts.
    partitions_split(&client, &[&w1, &w2], PARTITIONS).await?;

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
    let consumed_before = w2.metric(&client, "vigil_stream_consumed_total").await?;
    eventually(
        Duration::from_secs(4 * LEASE_SECS),
        "the surviving worker to hold every partition",
        || {
            let (client, w2) = (&client, &w2);
            async move {
                Ok((w2.metric(client, "vigil_stream_partitions_owned").await? == PARTITIONS as f64).then_some(()))
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

    // The active correlator dies: the standby takes the lease and pages what comes next,
    // and nothing it was told was paged already.
    let dead = correlators
        .iter()
        .position(|c| format!("http://{}", c.api) == first_leader)
        .context("the leading correlator")?;
    let killed_at = Instant::now();
    correlators.remove(dead).kill()?;
    let new_leader = eventually(Duration::from_secs(4 * LEASE_SECS + 10), "the standby to lead", || {
        let (client, root, old) = (&client, &second_ingest, &first_leader);
        async move { Ok(correlator(client, root).await?.filter(|l| l != old)) }
    })
    .await?;
    let correlator_takeover = killed_at.elapsed();
    ensure!(new_leader == format!("http://{}", correlators[0].api), "{new_leader}");
    post_alert(&client, &second_ingest, "AfterTheKills").await?;
    eventually(Duration::from_secs(60), "the page of the second alert", || {
        let n = hook.firing("alertname", "AfterTheKills").len();
        async move { Ok((n > 0).then_some(())) }
    })
    .await?;

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
    assert!(w2.metric(&client, "vigil_stream_consumed_total").await? > consumed_before);
    assert!(
        correlator_takeover <= Duration::from_secs(2 * LEASE_SECS + 4),
        "the correlator's takeover took {correlator_takeover:?}"
    );
    assert_eq!(
        hook.firing("alertname", "BeforeTheKills").len(),
        1,
        "the first alert paged once"
    );
    assert_eq!(
        hook.firing("alertname", "AfterTheKills").len(),
        1,
        "the second alert paged once"
    );

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
    let w1 = start_role("worker", &urls, &config, Some(&w1_dir))?;
    eventually(
        Duration::from_secs(60),
        "the restarted worker to take its share",
        || {
            let (client, w1, w2) = (&client, &w1, &w2);
            async move {
                let a = w1.metric(client, "vigil_stream_partitions_owned").await?;
                let b = w2.metric(client, "vigil_stream_partitions_owned").await?;
                Ok((a > 0.0 && a + b == PARTITIONS as f64).then_some(()))
            }
        },
    )
    .await?;
    exactly_once(&client, &second_ingest, &run)
        .await
        .context("after the worker's return")?;
    // The survivor's detectors forgot the services it handed back: their silence there is
    // no news (it would score them as falling to zero for an hour).
    eventually(Duration::from_secs(30), "the survivor's detectors to forget", || {
        let forgot = w2.logs().contains("detectors forgot a partition's services");
        async move { Ok(forgot.then_some(())) }
    })
    .await?;
    // A trace crossing two services held by different workers comes back whole.
    let (status, view) = get_json(&client, &second_ingest.api_url("/api/v1/cluster")).await?;
    ensure!(status == 200, "cluster view: {view}");
    let holder = |service: &str| owner(&view, partition_of(service, PARTITIONS));
    let caller = "cluster-svc-0".to_string();
    let callee = (1..100)
        .map(|i| format!("cluster-svc-{i}"))
        .find(|s| holder(s).is_some() && holder(s) != holder(&caller))
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
    let ingest = start_role("ingest", &nats.urls(), &config, None)?;
    let _worker = start_role("worker", &nats.urls(), &config, None)?;
    one_record_through(&ingest, "tls", "a TLS-only NATS server").await
}

/// A log record with attribute `attribute` = 1, sent to `ingest`, becomes searchable through
/// it (the stream, a worker and the query root all reached over `how`).
async fn one_record_through(ingest: &Collector, attribute: &str, how: &str) -> Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let request = vigil_e2e::otlp::logs_request(
        &format!("{attribute}-svc"),
        vec![vigil_e2e::otlp::log_record(
            vigil_e2e::now_ns(),
            "one record",
            &[(attribute, 1)],
        )],
    );
    post_protobuf(&client, ingest.http_url("/v1/logs"), request.encode_to_vec()).await?;
    let url = ingest.api_url(&format!("/api/v1/logs/search?q=attributes.{attribute}:1&limit=1"));
    eventually(Duration::from_secs(60), &format!("the record through {how}"), || {
        let (client, url) = (&client, &url);
        async move {
            let (status, body) = get_json(client, url).await?;
            Ok((status == 200 && body["total"] == 1).then_some(()))
        }
    })
    .await
}

/// Servers that let in only an nkey user: ingest node and worker log in with the user's
/// seed from `cluster.credentials_file`, and a record goes through; without it the servers
/// refuse the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_workers_log_in_with_an_nkey() -> Result<()> {
    vigil_e2e::init_tls();
    let user = nkeys::KeyPair::new_user();
    let nats = NatsCluster::start_with_nkey_user(&user.public_key())?;
    let dir = tempfile::tempdir()?;
    let seed = dir.path().join("vigil.nk");
    std::fs::write(&seed, user.seed()?)?;
    let config = dir.path().join("cluster.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nreplicas = 1\nlease_secs = {LEASE_SECS}\ncredentials_file = {:?}\n",
            seed.display().to_string()
        ),
    )?;
    let ingest = start_role("ingest", &nats.urls(), &config, None)?;
    let _worker = start_role("worker", &nats.urls(), &config, None)?;
    one_record_through(&ingest, "nkey", "an nkey-only NATS server").await?;
    // The server really asks: a connection without the seed is refused.
    let refused = {
        use std::io::{Read, Write};
        let mut socket = std::net::TcpStream::connect(nats.urls().trim_start_matches("nats://"))?;
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut info = [0u8; 4096];
        let _ = socket.read(&mut info)?;
        socket.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n")?;
        let mut answer = [0u8; 512];
        let n = socket.read(&mut answer)?;
        String::from_utf8_lossy(&answer[..n]).contains("Authorization Violation")
    };
    ensure!(refused, "a connection without credentials must be refused");
    Ok(())
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
        env: vec![("VIGIL_API_TOKEN".into(), token.into())],
        ..role_options("ingest", &nats.urls(), &config, None)
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
