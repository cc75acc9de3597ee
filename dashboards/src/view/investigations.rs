//! The ranked candidates of an investigation, as `GET /api/v1/investigations/{id}` answers
//! them (the root cause crate's `Candidate` and `Evidence`, serialized as they are, with the
//! template, samples and query the collector fills in).

use serde::Deserialize;

/// What kind of behaviour moved; snake case on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EvidenceKind {
    /// A warning/error log pattern that is new or grew.
    LogPattern,
    /// A routine line stopped while the service kept working.
    LogPatternStopped,
    /// An operation's own time grew.
    SelfTime,
    /// More of an operation's requests failed.
    ErrorRatio,
    /// A service that served requests in the baseline served none.
    RequestsStopped,
    /// A resource metric moved.
    Metric,
}

impl EvidenceKind {
    /// The badge's words (also the row's `data-kind`, which the UI tests select by).
    pub(crate) fn label(self) -> &'static str {
        match self {
            EvidenceKind::LogPattern => "log pattern",
            EvidenceKind::LogPatternStopped => "line stopped",
            EvidenceKind::SelfTime => "own time",
            EvidenceKind::ErrorRatio => "failures",
            EvidenceKind::RequestsStopped => "requests stopped",
            EvidenceKind::Metric => "metric",
        }
    }

    /// Span evidence, whose samples are trace ids (linked) rather than log lines.
    pub(crate) fn samples_are_traces(self) -> bool {
        matches!(self, EvidenceKind::SelfTime | EvidenceKind::ErrorRatio)
    }
}

/// One piece of evidence: what moved and how surprising that is.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Evidence {
    /// What kind of behaviour moved.
    pub(crate) kind: EvidenceKind,
    /// Robust σ of the change.
    pub(crate) strength: f64,
    /// Never seen in the baseline; the producer tolerates its absence, so do we.
    #[serde(default)]
    pub(crate) new: bool,
    /// One sentence a person can check.
    pub(crate) sentence: String,
    /// The log pattern's template; left out when not filled in.
    #[serde(default)]
    pub(crate) template: Option<String>,
    /// Sample lines or exemplar trace ids; left out when empty.
    #[serde(default)]
    pub(crate) samples: Vec<String>,
    /// The API query behind it; left out when not filled in.
    #[serde(default)]
    pub(crate) query: Option<String>,
}

/// A ranked service of an investigation.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Candidate {
    /// The service.
    pub(crate) service: String,
    /// 0..1, comparable within one investigation.
    pub(crate) score: f64,
    /// The facts behind the rank.
    pub(crate) reasons: Vec<String>,
    /// Strongest first.
    pub(crate) evidence: Vec<Evidence>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_candidate_reads_as_the_api_writes_it() {
        let c: Candidate = serde_json::from_value(serde_json::json!({
            "service": "db", "score": 0.9, "reasons": ["slowest"],
            "evidence": [
                {"kind": "self_time", "service": "db", "signal": "SELECT", "operation": "SELECT",
                 "before": 0.01, "after": 0.5, "unit": "s", "strength": 12.0, "new": false,
                 "sentence": "SELECT took longer", "samples": ["abcdef0123456789"],
                 "query": "/api/v1/traces?x"},
                {"kind": "log_pattern_stopped", "service": "db", "signal": "pattern 3", "pattern_id": 3,
                 "before": 1.0, "after": 0.0, "unit": "/min", "strength": 4.0, "sentence": "stopped"}
            ]
        }))
        .expect("candidate");
        assert!(c.evidence[0].kind.samples_are_traces());
        assert_eq!(c.evidence[1].kind.label(), "line stopped");
        assert!(c.evidence[1].samples.is_empty() && c.evidence[1].template.is_none());
    }
}
