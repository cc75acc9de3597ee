//! The ingest side: a batch's parts, one per partition, published to the stream; the client
//! is acknowledged when the stream has acknowledged every part.

use std::sync::Arc;

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::config::ClusterConfig;
use crate::telemetry::Metrics;
use crate::wal::{Signal, WalBatch};

/// Publishes sanitized batches to the stream.
pub(crate) struct StreamPublisher {
    js: jetstream::Context,
    config: ClusterConfig,
    /// The servers' largest message; a bigger part is refused with a clear error rather than
    /// failing inside the client.
    max_payload: usize,
    metrics: Arc<Metrics>,
}

/// Why a batch is not in the stream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    #[error(
        "a part of this batch is {size} bytes, more than the NATS servers' max_payload ({max}); send smaller batches or raise max_payload"
    )]
    TooLarge { size: usize, max: usize },
    #[error("the stream did not take the batch: {0}")]
    Unavailable(String),
}

impl StreamPublisher {
    /// `max_batch_bytes` is the largest decoded request ingest admits
    /// (`otlp.max_decompressed_bytes`): the servers' `max_payload` below it is worth a warning.
    pub(crate) fn new(
        client: &async_nats::Client,
        js: jetstream::Context,
        config: &crate::config::Config,
        metrics: Arc<Metrics>,
    ) -> StreamPublisher {
        let max_batch_bytes = config.otlp.max_decompressed_bytes;
        let config = config.cluster.clone();
        let max_payload = client.server_info().max_payload;
        if max_payload < max_batch_bytes {
            tracing::warn!(
                max_payload,
                max_decompressed_bytes = max_batch_bytes,
                "the NATS servers' max_payload is below otlp.max_decompressed_bytes: a batch of one service larger than max_payload is refused with 413"
            );
        }
        StreamPublisher {
            js,
            config,
            max_payload,
            metrics,
        }
    }

    pub(crate) fn partitions(&self) -> u32 {
        self.config.partitions
    }

    /// Publishes every part (`(partition, encoded OTLP request)`) and waits for the stream's
    /// acknowledgements. Each message carries an id derived from the client's batch id (or
    /// from its content when there is none), so a retry of the same request, through this or
    /// any other ingest node, is stored once: the stream drops ids it has seen within its
    /// duplicate window, and a worker drops ids its local log already holds.
    pub(crate) async fn publish(
        &self,
        signal: Signal,
        batch_id: Option<&str>,
        parts: Vec<(u32, Vec<u8>)>,
    ) -> Result<(), PublishError> {
        let mut acks = Vec::with_capacity(parts.len());
        for (partition, otlp) in parts {
            let id = message_id(signal, batch_id, partition, &otlp);
            let payload = WalBatch {
                signal,
                batch_id: Some(id.clone()),
                otlp: Bytes::from(otlp),
            }
            .encode();
            if self.max_payload > 0 && payload.len() > self.max_payload {
                return Err(PublishError::TooLarge {
                    size: payload.len(),
                    max: self.max_payload,
                });
            }
            let message = PublishMessage::build().payload(payload).message_id(&id);
            let ack = self
                .js
                .send_publish(super::subject(&self.config, partition), message)
                .await
                .map_err(|e| PublishError::Unavailable(e.to_string()))?;
            acks.push(ack);
        }
        for ack in acks {
            let ack = ack.await.map_err(|e| match e.kind() {
                PublishErrorKind::TimedOut => {
                    PublishError::Unavailable("no acknowledgement from the stream in time".into())
                }
                _ => PublishError::Unavailable(e.to_string()),
            })?;
            self.metrics.stream_published.inc();
            if ack.duplicate {
                self.metrics.stream_duplicates.inc();
            }
        }
        Ok(())
    }
}

/// A message's id: the client's batch id, or a digest of the content, and the partition
/// (a worker forgets a partition's ids by that suffix when it gives the partition up).
fn message_id(signal: Signal, batch_id: Option<&str>, partition: u32, otlp: &[u8]) -> String {
    match batch_id {
        Some(id) => format!("{id}/p{partition}"),
        None => {
            let mut h = Sha256::new();
            h.update(signal.as_str().as_bytes());
            h.update(otlp);
            format!("sha256:{}/p{partition}", hex::encode(&h.finalize()[..16]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_same_for_a_retry_and_differ_between_parts() {
        assert_eq!(message_id(Signal::Logs, Some("b-1"), 3, b"x"), "b-1/p3");
        assert_ne!(
            message_id(Signal::Logs, Some("b-1"), 3, b"x"),
            message_id(Signal::Logs, Some("b-1"), 4, b"x")
        );
        let a = message_id(Signal::Logs, None, 3, b"payload");
        assert_eq!(a, message_id(Signal::Logs, None, 3, b"payload"));
        assert_ne!(a, message_id(Signal::Traces, None, 3, b"payload"));
        assert_ne!(a, message_id(Signal::Logs, None, 3, b"payload2"));
        assert!(a.ends_with("/p3"), "{a}");
    }
}
