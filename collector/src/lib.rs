//! # vigil-collector
//!
//! The collector receives OpenTelemetry logs, traces and metrics (OTLP over gRPC and
//! HTTP), makes every accepted batch durable in a write-ahead log before
//! acknowledging it, indexes it into day-partitioned tantivy indexes, and serves a
//! JSON query API.
//!
//! Data path: [`ingest`] (decode, authenticate, sanitize, deduplicate) → [`wal`]
//! (group-committed, fsynced) → [`storage`] indexer thread (commit every interval,
//! checkpoint LSN in each commit) → [`api`] queries.

pub mod alerts;
pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod demo;
pub mod email;
pub mod ingest;
pub mod investigations;
pub mod pipeline;
pub mod process;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod timeutil;
pub mod wal;

pub use app::{BoundAddrs, run};
pub use config::Config;
