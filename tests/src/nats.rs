//! Real `nats-server` processes (Debian's `nats-server`, installed by `.ci/run`) forming a
//! JetStream cluster on loopback, for the scale-out tests.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::prometheus::free_port;
use crate::{Collector, Options};

/// A collector in a cluster role (`--role`, `--nats`, `--config`), on `data_dir` when given,
/// with the signing secrets every correlator must share (a failover must not change them).
pub fn start_role(
    role: &str,
    nats: &str,
    config: &std::path::Path,
    data_dir: Option<&std::path::Path>,
) -> Result<Collector> {
    Collector::start_with(role_options(role, nats, config, data_dir))
}

/// The options [`start_role`] starts with, for a caller that adds its own.
pub fn role_options(role: &str, nats: &str, config: &std::path::Path, data_dir: Option<&std::path::Path>) -> Options {
    Options {
        data_dir: data_dir.map(std::path::Path::to_path_buf),
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
    }
}

/// The stream's partition of a service: FNV-1a 64 of the name, mod the partitions (the
/// mapping is part of the stream's format, fixed in `collector/src/cluster/partition.rs`).
pub fn partition_of(service: &str, partitions: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in service.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h % partitions
}

/// The node holding `partition`, in the answer of `GET /api/v1/cluster`.
pub fn owner(cluster: &serde_json::Value, partition: u64) -> Option<String> {
    cluster["workers"].as_array()?.iter().find_map(|w| {
        w["partitions"]
            .as_array()?
            .iter()
            .any(|x| x.as_u64() == Some(partition))
            .then(|| w["node"].as_str().unwrap_or_default().to_string())
    })
}

/// The `[alerting]` sections that send every page to `hook_url` at once, grouped by the
/// alert label `group_by`, never repeated within a test.
pub fn alerting_to(hook_url: &str, group_by: &str) -> String {
    format!(
        "[alerting.route]\nreceiver = \"hook\"\ngroup_by = [\"{group_by}\"]\ngroup_wait_secs = 1\n\
         group_interval_secs = 1\nrepeat_interval_secs = 3600\n\
         [[alerting.receivers]]\nname = \"hook\"\nurl = \"{hook_url}\"\n"
    )
}

/// The API address of the cluster's active correlator, as the query root names it.
pub async fn correlator(client: &reqwest::Client, root: &Collector) -> Result<Option<String>> {
    let (status, view) = crate::get_json(client, &root.api_url("/api/v1/cluster")).await?;
    anyhow::ensure!(status == 200, "cluster view: {view}");
    Ok(view["correlator"]["api"].as_str().map(str::to_string))
}

/// Waits until `workers` hold all `partitions` between them, each some.
pub async fn partitions_split(client: &reqwest::Client, workers: &[&Collector], partitions: u64) -> Result<()> {
    crate::eventually(
        Duration::from_secs(60),
        "the workers to split the partitions",
        || async move {
            let mut held = Vec::new();
            for w in workers {
                held.push(w.metric(client, "vigil_stream_partitions_owned").await?);
            }
            Ok((held.iter().sum::<f64>() == partitions as f64 && held.iter().all(|h| *h > 0.0)).then_some(()))
        },
    )
    .await
}

/// One server of the cluster.
struct Server {
    name: String,
    client_port: u16,
    cluster_port: u16,
    store: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A JetStream cluster of real NATS servers.
pub struct NatsCluster {
    servers: Vec<Server>,
    /// Certificate and key the servers present (TLS required), if any.
    tls: Option<(PathBuf, PathBuf)>,
    /// A configuration file the servers read first (e.g. a smaller `max_payload`).
    config: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `n` servers routed to each other, and waits until each accepts clients.
    pub fn start(n: usize) -> Result<NatsCluster> {
        NatsCluster::start_with(n, None)
    }

    /// One server that requires TLS with `cert` and `key` (PEM).
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Result<NatsCluster> {
        NatsCluster::start_with(1, Some((cert.to_path_buf(), key.to_path_buf())))
    }

    /// One server that lets in only the user of nkey `public_key` (`U…`).
    pub fn start_with_nkey_user(public_key: &str) -> Result<NatsCluster> {
        NatsCluster::start_with_config(
            1,
            None,
            &format!("authorization {{\n  users = [ {{ nkey: \"{public_key}\" }} ]\n}}\n"),
        )
    }

    /// One server whose messages carry at most `bytes` (the default is 1 MiB).
    pub fn start_with_max_payload(bytes: u32) -> Result<NatsCluster> {
        NatsCluster::start_with_config(1, None, &format!("max_payload: {bytes}\n"))
    }

    fn start_with(n: usize, tls: Option<(PathBuf, PathBuf)>) -> Result<NatsCluster> {
        NatsCluster::start_with_config(n, tls, "")
    }

    fn start_with_config(n: usize, tls: Option<(PathBuf, PathBuf)>, config: &str) -> Result<NatsCluster> {
        let dir = tempfile::tempdir()?;
        let config = if config.is_empty() {
            None
        } else {
            let path = dir.path().join("nats.conf");
            std::fs::write(&path, config)?;
            Some(path)
        };
        let mut servers = Vec::new();
        for i in 0..n {
            servers.push(Server {
                name: format!("n{i}"),
                client_port: free_port()?,
                cluster_port: free_port()?,
                store: dir.path().join(format!("n{i}")),
                log: dir.path().join(format!("n{i}.log")),
                child: None,
            });
        }
        let mut cluster = NatsCluster {
            servers,
            tls,
            config,
            _dir: dir,
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        for i in 0..n {
            cluster.wait_accepting(i)?;
        }
        Ok(cluster)
    }

    fn routes(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.cluster_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let routes = self.routes();
        let alone = self.servers.len() == 1;
        let tls = self.tls.clone();
        let config = self.config.clone();
        let s = &mut self.servers[i];
        let log = std::fs::File::create(&s.log)?;
        let mut command = Command::new("nats-server");
        // The file first: the flags after it override what it says.
        if let Some(config) = &config {
            command.arg("-c").arg(config);
        }
        command
            .args(["-a", "127.0.0.1", "-p", &s.client_port.to_string(), "-js"])
            .arg("-sd")
            .arg(&s.store)
            .args(["--server_name", &s.name]);
        if let Some((cert, key)) = &tls {
            command.arg("--tls").arg("--tlscert").arg(cert).arg("--tlskey").arg(key);
        }
        // A single server runs JetStream standalone: a cluster of one never elects a leader.
        if !alone {
            command
                .args(["--cluster_name", "vigil-test"])
                .args(["--cluster", &format!("nats://127.0.0.1:{}", s.cluster_port)])
                .args(["--routes", &routes]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start nats-server (apt-get install nats-server)")?;
        s.child = Some(child);
        Ok(())
    }

    fn wait_accepting(&mut self, i: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = self.servers[i].client_port;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(child) = self.servers[i].child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("nats-server {i} exited ({status}): {}", self.log(i));
            }
            if Instant::now() > deadline {
                bail!("nats-server {i} does not accept connections: {}", self.log(i));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Client URLs of every server, comma-separated (the `--nats` flag).
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILL of server `i`.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.servers[i].child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts server `i` again on its ports and store.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.spawn(i)?;
        self.wait_accepting(i)
    }

    /// Server `i`'s log so far (for failure messages).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.servers[i].log).unwrap_or_default()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            if let Some(mut child) = s.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
