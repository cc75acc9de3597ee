//! A correlator process: the lease loop, and the readers of the state log and the
//! workers' findings.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull::OrderedConfig},
    kv::{self, Operation, UpdateErrorKind},
    stream,
};
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::io::AsyncReadExt as _;
use tokio_util::sync::CancellationToken;

use crate::alerts::{AlertService, Replica};
use crate::cluster::lease::Member;
use crate::config::ClusterConfig;
use crate::pipeline::{Findings, IncidentStore, PipelineSender};

use super::clocks::WorkerClocks;
use super::state::{Record, RecordRef, SNAPSHOT, SNAPSHOT_PATIENCE, StateSnapshot};
use super::{LEADER_KEY, Replicator, STALL_CHECK, open_findings, open_state};

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
        let kv = crate::cluster::open_bucket(&self.js, &self.config).await?;
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
        let mut record: Record = serde_json::from_slice(&payload).context("the record does not decode")?;
        if let Record::Stored { object } = &record {
            // Too large for one message: kept whole in the object store.
            let mut body = Vec::new();
            tokio::time::timeout(SNAPSHOT_PATIENCE, async {
                let mut stored = self.replicator.snapshots.get(object).await?;
                stored.read_to_end(&mut body).await?;
                anyhow::Ok(())
            })
            .await
            .map_err(|_| anyhow::anyhow!("reading the large record {object} took too long"))?
            .with_context(|| format!("cannot read the large record {object}"))?;
            record = serde_json::from_slice(&body).context("the large record does not decode")?;
        }
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
            Record::Stored { object } => anyhow::bail!("the large record {object} names another"),
        })
        .await?
    }

    /// Reads every worker's findings into the detection thread: the service graph and the
    /// anomalies always, the correlator while leading. The correlator's clock is the
    /// furthest worker's event time; what the cluster holds final, the slowest live one's.
    async fn follow_findings(self: Arc<Self>, stream: stream::Stream, stop: CancellationToken) {
        let mut next = 0u64;
        // A worker sends at least once a second; one silent for three lease periods has
        // died or left, and its partitions are another's.
        let mut clocks = WorkerClocks::new(Duration::from_secs(self.config.lease_secs.max(1) * 3));
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
        clocks: &mut WorkerClocks,
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
            let now = std::time::Instant::now();
            clocks.heard(&findings.node, findings.event_ms, now);
            findings.event_ms = clocks.furthest();
            findings.settled_ms = clocks.slowest_live(now);
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
