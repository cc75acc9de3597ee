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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull::OrderedConfig},
    kv::{self, Operation, UpdateErrorKind},
    message::PublishMessage,
    object_store::ObjectStore,
    stream,
};
use bytes::Bytes;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt as _;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use vigil_alerting::Changes;
use vigil_detectors::Anomaly;
use vigil_rca::Incident;

use super::lease::Member;
use crate::alerts::{AlertService, Replica};
use crate::config::ClusterConfig;
use crate::pipeline::{Findings, IncidentReplica, IncidentStore, PipelineSender, SpanFact};

/// The lease bucket's key naming the active correlator.
pub(crate) const LEADER_KEY: &str = "rca.leader";
/// How long the findings stream keeps what the workers sent.
const FINDINGS_KEPT: Duration = Duration::from_secs(3600);
/// A quiet consumer is checked against its stream this often (see the worker's).
const STALL_CHECK: Duration = Duration::from_secs(2);
/// The snapshot's name in its object store.
const SNAPSHOT: &str = "state";
/// Longest a snapshot's write or read may take.
const SNAPSHOT_PATIENCE: Duration = Duration::from_secs(60);

fn snapshot_bucket(config: &ClusterConfig) -> String {
    format!("{}_rca_snapshot", config.stream)
}

/// The active correlator's whole replicated state as of log record `sequence`.
#[derive(Serialize, Deserialize)]
struct StateSnapshot {
    sequence: u64,
    alerting: vigil_alerting::Snapshot,
    incidents: Vec<Incident>,
}

async fn open_snapshots(js: &jetstream::Context, config: &ClusterConfig) -> anyhow::Result<ObjectStore> {
    let bucket = snapshot_bucket(config);
    if let Ok(store) = js.get_object_store(&bucket).await {
        return Ok(store);
    }
    super::retry_while_starting("the correlator's snapshot store", || {
        js.create_object_store(jetstream::object_store::Config {
            bucket: bucket.clone(),
            description: Some("Vigil's correlator: snapshots of its replicated state".into()),
            num_replicas: config.replicas,
            storage: stream::StorageType::File,
            ..jetstream::object_store::Config::default()
        })
    })
    .await
    .with_context(|| format!("cannot create the object store {bucket}"))
}

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
    super::retry_while_starting("the findings stream", || js.get_or_create_stream(wanted.clone()))
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
    super::retry_while_starting("the correlator's state stream", || {
        js.get_or_create_stream(wanted.clone())
    })
    .await
    .with_context(|| format!("cannot create or open the JetStream stream {}", wanted.name))
}

/// One record of the state log, as written.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum RecordRef<'a> {
    Incidents {
        incidents: &'a [Incident],
    },
    Alerting {
        changes: &'a Changes,
    },
    /// A correlator's first write when it takes the lead: a write the last leader still had
    /// in flight lands before it (and is applied here first) or is fenced off after it.
    Lead {
        node: &'a str,
    },
}

/// One record of the state log, as read.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Record {
    Incidents { incidents: Vec<Incident> },
    Alerting { changes: Box<Changes> },
    Lead { node: String },
}

/// The active correlator's writer to the state log, and the one place that says whether this
/// process leads.
pub(crate) struct Replicator {
    js: jetstream::Context,
    subject: String,
    handle: Handle,
    /// The last record of the log this process has applied or written.
    applied: AtomicU64,
    leading: AtomicBool,
    /// Until when the lease is surely still this process's, by its own clock (each renewal
    /// counts from before it was sent, less a margin).
    valid_until: Mutex<Option<Instant>>,
    /// Appends go one at a time: each names the one before it.
    append: Mutex<()>,
    patience: Duration,
    max_payload: usize,
    state: stream::Stream,
    snapshots: ObjectStore,
    snapshot_every: u64,
    /// The log record the last snapshot (written or installed here) covers.
    snapshot_at: AtomicU64,
    /// The alerting service whose state goes into snapshots (weak: it holds this replicator).
    alerts: OnceLock<Weak<AlertService>>,
    metrics: Arc<crate::telemetry::Metrics>,
}

