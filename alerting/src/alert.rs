//! Alerts, silences and the records humans leave on them.

use serde::{Deserialize, Serialize};

use crate::labels::LabelSet;
use crate::matcher::{Matcher, all_match};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Acknowledged,
    Resolved,
}

/// An alert as sent to us (Alertmanager's `POST /api/v2/alerts` body element, or one made
/// from an anomaly or incident).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertInput {
    pub labels: LabelSet,
    #[serde(default)]
    pub annotations: LabelSet,
    /// Unix milliseconds; now when absent.
    #[serde(default, rename = "startsAtMs")]
    pub starts_at_ms: Option<i64>,
    /// Unix milliseconds; a time in the past resolves the alert.
    #[serde(default, rename = "endsAtMs")]
    pub ends_at_ms: Option<i64>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comment {
    pub at_ms: i64,
    pub by: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The fingerprint of its labels.
    pub id: String,
    pub labels: LabelSet,
    pub annotations: LabelSet,
    pub state: AlertState,
    pub starts_at_ms: i64,
    /// When the alert resolved, or when it will unless re-sent.
    pub ends_at_ms: i64,
    /// True while `ends_at_ms` was set by the sender (not by the resolve timeout).
    pub explicit_end: bool,
    pub updated_at_ms: i64,
    pub generator_url: String,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at_ms: Option<i64>,
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
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }

    pub fn is_active(&self) -> bool {
        self.state != AlertState::Resolved
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub created_by: String,
    pub comment: String,
    pub created_at_ms: i64,
}

impl Silence {
    pub fn is_active(&self, now_ms: i64) -> bool {
        self.starts_at_ms <= now_ms && now_ms < self.ends_at_ms
    }

    pub fn mutes(&self, labels: &LabelSet, now_ms: i64) -> bool {
        self.is_active(now_ms) && all_match(&self.matchers, labels)
    }
}

/// One human (or API) action, kept forever in the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at_ms: i64,
    pub actor: String,
    /// "ack", "unack", "resolve", "comment", "feedback", "silence_create", "silence_expire".
    pub action: String,
    pub target: String,
    pub detail: String,
}
