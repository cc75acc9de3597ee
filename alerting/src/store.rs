//! Durable alerting state in redb.
//!
//! Why redb rather than SQLite: the state is a handful of keyed collections written together
//! (an alert, its groups, the outbox entries they produced, audit lines), which is exactly a
//! multi-table ACID transaction in a key-value store; redb is pure Rust (no C toolchain, no
//! bundled SQLite build in CI), commits with fsync by default, and recovers from a crash to
//! the last committed transaction. We need no ad-hoc queries: the API reads from memory.
//!
//! Values are JSON: readable with any redb tool, and tolerant of added fields.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::alert::AuditEntry;
use crate::engine::{Changes, Snapshot};
use crate::history::Delivery;

const ALERTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("alerts");
const GROUPS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("groups");
const SILENCES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("silences");
const OUTBOX: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("outbox");
const NONCES: TableDefinition<'_, &str, i64> = TableDefinition::new("nonces");
const AUDIT: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("audit");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const DELIVERIES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("deliveries");
const SCHEDULES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("schedules");

/// Delivery attempts kept: the oldest go first past this (a busy installation sends a few
/// thousand notifications a day; this is weeks of them, a few tens of MB at most).
pub const MAX_DELIVERIES: u64 = 100_000;

/// Why the alerting database could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed (I/O, corruption it detected, a transaction that could not commit).
    #[error("alerting database: {0}")]
    Db(#[from] redb::Error),
    /// An entry does not decode: named so it can be found and removed.
    #[error("alerting database holds an unreadable {table} entry {key:?}: {reason}")]
    Corrupt {
        /// The redb table: `alerts`, `groups`, `silences`, `outbox`, `schedules`, `audit` or
        /// `deliveries`.
        table: &'static str,
        /// The entry's key (an id, a name, or a sequence number in decimal).
        key: String,
        /// The decoder's message.
        reason: String,
    },
    /// A value could not be encoded (a bug, not a disk problem).
    #[error("could not encode {0}")]
    Encode(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The durable alerting state in one redb file: every change in one transaction.
pub struct AlertStore {
    db: Database,
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Encode(e.to_string()))
}

fn decode<T: DeserializeOwned>(table: &'static str, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table,
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// Writes one batch of changes into an open transaction.
fn write(tx: &redb::WriteTransaction, ch: &Changes) -> Result<(), StoreError> {
    let mut t = tx.open_table(ALERTS)?;
    for a in &ch.alerts {
        t.insert(a.id.as_str(), encode(a)?.as_slice())?;
    }
    for id in &ch.alerts_deleted {
        t.remove(id.as_str())?;
    }
    let mut t = tx.open_table(GROUPS)?;
    for g in &ch.groups {
        t.insert(g.key.as_str(), encode(g)?.as_slice())?;
    }
    for k in &ch.groups_deleted {
        t.remove(k.as_str())?;
    }
    let mut t = tx.open_table(SILENCES)?;
    for s in &ch.silences {
        t.insert(s.id.as_str(), encode(s)?.as_slice())?;
    }
    let mut t = tx.open_table(OUTBOX)?;
    for n in &ch.outbox {
        t.insert(n.id.as_str(), encode(n)?.as_slice())?;
    }
    for id in &ch.outbox_deleted {
        t.remove(id.as_str())?;
    }
    let mut t = tx.open_table(NONCES)?;
    for (n, exp) in &ch.nonces {
        t.insert(n.as_str(), *exp)?;
    }
    let mut t = tx.open_table(AUDIT)?;
    for e in &ch.audit {
        t.insert(e.seq, encode(e)?.as_slice())?;
    }
    let mut t = tx.open_table(SCHEDULES)?;
    for x in &ch.schedules {
        t.insert(x.name.as_str(), encode(x)?.as_slice())?;
    }
    for name in &ch.schedules_deleted {
        t.remove(name.as_str())?;
    }
    let mut t = tx.open_table(DELIVERIES)?;
    for d in &ch.deliveries {
        t.insert(d.seq, encode(d)?.as_slice())?;
    }
    while t.len()? > MAX_DELIVERIES {
        t.pop_first()?;
    }
    tx.open_table(META)?.insert("seq", ch.next_seq)?;
    Ok(())
}

impl AlertStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<AlertStore, StoreError> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        {
            tx.open_table(ALERTS)?;
            tx.open_table(GROUPS)?;
            tx.open_table(SILENCES)?;
            tx.open_table(OUTBOX)?;
            tx.open_table(NONCES)?;
            tx.open_table(AUDIT)?;
            tx.open_table(META)?;
            tx.open_table(DELIVERIES)?;
            tx.open_table(SCHEDULES)?;
        }
        tx.commit()?;
        Ok(AlertStore { db })
    }

    /// Everything needed to resume.
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let tx = self.db.begin_read()?;
        fn all<T: DeserializeOwned>(
            tx: &redb::ReadTransaction,
            def: TableDefinition<'_, &str, &[u8]>,
            name: &'static str,
        ) -> Result<Vec<T>, StoreError> {
            let t = tx.open_table(def)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                out.push(decode(name, k.value(), v.value())?);
            }
            Ok(out)
        }
        let nonces = {
            let t = tx.open_table(NONCES)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                out.push((k.value().to_string(), v.value()));
            }
            out
        };
        let next_seq = tx.open_table(META)?.get("seq")?.map_or(0, |v| v.value());
        Ok(Snapshot {
            alerts: all(&tx, ALERTS, "alerts")?,
            groups: all(&tx, GROUPS, "groups")?,
            silences: all(&tx, SILENCES, "silences")?,
            outbox: all(&tx, OUTBOX, "outbox")?,
            schedules: all(&tx, SCHEDULES, "schedules")?,
            nonces,
            next_seq,
        })
    }

    /// Writes one batch of changes in one transaction (all or nothing, fsynced).
    pub fn apply(&self, ch: &Changes) -> Result<(), StoreError> {
        if ch.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write()?;
        write(&tx, ch)?;
        tx.commit()?;
        Ok(())
    }

    /// Replaces the state with `s` in one transaction: what a cluster's standby correlator
    /// does with the active one's snapshot. The audit log and the delivery history are
    /// history, not state: they are kept as they are.
    pub fn replace(&self, s: &Snapshot) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        for def in [ALERTS, GROUPS, SILENCES, OUTBOX, SCHEDULES] {
            tx.delete_table(def)?;
        }
        tx.delete_table(NONCES)?;
        let state = Changes {
            alerts: s.alerts.clone(),
            groups: s.groups.clone(),
            silences: s.silences.clone(),
            outbox: s.outbox.clone(),
            nonces: s.nonces.clone(),
            schedules: s.schedules.clone(),
            next_seq: s.next_seq,
            ..Changes::default()
        };
        write(&tx, &state)?;
        tx.commit()?;
        Ok(())
    }

    /// Audit entries with `seq > after`, oldest first, at most `limit`.
    pub fn audit(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(AUDIT)?;
        let mut out = Vec::new();
        for row in t.range(after.saturating_add(1)..)? {
            let (k, v) = row?;
            out.push(decode("audit", &k.value().to_string(), v.value())?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Delivery attempts that `keep` accepts, newest first, at most `limit`.
    pub fn deliveries(&self, keep: impl Fn(&Delivery) -> bool, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(DELIVERIES)?;
        let mut out = Vec::new();
        for row in t.iter()?.rev() {
            let (k, v) = row?;
            let d: Delivery = decode("deliveries", &k.value().to_string(), v.value())?;
            if keep(&d) {
                out.push(d);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertInput;
    use crate::config::AlertingConfig;
    use crate::engine::Alerting;

    #[test]
    fn delivery_history_survives_reopening_newest_first_by_alert() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alerting.redb");
        let t0 = 1_795_392_000_000;
        let input = |name: &str| AlertInput {
            labels: [("alertname".to_string(), name.to_string())].into(),
            ..AlertInput::default()
        };
        let (x, y) = {
            let store = AlertStore::open(&path).expect("open");
            let mut a = Alerting::new(AlertingConfig::default()).expect("config");
            let (x, y) = (a.upsert(input("X"), t0), a.upsert(input("Y"), t0));
            a.tick(t0 + 30_000);
            for n in a.due(t0 + 30_000) {
                a.failed(&n.id, "connection refused", t0 + 30_000);
                a.delivered(&n.id, "200 OK", t0 + 32_000);
            }
            store.apply(&a.take_changes()).expect("apply");
            (x, y)
        };
        let store = AlertStore::open(&path).expect("reopen");
        let of_x = store.deliveries(|d| d.alerts.contains(&x), 10).expect("read");
        let seen: Vec<(&str, u32)> = of_x.iter().map(|d| (d.answer.as_str(), d.attempt)).collect();
        assert_eq!(seen, [("200 OK", 2), ("connection refused", 1)]);
        assert!(of_x.iter().all(|d| !d.alerts.contains(&y)), "X and Y group apart");
        assert_eq!(store.deliveries(|_| true, 3).expect("read").len(), 3);
    }

    /// A standby correlator installs the active one's snapshot: its own state goes, the
    /// snapshot's comes, its history stays; the snapshot travels as JSON.
    #[test]
    fn a_snapshot_replaces_the_state_and_keeps_the_history() {
        let t0 = 1_795_392_000_000;
        let input = |name: &str| AlertInput {
            labels: [("alertname".to_string(), name.to_string())].into(),
            ..AlertInput::default()
        };
        let leader_dir = tempfile::tempdir().expect("tempdir");
        let leader = AlertStore::open(&leader_dir.path().join("alerting.redb")).expect("open");
        let mut a = Alerting::new(AlertingConfig::default()).expect("config");
        let x = a.upsert(input("X"), t0);
        a.ack(&x, "ana", t0 + 1_000).expect("ack");
        leader.apply(&a.take_changes()).expect("apply");
        let wire = serde_json::to_vec(&leader.load().expect("load")).expect("encode");

        let standby_dir = tempfile::tempdir().expect("tempdir");
        let standby = AlertStore::open(&standby_dir.path().join("alerting.redb")).expect("open");
        let mut b = Alerting::new(AlertingConfig::default()).expect("config");
        let stale = b.upsert(input("Stale"), t0);
        b.ack(&stale, "bo", t0 + 1_000).expect("ack");
        standby.apply(&b.take_changes()).expect("apply");
        let audit_before = standby.audit(0, 100).expect("audit").len();
        assert!(audit_before > 0);

        let snapshot: Snapshot = serde_json::from_slice(&wire).expect("decode");
        standby.replace(&snapshot).expect("replace");
        let now = standby.load().expect("load");
        let ids: Vec<&str> = now.alerts.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, [x.as_str()], "only the snapshot's alerts");
        assert_eq!(now.alerts[0].acknowledged_by.as_deref(), Some("ana"));
        assert_eq!(now.next_seq, snapshot.next_seq);
        assert_eq!(
            standby.audit(0, 100).expect("audit").len(),
            audit_before,
            "history kept"
        );
    }

    #[test]
    fn state_survives_reopening_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alerting.redb");
        let t0 = 1_795_392_000_000;
        let id = {
            let store = AlertStore::open(&path).expect("open");
            let mut a = Alerting::new(AlertingConfig::default()).expect("config");
            let id = a.upsert(
                AlertInput {
                    labels: [("alertname".to_string(), "X".to_string())].into(),
                    ..AlertInput::default()
                },
                t0,
            );
            a.tick(t0 + 30_000);
            a.ack(&id, "ana", t0 + 31_000).expect("ack");
            store.apply(&a.take_changes()).expect("apply");
            id
        };
        let store = AlertStore::open(&path).expect("reopen");
        let snap = store.load().expect("load");
        assert_eq!(snap.alerts.len(), 1);
        assert_eq!(snap.alerts[0].acknowledged_by.as_deref(), Some("ana"));
        assert_eq!(snap.outbox.len(), 1, "the undelivered notification is still queued");
        assert_eq!(snap.groups.len(), 1);
        let audit = store.audit(0, 10).expect("audit");
        assert_eq!(audit.len(), 1);
        assert_eq!(
            (audit[0].action.as_str(), audit[0].target.as_str()),
            ("ack", id.as_str())
        );
        assert!(snap.next_seq >= audit[0].seq);
    }

    #[test]
    fn an_escalation_resumes_after_reopening_the_database_and_nothing_is_resent() {
        use crate::config::{EscalationPolicyConfig, EscalationStepConfig, ReceiverConfig};
        let cfg = || {
            let mut c = AlertingConfig::default();
            c.route.escalation = Some("page".into());
            c.route.group_wait_secs = Some(10);
            c.receivers.push(ReceiverConfig {
                name: "boss".into(),
                ..ReceiverConfig::default()
            });
            c.escalation_policies = vec![EscalationPolicyConfig {
                name: "page".into(),
                steps: vec![EscalationStepConfig {
                    wait_secs: 60,
                    receivers: vec!["boss".into()],
                    schedules: Vec::new(),
                }],
                repeat: 0,
            }];
            c
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alerting.redb");
        let t0 = 1_795_392_000_000;
        let input = AlertInput {
            labels: [("alertname".to_string(), "Down".to_string())].into(),
            ..AlertInput::default()
        };
        {
            let store = AlertStore::open(&path).expect("open");
            let mut a = Alerting::new(cfg()).expect("config");
            a.upsert(input.clone(), t0);
            a.tick(t0 + 10_000);
            let first = a.due(t0 + 10_000);
            assert_eq!(first.len(), 1);
            a.delivered(&first[0].id, "200 OK", t0 + 10_000);
            store.apply(&a.take_changes()).expect("apply");
            // The process dies here, 20 s into a 60 s escalation wait.
        }
        let store = AlertStore::open(&path).expect("reopen");
        let mut b = Alerting::new(cfg()).expect("config");
        b.restore(store.load().expect("load"));
        b.upsert(input.clone(), t0 + 30_000);
        b.tick(t0 + 30_000);
        assert!(
            b.due(t0 + 30_000).is_empty(),
            "the delivered first notification is not sent again"
        );
        b.upsert(input, t0 + 70_000);
        b.tick(t0 + 70_000);
        let due = b.due(t0 + 70_000);
        assert_eq!(due.iter().map(|n| n.receiver.as_str()).collect::<Vec<_>>(), ["boss"]);
    }
}
