//! Alertmanager's own tools against Vigil, side by side with a real Alertmanager (Debian's
//! `prometheus-alertmanager`, which ships `amtool`): the same alerts and silences go to
//! both through `amtool`, and every answer — alert fingerprints, receivers, states,
//! filters, groups, silences, the routing tree read back from `config` — must be the same.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use vigil_e2e::{Collector, Options, eventually, get_json};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
const AMTOOL: &str = "/usr/bin/amtool";

const VIGIL_CONFIG: &str = r#"
[alerting.route]
receiver = "hook"
group_by = ["alertname"]
group_wait_secs = 1
group_interval_secs = 1
repeat_interval_secs = 3600

[[alerting.route.routes]]
receiver = "pager"
matchers = ['severity="page"']

[[alerting.receivers]]
name = "hook"

[[alerting.receivers]]
name = "pager"
"#;

const ALERTMANAGER_CONFIG: &str = r#"
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - receiver: pager
      matchers: ['severity="page"']
receivers:
  - name: hook
  - name: pager
"#;

/// A real Alertmanager on a loopback port, killed on drop.
struct Alertmanager {
    child: Child,
    url: String,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn start_alertmanager(dir: &Path) -> Result<Alertmanager> {
    let config = dir.join("alertmanager.yml");
    std::fs::write(&config, ALERTMANAGER_CONFIG)?;
    let port = free_port()?;
    let child = Command::new(ALERTMANAGER)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("alertmanager.log"))?)
        .spawn()
        .with_context(|| format!("start {ALERTMANAGER} (apt install prometheus-alertmanager)"))?;
    let am = Alertmanager {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    let ready = format!("{}/-/ready", am.url);
    vigil_e2e::until_ready(&client, &ready, Duration::from_secs(30)).await?;
    Ok(am)
}