impl Replicator {
    /// Opens the state stream; the process starts as a standby.
    pub(crate) async fn open(
        client: &async_nats::Client,
        js: &jetstream::Context,
        config: &ClusterConfig,
        metrics: Arc<crate::telemetry::Metrics>,
    ) -> anyhow::Result<Arc<Replicator>> {
        let state = open_state(js, config).await?;
        let snapshots = open_snapshots(js, config).await?;
        Ok(Arc::new(Replicator {
            state,
            snapshots,
            snapshot_every: config.rca_snapshot_records,
            snapshot_at: AtomicU64::new(0),
            alerts: OnceLock::new(),
            metrics,
            js: js.clone(),
            subject: state_subject(config),
            handle: Handle::current(),
            applied: AtomicU64::new(0),
            leading: AtomicBool::new(false),
            valid_until: Mutex::new(None),
            append: Mutex::new(()),
            patience: Duration::from_secs(config.lease_secs.max(1)) / 2,
            max_payload: client.server_info().max_payload,
        }))
    }

    /// Publishes one record if the log's last record is still the last one this process
    /// knows; resolves to the record's sequence.
    async fn publish_fenced(&self, payload: Vec<u8>) -> Result<u64, String> {
        let expected = self.applied.load(Ordering::Acquire);
        let publish = PublishMessage::build()
            .payload(Bytes::from(payload))
            .expected_last_sequence(expected);
        let ack = self
            .js
            .send_publish(self.subject.clone(), publish)
            .await
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(self.patience, ack).await {
            Ok(Ok(ack)) => Ok(ack.sequence),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no acknowledgement in time".to_string()),
        }
    }

    /// The alerting service whose state snapshots carry.
    pub(crate) fn set_alerts(&self, alerts: &Arc<AlertService>) {
        let _ = self.alerts.set(Arc::downgrade(alerts));
    }

    fn valid(&self) -> bool {
        self.valid_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| Instant::now() < t)
    }

    fn step_down(&self) {
        self.leading.store(false, Ordering::Release);
    }

    /// Appends one record, fenced on the last one this process knows. Runs the publish on the
    /// runtime and waits for it: the callers (the detection thread, alerting's store writes)
    /// are synchronous, off the async workers.
    fn append_record(&self, record: &RecordRef<'_>) -> Result<(), String> {
        let payload = serde_json::to_vec(record).map_err(|e| format!("cannot encode a state record: {e}"))?;
        if payload.len() > self.max_payload {
            // Nothing was written and nothing would be: refuse this change, keep the lead.
            return Err(format!(
                "a state record of {} bytes is more than the NATS servers' max_payload ({}); raise max_payload",
                payload.len(),
                self.max_payload
            ));
        }
        let _one_at_a_time = self.append.lock().unwrap_or_else(|e| e.into_inner());
        if !self.leading.load(Ordering::Acquire) {
            return Err("this process is not the active correlator".into());
        }
        // Callable from a plain thread, a blocking-pool thread or an async worker alike.
        let written = tokio::task::block_in_place(|| self.handle.block_on(self.publish_fenced(payload)));
        match written {
            Ok(sequence) => {
                self.applied.fetch_max(sequence, Ordering::AcqRel);
                Ok(())
            }
            Err(e) => {
                // Fenced off (another leader wrote), or unknown whether it landed: either way
                // this process stops, and catches up from the log before it leads again.
                self.step_down();
                Err(format!("state log write failed ({e}); no longer the active correlator"))
            }
        }
    }
}

impl Replica for Replicator {
    fn leading(&self) -> bool {
        self.leading.load(Ordering::Acquire) && self.valid()
    }

    fn may_write(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    fn step_down(&self) {
        self.leading.store(false, Ordering::Release);
    }

    fn append_alerting(&self, changes: &Changes) -> Result<(), String> {
        self.append_record(&RecordRef::Alerting { changes })
    }
}

impl IncidentReplica for Replicator {
    fn snapshot_due(&self) -> bool {
        self.applied.load(Ordering::Acquire) >= self.snapshot_at.load(Ordering::Acquire) + self.snapshot_every
    }

