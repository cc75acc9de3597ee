//! Investigations: "something went wrong between these two times — where?"
//!
//! What an engineer does once they know *when*: compare the window with a baseline over
//! every stored signal and rank the services by how far their own behaviour moved. Pure:
//! the collector reads the rows from its indexes and hands them over; nothing here does
//! I/O or looks at the clock.
//!
//! Evidence comes in two tiers. **Request-path evidence** — warning and error log patterns
//! that grew or are new, a span's *self* time (its duration minus its children's, so a slow
//! callee does not blame its callers), the share of requests that failed *where the failure
//! started* (an error span or error line whose trace shows a failing call further down is
//! propagating, not originating), routine lines that stopped or fell behind the line they
//! kept step with, requests that stopped — decides the ranking. **Resource
//! metrics** (CPU, memory, per-pod latency gauges…) corroborate a service the request path
//! already points at, and speak alone only at half weight: on per-minute pod metrics some
//! series of some service always wobbles, and taking the largest of hundreds of robust
//! shifts finds noise first. Then topology: a service whose callee shows the same kind of
//! trouble is more likely suffering than causing it.

mod logs;
mod metrics;
mod onset;
mod rank;
mod stats;
mod traces;

use serde::{Deserialize, Serialize};

pub use rank::rank_candidates;

/// The weakest change kept as evidence, in robust σ (or Poisson σ for counts): below it,
/// a signal moved no more than baselines wobble.
pub(crate) const MIN_STRENGTH: f64 = 3.0;

/// A half-open time range `[start_ms, end_ms)` in unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRange {
    /// First millisecond in the range (unix ms).
    pub start_ms: i64,
    /// First millisecond after the range (unix ms); a range with `end_ms <= start_ms` holds
    /// nothing.
    pub end_ms: i64,
}

impl TimeRange {
    /// Whether an event at `ts_ns` (unix ns) falls in the range, judged by the millisecond
    /// it falls in (rounded down).
    pub fn contains_ns(&self, ts_ns: i64) -> bool {
        let ms = ts_ns.div_euclid(1_000_000);
        self.start_ms <= ms && ms < self.end_ms
    }

    /// The range's length in milliseconds (negative for a reversed range, not clamped).
    pub fn len_ms(&self) -> i64 {
        self.end_ms - self.start_ms
    }
}

/// One stored span, as much of it as an investigation needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpanRow {
    /// Trace id in hex (the collector stores lowercase). Ids are only compared as strings,
    /// so spans and [`WindowLogLine`]s must spell them alike.
    pub trace_id: String,
    /// Span id in hex, spelled like `trace_id`; unique within its trace.
    pub span_id: String,
    /// The parent's span id; empty for a root span. A span whose parent is not among the
    /// rows has no callers as far as the investigation can tell, and a span whose children
    /// are missing keeps their time as its own self time.
    pub parent_span_id: String,
    /// `service.name` of the span's resource.
    pub service: String,
    /// The span's name; evidence is kept per service and operation.
    pub operation: String,
    /// Start, unix nanoseconds: decides which range the span belongs to, and its minute.
    pub start_ns: i64,
    /// End, unix nanoseconds; `end_ns - start_ns` is the span's duration.
    pub end_ns: i64,
    /// OTLP status code ERROR; counted against the service where the failure started, not
    /// the callers it propagated to.
    pub error: bool,
    /// The service a client span calls (`peer.service`), empty when it names none.
    pub peer: String,
}

/// Log records counted per service, pattern, severity and minute (read from columns,
/// so a baseline of millions of lines costs no document reads).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogCount {
    /// The minute, as [`Input::minute_of`] numbers it (aligned to the window's start).
    pub minute: i64,
    /// `service.name` of the lines.
    pub service: String,
    /// The [`Pattern::id`](vigil_detectors::Pattern::id) the lines were stamped with.
    pub pattern_id: u64,
    /// OTLP severity number (13–16 warn, 17+ error; 0 unknown). Warnings and worse are
    /// checked for growth, lower severities for routine lines that stopped.
    pub severity: i32,
    /// Lines of that service, pattern and severity in that minute.
    pub count: u64,
}

/// A warning-or-worse log line of the window with its trace context, so that a line
/// whose trace shows a failure further down can be told apart from where it started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowLogLine {
    /// Unix nanoseconds: lines of the window and of its lead-in travel together.
    pub ts_ns: i64,
    /// `service.name` of the line.
    pub service: String,
    /// The [`Pattern::id`](vigil_detectors::Pattern::id) the line was stamped with.
    pub pattern_id: u64,
    /// OTLP severity number (13–16 warn, 17+ error); an error line marks its span as a
    /// place where a failure showed.
    pub severity: i32,
    /// Trace id it was written under, spelled like [`SpanRow::trace_id`]; empty when none
    /// (the line then always counts, as trouble of its own service).
    pub trace_id: String,
    /// Span id it was written under, spelled like [`SpanRow::span_id`]; empty when none.
    pub span_id: String,
}

