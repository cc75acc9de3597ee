//! # vigil-rca
//!
//! Root-cause ranking, as a pure library driven by the data's own timestamps.
//!
//! - [`baro`]: onset detection plus BARO-style robust ranking of services over aligned
//!   metric signals (what `vigil-eval rca` runs on the Sock Shop benchmark).
//! - [`topology`]: the service dependency graph from spans.
//! - [`incident`]: anomalies correlated into incidents by time and topology, with ranked
//!   root-cause candidates and a summary.

pub mod baro;
pub mod incident;
pub mod investigate;
pub mod topology;
