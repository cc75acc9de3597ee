//! The correlator's replicated state: the records of its log, the fenced writer that
//! says whether this process leads, and the snapshots that keep the log short.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, message::PublishMessage, object_store::ObjectStore, stream};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use vigil_alerting::Changes;
use vigil_rca::Incident;

use crate::alerts::{AlertService, Replica};
use crate::config::ClusterConfig;
use crate::pipeline::IncidentReplica;

use super::{STALL_CHECK, open_state, state_subject};

/// The snapshot's name in its object store.
pub(super) const SNAPSHOT: &str = "state";
/// Longest a snapshot's write or read may take.
pub(super) const SNAPSHOT_PATIENCE: Duration = Duration::from_secs(60);

fn snapshot_bucket(config: &ClusterConfig) -> String {
    format!("{}_rca_snapshot", config.stream)
}

/// The active correlator's whole replicated state as of log record `sequence`.
#[derive(Serialize, Deserialize)]
pub(super) struct StateSnapshot {
    pub sequence: u64,
    pub alerting: vigil_alerting::Snapshot,
    pub incidents: Vec<Incident>,
}

async fn open_snapshots(js: &jetstream::Context, config: &ClusterConfig) -> anyhow::Result<ObjectStore> {
    let bucket = snapshot_bucket(config);
    if let Ok(store) = js.get_object_store(&bucket).await {
        return Ok(store);
    }
    crate::cluster::retry_while_starting("the correlator's snapshot store", || {
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

/// One record of the state log, as written.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum RecordRef<'a> {
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
    /// A record too large for one message, kept whole in the object store under `object`.
    Stored {
        object: &'a str,
    },
}

/// One record of the state log, as read.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Record {
    Incidents { incidents: Vec<Incident> },
    Alerting { changes: Box<Changes> },
    Lead { node: String },
    Stored { object: String },
}

/// Room left in a message for its headers when deciding whether a record fits.
const HEADROOM: usize = 4 * 1024;
/// Names of records kept in the object store start with this, then the log sequence they
/// were written to follow.
const STORED_PREFIX: &str = "record-";

/// The object name of a record written after log record `after`: ordered by it, unique
/// per write (a deposed leader's attempt at the same place leaves a name of its own).
fn stored_name(after: u64) -> String {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let write = WRITES.fetch_add(1, Ordering::Relaxed);
    format!("{STORED_PREFIX}{after:020}-{}-{write}", crate::timeutil::now_ns())
}

/// The log record a stored record's object was written after, from its name.
pub(super) fn stored_after(name: &str) -> Option<u64> {
    name.strip_prefix(STORED_PREFIX)?.split('-').next()?.parse().ok()
}

/// The active correlator's writer to the state log, and the one place that says whether this
/// process leads.
pub(crate) struct Replicator {
    js: jetstream::Context,
    subject: String,
    handle: Handle,
    /// The last record of the log this process has applied or written.
    pub(super) applied: AtomicU64,
    pub(super) leading: AtomicBool,
    /// Until when the lease is surely still this process's, by its own clock (each renewal
    /// counts from before it was sent, less a margin).
    pub(super) valid_until: Mutex<Option<Instant>>,
    /// Appends go one at a time: each names the one before it.
    append: Mutex<()>,
    patience: Duration,
    max_payload: usize,
    state: stream::Stream,
    pub(super) snapshots: ObjectStore,
    snapshot_every: u64,
    /// The log record the last snapshot (written or installed here) covers.
    pub(super) snapshot_at: AtomicU64,
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
    pub(super) async fn publish_fenced(&self, payload: Vec<u8>) -> Result<u64, String> {
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

    pub(super) fn valid(&self) -> bool {
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
    ///
    /// A record too large for one message (a change to a group of thousands of alerts) is
    /// written whole to the object store first and the log gets a small record naming it,
    /// fenced like any other: the log's order and fencing stay in the stream.
    fn append_record(&self, record: &RecordRef<'_>) -> Result<(), String> {
        let payload = serde_json::to_vec(record).map_err(|e| format!("cannot encode a state record: {e}"))?;
        let _one_at_a_time = self.append.lock().unwrap_or_else(|e| e.into_inner());
        if !self.leading.load(Ordering::Acquire) {
            return Err("this process is not the active correlator".into());
        }
        // Callable from a plain thread, a blocking-pool thread or an async worker alike.
        let written = tokio::task::block_in_place(|| {
            self.handle.block_on(async {
                if payload.len() + HEADROOM <= self.max_payload {
                    return self.publish_fenced(payload).await;
                }
                let name = stored_name(self.applied.load(Ordering::Acquire));
                let meta = jetstream::object_store::ObjectMetadata {
                    name: name.clone(),
                    chunk_size: Some(self.chunk_size()),
                    ..Default::default()
                };
                tokio::time::timeout(SNAPSHOT_PATIENCE, self.snapshots.put(meta, &mut payload.as_slice()))
                    .await
                    .map_err(|_| "writing a large record took too long".to_string())?
                    .map_err(|e| format!("cannot write a large record: {e}"))?;
                let pointer = serde_json::to_vec(&RecordRef::Stored { object: &name })
                    .map_err(|e| format!("cannot encode a state record: {e}"))?;
                self.publish_fenced(pointer).await
            })
        });
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

impl Replicator {
    /// Object chunks that fit the servers' messages (the store's default, 128 KiB, is more
    /// than servers configured below it take).
    fn chunk_size(&self) -> usize {
        self.max_payload.saturating_sub(HEADROOM).clamp(1024, 128 * 1024)
    }

    /// Deletes, in the background, the large records whose log records the purge up to
    /// `sequence` took (and any a deposed leader left behind): the snapshot holds what they
    /// said. Best effort, bounded in time: whatever is left goes at the next snapshot.
    fn drop_stored_before(&self, sequence: u64) {
        let store = self.snapshots.clone();
        self.handle.spawn(async move {
            let listed = tokio::time::timeout(STALL_CHECK, async {
                let mut names = Vec::new();
                let mut list = store.list().await.map_err(|e| e.to_string())?;
                while let Some(info) = futures::StreamExt::next(&mut list).await {
                    let info = info.map_err(|e| e.to_string())?;
                    if stored_after(&info.name).is_some_and(|after| after < sequence) {
                        names.push(info.name);
                    }
                }
                Ok::<Vec<String>, String>(names)
            })
            .await;
            let names = match listed {
                Ok(Ok(names)) => names,
                Ok(Err(e)) => return tracing::warn!(error = %e, "cannot list the large records; next snapshot"),
                Err(_) => return tracing::warn!("listing the large records took too long; next snapshot"),
            };
            for name in &names {
                match tokio::time::timeout(STALL_CHECK, store.delete(name)).await {
                    Ok(Ok(())) => tracing::debug!(object = %name, "large record the snapshot covers deleted"),
                    Ok(Err(e)) => {
                        tracing::warn!(object = %name, error = %e, "cannot delete a large record; next snapshot")
                    }
                    Err(_) => tracing::warn!(object = %name, "deleting a large record took too long; next snapshot"),
                }
            }
        });
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
                    chunk_size: Some(self.chunk_size()),
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
                self.drop_stored_before(sequence);
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

#[cfg(test)]
mod tests {
    use super::*;

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
            _ => panic!("read back as another kind of record"),
        }
        let wire = serde_json::to_vec(&RecordRef::Lead { node: "rca-1" }).expect("round trip");
        assert!(
            matches!(serde_json::from_slice::<Record>(&wire).expect("round trip"), Record::Lead { node } if node == "rca-1")
        );
        let wire = serde_json::to_vec(&RecordRef::Incidents { incidents: &[] }).expect("round trip");
        assert!(
            matches!(serde_json::from_slice::<Record>(&wire).expect("round trip"), Record::Incidents { incidents } if incidents.is_empty())
        );
        let name = stored_name(41);
        let wire = serde_json::to_vec(&RecordRef::Stored { object: &name }).expect("round trip");
        assert!(
            matches!(serde_json::from_slice::<Record>(&wire).expect("round trip"), Record::Stored { object } if object == name)
        );
    }

    #[test]
    fn a_large_record_is_named_by_where_it_was_written_and_sorts_so() {
        let (a, b) = (stored_name(9), stored_name(10));
        assert_eq!((stored_after(&a), stored_after(&b)), (Some(9), Some(10)));
        assert!(a < b, "names sort in log order: {a} {b}");
        assert_ne!(stored_name(9), stored_name(9), "each write its own object");
        assert_eq!(stored_after(SNAPSHOT), None, "the snapshot is never taken for one");
    }
}