    fn snapshot(&self, incidents: Vec<Incident>) {
        let Some(alerts) = self.alerts.get().and_then(Weak::upgrade) else {
            return;
        };
        // Whatever happens, the next try is a full period away (no retry storm).
        self.snapshot_at
            .store(self.applied.load(Ordering::Acquire), Ordering::Release);
        // The state and the record it stands at are read with every change held off (the
        // alerting changes' lock, then the log's, the order every change takes them); the
        // writing happens after, holding nothing anyone waits on.
        let captured = alerts.with_snapshot(|alerting| {
            let _one_at_a_time = self.append.lock().unwrap_or_else(|e| e.into_inner());
            (self.applied.load(Ordering::Acquire), alerting)
        });
        let (sequence, alerting) = match captured {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the alerting state for a snapshot");
                return;
            }
        };
        let body = match serde_json::to_vec(&StateSnapshot {
            sequence,
            alerting,
            incidents,
        }) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a snapshot");
                return;
            }
        };
        let written = tokio::task::block_in_place(|| {
            self.handle.block_on(async {
                // A deposed leader must not replace a newer snapshot with its older one.
                if !self.leading() {
                    return Err("not the active correlator".to_string());
                }
                if let Ok(Ok(info)) = tokio::time::timeout(STALL_CHECK, self.snapshots.info(SNAPSHOT)).await
                    && info.description.as_deref().and_then(|d| d.parse::<u64>().ok()) >= Some(sequence)
                {
                    return Err("a snapshot as new is there already".to_string());
                }
                let meta = jetstream::object_store::ObjectMetadata {
                    name: SNAPSHOT.to_string(),
                    description: Some(sequence.to_string()),
                    ..Default::default()
                };
                tokio::time::timeout(SNAPSHOT_PATIENCE, self.snapshots.put(meta, &mut body.as_slice()))
                    .await
                    .map_err(|_| "writing the snapshot took too long".to_string())?
                    .map_err(|e| format!("cannot write the snapshot: {e}"))?;
                // Only once the snapshot is whole: the log up to it goes.
                tokio::time::timeout(STALL_CHECK, self.state.purge().sequence(sequence + 1))
                    .await
                    .map_err(|_| "purging the log took too long".to_string())?
                    .map_err(|e| format!("cannot purge the log: {e}"))?;
                Ok(sequence)
            })
        });
        match written {
            Ok(sequence) => {
                self.metrics.rca_snapshots.inc();
                tracing::info!(
                    sequence,
                    "snapshot of the correlator's state written; the log before it purged"
                );
            }
            Err(e) => tracing::warn!(error = %e, "no snapshot of the correlator's state this time"),
        }
    }

    fn append_incidents(&self, incidents: &[Incident]) -> Result<(), (usize, String)> {
        // Several records when one would not fit; an incident too large alone is logged
        // and left out of the log (the standby would miss its latest change) rather than
        // stopping correlation.
        let mut start = 0;
        while start < incidents.len() {
            let mut end = incidents.len();
            loop {
                let size = serde_json::to_vec(&RecordRef::Incidents {
                    incidents: &incidents[start..end],
                })
                .map_or(usize::MAX, |v| v.len());
                if size <= self.max_payload || end == start + 1 {
                    break;
                }
                end = start + (end - start).div_ceil(2);
            }
            match self.append_record(&RecordRef::Incidents {
                incidents: &incidents[start..end],
            }) {
                Err(e) if !self.may_write() => return Err((start, e)),
                Err(e) => {
                    tracing::error!(incident = %incidents[start].id, error = %e, "incident change not replicated")
                }
                Ok(()) => {}
            }
            start = end;
        }
        Ok(())
    }
}

/// What the correlator's tasks share.
pub(crate) struct RcaNode {
    pub replicator: Arc<Replicator>,
    pub js: jetstream::Context,
    pub config: ClusterConfig,
    pub node: String,
    pub alerts: Arc<AlertService>,
    pub incidents: Arc<IncidentStore>,
    pub pipeline: PipelineSender,
    pub metrics: Arc<crate::telemetry::Metrics>,
}

