//! The collector's side of alerting: the [`Alerting`] state machine behind a mutex, its
//! redb store, the delivery loop that sends notifications to receivers, and the bridge that
//! turns anomalies into alerts.
//!
//! Every change is persisted (one redb transaction) before it is acknowledged to an API
//! caller and before the notification it produced is sent; a notification leaves the outbox
//! only once a receiver answered 2xx. Deliveries run concurrently, each with its receiver's
//! timeout, so one slow or dead receiver delays nobody else.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use vigil_alerting::Delivery;
use vigil_alerting::Schedule;
use vigil_alerting::{ActionError, ActionOutcome, Alerting, Notification};
use vigil_alerting::{
    ActionLink, Context, LinkAction, LinkError, SIGNATURE_HEADER, TIMESTAMP_HEADER, feed_token, nonce_for,
    notification_body, notification_email, sign_body, sign_link, verify_feed_token, verify_link,
};
use vigil_alerting::{Alert, AlertInput, AuditEntry, Silence};
use vigil_alerting::{AlertStore, StoreError};
use vigil_alerting::{AlertingConfig, ReceiverConfig, ReceiverKind};
use vigil_detectors::Severity;
use vigil_rca::{Incident, IncidentStatus};

mod delivery;
mod email;
mod incidents;

use crate::config::Secret;
use crate::timeutil::now_ms;

/// Header carrying the notification id, the same on every retry: receivers dedup on it.
pub(crate) const IDEMPOTENCY_HEADER: &str = "x-vigil-idempotency-key";
const DEFAULT_RECEIVER_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of a receiver's answer read for the notification history.
const ANSWER_BYTES: usize = 1024;
/// Longest sleep of the delivery loop when nothing is due (it also wakes on changes).
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// An open incident's alert stays firing this long past its latest update.
const INCIDENT_ALERT_TTL_MS: i64 = 60 * 60_000;

/// The replicated log a cluster's correlator (`--role rca`) writes its alerting changes to
/// before it applies them, so a standby holds the same alerts, silences and outbox, and a
/// notification delivered before a failover is not sent again after it. None in one process.
pub(crate) trait Replica: Send + Sync {
    /// Whether this process may send notifications now: it leads, and its lease surely
    /// still runs by its own clock.
    fn leading(&self) -> bool;
    /// Whether this process may write to the replicated log: it leads (each write is fenced
    /// by the log itself, so a lease running short does not make a write unsafe).
    fn may_write(&self) -> bool;
    /// Writes `changes` to the replicated log. An error means it may not have landed and
    /// this process is no longer the leader: it stops changing anything.
    fn append_alerting(&self, changes: &vigil_alerting::Changes) -> Result<(), String>;
    /// This process can no longer keep what it wrote (its own store failed): stop leading.
    fn step_down(&self);
}

pub(crate) struct AlertService {
    engine: Mutex<Alerting>,
    /// Kept to rebuild the engine from the store ([`AlertService::reload`]).
    config: AlertingConfig,
    /// Set when the store changed under the engine (a standby applying the leader's
    /// changes): the engine is rebuilt from the store at its next use.
    stale: std::sync::atomic::AtomicBool,
    replica: std::sync::OnceLock<Arc<dyn Replica>>,
    /// In a cluster, changes go one at a time through this lock, and the engine's lock is
    /// not held while a change travels to the replicated log: readers (some on the
    /// runtime's own threads, which drive that network call) never wait on the network.
    commit: Mutex<()>,
    store: AlertStore,
    receivers: BTreeMap<String, ReceiverConfig>,
    client: reqwest::Client,
    link_secret: Secret,
    signing_secret: Secret,
    /// Set once the API address is bound, unless configured.
    external_url: std::sync::RwLock<String>,
    link_ttl_ms: i64,
    wake: Notify,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum AlertServiceError {
    #[error(transparent)]
    Action(#[from] ActionError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Link(#[from] LinkError),
    /// A cluster's standby correlator: alerting state changes only on the active one.
    #[error(
        "this node is a standby correlator: alerting state changes only on the cluster's active correlator (GET /api/v1/cluster names it)"
    )]
    NotLeader,
    /// The change could not be written to the cluster's replicated log.
    #[error("the alerting change could not be replicated: {0}")]
    Replication(String),
}

