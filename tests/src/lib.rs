//! Harness for end-to-end tests: starts the real `vigil-collector` binary as a child
//! process on port-0 listeners and a private data directory, and talks to it over
//! real sockets.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

pub mod agent;
pub mod browser;
pub mod nats;
pub mod otlp;
pub mod prometheus;
pub mod receiver;

/// Builds the collector binary once per test process and returns its path.
pub fn collector_binary() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| workspace_binary("vigil-collector")).clone()
}

/// Builds the agent binary once per test process and returns its path.
pub fn agent_binary() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| workspace_binary("vigil-agent")).clone()
}

/// Cargo only builds binaries of the package under test, so the e2e crate asks
/// cargo for the binary (package and binary share the name) itself; when it is
/// already fresh this is a no-op.
fn workspace_binary(name: &str) -> PathBuf {
    {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut command = Command::new(cargo);
        // Cargo sets these for the test process; passed on, they would look like a
        // changed environment to build scripts (ring's) and force rebuilds.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "OUT_DIR",
                ]
                .contains(&key.as_ref())
            {
                command.env_remove(key.as_ref());
            }
        }
        // target/<profile>/deps/<test exe>: build the collector in the same profile,
        // so benchmarks (release) measure a release collector.
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target dir").to_path_buf();
        command.args(["build", "-p", name, "--bin", name]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            command.arg("--release");
        }
        let status = command
            .current_dir(&workspace)
            .stdout(Stdio::null())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building {name} failed");
        let bin = profile_dir.join(name);
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    }
}

/// A running collector child process.
pub struct Collector {
    child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub api: SocketAddr,
    pub data_dir: PathBuf,
    stderr_path: PathBuf,
    /// Kept alive so the directory outlives the process when the test owns it.
    _temp: Option<tempfile::TempDir>,
}

/// How to start a collector.
#[derive(Default, Clone)]
pub struct Options {
    /// Reuse a data directory (restart tests); a fresh temp dir otherwise.
    pub data_dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    /// Fixed OTLP addresses (an outage test restarts on the same port); port 0 otherwise.
    pub grpc_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
}

/// One counter or gauge from a Prometheus text exposition: `name`, or `name_total`.
pub(crate) fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name || n == format!("{name}_total")).then(|| v.trim().parse().ok())?
    })
}

impl Collector {
    /// One counter or gauge from the collector's `/metrics`.
    pub async fn metric(&self, client: &reqwest::Client, name: &str) -> Result<f64> {
        let text = client.get(self.api_url("/metrics")).send().await?.text().await?;
        metric_value(&text, name).ok_or_else(|| anyhow!("{name} not in /metrics"))
    }

    pub fn start() -> Result<Collector> {
        Collector::start_with(Options::default())
    }

    /// The collector running its demo fleet at 600x simulated speed with one injected
    /// fault (`cpu`, `latency`, `errors`, `memory`, `down`) on `service`.
    pub fn start_demo(fault: &str, service: &str, seed: u64) -> Result<Collector> {
        let seed = seed.to_string();
        Collector::start_with(Options {
            args: [
                "demo",
                "--speed",
                "600",
                "--fault",
                fault,
                "--service",
                service,
                "--seed",
                &seed,
            ]
            .map(String::from)
            .to_vec(),
            ..Options::default()
        })
    }

    pub fn start_with(options: Options) -> Result<Collector> {
        init_tls();
        let (temp, data_dir) = match &options.data_dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::tempdir()?;
                let d = t.path().join("data");
                (Some(t), d)
            }
        };
        std::fs::create_dir_all(&data_dir)?;
        let stderr_path = data_dir.with_extension(format!("stderr-{}.log", unique()));
        let stderr = std::fs::File::create(&stderr_path)?;
        let mut command = Command::new(collector_binary());
        command
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--otlp-grpc-addr")
            .arg(options.grpc_addr.map_or("127.0.0.1:0".to_string(), |a| a.to_string()))
            .arg("--otlp-http-addr")
            .arg(options.http_addr.map_or("127.0.0.1:0".to_string(), |a| a.to_string()))
            .args(["--api-addr", "127.0.0.1:0"])
            .args(&options.args)
            .env("VIGIL_LOG", "info")
            .env_remove("VIGIL_INGEST_TOKEN")
            .env_remove("VIGIL_API_TOKEN")
            .env_remove("VIGIL_RESPONDER_TOKEN")
            .env_remove("VIGIL_LINK_SECRET")
            .env_remove("VIGIL_WEBHOOK_SECRET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in &options.env {
            command.env(k, v);
        }
        let mut child = command.spawn().context("spawn vigil-collector")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        // Read the announcement line on a thread so a silent child cannot hang us.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("vigil-collector listening") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "collector did not start: {}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
        };
        let addr = |key: &str| -> Result<SocketAddr> {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key))
                .ok_or_else(|| anyhow!("{key} missing in {line:?}"))?
                .parse()
                .context("parse address")
        };
        Ok(Collector {
            grpc: addr("otlp_grpc=")?,
            http: addr("otlp_http=")?,
            api: addr("api=")?,
            child,
            data_dir,
            stderr_path,
            _temp: temp,
        })
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}{}", self.api, path)
    }

    /// The collector's log so far (for failure messages).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM and wait for a clean exit; returns the exit status success.
    pub fn terminate(mut self) -> Result<bool> {
        terminate_child(&mut self.child, "collector", &self.stderr_path)
    }
}

