//! Investigations: `POST /api/v1/investigations {"start", "end"}` compares a time window
//! with a baseline over everything stored — log patterns, spans, metrics — and ranks the
//! services most likely behind what changed (`vigil_rca::investigate`). This module reads
//! the indexes, chooses the baseline when none is given, fills in each piece of evidence's
//! template, samples and the query behind it, and keeps the results (`store.rs`).

mod baseline;
pub(crate) mod incidents;
mod read;
mod store;

use serde::{Deserialize, Serialize};
use vigil_rca::{Candidate, EvidenceKind, Input, TimeRange, investigate};

use crate::storage::QueryError;

pub(crate) use baseline::choose_baseline;
pub(crate) use read::{Local, Read, Reader};
pub(crate) use store::InvestigationStore;

/// Rows read per range at most: an investigation must answer in seconds on a busy system
/// (the baseline is shortened to fit before this is reached; see `baseline.rs`).
const MAX_SPANS: usize = 400_000;
const MAX_WARNING_LINES: usize = 100_000;

/// What was asked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Request {
    /// Unix milliseconds.
    pub start: i64,
    pub end: i64,
    #[serde(default)]
    pub baseline: Option<RangeMs>,
    #[serde(default)]
    pub services: Vec<String>,
    /// The incident this investigation was started from, if any.
    #[serde(default)]
    pub incident: Option<String>,
    /// Compare with the minutes just before the window too, and count only what began in
    /// it (the default).
    #[serde(default = "yes")]
    pub lead_in: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeMs {
    pub start: i64,
    pub end: i64,
}

impl From<RangeMs> for TimeRange {
    fn from(r: RangeMs) -> TimeRange {
        TimeRange {
            start_ms: r.start,
            end_ms: r.end,
        }
    }
}

impl From<TimeRange> for RangeMs {
    fn from(r: TimeRange) -> RangeMs {
        RangeMs {
            start: r.start_ms,
            end: r.end_ms,
        }
    }
}

/// How much was read, so a reader can judge the answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ReadCounts {
    pub window_spans: usize,
    pub baseline_spans: usize,
    pub window_log_lines: u64,
    pub baseline_log_lines: u64,
    pub metric_series: usize,
    /// A cap cut the rows read short.
    pub truncated: bool,
}

/// A finished investigation, as the API returns and keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Investigation {
    pub id: String,
    pub created_ms: i64,
    pub window: RangeMs,
    pub baseline: RangeMs,
    /// How the baseline was chosen, in words.
    pub baseline_reason: String,
    /// The minutes before the window that evidence was also measured in: only the rise
    /// since counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_in: Option<RangeMs>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
    /// Most likely first.
    pub candidates: Vec<Candidate>,
    /// Things the reader should know (no data in the window, a cap reached…).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub read: ReadCounts,
    pub took_ms: f64,
}

/// Validates a request: a clear message for each mistake.
pub(crate) fn validate(r: &Request) -> Result<(), String> {
    if r.start >= r.end {
        return Err("start must be before end (unix milliseconds)".into());
    }
    if r.end - r.start > 24 * 3_600_000 {
        return Err("the window is longer than a day; narrow it to when the trouble started".into());
    }
    if let Some(b) = r.baseline {
        if b.start >= b.end {
            return Err("baseline.start must be before baseline.end".into());
        }
        if b.end - b.start > 7 * 24 * 3_600_000 {
            return Err("the baseline is longer than a week".into());
        }
        if b.start < r.end && r.start < b.end {
            return Err("the baseline overlaps the window".into());
        }
    }
    Ok(())
}

