//! Notification history: every delivery attempt of every notification — what was sent, to
//! whom, when, about which alerts, and what the receiver answered — kept in the alerting
//! store beside the state it came from (Alertmanager keeps none; "what did we send, and did
//! it arrive?" is the first question after a missed page).

use serde::{Deserialize, Serialize};

use crate::engine::{Notification, NotifyReason};

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx (or records only, having no URL).
    Delivered,
    /// It failed; another attempt is scheduled.
    Failed,
    /// It failed for the last time: the notification was given up.
    Abandoned,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Shared with the audit log's sequence: orders every record of the store.
    pub seq: u64,
    /// When the attempt finished, unix ms.
    pub at_ms: i64,
    /// The notification's id (the receiver's idempotency key).
    pub notification: String,
    /// Alertmanager's group key.
    pub group_key: String,
    /// The receiver it went to.
    pub receiver: String,
    /// Why the notification was sent.
    pub reason: NotifyReason,
    /// Escalation step (1-based) when `reason` is escalation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    /// "firing" or "resolved".
    pub status: String,
    /// Ids of the alerts the notification listed.
    pub alerts: Vec<String>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Delivered, failed (will retry) or given up.
    pub outcome: DeliveryOutcome,
    /// The receiver's answer: its status line and the start of its body, or the error.
    pub answer: String,
}

impl Delivery {
    pub(crate) fn of(n: &Notification, seq: u64, at_ms: i64, outcome: DeliveryOutcome, answer: &str) -> Delivery {
        Delivery {
            seq,
            at_ms,
            notification: n.id.clone(),
            group_key: n.group_key.clone(),
            receiver: n.receiver.clone(),
            reason: n.reason,
            step: n.step,
            status: n.status.clone(),
            alerts: n.alerts.iter().map(|a| a.id.clone()).collect(),
            attempt: n.attempts + 1,
            outcome,
            answer: answer.chars().take(MAX_ANSWER).collect(),
        }
    }
}

/// Characters of a receiver's answer kept.
const MAX_ANSWER: usize = 300;
