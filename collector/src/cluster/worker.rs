//! The worker side: holds partitions through leases and consumes each, in stream order,
//! into the local write-ahead log — from there the processing stage indexes it and feeds the
//! detectors exactly as in a single process, and the log's own checkpoints (index commits,
//! detector state) apply. A message is counted as consumed (its partition's checkpoint
//! moves) only once it is durable locally.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull::OrderedConfig},
    stream,
};
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::FuturesOrdered;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::checkpoint::Checkpoints;
use super::lease::Leases;
use super::rebuild::Rebuilding;
use crate::config::ClusterConfig;
use crate::telemetry::Metrics;
use crate::wal::{BatchDedup, Claim, Purge, WalAppender, WalBatch, WalError};

/// Local appends one partition keeps in flight: enough to fill the WAL writer's commit
/// groups, few enough that several partitions stay inside its queue.
const IN_FLIGHT: usize = 64;

/// A consumer quiet this long is checked for being stuck (see [`stalled`]).
const STALL_CHECK: Duration = Duration::from_secs(2);

/// How often the checkpoint file is written while messages come.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// This worker's stable name: `cluster.node_id`, or one generated into the data dir on the
/// first start (a restarted worker must find its own leases and checkpoints again).
pub(crate) fn node_id(config: &ClusterConfig, data_dir: &Path, prefix: &str) -> anyhow::Result<String> {
    if let Some(id) = &config.node_id {
        return Ok(id.clone());
    }
    let path = data_dir.join("cluster").join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim().to_string();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let seed = format!("{}:{}:{}", host.trim(), std::process::id(), crate::timeutil::now_ns());
    let digest = <sha2::Sha256 as sha2::Digest>::digest(seed.as_bytes());
    let id = format!("{prefix}-{}", hex::encode(&digest[..6]));
    std::fs::create_dir_all(path.parent().unwrap_or(data_dir))?;
    std::fs::write(&path, &id).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// What every partition's consumer needs.
#[derive(Clone)]
struct Sink {
    config: ClusterConfig,
    stream: stream::Stream,
    checkpoints: Arc<Checkpoints>,
    appender: WalAppender,
    dedup: Arc<BatchDedup>,
    metrics: Arc<Metrics>,
    /// Partitions whose history is being rebuilt (their spans stay here).
    rebuilding: Arc<Rebuilding>,
}

/// The lease holder and its partitions' consumers.
pub(crate) struct Worker {
    leases: Leases,
    sink: Sink,
    lease: Duration,
}

impl Worker {
    #[allow(clippy::too_many_arguments)] // the shared parts of the process it works with, each once
    pub(crate) async fn start(
        js: &jetstream::Context,
        stream: stream::Stream,
        config: &ClusterConfig,
        data_dir: &Path,
        appender: WalAppender,
        dedup: Arc<BatchDedup>,
        metrics: Arc<Metrics>,
        rebuilding: Arc<Rebuilding>,
    ) -> anyhow::Result<Worker> {
        let node = node_id(config, data_dir, "worker")?;
        let dir = data_dir.join("cluster");
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let checkpoints = Arc::new(Checkpoints::open(&dir.join("checkpoints.json"))?);
        let leases = Leases::open(js, config, &node).await?;
        tracing::info!(node = %node, partitions = config.partitions, "worker joined the cluster");
        Ok(Worker {
            leases,
            sink: Sink {
                config: config.clone(),
                stream,
                checkpoints,
                appender,
                dedup,
                metrics,
                rebuilding,
            },
            lease: Duration::from_secs(config.lease_secs),
        })
    }

    /// Renews leases a few times per lease period, starts and stops partition consumers as
    /// leases come and go, saves checkpoints; at shutdown stops the consumers (their
    /// in-flight appends finish), saves, and gives the leases up.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut consumers: BTreeMap<u32, (CancellationToken, JoinHandle<()>)> = BTreeMap::new();
        // Partitions given up in this run, with the local log entry of their purge: taken
        // again, they are rebuilt only once the indexes have applied it.
        let mut purged: BTreeMap<u32, u64> = BTreeMap::new();
        let mut renew = tokio::time::interval(self.lease / 3);
        let mut save = tokio::time::interval(SAVE_EVERY);
        let mut first = true;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = renew.tick() => {
                    let changes = self.leases.tick().await;
                    for p in changes.lost {
                        self.sink.metrics.stream_leases_lost.inc();
                        self.sink.rebuilding.stop(p);
                        if let Some((stop, task)) = consumers.remove(&p) {
                            stop.cancel();
                            let _ = task.await;
                        }
                        if let Some(lsn) = self.give_up(p, &shutdown).await {
                            purged.insert(p, lsn);
                        }
                    }
                    if first && changes.complete {
                        // What this worker held before a restart and did not get back is
                        // another's now (or will be): its copy must go.
                        first = false;
                        let held: Vec<u32> = self.leases.held().collect();
                        for p in self.sink.checkpoints.known() {
                            if !held.contains(&p) && !changes.acquired.contains(&p)
                                && let Some(lsn) = self.give_up(p, &shutdown).await
                            {
                                purged.insert(p, lsn);
                            }
                        }
                    }
                    for p in changes.acquired {
                        let stop = shutdown.child_token();
                        let after = purged.remove(&p).unwrap_or(0);
                        let task = tokio::spawn(consume(p, self.sink.clone(), after, stop.clone()));
                        consumers.insert(p, (stop, task));
                        tracing::info!(
                            partition = p,
                            from_sequence = self.sink.checkpoints.get(p) + 1,
                            "consuming a partition"
                        );
                    }
                    self.sink.metrics.stream_partitions_owned.set(self.leases.held().count() as i64);
                }
                _ = save.tick() => self.save(),
            }
        }
        for (_, (stop, task)) in std::mem::take(&mut consumers) {
            stop.cancel();
            let _ = task.await;
        }
        self.save();
        self.leases.release_all().await;
        self.sink.metrics.stream_partitions_owned.set(0);
    }

    /// Drops this worker's copy of a partition it no longer holds: the checkpoint goes back
    /// to the beginning (saved first: a crash after it leaves data that the ids still
    /// recognise, never a checkpoint past data that was deleted), then a purge entry in the
    /// local log deletes the partition's documents and ids in log order, then the partition
    /// is forgotten. Returns the purge's log position.
    async fn give_up(&self, partition: u32, shutdown: &CancellationToken) -> Option<u64> {
        self.sink.checkpoints.reset(partition);
        self.save();
        let purge = Purge {
            partition,
            partitions: self.sink.config.partitions,
        }
        .encode();
        let lsn = match append_when_room(&self.sink.appender, purge, shutdown).await {
            Ok(lsn) => lsn,
            Err(e) => {
                // Left as a reset checkpoint: the next start purges it again.
                tracing::error!(partition, error = %e, "could not write a partition's purge");
                return None;
            }
        };
        self.sink.checkpoints.remove(partition);
        self.save();
        tracing::info!(partition, lsn, "gave a partition up; its documents here are purged");
        Some(lsn)
    }

    /// Announces where this worker's API answers (for the query root).
    pub(crate) fn advertise(&mut self, api: String) {
        self.leases.advertise(api);
    }

    fn save(&self) {
        if let Err(e) = self.sink.checkpoints.save() {
            tracing::error!(error = %e, "could not save the stream checkpoints");
        }
    }
}