/// One metric series, already reduced to one value per step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricSeries {
    /// `service.name` of the series: the service its evidence counts for.
    pub service: String,
    /// The metric's name; becomes [`Evidence::metric`].
    pub name: String,
    /// The series' labels as `k="v"` pairs (without `service.name`), for display and queries.
    pub labels: String,
    /// UCUM unit as sent, shown in the sentence and copied to [`Evidence::unit`]; empty
    /// when unknown.
    pub unit: String,
    /// `(unix ms, value)`, in time order. Points outside the window and the baseline, and
    /// non-finite values, are ignored; the series needs five baseline points and one in the
    /// window to be compared.
    pub points: Vec<(i64, f64)>,
}

/// Everything an investigation compares. Rows of both ranges are mixed; each row's time
/// says which range it belongs to.
#[derive(Debug, Clone)]
pub struct Input {
    /// The range being investigated.
    pub window: TimeRange,
    /// The range it is compared with; should not overlap the window (the window wins where
    /// they do). Chosen by the caller: the collector takes the request's, or picks one
    /// ending five minutes before the window.
    pub baseline: TimeRange,
    /// Spans starting in the window, the baseline and the lead-in, in any order. Spans of
    /// other times are not compared, but still link parents and children.
    pub spans: Vec<SpanRow>,
    /// Log line counts of the window, the baseline and the lead-in, numbered by
    /// [`Input::minute_of`] from the window's start.
    pub log_counts: Vec<LogCount>,
    /// Warning-or-worse lines of the window and the lead-in, with their trace context: an
    /// error line under a span marks a failure there, and a line above a failure in another
    /// service is not counted as new trouble.
    pub window_lines: Vec<WindowLogLine>,
    /// Metric series with their points in the window and the baseline.
    pub metrics: Vec<MetricSeries>,
    /// Only rank these services (all when empty).
    pub services: Vec<String>,
    /// The whole minutes just before the window (after the baseline), when their rows are
    /// included: a change that began in the window is told from one already under way.
    pub lead_in: Option<TimeRange>,
}

impl Input {
    /// The one-minute bucket of a time, numbered from the window's start (0 is its first
    /// minute, negative ones are before it), so that buckets never straddle its edges.
    pub fn minute_of(window: TimeRange, ts_ns: i64) -> i64 {
        (ts_ns.div_euclid(1_000_000) - window.start_ms).div_euclid(60_000)
    }

    /// Whether bucket `minute` lies in the window (rather than the baseline).
    pub(crate) fn minute_in_window(&self, minute: i64) -> bool {
        minute >= 0 && minute * 60_000 < self.window.len_ms()
    }

    /// Whether bucket `minute` starts in the baseline. Minutes in neither range — the
    /// lead-in, the gap between baseline and window — are neither: the lead-in's lines used
    /// to be counted as baseline, so trouble already under way before the window raised the
    /// baseline it was measured against.
    pub(crate) fn minute_in_baseline(&self, minute: i64) -> bool {
        let start = self.window.start_ms.saturating_add(minute.saturating_mul(60_000));
        !self.minute_in_window(minute) && self.baseline.start_ms <= start && start < self.baseline.end_ms
    }

    /// The lead-in `window` gets with `baseline`: the whole minutes just before the window,
    /// as many as the window is long (rounded up) where the gap after the baseline allows;
    /// `None` when the baseline ends less than a minute before the window, or after it.
    pub fn lead_in_for(window: TimeRange, baseline: TimeRange) -> Option<TimeRange> {
        let gap_minutes = (window.start_ms - baseline.end_ms).div_euclid(60_000);
        let minutes = (window.len_ms() + 59_999).div_euclid(60_000).min(gap_minutes);
        (baseline.end_ms <= window.start_ms && minutes > 0).then(|| TimeRange {
            start_ms: window.start_ms - minutes * 60_000,
            end_ms: window.start_ms,
        })
    }

    /// The same comparison made for the lead-in instead of the window: the lead-in's log
    /// buckets renumbered from its own start, the window's rows left out.
    fn for_lead_in(&self, lead_in: TimeRange) -> Input {
        let shift = (self.window.start_ms - lead_in.start_ms).div_euclid(60_000);
        Input {
            window: lead_in,
            baseline: self.baseline,
            spans: self
                .spans
                .iter()
                .filter(|s| !self.window.contains_ns(s.start_ns))
                .cloned()
                .collect(),
            log_counts: self
                .log_counts
                .iter()
                .filter(|c| c.minute < 0)
                .map(|c| LogCount {
                    minute: c.minute + shift,
                    ..c.clone()
                })
                .collect(),
            window_lines: self.window_lines.clone(),
            metrics: self.metrics.clone(),
            services: self.services.clone(),
            lead_in: None,
        }
    }
}

