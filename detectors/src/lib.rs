//! # vigil-detectors
//!
//! Vigil's detection engine as a pure library: signals in, findings out, no I/O, driven
//! by the data's own timestamps so a replayed dataset gives the same answers as live
//! traffic.
//!
//! - [`patterns`]: online log template mining (Drain family) with snapshot/restore.
//! - [`timeseries`]: the per-series online detector, and peer-group outliers.
//! - [`engine`]: logs, spans and metric points in (event time), [`anomaly::Anomaly`] out;
//!   pattern rates, error-log rates, trace RED, new patterns, human feedback.

pub mod anomaly;
pub mod engine;
pub mod patterns;
pub mod timeseries;
