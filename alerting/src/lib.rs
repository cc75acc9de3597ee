//! # vigil-alerting
//!
//! Where Vigil meets the people on call: alert lifecycle (firing → acknowledged → resolved,
//! silenced, inhibited), dedup by label fingerprint, Alertmanager-style grouping and routing,
//! silences, inhibition, escalation policies, signed one-click links, receiver payloads, and
//! the durable state in redb.

pub mod alert;
pub mod alertmanager;
pub mod config;
pub mod engine;
pub mod history;
pub mod labels;
pub mod matcher;
pub mod oncall;
pub mod payload;
pub mod route;
pub mod sign;
pub mod store;
