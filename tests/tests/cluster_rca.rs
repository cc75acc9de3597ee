//! The cluster's correlator (`--role rca`) with every part real: three `nats-server`s, an
//! ingest node, a worker, two correlators and a webhook receiver. Between two faults the
//! test kill -9s the active correlator: its standby takes over without paging the first
//! incident again, and pages the second once; a correlator started afterwards on an empty
//! data dir starts from the snapshot of the replicated state.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use vigil_e2e::nats::{NatsCluster, alerting_to, correlator, start_role};
use vigil_e2e::otlp::{kv, string_value};
use vigil_e2e::{Collector, eventually, get_json, post_protobuf};

const PARTITIONS: u64 = 8;
const LEASE_SECS: u64 = 4;
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
             rca_snapshot_records = 4\n{}",
            alerting_to(&hook.url("/hook"), "incident")
        ),
    )?;
    let ingest = start_role("ingest", &urls, &config, None)?;
    let worker = start_role("worker", &urls, &config, None)?;
    let mut rcas = [
        Some(start_role("rca", &urls, &config, Some(&dir.path().join("rca1")))?),
        Some(start_role("rca", &urls, &config, Some(&dir.path().join("rca2")))?),
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
        let n = hook.firing("incident", &a_id).len();
        async move { Ok((n > 0).then_some(())) }
    })
    .await?;
    // The correlator investigates the incident's first minutes over the workers' indexes
    // (it has none of its own) and ranks it by that.
    let url = ingest.api_url(&format!("/api/v1/incidents/{a_id}"));
    let investigated = eventually(Duration::from_secs(60), "the incident's investigation", || {
        let (client, url) = (&client, &url);
        async move {
            let (_, body) = get_json(client, url).await?;
            Ok(body["investigation"].is_string().then_some(body))
        }
    })
    .await?;
    assert_eq!(investigated["candidates"][0]["service"], "checkout", "{investigated}");
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
        let n = hook.firing("incident", &b_id).len();
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
    assert_eq!(hook.firing("incident", &a_id).len(), 1, "the first incident paged once");
    assert_eq!(
        hook.firing("incident", &b_id).len(),
        1,
        "the second incident paged once"
    );
    assert!(
        takeover <= Duration::from_secs(2 * LEASE_SECS + 4),
        "takeover took {takeover:?} with {LEASE_SECS} s leases"
    );

    // The log is kept short by snapshots: a correlator started now, on an empty data dir,
    // starts from the snapshot and the log after it, and holds both incidents and the
    // acknowledgement.
    let leader = rcas[standby].as_ref().context("new leader")?;
    ensure!(
        leader.metric(&client, "vigil_rca_snapshots_total").await? >= 1.0,
        "the leader wrote no snapshot"
    );
    let late = start_role("rca", &urls, &config, Some(&dir.path().join("rca3")))?;
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
    assert_eq!(late.metric(&client, "vigil_rca_snapshot_installs_total").await?, 1.0);
    Ok(())
}

/// A change larger than one NATS message (a batch of hundreds of alerts through the
/// Alertmanager API, on servers taking 64 KiB a message) is written whole to the object
/// store and named by a small log record: the leader goes on, and a standby applies it.
/// (Refused before: alerting on the leader failed until such a change shrank.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_too_large_for_one_message_reaches_the_standby() -> Result<()> {
    vigil_e2e::init_tls();
    let nats = NatsCluster::start_with_max_payload(64 * 1024)?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("cluster.toml");
    std::fs::write(&config, format!("[cluster]\nreplicas = 1\nlease_secs = {LEASE_SECS}\n"))?;
    let urls = nats.urls();
    let ingest = start_role("ingest", &urls, &config, None)?;
    let rcas = [
        start_role("rca", &urls, &config, Some(&dir.path().join("rca-a")))?,
        start_role("rca", &urls, &config, Some(&dir.path().join("rca-b")))?,
    ];
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let leader = eventually(Duration::from_secs(60), "a correlator to lead", || {
        let (client, ingest) = (&client, &ingest);
        async move { correlator(client, ingest).await }
    })
    .await?;
    let standby = rcas
        .iter()
        .find(|r| !leader.ends_with(&r.api.to_string()))
        .context("the standby")?;

    let alerts: Vec<serde_json::Value> = (0..300)
        .map(|i| {
            serde_json::json!({
                "labels": {"alertname": "DiskFull", "instance": format!("node-{i}"), "severity": "warning"},
                "annotations": {"description": format!("{} on node-{i}", "the disk is almost full; ".repeat(20))},
            })
        })
        .collect();
    let body = serde_json::to_vec(&alerts)?;
    assert!(
        body.len() > 128 * 1024,
        "the batch must not fit one message: {} bytes",
        body.len()
    );
    let response = client
        .post(ingest.api_url("/api/v2/alerts"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let answer = response.text().await?;
    ensure!(status == 200, "posting the batch answered {status}: {answer}");
    let count = |c: &Collector| {
        let (client, url) = (client.clone(), c.api_url("/api/v1/alerts?limit=1000"));
        async move {
            let (_, body) = get_json(&client, &url).await?;
            Ok::<usize, anyhow::Error>(body["alerts"].as_array().map_or(0, |a| {
                a.iter().filter(|x| x["labels"]["alertname"] == "DiskFull").count()
            }))
        }
    };
    eventually(Duration::from_secs(60), "the standby to hold the whole batch", || {
        let count = &count;
        async move { Ok((count(standby).await? == 300).then_some(())) }
    })
    .await?;
    // The leader still leads and still takes changes.
    assert_eq!(correlator(&client, &ingest).await?.as_deref(), Some(leader.as_str()));
    let silence = serde_json::json!({
        "matchers": [{"name": "alertname", "value": "DiskFull", "isRegex": false}],
        "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
        "createdBy": "test", "comment": "after the large change",
    });
    let response = client
        .post(ingest.api_url("/api/v2/silences"))
        .json(&silence)
        .send()
        .await?;
    let status = response.status().as_u16();
    ensure!(
        status == 200,
        "a change after the large one answered {status}: {}",
        response.text().await?
    );
    Ok(())
}
