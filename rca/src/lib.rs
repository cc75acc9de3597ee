//! # vigil-rca
//!
//! Root-cause ranking, as a pure library driven by the data's own timestamps.
//!
//! - [`baro`]: onset detection plus BARO-style robust ranking of services over aligned
//!   metric signals (what `vigil-eval rca` runs on the Sock Shop benchmark).
//! - [`topology`]: the service dependency graph from spans.
//! - [`incident`]: anomalies correlated into incidents by time and topology, with ranked
//!   root-cause candidates and a summary.

mod baro;
mod incident;
mod investigate;
mod topology;

pub use baro::{Candidate as BaroCandidate, Signal as BaroSignal, find_onset, rank as baro_rank};
pub use incident::{Correlator, Incident, IncidentConfig, IncidentStatus, Member, RankedService};
pub use investigate::{
    Candidate, Evidence, EvidenceKind, Input, LogCount, MetricSeries, SpanRow, TimeRange, WindowLogLine, gather,
    investigate, rank_candidates,
};
pub use topology::{Edge, Graph, SpanRef, Topology};
