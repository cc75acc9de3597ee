//! The engine: every signal the collector sees, in event time, in; anomalies out.
//!
//! Metric points go straight to one [`SeriesDetector`] per series. Logs and spans are
//! counted into fixed event-time intervals; when the watermark (event time as the sources
//! agree on it, minus the allowed lateness) passes an interval's end, the interval is closed and its
//! aggregates (per-pattern and error-log rates, per-operation request rate, error ratio and
//! latency quantiles) are scored by the same per-series machinery. Scores at or above the
//! signal's threshold open an [`Anomaly`] or extend the open one; a few quiet points close
//! it. Human verdicts move a signal's threshold.
//!
//! No clocks, no I/O: the caller advances time with [`Engine::advance`] and collects
//! finished or updated anomalies with [`Engine::drain`].

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::anomaly::{
    Anomaly, DetectorKind, EVIDENCE_BEFORE, EVIDENCE_DURING, EvidencePoint, Severity, SignalRef, format_time,
    format_value,
};
use crate::timeseries::peers::{PeerVerdict, peer_outliers};
use crate::timeseries::{PointScore, SeriesConfig, SeriesDetector, Signal};

mod sources;
mod state;
pub use state::{EngineState, EngineStateRef, STATE_VERSION, VersionMismatch};

/// An anomaly kept open only because its signal is still outside its onset band closes
/// after this long without a strong score: by then the new level is the normal one.
const MAX_UNCONFIRMED_MS: i64 = 2 * 3_600_000;

/// Score of a peer-group outlier: a clear finding, below a confident single-series breakout.
const PEER_SCORE: f64 = 0.8;

/// Tunables of the engine; defaults are the product's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Aggregation interval for logs and spans, milliseconds.
    pub interval_ms: i64,
    /// How long after an interval ends late events are still counted into it.
    pub lateness_ms: i64,
    /// Base score threshold for a finding (feedback moves it per signal).
    pub threshold: f64,
    /// Points below the threshold that close an open anomaly.
    pub close_after: u32,
    /// Series tracked at most; the least recently seen are dropped beyond it.
    pub max_series: usize,
    /// A service's new log patterns are not findings during its first minutes: everything
    /// is new then.
    pub new_pattern_warmup_ms: i64,
    /// Requests an interval needs before its error ratio and latency quantiles are scored.
    pub min_requests: u64,
    /// Tracked interval series stop receiving zero-filled intervals after this many silent
    /// intervals (a rare pattern is not "collapsing" every minute).
    pub zero_fill_intervals: i64,
    pub series: SeriesConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            interval_ms: 60_000,
            lateness_ms: 120_000,
            threshold: 0.5,
            close_after: 3,
            max_series: 100_000,
            new_pattern_warmup_ms: 15 * 60_000,
            min_requests: 5,
            zero_fill_intervals: 60,
            series: SeriesConfig::default(),
        }
    }
}

/// One metric point as the collector hands it over (counters already turned into rates).
#[derive(Debug, Clone)]
pub struct MetricPoint<'a> {
    pub key: &'a str,
    pub name: &'a str,
    pub service: Option<&'a str>,
    pub labels: &'a BTreeMap<String, String>,
    pub unit: &'a str,
    pub ts_ms: i64,
    pub value: f64,
}

/// A human's judgement of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Noise,
    Real,
}

/// Verdicts recorded for one signal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SignalFeedback {
    pub noise: u32,
    pub real: u32,
}

impl SignalFeedback {
    /// "Noise" raises the threshold; "real" keeps it, or lowers it back.
    pub fn threshold(&self, base: f64) -> f64 {
        (base + 0.12 * f64::from(self.noise) - 0.05 * f64::from(self.real)).clamp(0.3, 0.97)
    }

    fn sentence(&self) -> Option<String> {
        let plural = |n: u32, w: &str| {
            if n == 1 {
                format!("{n} {w} verdict")
            } else {
                format!("{n} {w} verdicts")
            }
        };
        match (self.noise, self.real) {
            (0, 0) => None,
            (n, 0) => Some(format!("Sensitivity lowered after {}.", plural(n, "noise"))),
            (0, r) => Some(format!("Sensitivity raised after {}.", plural(r, "real"))),
            (n, r) => Some(format!(
                "Sensitivity adjusted after {} and {}.",
                plural(n, "noise"),
                plural(r, "real")
            )),
        }
    }
}

