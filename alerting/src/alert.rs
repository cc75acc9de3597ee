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
    /// Who wrote it (a personal token's name, or the shared token's role).
    pub by: String,
    /// The note.
    pub text: String,
}

/// An alert as Vigil keeps it: identity, state, who acted on it, and why it is muted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The fingerprint of its labels.
    pub id: String,
    /// Its identity (see [`AlertInput::labels`]).
    pub labels: LabelSet,
    /// The latest annotations sent.
    pub annotations: LabelSet,
    /// Firing, acknowledged or resolved.
    pub state: AlertState,
    /// When it began, unix ms (as the sender said, or first receipt).
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
    /// When it was acknowledged, unix ms.
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
    /// Its id, assigned on creation (`s` and a sequence number).
    pub id: String,
    /// All must match an alert's labels for it to be muted.
    pub matchers: Vec<Matcher>,
    /// When it starts muting, unix ms.
    pub starts_at_ms: i64,
    /// When it stops; expiring a silence sets this to now.
    pub ends_at_ms: i64,
    /// Who created it.
    pub created_by: String,
    /// Why (required, as in Alertmanager).
    pub comment: String,
    /// When it was created, unix ms.
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
    /// Who (a personal token's name, `api`, `responder`, or `link` for a signed link).
    pub actor: String,
    /// "ack", "unack", "resolve", "comment", "feedback", "silence_create", "silence_expire".
    pub action: String,
    /// What was acted on: an alert or silence id.
    pub target: String,
    /// Free text: the comment, the verdict, the silence's matchers.
    pub detail: String,
}
