//! Partition leases in a JetStream key-value bucket. Every entry of the bucket lapses
//! `lease_secs` after its last write (the bucket's max age), so a worker that stops renewing
//! — killed, partitioned away — loses its partitions to the others within one lease period,
//! and nobody has to declare it dead. Writes are compare-and-set on the entry's revision:
//! two workers cannot both renew or both take a partition.
//!
//! Balance: each live worker (a `member.<node>` entry it renews) aims at ⌈P / workers⌉
//! partitions; one holding more gives the extra up, one holding fewer takes free ones.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{
    self,
    kv::{self, Operation, UpdateErrorKind},
};
use bytes::Bytes;
use futures::TryStreamExt as _;

use crate::config::ClusterConfig;

/// A key-value call's failure, or its running out of time.
#[derive(Debug)]
enum Bounded<E> {
    Failed(E),
    TimedOut,
}

impl<E: std::fmt::Display> std::fmt::Display for Bounded<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bounded::Failed(e) => e.fmt(f),
            Bounded::TimedOut => f.write_str("no answer in time"),
        }
    }
}

async fn bounded<T, E>(
    patience: Duration,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, Bounded<E>> {
    match tokio::time::timeout(patience, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Bounded::Failed(e)),
        Err(_) => Err(Bounded::TimedOut),
    }
}

/// What a renewal round changed.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub acquired: Vec<u32>,
    pub lost: Vec<u32>,
    /// The round got as far as taking its share (the bucket answered throughout): only then
    /// does "not held" mean "someone else's".
    pub complete: bool,
}

struct Held {
    revision: u64,
    renewed: Instant,
}

/// What a worker says of itself in its `member.<node>` entry: the query root finds the
/// workers' APIs there.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Member {
    pub node: String,
    /// Base URL of its API (`http://host:port`), when it serves one.
    pub api: Option<String>,
}

/// This worker's leases.
pub(crate) struct Leases {
    kv: kv::Store,
    node: String,
    member: Bytes,
    lease: Duration,
    partitions: u32,
    held: BTreeMap<u32, Held>,
}

fn member_value(node: &str, api: Option<String>) -> Bytes {
    let member = Member {
        node: node.to_string(),
        api,
    };
    Bytes::from(serde_json::to_vec(&member).unwrap_or_default())
}

/// The bucket's keys starting with `prefix`, from the stream's subject counts: one request
/// to the stream's leader. (The key-value `keys()` creates a consumer each time, which
/// stalls for seconds at a time while a NATS server is down.)
async fn keys_under(kv: &kv::Store, prefix: &str) -> anyhow::Result<Vec<String>> {
    let filter = format!("{}{prefix}>", kv.prefix);
    let subjects: Vec<(String, usize)> = kv.stream.info_with_subjects(&filter).await?.try_collect().await?;
    Ok(subjects
        .into_iter()
        .filter_map(|(subject, _)| subject.strip_prefix(&kv.prefix).map(str::to_string))
        .collect())
}

/// The workers with a live membership entry (a deleted one leaves a marker behind, which
/// `get` does not return).
async fn live_members(kv: &kv::Store) -> anyhow::Result<Vec<Member>> {
    let mut members = Vec::new();
    for key in keys_under(kv, "member.").await? {
        if let Some(value) = kv.get(&key).await?
            && let Ok(m) = serde_json::from_slice::<Member>(&value)
        {
            members.push(m);
        }
    }
    Ok(members)
}

/// The live workers and the partitions each holds, as the lease bucket says now.
pub(crate) async fn cluster_view(kv: &kv::Store) -> anyhow::Result<Vec<(Member, Vec<u32>)>> {
    let mut members: Vec<(Member, Vec<u32>)> = live_members(kv).await?.into_iter().map(|m| (m, Vec::new())).collect();
    for key in keys_under(kv, "partition.").await? {
        let Some(p) = key.strip_prefix("partition.").and_then(|p| p.parse().ok()) else {
            continue;
        };
        let Some(owner) = kv.get(&key).await? else { continue };
        if let Some((_, held)) = members.iter_mut().find(|(m, _)| m.node.as_bytes() == owner.as_ref()) {
            held.push(p);
        }
    }
    members.sort_by(|a, b| a.0.node.cmp(&b.0.node));
    for (_, held) in &mut members {
        held.sort_unstable();
    }
    Ok(members)
}

/// Opens the lease bucket, creating it when it does not exist yet.
pub(crate) async fn open_bucket(js: &jetstream::Context, config: &ClusterConfig) -> anyhow::Result<kv::Store> {
    let lease = Duration::from_secs(config.lease_secs);
    let bucket = format!("{}_leases", config.stream);
    // The bucket's stream is created here rather than with `create_key_value`, which
    // first reads the account's limits in a form NATS 2.9 does not send. The layout is
    // the key-value one (ADR-8), so `get_key_value` reads it as a bucket.
    if js.get_stream(format!("KV_{bucket}")).await.is_err() {
        super::retry_while_starting("the lease bucket", || {
            js.get_or_create_stream(jetstream::stream::Config {
                name: format!("KV_{bucket}"),
                description: Some("Vigil workers' partition leases".into()),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                max_age: lease,
                duplicate_window: lease.min(Duration::from_secs(120)),
                storage: jetstream::stream::StorageType::File,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                num_replicas: config.replicas,
                discard: jetstream::stream::DiscardPolicy::New,
                ..jetstream::stream::Config::default()
            })
        })
        .await
        .with_context(|| format!("cannot create the lease bucket {bucket}"))?;
    }
    js.get_key_value(&bucket)
        .await
        .with_context(|| format!("cannot open the lease bucket {bucket}"))
}

