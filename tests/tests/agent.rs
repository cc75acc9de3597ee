//! The real agent binary tailing real files and shipping to the real collector:
//! exactly-once delivery through rotation, kill -9, and collector outages.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use prost::Message;
use vigil_e2e::agent::{Agent, config};
use vigil_e2e::{Collector, Options, eventually, search_logs};

const WAIT: Duration = Duration::from_secs(90);

fn client() -> reqwest::Client {
    vigil_e2e::init_tls();
    reqwest::Client::new()
}

/// Every stored body containing `marker`, with how often each was stored.
async fn stored(client: &reqwest::Client, c: &Collector, marker: &str) -> Result<HashMap<String, usize>> {
    let (total, hits) = search_logs(client, c, &[("q", marker), ("limit", "10000")]).await?;
    ensure!(total as usize == hits.len(), "more hits than one page: {total}");
    let mut counts = HashMap::new();
    for h in hits {
        *counts
            .entry(h["body"].as_str().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    Ok(counts)
}

/// Waits until `expected` bodies are stored, then checks each exactly once.
async fn assert_exactly_once(client: &reqwest::Client, c: &Collector, marker: &str, expected: &[String]) -> Result<()> {
    let waited = eventually(WAIT, &format!("{} records with {marker}", expected.len()), || async {
        let counts = stored(client, c, marker).await?;
        let n: usize = counts.values().sum();
        Ok((n >= expected.len()).then_some(counts))
    })
    .await;
    let counts = match waited {
        Ok(c) => c,
        Err(e) => {
            let counts = stored(client, c, marker).await?;
            let missing: Vec<_> = expected.iter().filter(|b| !counts.contains_key(*b)).take(10).collect();
            bail!("{e}: {} stored, missing e.g. {missing:?}", counts.len());
        }
    };
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).map(|(b, _)| b.clone()).collect();
    ensure!(
        duplicated.is_empty(),
        "stored more than once: {:?}",
        &duplicated[..duplicated.len().min(5)]
    );
    let missing: Vec<_> = expected.iter().filter(|b| !counts.contains_key(*b)).collect();
    ensure!(
        missing.is_empty(),
        "never stored: {:?}",
        &missing[..missing.len().min(5)]
    );
    ensure!(
        counts.len() == expected.len(),
        "unexpected extra records: {} vs {}",
        counts.len(),
        expected.len()
    );
    Ok(())
}

fn append(path: &Path, lines: &[String]) -> Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    let mut text = String::new();
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn free_port() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

fn source(dir: &Path, glob: &str, extra: &str) -> String {
    format!(
        "[[logs]]\ninclude = [{:?}]\nstart_at = \"beginning\"\n{extra}\n",
        dir.join(glob).display().to_string()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tailed_lines_arrive_exactly_once_with_their_attributes() -> Result<()> {
    let collector = Collector::start()?;
    let tmp = tempfile::tempdir()?;
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let marker = "mkattr";
    // Lines already there before the agent starts, on several files.
    let mut expected = Vec::new();
    for f in 0..3 {
        let lines: Vec<String> = (0..150).map(|i| format!("{marker} file{f} early{i:05}")).collect();
        append(&logs.join(format!("app{f}.log")), &lines)?;
        expected.extend(lines);
    }
    let extra = "service_name = \"shop\"\n[logs.attributes]\nteam = \"payments\"\n";
    // Shipping over gRPC here (the other tests use OTLP/HTTP), with host metrics on.
    let cfg = config(
        &tmp.path().join("state"),
        &collector.grpc_url(),
        &source(&logs, "*.log", extra),
    )
    .replace("protocol = \"http\"", "protocol = \"grpc\"")
    .replace(
        "[host_metrics]\nenabled = false",
        "[host_metrics]\nenabled = true\ninterval_secs = 1",
    );
    let agent = Agent::start(tmp.path(), &cfg)?;
    // Lines appended while it runs, and a file created while it runs.
    for f in 0..4 {
        let lines: Vec<String> = (0..150).map(|i| format!("{marker} file{f} late{i:05}")).collect();
        append(&logs.join(format!("app{f}.log")), &lines)?;
        expected.extend(lines);
    }
    let json = format!(r#"{{"level":"error","msg":"{marker} structured failure","order":42}}"#);
    append(&logs.join("app0.log"), std::slice::from_ref(&json))?;
    expected.push(format!("{marker} structured failure"));
    let client = client();
    assert_exactly_once(&client, &collector, marker, &expected).await?;

    let (_, hits) = search_logs(&client, &collector, &[("q", "structured"), ("limit", "5")]).await?;
    let hit = &hits[0];
    assert_eq!(hit["service"], "shop", "{hit}");
    assert_eq!(hit["attributes"]["order"], 42, "{hit}");
    assert_eq!(hit["attributes"]["log.file.name"], "app0.log", "{hit}");
    assert_eq!(hit["resource"]["team"], "payments", "{hit}");
    assert!(
        hit["resource"]["host.name"].as_str().is_some_and(|h| !h.is_empty()),
        "{hit}"
    );
    assert!(
        format!("{hit}").to_lowercase().contains("error"),
        "severity kept: {hit}"
    );
    assert!(agent.metric(&client, "vigil_agent_lines_read").await? >= expected.len() as f64);
    // Host metrics arrive under their hostmetrics names, with the agent's own beside them.
    for name in ["system.memory.usage", "vigil.agent.lines_read"] {
        let url = reqwest::Url::parse_with_params(&collector.api_url("/api/v1/metrics/query"), [("name", name)])?;
        eventually(WAIT, name, || async {
            let (status, body) = vigil_e2e::get_json(&client, url.as_str()).await?;
            let series = body["result"]["series"].as_array().map_or(0, Vec::len);
            Ok((status == 200 && series > 0).then_some(()))
        })
        .await?;
    }
    assert!(agent.terminate()?, "clean exit on SIGTERM");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_by_rename_and_by_copytruncate_loses_and_repeats_nothing() -> Result<()> {
    let collector = Collector::start()?;
    let tmp = tempfile::tempdir()?;
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let path = logs.join("app.log");
    File::create(&path)?;
    let agent = Agent::start(
        tmp.path(),
        &config(
            &tmp.path().join("state"),
            &collector.http_url(""),
            &source(&logs, "app.log", ""),
        ),
    )?;
    let marker = "mkrot";
    let total = 3000;
    let expected: Vec<String> = (0..total).map(|i| format!("{marker} line{i:06}")).collect();
    let client = client();
    // A writer appending continuously; rotations happen between its writes, as
    // logrotate's do, with the writer keeping its handle across the rename.
    let mut f = OpenOptions::new().append(true).open(&path)?;
    for (i, line) in expected.iter().enumerate() {
        writeln!(f, "{line}")?;
        if i == 1000 {
            // Rename rotation; the application writes a few more lines to the old
            // file before it reopens.
            std::fs::rename(&path, logs.join("app.log.1"))?;
            File::create(&path)?;
        }
        if i == 1010 {
            f = OpenOptions::new().append(true).open(&path)?;
            // logrotate runs hours apart, the agent looks twice a second: let it find
            // the new file before the next rotation.
            eventually(WAIT, "the agent to open the new file", || async {
                Ok((agent.metric(&client, "vigil_agent_files_tailed").await? >= 2.0).then_some(()))
            })
            .await?;
        }
        if i == 2000 {
            // copytruncate: copy, then truncate the file the writer still holds.
            std::fs::copy(&path, logs.join("app.log.2"))?;
            OpenOptions::new().write(true).open(&path)?.set_len(0)?;
        }
        if i % 20 == 0 {
            // Pace the writes so the agent reads between them (load shape, not sync).
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    assert_exactly_once(&client, &collector, marker, &expected)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nagent log:\n{}", agent.logs()))?;
    let log = agent.logs();
    assert!(
        log.contains("rotated away") && log.contains("copytruncate"),
        "both rotations seen:\n{log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_delivers_every_line_exactly_once() -> Result<()> {
    let collector = Collector::start()?;
    let tmp = tempfile::tempdir()?;
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let marker = "mkkill";
    let cfg = config(
        &tmp.path().join("state"),
        &collector.http_url(""),
        &source(&logs, "*.log", ""),
    );
    let client = client();
    let mut expected = Vec::new();
    let agent = Agent::start(tmp.path(), &cfg)?;
    for f in 0..2 {
        let lines: Vec<String> = (0..4_000).map(|i| format!("{marker} f{f} first{i:06}")).collect();
        append(&logs.join(format!("s{f}.log")), &lines)?;
        expected.extend(lines);
    }
    // Kill it while it is reading and shipping.
    eventually(WAIT, "the agent to be mid-stream", || async {
        Ok((agent.metric(&client, "vigil_agent_lines_read").await? >= 2_000.0).then_some(()))
    })
    .await?;
    agent.kill()?;
    for f in 0..2 {
        let lines: Vec<String> = (0..500).map(|i| format!("{marker} f{f} while_down{i:06}")).collect();
        append(&logs.join(format!("s{f}.log")), &lines)?;
        expected.extend(lines);
    }
    let agent = Agent::start(tmp.path(), &cfg)?;
    assert_exactly_once(&client, &collector, marker, &expected)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nagent log:\n{}", agent.logs()))?;
    Ok(())
}

/// An agent with a 16 KiB buffer under `policy`, shipping to a port where no collector
/// listens yet, with 2,000 lines of `marker` written for it.
struct Outage {
    agent: Agent,
    collector_http: SocketAddr,
    lines: Vec<String>,
    _tmp: tempfile::TempDir,
}

fn outage(marker: &str, policy: &str) -> Result<Outage> {
    let collector_http = free_port()?;
    let tmp = tempfile::tempdir()?;
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let extra = format!(
        "{}\n[buffer]\nmax_bytes = 16384\nwhen_full = {policy:?}\n",
        source(&logs, "*.log", "")
    );
    let cfg = config(&tmp.path().join("state"), &format!("http://{collector_http}"), &extra)
        .replace("max_records = 500", "max_records = 20\nmax_bytes = 2048");
    let agent = Agent::start(tmp.path(), &cfg)?;
    let lines: Vec<String> = (0..2_000)
        .map(|i| format!("{marker} n{i:06} padding-padding-padding"))
        .collect();
    append(&logs.join("a.log"), &lines)?;
    Ok(Outage {
        agent,
        collector_http,
        lines,
        _tmp: tmp,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_outage_with_a_tiny_blocking_buffer_loses_nothing() -> Result<()> {
    let marker = "mkout";
    let Outage {
        agent,
        collector_http,
        lines: expected,
        _tmp,
    } = outage(marker, "block")?;
    let client = client();
    // The collector is away: the agent retries and its buffer fills up to the cap.
    eventually(WAIT, "retries and a full buffer", || async {
        let retries = agent.metric(&client, "vigil_agent_send_retries").await?;
        let bytes = agent.metric(&client, "vigil_agent_buffer_bytes").await?;
        Ok((retries > 0.0 && bytes > 8192.0).then_some(()))
    })
    .await?;
    let buffered = agent.metric(&client, "vigil_agent_buffer_bytes").await?;
    assert!(buffered <= 16384.0, "the buffer stays within its cap: {buffered}");
    let collector = Collector::start_with(Options {
        http_addr: Some(collector_http),
        ..Options::default()
    })?;
    assert_exactly_once(&client, &collector, marker, &expected)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nagent log:\n{}", agent.logs()))?;
    assert_eq!(agent.metric(&client, "vigil_agent_buffer_dropped_records").await?, 0.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_drop_oldest_a_full_buffer_keeps_the_newest_and_counts_the_loss() -> Result<()> {
    let marker = "mkdrop";
    let Outage {
        agent,
        collector_http,
        lines,
        _tmp,
    } = outage(marker, "drop_oldest")?;
    let client = client();
    eventually(WAIT, "everything read, with drops", || async {
        let read = agent.metric(&client, "vigil_agent_lines_read").await?;
        let dropped = agent.metric(&client, "vigil_agent_buffer_dropped_records").await?;
        Ok((read >= 2_000.0 && dropped > 0.0).then_some(()))
    })
    .await?;
    let collector = Collector::start_with(Options {
        http_addr: Some(collector_http),
        ..Options::default()
    })?;
    let newest = lines.last().cloned().unwrap_or_default();
    let counts = eventually(WAIT, "the newest line", || async {
        let counts = stored(&client, &collector, marker).await?;
        Ok(counts.contains_key(&newest).then_some(counts))
    })
    .await?;
    assert!(counts.values().all(|n| *n == 1), "no duplicates");
    // Every batch (at most 20 lines) lost is counted; the batch in flight when the
    // outage began is kept, so the loss is a gap between it and the newest.
    let dropped = agent.metric(&client, "vigil_agent_buffer_dropped_records").await?;
    let missing = lines.len() - counts.len();
    assert!(missing > 0, "some were dropped");
    assert!(
        missing as f64 <= dropped * 20.0,
        "{missing} lines missing but only {dropped} batches counted"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_reported_and_the_rest_keeps_flowing() -> Result<()> {
    let collector = Collector::start()?;
    let tmp = tempfile::tempdir()?;
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let marker = "mkbad";
    std::fs::write(logs.join("core.log"), b"\x7fELF\x02\x01\x01\x00\x00\x00binary junk\n")?;
    let mut huge = format!("{marker} huge ").into_bytes();
    huge.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    huge.push(b'\n');
    std::fs::write(logs.join("huge.log"), &huge)?;
    let expected: Vec<String> = (0..100).map(|i| format!("{marker} fine{i:04}")).collect();
    append(&logs.join("fine.log"), &expected)?;
    let cfg = config(
        &tmp.path().join("state"),
        &collector.http_url(""),
        &source(&logs, "*.log", "max_line_bytes = 4096"),
    );
    let agent = Agent::start(tmp.path(), &cfg)?;
    let client = client();
    let mut with_huge = expected.clone();
    let cut = String::from_utf8_lossy(&huge[..4096]).into_owned();
    with_huge.push(cut);
    assert_exactly_once(&client, &collector, marker, &with_huge).await?;
    let (_, hits) = search_logs(&client, &collector, &[("q", "huge"), ("limit", "5")]).await?;
    assert_eq!(hits[0]["attributes"]["log.record.truncated"], true, "{}", hits[0]);
    assert_eq!(agent.metric(&client, "vigil_agent_files_binary").await?, 1.0);
    assert!(agent.logs().contains("binary"), "the skip is logged");

    // A config with a typo: a clear message naming the key, non-zero exit.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, cfg.replace("max_line_bytes", "max_line_byte"))?;
    let out = std::process::Command::new(vigil_e2e::agent_binary())
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("max_line_byte"), "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_receiver_forwards_application_otlp_with_host_attributes() -> Result<()> {
    let collector = Collector::start()?;
    let tmp = tempfile::tempdir()?;
    let cfg = config(&tmp.path().join("state"), &collector.http_url(""), "").replace(
        "[receiver]\nenabled = false",
        "[receiver]\nenabled = true\ntoken = \"receiver-token-0123456789\"",
    );
    let agent = Agent::start(tmp.path(), &cfg)?;
    let bearer = "Bearer receiver-token-0123456789";
    let Some(http) = agent.otlp_http else {
        bail!("no receiver address")
    };
    let record = vigil_e2e::otlp::log_record(vigil_e2e::now_ns(), "mkrecv forwarded through the agent", &[]);
    let request = vigil_e2e::otlp::logs_request("checkout", vec![record]);
    let client = client();
    // Without the token: refused.
    let response = client
        .post(format!("http://{http}/v1/logs"))
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await?;
    assert_eq!(response.status(), 401);
    let response = client
        .post(format!("http://{http}/v1/logs"))
        .header("content-type", "application/x-protobuf")
        .header("authorization", bearer)
        .body(request.encode_to_vec())
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    // Garbage is refused with a reason, not forwarded.
    let response = client
        .post(format!("http://{http}/v1/logs"))
        .header("content-type", "application/x-protobuf")
        .header("authorization", bearer)
        .body(vec![0xff, 0xff, 0xff])
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    assert!(response.text().await?.contains("protobuf"));
    let hit = eventually(WAIT, "the forwarded record", || async {
        let (_, hits) = search_logs(&client, &collector, &[("q", "mkrecv"), ("limit", "5")]).await?;
        Ok(hits.into_iter().next())
    })
    .await?;
    assert_eq!(hit["service"], "checkout", "{hit}");
    assert!(
        hit["resource"]["host.name"].as_str().is_some_and(|h| !h.is_empty()),
        "{hit}"
    );

    // The same over the local gRPC receiver.
    let Some(grpc) = agent.otlp_grpc else {
        bail!("no gRPC receiver address")
    };
    let mut logs_client =
        opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient::connect(format!(
            "http://{grpc}"
        ))
        .await?;
    let record = vigil_e2e::otlp::log_record(vigil_e2e::now_ns(), "mkrecvgrpc forwarded over grpc", &[]);
    let request = vigil_e2e::otlp::logs_request("cart", vec![record]);
    let refused = logs_client.export(request.clone()).await.expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let mut authed = tonic::Request::new(request);
    authed.metadata_mut().insert("authorization", bearer.parse()?);
    logs_client.export(authed).await?;
    let hit = eventually(WAIT, "the gRPC-forwarded record", || async {
        let (_, hits) = search_logs(&client, &collector, &[("q", "mkrecvgrpc"), ("limit", "5")]).await?;
        Ok(hits.into_iter().next())
    })
    .await?;
    assert_eq!(hit["service"], "cart", "{hit}");
    Ok(())
}

#[test]
fn the_installed_systemd_unit_passes_systemd_analyze_verify() -> Result<()> {
    let root = tempfile::tempdir()?;
    let out = std::process::Command::new(vigil_e2e::agent_binary())
        .args(["install", "--collector", "http://10.0.0.5:4317", "--root"])
        .arg(root.path())
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let unit = root.path().join("etc/systemd/system/vigil-agent.service");
    let config = root.path().join("etc/vigil/agent.toml");
    // The binary is placed where the unit runs it from (not referred to where it was built),
    // and it runs; the config, which may hold the token, is not world-readable.
    let placed = root.path().join("usr/bin/vigil-agent");
    let text = std::fs::read_to_string(&unit)?;
    assert!(
        text.lines()
            .any(|l| l == "ExecStart=/usr/bin/vigil-agent run --config /etc/vigil/agent.toml"),
        "{text}"
    );
    let check = std::process::Command::new(&placed)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()?;
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&config)?.permissions().mode() & 0o777, 0o640);
    // systemd checks the unit as written, with ExecStart at the placed binary (this machine
    // has no /usr/bin/vigil-agent).
    let here = root.path().join("check/vigil-agent.service");
    std::fs::create_dir_all(here.parent().unwrap_or(root.path()))?;
    std::fs::write(
        &here,
        text.replace(
            "ExecStart=/usr/bin/vigil-agent",
            &format!("ExecStart={}", placed.display()),
        ),
    )?;
    let verify = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&here)
        .output()
        .map_err(|e| anyhow::anyhow!("systemd-analyze is needed (.ci/run installs systemd): {e}"))?;
    let stderr = String::from_utf8_lossy(&verify.stderr);
    // Lines about other units on this machine are not ours to judge.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("vigil-agent")).collect();
    assert!(
        verify.status.success() && ours.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
    // And its sandboxing, as systemd rates it (3.7 before SystemCallFilter and friends).
    let security = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()?;
    let report = String::from_utf8_lossy(&security.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for vigil-agent.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no exposure level in: {report}"))?;
    assert!(exposure <= 2.0, "exposure {exposure}: {report}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ships_over_tls_with_a_token_on_grpc_and_http() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (cert, key) = vigil_e2e::make_cert(tmp.path())?;
    let collector_config = tmp.path().join("collector.toml");
    std::fs::write(
        &collector_config,
        format!("[tls]\ncert_file = {:?}\nkey_file = {:?}\n", cert, key),
    )?;
    let collector = Collector::start_with(Options {
        args: vec!["--config".into(), collector_config.display().to_string()],
        env: vec![("VIGIL_INGEST_TOKEN".into(), "agent-secret-token-0123".into())],
        ..Options::default()
    })?;
    let tls_client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&cert)?)?)
        .build()?;
    // An agent in `dir` tailing `dir/logs/*.log` to `addr` over TLS, trusting the test CA.
    let tls_config = |dir: &std::path::Path, addr: std::net::SocketAddr, protocol: &str, token: &str| {
        config(
            &dir.join("state"),
            &format!("https://127.0.0.1:{}", addr.port()),
            &source(&dir.join("logs"), "*.log", ""),
        )
        .replace(
            "protocol = \"http\"",
            &format!(
                "protocol = {protocol:?}\nca_file = {:?}\ntoken = {token:?}",
                cert.display().to_string()
            ),
        )
    };
    // A wrong token over gRPC: refused with UNAUTHENTICATED, kept and retried, not dropped.
    {
        let dir = tmp.path().join("wrong");
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let cfg = tls_config(&dir, collector.grpc, "grpc", "wrong-token-0123456789");
        let agent = Agent::start(&dir, &cfg)?;
        append(&logs.join("a.log"), &["mkwrongtoken never stored".to_string()])?;
        let c = client();
        eventually(WAIT, "retries after UNAUTHENTICATED", || async {
            let retries = agent.metric(&c, "vigil_agent_send_retries").await?;
            Ok((retries >= 2.0 && agent.logs().contains("Unauthenticated")).then_some(()))
        })
        .await?;
        assert_eq!(
            agent.metric(&c, "vigil_agent_batches_rejected").await?,
            0.0,
            "kept, not dropped"
        );
        assert_eq!(
            agent.metric(&c, "vigil_agent_buffer_records").await?,
            1.0,
            "still buffered"
        );
    }
    for (protocol, addr) in [("grpc", collector.grpc), ("http", collector.http)] {
        let dir = tmp.path().join(protocol);
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let marker = format!("mktls{protocol}");
        let cfg = tls_config(&dir, addr, protocol, "agent-secret-token-0123");
        let agent = Agent::start(&dir, &cfg)?;
        let expected: Vec<String> = (0..50).map(|i| format!("{marker} n{i:03}")).collect();
        append(&logs.join("a.log"), &expected)?;
        // The API is under TLS too: search it with a client trusting the same CA.
        let url = reqwest::Url::parse_with_params(
            &format!("https://127.0.0.1:{}/api/v1/logs/search", collector.api.port()),
            [("q", marker.as_str()), ("limit", "1000")],
        )?;
        let hits = eventually(WAIT, &marker, || async {
            let body: serde_json::Value = tls_client.get(url.clone()).send().await?.json().await?;
            let n = body["total"].as_u64().unwrap_or(0);
            Ok((n >= expected.len() as u64).then_some(body))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{protocol}: {e}\nagent log:\n{}", agent.logs()))?;
        let mut bodies: Vec<String> = hits["hits"]
            .as_array()
            .map(|h| {
                h.iter()
                    .map(|x| x["body"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        bodies.sort();
        assert_eq!(bodies, expected, "{protocol}: exactly once");
        assert!(
            !agent.logs().contains("agent-secret-token-0123"),
            "the token is never logged"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_sources_and_keeps_the_checkpoints() -> Result<()> {
    let collector = Collector::start()?;
    let tmp = tempfile::tempdir()?;
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a)?;
    std::fs::create_dir_all(&b)?;
    let state = tmp.path().join("state");
    let agent = Agent::start(
        tmp.path(),
        &config(&state, &collector.http_url(""), &source(&a, "*.log", "")),
    )?;
    let first: Vec<String> = (0..50).map(|i| format!("mkhup a{i:03}")).collect();
    append(&a.join("x.log"), &first)?;
    let client = client();
    assert_exactly_once(&client, &collector, "mkhup", &first).await?;
    // Add a second source and reload.
    let both = format!("{}{}", source(&a, "*.log", ""), source(&b, "*.log", ""));
    std::fs::write(
        tmp.path().join("agent.toml"),
        config(&state, &collector.http_url(""), &both),
    )?;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &agent.pid().to_string()])
        .status()?;
    assert!(status.success());
    let mut expected = first.clone();
    let more_a: Vec<String> = (0..50).map(|i| format!("mkhup a_after{i:03}")).collect();
    let new_b: Vec<String> = (0..50).map(|i| format!("mkhup b{i:03}")).collect();
    append(&a.join("x.log"), &more_a)?;
    append(&b.join("y.log"), &new_b)?;
    expected.extend(more_a);
    expected.extend(new_b);
    // Nothing of a.log read twice across the reload, b.log picked up.
    assert_exactly_once(&client, &collector, "mkhup", &expected)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nagent log:\n{}", agent.logs()))?;
    assert!(agent.logs().contains("reloading"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_honour_retry_after_and_keep_the_batch_id() -> Result<()> {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    let sink = vigil_e2e::receiver::Receiver::start().await?;
    sink.fail_next_with_retry_after(2, 1);
    let tmp = tempfile::tempdir()?;
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let cfg = config(&tmp.path().join("state"), &sink.url(""), &source(&logs, "*.log", ""))
        .replace("max_backoff_secs = 1", "max_backoff_secs = 1\ngzip = false");
    let agent = Agent::start(tmp.path(), &cfg)?;
    let lines: Vec<String> = (0..10).map(|i| format!("retry me {i}")).collect();
    append(&logs.join("a.log"), &lines)?;
    let captured = eventually(WAIT, "a delivery after two 503s", || async {
        let c = sink.captured();
        Ok(c.iter().any(|r| r.status == 200).then_some(c))
    })
    .await?;
    let attempts: Vec<_> = captured.iter().filter(|c| c.path == "/v1/logs").collect();
    assert_eq!(attempts.len(), 3, "two refusals, then the delivery");
    let ids: Vec<_> = attempts.iter().map(|c| c.headers["x-vigil-batch-id"].clone()).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "a retry carries the same idempotency key: {ids:?}"
    );
    for pair in attempts.windows(2) {
        let gap = pair[1].received_at - pair[0].received_at;
        // Backoff alone is 50-100 ms here; the server asked for 1 s.
        assert!(
            gap >= Duration::from_millis(950),
            "retried after {gap:?} despite retry-after: 1"
        );
    }
    let request = ExportLogsServiceRequest::decode(&attempts[2].body[..])?;
    let bodies: Vec<String> = request.resource_logs[0].scope_logs[0]
        .log_records
        .iter()
        .filter_map(|r| match r.body.as_ref()?.value.as_ref()? {
            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(bodies, lines);
    assert!(agent.metric(&client(), "vigil_agent_send_retries").await? >= 2.0);
    Ok(())
}

/// `protocol = "http"` pointed at the collector's gRPC port: the gRPC server answers HTTP/1.1
/// with 200 and `grpc-status`, which the agent used to take as delivered, dropping every line
/// without a word. Now nothing leaves the buffer, the agent says why, and pointing it at the
/// right port delivers every line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_pointed_at_a_grpc_port_keeps_the_lines_and_says_why() -> Result<()> {
    let collector = Collector::start()?;
    let tmp = tempfile::tempdir()?;
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let marker = "mkwrongport";
    let lines: Vec<String> = (0..50).map(|i| format!("{marker} line{i:03}")).collect();
    append(&logs.join("app.log"), &lines)?;
    let state = tmp.path().join("state");
    let wrong = config(&state, &collector.grpc_url(), &source(&logs, "*.log", ""));
    let agent = Agent::start(tmp.path(), &wrong)?;
    let client = client();
    eventually(WAIT, "the agent saying what is wrong", || {
        let logs = agent.logs();
        async move { Ok(logs.contains("looks like a gRPC endpoint").then_some(())) }
    })
    .await?;
    assert_eq!(agent.metric(&client, "vigil_agent_batches_sent").await?, 0.0);
    assert!(agent.metric(&client, "vigil_agent_send_retries").await? >= 1.0);
    assert!(agent.terminate()?, "clean exit on SIGTERM");
    // The same agent state, the right port: every line arrives, once.
    let right = config(&state, &collector.http_url(""), &source(&logs, "*.log", ""));
    let agent = Agent::start(tmp.path(), &right)?;
    assert_exactly_once(&client, &collector, marker, &lines).await?;
    assert!(agent.terminate()?, "clean exit on SIGTERM");
    Ok(())
}

/// A source whose directory is missing and a collector port nobody listens on: each is a
/// warning that names the path or the cause (they used to log nothing, and "transport
/// error"), and the missing source is counted on /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_sources_and_refused_connections_say_what_is_wrong() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let missing = tmp.path().join("no-such-dir");
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    // A real source too, so there is something to ship.
    let logs_dir = tmp.path().join("logs");
    std::fs::create_dir_all(&logs_dir)?;
    append(&logs_dir.join("a.log"), &["nobody will hear this".to_string()])?;
    let cfg = config(
        &tmp.path().join("state"),
        &format!("http://127.0.0.1:{port}"),
        &format!("{}{}", source(&missing, "*.log", ""), source(&logs_dir, "*.log", "")),
    );
    let agent = Agent::start(tmp.path(), &cfg)?;
    let client = client();
    let logs = eventually(WAIT, "both warnings", || {
        let logs = agent.logs();
        async move { Ok((logs.contains("does not exist") && logs.contains("Connection refused")).then_some(logs)) }
    })
    .await?;
    assert!(logs.contains(&missing.display().to_string()), "{logs}");
    assert_eq!(agent.metric(&client, "vigil_agent_sources_empty").await?, 1.0);
    assert_eq!(
        logs.matches("a log source matches no file").count(),
        1,
        "warned once, not at every scan: {logs}"
    );
    assert!(agent.terminate()?, "clean exit on SIGTERM");
    Ok(())
}

/// Logrotate's `copytruncate` while the agent is stopped, with more than the fingerprinted
/// first KiB written to the file again before it restarts: the lines written after the stop
/// are only in the copy. They used to be lost (the file looked new, the copy was never read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_while_stopped_loses_nothing() -> Result<()> {
    let collector = Collector::start()?;
    let tmp = tempfile::tempdir()?;
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let marker = "mkcopytrunc";
    let line =
        |phase: &str, i: usize| format!("{marker} {phase} {i:05} padding to make the line longer than a few bytes");
    let file = logs.join("app.log");
    let cfg = config(
        &tmp.path().join("state"),
        &collector.http_url(""),
        &source(&logs, "*.log", ""),
    );
    let mut expected: Vec<String> = (0..1000).map(|i| line("before", i)).collect();
    append(&file, &expected)?;
    let agent = Agent::start(tmp.path(), &cfg)?;
    let client = client();
    assert_exactly_once(&client, &collector, marker, &expected).await?;
    assert!(agent.terminate()?, "clean exit on SIGTERM");
    // While stopped: 500 more lines, then copy + truncate, then 100 lines (over 1 KiB).
    let stopped: Vec<String> = (0..500).map(|i| line("stopped", i)).collect();
    append(&file, &stopped)?;
    std::fs::copy(&file, logs.join("app.log.1"))?;
    std::fs::OpenOptions::new().write(true).truncate(true).open(&file)?;
    let after: Vec<String> = (0..100).map(|i| line("after", i)).collect();
    append(&file, &after)?;
    assert!(std::fs::metadata(&file)?.len() > 1024);
    expected.extend(stopped);
    expected.extend(after);
    let agent = Agent::start(tmp.path(), &cfg)?;
    assert_exactly_once(&client, &collector, marker, &expected).await?;
    assert!(agent.terminate()?, "clean exit on SIGTERM");
    Ok(())
}

/// A missing config file is named once, with its cause once (it read "No such file or
/// directory" twice).
#[test]
fn a_missing_config_is_reported_once() -> Result<()> {
    for verb in ["run", "check-config"] {
        let out = std::process::Command::new(vigil_e2e::agent_binary())
            .args([verb, "--config", "/nonexistent/vigil-agent.toml"])
            .output()?;
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("/nonexistent/vigil-agent.toml"), "{verb}: {stderr}");
        assert_eq!(
            stderr.matches("No such file or directory").count(),
            1,
            "{verb}: {stderr}"
        );
    }
    Ok(())
}

/// Debian's logrotate with `copytruncate`, three times, while a writer keeps writing: every
/// line that is on disk afterwards (the live file and the copies) is stored exactly once.
/// (Lines written between logrotate's copy and its truncate are in neither file: that race
/// is logrotate's, and the count below says how many it took.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logrotate_copytruncate_under_a_live_writer_is_counted_exactly() -> Result<()> {
    let collector = Collector::start()?;
    let tmp = tempfile::tempdir()?;
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let file = logs.join("app.log");
    std::fs::write(&file, "")?;
    let conf = tmp.path().join("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{} {{\n    copytruncate\n    rotate 10\n    missingok\n    nocompress\n}}\n",
            file.display()
        ),
    )?;
    let cfg = config(
        &tmp.path().join("state"),
        &collector.http_url(""),
        &source(&logs, "*.log", ""),
    );
    let agent = Agent::start(tmp.path(), &cfg)?;
    let marker = "mklogrotate";
    const LINES: usize = 6000;
    // About 2,000 lines a second for three seconds, through one append-mode handle (as a
    // logging library keeps it).
    let writer = {
        let file = file.clone();
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut f = OpenOptions::new().append(true).open(&file)?;
            for i in 0..LINES {
                writeln!(f, "{marker} line {i:06}")?;
                if i % 100 == 99 {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Ok(())
        })
    };
    let state = tmp.path().join("logrotate.state");
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        // Debian puts it in /usr/sbin, which is not on every PATH.
        let logrotate = if Path::new("/usr/sbin/logrotate").exists() {
            "/usr/sbin/logrotate"
        } else {
            "logrotate"
        };
        let out = std::process::Command::new(logrotate)
            .args(["-f", "-s"])
            .arg(&state)
            .arg(&conf)
            .output()
            .map_err(|e| anyhow::anyhow!("logrotate is needed (.ci/run installs it): {e}"))?;
        assert!(
            out.status.success(),
            "logrotate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    writer.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    let rotated = std::fs::read_dir(&logs)?.count() - 1;
    assert!(rotated >= 3, "{rotated} copies");
    // What is on disk now, across the live file and its copies.
    let mut on_disk = Vec::new();
    for entry in std::fs::read_dir(&logs)? {
        let text = std::fs::read_to_string(entry?.path())?;
        on_disk.extend(text.lines().filter(|l| l.starts_with(marker)).map(str::to_string));
    }
    eprintln!(
        "logrotate's own copy/truncate race took {} of {LINES} lines",
        LINES - on_disk.len()
    );
    let client = client();
    assert_exactly_once(&client, &collector, marker, &on_disk).await?;
    assert!(agent.terminate()?, "clean exit on SIGTERM");
    Ok(())
}
