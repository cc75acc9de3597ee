//! `vigil-agent`: the node daemon. It tails log files, samples host metrics and
//! receives OTLP from local applications, writes everything into a crash-safe disk
//! buffer, and ships the buffer to the collector over OTLP, each batch exactly once.

pub mod app;
pub mod buffer;
pub mod cli;
pub mod config;
pub mod hostmetrics;
pub mod install;
pub mod otlp;
pub mod receiver;
pub mod ship;
pub mod tail;
pub mod telemetry;