fn member_key(node: &str) -> String {
    format!("member.{node}")
}

fn partition_key(p: u32) -> String {
    format!("partition.{p}")
}

impl Leases {
    pub(crate) async fn open(js: &jetstream::Context, config: &ClusterConfig, node: &str) -> anyhow::Result<Leases> {
        let lease = Duration::from_secs(config.lease_secs);
        let kv = open_bucket(js, config).await?;
        Ok(Leases {
            kv,
            node: node.to_string(),
            member: member_value(node, None),
            lease,
            partitions: config.partitions,
            held: BTreeMap::new(),
        })
    }

    /// Announces this worker's API from the next round on.
    pub(crate) fn advertise(&mut self, api: String) {
        self.member = member_value(&self.node, Some(api));
    }

    pub(crate) fn held(&self) -> impl Iterator<Item = u32> + '_ {
        self.held.keys().copied()
    }

    /// One round: announce this worker, renew what it holds, then give up or take
    /// partitions towards its share. Call it a few times per lease period.
    pub(crate) async fn tick(&mut self) -> Changes {
        let mut changes = Changes::default();
        let me = Bytes::from(self.node.clone());
        // Every call is bounded well inside the lease: a call stalled on a lost server must
        // not hold up the renewals after it.
        let patience = self.lease / 4;
        let put = self.kv.put(member_key(&self.node), self.member.clone());
        if let Err(e) = bounded(patience, put).await {
            tracing::warn!(error = %e, "could not renew this worker's membership");
        }
        let held: Vec<u32> = self.held.keys().copied().collect();
        for p in held {
            let Some(h) = self.held.get_mut(&p) else { continue };
            match bounded(patience, self.kv.update(partition_key(p), me.clone(), h.revision)).await {
                Ok(revision) => {
                    h.revision = revision;
                    h.renewed = Instant::now();
                }
                Err(Bounded::Failed(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    // A renewal that timed out here may have landed there: still ours then.
                    match bounded(patience, self.kv.entry(partition_key(p))).await {
                        Ok(Some(entry)) if entry.value == me && entry.operation == Operation::Put => {
                            h.revision = entry.revision;
                            h.renewed = Instant::now();
                        }
                        _ => {
                            tracing::warn!(partition = p, "lease taken by another worker");
                            self.held.remove(&p);
                            changes.lost.push(p);
                        }
                    }
                }
                // Not proven lost: keep it while the lease still runs by this clock.
                Err(e) if h.renewed.elapsed() < self.lease => {
                    tracing::warn!(partition = p, error = %e, "could not renew a lease; retrying");
                }
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "lease ran out without a renewal");
                    self.held.remove(&p);
                    changes.lost.push(p);
                }
            }
        }
        let members = match bounded(patience, live_members(&self.kv)).await {
            Ok(m) => (m.len() as u32).max(1),
            Err(e) => {
                tracing::warn!(error = %e, "could not list the workers; not rebalancing");
                return changes;
            }
        };
        let share = self.partitions.div_ceil(members) as usize;
        while self.held.len() > share {
            let Some((p, h)) = self.held.pop_last() else { break };
            if let Err(e) = bounded(
                patience,
                self.kv.delete_expect_revision(partition_key(p), Some(h.revision)),
            )
            .await
            {
                tracing::warn!(partition = p, error = %e, "could not release a lease; it will lapse");
            }
            tracing::info!(partition = p, share, "released a partition towards an even share");
            changes.lost.push(p);
        }
        // Start looking at a node-dependent place, so workers starting together do not all
        // race for partition 0.
        let offset = super::partition_of(&self.node, self.partitions);
        let mut answered = true;
        for i in 0..self.partitions {
            if self.held.len() >= share {
                break;
            }
            let p = (offset + i) % self.partitions;
            if self.held.contains_key(&p) {
                continue;
            }
            let taken = match bounded(patience, self.kv.entry(partition_key(p))).await {
                Err(_) => {
                    answered = false;
                    None
                }
                // Free: never taken, given up, or lapsed.
                Ok(
                    None
                    | Some(kv::Entry {
                        operation: Operation::Delete | Operation::Purge,
                        ..
                    }),
                ) => bounded(patience, self.kv.create(partition_key(p), me.clone()))
                    .await
                    .ok(),
                // Still ours from before a restart (the lease has not lapsed yet): adopt it.
                Ok(Some(e)) if e.value == me => {
                    bounded(patience, self.kv.update(partition_key(p), me.clone(), e.revision))
                        .await
                        .ok()
                }
                _ => None,
            };
            if let Some(revision) = taken {
                self.held.insert(
                    p,
                    Held {
                        revision,
                        renewed: Instant::now(),
                    },
                );
                changes.acquired.push(p);
            }
        }
        changes.complete = answered;
        changes
    }

    /// Gives every lease and the membership up (at shutdown), so others take over at once
    /// instead of after a lease period.
    pub(crate) async fn release_all(&mut self) {
        while let Some((p, h)) = self.held.pop_first() {
            let _ = self.kv.delete_expect_revision(partition_key(p), Some(h.revision)).await;
        }
        let _ = self.kv.delete(member_key(&self.node)).await;
    }
}
