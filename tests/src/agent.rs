//! Harness for the real `vigil-agent` binary: a config written to a temp dir, the
//! process started with its ports announced on stdout, its `/metrics` readable.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::agent_binary;

pub struct Agent {
    child: Child,
    pub metrics: SocketAddr,
    pub otlp_grpc: Option<SocketAddr>,
    pub otlp_http: Option<SocketAddr>,
    stderr_path: PathBuf,
}

/// A config for tests: state under `state_dir`, loopback port-0 listeners, shipping to
/// `endpoint` over OTLP/HTTP; `extra` is appended verbatim (e.g. `[[logs]]` blocks).
pub fn config(state_dir: &Path, endpoint: &str, extra: &str) -> String {
    format!(
        r#"state_dir = {state:?}
metrics_addr = "127.0.0.1:0"

[collector]
endpoint = {endpoint:?}
protocol = "http"
initial_backoff_ms = 50
max_backoff_secs = 1

[batch]
max_records = 500
timeout_ms = 200

[host_metrics]
enabled = false

[receiver]
enabled = false
grpc_addr = "127.0.0.1:0"
http_addr = "127.0.0.1:0"

{extra}
"#,
        state = state_dir.display().to_string(),
    )
}

impl Agent {
    /// Writes `config_text` next to the state dir and starts the agent on it.
    pub fn start(dir: &Path, config_text: &str) -> Result<Agent> {
        let config_path = dir.join("agent.toml");
        std::fs::write(&config_path, config_text)?;
        let stderr_path = dir.join(format!("agent-stderr-{}.log", super::now_ns()));
        let stderr = std::fs::File::create(&stderr_path)?;
        let mut child = Command::new(agent_binary())
            .args(["run", "--config"])
            .arg(&config_path)
            .env("VIGIL_LOG", "info")
            .env_remove("VIGIL_AGENT_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("spawn vigil-agent")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("vigil-agent listening") {
                    let _ = tx.send(line);
                }
            }
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(120)) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "agent did not start: {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        };
        let addr = |key: &str| -> Option<SocketAddr> {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key))
                .and_then(|v| v.parse().ok())
        };
        Ok(Agent {
            metrics: addr("metrics=").ok_or_else(|| anyhow!("no metrics address in {line:?}"))?,
            otlp_grpc: addr("otlp_grpc="),
            otlp_http: addr("otlp_http="),
            child,
            stderr_path,
        })
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// One counter or gauge from the agent's `/metrics`.
    pub async fn metric(&self, client: &reqwest::Client, name: &str) -> Result<f64> {
        let text = client
            .get(format!("http://{}/metrics", self.metrics))
            .send()
            .await?
            .text()
            .await?;
        crate::metric_value(&text, name).ok_or_else(|| anyhow!("{name} not in /metrics"))
    }

    /// SIGKILL: nothing flushed.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM; waits for the exit and returns whether it was clean.
    pub fn terminate(mut self) -> Result<bool> {
        crate::terminate_child(&mut self.child, "agent", &self.stderr_path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
