//! # vigil-rca
//!
//! Root-cause ranking, as a pure library driven by the data's own timestamps.
//!
//! Built so far: [`baro`], onset detection plus BARO-style robust ranking of services over
//! aligned metric signals (what `vigil-eval rca` runs on the Sock Shop benchmark). Topology
//! from spans, incident grouping and reports are planned (see ARCHITECTURE.md).

pub mod baro;
