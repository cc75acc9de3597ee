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
//!
//! One file per job: `intake.rs` (alerts in, routing, silenced/inhibited views),
//! `actions.rs` (what people do), `notify.rs` (timers, escalation, the outbox and delivery
//! outcomes), `oncall.rs` (schedules); this file holds the state, its types and persistence.

mod actions;
mod intake;
mod notify;
mod oncall;

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

/// Why a notification was sent (shown to receivers and in the delivery history).
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
    /// `<group key>/<receiver>/<sequence number>`: the same on every retry, so receivers
    /// can use it as an idempotency key.
    pub id: String,
    /// The group it is about, as Alertmanager writes it (webhooks' `groupKey`); not
    /// [`Group::key`].
    pub group_key: String,
    /// The receiver it goes to.
    pub receiver: String,
    /// Why it was sent.
    pub reason: NotifyReason,
    /// Escalation step (1-based) when `reason` is escalation.
    pub step: Option<usize>,
    /// "firing" or "resolved".
    pub status: String,
    /// The labels the group shares (its `group_by` values).
    pub group_labels: LabelSet,
    /// The group's alerts as they stood when it was made.
    pub alerts: Vec<Alert>,
    /// When it was made, unix ms.
    pub created_ms: i64,
    /// Failed delivery attempts so far (0 until one fails; a delivered notification leaves
    /// the outbox).
    pub attempts: u32,
    /// When the next attempt is due, unix ms: at once when made, then 2 s, 4 s, 8 s … after
    /// each failure, at most [`MAX_BACKOFF_MS`].
    pub next_attempt_ms: i64,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
}

/// Where a group is in its escalation policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    /// The policy's name.
    pub policy: String,
    /// Next step to run (index into the policy's steps).
    pub step: usize,
    /// How many times the steps have been run through (against the policy's `repeat`).
    pub round: u32,
    /// When the next step runs, unix ms: that step's `wait_secs` after the previous step
    /// (after the group's first notification, for step one).
    pub next_at_ms: i64,
}

/// Alerts of one route with the same `group_by` values: notified together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Vigil's key, `<route id>/<fingerprint of the group labels>`, stable across restarts;
    /// [`Alerting::group_key`] gives Alertmanager's spelling.
    pub key: String,
    /// The route the group belongs to (its position in the tree).
    pub route_id: String,
    /// The route's receiver.
    pub receiver: String,
    /// The `group_by` labels and their values (all of them for `...`; labels an alert lacks
    /// are left out).
    pub labels: LabelSet,
    /// Ids of the alerts in it; resolved ones leave at the next flush, and a group left
    /// empty is removed.
    pub alerts: BTreeSet<String>,
    /// When it is next looked at for a notification, unix ms: `group_wait` after it was
    /// made, then `group_interval` after each flush.
    pub next_flush_ms: i64,
    /// Content hash and time of the last notification (dedup and repeat).
    pub last_sent_hash: Option<String>,
    /// When the last notification went, unix ms.
    pub last_sent_ms: Option<i64>,
    /// Whether the receiver has been told about firing alerts (so a resolve is news).
    pub announced_firing: bool,
    /// The alerts the receiver has been told are firing: only their resolution is news (an
    /// alert that joined while the group was silenced and resolved unseen is never listed).
    #[serde(default)]
    pub announced: BTreeSet<String>,
    /// Its escalation, while one runs (stopped by an acknowledgement).
    pub escalation: Option<Escalation>,
}

#[derive(Debug, Clone)]
struct InhibitRule {
    source: Vec<Matcher>,
    target: Vec<Matcher>,
    equal: Vec<String>,
}

/// Everything that changed since the last [`Alerting::take_changes`], ready to persist
/// (or to replicate: a cluster's correlator ships them to its standby as JSON).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Changes {
    /// Alerts changed or added.
    pub alerts: Vec<Alert>,
    /// Ids of alerts forgotten.
    pub alerts_deleted: Vec<String>,
    /// Groups changed or added.
    pub groups: Vec<Group>,
    /// Keys of groups removed.
    pub groups_deleted: Vec<String>,
    /// Silences changed or added.
    pub silences: Vec<Silence>,
    /// Notifications added to the outbox, or whose retry state changed after a failure.
    pub outbox: Vec<Notification>,
    /// Ids of notifications that left the outbox (delivered or given up).
    pub outbox_deleted: Vec<String>,
    /// New audit entries.
    pub audit: Vec<AuditEntry>,
    /// Signed-link nonces used, with their expiry (unix ms): a link works once.
    pub nonces: Vec<(String, i64)>,
    /// New delivery attempts for the history.
    pub deliveries: Vec<Delivery>,
    /// Schedules changed or added.
    pub schedules: Vec<Schedule>,
    /// Names of schedules deleted.
    pub schedules_deleted: Vec<String>,
    /// The sequence number to continue from after a restart.
    pub next_seq: u64,
}

impl Changes {
    /// Nothing to persist.
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

/// Persisted state to resume from (and, in a cluster, what a correlator's snapshot of its
/// replicated state carries).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Snapshot {
    /// On-call schedules.
    pub schedules: Vec<Schedule>,
    /// Alerts, resolved ones included until they are forgotten.
    pub alerts: Vec<Alert>,
    /// Notification groups.
    pub groups: Vec<Group>,
    /// Silences, expired ones included.
    pub silences: Vec<Silence>,
    /// Notifications not yet delivered.
    pub outbox: Vec<Notification>,
    /// Used signed-link nonces and their expiry (unix ms).
    pub nonces: Vec<(String, i64)>,
    /// The sequence number to continue from.
    pub next_seq: u64,
}

/// Outcome of a human action, so a second identical action can say it changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionOutcome {
    /// Whether the action changed anything (a second acknowledgement does not).
    pub changed: bool,
    /// The alert's state after the action.
    pub state: AlertState,
    /// What happened, in words for the person who acted.
    pub message: String,
}

/// Why a human action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// No alert has that id (it may have been forgotten after resolving).
    #[error("no alert with id {0:?}")]
    UnknownAlert(String),
    /// No silence has that id.
    #[error("no silence with id {0:?}")]
    UnknownSilence(String),
    /// No schedule has that name.
    #[error("no schedule named {0:?}")]
    UnknownSchedule(String),
    /// The request itself is wrong; the message says how.
    #[error("{0}")]
    Invalid(String),
}

/// The alerting state machine: alerts, groups, silences, the outbox and schedules, driven
/// by the caller's clock (every call takes `now_ms`), with every change collected for the
/// caller to persist ([`Alerting::take_changes`]) before it acts on it.
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

impl Alerting {
    /// A state machine for `cfg`, or the first configuration error (naming the key).
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

    /// The configuration it runs with.
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

    /// Every notification group.
    pub fn groups(&self) -> Vec<Group> {
        self.groups.values().cloned().collect()
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

#[cfg(test)]
mod tests;