impl RcaNode {
    /// Runs until `stop`: follows the state log and the findings, and takes the lead when
    /// the lease is free. At shutdown a leader gives the lease up, so a standby takes over
    /// at once.
    pub(crate) async fn run(self: Arc<Self>, api: String, stop: CancellationToken) -> anyhow::Result<()> {
        let kv = super::open_bucket(&self.js, &self.config).await?;
        let state = open_state(&self.js, &self.config).await?;
        let findings = open_findings(&self.js, &self.config).await?;
        let followers = CancellationToken::new();
        let state_task = tokio::spawn(Arc::clone(&self).follow_state(state.clone(), followers.clone()));
        let findings_task = tokio::spawn(Arc::clone(&self).follow_findings(findings, followers.clone()));
        self.lead(&kv, &state, api, &stop).await;
        followers.cancel();
        let _ = state_task.await;
        let _ = findings_task.await;
        Ok(())
    }

    /// The lease loop: renew while held, take it when free, lead once caught up.
    async fn lead(&self, kv: &kv::Store, state: &stream::Stream, api: String, stop: &CancellationToken) {
        let lease = Duration::from_secs(self.config.lease_secs);
        let patience = lease / 4;
        let me = Bytes::from(
            serde_json::to_vec(&Member {
                node: self.node.clone(),
                api: Some(api),
            })
            .unwrap_or_default(),
        );
        let mut held: Option<u64> = None;
        let mut ticks = tokio::time::interval(lease / 3);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let sent = Instant::now();
            held = match held {
                Some(revision) => {
                    match tokio::time::timeout(patience, kv.update(LEADER_KEY, me.clone(), revision)).await {
                        Ok(Ok(revision)) => Some(revision),
                        Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                            // A renewal that timed out may have landed: still ours then.
                            match tokio::time::timeout(patience, kv.entry(LEADER_KEY)).await {
                                Ok(Ok(Some(entry))) if entry.value == me && entry.operation == Operation::Put => {
                                    Some(entry.revision)
                                }
                                _ => None,
                            }
                        }
                        // Not proven lost: kept while this clock says the lease runs.
                        _ if self.replicator.valid() => Some(revision),
                        _ => None,
                    }
                }
                None => match tokio::time::timeout(patience, kv.entry(LEADER_KEY)).await {
                    Ok(Ok(
                        None
                        | Some(kv::Entry {
                            operation: Operation::Delete | Operation::Purge,
                            ..
                        }),
                    )) => tokio::time::timeout(patience, kv.create(LEADER_KEY, me.clone()))
                        .await
                        .ok()
                        .and_then(Result::ok),
                    // Ours from before a restart: adopt it.
                    Ok(Ok(Some(entry))) if entry.value == me => {
                        tokio::time::timeout(patience, kv.update(LEADER_KEY, me.clone(), entry.revision))
                            .await
                            .ok()
                            .and_then(Result::ok)
                    }
                    _ => None,
                },
            };
            match held {
                Some(_) => {
                    *self.replicator.valid_until.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(sent + lease - patience);
                    if !self.replicator.leading.load(Ordering::Acquire) {
                        self.take_lead(state, lease / 2).await;
                    }
                }
                None => {
                    if self.replicator.leading.swap(false, Ordering::AcqRel) {
                        tracing::warn!("lost the correlator lease; following");
                        self.follow_now().await;
                    }
                }
            }
        }
        if let Some(revision) = held {
            self.replicator.step_down();
            let _ = kv.delete_expect_revision(LEADER_KEY, Some(revision)).await;
            tracing::info!("gave the correlator lease up");
        }
    }

    /// Leads once everything in the state log is applied here; otherwise tries again at the
    /// next renewal.
    async fn take_lead(&self, state: &stream::Stream, patience: Duration) {
        let last = match tokio::time::timeout(patience, state.get_info()).await {
            Ok(Ok(info)) => info.state.last_sequence,
            _ => {
                tracing::warn!("cannot read the state log's end; not leading yet");
                return;
            }
        };
        let deadline = Instant::now() + patience;
        while self.replicator.applied.load(Ordering::Acquire) < last {
            if Instant::now() >= deadline {
                tracing::info!(
                    applied = self.replicator.applied.load(Ordering::Acquire),
                    last,
                    "holding the correlator lease, still catching up with the state log"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The term record: fenced on the last record applied here, so a write the last
        // leader still had in flight either landed before it (and the follower applies it
        // before this process leads) or is refused after it.
        let term = serde_json::to_vec(&RecordRef::Lead { node: &self.node }).unwrap_or_default();
        match self.replicator.publish_fenced(term).await {
            Ok(sequence) => {
                self.replicator.applied.fetch_max(sequence, Ordering::AcqRel);
            }
            Err(e) => {
                tracing::info!(error = %e, "the state log moved on while taking the lead; catching up first");
                return;
            }
        }
        self.replicator.leading.store(true, Ordering::Release);
        let (alerts, pipeline) = (Arc::clone(&self.alerts), self.pipeline.clone());
        let _ = tokio::task::spawn_blocking(move || {
            alerts.reload();
            pipeline.set_leading(true);
        })
        .await;
        self.metrics.rca_leader.set(1);
        tracing::info!(state_sequence = last, node = %self.node, "leading as the cluster's correlator");
    }

    async fn follow_now(&self) {
        let (alerts, pipeline) = (Arc::clone(&self.alerts), self.pipeline.clone());
        let _ = tokio::task::spawn_blocking(move || {
            alerts.reload();
            pipeline.set_leading(false);
        })
        .await;
        self.metrics.rca_leader.set(0);
    }

    /// Applies the state log to this process's stores while it does not lead (a leader's
    /// own records come back here too, already applied).
    async fn follow_state(self: Arc<Self>, stream: stream::Stream, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let installed = tokio::select! {
                () = stop.cancelled() => return,
                installed = self.install_snapshot_if_behind(&stream) => installed,
            };
            let followed = match installed {
                Ok(()) => {
                    let from = self.replicator.applied.load(Ordering::Acquire) + 1;
                    self.follow_state_once(&stream, from, &stop).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = followed {
                tracing::warn!(error = %e, "following the correlator's state log again");
                pause_before_retry(&stop).await;
            }
        }
    }

    async fn follow_state_once(
        &self,
        stream: &stream::Stream,
        from: u64,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut reader = InOrder::open(stream, DeliverPolicy::ByStartSequence { start_sequence: from }).await?;
        loop {
            let wanted = self.replicator.applied.load(Ordering::Acquire) + 1;
            let Some((sequence, payload)) = reader.next(wanted, stop).await? else {
                return Ok(());
            };
            let applied = self.replicator.applied.load(Ordering::Acquire);
            if sequence <= applied {
                continue;
            }
            if sequence > applied + 1 && !self.replicator.leading() {
                anyhow::bail!(
                    "records {} to {} were purged before this process read them",
                    applied + 1,
                    sequence - 1
                );
            }
            if !self.replicator.leading.load(Ordering::Acquire) {
                // Not applied, not passed: this copy stays behind (and this process does not
                // lead) until the record applies.
                self.apply(payload)
                    .await
                    .with_context(|| format!("cannot apply state record {sequence}"))?;
            }
            self.replicator.applied.fetch_max(sequence, Ordering::AcqRel);
        }
    }

    /// When the log no longer holds the record after the last one applied here (purged
    /// after a snapshot), installs the snapshot: this process's incidents and alerting state
    /// become the snapshot's, and following resumes after it.
    async fn install_snapshot_if_behind(&self, stream: &stream::Stream) -> anyhow::Result<()> {
        let info = tokio::time::timeout(STALL_CHECK, stream.get_info())
            .await
            .map_err(|_| anyhow::anyhow!("no answer for the state log's bounds"))??;
        let applied = self.replicator.applied.load(Ordering::Acquire);
        if applied + 1 >= info.state.first_sequence {
            return Ok(());
        }
        let read = async {
            let mut object = self.replicator.snapshots.get(SNAPSHOT).await?;
            let mut body = Vec::new();
            object.read_to_end(&mut body).await?;
            anyhow::Ok(body)
        };
        let body = tokio::time::timeout(SNAPSHOT_PATIENCE, read)
            .await
            .map_err(|_| anyhow::anyhow!("reading the snapshot took too long"))?
            .context("the log was purged but its snapshot cannot be read")?;
        let snapshot: StateSnapshot = serde_json::from_slice(&body).context("the snapshot does not decode")?;
        anyhow::ensure!(
            snapshot.sequence + 1 >= info.state.first_sequence,
            "the snapshot (up to record {}) is older than the log's start ({}); waiting for a newer one",
            snapshot.sequence,
            info.state.first_sequence
        );
        let sequence = snapshot.sequence;
        let (alerts, incidents) = (Arc::clone(&self.alerts), Arc::clone(&self.incidents));
        tokio::task::spawn_blocking(move || {
            alerts.install_replicated(&snapshot.alerting)?;
            incidents.replace_all(&snapshot.incidents)?;
            anyhow::Ok(())
        })
        .await??;
        self.replicator.applied.store(sequence, Ordering::Release);
        self.replicator.snapshot_at.store(sequence, Ordering::Release);
        self.metrics.rca_snapshot_installs.inc();
        tracing::info!(sequence, "installed the correlator's snapshot");
        Ok(())
    }

    async fn apply(&self, payload: Bytes) -> anyhow::Result<()> {
        let record: Record = serde_json::from_slice(&payload).context("the record does not decode")?;
        let (alerts, incidents) = (Arc::clone(&self.alerts), Arc::clone(&self.incidents));
        tokio::task::spawn_blocking(move || match record {
            Record::Incidents { incidents: list } => {
                incidents.upsert(&list);
                anyhow::Ok(())
            }
            Record::Alerting { changes } => Ok(alerts.apply_replicated(&changes)?),
            Record::Lead { node } => {
                tracing::info!(node = %node, "a correlator took the lead");
                Ok(())
            }
        })
        .await?
    }

    /// Reads every worker's findings into the detection thread: the service graph and the
    /// anomalies always, the correlator while leading. The correlator's clock is the
    /// furthest worker's event time.
    async fn follow_findings(self: Arc<Self>, stream: stream::Stream, stop: CancellationToken) {
        let mut next = 0u64;
        let mut clocks: HashMap<String, i64> = HashMap::new();
        while !stop.is_cancelled() {
            if let Err(e) = self.follow_findings_once(&stream, &mut next, &mut clocks, &stop).await {
                tracing::warn!(error = %e, "following the workers' findings again");
                pause_before_retry(&stop).await;
            }
        }
    }

    async fn follow_findings_once(
        &self,
        stream: &stream::Stream,
        next: &mut u64,
        clocks: &mut HashMap<String, i64>,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let deliver_policy = match *next {
            0 => DeliverPolicy::All,
            n => DeliverPolicy::ByStartSequence { start_sequence: n },
        };
        let mut reader = InOrder::open(stream, deliver_policy).await?;
        while let Some((sequence, payload)) = reader.next((*next).max(1), stop).await? {
            *next = sequence + 1;
            let mut findings: Findings = match serde_json::from_slice(&payload) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(sequence, error = %e, "skipping unreadable findings");
                    continue;
                }
            };
            let clock = clocks.entry(findings.node.clone()).or_insert(i64::MIN);
            *clock = (*clock).max(findings.event_ms);
            findings.event_ms = clocks.values().copied().max().unwrap_or(i64::MIN);
            self.metrics.findings_consumed.inc();
            let pipeline = self.pipeline.clone();
            // The detection thread's queue is bounded: waiting for room here holds the
            // findings back, never drops them.
            tokio::task::block_in_place(move || pipeline.findings(findings));
        }
        Ok(())
    }
}

/// A short pause before a reader starts over (cut short by `stop`).
async fn pause_before_retry(stop: &CancellationToken) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(Duration::from_millis(200)) => {}
    }
}

