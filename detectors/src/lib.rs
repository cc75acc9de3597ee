//! # vigil-detectors
//!
//! Vigil's detection engine as a pure library: signals in, findings out, no I/O, driven
//! by the data's own timestamps so a replayed dataset gives the same answers as live
//! traffic.
//!
//! - [`PatternMiner`]: online log template mining (Drain family) with snapshot/restore.
//! - [`SeriesDetector`]: the per-series online detector, one [`PointScore`] per point
//!   with the [`Signal`] behind it.
//! - [`Engine`]: logs, spans and metric points in (event time), [`Anomaly`] out;
//!   pattern rates, error-log rates, trace RED, peer-group outliers, new patterns, human
//!   feedback ([`Verdict`]), and a state that survives restarts ([`EngineState`]).

#![warn(missing_docs)]

mod anomaly;
mod engine;
mod patterns;
mod timeseries;

pub use anomaly::{
    Anomaly, DetectorKind, EVIDENCE_BEFORE, EVIDENCE_DURING, EvidencePoint, Severity, SignalRef, format_time,
    format_value,
};
pub use engine::{
    Engine, EngineConfig, EngineState, EngineStateRef, EngineStats, LaneProgress, MetricPoint, STATE_VERSION,
    SignalFeedback, Verdict, VersionMismatch,
};
pub use patterns::{Assignment, MinerConfig, MinerSnapshot, Pattern, PatternMiner, WILDCARD, is_variable};
pub use timeseries::{PointScore, Rejected, SeriesConfig, SeriesDetector, Signal};
