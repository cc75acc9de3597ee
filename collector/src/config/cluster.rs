//! `[cluster]`: scale-out on NATS JetStream, and the role this process plays in it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What part of a cluster this process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything in one process on embedded storage (the default).
    Single,
    /// Stateless intake: validates, publishes each batch to the JetStream stream, and
    /// acknowledges once the stream has it.
    Ingest,
    /// Owns partitions of the stream through leases, indexes them and runs the detectors;
    /// sends their findings to the correlator.
    Worker,
    /// The correlator: one active (by lease) turns the workers' findings into incidents and
    /// owns alerting; the others stand by with a replicated copy of its state.
    Rca,
}

/// Scale-out on NATS JetStream: the stream replaces the local write-ahead log as the place a
/// batch is durable before it is acknowledged.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    pub role: Role,
    /// NATS servers (`nats://host:port`), any of the cluster's; the client finds the rest.
    pub nats_urls: Vec<String>,
    /// Stream name; its subjects are `<stream lowercased>.p.<partition>`.
    pub stream: String,
    /// Partitions of the stream: a batch goes to hash(service.name) mod this. Fixed for a
    /// stream's life (changing it moves services between partitions).
    pub partitions: u32,
    /// Copies JetStream keeps of each message (Raft); needs at least that many servers.
    pub replicas: usize,
    /// A worker's hold on a partition lapses this long after its last renewal.
    pub lease_secs: u64,
    /// How long the stream remembers a batch id, so that a retry through any ingest node
    /// is stored once (JetStream's duplicate window).
    pub dedup_window_secs: u64,
    /// The active correlator snapshots its replicated state (and drops the log before it)
    /// after this many records, so a new standby starts from the snapshot, not from the
    /// log's beginning.
    pub rca_snapshot_records: u64,
    /// This worker's name in leases; stable across restarts (default: one generated into
    /// the data dir on first start).
    pub node_id: Option<String>,
    /// PEM bundle of the CA(s) that signed the NATS servers' certificates: with it the
    /// connection must be TLS, verified against it.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM), for servers that verify their clients.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// How this node proves who it is to servers that use NATS' own authentication: a
    /// credentials file (`.creds`: a user JWT and its nkey seed, as `nsc` writes them) or a
    /// file holding just a user's nkey seed (`SU…`). Read at start; never logged.
    pub credentials_file: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            role: Role::Single,
            nats_urls: Vec::new(),
            stream: "VIGIL".into(),
            partitions: 16,
            replicas: 3,
            lease_secs: 10,
            dedup_window_secs: 600,
            rca_snapshot_records: 1000,
            node_id: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            credentials_file: None,
        }
    }
}

impl ClusterConfig {
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.role == Role::Single {
            return Ok(());
        }
        if self.nats_urls.is_empty() {
            return Err((
                "cluster.nats_urls",
                "a cluster role needs at least one NATS server (--nats)".into(),
            ));
        }
        if self.stream.is_empty()
            || !self
                .stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err((
                "cluster.stream",
                format!("{:?} must be letters, digits, '_' or '-'", self.stream),
            ));
        }
        if !(1..=1024).contains(&self.partitions) {
            return Err(("cluster.partitions", format!("{} is outside 1..=1024", self.partitions)));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err((
                "cluster.replicas",
                format!("{} is outside 1..=5 (JetStream's limit)", self.replicas),
            ));
        }
        if !(2..=300).contains(&self.lease_secs) {
            return Err(("cluster.lease_secs", format!("{} is outside 2..=300", self.lease_secs)));
        }
        if self.dedup_window_secs == 0 {
            return Err(("cluster.dedup_window_secs", "must be greater than 0".into()));
        }
        if self.rca_snapshot_records == 0 {
            return Err(("cluster.rca_snapshot_records", "must be greater than 0".into()));
        }
        if let Some(id) = &self.node_id
            && (id.is_empty()
                || id.len() > 64
                || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        {
            return Err((
                "cluster.node_id",
                format!("{id:?} must be 1 to 64 letters, digits, '_' or '-'"),
            ));
        }
        Ok(())
    }
}