/// A stream read in order by an ordered consumer. An ordered consumer lives on one NATS
/// server and can go silent for good when that server dies (see the worker's), so one quiet
/// for [`STALL_CHECK`] while the stream holds the sequence the reader wants next is given up
/// as stalled: the caller starts another where it left off.
struct InOrder<'a> {
    stream: &'a stream::Stream,
    messages: jetstream::consumer::pull::Ordered,
    watchdog: tokio::time::Interval,
    last_message: Instant,
}

impl<'a> InOrder<'a> {
    async fn open(stream: &'a stream::Stream, deliver_policy: DeliverPolicy) -> anyhow::Result<InOrder<'a>> {
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy,
                ..OrderedConfig::default()
            })
            .await
            .context("cannot create a consumer")?;
        let messages = consumer.messages().await.context("cannot start consuming")?;
        Ok(InOrder {
            stream,
            messages,
            watchdog: tokio::time::interval(STALL_CHECK),
            last_message: Instant::now(),
        })
    }

    /// The next message's sequence and payload; `None` once `stop` is cancelled. `wanted` is
    /// the sequence the reader needs next (for the stall check).
    async fn next(&mut self, wanted: u64, stop: &CancellationToken) -> anyhow::Result<Option<(u64, Bytes)>> {
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return Ok(None),
                _ = self.watchdog.tick() => {
                    if self.last_message.elapsed() >= STALL_CHECK
                        && let Ok(Ok(info)) = tokio::time::timeout(STALL_CHECK, self.stream.get_info()).await
                        && info.state.last_sequence >= wanted.max(info.state.first_sequence)
                    {
                        anyhow::bail!("the consumer stalled");
                    }
                }
                next = self.messages.next() => {
                    let message = match next {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => anyhow::bail!("{e}"),
                        None => anyhow::bail!("the consumer ended"),
                    };
                    self.last_message = Instant::now();
                    let sequence = message.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence;
                    return Ok(Some((sequence, message.payload.clone())));
                }
            }
        }
    }
}

