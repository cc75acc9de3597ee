//! Alerts, silences and the records humans leave on them.

use serde::{Deserialize, Serialize};

use crate::labels::LabelSet;
use crate::matcher::{Matcher, all_match};

/// Where an alert is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Active and not acknowledged: notifications and escalation go on.
    Firing,
    /// A human took it: no escalation, notifications only on change.
    Acknowledged,
    /// Ended (the sender resolved it, it timed out, or a human resolved it).
    Resolved,
}

/// An alert as sent to us (Alertmanager's `POST /api/v2/alerts` body element, or one made
/// from an anomaly or incident).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertInput {
    /// Its identity: the fingerprint of these labels dedups re-sends.
    pub labels: LabelSet,
    /// Descriptive text (summary, runbook…); may change without making a new alert.
    #[serde(default)]
    pub annotations: LabelSet,
    /// Unix milliseconds; now when absent.
    #[serde(default, rename = "startsAtMs")]
    pub starts_at_ms: Option<i64>,
    /// Unix milliseconds; a time in the past resolves the alert.
    #[serde(default, rename = "endsAtMs")]
    pub ends_at_ms: Option<i64>,
    /// Link back to what raised it (a Prometheus graph, a Vigil incident).
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
}

/// A note a human left on an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comment {
    /// When, unix ms.
    pub at_ms: i64,
    /// Who wrote it: a personal token's owner; under a shared token, the name the request
    /// gave, else the token's own (`api`, `responder`).
    pub by: String,
    /// The note as written; never blank ([`Alerting::comment`](crate::Alerting::comment)
    /// refuses it).
    pub text: String,
}

/// An alert as Vigil keeps it: identity, state, who acted on it, and why it is muted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The fingerprint of its labels ([`fingerprint`](crate::fingerprint): 16 hex digits, the
    /// same id Alertmanager gives them); the key of every API call about it.
    pub id: String,
    /// Its identity (see [`AlertInput::labels`]).
    pub labels: LabelSet,
    /// The latest annotations sent.
    pub annotations: LabelSet,
    /// Firing, acknowledged or resolved.
    pub state: AlertState,
    /// When it began, unix ms (as the sender said, or first receipt); reset when it fires
    /// again after resolving.
    pub starts_at_ms: i64,
    /// When the alert resolved, or when it will unless re-sent.
    pub ends_at_ms: i64,
    /// True while `ends_at_ms` was set by the sender (not by the resolve timeout).
    pub explicit_end: bool,
    /// Last change of any kind, unix ms.
    pub updated_at_ms: i64,
    /// Link back to what raised it.
    pub generator_url: String,
    /// Who acknowledged it; cleared by unacknowledge and on re-firing after resolve.
    pub acknowledged_by: Option<String>,
    /// When it was acknowledged, unix ms; `None` whenever `acknowledged_by` is.
    pub acknowledged_at_ms: Option<i64>,
    /// Notes left on it, oldest first.
    pub comments: Vec<Comment>,
    /// Silences muting it now (computed on read).
    #[serde(default)]
    pub silenced_by: Vec<String>,
    /// Alerts inhibiting it now (computed on read).
    #[serde(default)]
    pub inhibited_by: Vec<String>,
    /// Times the sender re-sent it (dedup count).
    pub received: u64,
}

impl Alert {
    /// Its `alertname` label, or empty.
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }

    /// Firing or acknowledged (not resolved).
    pub fn is_active(&self) -> bool {
        self.state != AlertState::Resolved
    }
}

/// A silence: alerts whose labels match every matcher are muted between its start and end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Silence {
    /// Its id: left empty by the caller, [`Alerting::add_silence`](crate::Alerting::add_silence)
    /// assigns `s` and the 8-digit sequence number (`s00000042`); an existing id replaces that
    /// silence.
    pub id: String,
    /// All must match an alert's labels for it to be muted; never empty (a silence of
    /// everything is refused).
    pub matchers: Vec<Matcher>,
    /// When it starts muting, unix ms.
    pub starts_at_ms: i64,
    /// When it stops muting, unix ms (exclusive, after `starts_at_ms`); expiring a silence
    /// sets this to now.
    pub ends_at_ms: i64,
    /// Who created it; must not be blank (`add_silence` refuses it).
    pub created_by: String,
    /// Why, as the creator wrote it (Alertmanager's `comment`); not checked, may be empty.
    pub comment: String,
    /// When it was created, unix ms: set by `add_silence`, whatever the caller put here.
    pub created_at_ms: i64,
}

impl Silence {
    /// Whether it mutes at `now_ms`.
    pub fn is_active(&self, now_ms: i64) -> bool {
        self.starts_at_ms <= now_ms && now_ms < self.ends_at_ms
    }

    /// Whether it mutes an alert with `labels` at `now_ms`.
    pub fn mutes(&self, labels: &LabelSet, now_ms: i64) -> bool {
        self.is_active(now_ms) && all_match(&self.matchers, labels)
    }
}

/// One human (or API) action, kept forever in the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log: increasing, never reused (`GET /api/v1/audit?after=`).
    pub seq: u64,
    /// When, unix ms.
    pub at_ms: i64,
    /// Who: a personal token's owner; under a shared token the name the request gave, else
    /// `api` or `responder`; `one-click link` for a signed link; `vigil` for what Vigil
    /// records itself (`escalation_unrouted`, `delivery_abandoned`).
    pub actor: String,
    /// "ack", "unack", "resolve", "comment", "feedback", "silence_create", "silence_expire",
    /// "schedule_update", "schedule_delete", "override_create", "override_delete",
    /// "escalation_unrouted", "delivery_abandoned".
    pub action: String,
    /// What was acted on: an alert id, a silence id, a schedule's name, a notification id
    /// (`delivery_abandoned`) or a group key (`escalation_unrouted`).
    pub target: String,
    /// Free text: the comment, the verdict, the silence's matchers, the override, the last
    /// delivery error; empty for ack, unack, resolve, silence_expire and schedule_delete.
    pub detail: String,
}
