//! # vigil-alerting
//!
//! Where Vigil meets the people on call: alert lifecycle (firing → acknowledged → resolved,
//! silenced, inhibited), dedup by label fingerprint, Alertmanager-style grouping and routing,
//! silences, inhibition, escalation policies, signed one-click links, receiver payloads, and
//! the durable state in redb.

#![warn(missing_docs)]

mod alert;
mod alertmanager;
mod config;
mod engine;
mod history;
mod labels;
mod matcher;
mod oncall;
mod payload;
mod route;
mod sign;
mod store;

pub use alert::{Alert, AlertInput, AlertState, AuditEntry, Comment, Silence};
pub use config::{
    AlertingConfig, ConfigError, EscalationPolicyConfig, EscalationStepConfig, InhibitRuleConfig, Password,
    PersonConfig, ReceiverConfig, ReceiverKind, RouteConfig,
};
pub use engine::{
    ActionError, ActionOutcome, Alerting, Changes, Escalation, Group, MAX_ATTEMPTS, MAX_BACKOFF_MS, Notification,
    NotifyReason, RESOLVED_RETENTION_MS, Snapshot,
};
pub use history::{Delivery, DeliveryOutcome};
pub use labels::{LabelSet, fingerprint, project};
pub use matcher::{MatchOp, Matcher, MatcherError, MatcherSpec, all_match, parse_matchers};
pub use oncall::{Compiled, Layer, Override, Rotation, Schedule, Shift};
pub use payload::{Context, body as notification_body, email as notification_email};
pub use route::{DEFAULT_GROUP_INTERVAL_MS, DEFAULT_GROUP_WAIT_MS, DEFAULT_REPEAT_INTERVAL_MS, Route};
pub use sign::{
    ActionLink, LinkAction, LinkError, SIGNATURE_HEADER, TIMESTAMP_HEADER, feed_token, nonce_for, sign_body, sign_link,
    verify_body, verify_feed_token, verify_link,
};
pub use store::{AlertStore, MAX_DELIVERIES, StoreError};
