//! The cluster's correlator (`--role rca`): one active process, chosen by a lease, turns the
//! workers' findings into incidents and owns the alerts; any number of standbys follow it.
//!
//! Three streams carry it:
//! - `<stream>_FINDINGS` (subjects `<stream>.findings.<node>`): every worker's anomaly
//!   updates, its spans' service links and its event time ([`Findings`]). Every correlator,
//!   active or standby, reads it all: the service graph and the anomaly list are warm on a
//!   standby before it ever leads. Kept an hour (a correlator started later learns the graph
//!   from that hour on).
//! - `<stream>_RCA` (subject `<stream>.rca`): the active correlator's replicated state log —
//!   each batch of incident changes and each alerting change (alerts, groups, silences, the
//!   notification outbox and what was delivered) is appended *before* the leader keeps or
//!   acts on it, with JetStream's expected-last-sequence check as a fencing token: a deposed
//!   leader's next write fails, and it stops. Standbys apply the log to their own stores.
//! - the lease bucket's `rca.leader` entry (lapses `lease_secs` after its last renewal).
//!
//! The log is kept short: every `cluster.rca_snapshot_records` records the active correlator
//! writes its whole state (incidents and alerting state, as of the log's last record) to an
//! object store (`<stream>_rca_snapshot`, chunked by JetStream, so any size) and purges the
//! log up to that record. A process starting (or a standby fallen behind the purge) installs
//! the snapshot first, then follows the log from the record after it.
//!
//! A standby taking over first applies the log up to its last record, then rebuilds its
//! alerting engine from that state, restores the incidents, re-reads the findings of the
//! last pending period, and only then sends. A notification whose delivery was logged is
//! never sent again; one that was in flight when the leader died (sent, its delivery not yet
//! logged) is sent again with the same idempotency key — at least once, as Alertmanager's
//! cluster does, never silently dropped.

mod clocks;
mod findings;
mod node;
mod state;

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, kv, stream};

use super::lease::Member;
use crate::config::ClusterConfig;

pub(crate) use findings::publish_findings;
pub(crate) use node::RcaNode;
pub(crate) use state::Replicator;

/// The lease bucket's key naming the active correlator.
pub(crate) const LEADER_KEY: &str = "rca.leader";
/// How long the findings stream keeps what the workers sent.
const FINDINGS_KEPT: Duration = Duration::from_secs(3600);
/// A quiet consumer is checked against its stream this often (see the worker's).
const STALL_CHECK: Duration = Duration::from_secs(2);
fn findings_stream(config: &ClusterConfig) -> String {
    format!("{}_FINDINGS", config.stream)
}

fn state_stream(config: &ClusterConfig) -> String {
    format!("{}_RCA", config.stream)
}

/// The subject a worker's findings go to.
pub(crate) fn findings_subject(config: &ClusterConfig, node: &str) -> String {
    format!("{}.findings.{node}", config.stream.to_ascii_lowercase())
}

fn state_subject(config: &ClusterConfig) -> String {
    format!("{}.rca", config.stream.to_ascii_lowercase())
}

/// Opens (or creates) the findings stream.
pub(crate) async fn open_findings(js: &jetstream::Context, config: &ClusterConfig) -> anyhow::Result<stream::Stream> {
    let wanted = stream::Config {
        name: findings_stream(config),
        description: Some("Vigil workers' findings for the correlator".into()),
        subjects: vec![format!("{}.findings.>", config.stream.to_ascii_lowercase())],
        num_replicas: config.replicas,
        max_age: FINDINGS_KEPT,
        storage: stream::StorageType::File,
        ..stream::Config::default()
    };
    crate::cluster::retry_while_starting("the findings stream", || js.get_or_create_stream(wanted.clone()))
        .await
        .with_context(|| format!("cannot create or open the JetStream stream {}", wanted.name))
}

async fn open_state(js: &jetstream::Context, config: &ClusterConfig) -> anyhow::Result<stream::Stream> {
    let wanted = stream::Config {
        name: state_stream(config),
        description: Some("Vigil's correlator: incidents and alerting state, replicated".into()),
        subjects: vec![state_subject(config)],
        num_replicas: config.replicas,
        storage: stream::StorageType::File,
        ..stream::Config::default()
    };
    crate::cluster::retry_while_starting("the correlator's state stream", || {
        js.get_or_create_stream(wanted.clone())
    })
    .await
    .with_context(|| format!("cannot create or open the JetStream stream {}", wanted.name))
}

/// The active correlator as the lease bucket names it, if any.
pub(crate) async fn leader(kv: &kv::Store) -> anyhow::Result<Option<Member>> {
    Ok(kv
        .get(LEADER_KEY)
        .await?
        .and_then(|v| serde_json::from_slice::<Member>(&v).ok()))
}
