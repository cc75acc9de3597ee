//! The dashboards' own copies of what the collector's JSON API answers: only the fields the
//! pages render, under the names and enum spellings the API writes.
//!
//! The UI reads the API as any client would, so it owns its view of the answers instead of
//! linking the crates that produce them: the alerting engine, the detectors and the root
//! cause analysis can change their internals (and their Rust API) without the UI following,
//! and the UI builds without them. The contract is the JSON, not the Rust types. Fields the
//! API may leave out (`skip_serializing_if` on the producing side) carry `#[serde(default)]`
//! here; unknown fields are ignored, so the API can add to an answer without breaking a page.

mod alerts;
mod findings;
mod investigations;
mod oncall;

pub(crate) use alerts::{Alert, AlertState, AuditEntry, Delivery, Silence};
pub(crate) use findings::{Anomaly, Incident, IncidentStatus, Member, Severity};
pub(crate) use investigations::{Candidate, Evidence};
pub(crate) use oncall::{Layer, Override, Shift};