/// Runs an investigation against the stored data (blocking: call off the reactor).
pub(crate) fn run(reader: &dyn Reader, request: &Request, now_ms: i64) -> Result<Investigation, QueryError> {
    validate(request).map_err(QueryError::BadRequest)?;
    let started = std::time::Instant::now();
    let window = TimeRange {
        start_ms: request.start,
        end_ms: request.end,
    };
    let (baseline, baseline_reason) = match request.baseline {
        Some(b) => (TimeRange::from(b), "the baseline given with the request".to_string()),
        None => choose_baseline(reader, window)?,
    };
    let mut notes = Vec::new();
    let lead_in = request.lead_in.then(|| Input::lead_in_for(window, baseline)).flatten();
    let (mut spans, cut_window) = reader.span_rows(window, MAX_SPANS)?;
    let window_spans = spans.len();
    let (baseline_spans, cut_baseline) = reader.span_rows(baseline, MAX_SPANS)?;
    let read_baseline_spans = baseline_spans.len();
    spans.extend(baseline_spans);
    let mut log_counts = reader.log_counts(window, window)?;
    let window_log_lines: u64 = log_counts.iter().map(|c| c.count).sum();
    let baseline_counts = reader.log_counts(baseline, window)?;
    let baseline_log_lines: u64 = baseline_counts.iter().map(|c| c.count).sum();
    log_counts.extend(baseline_counts);
    let mut window_lines = reader.warning_lines(window, MAX_WARNING_LINES)?;
    let mut cut_lead_in = false;
    if let Some(lead_in) = lead_in {
        let (lead_spans, cut) = reader.span_rows(lead_in, MAX_SPANS)?;
        spans.extend(lead_spans);
        log_counts.extend(reader.log_counts(lead_in, window)?);
        let lines = reader.warning_lines(lead_in, MAX_WARNING_LINES)?;
        cut_lead_in = cut || lines.len() >= MAX_WARNING_LINES;
        window_lines.extend(lines);
    }
    let metrics = reader.metric_series(window, baseline)?;
    let truncated = cut_window || cut_baseline || cut_lead_in || window_lines.len() >= MAX_WARNING_LINES;
    if truncated {
        notes.push(
            "More data than an investigation reads: some rows were left out (narrow the window or name the services)."
                .into(),
        );
    }
    if window_spans == 0 && window_log_lines == 0 {
        notes.push("No spans or log lines are stored in the window: there is nothing to compare.".into());
    } else if read_baseline_spans == 0 && baseline_log_lines == 0 {
        notes.push("No spans or log lines are stored in the baseline: nothing to compare the window with.".into());
    }
    let read = ReadCounts {
        window_spans,
        baseline_spans: read_baseline_spans,
        window_log_lines,
        baseline_log_lines,
        metric_series: metrics.len(),
        truncated,
    };
    let input = Input {
        window,
        baseline,
        spans,
        log_counts,
        window_lines,
        metrics,
        services: request.services.clone(),
        lead_in,
    };
    let mut candidates = investigate(&input);
    reader.fill_logs(window, baseline, &mut candidates)?;
    set_queries(window, &mut candidates);
    Ok(Investigation {
        id: investigation_id(request, now_ms),
        created_ms: now_ms,
        window: window.into(),
        baseline: baseline.into(),
        baseline_reason,
        lead_in: lead_in.map(RangeMs::from),
        services: request.services.clone(),
        incident: request.incident.clone(),
        candidates,
        notes,
        read,
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// The query behind every piece of evidence.
fn set_queries(window: TimeRange, candidates: &mut [Candidate]) {
    let (start, end) = (window.start_ms, window.end_ms);
    for e in candidates.iter_mut().flat_map(|c| c.evidence.iter_mut()) {
        let service = encode(&e.service);
        e.query = Some(match e.kind {
            EvidenceKind::LogPattern | EvidenceKind::LogPatternStopped => {
                let pattern = e.pattern_id.unwrap_or(0);
                format!("/api/v1/logs/search?service={service}&pattern={pattern}&start={start}&end={end}")
            }
            EvidenceKind::SelfTime | EvidenceKind::ErrorRatio => match e.samples.first() {
                Some(trace) => format!("/api/v1/traces/{trace}"),
                None => format!("/api/v1/services?start={start}&end={end}"),
            },
            EvidenceKind::RequestsStopped => format!("/api/v1/services?start={start}&end={end}"),
            EvidenceKind::Metric => {
                let selector = match e.signal.find('{') {
                    Some(i) => format!(
                        "{}{{service.name={:?},{}",
                        &e.signal[..i],
                        e.service,
                        &e.signal[i + 1..]
                    ),
                    None => format!("{}{{service.name={:?}}}", e.signal, e.service),
                };
                format!(
                    "/api/v1/metrics/query?query={}&start={start}&end={end}&step=60s",
                    encode(&selector)
                )
            }
        });
    }
}

/// Percent-encodes a query-string value.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Ids sort by creation time and differ for the same request asked twice.
fn investigation_id(r: &Request, now_ms: i64) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (r.start, r.end, &r.services, r.baseline.map(|b| (b.start, b.end))).hash(&mut h);
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed).hash(&mut h);
    format!("{now_ms:013x}{:08x}", h.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(start: i64, end: i64) -> Request {
        Request {
            start,
            end,
            baseline: None,
            services: Vec::new(),
            incident: None,
            lead_in: true,
        }
    }

    #[test]
    fn requests_are_validated_with_reasons() {
        assert!(validate(&request(10, 5)).expect_err("reversed").contains("before end"));
        assert!(
            validate(&request(0, 2 * 24 * 3_600_000))
                .expect_err("too long")
                .contains("longer than a day")
        );
        let mut r = request(1_000_000, 2_000_000);
        r.baseline = Some(RangeMs {
            start: 1_500_000,
            end: 2_500_000,
        });
        assert!(validate(&r).expect_err("overlap").contains("overlaps"));
        r.baseline = Some(RangeMs { start: 0, end: 900_000 });
        assert!(validate(&r).is_ok());
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("a b{c=\"d\"}"), "a%20b%7Bc%3D%22d%22%7D");
    }
}