/// Runs amtool against `url`; its standard output, or an error with its standard error.
fn amtool(url: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(AMTOOL)
        .arg(format!("--alertmanager.url={url}"))
        .args(args)
        .output()
        .context("run amtool")?;
    if !out.status.success() {
        bail!(
            "amtool {args:?} against {url} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn amtool_json(url: &str, args: &[&str]) -> Result<Value> {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    let text = amtool(url, &all)?;
    serde_json::from_str(&text).with_context(|| format!("amtool {args:?}: not JSON: {text}"))
}

/// Alerts by fingerprint: labels, receivers and state (what must agree).
fn alerts_view(v: &Value) -> BTreeMap<String, (Value, Vec<String>, String)> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let mut receivers: Vec<String> = a["receivers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["name"].as_str().map(str::to_string))
                .collect();
            receivers.sort();
            (
                a["fingerprint"].as_str().unwrap_or_default().to_string(),
                (
                    a["labels"].clone(),
                    receivers,
                    a["status"]["state"].as_str().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

/// Groups as (receiver, labels) → sorted fingerprints.
fn groups_view(v: &Value) -> BTreeMap<(String, String), Vec<String>> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            let mut fps: Vec<String> = g["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["fingerprint"].as_str().map(str::to_string))
                .collect();
            fps.sort();
            (
                (
                    g["receiver"]["name"].as_str().unwrap_or_default().to_string(),
                    g["labels"].to_string(),
                ),
                fps,
            )
        })
        .collect()
}

fn silences_view(v: &Value) -> Vec<(Value, String, String, String)> {
    let mut out: Vec<_> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["matchers"].clone(),
                s["createdBy"].as_str().unwrap_or_default().to_string(),
                s["comment"].as_str().unwrap_or_default().to_string(),
                s["status"]["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort_by_key(|s| s.0.to_string());
    out
}

fn start_vigil(dir: &Path) -> Result<Collector> {
    let config: PathBuf = dir.join("vigil.toml");
    std::fs::write(&config, VIGIL_CONFIG)?;
    Collector::start_with(Options {
        data_dir: Some(dir.join("vigil-data")),
        args: vec!["--config".into(), config.display().to_string()],
        ..Options::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amtool_sees_the_same_alerts_groups_silences_and_routes_as_in_alertmanager() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Vigil first: starting it also sets up TLS for the test's HTTP client.
    let vigil = start_vigil(dir.path())?;
    let am = start_alertmanager(dir.path()).await?;
    let vigil_url = format!("http://{}", vigil.api);
    let both = [am.url.as_str(), vigil_url.as_str()];

    // The same alerts, sent by amtool (which sends Go's zero time for unset times).
    for url in both {
        amtool(
            url,
            &[
                "alert",
                "add",
                "DiskFull",
                "host=a",
                "severity=page",
                "--annotation=summary=disk a",
            ],
        )?;
        amtool(url, &["alert", "add", "DiskFull", "host=c", "severity=warning"])?;
        amtool(url, &["alert", "add", "CpuHigh", "host=b", "severity=warning"])?;
    }
    let expected = alerts_view(&amtool_json(&am.url, &["alert", "query"])?);
    assert_eq!(expected.len(), 3, "{expected:?}");
    let ours = alerts_view(&amtool_json(&vigil_url, &["alert", "query"])?);
    assert_eq!(ours, expected, "fingerprints, labels, receivers and states agree");

    // Filters, as amtool sends them.
    for filter in [
        &["DiskFull"][..],
        &["host=~a|b"],
        &["severity!=page", "alertname=DiskFull"],
    ] {
        let mut args = vec!["alert", "query"];
        args.extend_from_slice(filter);
        let expected = alerts_view(&amtool_json(&am.url, &args)?);
        assert!(!expected.is_empty(), "{filter:?}");
        assert_eq!(alerts_view(&amtool_json(&vigil_url, &args)?), expected, "{filter:?}");
    }

    // Aggregation groups (Alertmanager fills them as its dispatcher takes the alerts in).
    let client = reqwest::Client::new();
    let groups_of = |url: String| {
        let client = client.clone();
        async move {
            let (status, body) = get_json(&client, &format!("{url}/api/v2/alerts/groups")).await?;
            anyhow::ensure!(status == 200, "groups: {status} {body}");
            Ok(groups_view(&body))
        }
    };
    let expected = eventually(Duration::from_secs(30), "alertmanager's groups", || {
        let f = groups_of(am.url.clone());
        async move { Ok(Some(f.await?).filter(|g: &BTreeMap<_, _>| g.values().map(Vec::len).sum::<usize>() == 3)) }
    })
    .await?;
    assert_eq!(groups_of(vigil_url.clone()).await?, expected);

    // A silence through amtool: listed the same way, and it hides the alert from the
    // default query (active only) on both.
    let mut ids = Vec::new();
    for url in both {
        let id = amtool(
            url,
            &[
                "silence",
                "add",
                "host=a",
                "--comment=disk work",
                "--author=alice",
                "--duration=1h",
            ],
        )?;
        ids.push(id.trim().to_string());
    }
    let expected = silences_view(&amtool_json(&am.url, &["silence", "query"])?);
    assert_eq!(expected.len(), 1);
    assert_eq!(
        silences_view(&amtool_json(&vigil_url, &["silence", "query"])?),
        expected
    );
    for args in [
        &["alert", "query"][..],
        &["alert", "query", "--silenced"],
        &["alert", "query", "--active"],
    ] {
        let expected = eventually(Duration::from_secs(10), "alertmanager to apply the silence", || {
            let url = am.url.clone();
            async move {
                let v = alerts_view(&amtool_json(&url, args)?);
                // Alertmanager marks alerts silenced on its next pass; wait until it has.
                let settled = v
                    .values()
                    .all(|(labels, _, state)| (labels["host"] == "a") == (state == "suppressed"));
                Ok(settled.then_some(v))
            }
        })
        .await?;
        assert_eq!(alerts_view(&amtool_json(&vigil_url, args)?), expected, "{args:?}");
    }

    // Expired through amtool: gone from the default listing, shown with --expired.
    for (url, id) in both.iter().zip(&ids) {
        amtool(url, &["silence", "expire", id])?;
    }
    for args in [&["silence", "query"][..], &["silence", "query", "--expired"]] {
        let expected = silences_view(&amtool_json(&am.url, args)?);
        assert_eq!(silences_view(&amtool_json(&vigil_url, args)?), expected, "{args:?}");
    }
    assert!(amtool(&vigil_url, &["silence", "expire", "no-such-silence"]).is_err());

    // The routing configuration, read back and parsed by amtool as Alertmanager's own.
    assert_eq!(
        amtool(&vigil_url, &["config", "routes"])?,
        amtool(&am.url, &["config", "routes"])?
    );
    for (labels, receiver) in [("severity=page", "pager"), ("severity=warning", "hook")] {
        assert_eq!(
            amtool(&vigil_url, &["config", "routes", "test", labels])?.trim(),
            receiver
        );
    }
    let (status, receivers) = get_json(&client, &format!("{vigil_url}/api/v2/receivers")).await?;
    assert_eq!(
        (status, receivers),
        (200, serde_json::json!([{"name": "hook"}, {"name": "pager"}]))
    );

    // Bad input is refused with the reason, as Alertmanager refuses it.
    for url in both {
        let (status, _) = get_json(&client, &format!("{url}/api/v2/alerts?filter=%3D%3D")).await?;
        assert_eq!(status, 400, "{url}");
    }
    let r = client
        .post(format!("{vigil_url}/api/v2/silences"))
        .json(
            &serde_json::json!({"matchers": [{"name": "host", "value": "(", "isRegex": true}],
                                  "endsAt": "2099-01-01T00:00:00Z", "createdBy": "alice", "comment": "x"}),
        )
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await?.contains("matchers[0]"));
    Ok(())
}
