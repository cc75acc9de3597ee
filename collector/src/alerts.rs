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
use vigil_alerting::alert::{Alert, AlertInput, AuditEntry, Silence};
use vigil_alerting::config::{AlertingConfig, ReceiverConfig, ReceiverKind};
use vigil_alerting::engine::{ActionError, ActionOutcome, Alerting, Notification};
use vigil_alerting::history::Delivery;
use vigil_alerting::oncall::Schedule;
use vigil_alerting::payload::{self, Context};
use vigil_alerting::sign::{self, ActionLink, LinkAction, LinkError};
use vigil_alerting::store::{AlertStore, StoreError};
use vigil_detectors::anomaly::Severity;
use vigil_rca::incident::{Incident, IncidentStatus};

use crate::config::Secret;
use crate::timeutil::now_ms;

/// Header carrying the notification id, the same on every retry: receivers dedup on it.
pub const IDEMPOTENCY_HEADER: &str = "x-vigil-idempotency-key";
const DEFAULT_RECEIVER_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of a receiver's answer read for the notification history.
const ANSWER_BYTES: usize = 1024;
/// Longest sleep of the delivery loop when nothing is due (it also wakes on changes).
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// An open incident's alert stays firing this long past its latest update.
const INCIDENT_ALERT_TTL_MS: i64 = 60 * 60_000;