/// Consumes one partition from its checkpoint until `stop`, starting over from the
/// checkpoint after any error (a server lost, the consumer gone).
async fn consume(partition: u32, sink: Sink, purged_at: u64, stop: CancellationToken) {
    // Rebuilding before the indexes applied this worker's own purge of the partition would
    // find the old batch ids still remembered, and skip the batches as duplicates.
    while (sink.metrics.indexed_lsn.get() as u64) < purged_at {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    // What the stream holds of the partition now was sent to the correlator by whoever
    // held it: its spans are history here. Unknown (the stream's leader does not answer),
    // they are sent again rather than risk holding live ones back.
    match last_sequence(partition, &sink).await {
        Ok(Some(last)) if last > sink.checkpoints.get(partition) => {
            // The last owner sent what ended before it could have stopped (its lease runs out
            // a lease period after its last renewal): older spans are history.
            let lease_ms = i64::try_from(sink.config.lease_secs.saturating_mul(2_000)).unwrap_or(i64::MAX);
            let cutoff = crate::timeutil::now_ms().saturating_sub(lease_ms);
            sink.rebuilding.start(partition, last, cutoff);
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(partition, error = %e, "its history's spans go to the correlator again"),
    }
    let mut backoff = Duration::from_millis(200);
    while !stop.is_cancelled() {
        match consume_once(partition, &sink, &stop).await {
            Ok(()) => return,
            Err(e) => {
                sink.metrics.stream_consumer_restarts.inc();
                tracing::warn!(partition, error = %e, "partition consumer failed; resuming from its checkpoint");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// One run of an ordered consumer. Appends run concurrently (the WAL writer groups them
/// into one fsync) but complete in order, so the checkpoint only ever names a prefix.
async fn consume_once(partition: u32, sink: &Sink, stop: &CancellationToken) -> anyhow::Result<()> {
    let from = sink.checkpoints.get(partition) + 1;
    let consumer = sink
        .stream
        .create_consumer(OrderedConfig {
            filter_subject: super::subject(&sink.config, partition),
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: from },
            ..OrderedConfig::default()
        })
        .await
        .context("cannot create the partition's consumer")?;
    let mut messages = consumer.messages().await.context("cannot start consuming")?;
    let mut in_flight = FuturesOrdered::new();
    let mut failed: Option<anyhow::Error> = None;
    let mut watchdog = tokio::time::interval(STALL_CHECK);
    let mut last_message = tokio::time::Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            // Always polled: a guard on the quiet time would be evaluated once, while the
            // consumer was still busy, and never again once it went silent.
            _ = watchdog.tick() => {
                if in_flight.is_empty()
                    && last_message.elapsed() >= STALL_CHECK
                    && let Some(stalled) = stalled(partition, sink).await
                {
                    failed = Some(stalled);
                    break;
                }
            }
            Some(done) = in_flight.next() => match done {
                Ok(sequence) => consumed(sink, partition, sequence),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            },
            next = messages.next(), if in_flight.len() < IN_FLIGHT => match next {
                Some(Ok(message)) => match message.info() {
                    Ok(info) => {
                        last_message = tokio::time::Instant::now();
                        in_flight.push_back(store(partition, info.stream_sequence, message.payload.clone(), sink.clone()));
                    }
                    Err(e) => {
                        failed = Some(anyhow::anyhow!("a message without stream metadata: {e}"));
                        break;
                    }
                },
                Some(Err(e)) => {
                    failed = Some(anyhow::anyhow!("{e}"));
                    break;
                }
                None => {
                    failed = Some(anyhow::anyhow!("the consumer ended"));
                    break;
                }
            },
        }
    }
    // Let what is in flight land; the checkpoint moves over the prefix that did.
    let mut broken = failed.is_some();
    while let Some(done) = in_flight.next().await {
        match done {
            Ok(sequence) if !broken => consumed(sink, partition, sequence),
            Ok(_) => {}
            Err(e) => {
                broken = true;
                failed.get_or_insert(e);
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A message (and everything before it in the partition) is durable locally.
fn consumed(sink: &Sink, partition: u32, sequence: u64) {
    sink.checkpoints.advance(partition, sequence);
    sink.metrics.stream_consumed.inc();
}

/// Whether a quiet consumer is stuck: the partition holds messages past the checkpoint
/// that it has not delivered. An ordered consumer lives on one server; when that server
/// dies the client is meant to notice missed heartbeats and recreate it, which can take
/// far longer than a lease (or not happen while the recreation keeps failing) — so the
/// worker checks for itself and starts a new consumer from its checkpoint.
async fn stalled(partition: u32, sink: &Sink) -> Option<anyhow::Error> {
    let done = sink.checkpoints.get(partition);
    match last_sequence(partition, sink).await {
        Ok(Some(last)) if last > done => Some(anyhow::anyhow!(
            "the consumer stalled: the stream holds sequence {last} of this partition, the worker has {done}"
        )),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(partition, error = %e, "cannot tell whether the consumer stalled");
            None
        }
    }
}

/// The stream sequence of the partition's last message; `None` for an empty partition (or
/// one whose messages all aged out).
async fn last_sequence(partition: u32, sink: &Sink) -> Result<Option<u64>, String> {
    let subject = super::subject(&sink.config, partition);
    match tokio::time::timeout(STALL_CHECK, sink.stream.get_last_raw_message_by_subject(&subject)).await {
        Ok(Ok(message)) => Ok(Some(message.sequence)),
        Ok(Err(e)) if e.kind() == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Ok(Err(e)) => Err(format!("cannot read the partition's last message: {e}")),
        Err(_) => Err(format!(
            "no answer for the partition's last message within {STALL_CHECK:?}"
        )),
    }
}

/// Appends to the local log, waiting for room while its queue is full (it is shared with the
/// other partitions and the ingest path), unless `give_up` is cancelled.
async fn append_when_room(
    appender: &WalAppender,
    payload: Bytes,
    give_up: &CancellationToken,
) -> Result<u64, WalError> {
    loop {
        match appender.append(payload.clone()).await {
            Err(WalError::QueueFull) if !give_up.is_cancelled() => tokio::time::sleep(Duration::from_millis(5)).await,
            done => return done,
        }
    }
}

/// Makes one message durable in the local log, unless its id says the log has it already
/// (a redelivery after a crash left the checkpoint behind). Resolves to its sequence.
async fn store(partition: u32, sequence: u64, payload: Bytes, sink: Sink) -> anyhow::Result<u64> {
    let batch_id = match WalBatch::decode(&payload) {
        Ok(batch) => batch.batch_id,
        Err(e) => {
            // Nothing can ever read it; holding the partition up for it would stop the rest.
            tracing::error!(sequence, error = %e, "skipping an unreadable stream message");
            sink.rebuilding.stored(partition, sequence, None);
            return Ok(sequence);
        }
    };
    let guard = match batch_id {
        Some(id) => match sink.dedup.claim(&id).await {
            Claim::Duplicate => {
                sink.metrics.duplicate_batches.inc();
                // In the log already, at an entry detection has passed or soon will.
                sink.rebuilding.stored(partition, sequence, None);
                return Ok(sequence);
            }
            Claim::New(guard) => Some(guard),
        },
        None => None,
    };
    // Never given up for shutdown: what a consumer started is finished before the log closes.
    let entry = append_when_room(&sink.appender, payload, &CancellationToken::new())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    sink.rebuilding.stored(partition, sequence, Some(entry));
    if let Some(guard) = guard {
        guard.stored(crate::timeutil::now_ns() / 1_000_000_000);
    }
    Ok(sequence)
}
