//! Alerts, their notification history, silences and the audit log, as `/api/v1/alerts…`,
//! `/api/v1/silences` and `/api/v1/audit` answer them (the alerting crate's `Alert`,
//! `Delivery`, `Silence` and `AuditEntry`, serialized as they are).

use std::collections::BTreeMap;

use serde::Deserialize;

/// Where an alert stands; the API writes it in snake case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AlertState {
    /// Nobody has taken it on yet: the pages offer "Acknowledge".
    Firing,
    /// Someone took it on: the pages offer "Unacknowledge" and name who.
    Acknowledged,
    /// Over: no more actions but the verdicts.
    Resolved,
}

/// A note a responder left on an alert.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Comment {
    /// When it was written, unix milliseconds.
    pub(crate) at_ms: i64,
    /// Who wrote it.
    pub(crate) by: String,
    /// What they wrote.
    pub(crate) text: String,
}

/// One alert (`GET /api/v1/alerts`, `GET /api/v1/alerts/{id}`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Alert {
    /// The fingerprint of its labels: the id every alert URL names.
    pub(crate) id: String,
    /// Sorted, so pages list them in a stable order.
    pub(crate) labels: BTreeMap<String, String>,
    /// `summary` and `vigil_incident_id` are the ones the pages pick out.
    pub(crate) annotations: BTreeMap<String, String>,
    /// Decides the badge and which buttons show.
    pub(crate) state: AlertState,
    /// Unix milliseconds.
    pub(crate) starts_at_ms: i64,
    /// When it resolved, or when it will unless re-sent.
    pub(crate) ends_at_ms: i64,
    /// Unix milliseconds of the last change.
    pub(crate) updated_at_ms: i64,
    /// Who acknowledged it (null unless acknowledged).
    #[serde(default)]
    pub(crate) acknowledged_by: Option<String>,
    /// Oldest first.
    pub(crate) comments: Vec<Comment>,
    /// Silences muting it now; computed on read, so the producer tolerates its absence and
    /// so do we.
    #[serde(default)]
    pub(crate) silenced_by: Vec<String>,
    /// Alerts inhibiting it now; computed on read like `silenced_by`.
    #[serde(default)]
    pub(crate) inhibited_by: Vec<String>,
    /// Times the sender re-sent it.
    pub(crate) received: u64,
}

impl Alert {
    /// The heading of an alert: its `alertname` label, as Alertmanager users know it.
    pub(crate) fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

/// How one delivery attempt ended; snake case on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DeliveryOutcome {
    /// The receiver took it.
    Delivered,
    /// It failed; the engine will try again.
    Failed,
    /// It failed for the last time.
    Abandoned,
}

impl DeliveryOutcome {
    /// What a responder needs to read: whether anything more will happen.
    pub(crate) fn label(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Failed => "failed, retrying",
            DeliveryOutcome::Abandoned => "given up",
        }
    }
}

/// One delivery attempt (`GET /api/v1/alerts/{id}/notifications`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Delivery {
    /// Unix milliseconds of the attempt.
    pub(crate) at_ms: i64,
    /// The receiver's configured name.
    pub(crate) receiver: String,
    /// Why it was sent (`initial`, `update`, `repeat`, `resolved`, `escalation`). Kept as
    /// the API's word, which is what the page shows: a reason the engine adds later then
    /// shows as written instead of failing the whole page.
    pub(crate) reason: String,
    /// The escalation step (1-based); the API leaves it out unless the reason is escalation.
    #[serde(default)]
    pub(crate) step: Option<usize>,
    /// "firing" or "resolved".
    pub(crate) status: String,
    /// 1 for the first attempt.
    pub(crate) attempt: u32,
    /// Whether it arrived.
    pub(crate) outcome: DeliveryOutcome,
    /// The receiver's answer, or the error.
    pub(crate) answer: String,
}

/// One label matcher of a silence, in the API's (Alertmanager's) JSON form: name, value,
/// `isRegex`, `isEqual`. The operator is derived from the two flags, as Alertmanager does.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Matcher {
    /// The label name.
    pub(crate) name: String,
    /// The value or regular expression.
    pub(crate) value: String,
    /// `=~` / `!~` rather than `=` / `!=`; Alertmanager's default when absent is false.
    #[serde(rename = "isRegex", default)]
    pub(crate) is_regex: bool,
    /// `=` / `=~` rather than `!=` / `!~`; Alertmanager's default when absent is true.
    #[serde(rename = "isEqual", default = "yes")]
    pub(crate) is_equal: bool,
}