/// What kind of behaviour moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceKind {
    /// A warning/error log pattern that is new or grew.
    LogPattern,
    /// A routine line the service printed every minute stopped while it kept working.
    LogPatternStopped,
    /// An operation's own (self) time grew.
    SelfTime,
    /// More of an operation's requests failed, counting failures where they started.
    ErrorRatio,
    /// A service that served requests in the baseline served none in the window.
    RequestsStopped,
    /// A resource metric moved away from its baseline.
    Metric,
}

impl EvidenceKind {
    /// Request-path evidence decides; metrics corroborate.
    pub fn on_request_path(self) -> bool {
        !matches!(self, EvidenceKind::Metric)
    }

    /// Evidence kinds that mean "the same kind of trouble" when a caller and its callee
    /// both show them.
    fn family(self) -> u8 {
        match self {
            EvidenceKind::LogPattern
            | EvidenceKind::LogPatternStopped
            | EvidenceKind::ErrorRatio
            | EvidenceKind::RequestsStopped => 0,
            EvidenceKind::SelfTime => 1,
            EvidenceKind::Metric => 2,
        }
    }
}

/// One piece of evidence: what moved, from what to what, and how surprising that is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// What kind of change this is.
    pub kind: EvidenceKind,
    /// The service the change is charged to: for span evidence, the callee a client span
    /// names when that callee never answered (it is down), else the span's own service.
    pub service: String,
    /// What moved, for display and for matching the same signal across ranges: the
    /// operation (`calls from <caller> (<operation>)` when charged to an unanswering
    /// callee), `pattern <id>`, `requests`, or the metric with its labels.
    pub signal: String,
    /// The operation, for [`EvidenceKind::SelfTime`] and [`EvidenceKind::ErrorRatio`];
    /// `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// The log pattern, for [`EvidenceKind::LogPattern`] and
    /// [`EvidenceKind::LogPatternStopped`]; `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern_id: Option<u64>,
    /// The metric's name (without labels), for [`EvidenceKind::Metric`]; `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// The typical baseline value, in `unit`: the median over the baseline's minutes (of
    /// per-minute medians for self time; of all points for a metric).
    pub before: f64,
    /// The window's value, in `unit`: median self time, error share, lines per minute, the
    /// metric's median; 0 for requests that stopped.
    pub after: f64,
    /// Unit of `before` and `after`: `ms` (self time), `%` (error share, 0–100),
    /// `lines/min` (log patterns), `/min` (requests), or the metric's own (may be empty).
    pub unit: String,
    /// How many baseline wobbles the change is: robust σ, or Poisson σ for counts; for
    /// self time never more than the rank test's z of the window's requests against the
    /// baseline's (so a shift seen on five requests cannot weigh like one seen on five
    /// hundred); at least 3 (weaker changes are dropped), metrics capped at 50; shared
    /// among the services when one log pattern grew in several. With a lead-in, only the
    /// rise since the lead-in counts ([`Evidence::ongoing`] evidence, which did not rise,
    /// keeps its whole strength).
    pub strength: f64,
    /// Absent from the baseline: a log pattern it never printed, or an error share that was
    /// 0 there.
    #[serde(default)]
    pub new: bool,
    /// Already as far from the baseline in the lead-in (the minutes just before the window):
    /// trouble under way before the window rather than what began in it. Such evidence
    /// ranks its service only when nothing else on the request path does (see
    /// [`rank_candidates`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ongoing: bool,
    /// One sentence a person can check.
    pub sentence: String,
    /// The log pattern's template (filled by the collector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// From the window: up to three trace ids of the slowest or failing requests, for
    /// [`EvidenceKind::SelfTime`] and [`EvidenceKind::ErrorRatio`] (set here); up to three
    /// log lines for log evidence (filled by the collector); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<String>,
    /// The API query that shows the data behind this evidence (filled by the collector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The size of the shift before the sample-size cap, where one applied: the onset
    /// comparison measures a rise since the lead-in by it (a shift that grew tenfold still
    /// grew, though the cap reads both alike). Not sent: only the ranking here uses it.
    #[serde(skip)]
    pub(crate) uncapped: Option<f64>,
    /// For [`EvidenceKind::LogPattern`]: the first minute of the window (from its start) with
    /// lines of the pattern — who printed a shared pattern first. Not sent.
    #[serde(skip)]
    pub(crate) first_minute: Option<i64>,
}