/// The active correlator as the lease bucket names it, if any.
pub(crate) async fn leader(kv: &kv::Store) -> anyhow::Result<Option<Member>> {
    Ok(kv
        .get(LEADER_KEY)
        .await?
        .and_then(|v| serde_json::from_slice::<Member>(&v).ok()))
}

/// A worker's findings publisher: sends what its detection thread hands it to the findings
/// stream, in order, retrying while the stream cannot take it (the detection thread waits
/// meanwhile: its queue to here is bounded).
pub(crate) async fn publish_findings(
    js: jetstream::Context,
    subject: String,
    max_payload: usize,
    mut rx: tokio::sync::mpsc::Receiver<Findings>,
    metrics: Arc<crate::telemetry::Metrics>,
    stop: CancellationToken,
) {
    // Each message carries an id, the same on every retry: one whose acknowledgement was
    // lost but which landed is stored once (the stream's duplicate window), so the
    // correlator does not count its spans twice.
    let run = crate::timeutil::now_ns();
    let mut sent_parts: u64 = 0;
    while let Some(findings) = rx.recv().await {
        for part in split(findings, max_payload) {
            let payload = Bytes::from(serde_json::to_vec(&part).unwrap_or_default());
            sent_parts += 1;
            let id = format!("{subject}/{run}/{sent_parts}");
            let mut backoff = Duration::from_millis(100);
            loop {
                let message = PublishMessage::build().payload(payload.clone()).message_id(&id);
                let sent = match js.send_publish(subject.clone(), message).await {
                    Ok(ack) => tokio::time::timeout(Duration::from_secs(10), ack)
                        .await
                        .map_err(|_| "no acknowledgement in time".to_string())
                        .and_then(|r| r.map_err(|e| e.to_string())),
                    Err(e) if e.kind() == async_nats::jetstream::context::PublishErrorKind::MaxPayloadExceeded => {
                        // One finding alone larger than the servers take: retrying cannot
                        // help, and holding on would stop this worker's detection.
                        tracing::error!(error = %e, bytes = payload.len(), "findings too large for the NATS servers' max_payload; dropped");
                        break;
                    }
                    Err(e) => Err(e.to_string()),
                };
                match sent {
                    Ok(_) => {
                        metrics.findings_published.inc();
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not publish findings; retrying");
                        tokio::select! {
                            () = stop.cancelled() => {
                                // Shutting down with the stream out of reach: what is left
                                // is given up rather than holding the shutdown.
                                tracing::warn!("findings not published at shutdown");
                                return;
                            }
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }
    }
}

/// `batches` with every batch whose encoding (with room for the message's other fields)
/// exceeds `max_payload` cut in halves until it fits or holds one item, order kept.
fn halves<T: Serialize>(batches: Vec<Vec<T>>, max_payload: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut pending: Vec<Vec<T>> = batches.into_iter().rev().collect();
    while let Some(batch) = pending.pop() {
        let size = serde_json::to_vec(&batch).map_or(0, |v| v.len());
        if size + 256 > max_payload && batch.len() > 1 {
            let mut first = batch;
            let second = first.split_off(first.len() / 2);
            pending.push(second);
            pending.push(first);
            continue;
        }
        out.push(batch);
    }
    out
}

/// Spans per findings message at most (about 60 bytes each on the wire).
const SPANS_PER_MESSAGE: usize = 4_000;

/// Cuts findings into messages that fit the servers' `max_payload`: spans in slices, then
/// anomalies in halves until they fit. The event time goes with the last part.
fn split(findings: Findings, max_payload: usize) -> Vec<Findings> {
    let Findings {
        node,
        event_ms,
        anomalies,
        spans,
    } = findings;
    let part = |anomalies: Vec<Anomaly>, spans: Vec<SpanFact>| Findings {
        node: node.clone(),
        event_ms: i64::MIN,
        anomalies,
        spans,
    };
    let mut parts: Vec<Findings> = halves(
        spans.chunks(SPANS_PER_MESSAGE).map(<[_]>::to_vec).collect(),
        max_payload,
    )
    .into_iter()
    .map(|chunk| part(Vec::new(), chunk))
    .collect();
    parts.extend(
        halves(vec![anomalies], max_payload)
            .into_iter()
            .map(|batch| part(batch, Vec::new())),
    );
    parts.retain(|p| !p.is_empty());
    match parts.last_mut() {
        Some(last) => last.event_ms = event_ms,
        None => parts.push(Findings {
            node,
            event_ms,
            ..Findings::default()
        }),
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(i: u64) -> SpanFact {
        SpanFact {
            service: "cart".into(),
            span_id: i,
            parent_span_id: Some(i + 1),
            end_ms: 1_000,
            duration_s: 0.1,
            error: false,
            peer: None,
        }
    }

    #[test]
    fn findings_split_to_fit_and_the_event_time_rides_the_last_part() {
        let findings = Findings {
            node: "w1".into(),
            event_ms: 42,
            anomalies: Vec::new(),
            spans: (0..10_000).map(span).collect(),
        };
        let parts = split(findings, 1 << 20);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.iter().map(|p| p.spans.len()).sum::<usize>(), 10_000);
        assert!(
            parts
                .iter()
                .all(|p| serde_json::to_vec(p).expect("encode").len() <= 1 << 20)
        );
        assert_eq!(
            parts.iter().map(|p| p.event_ms).collect::<Vec<_>>(),
            vec![i64::MIN, i64::MIN, 42]
        );
        // Spans keep their order across parts.
        let ids: Vec<u64> = parts.iter().flat_map(|p| p.spans.iter().map(|s| s.span_id)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        // Nothing to say still says the time.
        let empty = split(
            Findings {
                node: "w1".into(),
                event_ms: 7,
                ..Findings::default()
            },
            1 << 20,
        );
        assert_eq!(empty.len(), 1);
        assert_eq!((empty[0].event_ms, empty[0].is_empty()), (7, true));
    }

    #[test]
    fn state_records_read_back_as_written() {
        let changes = Changes {
            outbox_deleted: vec!["n-1".into()],
            next_seq: 9,
            ..Changes::default()
        };
        let wire = serde_json::to_vec(&RecordRef::Alerting { changes: &changes }).expect("round trip");
        match serde_json::from_slice::<Record>(&wire).expect("round trip") {
            Record::Alerting { changes } => {
                assert_eq!((changes.outbox_deleted, changes.next_seq), (vec!["n-1".to_string()], 9))
            }
            Record::Incidents { .. } => panic!("read back as incidents"),
            Record::Lead { .. } => panic!("read back as a lead record"),
        }
        let wire = serde_json::to_vec(&RecordRef::Lead { node: "rca-1" }).expect("round trip");
        assert!(
            matches!(serde_json::from_slice::<Record>(&wire).expect("round trip"), Record::Lead { node } if node == "rca-1")
        );
        let wire = serde_json::to_vec(&RecordRef::Incidents { incidents: &[] }).expect("round trip");
        assert!(
            matches!(serde_json::from_slice::<Record>(&wire).expect("round trip"), Record::Incidents { incidents } if incidents.is_empty())
        );
    }
}
