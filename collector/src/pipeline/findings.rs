//! What a cluster's workers tell its correlator (`--role rca`): their detectors' findings,
//! the service links of their spans, and how far their event time has got. In one process
//! these never leave the detection thread; in a cluster the correlator needs them from
//! every worker, because a trace's spans — and so the edges of the service graph — are
//! spread over the workers that own its services.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vigil_detectors::Anomaly;
use vigil_rca::{Incident, SpanRef};

/// One worker's message to the correlator: what its detection thread produced since the
/// last one. Sent at least once a second, so an empty one still carries the event time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Findings {
    /// The worker's node id.
    pub node: String,
    /// Event time up to which the worker's detection has got (unix ms).
    pub event_ms: i64,
    /// Anomaly updates (new or changed), as the worker's detectors produced them.
    #[serde(default)]
    pub anomalies: Vec<Anomaly>,
    /// Spans as the service graph needs them.
    #[serde(default)]
    pub spans: Vec<SpanFact>,
    /// Set by the correlator reading the message (never sent): the slowest live worker's
    /// event time, up to which the whole cluster has got.
    #[serde(skip)]
    pub settled_ms: i64,
}

impl Findings {
    pub(crate) fn is_empty(&self) -> bool {
        self.anomalies.is_empty() && self.spans.is_empty()
    }
}

/// The part of a span the service graph reads ([`SpanRef`]), owned; short field names
/// because every span of the cluster crosses the wire this way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SpanFact {
    #[serde(rename = "s")]
    pub service: String,
    #[serde(rename = "i")]
    pub span_id: u64,
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<u64>,
    #[serde(rename = "t")]
    pub end_ms: i64,
    #[serde(rename = "d")]
    pub duration_s: f64,
    #[serde(rename = "e", default, skip_serializing_if = "std::ops::Not::not")]
    pub error: bool,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

impl SpanFact {
    pub(crate) fn as_ref(&self) -> SpanRef<'_> {
        SpanRef {
            service: &self.service,
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
            end_ms: self.end_ms,
            duration_s: self.duration_s,
            error: self.error,
            peer: self.peer.as_deref(),
        }
    }
}

/// Where a worker's detection thread sends its [`Findings`] (a bounded queue to the task
/// that publishes them: a full queue holds detection back, as a full WAL queue holds ingest).
pub(crate) type FindingsSink = tokio::sync::mpsc::Sender<Findings>;

/// The replicated log a cluster's correlator writes incident changes to before it keeps
/// them, so its standby can take over with the same incidents.
pub(crate) trait IncidentReplica: Send + Sync {
    /// Writes the incidents to the replicated log; an error means this process is no longer
    /// the leader (or cannot prove it is) and must stop correlating. It says how many of the
    /// incidents (a prefix) did reach the log before it stopped.
    fn append_incidents(&self, incidents: &[Incident]) -> Result<(), (usize, String)>;
    /// Whether the log has grown enough since the last snapshot to take another.
    fn snapshot_due(&self) -> bool;
    /// Writes a snapshot of the replicated state (these incidents, and the alerting state)
    /// and drops the log before it. Called where no incident change can interleave.
    fn snapshot(&self, incidents: Vec<Incident>);
}

/// What the detection thread does with what it finds, by the process's role.
pub(crate) enum Mode {
    /// One process: the detectors' findings go to the correlator here.
    Single,
    /// A cluster worker: the detectors run here; their findings, the spans' service links
    /// and the event time go to the cluster's correlator, as `node`.
    Publish {
        sink: FindingsSink,
        node: String,
        rebuilding: Arc<crate::cluster::Rebuilding>,
    },
    /// A cluster correlator: no data of its own; the workers' [`Findings`] build the service
    /// graph and, while this process leads, open and update incidents, each change written
    /// to `replica` before it is kept.
    Correlate(Arc<dyn IncidentReplica>),
}

/// How often a worker sends its findings at the least (an empty message carries its event
/// time: the correlator's clock is the furthest worker's).
const FINDINGS_EVERY: Duration = Duration::from_secs(1);

/// A cluster worker's findings on their way out.
pub(super) struct Outbox {
    pub(super) sink: FindingsSink,
    pub(super) pending: Findings,
    pub(super) sent: std::time::Instant,
    pub(super) rebuilding: Arc<crate::cluster::Rebuilding>,
}

impl Outbox {
    /// Keeps back the spans from `from` on (those of local log entry `entry`) that belong to
    /// a partition's rebuilt history: its last owner sent them. Says how many.
    pub(super) fn hold_history(&mut self, from: usize, entry: u64) -> u64 {
        self.rebuilding
            .drop_history(entry, &mut self.pending.spans, from, |s| (s.service.as_str(), s.end_ms))
    }

    /// Sends what is pending when there is something, or when the correlator has not heard
    /// from this worker for a while. Blocks while the publisher is behind.
    pub(super) fn flush(&mut self, event_ms: i64) {
        if self.pending.is_empty() && self.sent.elapsed() < FINDINGS_EVERY {
            return;
        }
        let next = Findings {
            node: self.pending.node.clone(),
            ..Findings::default()
        };
        let mut out = std::mem::replace(&mut self.pending, next);
        out.event_ms = event_ms;
        // Fails only when the publisher has stopped (shutdown).
        let _ = self.sink.blocking_send(out);
        self.sent = std::time::Instant::now();
    }
}

/// The correlator of a cluster's correlator process: present only while it leads.
pub(super) struct Lead {
    pub(super) replica: Arc<dyn IncidentReplica>,
    pub(super) leading: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_fact_survives_the_wire_and_reads_as_the_span() {
        let fact = SpanFact {
            service: "cart".into(),
            span_id: 7,
            parent_span_id: Some(3),
            end_ms: 1_700_000_000_000,
            duration_s: 0.25,
            error: true,
            peer: Some("db".into()),
        };
        let wire = serde_json::to_string(&fact).expect("round trip");
        let back: SpanFact = serde_json::from_str(&wire).expect("round trip");
        assert_eq!(back, fact);
        let r = back.as_ref();
        assert_eq!(
            (r.service, r.span_id, r.parent_span_id, r.peer),
            ("cart", 7, Some(3), Some("db"))
        );
        // A root span without error or peer leaves those fields out.
        let root = SpanFact {
            parent_span_id: None,
            error: false,
            peer: None,
            ..fact
        };
        let wire = serde_json::to_string(&root).expect("round trip");
        assert!(
            !wire.contains("\"p\"") && !wire.contains("\"e\"") && !wire.contains("\"c\""),
            "{wire}"
        );
        assert_eq!(serde_json::from_str::<SpanFact>(&wire).expect("round trip"), root);
    }
}
