//! Secure defaults: tokens on ingest and API, refusal to listen beyond loopback
//! without a token, TLS, and the configuration checks that guard them.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use prost::Message;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil_e2e::otlp::{log_record, logs_request};
use vigil_e2e::{Collector, Options, collector_binary, eventually, now_ns, search_logs};

const INGEST_TOKEN: &str = "ingest-token-0123456789";
const API_TOKEN: &str = "api-token-0123456789abc";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_when_configured() -> Result<()> {
    let c = Collector::start_with(Options {
        env: vec![
            ("VIGIL_INGEST_TOKEN".into(), INGEST_TOKEN.into()),
            ("VIGIL_API_TOKEN".into(), API_TOKEN.into()),
        ],
        ..Options::default()
    })?;
    let http = reqwest::Client::new();
    let body = logs_request("secured", vec![log_record(now_ns() - 1000, "secret log", &[])]).encode_to_vec();
    let post = |auth: Option<&str>| {
        let mut r = http
            .post(c.http_url("/v1/logs"))
            .header("content-type", "application/x-protobuf")
            .body(body.clone());
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    assert_eq!(post(None).await?.status(), 401);
    assert_eq!(post(Some("Bearer wrong-token-0123456789")).await?.status(), 401);
    assert_eq!(post(Some(&format!("Bearer {INGEST_TOKEN}"))).await?.status(), 200);

    let mut grpc = LogsServiceClient::connect(c.grpc_url()).await?;
    let status = grpc
        .export(logs_request("secured", vec![log_record(now_ns(), "x", &[])]))
        .await
        .expect_err("no token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let mut request = tonic::Request::new(logs_request(
        "secured",
        vec![log_record(now_ns() - 1000, "via grpc", &[])],
    ));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {INGEST_TOKEN}").parse()?);
    grpc.export(request).await?;

    // The API: health is open, data needs the API token (not the ingest one).
    assert_eq!(http.get(c.api_url("/healthz")).send().await?.status(), 200);
    let search = c.api_url("/api/v1/logs/search?service=secured");
    assert_eq!(http.get(&search).send().await?.status(), 401);
    assert_eq!(http.get(&search).bearer_auth(INGEST_TOKEN).send().await?.status(), 401);
    assert_eq!(http.get(c.api_url("/metrics")).send().await?.status(), 401);
    let total = eventually(Duration::from_secs(10), "authorized search", || async {
        let body: serde_json::Value = http.get(&search).bearer_auth(API_TOKEN).send().await?.json().await?;
        Ok((body["total"] == 2).then_some(2))
    })
    .await?;
    assert_eq!(total, 2);
    // Secrets never reach the logs.
    let logs = c.logs();
    assert!(!logs.contains(INGEST_TOKEN) && !logs.contains(API_TOKEN));
    Ok(())
}

#[test]
fn public_bind_without_token_is_refused_at_startup() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let output = Command::new(collector_binary())
        .args(["--data-dir"])
        .arg(dir.path())
        .args([
            "--otlp-http-addr",
            "0.0.0.0:0",
            "--otlp-grpc-addr",
            "127.0.0.1:0",
            "--api-addr",
            "127.0.0.1:0",
        ])
        .env_remove("VIGIL_INGEST_TOKEN")
        .stdin(Stdio::null())
        .output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("otlp.http_addr") && stderr.contains("refusing"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn check_config_names_the_bad_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[storage]\nretention_hour = 5\n")?;
    let output = Command::new(collector_binary())
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("retention_hour"), "{stderr}");

    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../collector/collector.example.toml");
    let output = Command::new(collector_binary())
        .arg("check-config")
        .arg("--config")
        .arg(example)
        .output()?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

fn make_cert(dir: &std::path::Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    vigil_e2e::make_cert(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_otlp_and_api() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (cert, key) = make_cert(dir.path())?;
    let config = dir.path().join("tls.toml");
    std::fs::write(
        &config,
        format!("[tls]\ncert_file = {:?}\nkey_file = {:?}\n", cert, key),
    )?;
    let c = Collector::start_with(Options {
        args: vec!["--config".into(), config.display().to_string()],
        ..Options::default()
    })?;

    let mut roots = rustls::RootCertStore::empty();
    for der in rustls_pki_types::CertificateDer::pem_file_iter(&cert)? {
        roots.add(der?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));

    // Raw HTTP/1.1 over TLS: post a log, then find it through the TLS API.
    let body = logs_request("tls", vec![log_record(now_ns() - 1000, "over tls", &[])]).encode_to_vec();
    let request = |addr: std::net::SocketAddr, head: String, body: Vec<u8>| {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?;
            let mut stream = connector.connect(name, tcp).await?;
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&body).await?;
            let mut out = Vec::new();
            stream.read_to_end(&mut out).await?;
            Ok::<String, anyhow::Error>(String::from_utf8_lossy(&out).into_owned())
        }
    };
    let head = format!(
        "POST /v1/logs HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let reply = request(c.http, head, body).await?;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let found = eventually(Duration::from_secs(10), "the log over the TLS API", || async {
        let head =
            "GET /api/v1/logs/search?service=tls HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n".to_string();
        let reply = request(c.api, head, Vec::new()).await?;
        Ok(reply.contains("over tls").then_some(reply))
    })
    .await?;
    assert!(found.starts_with("HTTP/1.1 200"));

    // Plain text to a TLS port gets nothing useful.
    let plain = reqwest::Client::new();
    assert!(search_logs(&plain, &c, &[("service", "tls")]).await.is_err());
    Ok(())
}
