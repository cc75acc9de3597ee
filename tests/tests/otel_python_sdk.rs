//! The official OpenTelemetry Python SDK (installed by `.ci/run` from
//! tests/python/requirements.txt) exports over gRPC and HTTP; the API returns
//! exactly what it sent.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use vigil_e2e::{Collector, eventually, get_json, now_ns, search_logs};

fn run_python(protocol: &str, endpoint: &str, service: &str) -> Result<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/send_otlp.py");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let output = Command::new(&python)
        .arg(script)
        .args(["--protocol", protocol, "--endpoint", endpoint, "--service", service])
        .output()
        .with_context(|| format!("run {python}"))?;
    ensure!(
        output.status.success(),
        "python sender failed (pip install -r tests/python/requirements.txt): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).context("parse python output")
}

async fn python_round_trip(protocol: &str) -> Result<()> {
    let c = Collector::start()?;
    let service = format!("python-{protocol}");
    let endpoint = if protocol == "grpc" {
        c.grpc_url()
    } else {
        c.http_url("")
    };
    let sent = run_python(protocol, &endpoint, &service)?;
    let client = reqwest::Client::new();

    let hits = eventually(Duration::from_secs(10), "python logs", || async {
        let (total, hits) = search_logs(&client, &c, &[("service", service.as_str()), ("q", "inventory")]).await?;
        Ok((total == 3).then_some(hits))
    })
    .await?;
    for hit in &hits {
        let i = hit["attributes"]["i"].as_i64().context("int attribute")?;
        let expected = &sent["logs"][usize::try_from(i)?];
        assert_eq!(hit["body"], expected["body"]);
        assert_eq!(hit["time_unix_nano"], expected["timestamp"]);
        assert_eq!(hit["severity_number"], 17);
        assert_eq!(hit["severity_text"], "ERROR");
        assert_eq!(hit["attributes"]["db.system"], "postgresql");
        assert_eq!(hit["trace_id"], sent["trace_id"]);
        assert_eq!(hit["span_id"], sent["span_id"]);
        assert_eq!(hit["host"], "py-host");
    }

    let trace_id = sent["trace_id"].as_str().context("trace id")?;
    let trace = eventually(Duration::from_secs(10), "python trace", || async {
        let (status, body) = get_json(&client, &c.api_url(&format!("/api/v1/traces/{trace_id}"))).await?;
        Ok((status == 200).then_some(body))
    })
    .await?;
    let span = &trace["spans"][0];
    assert_eq!(span["name"], "GET /inventory");
    assert_eq!(span["span_id"], sent["span_id"]);
    assert_eq!(span["kind"], 2);
    assert_eq!(span["start_time_unix_nano"], sent["span_start"]);
    assert_eq!(span["end_time_unix_nano"], sent["span_end"]);
    assert_eq!(span["status"]["code"], 2);
    assert_eq!(span["status"]["message"], "db timeout");
    assert_eq!(span["attributes"]["retries"], 3);
    assert_eq!(span["attributes"]["http.route"], "/inventory");

    let hour_ago = (now_ns() / 1_000_000 - 3_600_000).to_string();
    let labels = format!("service.name={service},region=eu");
    let url = reqwest::Url::parse_with_params(
        &c.api_url("/api/v1/metrics/query"),
        &[
            ("name", "py.orders"),
            ("labels", labels.as_str()),
            ("start", hour_ago.as_str()),
            ("step", "1h"),
            ("agg", "last"),
            ("rate", "false"),
        ],
    )?;
    let series = eventually(Duration::from_secs(10), "python counter", || async {
        let (status, body) = get_json(&client, url.as_str()).await?;
        ensure!(status == 200, "{body}");
        let s = body["result"]["series"][0].clone();
        Ok((!s.is_null()).then_some(s))
    })
    .await?;
    assert_eq!(series["kind"], "sum");
    assert_eq!(series["values"][0][1].as_f64(), sent["counter"].as_f64());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_grpc_round_trips_exactly() -> Result<()> {
    python_round_trip("grpc").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_http_round_trips_exactly() -> Result<()> {
    python_round_trip("http").await
}
