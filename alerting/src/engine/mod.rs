//! The alerting state machine. Pure and clock-injected: every call takes `now_ms`, so tests
//! drive grouping timers and escalations without sleeping, and a restart resumes from the
//! persisted state with the real clock.
//!
//! Flow: [`Alerting::upsert`] dedups by fingerprint and files the alert into the groups of
//! every matching route; [`Alerting::tick`] resolves timed-out alerts, flushes groups whose
//! timer is due (group_wait, then group_interval; repeat_interval for unchanged content),
//! runs escalation steps, and puts notifications in the outbox. Delivery is the caller's: it
//! takes [`Alerting::due`] notifications, sends them, and reports back with
//! [`Alerting::delivered`] or [`Alerting::failed`] — at least once, never twice on purpose:
//! a notification leaves the outbox only when delivered. [`Alerting::take_changes`] hands
//! the caller everything that changed, to persist in one transaction.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::alert::{Alert, AlertInput, AlertState, AuditEntry, Comment, Silence};
use crate::alertmanager;
use crate::config::{AlertingConfig, ConfigError, EscalationPolicyConfig, parse_matcher_list};
use crate::history::{Delivery, DeliveryOutcome};
use crate::labels::{LabelSet, fingerprint, project};
use crate::matcher::{Matcher, all_match};
use crate::oncall::{Override, Schedule};
use crate::route::Route;

/// Delivery gives up after this many attempts (the last error stays in the audit log).
pub const MAX_ATTEMPTS: u32 = 20;
/// Longest wait between two delivery attempts.
pub const MAX_BACKOFF_MS: i64 = 300_000;
/// Resolved alerts are forgotten this long after they resolved (the audit log remains).
pub const RESOLVED_RETENTION_MS: i64 = 24 * 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyReason {
    /// First notification of a group.
    Initial,
    /// The group's alerts changed.
    Update,
    /// Unchanged and unacknowledged for repeat_interval.
    Repeat,
    /// Every alert of the group resolved.
    Resolved,
    /// An escalation step: nobody acknowledged in time.
    Escalation,
}

/// One message to one receiver about one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable id: the receiver's idempotency key.
    pub id: String,
    pub group_key: String,
    pub receiver: String,
    pub reason: NotifyReason,
    /// Escalation step (1-based) when `reason` is escalation.
    pub step: Option<usize>,
    /// "firing" or "resolved".
    pub status: String,
    pub group_labels: LabelSet,
    pub alerts: Vec<Alert>,
    pub created_ms: i64,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    pub policy: String,
    /// Next step to run (index into the policy's steps).
    pub step: usize,
    pub round: u32,
    pub next_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub key: String,
    pub route_id: String,
    pub receiver: String,
    pub labels: LabelSet,
    pub alerts: BTreeSet<String>,
    pub next_flush_ms: i64,
    /// Content hash and time of the last notification (dedup and repeat).
    pub last_sent_hash: Option<String>,
    pub last_sent_ms: Option<i64>,
    /// Whether the receiver has been told about firing alerts (so a resolve is news).
    pub announced_firing: bool,
    /// The alerts the receiver has been told are firing: only their resolution is news (an
    /// alert that joined while the group was silenced and resolved unseen is never listed).
    #[serde(default)]
    pub announced: BTreeSet<String>,
    pub escalation: Option<Escalation>,
}

#[derive(Debug, Clone)]
struct InhibitRule {
    source: Vec<Matcher>,
    target: Vec<Matcher>,
    equal: Vec<String>,
}

/// Everything that changed since the last [`Alerting::take_changes`], ready to persist.
#[derive(Debug, Default)]
pub struct Changes {
    pub alerts: Vec<Alert>,
    pub alerts_deleted: Vec<String>,
    pub groups: Vec<Group>,
    pub groups_deleted: Vec<String>,
    pub silences: Vec<Silence>,
    pub outbox: Vec<Notification>,
    pub outbox_deleted: Vec<String>,
    pub audit: Vec<AuditEntry>,
    pub nonces: Vec<(String, i64)>,
    pub deliveries: Vec<Delivery>,
    pub schedules: Vec<Schedule>,
    pub schedules_deleted: Vec<String>,
    pub next_seq: u64,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
            && self.alerts_deleted.is_empty()
            && self.groups.is_empty()
            && self.groups_deleted.is_empty()
            && self.silences.is_empty()
            && self.outbox.is_empty()
            && self.outbox_deleted.is_empty()
            && self.audit.is_empty()
            && self.nonces.is_empty()
            && self.deliveries.is_empty()
            && self.schedules.is_empty()
            && self.schedules_deleted.is_empty()
    }
}

/// Persisted state to resume from.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub schedules: Vec<Schedule>,
    pub alerts: Vec<Alert>,
    pub groups: Vec<Group>,
    pub silences: Vec<Silence>,
    pub outbox: Vec<Notification>,
    pub nonces: Vec<(String, i64)>,
    pub next_seq: u64,
}

/// Outcome of a human action, so a second identical action can say it changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionOutcome {
    pub changed: bool,
    pub state: AlertState,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("no alert with id {0:?}")]
    UnknownAlert(String),
    #[error("no silence with id {0:?}")]
    UnknownSilence(String),
    #[error("no schedule named {0:?}")]
    UnknownSchedule(String),
    #[error("{0}")]
    Invalid(String),
}