pub struct AlertService {
    engine: Mutex<Alerting>,
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
pub enum AlertServiceError {
    #[error(transparent)]
    Action(#[from] ActionError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// A secret from the environment, or one generated once and kept in `path` (0600).
pub fn load_or_create_secret(env: &str, path: &Path) -> std::io::Result<Secret> {
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
    pub fn open(
        cfg: AlertingConfig,
        dir: &Path,
        external_url: String,
        link_ttl_secs: u64,
    ) -> anyhow::Result<Arc<AlertService>> {
        std::fs::create_dir_all(dir)?;
        let store = AlertStore::open(&dir.join("alerting.redb"))?;
        for (i, r) in cfg.receivers.iter().enumerate() {
            if r.kind == ReceiverKind::Email {
                crate::email::check(r).map_err(|e| anyhow::anyhow!("alerting.receivers[{i}].{e}"))?;
            }
        }
        let receivers = cfg.receivers.iter().map(|r| (r.name.clone(), r.clone())).collect();
        let mut engine = Alerting::new(cfg).map_err(|e| anyhow::anyhow!("alerting.{e}"))?;
        engine.restore(store.load()?);
        let link_secret = load_or_create_secret("VIGIL_LINK_SECRET", &dir.join("link-secret"))?;
        let signing_secret = load_or_create_secret("VIGIL_WEBHOOK_SECRET", &dir.join("webhook-secret"))?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Arc::new(AlertService {
            engine: Mutex::new(engine),
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
    pub fn set_external_url(&self, url: &str) {
        *self.external_url.write().unwrap_or_else(|e| e.into_inner()) = url.trim_end_matches('/').to_string();
    }

    fn external_url(&self) -> String {
        self.external_url.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn lock(&self) -> MutexGuard<'_, Alerting> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the engine and persists what it changed before returning.
    fn mutate<T>(&self, f: impl FnOnce(&mut Alerting, i64) -> T) -> Result<T, AlertServiceError> {
        let mut engine = self.lock();
        let out = f(&mut engine, now_ms());
        let changes = engine.take_changes();
        self.store.apply(&changes)?;
        drop(engine);
        if !changes.is_empty() {
            self.wake.notify_one();
        }
        Ok(out)
    }

    pub fn upsert(&self, alerts: Vec<AlertInput>) -> Result<Vec<String>, AlertServiceError> {
        self.mutate(|e, now| alerts.into_iter().map(|a| e.upsert(a, now)).collect())
    }

    pub fn alerts(&self, state: Option<&str>) -> Result<Vec<Alert>, AlertServiceError> {
        Ok(self.lock().alerts(state, now_ms())?)
    }

    pub fn alert(&self, id: &str) -> Option<Alert> {
        self.lock().alert(id, now_ms())
    }

    pub fn ack(&self, id: &str, by: &str) -> Result<ActionOutcome, AlertServiceError> {
        self.mutate(|e, now| e.ack(id, by, now))?.map_err(Into::into)
    }

    pub fn unack(&self, id: &str, by: &str) -> Result<ActionOutcome, AlertServiceError> {
        self.mutate(|e, now| e.unack(id, by, now))?.map_err(Into::into)
    }

    pub fn resolve(&self, id: &str, by: &str) -> Result<ActionOutcome, AlertServiceError> {
        self.mutate(|e, now| e.resolve(id, by, now))?.map_err(Into::into)
    }

    pub fn comment(&self, id: &str, by: &str, text: &str) -> Result<ActionOutcome, AlertServiceError> {
        self.mutate(|e, now| e.comment(id, by, text, now))?.map_err(Into::into)
    }

    pub fn feedback(&self, id: &str, by: &str, verdict: &str) -> Result<Alert, AlertServiceError> {
        self.mutate(|e, now| e.record_feedback(id, by, verdict, now))?
            .map_err(Into::into)
    }

    pub fn add_silence(&self, s: Silence) -> Result<String, AlertServiceError> {
        self.mutate(|e, now| e.add_silence(s, now))?.map_err(Into::into)
    }

    pub fn expire_silence(&self, id: &str, by: &str) -> Result<(), AlertServiceError> {
        self.mutate(|e, now| e.expire_silence(id, by, now))?.map_err(Into::into)
    }

    pub fn silences(&self) -> Vec<Silence> {
        self.lock().silences()
    }

    /// Replaces silence `id` with `s` (Alertmanager's update: the old one expires, the new
    /// one gets its own id), in one transaction.
    pub fn replace_silence(&self, id: &str, s: Silence) -> Result<String, AlertServiceError> {
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
    pub fn receivers_for(&self, labels: &vigil_alerting::labels::LabelSet) -> Vec<String> {
        self.lock().receivers_for(labels)
    }

    /// Every configured receiver's name.
    pub fn receiver_names(&self) -> Vec<String> {
        self.receivers.keys().cloned().collect()
    }

    /// The aggregation groups: Alertmanager's group key, receiver, group labels, alert ids.
    pub fn groups(&self) -> Vec<(String, String, vigil_alerting::labels::LabelSet, Vec<String>)> {
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

    pub fn schedules(&self) -> Vec<Schedule> {
        self.lock().schedules()
    }

    pub fn schedule(&self, name: &str) -> Option<Schedule> {
        self.lock().schedule(name)
    }

    pub fn put_schedule(&self, s: Schedule, by: &str) -> Result<(), AlertServiceError> {
        self.mutate(|e, now| e.put_schedule(s, by, now))?.map_err(Into::into)
    }

    pub fn delete_schedule(&self, name: &str, by: &str) -> Result<(), AlertServiceError> {
        self.mutate(|e, now| e.delete_schedule(name, by, now))?
            .map_err(Into::into)
    }

    pub fn add_override(
        &self,
        schedule: &str,
        user: &str,
        range: (i64, i64),
        by: &str,
    ) -> Result<String, AlertServiceError> {
        self.mutate(|e, now| e.add_override(schedule, user, range, by, now))?
            .map_err(Into::into)
    }

    pub fn delete_override(&self, schedule: &str, id: &str, by: &str) -> Result<(), AlertServiceError> {
        self.mutate(|e, now| e.delete_override(schedule, id, by, now))?
            .map_err(Into::into)
    }

    /// The URL of a schedule's calendar feed, signed.
    pub fn feed_url(&self, schedule: &str) -> String {
        format!(
            "{}/api/v1/schedules/{}/calendar.ics?token={}",
            self.external_url(),
            crate::investigations::encode(schedule),
            sign::feed_token(self.link_secret.expose().as_bytes(), schedule)
        )
    }

    pub fn feed_token_ok(&self, schedule: &str, token: &str) -> bool {
        sign::verify_feed_token(self.link_secret.expose().as_bytes(), schedule, token)
    }

    /// The routing configuration as Alertmanager YAML (no secrets in it).
    pub fn config_yaml(&self) -> String {
        self.lock().config_yaml()
    }

    pub fn audit(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, AlertServiceError> {
        Ok(self.store.audit(after, limit)?)
    }

    /// Carries out a signed one-click link: checks signature, expiry, single use.
    pub fn follow_link(&self, token: &str) -> Result<(ActionLink, ActionOutcome), AlertServiceError> {
        let link = sign::verify_link(self.link_secret.expose().as_bytes(), token, now_ms())?;
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
            nonce: sign::nonce_for(&n.id, &a.id, action),
        };
        Some(format!(
            "{}/api/v1/actions/{}",
            self.external_url(),
            sign::sign_link(self.link_secret.expose().as_bytes(), &link)
        ))
    }

    /// Turns incident updates into alerts: one alert per incident (never one per anomaly),
    /// only once it holds a warning or critical anomaly. The labels are the incident id
    /// alone, so the alert keeps its identity while ranking and severity evolve.
    pub fn on_incidents(&self, incidents: &[Incident]) {
        let now = now_ms();
        let external = self.external_url();
        // An incident's alert keeps the labels it was first raised with: its identity (the
        // fingerprint of its labels) must not change when the ranking or severity does, or
        // one incident would page twice. What changes goes into the annotations.
        let raised: std::collections::HashMap<String, BTreeMap<String, String>> = self
            .alerts(None)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|a| a.labels.get("incident").cloned().map(|id| (id, a.labels.clone())))
            .collect();
        let inputs: Vec<AlertInput> = incidents
            .iter()
            .filter_map(|inc| {
                // Graded by corroboration: one signal, however strong, is a warning.
                let severity = inc.severity();
                if severity < Severity::Warning {
                    return None;
                }
                let top = inc.candidates.first();
                // The likely root cause and the severity as labels, so silences, routes and
                // inhibition rules can match them (`service="catalogue"`).
                let labels = raised.get(&inc.id).cloned().unwrap_or_else(|| {
                    let mut labels = BTreeMap::from([
                        ("alertname".to_string(), "VigilIncident".to_string()),
                        ("incident".to_string(), inc.id.clone()),
                        ("severity".to_string(), format!("{severity:?}").to_lowercase()),
                    ]);
                    if let Some(t) = top {
                        labels.insert("service".to_string(), t.service.clone());
                    }
                    labels
                });
                let mut annotations = BTreeMap::from([
                    ("summary".to_string(), inc.summary.clone()),
                    ("severity".to_string(), format!("{severity:?}").to_lowercase()),
                    ("vigil_incident_id".to_string(), inc.id.clone()),
                    (
                        "vigil_report_url".to_string(),
                        format!("{external}/ui/incidents/{}", inc.id),
                    ),
                    (
                        "vigil_anomaly_ids".to_string(),
                        inc.timeline
                            .iter()
                            .map(|m| m.anomaly_id.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                    ("services".to_string(), inc.services.join(",")),
                ]);
                if let Some(t) = top {
                    annotations.insert("service".into(), t.service.clone());
                    annotations.insert(
                        "vigil_root_cause".into(),
                        format!("{}: {}", t.service, t.reasons.join("; ")),
                    );
                }
                let open = inc.status == IncidentStatus::Open;
                Some(AlertInput {
                    labels,
                    annotations,
                    starts_at_ms: Some(inc.start_ms),
                    // Open: firing until the incident resolves (refreshed with every update);
                    // resolved: resolves the alert now.
                    ends_at_ms: Some(if open { now + INCIDENT_ALERT_TTL_MS } else { now }),
                    generator_url: format!("{external}/ui/incidents/{}", inc.id),
                })
            })
            .collect();
        if inputs.is_empty() {
            return;
        }
        if let Err(e) = self.upsert(inputs) {
            tracing::error!(error = %e, "could not record incident alerts");
        }
    }

    /// The delivery loop: advance timers, send what is due, record outcomes.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            // Store writes fsync: keep them off the async workers.
            let this = Arc::clone(&self);
            let ticked = tokio::task::spawn_blocking(move || {
                this.mutate(|e, now| {
                    e.tick(now);
                    e.due(now)
                })
            })
            .await;
            let due =
                match ticked.unwrap_or_else(|e| Err(AlertServiceError::Action(ActionError::Invalid(e.to_string())))) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::error!(error = %e, "alerting state could not be saved; retrying");
                        Vec::new()
                    }
                };
            if !due.is_empty() {
                let sends = due.into_iter().map(|n| {
                    let this = Arc::clone(&self);
                    async move {
                        let result = this.send(&n).await;
                        (n, result)
                    }
                });
                let results = futures::future::join_all(sends).await;
                let this = Arc::clone(&self);
                let saved = tokio::task::spawn_blocking(move || {
                    this.mutate(|e, now| {
                    for (n, r) in &results {
                        match r {
                            Ok(answer) => e.delivered(&n.id, answer, now),
                            Err(err) => {
                                tracing::warn!(receiver = %n.receiver, notification = %n.id, error = %err, "delivery failed; will retry");
                                e.failed(&n.id, err, now);
                            }
                        }
                    }
                    })
                })
                .await
                .unwrap_or_else(|e| Err(AlertServiceError::Action(ActionError::Invalid(e.to_string()))));
                if let Err(e) = saved {
                    tracing::error!(error = %e, "could not record delivery outcomes");
                }
                continue;
            }
            let wait = self
                .lock()
                .next_due_ms()
                .map_or(IDLE_WAKE, |t| {
                    Duration::from_millis(u64::try_from(t - now_ms()).unwrap_or(0))
                })
                .min(IDLE_WAKE);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Renders a payload with the links of this collector (the context lives only for the
    /// call, so nothing of it is held across an await).
    fn render<T>(&self, f: impl FnOnce(&Context<'_>) -> T) -> T {
        let external_url = self.external_url();
        let link = |n: &Notification, a: &Alert, action: LinkAction| self.link_url(n, a, action);
        f(&Context {
            external_url: &external_url,
            link: &link,
        })
    }

    /// Sends one notification; the receiver's answer, or why it failed.
    async fn send(&self, n: &Notification) -> Result<String, String> {
        let Some(receiver) = self.receivers.get(&n.receiver) else {
            return Err(format!("receiver {:?} is not configured", n.receiver));
        };
        if receiver.kind == ReceiverKind::Email {
            let (subject, text) = self.render(|ctx| payload::email(n, ctx));
            return crate::email::send(receiver, n, subject, text).await;
        }
        let Some(url) = &receiver.url else {
            // A receiver without a URL only records (useful while setting up routing).
            return Ok("recorded only: the receiver has no URL".into());
        };
        let body = self
            .render(|ctx| serde_json::to_vec(&payload::body(receiver, n, ctx)))
            .map_err(|e| e.to_string())?;
        let ts = now_ms() / 1000;
        let signature = sign::sign_body(self.signing_secret.expose().as_bytes(), ts, &body);
        let timeout = receiver
            .timeout_secs
            .map_or(DEFAULT_RECEIVER_TIMEOUT, Duration::from_secs);
        let response = self
            .client
            .post(url)
            .timeout(timeout)
            .header("content-type", "application/json")
            .header(sign::TIMESTAMP_HEADER, ts.to_string())
            .header(sign::SIGNATURE_HEADER, signature)
            .header(IDEMPOTENCY_HEADER, &n.id)
            .body(body)
            .send()
            .await
            // With its causes: "error sending request" alone reads the same for a refused
            // connection, a timeout and a name that does not resolve.
            .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
        let status = response.status();
        // What the receiver said, for the notification history: its first KiB (a receiver
        // answering with megabytes must not make us read them).
        let mut response = response;
        let mut head: Vec<u8> = Vec::new();
        while head.len() < ANSWER_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => head.extend_from_slice(&chunk[..chunk.len().min(ANSWER_BYTES - head.len())]),
                _ => break,
            }
        }
        let said = String::from_utf8_lossy(&head)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let answer = if said.is_empty() {
            status.to_string()
        } else {
            format!("{status}: {said}")
        };
        if status.is_success() {
            Ok(answer)
        } else {
            Err(format!("receiver answered {answer}"))
        }
    }

    /// Delivery attempts `keep` accepts, newest first.
    pub fn deliveries(
        &self,
        keep: impl Fn(&Delivery) -> bool,
        limit: usize,
    ) -> Result<Vec<Delivery>, AlertServiceError> {
        Ok(self.store.deliveries(keep, limit)?)
    }
}
