//! Scale-out on NATS JetStream (opt-in, `cluster.role`). The stream takes the place the
//! local write-ahead log has in a single process: an ingest node acknowledges a batch once
//! the stream (replicated by Raft across the NATS servers) has it, and workers, each owning
//! some partitions through leases in a JetStream key-value bucket, consume their partitions
//! in order into their own storage and detectors. This is the shape of Mimir's and Loki's
//! "ingest storage" on Kafka, and of Quickwit's sources with their checkpoints.

mod checkpoint;
mod investigate;
mod lease;
mod partition;
mod publish;
mod rca;
mod rebuild;
mod root;
mod worker;

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};

use crate::config::{ClusterConfig, Secret};

pub(crate) use investigate::WorkerRows;
pub(crate) use lease::open_bucket;
pub(crate) use partition::{partition_of, split_logs, split_metrics, split_traces};
pub(crate) use publish::{PublishError, StreamPublisher};
pub(crate) use rca::{RcaNode, Replicator, findings_subject, open_findings, publish_findings};
pub(crate) use rebuild::Rebuilding;
pub(crate) use root::{Root, router as root_router};
pub(crate) use worker::{Worker, node_id};

/// The subject of one partition: `<stream lowercased>.p.<n>`.
pub(crate) fn subject(config: &ClusterConfig, partition: u32) -> String {
    format!("{}{partition}", subject_prefix(config))
}

fn subject_prefix(config: &ClusterConfig) -> String {
    format!("{}.p.", config.stream.to_ascii_lowercase())
}

/// Connects to the NATS servers and opens (or creates) the stream: what every cluster role
/// does first.
pub(crate) async fn join(
    config: &crate::config::Config,
    name: &str,
) -> anyhow::Result<(async_nats::Client, jetstream::Context, stream::Stream)> {
    let (client, js) = connect(&config.cluster, config.auth.nats_token.as_ref(), name).await?;
    let stream = ensure_stream(&js, &config.cluster, config.storage.retention_hours).await?;
    Ok((client, js, stream))
}

/// Connects to the NATS servers: the client follows the cluster's other servers on its own
/// and reconnects for as long as the process runs.
async fn connect(
    config: &ClusterConfig,
    token: Option<&Secret>,
    name: &str,
) -> anyhow::Result<(async_nats::Client, jetstream::Context)> {
    let credentials = match &config.credentials_file {
        Some(path) => Some(NatsCredentials::read(path)?),
        None => None,
    };
    if credentials.is_some() && token.is_some() {
        anyhow::bail!("cluster.credentials_file and VIGIL_NATS_TOKEN: NATS takes one way to log in; give one");
    }
    let options = || -> anyhow::Result<async_nats::ConnectOptions> {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5));
        if let Some(token) = token {
            options = options.token(token.expose().to_string());
        }
        options = match &credentials {
            Some(NatsCredentials::Creds(text)) => options
                .credentials(text)
                .context("cluster.credentials_file: not a NATS credentials file")?,
            Some(NatsCredentials::Seed(seed)) => options.nkey(seed.clone()),
            None => options,
        };
        if let Some(ca) = &config.tls_ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        Ok(options)
    };
    options()?;
    // Not the client's own retry on the first connection: it would hide why it fails (a TLS
    // error, a wrong token) behind a time-out. Once connected, the client reconnects itself.
    let client = retry_while_starting("the NATS servers", || async {
        let options = options().map_err(|e| e.to_string())?;
        options
            .connect(config.nats_urls.as_slice())
            .await
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| anyhow::anyhow!(e))
    .with_context(|| format!("cannot connect to NATS at {}", config.nats_urls.join(",")))?;
    let js = jetstream::new(client.clone());
    Ok((client, js))
}

/// What `cluster.credentials_file` holds.
enum NatsCredentials {
    /// A `.creds` file: a user JWT and its nkey seed.
    Creds(String),
    /// A user's nkey seed alone.
    Seed(String),
}