/// `isEqual`'s default: a matcher without it is an equality matcher.
fn yes() -> bool {
    true
}

impl Matcher {
    /// The operator as written in a matcher list: `=`, `!=`, `=~`, `!~`.
    pub(crate) fn op(&self) -> &'static str {
        match (self.is_regex, self.is_equal) {
            (false, true) => "=",
            (false, false) => "!=",
            (true, true) => "=~",
            (true, false) => "!~",
        }
    }

    /// `name="value"`, with the value quoted as JSON so a silence form can take it back.
    pub(crate) fn text(&self) -> String {
        format!(
            "{}{}{}",
            self.name,
            self.op(),
            serde_json::Value::String(self.value.clone())
        )
    }
}

/// A silence (`GET /api/v1/silences`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Silence {
    /// What the expire button names.
    pub(crate) id: String,
    /// All must match for it to mute an alert.
    pub(crate) matchers: Vec<Matcher>,
    /// Unix milliseconds.
    pub(crate) starts_at_ms: i64,
    /// Unix milliseconds.
    pub(crate) ends_at_ms: i64,
    /// Who made it.
    pub(crate) created_by: String,
    /// Why, in their words.
    pub(crate) comment: String,
    /// Orders the list, newest first.
    pub(crate) created_at_ms: i64,
}

impl Silence {
    /// Muting now: the same half-open interval the alerting engine applies, so the badge
    /// agrees with what the engine does.
    pub(crate) fn is_active(&self, now_ms: i64) -> bool {
        self.starts_at_ms <= now_ms && now_ms < self.ends_at_ms
    }
}

/// One human (or API) action (`GET /api/v1/audit`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AuditEntry {
    /// The log's sequence number.
    pub(crate) seq: u64,
    /// Unix milliseconds.
    pub(crate) at_ms: i64,
    /// Who did it.
    pub(crate) actor: String,
    /// "ack", "silence_create", …: the page links silences and alerts by it.
    pub(crate) action: String,
    /// The alert or silence id.
    pub(crate) target: String,
    /// Free text.
    pub(crate) detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_reads_as_the_api_writes_it() {
        let a: Alert = serde_json::from_value(serde_json::json!({
            "id": "0123456789abcdef",
            "labels": {"alertname": "HighLatency", "service": "checkout"},
            "annotations": {"summary": "slow"},
            "state": "acknowledged",
            "starts_at_ms": 1, "ends_at_ms": 3, "explicit_end": false, "updated_at_ms": 2,
            "generator_url": "", "acknowledged_by": "ana", "acknowledged_at_ms": 2,
            "comments": [{"at_ms": 2, "by": "ana", "text": "on it"}],
            "silenced_by": [], "inhibited_by": [], "received": 4
        }))
        .expect("alert");
        assert_eq!(a.name(), "HighLatency");
        assert_eq!(a.state, AlertState::Acknowledged);
        assert_eq!(a.acknowledged_by.as_deref(), Some("ana"));
        assert_eq!(a.comments[0].text, "on it");
    }

    #[test]
    fn a_delivery_without_a_step_reads() {
        let d: Delivery = serde_json::from_value(serde_json::json!({
            "seq": 7, "at_ms": 5, "notification": "n", "group_key": "g", "receiver": "pager",
            "reason": "initial", "status": "firing", "alerts": ["a"], "attempt": 2,
            "outcome": "abandoned", "answer": "503"
        }))
        .expect("delivery");
        assert_eq!(d.step, None);
        assert_eq!(d.outcome.label(), "given up");
        assert_eq!(d.reason, "initial");
    }

    #[test]
    fn matchers_read_in_alertmanager_form() {
        let s: Silence = serde_json::from_value(serde_json::json!({
            "id": "s1",
            "matchers": [
                {"name": "a", "value": "b", "isRegex": false, "isEqual": true},
                {"name": "c", "value": "x|y", "isRegex": true, "isEqual": false},
                {"name": "d", "value": "e"}
            ],
            "starts_at_ms": 10, "ends_at_ms": 20, "created_by": "ana", "comment": "", "created_at_ms": 10
        }))
        .expect("silence");
        let texts: Vec<String> = s.matchers.iter().map(Matcher::text).collect();
        assert_eq!(texts, [r#"a="b""#, r#"c!~"x|y""#, r#"d="e""#]);
        assert!(s.is_active(10) && !s.is_active(20));
    }
}
