//! # vigil-detectors
//!
//! Vigil's detection engine as a pure library: signals in, findings out, no I/O, driven
//! by the data's own timestamps so a replayed dataset gives the same answers as live
//! traffic.
//!
//! Built so far: [`patterns`], online log template mining. Time-series, trace RED and
//! feedback are planned (see ARCHITECTURE.md).

pub mod patterns;
pub mod timeseries;