impl Evidence {
    /// Evidence of `kind` on `service`: `before` → `after` in `unit`, how strong, and the
    /// sentence saying so; the optional parts start empty.
    pub(crate) fn new(
        kind: EvidenceKind,
        service: &str,
        signal: String,
        (before, after): (f64, f64),
        unit: &str,
        strength: f64,
        sentence: String,
    ) -> Evidence {
        Evidence {
            kind,
            service: service.to_string(),
            signal,
            operation: None,
            pattern_id: None,
            metric: None,
            before,
            after,
            unit: unit.to_string(),
            strength,
            new: false,
            ongoing: false,
            sentence,
            template: None,
            samples: Vec::new(),
            query: None,
            uncapped: None,
            first_minute: None,
        }
    }

    /// Request-path evidence of a change that began in the window: what decides a ranking.
    pub(crate) fn began_on_request_path(&self) -> bool {
        self.kind.on_request_path() && !self.ongoing
    }
}

/// A ranked service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The service, as [`Evidence::service`] names it.
    pub service: String,
    /// In [0, 1): `1 − e^(−raw/10)` of the raw strength (10 σ reads 0.63, 30 σ 0.95);
    /// comparable within one investigation. A service whose requests' only change was
    /// already under way before the window scores below every service whose requests
    /// changed in it, and one with metric evidence only below both.
    pub score: f64,
    /// Why it ranks where it does, one checkable sentence each: its strongest request-path
    /// findings that began in the window (up to three; for a service with none, up to two
    /// findings under way before it, else up to two metric findings), then notes on
    /// corroboration and on callees in trouble.
    pub reasons: Vec<String>,
    /// The changes found on it, at most ten: what began in the window first, then what was
    /// under way before it, each strongest first.
    pub evidence: Vec<Evidence>,
}

/// Every piece of evidence the input holds, strongest first, before ranking; only for
/// [`Input::services`] when it names any. The lead-in is not consulted here (see
/// [`investigate`]).
pub fn gather(input: &Input) -> Vec<Evidence> {
    finish(gather_with(input, &traces::TraceIndex::new(&input.spans)))
}

fn gather_with(input: &Input, index: &traces::TraceIndex<'_>) -> Vec<Evidence> {
    let mut out = Vec::new();
    out.extend(traces::self_time(input, index));
    out.extend(traces::error_ratio(input, index));
    out.extend(traces::requests_stopped(input, index));
    out.extend(logs::patterns(input, index));
    out.extend(logs::patterns_stopped(input));
    out.extend(logs::patterns_fell_behind(input));
    out.extend(metrics::shifts(input));
    traces::settle_waits(&mut out);
    if !input.services.is_empty() {
        out.retain(|e| input.services.iter().any(|s| s == &e.service));
    }
    out
}

/// What is left to do once each signal's strength is final (after the onset comparison,
/// which compares the undivided strengths of both ranges): share the patterns grown in
/// several services, drop what fell below [`MIN_STRENGTH`] (a self-time shift's cap can put
/// it there; the lead-in keeps such shifts to compare with), strongest first — ties by
/// kind, service and signal, so the same rows give the same order.
fn finish(mut evidence: Vec<Evidence>) -> Vec<Evidence> {
    logs::share_patterns_grown_in_several(&mut evidence);
    evidence.retain(|e| e.strength >= MIN_STRENGTH);
    evidence.sort_by(strongest_first);
    evidence
}

/// Evidence order: strongest first; ties by kind, service and signal.
pub(crate) fn strongest_first(a: &Evidence, b: &Evidence) -> std::cmp::Ordering {
    b.strength
        .total_cmp(&a.strength)
        .then_with(|| (a.kind as u8).cmp(&(b.kind as u8)))
        .then_with(|| a.service.cmp(&b.service))
        .then_with(|| a.signal.cmp(&b.signal))
}

/// Ranks the services of `input`, most likely cause first. With a lead-in, evidence
/// already as strong in the lead-in is marked [`Evidence::ongoing`] (request path) or
/// dropped (metrics), and the rest keeps only its rise; the call
/// graph for demoting callers comes from the spans given. Services without evidence are not
/// listed.
pub fn investigate(input: &Input) -> Vec<Candidate> {
    // One index of the spans serves the evidence and the call graph.
    let index = traces::TraceIndex::new(&input.spans);
    let mut evidence = gather_with(input, &index);
    if let Some(lead_in) = input.lead_in {
        let before = input.for_lead_in(lead_in);
        let before_index = traces::TraceIndex::new(&before.spans);
        evidence = onset::keep_what_began(evidence, &gather_with(&before, &before_index), lead_in);
    }
    rank_candidates(finish(evidence), &index.calls())
}

#[cfg(test)]
mod tests;