/// Sends SIGTERM and waits up to 60 s for the exit; returns whether it was clean.
pub(crate) fn terminate_child(child: &mut Child, what: &str, stderr: &Path) -> Result<bool> {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
    if !status.success() {
        bail!("kill -TERM failed");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let logs = std::fs::read_to_string(stderr).unwrap_or_default();
            bail!("{what} did not exit within 60 s of SIGTERM:\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Polls `check` until it returns `Some`, or fails after `timeout`. This waits for a
/// condition (data becoming searchable), it is not a fixed sleep.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last error: {last_err:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GET a JSON API path; returns the status and the parsed body.
/// POSTs an OTLP protobuf body; an error unless the collector answers 2xx.
/// Waits until `GET url` answers 2xx (a daemon's readiness endpoint, such as Prometheus' or
/// Alertmanager's `/-/ready`).
pub async fn until_ready(client: &reqwest::Client, url: &str, timeout: Duration) -> Result<()> {
    eventually(timeout, url, || async {
        Ok(client
            .get(url)
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ()))
    })
    .await
}

/// A benchmark's setting from the environment: `key` parsed, or `default` when it is unset
/// or does not parse.
pub fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Bytes of every file under `path`, recursively.
pub fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

pub async fn post_protobuf(client: &reqwest::Client, url: String, body: Vec<u8>) -> Result<()> {
    let status = client
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await?
        .status();
    if !status.is_success() {
        bail!("export failed: {status}");
    }
    Ok(())
}

pub async fn get_json(client: &reqwest::Client, url: &str) -> Result<(u16, serde_json::Value)> {
    let response = client.get(url).send().await?;
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    Ok((status, body))
}

/// Posts alerts (`POST /api/v2/alerts`, with `token` if given); the id of the first.
pub async fn post_alert(
    client: &reqwest::Client,
    c: &Collector,
    token: Option<&str>,
    alerts: serde_json::Value,
) -> Result<String> {
    let mut request = client.post(c.api_url("/api/v2/alerts")).json(&alerts);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let r = request.send().await?;
    if !r.status().is_success() {
        bail!("posting alerts: {}", r.status());
    }
    let body: serde_json::Value = r.json().await?;
    Ok(body["ids"][0].as_str().unwrap_or_default().to_string())
}

/// Searches logs; returns (total, hits).
pub async fn search_logs(
    client: &reqwest::Client,
    c: &Collector,
    params: &[(&str, &str)],
) -> Result<(u64, Vec<serde_json::Value>)> {
    let url = reqwest::Url::parse_with_params(&c.api_url("/api/v1/logs/search"), params)?;
    let (status, body) = get_json(client, url.as_str()).await?;
    if status != 200 {
        bail!("search returned {status}: {body}");
    }
    let total = body["total"].as_u64().unwrap_or(0);
    let hits = body["hits"].as_array().cloned().unwrap_or_default();
    Ok((total, hits))
}

/// The workspace builds reqwest with rustls and no default crypto provider (the collector
/// picks ring explicitly); HTTP clients made in tests need one installed first.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> u64 {
    u64::try_from(unique()).unwrap_or(u64::MAX)
}

/// A self-signed certificate for 127.0.0.1 made with the openssl CLI: (cert, key).
pub fn make_cert(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=vigil-test", "-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .context("openssl")?;
    anyhow::ensure!(status.success(), "openssl failed");
    Ok((cert, key))
}
