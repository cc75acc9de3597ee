//! # vigil-rca
//!
//! Root-cause ranking, as a pure library driven by the data's own timestamps.
//!
//! - [`find_onset`] and [`baro_rank`]: onset detection plus BARO-style robust ranking of
//!   services over aligned metric signals (what `vigil-eval rca` runs on the Sock Shop
//!   benchmark).
//! - [`Topology`]: the service dependency graph from spans.
//! - [`Correlator`]: anomalies correlated into [`Incident`]s by time and topology, with
//!   ranked root-cause candidates and a summary.
//! - [`investigate`]: a window compared with a baseline over spans, log patterns and
//!   metrics, services ranked by what changed on them ([`Candidate`]s with [`Evidence`]).

#![warn(missing_docs)]

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