pub struct Alerting {
    cfg: AlertingConfig,
    routes: Route,
    inhibit: Vec<InhibitRule>,
    policies: BTreeMap<String, EscalationPolicyConfig>,
    alerts: BTreeMap<String, Alert>,
    groups: BTreeMap<String, Group>,
    silences: BTreeMap<String, Silence>,
    outbox: BTreeMap<String, Notification>,
    nonces: BTreeMap<String, i64>,
    seq: u64,
    dirty_alerts: BTreeSet<String>,
    deleted_alerts: BTreeSet<String>,
    dirty_groups: BTreeSet<String>,
    deleted_groups: BTreeSet<String>,
    dirty_silences: BTreeSet<String>,
    dirty_outbox: BTreeSet<String>,
    deleted_outbox: BTreeSet<String>,
    new_audit: Vec<AuditEntry>,
    new_nonces: Vec<(String, i64)>,
    new_deliveries: Vec<Delivery>,
    schedules: BTreeMap<String, Schedule>,
    dirty_schedules: BTreeSet<String>,
    deleted_schedules: BTreeSet<String>,
    /// Person → the receiver that reaches them.
    people: BTreeMap<String, String>,
}

fn hash_of(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.as_bytes().iter().chain([0u8].iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

impl Alerting {
    pub fn new(cfg: AlertingConfig) -> Result<Alerting, ConfigError> {
        cfg.validate()?;
        let routes = Route::build(&cfg.route)?;
        let mut inhibit = Vec::new();
        for (i, r) in cfg.inhibit_rules.iter().enumerate() {
            inhibit.push(InhibitRule {
                source: parse_matcher_list(&r.source_matchers, &format!("inhibit_rules[{i}].source_matchers"))?,
                target: parse_matcher_list(&r.target_matchers, &format!("inhibit_rules[{i}].target_matchers"))?,
                equal: r.equal.clone(),
            });
        }
        let people = cfg
            .people
            .iter()
            .map(|p| (p.name.clone(), p.receiver.clone()))
            .collect();
        let policies = cfg
            .escalation_policies
            .iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect();
        Ok(Alerting {
            cfg,
            routes,
            inhibit,
            policies,
            alerts: BTreeMap::new(),
            groups: BTreeMap::new(),
            silences: BTreeMap::new(),
            outbox: BTreeMap::new(),
            nonces: BTreeMap::new(),
            seq: 0,
            dirty_alerts: BTreeSet::new(),
            deleted_alerts: BTreeSet::new(),
            dirty_groups: BTreeSet::new(),
            deleted_groups: BTreeSet::new(),
            dirty_silences: BTreeSet::new(),
            dirty_outbox: BTreeSet::new(),
            deleted_outbox: BTreeSet::new(),
            new_audit: Vec::new(),
            new_nonces: Vec::new(),
            new_deliveries: Vec::new(),
            schedules: BTreeMap::new(),
            dirty_schedules: BTreeSet::new(),
            deleted_schedules: BTreeSet::new(),
            people,
        })
    }

    /// Resumes from persisted state (pending escalations and undelivered notifications
    /// carry on; delivered ones are gone from the outbox and are not sent again).
    pub fn restore(&mut self, s: Snapshot) {
        // Alerts kept under an older fingerprint (before ids followed Alertmanager's) are
        // re-keyed, and their groups follow, so a re-sent alert finds its old self.
        let mut renamed: BTreeMap<String, String> = BTreeMap::new();
        for mut a in s.alerts {
            let id = fingerprint(&a.labels);
            if id != a.id {
                let old = std::mem::replace(&mut a.id, id.clone());
                self.deleted_alerts.insert(old.clone());
                self.dirty_alerts.insert(id.clone());
                renamed.insert(old, id.clone());
            }
            self.alerts.insert(id, a);
        }
        for mut g in s.groups {
            if !renamed.is_empty() {
                let rename = |ids: &BTreeSet<String>| -> BTreeSet<String> {
                    ids.iter().map(|i| renamed.get(i).unwrap_or(i).clone()).collect()
                };
                let (alerts, announced) = (rename(&g.alerts), rename(&g.announced));
                if alerts != g.alerts || announced != g.announced {
                    g.alerts = alerts;
                    g.announced = announced;
                    self.dirty_groups.insert(g.key.clone());
                }
            }
            self.groups.insert(g.key.clone(), g);
        }
        self.silences = s.silences.into_iter().map(|x| (x.id.clone(), x)).collect();
        self.schedules = s.schedules.into_iter().map(|x| (x.name.clone(), x)).collect();
        self.outbox = s.outbox.into_iter().map(|n| (n.id.clone(), n)).collect();
        self.nonces = s.nonces.into_iter().collect();
        self.seq = s.next_seq;
    }

    pub fn config(&self) -> &AlertingConfig {
        &self.cfg
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn audit(&mut self, now_ms: i64, actor: &str, action: &str, target: &str, detail: String) {
        let seq = self.next_seq();
        self.new_audit.push(AuditEntry {
            seq,
            at_ms: now_ms,
            actor: actor.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            detail,
        });
    }

    /// Receives one alert (new or re-sent). Returns its id.
    pub fn upsert(&mut self, input: AlertInput, now_ms: i64) -> String {
        let id = fingerprint(&input.labels);
        let ends = input.ends_at_ms;
        let resolved_now = ends.is_some_and(|e| e <= now_ms);
        let timeout = i64::try_from(self.cfg.resolve_timeout_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let mut reroute = false;
        match self.alerts.get_mut(&id) {
            Some(a) => {
                a.received += 1;
                a.updated_at_ms = now_ms;
                a.annotations = input.annotations;
                if !input.generator_url.is_empty() {
                    a.generator_url = input.generator_url;
                }
                if a.state == AlertState::Resolved {
                    if !resolved_now {
                        // It came back: a new occurrence, nobody has acknowledged this one.
                        a.state = AlertState::Firing;
                        a.starts_at_ms = input.starts_at_ms.unwrap_or(now_ms);
                        a.acknowledged_by = None;
                        a.acknowledged_at_ms = None;
                        reroute = true;
                    }
                } else if resolved_now {
                    a.state = AlertState::Resolved;
                    reroute = true;
                }
                a.explicit_end = ends.is_some();
                a.ends_at_ms = ends.unwrap_or(now_ms.saturating_add(timeout));
            }
            None => {
                let a = Alert {
                    id: id.clone(),
                    labels: input.labels,
                    annotations: input.annotations,
                    state: if resolved_now {
                        AlertState::Resolved
                    } else {
                        AlertState::Firing
                    },
                    starts_at_ms: input.starts_at_ms.unwrap_or(now_ms),
                    ends_at_ms: ends.unwrap_or(now_ms.saturating_add(timeout)),
                    explicit_end: ends.is_some(),
                    updated_at_ms: now_ms,
                    generator_url: input.generator_url,
                    acknowledged_by: None,
                    acknowledged_at_ms: None,
                    comments: Vec::new(),
                    silenced_by: Vec::new(),
                    inhibited_by: Vec::new(),
                    received: 1,
                };
                reroute = a.state == AlertState::Firing;
                self.alerts.insert(id.clone(), a);
            }
        }
        self.dirty_alerts.insert(id.clone());
        self.deleted_alerts.remove(&id);
        if reroute {
            self.route_alert(&id, now_ms);
        }
        id
    }

    fn route_alert(&mut self, id: &str, now_ms: i64) {
        let Some(alert) = self.alerts.get(id) else { return };
        let labels = alert.labels.clone();
        let targets: Vec<(String, String, LabelSet, i64)> = self
            .routes
            .matches(&labels)
            .into_iter()
            .map(|r| {
                let group_labels = project(&labels, &r.group_by);
                (r.id.clone(), r.receiver.clone(), group_labels, r.group_wait_ms)
            })
            .collect();
        for (route_id, receiver, group_labels, wait) in targets {
            let key = format!("{route_id}/{}", fingerprint(&group_labels));
            let g = self.groups.entry(key.clone()).or_insert_with(|| Group {
                key: key.clone(),
                route_id,
                receiver,
                labels: group_labels,
                alerts: BTreeSet::new(),
                next_flush_ms: now_ms.saturating_add(wait),
                last_sent_hash: None,
                last_sent_ms: None,
                announced_firing: false,
                announced: BTreeSet::new(),
                escalation: None,
            });
            g.alerts.insert(id.to_string());
            self.deleted_groups.remove(&key);
            self.dirty_groups.insert(key);
        }
    }

    /// Silences that mute these labels now.
    fn silenced_by(&self, labels: &LabelSet, now_ms: i64) -> Vec<String> {
        self.silences
            .values()
            .filter(|s| s.mutes(labels, now_ms))
            .map(|s| s.id.clone())
            .collect()
    }

    /// Active alerts that inhibit `target`.
    fn inhibited_by(&self, target: &Alert) -> Vec<String> {
        let mut out = Vec::new();
        for rule in &self.inhibit {
            if !all_match(&rule.target, &target.labels) {
                continue;
            }
            for s in self.alerts.values() {
                if s.id == target.id || !s.is_active() || !all_match(&rule.source, &s.labels) {
                    continue;
                }
                if rule.equal.iter().all(|k| s.labels.get(k) == target.labels.get(k)) && !out.contains(&s.id) {
                    out.push(s.id.clone());
                }
            }
        }
        out
    }

    /// The alert as the API shows it (with current silences and inhibitions).
    pub fn alert(&self, id: &str, now_ms: i64) -> Option<Alert> {
        self.alerts.get(id).map(|a| self.decorate(a, now_ms))
    }

    fn decorate(&self, a: &Alert, now_ms: i64) -> Alert {
        let mut a = a.clone();
        if a.is_active() {
            a.silenced_by = self.silenced_by(&a.labels, now_ms);
            a.inhibited_by = self.inhibited_by(&a);
        }
        a
    }

    /// Alerts, optionally in one state ("silenced" and "inhibited" are views on active ones).
    pub fn alerts(&self, state: Option<&str>, now_ms: i64) -> Result<Vec<Alert>, ActionError> {
        let all = self.alerts.values().map(|a| self.decorate(a, now_ms));
        let list: Vec<Alert> = match state {
            None => all.collect(),
            Some("firing") => all.filter(|a| a.state == AlertState::Firing).collect(),
            Some("acknowledged") => all.filter(|a| a.state == AlertState::Acknowledged).collect(),
            Some("resolved") => all.filter(|a| a.state == AlertState::Resolved).collect(),
            Some("silenced") => all.filter(|a| !a.silenced_by.is_empty()).collect(),
            Some("inhibited") => all.filter(|a| !a.inhibited_by.is_empty()).collect(),
            Some(other) => {
                return Err(ActionError::Invalid(format!(
                    "unknown state {other:?}: use firing, acknowledged, resolved, silenced or inhibited"
                )));
            }
        };
        Ok(list)
    }

    /// Acknowledges: stops repeats and escalation for the alert. Idempotent.
    pub fn ack(&mut self, id: &str, by: &str, now_ms: i64) -> Result<ActionOutcome, ActionError> {
        let a = self
            .alerts
            .get_mut(id)
            .ok_or_else(|| ActionError::UnknownAlert(id.to_string()))?;
        let outcome = match a.state {
            AlertState::Acknowledged => ActionOutcome {
                changed: false,
                state: a.state,
                message: format!(
                    "already acknowledged by {}",
                    a.acknowledged_by.clone().unwrap_or_else(|| "someone".into())
                ),
            },
            AlertState::Resolved => ActionOutcome {
                changed: false,
                state: a.state,
                message: "already resolved".into(),
            },
            AlertState::Firing => {
                a.state = AlertState::Acknowledged;
                a.acknowledged_by = Some(by.to_string());
                a.acknowledged_at_ms = Some(now_ms);
                ActionOutcome {
                    changed: true,
                    state: a.state,
                    message: format!("acknowledged by {by}"),
                }
            }
        };
        if outcome.changed {
            self.dirty_alerts.insert(id.to_string());
            self.audit(now_ms, by, "ack", id, String::new());
            self.stop_settled_escalations(id);
        }
        Ok(outcome)
    }

    pub fn unack(&mut self, id: &str, by: &str, now_ms: i64) -> Result<ActionOutcome, ActionError> {
        let a = self
            .alerts
            .get_mut(id)
            .ok_or_else(|| ActionError::UnknownAlert(id.to_string()))?;
        if a.state != AlertState::Acknowledged {
            return Ok(ActionOutcome {
                changed: false,
                state: a.state,
                message: "not acknowledged".into(),
            });
        }
        a.state = AlertState::Firing;
        a.acknowledged_by = None;
        a.acknowledged_at_ms = None;
        let state = a.state;
        self.dirty_alerts.insert(id.to_string());
        self.audit(now_ms, by, "unack", id, String::new());
        Ok(ActionOutcome {
            changed: true,
            state,
            message: format!("acknowledgement withdrawn by {by}"),
        })
    }

    pub fn resolve(&mut self, id: &str, by: &str, now_ms: i64) -> Result<ActionOutcome, ActionError> {
        let a = self
            .alerts
            .get_mut(id)
            .ok_or_else(|| ActionError::UnknownAlert(id.to_string()))?;
        if a.state == AlertState::Resolved {
            return Ok(ActionOutcome {
                changed: false,
                state: a.state,
                message: "already resolved".into(),
            });
        }
        a.state = AlertState::Resolved;
        a.ends_at_ms = now_ms;
        self.dirty_alerts.insert(id.to_string());
        self.audit(now_ms, by, "resolve", id, String::new());
        self.stop_settled_escalations(id);
        Ok(ActionOutcome {
            changed: true,
            state: AlertState::Resolved,
            message: format!("resolved by {by}"),
        })
    }

    pub fn comment(&mut self, id: &str, by: &str, text: &str, now_ms: i64) -> Result<ActionOutcome, ActionError> {
        if text.trim().is_empty() {
            return Err(ActionError::Invalid("comment text must not be empty".into()));
        }
        let a = self
            .alerts
            .get_mut(id)
            .ok_or_else(|| ActionError::UnknownAlert(id.to_string()))?;
        a.comments.push(Comment {
            at_ms: now_ms,
            by: by.to_string(),
            text: text.to_string(),
        });
        let state = a.state;
        self.dirty_alerts.insert(id.to_string());
        self.audit(now_ms, by, "comment", id, text.to_string());
        Ok(ActionOutcome {
            changed: true,
            state,
            message: "comment added".into(),
        })
    }

    /// Records a usefulness verdict in the audit log (the caller forwards it to detectors).
    pub fn record_feedback(&mut self, id: &str, by: &str, verdict: &str, now_ms: i64) -> Result<Alert, ActionError> {
        let a = self
            .alerts
            .get(id)
            .cloned()
            .ok_or_else(|| ActionError::UnknownAlert(id.to_string()))?;
        self.audit(now_ms, by, "feedback", id, verdict.to_string());
        Ok(a)
    }

    /// Marks a signed-link nonce used; false when it was used before (a replay).
    pub fn use_nonce(&mut self, nonce: &str, expires_ms: i64) -> bool {
        if self.nonces.contains_key(nonce) {
            return false;
        }
        self.nonces.insert(nonce.to_string(), expires_ms);
        self.new_nonces.push((nonce.to_string(), expires_ms));
        true
    }

    fn stop_settled_escalations(&mut self, id: &str) {
        let keys: Vec<String> = self
            .groups
            .values()
            .filter(|g| g.alerts.contains(id))
            .map(|g| g.key.clone())
            .collect();
        for key in keys {
            let unacked = self.groups.get(&key).is_some_and(|g| {
                g.alerts
                    .iter()
                    .any(|a| self.alerts.get(a).is_some_and(|a| a.state == AlertState::Firing))
            });
            if let Some(g) = self.groups.get_mut(&key)
                && !unacked
                && g.escalation.is_some()
            {
                g.escalation = None;
                self.dirty_groups.insert(key);
            }
        }
    }

    pub fn add_silence(&mut self, mut s: Silence, now_ms: i64) -> Result<String, ActionError> {
        if s.matchers.is_empty() {
            return Err(ActionError::Invalid("a silence needs at least one matcher".into()));
        }
        if s.ends_at_ms <= s.starts_at_ms {
            return Err(ActionError::Invalid("endsAt must be after startsAt".into()));
        }
        if s.created_by.trim().is_empty() {
            return Err(ActionError::Invalid("createdBy must not be empty".into()));
        }
        if s.id.is_empty() {
            s.id = format!("s{:08}", self.next_seq());
        }
        s.created_at_ms = now_ms;
        let detail = format!(
            "{} until {} ({})",
            s.matchers
                .iter()
                .map(|m| format!("{}{}{:?}", m.name, op_str(m), m.value))
                .collect::<Vec<_>>()
                .join(","),
            s.ends_at_ms,
            s.comment
        );
        let (id, by) = (s.id.clone(), s.created_by.clone());
        self.silences.insert(id.clone(), s);
        self.dirty_silences.insert(id.clone());
        self.audit(now_ms, &by, "silence_create", &id, detail);
        Ok(id)
    }

    /// Ends a silence now (kept for the record, inactive).
    pub fn expire_silence(&mut self, id: &str, by: &str, now_ms: i64) -> Result<(), ActionError> {
        let s = self
            .silences
            .get_mut(id)
            .ok_or_else(|| ActionError::UnknownSilence(id.to_string()))?;
        if s.ends_at_ms > now_ms {
            s.ends_at_ms = now_ms;
            if s.starts_at_ms > now_ms {
                s.starts_at_ms = now_ms;
            }
        }
        self.dirty_silences.insert(id.to_string());
        self.audit(now_ms, by, "silence_expire", id, String::new());
        Ok(())
    }

    pub fn silences(&self) -> Vec<Silence> {
        self.silences.values().cloned().collect()
    }

    /// Advances time: resolves timed-out alerts, flushes due groups, runs escalations.
    pub fn tick(&mut self, now_ms: i64) {
        for a in self.alerts.values_mut() {
            if a.is_active() && a.ends_at_ms <= now_ms {
                a.state = AlertState::Resolved;
                self.dirty_alerts.insert(a.id.clone());
            }
        }
        let in_groups: BTreeSet<&String> = self.groups.values().flat_map(|g| g.alerts.iter()).collect();
        let forget: Vec<String> = self
            .alerts
            .values()
            .filter(|a| a.state == AlertState::Resolved && now_ms - a.ends_at_ms >= RESOLVED_RETENTION_MS)
            .filter(|a| !in_groups.contains(&a.id))
            .map(|a| a.id.clone())
            .collect();
        for id in forget {
            self.alerts.remove(&id);
            self.dirty_alerts.remove(&id);
            self.deleted_alerts.insert(id);
        }
        let due: Vec<String> = self
            .groups
            .values()
            .filter(|g| g.next_flush_ms <= now_ms)
            .map(|g| g.key.clone())
            .collect();
        for key in due {
            self.flush(&key, now_ms);
        }
        let escalating: Vec<String> = self
            .groups
            .values()
            .filter(|g| g.escalation.as_ref().is_some_and(|e| e.next_at_ms <= now_ms))
            .map(|g| g.key.clone())
            .collect();
        for key in escalating {
            self.escalate(&key, now_ms);
        }
    }

    /// The earliest time anything is due (for the caller's timer).
    pub fn next_due_ms(&self) -> Option<i64> {
        let groups = self.groups.values().map(|g| g.next_flush_ms);
        let esc = self
            .groups
            .values()
            .filter_map(|g| g.escalation.as_ref().map(|e| e.next_at_ms));
        let outbox = self.outbox.values().map(|n| n.next_attempt_ms);
        let ends = self.alerts.values().filter(|a| a.is_active()).map(|a| a.ends_at_ms);
        groups.chain(esc).chain(outbox).chain(ends).min()
    }

    fn flush(&mut self, key: &str, now_ms: i64) {
        let Some(g) = self.groups.get(key).cloned() else { return };
        let Some(route) = self.routes.find(&g.route_id).cloned() else {
            // The route is gone (config changed): drop the group.
            self.groups.remove(key);
            self.deleted_groups.insert(key.to_string());
            return;
        };
        let mut firing = Vec::new();
        let mut unacked = 0;
        let mut resolved: Vec<Alert> = Vec::new();
        for id in &g.alerts {
            let Some(a) = self.alerts.get(id) else { continue };
            let a = self.decorate(a, now_ms);
            if !a.silenced_by.is_empty() || !a.inhibited_by.is_empty() {
                continue;
            }
            match a.state {
                AlertState::Firing => {
                    unacked += 1;
                    firing.push(a);
                }
                AlertState::Acknowledged => firing.push(a),
                AlertState::Resolved => resolved.push(a),
            }
        }
        // Every resolved alert leaves the group at this flush; only those the receiver was
        // told were firing are news.
        let resolved_ids: Vec<String> = resolved.iter().map(|a| a.id.clone()).collect();
        // (A group saved before `announced` existed announced all it held.)
        let legacy = g.announced.is_empty() && g.announced_firing;
        resolved.retain(|a| legacy || g.announced.contains(&a.id));
        // What the group holds once the resolved alerts have left: the next flush compares
        // with this, so a partial resolve is announced once, not again without them.
        let remaining: Vec<&str> = firing
            .iter()
            .map(|a| a.id.as_str())
            .chain(std::iter::once("|"))
            .collect();
        let remaining_hash = hash_of(&remaining);
        let ids: Vec<&str> = remaining
            .iter()
            .copied()
            .chain(resolved.iter().map(|a| a.id.as_str()))
            .collect();
        let hash = hash_of(&ids);
        let changed = g.last_sent_hash.as_deref() != Some(hash.as_str());
        let repeat_due = unacked > 0 && g.last_sent_ms.is_some_and(|t| now_ms - t >= route.repeat_interval_ms);
        let reason = if !firing.is_empty() && changed {
            Some(if g.last_sent_ms.is_none() || !g.announced_firing {
                NotifyReason::Initial
            } else {
                NotifyReason::Update
            })
        } else if firing.is_empty() && !resolved.is_empty() && changed {
            Some(NotifyReason::Resolved)
        } else if repeat_due {
            Some(NotifyReason::Repeat)
        } else {
            None
        };
        let firing_ids: Vec<String> = firing.iter().map(|a| a.id.clone()).collect();
        if let Some(reason) = reason {
            let status = if firing.is_empty() { "resolved" } else { "firing" };
            let mut alerts = firing.clone();
            alerts.extend(resolved);
            self.enqueue(&g, g.receiver.clone(), reason, None, status, alerts, now_ms);
        }
        let Some(gm) = self.groups.get_mut(key) else { return };
        if reason.is_some() {
            gm.last_sent_hash = Some(remaining_hash);
            gm.last_sent_ms = Some(now_ms);
            if !firing.is_empty() {
                gm.announced_firing = true;
            }
            gm.announced.extend(firing_ids);
            if reason == Some(NotifyReason::Initial)
                && gm.escalation.is_none()
                && let Some(p) = route.escalation.as_ref().and_then(|p| self.policies.get(p))
                && let Some(first) = p.steps.first()
            {
                gm.escalation = Some(Escalation {
                    policy: p.name.clone(),
                    step: 0,
                    round: 0,
                    next_at_ms: now_ms.saturating_add(i64::try_from(first.wait_secs * 1000).unwrap_or(i64::MAX)),
                });
            }
        }
        // Resolved alerts leave the group once flushed; an empty group ends.
        for id in resolved_ids {
            gm.alerts.remove(&id);
            gm.announced.remove(&id);
        }
        if gm.alerts.is_empty() {
            self.groups.remove(key);
            self.deleted_groups.insert(key.to_string());
            self.dirty_groups.remove(key);
        } else {
            gm.next_flush_ms = now_ms.saturating_add(route.group_interval_ms);
            if gm
                .alerts
                .iter()
                .all(|a| self.alerts.get(a).is_none_or(|a| a.state != AlertState::Firing))
            {
                gm.escalation = None;
            }
            self.dirty_groups.insert(key.to_string());
        }
    }

    fn escalate(&mut self, key: &str, now_ms: i64) {
        let Some(g) = self.groups.get(key).cloned() else { return };
        let Some(esc) = g.escalation.clone() else { return };
        let Some(policy) = self.policies.get(&esc.policy).cloned() else {
            return;
        };
        let firing: Vec<Alert> = g
            .alerts
            .iter()
            .filter_map(|id| self.alerts.get(id))
            .filter(|a| a.state == AlertState::Firing)
            .map(|a| self.decorate(a, now_ms))
            .filter(|a| a.silenced_by.is_empty() && a.inhibited_by.is_empty())
            .collect();
        if firing.is_empty() {
            if let Some(gm) = self.groups.get_mut(key) {
                gm.escalation = None;
                self.dirty_groups.insert(key.to_string());
            }
            return;
        }
        let Some(step) = policy.steps.get(esc.step) else { return };
        let mut receivers = step.receivers.clone();
        for schedule in &step.schedules {
            // The person on call now, through their own receiver; a step that finds nobody
            // says so in the audit log rather than failing silently.
            match self.on_call_receiver(schedule, now_ms) {
                Ok(r) if !receivers.contains(&r) => receivers.push(r),
                Ok(_) => {}
                Err(why) => self.audit(now_ms, "vigil", "escalation_unrouted", &g.key, why),
            }
        }
        for r in receivers {
            self.enqueue(
                &g,
                r,
                NotifyReason::Escalation,
                Some(esc.step + 1),
                "firing",
                firing.clone(),
                now_ms,
            );
        }
        let (mut next, mut round) = (esc.step + 1, esc.round);
        if next >= policy.steps.len() {
            next = 0;
            round += 1;
        }
        let more = round <= policy.repeat;
        if let Some(gm) = self.groups.get_mut(key) {
            gm.escalation = more.then(|| Escalation {
                policy: esc.policy.clone(),
                step: next,
                round,
                next_at_ms: now_ms
                    .saturating_add(i64::try_from(policy.steps[next].wait_secs * 1000).unwrap_or(i64::MAX)),
            });
            self.dirty_groups.insert(key.to_string());
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn enqueue(
        &mut self,
        g: &Group,
        receiver: String,
        reason: NotifyReason,
        step: Option<usize>,
        status: &str,
        alerts: Vec<Alert>,
        now_ms: i64,
    ) {
        let seq = self.next_seq();
        let n = Notification {
            id: format!("{}/{receiver}/{seq}", g.key),
            group_key: alertmanager::group_key(&self.routes, &g.route_id, &g.labels),
            receiver,
            reason,
            step,
            status: status.to_string(),
            group_labels: g.labels.clone(),
            alerts,
            created_ms: now_ms,
            attempts: 0,
            next_attempt_ms: now_ms,
            last_error: None,
        };
        self.dirty_outbox.insert(n.id.clone());
        self.outbox.insert(n.id.clone(), n);
    }

    /// Notifications due for a delivery attempt.
    pub fn due(&self, now_ms: i64) -> Vec<Notification> {
        self.outbox
            .values()
            .filter(|n| n.next_attempt_ms <= now_ms)
            .cloned()
            .collect()
    }

    /// Every notification waiting for delivery.
    pub fn pending(&self) -> Vec<Notification> {
        self.outbox.values().cloned().collect()
    }

    /// The receiver took notification `id`; `answer` is what it said.
    pub fn delivered(&mut self, id: &str, answer: &str, now_ms: i64) {
        if let Some(n) = self.outbox.remove(id) {
            self.record_delivery(&n, now_ms, DeliveryOutcome::Delivered, answer);
            self.dirty_outbox.remove(id);
            self.deleted_outbox.insert(id.to_string());
        }
    }

    fn record_delivery(&mut self, n: &Notification, now_ms: i64, outcome: DeliveryOutcome, answer: &str) {
        let seq = self.next_seq();
        self.new_deliveries.push(Delivery::of(n, seq, now_ms, outcome, answer));
    }

    /// Schedules a retry with exponential backoff, or gives up after [`MAX_ATTEMPTS`].
    pub fn failed(&mut self, id: &str, error: &str, now_ms: i64) {
        let Some(n) = self.outbox.get(id).cloned() else { return };
        let last = n.attempts + 1 >= MAX_ATTEMPTS;
        let outcome = if last {
            DeliveryOutcome::Abandoned
        } else {
            DeliveryOutcome::Failed
        };
        self.record_delivery(&n, now_ms, outcome, error);
        let Some(n) = self.outbox.get_mut(id) else { return };
        n.attempts += 1;
        n.last_error = Some(error.to_string());
        if last {
            let receiver = n.receiver.clone();
            self.outbox.remove(id);
            self.dirty_outbox.remove(id);
            self.deleted_outbox.insert(id.to_string());
            self.audit(
                now_ms,
                "vigil",
                "delivery_abandoned",
                id,
                format!("{receiver}: {error}"),
            );
            return;
        }
        let backoff = (1000i64 << n.attempts.min(20)).min(MAX_BACKOFF_MS);
        n.next_attempt_ms = now_ms.saturating_add(backoff);
        self.dirty_outbox.insert(id.to_string());
    }

    /// Everything changed since the last call, for the caller to persist atomically.
    pub fn take_changes(&mut self) -> Changes {
        let alerts = std::mem::take(&mut self.dirty_alerts)
            .into_iter()
            .filter_map(|k| self.alerts.get(&k).cloned())
            .collect();
        let groups = std::mem::take(&mut self.dirty_groups)
            .into_iter()
            .filter_map(|k| self.groups.get(&k).cloned())
            .collect();
        let silences = std::mem::take(&mut self.dirty_silences)
            .into_iter()
            .filter_map(|k| self.silences.get(&k).cloned())
            .collect();
        let outbox = std::mem::take(&mut self.dirty_outbox)
            .into_iter()
            .filter_map(|k| self.outbox.get(&k).cloned())
            .collect();
        Changes {
            alerts,
            alerts_deleted: std::mem::take(&mut self.deleted_alerts).into_iter().collect(),
            groups,
            groups_deleted: std::mem::take(&mut self.deleted_groups).into_iter().collect(),
            silences,
            outbox,
            outbox_deleted: std::mem::take(&mut self.deleted_outbox).into_iter().collect(),
            audit: std::mem::take(&mut self.new_audit),
            deliveries: std::mem::take(&mut self.new_deliveries),
            schedules: std::mem::take(&mut self.dirty_schedules)
                .iter()
                .filter_map(|n| self.schedules.get(n).cloned())
                .collect(),
            schedules_deleted: std::mem::take(&mut self.deleted_schedules).into_iter().collect(),
            nonces: std::mem::take(&mut self.new_nonces),
            next_seq: self.seq,
        }
    }

    pub fn groups(&self) -> Vec<Group> {
        self.groups.values().cloned().collect()
    }

    /// The receiver of whoever is on call in `schedule` at `now_ms`, or why there is none.
    fn on_call_receiver(&self, schedule: &str, now_ms: i64) -> Result<String, String> {
        let s = self
            .schedules
            .get(schedule)
            .ok_or_else(|| format!("schedule {schedule:?} does not exist"))?;
        let compiled = s.compile().map_err(|e| format!("schedule {schedule:?}: {e}"))?;
        let who = compiled
            .on_call_at(now_ms)
            .ok_or_else(|| format!("nobody is on call in {schedule:?}"))?;
        self.people.get(&who.user).cloned().ok_or_else(|| {
            format!(
                "{} is on call in {schedule:?} but has no receiver (alerting.people)",
                who.user
            )
        })
    }

    pub fn schedules(&self) -> Vec<Schedule> {
        self.schedules.values().cloned().collect()
    }

    pub fn schedule(&self, name: &str) -> Option<Schedule> {
        self.schedules.get(name).cloned()
    }

    /// Creates or replaces a schedule's rotations (its overrides stay).
    pub fn put_schedule(&mut self, mut s: Schedule, by: &str, now_ms: i64) -> Result<(), ActionError> {
        if let Some(old) = self.schedules.get(&s.name) {
            s.overrides = old.overrides.clone();
        } else {
            s.overrides.clear();
        }
        s.compile().map_err(ActionError::Invalid)?;
        s.updated_ms = now_ms;
        s.updated_by = by.to_string();
        let detail = format!(
            "{} layer(s) in {}: {}",
            s.layers.len(),
            s.time_zone,
            s.layers
                .iter()
                .map(|l| format!("{:?} at {} of {}", l.rotation, l.handoff, l.users.join(", ")).to_lowercase())
                .collect::<Vec<_>>()
                .join("; ")
        );
        let name = s.name.clone();
        self.schedules.insert(name.clone(), s);
        self.dirty_schedules.insert(name.clone());
        self.deleted_schedules.remove(&name);
        self.audit(now_ms, by, "schedule_update", &name, detail);
        Ok(())
    }

    pub fn delete_schedule(&mut self, name: &str, by: &str, now_ms: i64) -> Result<(), ActionError> {
        if self.schedules.remove(name).is_none() {
            return Err(ActionError::UnknownSchedule(name.to_string()));
        }
        self.dirty_schedules.remove(name);
        self.deleted_schedules.insert(name.to_string());
        self.audit(now_ms, by, "schedule_delete", name, String::new());
        Ok(())
    }

    /// Puts `user` on call in `schedule` from `start_ms` to `end_ms`, over every layer.
    pub fn add_override(
        &mut self,
        schedule: &str,
        user: &str,
        (start_ms, end_ms): (i64, i64),
        by: &str,
        now_ms: i64,
    ) -> Result<String, ActionError> {
        if end_ms <= start_ms {
            return Err(ActionError::Invalid("end must be after start".into()));
        }
        if user.trim().is_empty() || user.chars().count() > 64 || user.chars().any(char::is_control) {
            return Err(ActionError::Invalid("user: 1 to 64 printable characters".into()));
        }
        let id = format!("o{:08}", self.next_seq());
        let s = self
            .schedules
            .get_mut(schedule)
            .ok_or_else(|| ActionError::UnknownSchedule(schedule.to_string()))?;
        s.overrides.push(Override {
            id: id.clone(),
            user: user.to_string(),
            start_ms,
            end_ms,
            created_by: by.to_string(),
        });
        // Past overrides are dropped a week after they end: the audit log keeps them.
        s.overrides.retain(|o| o.end_ms + 7 * 86_400_000 > now_ms);
        self.dirty_schedules.insert(schedule.to_string());
        self.audit(
            now_ms,
            by,
            "override_create",
            schedule,
            format!("{user} from {start_ms} to {end_ms} ({id})"),
        );
        Ok(id)
    }

    pub fn delete_override(&mut self, schedule: &str, id: &str, by: &str, now_ms: i64) -> Result<(), ActionError> {
        let s = self
            .schedules
            .get_mut(schedule)
            .ok_or_else(|| ActionError::UnknownSchedule(schedule.to_string()))?;
        let before = s.overrides.len();
        s.overrides.retain(|o| o.id != id);
        if s.overrides.len() == before {
            return Err(ActionError::Invalid(format!("no override {id:?} in {schedule:?}")));
        }
        self.dirty_schedules.insert(schedule.to_string());
        self.audit(now_ms, by, "override_delete", schedule, id.to_string());
        Ok(())
    }

    /// The receivers an alert with these labels is routed to, each once, in route order.
    pub fn receivers_for(&self, labels: &LabelSet) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in self.routes.matches(labels) {
            if !out.contains(&r.receiver) {
                out.push(r.receiver.clone());
            }
        }
        out
    }

    /// A group's key as Alertmanager writes it.
    pub fn group_key(&self, g: &Group) -> String {
        alertmanager::group_key(&self.routes, &g.route_id, &g.labels)
    }

    /// The routing tree, receivers and inhibition rules as Alertmanager configuration YAML.
    pub fn config_yaml(&self) -> String {
        let receivers: Vec<String> = self.cfg.receivers.iter().map(|r| r.name.clone()).collect();
        let inhibit: Vec<_> = self
            .inhibit
            .iter()
            .map(|r| (r.source.clone(), r.target.clone(), r.equal.clone()))
            .collect();
        alertmanager::config_yaml(&self.routes, &receivers, &inhibit)
    }
}

fn op_str(m: &Matcher) -> &'static str {
    match m.op {
        crate::matcher::MatchOp::Equal => "=",
        crate::matcher::MatchOp::NotEqual => "!=",
        crate::matcher::MatchOp::Regex => "=~",
        crate::matcher::MatchOp::NotRegex => "!~",
    }
}

#[cfg(test)]
mod tests;
