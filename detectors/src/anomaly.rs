//! The finding every detector produces, and how it reads to a human.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which detector found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// A metric series left its expected band.
    Metric,
    /// One member (host, pod, instance) of a metric's peer group behaves unlike the others.
    MetricPeer,
    /// A log pattern never seen before, weighted by severity.
    LogNewPattern,
    /// A log pattern's rate spiked or collapsed against its own baseline.
    LogPatternRate,
    /// A service's error-log rate spiked.
    LogErrorRate,
    /// Request rate, error ratio or latency of a service operation (from spans).
    TraceRed,
}

/// How loud a finding is; ordered, so the worst of several is their `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Score below 0.7: shown on the incident page, but an incident graded no higher
    /// raises no alert.
    Info,
    /// Score from 0.7 up to 0.9; the lowest grade that alerts.
    Warning,
    /// Score 0.9 or more. An incident is graded critical only when a second detector family
    /// or service corroborates; one signal alone, however strong, makes a warning.
    Critical,
}

impl Severity {
    /// The grade of a score in [0, 1]: critical from 0.9, warning from 0.7, else info.
    pub fn from_score(score: f64) -> Severity {
        if score >= 0.9 {
            Severity::Critical
        } else if score >= 0.7 {
            Severity::Warning
        } else {
            Severity::Info
        }
    }
}

/// What was observed: the signal's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalRef {
    /// Stable key of the signal; feedback is kept per key.
    pub key: String,
    /// Service the signal belongs to, when known.
    pub service: Option<String>,
    /// Human name: metric name, "POST /pay p99 latency", "pattern 42".
    pub name: String,
    /// Series labels, pattern id, operation — whatever identifies it further.
    pub labels: BTreeMap<String, String>,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Stable id: 16 hex digits hashed from the signal key and `start_ms`, so the same
    /// finding keeps its id while it is extended and a replay gives the same ids.
    pub id: String,
    /// Which detector found it (decides how the UI charts and groups it).
    pub detector: DetectorKind,
    /// The series or signal the finding is about: its key, service and labels.
    pub signal: SignalRef,
    /// Event time the finding began, unix milliseconds; fixed once opened (`end_ms` moves).
    /// Findings on log and span intervals carry the interval's start.
    pub start_ms: i64,
    /// Event time (unix ms) of the latest point that extended the finding; equal to
    /// `start_ms` until it is extended (a quiet spell is dated back to its first point, so
    /// it starts out longer).
    pub end_ms: i64,
    /// Peak score in [0, 1].
    pub score: f64,
    /// Always [`Severity::from_score`] of `score`; kept alongside it for readers of the JSON.
    pub severity: Severity,
    /// The value at the peak, in `unit`. For a new-pattern finding, how many new patterns it
    /// has gathered; for a peer outlier, the member's mean over the peer window.
    pub observed: f64,
    /// The value the detector expected at the peak; 0 for new-pattern findings, which have
    /// no band. Clamped at 0 for rates, ratios and latencies.
    pub expected: f64,
    /// Lower edge of the expected band at the peak (about 3 robust sigmas below `expected`;
    /// for a peer outlier, the peers' range). Clamped at 0 like `expected`.
    pub lower: f64,
    /// Upper edge of the expected band at the peak; see `lower`.
    pub upper: f64,
    /// Unit of observed/expected/lower/upper: "s", "/s", "/min", "ratio" (0..1), "patterns"
    /// for new-pattern findings, or the metric's own unit (empty when it has none).
    pub unit: String,
    /// Still being extended by new evidence.
    pub open: bool,
    /// One sentence a human can check against the data.
    pub explanation: String,
    /// Trace ids of slow or failing requests behind a trace finding (at most five).
    #[serde(default)]
    pub exemplars: Vec<String>,
    /// The series around the finding, for charts: up to [`EVIDENCE_BEFORE`] points before the
    /// onset (observed values only) and [`EVIDENCE_DURING`] points since (the first and the
    /// newest half of a long finding), each with the band the detector expected it in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<EvidencePoint>,
    /// The series had not yet learned its band when this finding began (before its first
    /// fit): shown, but it opens no incident alone — everything looks unusual to a detector
    /// that has seen too little; with other findings agreeing it may (see the correlator).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warming_up: bool,
}

/// Points of context kept before an anomaly's onset.
pub const EVIDENCE_BEFORE: usize = 30;
/// Points kept while an anomaly lasts: its first half and its newest half.
pub const EVIDENCE_DURING: usize = 90;

/// One point of a finding's series as the detector saw it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvidencePoint {
    /// Event time, unix milliseconds. Context points before the onset are placed back from
    /// it at the series' sampling step, not at their recorded times.
    pub t_ms: i64,
    /// The value the detector scored, in the finding's `unit`.
    pub value: f64,
    /// The expected band; absent for context points from before the onset, whose band the
    /// detector no longer holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<f64>,
    /// Upper edge of the expected band; absent exactly when `lower` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<f64>,
    /// Scored at or above the signal's threshold (as moved by feedback); false for context
    /// points and for weaker points that only extend a finding or wind it down.
    #[serde(default)]
    pub anomalous: bool,
}

/// Formats a value with its unit for explanations ("2.4 s", "180 ms", "12.5 %", "3.2/s").
pub fn format_value(v: f64, unit: &str) -> String {
    match unit {
        "s" => {
            if v.abs() >= 1.0 {
                format!("{} s", sig(v))
            } else {
                format!("{} ms", sig(v * 1000.0))
            }
        }
        "ratio" => format!("{} %", sig(v * 100.0)),
        "/s" => format!("{}/s", sig(v)),
        "/min" => format!("{}/min", sig(v)),
        "" | "1" => sig(v),
        other => format!("{} {other}", sig(v)),
    }
}

/// Three significant digits, no scientific notation for everyday magnitudes.
fn sig(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (3 - 1 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `HH:MM:SS` (UTC) of a unix-milliseconds timestamp, with the date when it is not today
/// relative to `reference_ms`.
pub fn format_time(ms: i64, reference_ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let hms = format!("{:02}:{:02}:{:02}", tod / 3600, (tod % 3600) / 60, tod % 60);
    if days == reference_ms.div_euclid(86_400_000) {
        hms
    } else {
        let (y, m, d) = civil_from_days(days);
        format!("{y:04}-{m:02}-{d:02} {hms}")
    }
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_like_a_human_wrote_them() {
        assert_eq!(format_value(2.4, "s"), "2.4 s");
        assert_eq!(format_value(0.18, "s"), "180 ms");
        assert_eq!(format_value(0.0345, "ratio"), "3.45 %");
        assert_eq!(format_value(1234.6, "/s"), "1235/s");
        assert_eq!(format_value(0.5, ""), "0.5");
        assert_eq!(format_value(f64::NAN, ""), "NaN");
    }

    #[test]
    fn times_are_utc_with_a_date_when_not_today() {
        // 2026-11-23 10:02:10 UTC
        let t = 1_795_428_130_000;
        assert_eq!(format_time(t, t), "10:02:10");
        assert_eq!(format_time(t, t + 86_400_000), "2026-11-23 10:02:10");
    }
}
