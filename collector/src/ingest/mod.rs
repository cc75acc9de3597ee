//! OTLP ingest: decode, authenticate, sanitize, deduplicate, make durable, acknowledge.
//!
//! Both transports (gRPC in [`grpc`], HTTP in [`http`]) end in [`Ingest::export`], so
//! limits, partial success, deduplication and durability behave the same on each.
//! Errors are mapped to HTTP status and gRPC code in one place ([`IngestError`]).

mod batch;
mod decode;
mod dedup;
mod error;
pub mod grpc;
pub mod http;
mod sanitize;
mod service;
#[cfg(test)]
mod tests;

pub use batch::{Signal, WalBatch};
pub use decode::{ContentKind, decode_body};
pub use dedup::BatchDedup;
pub use error::IngestError;
pub use sanitize::{Limits, Report};
pub use service::{ExportRequest, Ingest, Transport};