/// A secret from the environment, or one generated once and kept in `path` (0600).
pub(crate) fn load_or_create_secret(env: &str, path: &Path) -> std::io::Result<Secret> {
    if let Ok(v) = std::env::var(env)
        && !v.is_empty()
    {
        return Ok(Secret::new(v));
    }
    if let Ok(v) = std::fs::read_to_string(path) {
        let v = v.trim().to_string();
        if !v.is_empty() {
            return Ok(Secret::new(v));
        }
    }
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    let secret = hex::encode(bytes);
    let tmp = path.with_extension("tmp");
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp)?;
        std::io::Write::write_all(&mut f, secret.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    tracing::info!(path = %path.display(), env, "generated a new secret and stored it (set the variable to choose your own)");
    Ok(Secret::new(secret))
}

impl AlertService {
    pub(crate) fn open(
        cfg: AlertingConfig,
        dir: &Path,
        external_url: String,
        link_ttl_secs: u64,
    ) -> anyhow::Result<Arc<AlertService>> {
        std::fs::create_dir_all(dir)?;
        let store = AlertStore::open(&dir.join("alerting.redb"))?;
        for (i, r) in cfg.receivers.iter().enumerate() {
            if r.kind == ReceiverKind::Email {
                email::check(r).map_err(|e| anyhow::anyhow!("alerting.receivers[{i}].{e}"))?;
            }
        }
        let receivers = cfg.receivers.iter().map(|r| (r.name.clone(), r.clone())).collect();
        let mut engine = Alerting::new(cfg.clone()).map_err(|e| anyhow::anyhow!("alerting.{e}"))?;
        engine.restore(store.load()?);
        let link_secret = load_or_create_secret("VIGIL_LINK_SECRET", &dir.join("link-secret"))?;
        let signing_secret = load_or_create_secret("VIGIL_WEBHOOK_SECRET", &dir.join("webhook-secret"))?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Arc::new(AlertService {
            engine: Mutex::new(engine),
            config: cfg,
            stale: std::sync::atomic::AtomicBool::new(false),
            replica: std::sync::OnceLock::new(),
            commit: Mutex::new(()),
            store,
            receivers,
            client,
            link_secret,
            signing_secret,
            external_url: std::sync::RwLock::new(external_url.trim_end_matches('/').to_string()),
            link_ttl_ms: i64::try_from(link_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            wake: Notify::new(),
        }))
    }

    /// Where links in notifications point (the API as users reach it).
    pub(crate) fn set_external_url(&self, url: &str) {
        *self.external_url.write().unwrap_or_else(|e| e.into_inner()) = url.trim_end_matches('/').to_string();
    }

