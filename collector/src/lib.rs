//! # vigil-collector
//!
//! The collector receives OpenTelemetry logs, traces and metrics (OTLP over gRPC and
//! HTTP), makes every accepted batch durable in a write-ahead log before
//! acknowledging it, indexes it into day-partitioned tantivy indexes, and serves a
//! JSON query API.
//!
//! Data path: `ingest/` (decode, authenticate, sanitize, deduplicate) → `wal/`
//! (group-committed, fsynced) → `process/` (decode once, pattern ids once) → `storage/`
//! indexer (commit every interval, checkpoint LSN in each commit) and `pipeline/`
//! (detectors, incidents) → `api/` queries and the UI. The binary calls [`main`]; tests
//! and tools embed the collector through [`run`].

mod alerts;
mod api;
mod app;
mod auth;
mod cli;
mod cluster;
mod config;
mod demo;
mod files;
mod ingest;
mod investigations;
mod pipeline;
mod process;
mod server;
mod storage;
mod telemetry;
mod timeutil;
mod wal;

pub use app::{BoundAddrs, run};
pub use cli::main;
pub use config::Config;
/// The ingest benchmark's ceiling converts OTLP batches with the collector's own code.
pub use storage::{LogFields, log_docs};