impl NatsCredentials {
    fn read(path: &std::path::Path) -> anyhow::Result<NatsCredentials> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cluster.credentials_file: cannot read {}", path.display()))?;
        NatsCredentials::parse(&text).with_context(|| format!("cluster.credentials_file: {}", path.display()))
    }

    fn parse(text: &str) -> anyhow::Result<NatsCredentials> {
        if text.contains("-----BEGIN NATS USER JWT-----") {
            return Ok(NatsCredentials::Creds(text.to_string()));
        }
        let seed = text.trim();
        // A user seed: base32, starting "SU" (the seed of a user key pair).
        if seed.starts_with("SU") && seed.len() > 50 && seed.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(NatsCredentials::Seed(seed.to_string()));
        }
        anyhow::bail!("neither a NATS credentials file (a user JWT and seed) nor a user's nkey seed (SU…)")
    }
}

/// How long start-up waits for JetStream: a cluster whose servers start together needs a
/// few seconds to elect its meta leader, and a node may start before them.
const STARTUP_PATIENCE: Duration = Duration::from_secs(60);

/// Runs `attempt` until it succeeds or [`STARTUP_PATIENCE`] has passed, backing off.
pub(crate) async fn retry_while_starting<T, E: std::fmt::Display, F, Fut>(what: &str, mut attempt: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + STARTUP_PATIENCE;
    let mut backoff = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() + backoff < deadline => {
                tracing::info!(error = %e, "waiting for {what}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Creates the stream when it does not exist yet; an existing one is used as it is (its
/// partitions subjects must match: `cluster.partitions` is fixed for a stream's life).
async fn ensure_stream(
    js: &jetstream::Context,
    config: &ClusterConfig,
    retention_hours: u64,
) -> anyhow::Result<stream::Stream> {
    let wanted = stream::Config {
        name: config.stream.clone(),
        subjects: vec![format!("{}*", subject_prefix(config))],
        num_replicas: config.replicas,
        duplicate_window: Duration::from_secs(config.dedup_window_secs),
        // The stream is the cluster's replicated log: it keeps what the indexes keep, so a
        // worker taking over a partition can rebuild it (as a Kafka topic's retention does
        // for Mimir's ingesters).
        max_age: Duration::from_secs(retention_hours.saturating_mul(3600)),
        storage: stream::StorageType::File,
        ..stream::Config::default()
    };
    let mut stream = retry_while_starting("the JetStream stream", || js.get_or_create_stream(wanted.clone()))
        .await
        .with_context(|| format!("cannot create or open the JetStream stream {}", config.stream))?;
    let info = stream.info().await.context("cannot read the stream's configuration")?;
    if info.config.subjects != wanted.subjects {
        anyhow::bail!(
            "the JetStream stream {} takes subjects {:?}, not {:?}: another Vigil cluster (or another program) owns that name; set cluster.stream",
            config.stream,
            info.config.subjects,
            wanted.subjects
        );
    }
    if info.config.num_replicas != config.replicas {
        tracing::warn!(
            stream = %config.stream,
            replicas = info.config.num_replicas,
            configured = config.replicas,
            "the stream exists with another replica count; using it as it is"
        );
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credentials_file_is_a_creds_file_or_a_user_seed_and_nothing_else() {
        let seed = "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU";
        assert!(matches!(NatsCredentials::parse(&format!("{seed}\n")), Ok(NatsCredentials::Seed(s)) if s == seed));
        let creds = "-----BEGIN NATS USER JWT-----\neyJ0eXAi\n------END NATS USER JWT------\n";
        assert!(matches!(NatsCredentials::parse(creds), Ok(NatsCredentials::Creds(_))));
        let err = NatsCredentials::parse("hunter2")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("nkey seed"), "{err}");
        assert!(!err.contains("hunter2"), "the file's text is never repeated: {err}");
    }
}