    fn external_url(&self) -> String {
        self.external_url.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn lock(&self) -> MutexGuard<'_, Alerting> {
        let mut engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        if self.stale.swap(false, std::sync::atomic::Ordering::AcqRel) {
            match self.store.load() {
                Ok(snapshot) => {
                    // The configuration was accepted when the service opened.
                    if let Ok(mut fresh) = Alerting::new(self.config.clone()) {
                        fresh.restore(snapshot);
                        *engine = fresh;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not reload the alerting state");
                    self.stale.store(true, std::sync::atomic::Ordering::Release);
                }
            }
        }
        engine
    }

    /// Makes this service write every change to `replica` before applying it, and change
    /// nothing (nor send anything) while the replica says another process leads.
    pub(crate) fn set_replica(&self, replica: Arc<dyn Replica>) {
        let _ = self.replica.set(replica);
    }

    /// Whether this process sends notifications: always in one process; in a cluster, only
    /// on the active correlator.
    pub(crate) fn leading(&self) -> bool {
        self.replica.get().is_none_or(|r| r.leading())
    }

    /// A standby's copy of a change the leader made: written to the store; the engine is
    /// rebuilt from the store when next used.
    pub(crate) fn apply_replicated(&self, changes: &vigil_alerting::Changes) -> Result<(), StoreError> {
        self.store.apply(changes)?;
        self.stale.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// A standby's copy of the leader's snapshot: the store's state replaced by it (history
    /// kept); the engine is rebuilt from the store when next used.
    pub(crate) fn install_replicated(&self, snapshot: &vigil_alerting::Snapshot) -> Result<(), StoreError> {
        self.store.replace(snapshot)?;
        self.stale.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Runs `f` on the stored state with every change held off meanwhile (the engine's lock
    /// is held): what the store holds is then exactly what the replicated log holds.
    pub(crate) fn with_snapshot<T>(&self, f: impl FnOnce(vigil_alerting::Snapshot) -> T) -> Result<T, StoreError> {
        let _no_changes = self.commit.lock().unwrap_or_else(|e| e.into_inner());
        Ok(f(self.store.load()?))
    }

    /// Rebuilds the engine from the store: a correlator taking the lead starts from exactly
    /// what was replicated, whatever its engine held before.
    pub(crate) fn reload(&self) {
        self.stale.store(true, std::sync::atomic::Ordering::Release);
        drop(self.lock());
        self.wake.notify_one();
    }

    /// Runs `f` on the engine and persists what it changed before returning (in a cluster,
    /// replicated first).
    fn mutate<T>(&self, f: impl FnOnce(&mut Alerting, i64) -> T) -> Result<T, AlertServiceError> {
        let Some(replica) = self.replica.get() else {
            let mut engine = self.lock();
            let out = f(&mut engine, now_ms());
            let changes = engine.take_changes();
            self.store.apply(&changes)?;
            drop(engine);
            if !changes.is_empty() {
                self.wake.notify_one();
            }
            return Ok(out);
        };
        let _one_at_a_time = self.commit.lock().unwrap_or_else(|e| e.into_inner());
        if !replica.may_write() {
            return Err(AlertServiceError::NotLeader);
        }
        let (out, changes) = {
            let mut engine = self.lock();
            let out = f(&mut engine, now_ms());
            (out, engine.take_changes())
        };
        if changes.is_empty() {
            return Ok(out);
        }
        if let Err(e) = replica.append_alerting(&changes) {
            // The engine now holds what the log may not: rebuilt from the store before use.
            self.stale.store(true, std::sync::atomic::Ordering::Release);
            return Err(AlertServiceError::Replication(e));
        }
        if let Err(e) = self.store.apply(&changes) {
            // The log has it and this store does not: another correlator must lead (this
            // one would snapshot from a store missing a logged change).
            self.stale.store(true, std::sync::atomic::Ordering::Release);
            replica.step_down();
            return Err(e.into());
        }
        self.wake.notify_one();
        Ok(out)
    }

    pub(crate) fn upsert(&self, alerts: Vec<AlertInput>) -> Result<Vec<String>, AlertServiceError> {
        self.mutate(|e, now| alerts.into_iter().map(|a| e.upsert(a, now)).collect())
    }

    pub(crate) fn alerts(&self, state: Option<&str>) -> Result<Vec<Alert>, AlertServiceError> {
        Ok(self.lock().alerts(state, now_ms())?)
    }

    pub(crate) fn alert(&self, id: &str) -> Option<Alert> {
        self.lock().alert(id, now_ms())
    }

    pub(crate) fn ack(&self, id: &str, by: &str) -> Result<ActionOutcome, AlertServiceError> {
        self.mutate(|e, now| e.ack(id, by, now))?.map_err(Into::into)
    }

    pub(crate) fn unack(&self, id: &str, by: &str) -> Result<ActionOutcome, AlertServiceError> {
        self.mutate(|e, now| e.unack(id, by, now))?.map_err(Into::into)
    }

    pub(crate) fn resolve(&self, id: &str, by: &str) -> Result<ActionOutcome, AlertServiceError> {
        self.mutate(|e, now| e.resolve(id, by, now))?.map_err(Into::into)
    }

    pub(crate) fn comment(&self, id: &str, by: &str, text: &str) -> Result<ActionOutcome, AlertServiceError> {
        self.mutate(|e, now| e.comment(id, by, text, now))?.map_err(Into::into)
    }

    pub(crate) fn feedback(&self, id: &str, by: &str, verdict: &str) -> Result<Alert, AlertServiceError> {
        self.mutate(|e, now| e.record_feedback(id, by, verdict, now))?
            .map_err(Into::into)
    }

    pub(crate) fn add_silence(&self, s: Silence) -> Result<String, AlertServiceError> {
        self.mutate(|e, now| e.add_silence(s, now))?.map_err(Into::into)
    }

    pub(crate) fn expire_silence(&self, id: &str, by: &str) -> Result<(), AlertServiceError> {
        self.mutate(|e, now| e.expire_silence(id, by, now))?.map_err(Into::into)
    }

    pub(crate) fn silences(&self) -> Vec<Silence> {
        self.lock().silences()
    }

    /// Replaces silence `id` with `s` (Alertmanager's update: the old one expires, the new
    /// one gets its own id), in one transaction.
    pub(crate) fn replace_silence(&self, id: &str, s: Silence) -> Result<String, AlertServiceError> {
        let by = s.created_by.clone();
        self.mutate(|e, now| {
            if !e.silences().iter().any(|x| x.id == id) {
                return Err(ActionError::UnknownSilence(id.to_string()));
            }
            let new = e.add_silence(s, now)?;
            e.expire_silence(id, &by, now)?;
            Ok(new)
        })?
        .map_err(Into::into)
    }

    /// The receivers an alert with these labels goes to.
    pub(crate) fn receivers_for(&self, labels: &vigil_alerting::LabelSet) -> Vec<String> {
        self.lock().receivers_for(labels)
    }

    /// Every configured receiver's name.
    pub(crate) fn receiver_names(&self) -> Vec<String> {
        self.receivers.keys().cloned().collect()
    }

    /// The aggregation groups: Alertmanager's group key, receiver, group labels, alert ids.
    pub(crate) fn groups(&self) -> Vec<(String, String, vigil_alerting::LabelSet, Vec<String>)> {
        let engine = self.lock();
        engine
            .groups()
            .into_iter()
            .map(|g| {
                (
                    engine.group_key(&g),
                    g.receiver.clone(),
                    g.labels.clone(),
                    g.alerts.iter().cloned().collect(),
                )
            })
            .collect()
    }

    pub(crate) fn schedules(&self) -> Vec<Schedule> {
        self.lock().schedules()
    }

    pub(crate) fn schedule(&self, name: &str) -> Option<Schedule> {
        self.lock().schedule(name)
    }

    pub(crate) fn put_schedule(&self, s: Schedule, by: &str) -> Result<(), AlertServiceError> {
        self.mutate(|e, now| e.put_schedule(s, by, now))?.map_err(Into::into)
    }

    pub(crate) fn delete_schedule(&self, name: &str, by: &str) -> Result<(), AlertServiceError> {
        self.mutate(|e, now| e.delete_schedule(name, by, now))?
            .map_err(Into::into)
    }

    pub(crate) fn add_override(
        &self,
        schedule: &str,
        user: &str,
        range: (i64, i64),
        by: &str,
    ) -> Result<String, AlertServiceError> {
        self.mutate(|e, now| e.add_override(schedule, user, range, by, now))?
            .map_err(Into::into)
    }

    pub(crate) fn delete_override(&self, schedule: &str, id: &str, by: &str) -> Result<(), AlertServiceError> {
        self.mutate(|e, now| e.delete_override(schedule, id, by, now))?
            .map_err(Into::into)
    }

    /// The URL of a schedule's calendar feed, signed.
    pub(crate) fn feed_url(&self, schedule: &str) -> String {
        format!(
            "{}/api/v1/schedules/{}/calendar.ics?token={}",
            self.external_url(),
            crate::investigations::encode(schedule),
            feed_token(self.link_secret.expose().as_bytes(), schedule)
        )
    }

    pub(crate) fn feed_token_ok(&self, schedule: &str, token: &str) -> bool {
        verify_feed_token(self.link_secret.expose().as_bytes(), schedule, token)
    }

    /// The routing configuration as Alertmanager YAML (no secrets in it).
    pub(crate) fn config_yaml(&self) -> String {
        self.lock().config_yaml()
    }

    pub(crate) fn audit(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, AlertServiceError> {
        Ok(self.store.audit(after, limit)?)
    }

    /// Carries out a signed one-click link: checks signature, expiry, single use.
    pub(crate) fn follow_link(&self, token: &str) -> Result<(ActionLink, ActionOutcome), AlertServiceError> {
        let link = verify_link(self.link_secret.expose().as_bytes(), token, now_ms())?;
        let by = "one-click link";
        let outcome = self.mutate(|e, now| {
            if !e.use_nonce(&link.nonce, link.expires_ms) {
                return Err(AlertServiceError::Link(LinkError::Replayed));
            }
            let r = match link.action {
                LinkAction::Ack => e.ack(&link.alert_id, by, now),
                LinkAction::Resolve => e.resolve(&link.alert_id, by, now),
            };
            r.map_err(AlertServiceError::from)
        })??;
        Ok((link, outcome))
    }

    fn link_url(&self, n: &Notification, a: &Alert, action: LinkAction) -> Option<String> {
        let link = ActionLink {
            alert_id: a.id.clone(),
            action,
            expires_ms: n.created_ms.saturating_add(self.link_ttl_ms),
            nonce: nonce_for(&n.id, &a.id, action),
        };
        Some(format!(
            "{}/api/v1/actions/{}",
            self.external_url(),
            sign_link(self.link_secret.expose().as_bytes(), &link)
        ))
    }
}