/// Counters the caller may export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub series: usize,
    pub points_scored: u64,
    pub points_rejected: u64,
    pub late_events: u64,
    pub series_evicted: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Tracked {
    detector: SeriesDetector,
    kind: DetectorKind,
    signal: SignalRef,
    unit: String,
    last_seen_ms: i64,
    open: Option<Anomaly>,
    /// What the open anomaly's peak point looked like (spike, shift, breakout…).
    peak_signal: Signal,
    /// The expected band when the open anomaly began.
    onset_band: Option<(f64, f64)>,
    /// Event time of the last point at or above the threshold.
    last_strong_ms: i64,
    quiet: u32,
    /// Interval series only: zero-filled while recently active.
    interval_series: bool,
}

/// Log-scale latency histogram: bucket i holds [1.2^i, 1.2^(i+1)) microseconds.
const LAT_BUCKETS: usize = 128;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Red {
    requests: u64,
    errors: u64,
    #[serde(with = "state::latency_histogram")]
    latency: Box<[u32; LAT_BUCKETS]>,
    /// The slowest requests' (duration, trace id), at most three.
    slowest: Vec<(f64, String)>,
    /// Trace ids of the first failing requests, at most three.
    failing: Vec<String>,
}

impl Default for Red {
    fn default() -> Self {
        Red {
            requests: 0,
            errors: 0,
            latency: Box::new([0; LAT_BUCKETS]),
            slowest: Vec::new(),
            failing: Vec::new(),
        }
    }
}

impl Red {
    fn add(&mut self, duration_s: f64, error: bool) {
        self.requests += 1;
        self.errors += u64::from(error);
        let us = (duration_s * 1e6).max(1.0);
        let i = (us.ln() / 1.2f64.ln()).floor().clamp(0.0, (LAT_BUCKETS - 1) as f64) as usize;
        self.latency[i] += 1;
    }

    /// Quantile in seconds (geometric middle of the bucket).
    fn quantile(&self, q: f64) -> f64 {
        let target = (q * self.requests as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &c) in self.latency.iter().enumerate() {
            seen += u64::from(c);
            if seen >= target {
                return 1.2f64.powf(i as f64 + 0.5) / 1e6;
            }
        }
        0.0
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IntervalBucket {
    /// (service, pattern id) -> lines.
    #[serde(with = "state::as_pairs")]
    patterns: HashMap<(String, u64), u64>,
    /// service -> error lines (severity ERROR and above).
    errors: HashMap<String, u64>,
    /// (service, operation) -> RED aggregates.
    #[serde(with = "state::as_pairs")]
    red: HashMap<(String, String), Red>,
    /// peer group key -> member -> last value in the interval.
    peers: HashMap<String, HashMap<String, f64>>,
}

/// Labels that name one member of a group of like things: the same metric on another host,
/// pod or instance is a peer.
const MEMBER_LABELS: [&str; 5] = [
    "host.name",
    "k8s.pod.name",
    "service.instance.id",
    "container.id",
    "host.id",
];
/// Intervals compared across peers.
const PEER_WINDOW: usize = 10;
/// Members tracked per group.
const MAX_MEMBERS: usize = 1000;

#[derive(Debug, Serialize, Deserialize)]
struct PeerGroup {
    name: String,
    service: Option<String>,
    unit: String,
    labels: BTreeMap<String, String>,
    member_label: String,
    /// member -> values of the last intervals it reported in, newest last.
    members: BTreeMap<String, std::collections::VecDeque<f64>>,
    last_seen_ms: i64,
}

/// The detection engine. See the module docs.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    /// Per-kind variants of `cfg.series`: latency quantiles are quantised by histogram
    /// buckets (10 % relative floor); counts have Poisson noise; ratios get a 1-point floor.
    cfg_latency: SeriesConfig,
    cfg_per_minute: SeriesConfig,
    cfg_per_second: SeriesConfig,
    cfg_ratio: SeriesConfig,
    tracked: HashMap<String, Tracked>,
    buckets: BTreeMap<i64, IntervalBucket>,
    watermark_ms: i64,
    /// Event time as the sources agree on it (see [`sources`]).
    sources: sources::SourceClock,
    service_first_ms: HashMap<String, i64>,
    pattern_templates: HashMap<u64, String>,
    /// The highest severity each pattern's lines have had (bounded with the templates).
    pattern_severity: HashMap<u64, i32>,
    peer_groups: HashMap<String, PeerGroup>,
    feedback: BTreeMap<String, SignalFeedback>,
    updates: Vec<Anomaly>,
    stats: EngineStats,
    /// Exemplar trace ids for the point being scored (set around RED scoring).
    exemplars: Vec<String>,
}

const ERROR_SEVERITY: i32 = 17;
/// Errors an interval needs before its error rate or ratio may start a finding.
const MIN_ERRORS: u64 = 5;
const WARN_SEVERITY: i32 = 13;

/// Which points of a signal may open a finding (any may extend an open one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opens {
    Any,
    /// Only a value above the expected one: fewer errors than usual is good news.
    Rise,
    /// None: the evidence is too thin (a single error in an interval).
    No,
}

