//! OTLP ingest: decode, authenticate, sanitize, deduplicate, make durable, acknowledge.
//!
//! Both transports (gRPC in [`grpc`], HTTP in [`http`]) end in [`Ingest::export`], so
//! limits, partial success, deduplication and durability behave the same on each.
//! Errors are mapped to HTTP status and gRPC code in one place ([`IngestError`]).

mod decode;
mod error;
pub(crate) mod grpc;
pub(crate) mod http;
mod remote_write;
mod sanitize;
mod service;
#[cfg(test)]
mod tests;

pub(crate) use error::IngestError;
pub(crate) use service::{Durability, Ingest};
