//! What the detectors and the correlator found, as `/api/v1/anomalies` and
//! `/api/v1/incidents[/{id}]` answer it (the detectors' `Anomaly`, the root cause crate's
//! `Incident`, serialized as they are; an incident's `candidates` may instead be its
//! investigation's ranking, written by the collector in the same shape).

use std::collections::BTreeMap;

use serde::Deserialize;

/// Which detector found it; snake case on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DetectorKind {
    /// A metric series left its expected band.
    Metric,
    /// One member of a metric's peer group behaves unlike the others.
    MetricPeer,
    /// A log pattern never seen before.
    LogNewPattern,
    /// A log pattern's rate moved against its own baseline.
    LogPatternRate,
    /// A service's error-log rate spiked.
    LogErrorRate,
    /// Rate, errors or latency of a service operation, from spans.
    TraceRed,
}

impl DetectorKind {
    /// The signal family (the correlator's own grouping): colours the timeline and picks
    /// where "explore" leads.
    pub(crate) fn family(self) -> &'static str {
        match self {
            DetectorKind::Metric | DetectorKind::MetricPeer => "metrics",
            DetectorKind::LogNewPattern | DetectorKind::LogPatternRate | DetectorKind::LogErrorRate => "logs",
            DetectorKind::TraceRed => "traces",
        }
    }

    /// Findings on a metric series, which the metrics page overlays on its chart.
    pub(crate) fn is_metric(self) -> bool {
        matches!(self, DetectorKind::Metric | DetectorKind::MetricPeer)
    }
}

/// How bad a finding is; snake case on the wire, ordered from mild to bad as the detectors
/// order it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Severity {
    /// Worth a look.
    Info,
    /// A clear finding.
    Warning,
    /// Corroborated trouble.
    Critical,
}

impl Severity {
    /// The badge's word, as the API spells it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    /// The badge's style class.
    pub(crate) fn class(self) -> &'static str {
        match self {
            Severity::Critical => "badge crit",
            Severity::Warning => "badge warn",
            Severity::Info => "badge info",
        }
    }
}

/// The observed signal's identity.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SignalRef {
    /// Null when the signal belongs to no known service.
    #[serde(default)]
    pub(crate) service: Option<String>,
    /// Metric name, "POST /pay p99 latency", "pattern 42".
    pub(crate) name: String,
    /// Series labels, `pattern`, … — what the links to other pages are built from.
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, String>,
}

/// One point of a finding's series, for its chart.
#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct EvidencePoint {
    /// Unix milliseconds.
    pub(crate) t_ms: i64,
    /// The observed value.
    pub(crate) value: f64,
    /// The expected band's bottom; left out for context points before the onset.
    #[serde(default)]
    pub(crate) lower: Option<f64>,
    /// The expected band's top; left out like `lower`.
    #[serde(default)]
    pub(crate) upper: Option<f64>,
    /// Scored at or above the threshold: drawn as a mark.
    #[serde(default)]
    pub(crate) anomalous: bool,
}

/// One finding (`GET /api/v1/anomalies`, and each `evidence[].anomaly` of an incident).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Anomaly {
    /// What the feedback form and the anchors of the timeline name.
    pub(crate) id: String,
    /// Which detector found it.
    pub(crate) detector: DetectorKind,
    /// What was observed.
    pub(crate) signal: SignalRef,
    /// Unix milliseconds.
    pub(crate) start_ms: i64,
    /// Unix milliseconds; moves while the finding lasts.
    pub(crate) end_ms: i64,
    /// Peak score in [0, 1]: orders the evidence of an incident.
    pub(crate) score: f64,
    /// The badge.
    pub(crate) severity: Severity,
    /// Unit of the values, for the chart's axis.
    pub(crate) unit: String,
    /// One sentence a human can check.
    pub(crate) explanation: String,
    /// Trace ids behind a trace finding.
    #[serde(default)]
    pub(crate) exemplars: Vec<String>,
    /// The series around the finding; the API leaves it out when empty.
    #[serde(default)]
    pub(crate) evidence: Vec<EvidencePoint>,
}

/// Whether an incident is still going on; snake case on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum IncidentStatus {
    /// Going on: its duration runs to now.
    Open,
    /// Over.
    Resolved,
}

impl IncidentStatus {
    /// The badge's word, as the API spells it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            IncidentStatus::Open => "open",
            IncidentStatus::Resolved => "resolved",
        }
    }
}

/// A finding as the incident keeps it: one bar of the timeline.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Member {
    /// Links the bar to the finding's evidence card.
    pub(crate) anomaly_id: String,
    /// The timeline's row.
    pub(crate) service: String,
    /// Colours the bar.
    pub(crate) detector: DetectorKind,
    /// Unix milliseconds.
    pub(crate) start_ms: i64,
    /// Unix milliseconds.
    pub(crate) end_ms: i64,
    /// The bar's tooltip.
    pub(crate) explanation: String,
}

/// A ranked root-cause candidate of an incident.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RankedService {
    /// The service.
    pub(crate) service: String,
    /// Comparable within one incident.
    pub(crate) score: f64,
    /// Which signal to look at first; may be absent or empty.
    #[serde(default)]
    pub(crate) signal: String,
    /// The facts behind the rank.
    pub(crate) reasons: Vec<String>,
}

/// An incident (`GET /api/v1/incidents`; flattened into `GET /api/v1/incidents/{id}`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Incident {
    /// What its URLs name.
    pub(crate) id: String,
    /// Open or resolved.
    pub(crate) status: IncidentStatus,
    /// Unix milliseconds.
    pub(crate) start_ms: i64,
    /// Latest activity so far, unix milliseconds.
    pub(crate) end_ms: i64,
    /// Every service with a finding in it.
    pub(crate) services: Vec<String>,
    /// Most likely first.
    pub(crate) candidates: Vec<RankedService>,
    /// The findings in order of onset.
    pub(crate) timeline: Vec<Member>,
    /// Plain words.
    pub(crate) summary: String,
    /// As the correlator graded it: critical only when a strong finding is corroborated.
    pub(crate) severity: Severity,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_incident_reads_with_the_severity_the_correlator_gave_it() {
        let inc: Incident = serde_json::from_value(json!({
            "id": "inc-1", "status": "open", "start_ms": 0, "end_ms": 1, "services": ["a"],
            "candidates": [{"service": "a", "score": 0.8, "signal": "", "reasons": ["first"]}],
            "timeline": [], "summary": "a broke", "severity": "critical"
        }))
        .expect("incident");
        assert_eq!(inc.severity, Severity::Critical);
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Critical);
    }

    #[test]
    fn an_anomaly_without_evidence_reads() {
        let a: Anomaly = serde_json::from_value(json!({
            "id": "an-1", "detector": "log_pattern_rate",
            "signal": {"key": "k", "service": null, "name": "pattern 4", "labels": {"pattern": "4"}},
            "start_ms": 1, "end_ms": 2, "score": 0.8, "severity": "warning",
            "observed": 1.0, "expected": 0.0, "lower": 0.0, "upper": 0.5, "unit": "/min",
            "open": true, "explanation": "more lines", "exemplars": []
        }))
        .expect("anomaly");
        assert_eq!(a.detector.family(), "logs");
        assert!(a.evidence.is_empty() && a.signal.service.is_none());
        assert_eq!(a.severity.label(), "warning");
    }

    #[test]
    fn evidence_points_without_a_band_read() {
        let p: EvidencePoint = serde_json::from_value(json!({"t_ms": 5, "value": 1.5})).expect("point");
        assert!(p.lower.is_none() && p.upper.is_none() && !p.anomalous);
    }
}