fn anomaly_id(key: &str, start_ms: i64) -> String {
    // FNV-1a: stable across runs and platforms, so replay yields the same ids.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes().iter().chain(start_ms.to_le_bytes().iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        let interval_s = cfg.interval_ms as f64 / 1000.0;
        Engine {
            cfg_latency: SeriesConfig {
                relative_floor: 0.1,
                ..cfg.series.clone()
            },
            cfg_per_minute: SeriesConfig {
                count_scale: interval_s / 60.0,
                ..cfg.series.clone()
            },
            cfg_per_second: SeriesConfig {
                count_scale: interval_s,
                ..cfg.series.clone()
            },
            cfg_ratio: SeriesConfig {
                absolute_floor: 0.01,
                ..cfg.series.clone()
            },
            cfg,
            tracked: HashMap::new(),
            buckets: BTreeMap::new(),
            watermark_ms: i64::MIN,
            sources: sources::SourceClock::default(),
            service_first_ms: HashMap::new(),
            pattern_templates: HashMap::new(),
            pattern_severity: HashMap::new(),
            peer_groups: HashMap::new(),
            feedback: BTreeMap::new(),
            updates: Vec::new(),
            stats: EngineStats::default(),
            exemplars: Vec::new(),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            series: self.tracked.len(),
            ..self.stats
        }
    }

    /// Verdicts per signal key, for persistence.
    pub fn feedback_state(&self) -> &BTreeMap<String, SignalFeedback> {
        &self.feedback
    }

    pub fn restore_feedback(&mut self, state: BTreeMap<String, SignalFeedback>) {
        self.feedback = state;
    }

    /// Records a verdict on the signal `key`; returns the signal's new threshold.
    pub fn feedback(&mut self, key: &str, verdict: Verdict) -> f64 {
        let f = self.feedback.entry(key.to_string()).or_default();
        match verdict {
            Verdict::Noise => f.noise += 1,
            Verdict::Real => f.real += 1,
        }
        f.threshold(self.cfg.threshold)
    }

    fn threshold(&self, key: &str) -> f64 {
        self.feedback
            .get(key)
            .map_or(self.cfg.threshold, |f| f.threshold(self.cfg.threshold))
    }

    /// Anomalies opened, extended or closed since the last call.
    pub fn drain(&mut self) -> Vec<Anomaly> {
        std::mem::take(&mut self.updates)
    }

    /// Event time as the sources agree on it: the newest time at least two of them have
    /// reached (see [`sources`]); `i64::MIN` before any event. The caller's clock for quiet
    /// spells should start from it, not from the newest timestamp seen.
    pub fn event_time(&self) -> i64 {
        self.sources.event_time()
    }

    /// Notes an event of `source` and closes what the agreed event time allows.
    fn saw(&mut self, source: &str, ts_ms: i64) {
        self.sources.saw(source, ts_ms);
        let now = self.sources.event_time();
        self.advance(now);
    }

    /// Moves event time forward to `ts_ms` (the latest event time known to the caller);
    /// intervals that ended more than the lateness before it are closed and scored.
    pub fn advance(&mut self, ts_ms: i64) {
        let wm = ts_ms.saturating_sub(self.cfg.lateness_ms);
        if wm <= self.watermark_ms {
            return;
        }
        self.watermark_ms = wm;
        while let Some((&start, _)) = self.buckets.first_key_value() {
            if start + self.cfg.interval_ms > wm {
                break;
            }
            if let Some(bucket) = self.buckets.remove(&start) {
                self.close_interval(start, bucket);
            }
        }
    }

    fn bucket_for(&mut self, ts_ms: i64) -> Option<&mut IntervalBucket> {
        let start = ts_ms - ts_ms.rem_euclid(self.cfg.interval_ms);
        if start + self.cfg.interval_ms <= self.watermark_ms {
            self.stats.late_events += 1;
            return None;
        }
        Some(self.buckets.entry(start).or_default())
    }

    pub fn observe_metric(&mut self, m: &MetricPoint<'_>) {
        let key = format!("metric:{}", m.key);
        let signal = SignalRef {
            key: key.clone(),
            service: m.service.map(str::to_string),
            name: m.name.to_string(),
            labels: m.labels.clone(),
        };
        self.score(&key, DetectorKind::Metric, signal, m.unit, m.ts_ms, m.value, false);
        self.note_peer(m);
        let source = m
            .service
            .or_else(|| m.labels.get("host.name").map(String::as_str))
            .unwrap_or("");
        self.saw(source, m.ts_ms);
    }

    /// Files the point under its peer group (same metric and labels but for the member label).
    fn note_peer(&mut self, m: &MetricPoint<'_>) {
        if !m.value.is_finite() {
            return;
        }
        let Some((member_label, member)) = MEMBER_LABELS
            .iter()
            .find_map(|l| m.labels.get(*l).map(|v| (l.to_string(), v.clone())))
        else {
            return;
        };
        let mut labels = m.labels.clone();
        labels.remove(&member_label);
        let group_key = {
            let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{}{{{}}}/{member_label}", m.name, parts.join(","))
        };
        if !self.peer_groups.contains_key(&group_key) {
            if self.peer_groups.len() >= self.cfg.max_series / 10 {
                return;
            }
            self.peer_groups.insert(
                group_key.clone(),
                PeerGroup {
                    name: m.name.to_string(),
                    service: m.service.map(str::to_string),
                    unit: m.unit.to_string(),
                    labels,
                    member_label,
                    members: BTreeMap::new(),
                    last_seen_ms: m.ts_ms,
                },
            );
        }
        if let Some(b) = self.bucket_for(m.ts_ms) {
            b.peers.entry(group_key).or_default().insert(member, m.value);
        }
    }

    /// Compares the members of each group that reported in the closed interval.
    fn close_peers(&mut self, end: i64, peers: HashMap<String, HashMap<String, f64>>) {
        for (group_key, values) in peers {
            let Some(g) = self.peer_groups.get_mut(&group_key) else {
                continue;
            };
            g.last_seen_ms = end;
            // A member that skipped an interval starts its window again: windows must align.
            g.members.retain(|m, _| values.contains_key(m));
            for (member, v) in values {
                if !g.members.contains_key(&member) && g.members.len() >= MAX_MEMBERS {
                    continue;
                }
                let w = g.members.entry(member).or_default();
                if w.len() == PEER_WINDOW {
                    w.pop_front();
                }
                w.push_back(v);
            }
            let full: Vec<(&String, Vec<f64>)> = g
                .members
                .iter()
                .filter(|(_, w)| w.len() == PEER_WINDOW)
                .map(|(m, w)| (m, w.iter().copied().collect()))
                .collect();
            if full.len() < 3 {
                continue;
            }
            let windows: Vec<&[f64]> = full.iter().map(|(_, w)| w.as_slice()).collect();
            let outliers = match peer_outliers(&windows) {
                PeerVerdict::Outliers(o) => o,
                PeerVerdict::AllIdentical | PeerVerdict::TooFewMembers => Vec::new(),
            };
            let means: Vec<f64> = full
                .iter()
                .map(|(_, w)| w.iter().sum::<f64>() / w.len() as f64)
                .collect();
            let mut points = Vec::new();
            for (i, (member, _)) in full.iter().enumerate() {
                let key = format!("peer:{group_key}:{member}");
                let is_outlier = outliers.contains(&i);
                let tracked = self.tracked.get(&key).is_some_and(|t| t.open.is_some());
                if !is_outlier && !tracked {
                    continue;
                }
                let others: Vec<f64> = means
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, &v)| v)
                    .collect();
                let lower = others.iter().copied().fold(f64::INFINITY, f64::min);
                let upper = others.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut sorted = others.clone();
                sorted.sort_by(f64::total_cmp);
                let mut labels = g.labels.clone();
                labels.insert(g.member_label.clone(), (*member).clone());
                labels.insert("peers".into(), others.len().to_string());
                let signal = SignalRef {
                    key: key.clone(),
                    service: g.service.clone(),
                    name: g.name.clone(),
                    labels,
                };
                let point = PointScore {
                    timestamp_ms: end,
                    value: means[i],
                    expected: sorted[sorted.len() / 2],
                    lower,
                    upper,
                    z: 0.0,
                    score: if is_outlier { PEER_SCORE } else { 0.0 },
                    signal: if is_outlier { Signal::Spike } else { Signal::Normal },
                    seasonal: false,
                    since_ms: None,
                };
                points.push((key, signal, g.unit.clone(), point));
            }
            for (key, signal, unit, point) in points {
                if !self.tracked.contains_key(&key) {
                    if self.tracked.len() >= self.cfg.max_series {
                        self.evict_oldest();
                    }
                    self.tracked.insert(
                        key.clone(),
                        Tracked {
                            detector: SeriesDetector::new(),
                            kind: DetectorKind::MetricPeer,
                            signal: signal.clone(),
                            unit,
                            last_seen_ms: end,
                            open: None,
                            peak_signal: Signal::Normal,
                            onset_band: None,
                            last_strong_ms: i64::MIN,
                            quiet: 0,
                            interval_series: false,
                        },
                    );
                }
                if let Some(t) = self.tracked.get_mut(&key) {
                    t.signal = signal;
                    t.last_seen_ms = end;
                }
                let threshold = self.threshold(&key);
                let sentence = self.feedback.get(&key).and_then(SignalFeedback::sentence);
                self.apply_point(&key, point, threshold, sentence, Opens::Any);
            }
        }
        // Groups that stopped reporting go away after the zero-fill horizon.
        let horizon = self.cfg.zero_fill_intervals * self.cfg.interval_ms;
        self.peer_groups.retain(|_, g| end - g.last_seen_ms <= horizon);
    }

    /// One log record with its pattern assignment.
    pub fn observe_log(
        &mut self,
        service: &str,
        pattern_id: u64,
        is_new_pattern: bool,
        template: &str,
        severity_number: i32,
        ts_ms: i64,
    ) {
        let first = *self.service_first_ms.entry(service.to_string()).or_insert(ts_ms);
        if is_new_pattern || !self.pattern_templates.contains_key(&pattern_id) {
            if self.pattern_templates.len() >= self.cfg.max_series {
                self.pattern_templates.clear();
                self.pattern_severity.clear();
            }
            self.pattern_templates.insert(pattern_id, truncate(template, 160));
        }
        let severity = self.pattern_severity.entry(pattern_id).or_insert(severity_number);
        *severity = (*severity).max(severity_number);
        if is_new_pattern && ts_ms - first >= self.cfg.new_pattern_warmup_ms && severity_number >= WARN_SEVERITY {
            self.new_pattern(service, pattern_id, template, severity_number, ts_ms);
        }
        if let Some(b) = self.bucket_for(ts_ms) {
            *b.patterns.entry((service.to_string(), pattern_id)).or_default() += 1;
            if severity_number >= ERROR_SEVERITY {
                *b.errors.entry(service.to_string()).or_default() += 1;
            } else {
                b.errors.entry(service.to_string()).or_default();
            }
        }
        self.saw(service, ts_ms);
    }

    /// One finished span: its service, operation (span name), end time and duration.
    pub fn observe_span(&mut self, service: &str, operation: &str, end_ms: i64, duration_s: f64, error: bool) {
        self.observe_traced_span(service, operation, end_ms, duration_s, error, "");
    }

    /// As [`Engine::observe_span`], keeping the trace id as an exemplar when the request is
    /// among the interval's slowest or failing ones.
    pub fn observe_traced_span(
        &mut self,
        service: &str,
        operation: &str,
        end_ms: i64,
        duration_s: f64,
        error: bool,
        trace_id: &str,
    ) {
        if let Some(b) = self.bucket_for(end_ms) {
            let red = b.red.entry((service.to_string(), operation.to_string())).or_default();
            red.add(duration_s, error);
            if !trace_id.is_empty() {
                if error && red.failing.len() < 3 {
                    red.failing.push(trace_id.to_string());
                }
                if red.slowest.len() < 3 || red.slowest.iter().any(|(d, _)| *d < duration_s) {
                    red.slowest.push((duration_s, trace_id.to_string()));
                    red.slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
                    red.slowest.truncate(3);
                }
            }
        }
        self.saw(service, end_ms);
    }

    fn new_pattern(&mut self, service: &str, pattern_id: u64, template: &str, severity_number: i32, ts_ms: i64) {
        let key = format!("lognew:{service}");
        let threshold = self.threshold(&key);
        let score: f64 = if severity_number >= ERROR_SEVERITY { 0.9 } else { 0.7 };
        if score < threshold {
            return;
        }
        let level = if severity_number >= ERROR_SEVERITY {
            "ERROR"
        } else {
            "WARN"
        };
        let sentence = self.feedback.get(&key).and_then(SignalFeedback::sentence);
        let cfg_close = self.cfg.interval_ms * 5;
        let entry = self.tracked.entry(key.clone()).or_insert_with(|| Tracked {
            detector: SeriesDetector::new(),
            kind: DetectorKind::LogNewPattern,
            signal: SignalRef {
                key: key.clone(),
                service: Some(service.to_string()),
                name: "new log patterns".into(),
                labels: BTreeMap::new(),
            },
            unit: String::new(),
            last_seen_ms: ts_ms,
            open: None,
            peak_signal: Signal::Normal,
            onset_band: None,
            last_strong_ms: i64::MIN,
            quiet: 0,
            interval_series: false,
        });
        entry.last_seen_ms = ts_ms;
        let a = match entry.open.take() {
            // New patterns arriving close together are one finding (a deploy, an outage).
            Some(mut a) if ts_ms - a.end_ms <= cfg_close => {
                a.end_ms = a.end_ms.max(ts_ms);
                a.observed += 1.0;
                a.score = a.score.max(score);
                a.severity = Severity::from_score(a.score);
                a
            }
            _ => Anomaly {
                id: anomaly_id(&key, ts_ms),
                detector: DetectorKind::LogNewPattern,
                signal: SignalRef {
                    labels: BTreeMap::from([("pattern".to_string(), pattern_id.to_string())]),
                    ..entry.signal.clone()
                },
                start_ms: ts_ms,
                end_ms: ts_ms,
                score,
                severity: Severity::from_score(score),
                observed: 1.0,
                expected: 0.0,
                lower: 0.0,
                upper: 0.0,
                unit: "patterns".into(),
                open: true,
                explanation: String::new(),
                exemplars: Vec::new(),
                evidence: Vec::new(),
                // New patterns have their own warm-up: a service's first minutes.
                warming_up: false,
            },
        };
        let mut a = a;
        let n = a.observed as u64;
        let first_template = a
            .signal
            .labels
            .get("pattern")
            .and_then(|p| p.parse::<u64>().ok())
            .and_then(|p| self.pattern_templates.get(&p).cloned())
            .unwrap_or_else(|| truncate(template, 160));
        a.explanation = format!(
            "{service} logged {} never seen before since {}; the first, at {level} severity: \"{first_template}\"",
            if n == 1 {
                "a log pattern".to_string()
            } else {
                format!("{n} log patterns")
            },
            format_time(a.start_ms, a.end_ms),
        );
        if let Some(s) = sentence {
            a.explanation = format!("{}. {s}", a.explanation);
        }
        self.updates.push(a.clone());
        if let Some(t) = self.tracked.get_mut(&key) {
            t.open = Some(a);
        }
    }

    fn close_interval(&mut self, start: i64, bucket: IntervalBucket) {
        // An interval's aggregates are stamped with its start, so "since 10:02:00" is when the
        // behaviour began, comparable with per-event findings (new log patterns) inside it.
        let end = start;
        self.close_peers(end, bucket.peers);
        let per_min = 60_000.0 / self.cfg.interval_ms as f64;
        let per_sec = 1000.0 / self.cfg.interval_ms as f64;
        let mut seen: Vec<String> = Vec::new();
        for ((service, pattern), n) in bucket.patterns {
            let key = format!("lograte:{service}:{pattern}");
            let template = self.pattern_templates.get(&pattern).cloned().unwrap_or_default();
            let signal = SignalRef {
                key: key.clone(),
                service: Some(service.clone()),
                name: format!("log pattern {pattern} \"{template}\""),
                labels: BTreeMap::from([("pattern".to_string(), pattern.to_string())]),
            };
            let opens = self.opens(DetectorKind::LogPatternRate, &key, 0);
            self.score_inner(
                &key,
                DetectorKind::LogPatternRate,
                signal,
                "/min",
                end,
                n as f64 * per_min,
                true,
                true,
                opens,
            );
            seen.push(key);
        }
        for (service, n) in bucket.errors {
            let key = format!("logerr:{service}");
            let signal = SignalRef {
                key: key.clone(),
                service: Some(service.clone()),
                name: "error logs".into(),
                labels: BTreeMap::new(),
            };
            let opens = self.opens(DetectorKind::LogErrorRate, &key, n);
            self.score_inner(
                &key,
                DetectorKind::LogErrorRate,
                signal,
                "/min",
                end,
                n as f64 * per_min,
                true,
                true,
                opens,
            );
            seen.push(key);
        }
        for ((service, op), red) in bucket.red {
            let mut series = vec![("rate", "request rate", "/s", red.requests as f64 * per_sec)];
            if red.requests >= self.cfg.min_requests {
                series.push((
                    "errors",
                    "error ratio",
                    "ratio",
                    red.errors as f64 / red.requests as f64,
                ));
                series.push(("p50", "p50 latency", "s", red.quantile(0.50)));
                series.push(("p95", "p95 latency", "s", red.quantile(0.95)));
                series.push(("p99", "p99 latency", "s", red.quantile(0.99)));
            }
            for (suffix, what, unit, value) in series {
                let key = format!("red:{service}:{op}:{suffix}");
                let signal = SignalRef {
                    key: key.clone(),
                    service: Some(service.clone()),
                    name: format!("{what} of {service} {op}"),
                    labels: BTreeMap::from([("operation".to_string(), op.clone())]),
                };
                let opens = self.opens(DetectorKind::TraceRed, &key, red.errors);
                self.exemplars = match suffix {
                    "errors" => red.failing.clone(),
                    "p50" | "p95" | "p99" => red.slowest.iter().map(|(_, t)| t.clone()).collect(),
                    _ => Vec::new(),
                };
                self.score_inner(
                    &key,
                    DetectorKind::TraceRed,
                    signal,
                    unit,
                    end,
                    value,
                    suffix == "rate",
                    true,
                    opens,
                );
                seen.push(key);
            }
        }
        // Counts that did not appear are zeros: a pattern or endpoint going silent is news.
        seen.sort_unstable();
        let silent: Vec<String> = self
            .tracked
            .iter()
            .filter(|(k, t)| {
                t.interval_series
                    && end - t.last_seen_ms <= self.cfg.zero_fill_intervals * self.cfg.interval_ms
                    && seen.binary_search(k).is_err()
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in silent {
            if let Some(t) = self.tracked.get(&key) {
                let (kind, signal, unit) = (t.kind, t.signal.clone(), t.unit.clone());
                let opens = self.opens(kind, &key, 0);
                self.score_inner(&key, kind, signal, &unit, end, 0.0, true, false, opens);
            }
        }
    }

    /// Which points of the interval signal `key` may open a finding, with `errors` errors in
    /// the interval. Fewer errors than usual is good news: error rates and ratios open only
    /// when they rise, and only on enough errors (one error is thin evidence); so does the
    /// rate of a log pattern whose lines are warnings or errors.
    fn opens(&self, kind: DetectorKind, key: &str, errors: u64) -> Opens {
        let error_signal =
            kind == DetectorKind::LogErrorRate || (kind == DetectorKind::TraceRed && key.ends_with(":errors"));
        if error_signal {
            return if errors >= MIN_ERRORS { Opens::Rise } else { Opens::No };
        }
        // Keys are `lograte:{service}:{pattern}`.
        let warning_pattern = kind == DetectorKind::LogPatternRate
            && key
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u64>().ok())
                .and_then(|p| self.pattern_severity.get(&p))
                .is_some_and(|&s| s >= WARN_SEVERITY);
        if warning_pattern { Opens::Rise } else { Opens::Any }
    }

    #[allow(clippy::too_many_arguments)]
    fn score(
        &mut self,
        key: &str,
        kind: DetectorKind,
        signal: SignalRef,
        unit: &str,
        ts_ms: i64,
        value: f64,
        interval_series: bool,
    ) {
        self.score_inner(key, kind, signal, unit, ts_ms, value, interval_series, true, Opens::Any);
    }

    #[allow(clippy::too_many_arguments)]
    fn score_inner(
        &mut self,
        key: &str,
        kind: DetectorKind,
        signal: SignalRef,
        unit: &str,
        ts_ms: i64,
        value: f64,
        interval_series: bool,
        seen: bool,
        opens: Opens,
    ) {
        if !self.tracked.contains_key(key) {
            if self.tracked.len() >= self.cfg.max_series {
                self.evict_oldest();
            }
            self.tracked.insert(
                key.to_string(),
                Tracked {
                    detector: SeriesDetector::new(),
                    kind,
                    signal,
                    unit: unit.to_string(),
                    last_seen_ms: ts_ms,
                    open: None,
                    peak_signal: Signal::Normal,
                    onset_band: None,
                    last_strong_ms: i64::MIN,
                    quiet: 0,
                    interval_series,
                },
            );
        }
        let threshold = self.threshold(key);
        let sentence = self.feedback.get(key).and_then(SignalFeedback::sentence);
        let Some(t) = self.tracked.get_mut(key) else { return };
        if seen {
            t.last_seen_ms = ts_ms;
        }
        let cfg = match (t.kind, t.unit.as_str()) {
            (DetectorKind::Metric | DetectorKind::MetricPeer, _) => &self.cfg.series,
            (_, "s") => &self.cfg_latency,
            (_, "/min") => &self.cfg_per_minute,
            (_, "/s") => &self.cfg_per_second,
            (_, "ratio") => &self.cfg_ratio,
            _ => &self.cfg.series,
        };
        let point = match t.detector.observe(cfg, ts_ms, value) {
            Ok(p) => p,
            Err(_) => {
                self.stats.points_rejected += 1;
                return;
            }
        };
        self.stats.points_scored += 1;
        self.apply_point(key, point, threshold, sentence, opens);
    }

    /// Opens, extends or closes the anomaly of `key` with one scored point.
    fn apply_point(&mut self, key: &str, point: PointScore, threshold: f64, sentence: Option<String>, opens: Opens) {
        let ts_ms = point.timestamp_ms;
        let Some(t) = self.tracked.get_mut(key) else { return };
        let non_negative = matches!(t.unit.as_str(), "/s" | "/min" | "s" | "ratio");
        let may_open = match opens {
            Opens::Any => true,
            Opens::Rise => point.value > point.expected,
            Opens::No => false,
        };
        // `may_open` is false when the evidence is too thin to start a finding (one error
        // in an interval), though it may still extend one.
        let strong = point.score >= threshold && (may_open || t.open.is_some());
        // An open anomaly lasts while the signal stays outside the band it was expected in
        // when the anomaly began — the detector adapts to a new level within minutes, but a
        // p99 that stays at 2 s is still the same incident — up to MAX_UNCONFIRMED_MS
        // without a strong score.
        let still_outside = t
            .onset_band
            .is_some_and(|(lo, hi)| point.value < lo || point.value > hi)
            && ts_ms - t.last_strong_ms <= MAX_UNCONFIRMED_MS;
        if strong || (t.open.is_some() && still_outside) {
            t.quiet = 0;
            if strong {
                t.last_strong_ms = ts_ms;
            }
            let a = match t.open.take() {
                Some(mut a) => {
                    a.end_ms = ts_ms;
                    if point.score > a.score {
                        t.peak_signal = point.signal;
                        a.score = point.score;
                        a.severity = Severity::from_score(point.score);
                        set_observation(&mut a, &point, non_negative);
                    }
                    a
                }
                None => {
                    // A quiet spell is found once it has lasted: it began at its first point.
                    let start_ms = point.since_ms.unwrap_or(ts_ms);
                    let mut a = Anomaly {
                        id: anomaly_id(key, start_ms),
                        detector: t.kind,
                        signal: t.signal.clone(),
                        start_ms,
                        end_ms: ts_ms,
                        score: point.score,
                        severity: Severity::from_score(point.score),
                        observed: 0.0,
                        expected: 0.0,
                        lower: 0.0,
                        upper: 0.0,
                        unit: t.unit.clone(),
                        open: true,
                        explanation: String::new(),
                        exemplars: Vec::new(),
                        evidence: Vec::new(),
                        warming_up: !t.detector.has_learned(),
                    };
                    set_observation(&mut a, &point, non_negative);
                    t.peak_signal = point.signal;
                    t.onset_band = Some((point.lower, point.upper));
                    a.evidence = context_before(&t.detector, ts_ms);
                    a
                }
            };
            let mut a = a;
            push_evidence(&mut a.evidence, &point, strong, non_negative);
            if strong {
                for x in &self.exemplars {
                    if a.exemplars.len() < 5 && !a.exemplars.contains(x) {
                        a.exemplars.push(x.clone());
                    }
                }
            }
            a.explanation = explain(&a, t.peak_signal, sentence.as_deref());
            self.updates.push(a.clone());
            t.open = Some(a);
        } else if let Some(mut a) = t.open.take() {
            push_evidence(&mut a.evidence, &point, false, non_negative);
            t.quiet += 1;
            if t.quiet >= self.cfg.close_after {
                a.open = false;
                t.onset_band = None;
                self.updates.push(a);
            } else {
                t.open = Some(a);
            }
        }
    }

    fn evict_oldest(&mut self) {
        // Rare (only at the cap), so a scan is cheaper than keeping an order index.
        if let Some(key) = self
            .tracked
            .iter()
            .min_by_key(|(_, t)| t.last_seen_ms)
            .map(|(k, _)| k.clone())
        {
            self.tracked.remove(&key);
            self.stats.series_evicted += 1;
        }
    }
}

/// The points the series showed before `onset_ms` (the onset point itself is the newest
/// value in the ring, so it is skipped), spaced by the series' step.
fn context_before(detector: &SeriesDetector, onset_ms: i64) -> Vec<EvidencePoint> {
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
fn push_evidence(evidence: &mut Vec<EvidencePoint>, p: &PointScore, anomalous: bool, non_negative: bool) {
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

fn set_observation(a: &mut Anomaly, p: &PointScore, non_negative: bool) {
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

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// One sentence a human can check: what, how much, against what, since when.
fn explain(a: &Anomaly, signal: Signal, feedback: Option<&str>) -> String {
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

#[cfg(test)]
mod tests;
