//! A worker's side of the findings stream: its detection thread's findings published in
//! order, cut to fit the servers' `max_payload`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use vigil_detectors::Anomaly;

use crate::pipeline::{Findings, SpanFact};

/// A worker's findings publisher: sends what its detection thread hands it to the findings
/// stream, in order, retrying while the stream cannot take it (the detection thread waits
/// meanwhile: its queue to here is bounded).
pub(crate) async fn publish_findings(
    js: jetstream::Context,
    subject: String,
    max_payload: usize,
    mut rx: tokio::sync::mpsc::Receiver<Findings>,
    metrics: Arc<crate::telemetry::Metrics>,
    stop: CancellationToken,
) {
    // Each message carries an id, the same on every retry: one whose acknowledgement was
    // lost but which landed is stored once (the stream's duplicate window), so the
    // correlator does not count its spans twice.
    let run = crate::timeutil::now_ns();
    let mut sent_parts: u64 = 0;
    while let Some(findings) = rx.recv().await {
        for part in split(findings, max_payload) {
            let payload = Bytes::from(serde_json::to_vec(&part).unwrap_or_default());
            sent_parts += 1;
            let id = format!("{subject}/{run}/{sent_parts}");
            let mut backoff = Duration::from_millis(100);
            loop {
                let message = PublishMessage::build().payload(payload.clone()).message_id(&id);
                let sent = match js.send_publish(subject.clone(), message).await {
                    Ok(ack) => tokio::time::timeout(Duration::from_secs(10), ack)
                        .await
                        .map_err(|_| "no acknowledgement in time".to_string())
                        .and_then(|r| r.map_err(|e| e.to_string())),
                    Err(e) if e.kind() == async_nats::jetstream::context::PublishErrorKind::MaxPayloadExceeded => {
                        // One finding alone larger than the servers take: retrying cannot
                        // help, and holding on would stop this worker's detection.
                        tracing::error!(error = %e, bytes = payload.len(), "findings too large for the NATS servers' max_payload; dropped");
                        break;
                    }
                    Err(e) => Err(e.to_string()),
                };
                match sent {
                    Ok(_) => {
                        metrics.findings_published.inc();
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not publish findings; retrying");
                        tokio::select! {
                            () = stop.cancelled() => {
                                // Shutting down with the stream out of reach: what is left
                                // is given up rather than holding the shutdown.
                                tracing::warn!("findings not published at shutdown");
                                return;
                            }
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }
    }
}

/// `batches` with every batch whose encoding (with room for the message's other fields)
/// exceeds `max_payload` cut in halves until it fits or holds one item, order kept.
fn halves<T: Serialize>(batches: Vec<Vec<T>>, max_payload: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut pending: Vec<Vec<T>> = batches.into_iter().rev().collect();
    while let Some(batch) = pending.pop() {
        let size = serde_json::to_vec(&batch).map_or(0, |v| v.len());
        if size + 256 > max_payload && batch.len() > 1 {
            let mut first = batch;
            let second = first.split_off(first.len() / 2);
            pending.push(second);
            pending.push(first);
            continue;
        }
        out.push(batch);
    }
    out
}

/// Spans per findings message at most (about 60 bytes each on the wire).
const SPANS_PER_MESSAGE: usize = 4_000;

/// Cuts findings into messages that fit the servers' `max_payload`: spans in slices, then
/// anomalies in halves until they fit. The event time goes with the last part.
fn split(findings: Findings, max_payload: usize) -> Vec<Findings> {
    let Findings {
        node,
        event_ms,
        anomalies,
        spans,
        ..
    } = findings;
    let part = |anomalies: Vec<Anomaly>, spans: Vec<SpanFact>| Findings {
        node: node.clone(),
        event_ms: i64::MIN,
        anomalies,
        spans,
        settled_ms: i64::MIN,
    };
    let mut parts: Vec<Findings> = halves(
        spans.chunks(SPANS_PER_MESSAGE).map(<[_]>::to_vec).collect(),
        max_payload,
    )
    .into_iter()
    .map(|chunk| part(Vec::new(), chunk))
    .collect();
    parts.extend(
        halves(vec![anomalies], max_payload)
            .into_iter()
            .map(|batch| part(batch, Vec::new())),
    );
    parts.retain(|p| !p.is_empty());
    match parts.last_mut() {
        Some(last) => last.event_ms = event_ms,
        None => parts.push(Findings {
            node,
            event_ms,
            ..Findings::default()
        }),
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(i: u64) -> SpanFact {
        SpanFact {
            service: "cart".into(),
            span_id: i,
            parent_span_id: Some(i + 1),
            end_ms: 1_000,
            duration_s: 0.1,
            error: false,
            peer: None,
        }
    }

    #[test]
    fn findings_split_to_fit_and_the_event_time_rides_the_last_part() {
        let findings = Findings {
            node: "w1".into(),
            event_ms: 42,
            anomalies: Vec::new(),
            spans: (0..10_000).map(span).collect(),
            ..Findings::default()
        };
        let parts = split(findings, 1 << 20);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.iter().map(|p| p.spans.len()).sum::<usize>(), 10_000);
        assert!(
            parts
                .iter()
                .all(|p| serde_json::to_vec(p).expect("encode").len() <= 1 << 20)
        );
        assert_eq!(
            parts.iter().map(|p| p.event_ms).collect::<Vec<_>>(),
            vec![i64::MIN, i64::MIN, 42]
        );
        // Spans keep their order across parts.
        let ids: Vec<u64> = parts.iter().flat_map(|p| p.spans.iter().map(|s| s.span_id)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        // Nothing to say still says the time.
        let empty = split(
            Findings {
                node: "w1".into(),
                event_ms: 7,
                ..Findings::default()
            },
            1 << 20,
        );
        assert_eq!(empty.len(), 1);
        assert_eq!((empty[0].event_ms, empty[0].is_empty()), (7, true));
    }
}
