//! OTLP ingest: decode, authenticate, sanitize, deduplicate, make durable, acknowledge.
//!
//! Both transports (gRPC in [`grpc`], HTTP in [`http`]) end in [`Ingest::export`], so
//! limits, partial success, deduplication and durability behave the same on each.
//! Errors are mapped to HTTP status and gRPC code in one place ([`IngestError`]).

mod decode;
mod error;
pub mod grpc;
pub mod http;
mod sanitize;
mod service;
#[cfg(test)]
mod tests;

pub use decode::{ContentKind, decode_body};
pub use error::IngestError;
pub use sanitize::{Limits, Report};
pub use service::{ExportRequest, Ingest, Transport};
