//! What a finding shows a person: the points before it, its band in words, its explanation.

use super::*;

/// The points the series showed before `onset_ms` (the onset point itself is the newest
/// value in the ring, so it is skipped), spaced by the series' step.
pub(super) fn context_before(detector: &SeriesDetector, onset_ms: i64) -> Vec<EvidencePoint> {
    let Some(step) = detector.step_ms().filter(|s| *s > 0) else {
        return Vec::new();
    };
    let values: Vec<f64> = detector.recent(EVIDENCE_BEFORE + 1).collect();
    let before = values.len().saturating_sub(1);
    values[..before]
        .iter()
        .enumerate()
        .map(|(i, &value)| EvidencePoint {
            t_ms: onset_ms - step * (before - i) as i64,
            value,
            lower: None,
            upper: None,
            anomalous: false,
        })
        .collect()
}

/// Appends a scored point, keeping the pre-onset context and [`EVIDENCE_DURING`] points
/// since the onset: the first half (how it began, what a root cause is judged by) and the
/// newest half (how it is now); the middle of a long finding gives way.
pub(super) fn push_evidence(evidence: &mut Vec<EvidencePoint>, p: &PointScore, anomalous: bool, non_negative: bool) {
    let clamp = |v: f64| if non_negative { v.max(0.0) } else { v };
    if evidence.last().is_some_and(|last| last.t_ms >= p.timestamp_ms) {
        return;
    }
    let context = evidence.iter().take_while(|e| e.lower.is_none()).count();
    if evidence.len() - context >= EVIDENCE_DURING {
        evidence.remove(context + EVIDENCE_DURING / 2);
    }
    evidence.push(EvidencePoint {
        t_ms: p.timestamp_ms,
        value: p.value,
        lower: Some(clamp(p.lower)),
        upper: Some(clamp(p.upper)),
        anomalous,
    });
}

pub(super) fn set_observation(a: &mut Anomaly, p: &PointScore, non_negative: bool) {
    let clamp = |v: f64| if non_negative { v.max(0.0) } else { v };
    a.observed = p.value;
    a.expected = clamp(p.expected);
    a.lower = clamp(p.lower);
    a.upper = clamp(p.upper);
}

/// "0.18–0.35 s": the unit once when both ends share it.
fn format_band(lower: f64, upper: f64, unit: &str) -> String {
    let (lo, hi) = (format_value(lower, unit), format_value(upper, unit));
    let number_len = |s: &str| {
        s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
            .unwrap_or(s.len())
    };
    let (lo_num, lo_unit) = lo.split_at(number_len(&lo));
    let (_, hi_unit) = hi.split_at(number_len(&hi));
    if lo_unit == hi_unit {
        format!("{lo_num}–{hi}")
    } else {
        format!("{lo}–{hi}")
    }
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// One sentence a human can check: what, how much, against what, since when.
pub(super) fn explain(a: &Anomaly, signal: Signal, feedback: Option<&str>) -> String {
    let service = a.signal.service.as_deref().unwrap_or("");
    let subject = match a.detector {
        DetectorKind::LogErrorRate => format!("error-log rate of {service}"),
        DetectorKind::LogPatternRate => format!("rate of {service} {}", a.signal.name),
        DetectorKind::TraceRed => a.signal.name.clone(),
        DetectorKind::Metric => {
            let labels: Vec<String> = a.signal.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if labels.is_empty() {
                a.signal.name.clone()
            } else {
                format!("{}{{{}}}", a.signal.name, labels.join(","))
            }
        }
        DetectorKind::LogNewPattern => a.signal.name.clone(),
        DetectorKind::MetricPeer => {
            let labels: Vec<String> = a
                .signal
                .labels
                .iter()
                .filter(|(k, _)| *k != "peers")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!("{}{{{}}}", a.signal.name, labels.join(","))
        }
    };
    let observed = format_value(a.observed, &a.unit);
    let band = format_band(a.lower, a.upper, &a.unit);
    let since = format_time(a.start_ms, a.end_ms);
    let mut s = match signal {
        _ if a.detector == DetectorKind::MetricPeer => {
            let peers = a.signal.labels.get("peers").map_or("its", String::as_str);
            format!(
                "{subject} averaged {observed} over the last {PEER_WINDOW} intervals while its {peers} peers \
                 averaged {band}, since {since}"
            )
        }
        Signal::FlatLine => format!("{subject} has been stuck at {observed} since {since}"),
        Signal::Quiet => format!(
            "{subject} has stayed at its floor of {observed} since {since}, longer than in any earlier quiet spell"
        ),
        Signal::TimeOfDay => format!(
            "{subject} averaged {observed} over five minutes, expected {band} at this time of day, since {since}"
        ),
        Signal::LevelShift => format!("{subject} shifted to {observed}, expected {band}, since {since}"),
        Signal::Breakout => {
            format!("{subject} was {observed}, beyond anything seen before (expected {band}), since {since}")
        }
        Signal::Spike | Signal::Normal => format!("{subject} was {observed}, expected {band}, since {since}"),
    };
    if let Some(f) = feedback {
        s = format!("{s}. {f}");
    }
    s
}
