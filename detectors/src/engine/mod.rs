//! The engine: every signal the collector sees, in event time, in; anomalies out.
//!
//! Metric points go straight to one [`SeriesDetector`] per series. Logs and spans are
//! counted into fixed event-time intervals; when the watermark (event time as the sources
//! of that kind of signal agree on it, minus the allowed lateness) passes an interval's end, the interval is closed and its
//! aggregates (per-pattern and error-log rates, per-operation request rate, error ratio and
//! latency quantiles) are scored by the same per-series machinery. Scores at or above the
//! signal's threshold open an [`Anomaly`] or extend the open one; a few quiet points close
//! it. Human verdicts move a signal's threshold.
//!
//! No clocks, no I/O: the caller advances time with [`Engine::advance`] and collects
//! finished or updated anomalies with [`Engine::drain`].
//!
//! One file per job: `intervals.rs` (event time, buckets, new patterns), `closing.rs`
//! (an interval into points, and what an empty or cut-short one says),
//! `peers.rs` (fleet members against each other), `lifecycle.rs` (scores into findings),
//! `explain.rs` (what a finding shows), `sources.rs` (event time across clocks), `lanes.rs`
//! (an event time per kind of signal), `state.rs`
//! (saving and restoring); this file holds the configuration, the types and the entry points.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::anomaly::{
    Anomaly, DetectorKind, EVIDENCE_BEFORE, EVIDENCE_DURING, EvidencePoint, Severity, SignalRef, format_time,
    format_value,
};
use crate::timeseries::peers::{PeerVerdict, peer_outliers};
use crate::timeseries::{PointScore, SeriesConfig, SeriesDetector, Signal};

mod chance;
mod closing;
mod explain;
mod intervals;
mod lanes;
mod lifecycle;
mod peers;
mod sources;
mod state;

use explain::{context_before, explain, push_evidence, set_observation, truncate};
pub use lanes::LaneProgress;
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
    /// Settings of the per-series detectors. Metric series use them as given; log and span
    /// signals get per-unit variants (noise floors for latencies, counts and ratios).
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
    /// Stable identity of the series, unique across metrics (the collector sends
    /// `{name}|{series id in hex}`). The engine keeps the series' state, and findings their
    /// [`SignalRef::key`](crate::SignalRef::key), under `metric:{key}`, so feedback follows it.
    pub key: &'a str,
    /// The metric's name as sent (e.g. `process.cpu.utilization`); the finding's signal name.
    pub name: &'a str,
    /// The `service.name` the point belongs to; `None` when unknown (the finding then has
    /// no service and joins incidents by time only).
    pub service: Option<&'a str>,
    /// All of the series' labels. Shown on findings, and the first of `host.name`,
    /// `k8s.pod.name`, `service.instance.id`, `container.id`, `host.id` present names the
    /// member of a peer group (the same metric with the other labels equal).
    pub labels: &'a BTreeMap<String, String>,
    /// Unit of `value`, carried to findings: `s`, `/s`, `/min` and `ratio` are formatted
    /// specially and keep bands at or above 0; anything else (UCUM as sent) is printed
    /// after the number; empty when unknown.
    pub unit: &'a str,
    /// Event time of the point, unix milliseconds. A point not newer than the series' last is
    /// rejected (counted in [`EngineStats::points_rejected`]).
    pub ts_ms: i64,
    /// The value. Counters must already be turned into per-second rates (unit `/s`): the
    /// engine scores each value as it is. A non-finite value is rejected.
    pub value: f64,
}

/// A human's judgement of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Not worth a page: raises the signal's threshold by 0.12 (up to 0.97).
    Noise,
    /// A true problem: lowers the signal's threshold by 0.05 (down to 0.3), undoing part of
    /// earlier noise verdicts.
    Real,
}

/// Verdicts recorded for one signal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SignalFeedback {
    /// [`Verdict::Noise`] verdicts recorded so far; the engine never resets them.
    pub noise: u32,
    /// [`Verdict::Real`] verdicts recorded so far; the engine never resets them.
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
    /// Signals tracked now (metric series, interval signals, peer members, new-pattern
    /// signals), kept to at most [`EngineConfig::max_series`] by evicting the longest
    /// silent. A gauge; the rest are counters.
    pub series: usize,
    /// Points scored since this engine was created (not restored with the state, so the
    /// counters start at 0 after a restart; export differences between two readings).
    pub points_scored: u64,
    /// Points the series detector refused: a non-finite value, or a timestamp not newer
    /// than the series' last (a late or duplicate metric point).
    pub points_rejected: u64,
    /// Log records, spans and peer-group metric points whose interval had already been
    /// closed (past [`EngineConfig::lateness_ms`]): left out of the interval counts (a late
    /// log line still teaches its pattern and may still be a new-pattern finding).
    pub late_events: u64,
    /// Lane intervals left unscored because they held part of a minute of a kind of signal:
    /// its first minute back after a silence (see `engine/lanes.rs`), or the one in which it
    /// stopped (see `engine/closing.rs`).
    pub intervals_graced: u64,
    /// Signals dropped to stay within [`EngineConfig::max_series`], least recently seen
    /// first; a dropped signal starts from nothing when it comes back.
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
    /// New-pattern findings only: the patterns the open finding holds (at most
    /// [`MAX_FINDING_PATTERNS`]) and how many lines of them it has seen, first sightings and
    /// recurrences alike.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    new_patterns: Vec<u64>,
    #[serde(default, skip_serializing_if = "is_zero")]
    new_pattern_lines: u64,
    /// New-pattern findings only: (start of the interval, lines of the finding's patterns in
    /// it) for the latest interval with such lines.
    #[serde(default)]
    new_pattern_burst: (i64, u64),
}

impl Tracked {
    /// Counts a line of a new-pattern finding into its interval's burst.
    fn count_burst(&mut self, ts_ms: i64, interval_ms: i64) {
        let start = ts_ms - ts_ms.rem_euclid(interval_ms);
        if self.new_pattern_burst.0 == start {
            self.new_pattern_burst.1 += 1;
        } else if start > self.new_pattern_burst.0 {
            self.new_pattern_burst = (start, 1);
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Patterns one new-pattern finding remembers for counting their recurrences.
const MAX_FINDING_PATTERNS: usize = 64;

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

impl IntervalBucket {
    /// Whether its lane counted any log line or span in it (other lanes open it empty, and
    /// an error count comes only with its line's pattern count).
    fn has_events(&self) -> bool {
        !self.patterns.is_empty() || !self.red.is_empty()
    }
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

/// `EngineConfig::series` and its variants per unit: latency quantiles are quantised by
/// histogram buckets (10 % relative floor); counts have Poisson noise; ratios get a
/// 1-point floor.
#[derive(Debug)]
struct SeriesConfigs {
    base: SeriesConfig,
    latency: SeriesConfig,
    per_minute: SeriesConfig,
    per_second: SeriesConfig,
    ratio: SeriesConfig,
}

impl SeriesConfigs {
    fn new(base: &SeriesConfig, interval_s: f64) -> SeriesConfigs {
        SeriesConfigs {
            latency: SeriesConfig {
                relative_floor: 0.1,
                ..base.clone()
            },
            per_minute: SeriesConfig {
                count_scale: interval_s / 60.0,
                ..base.clone()
            },
            per_second: SeriesConfig {
                count_scale: interval_s,
                ..base.clone()
            },
            ratio: SeriesConfig {
                absolute_floor: 0.01,
                ..base.clone()
            },
            base: base.clone(),
        }
    }

    /// The configuration a signal of `kind` measured in `unit` is scored with.
    fn of(&self, kind: DetectorKind, unit: &str) -> &SeriesConfig {
        match (kind, unit) {
            (DetectorKind::Metric | DetectorKind::MetricPeer, _) => &self.base,
            (_, "s") => &self.latency,
            (_, "/min") => &self.per_minute,
            (_, "/s") => &self.per_second,
            (_, "ratio") => &self.ratio,
            _ => &self.base,
        }
    }
}

/// The detection engine. See the module docs.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    /// The series configuration per kind of signal (see [`SeriesConfigs`]).
    series_cfgs: SeriesConfigs,
    tracked: HashMap<String, Tracked>,
    /// Event time and open intervals per kind of signal (see [`lanes`]).
    lanes: [lanes::LaneState; 3],
    /// The caller's wall clock, for idle lanes only (see [`Engine::set_wall_clock`]).
    wall_ms: i64,
    service_first_ms: HashMap<String, i64>,
    pattern_templates: HashMap<u64, String>,
    /// The highest severity each pattern's lines have had (bounded with the templates).
    pattern_severity: HashMap<u64, i32>,
    /// Pattern → key of the open new-pattern finding holding it, so a recurrence is counted
    /// without a lookup per log line (rebuilt from `tracked` on restore).
    new_pattern_owner: HashMap<u64, String>,
    peer_groups: HashMap<String, PeerGroup>,
    feedback: BTreeMap<String, SignalFeedback>,
    updates: Vec<Anomaly>,
    stats: EngineStats,
    /// Exemplar trace ids for the point being scored (set around RED scoring).
    exemplars: Vec<String>,
}

const ERROR_SEVERITY: i32 = 17;
/// Errors an interval needs before its error rate or ratio may start a finding, and lines of
/// new patterns before their finding is clear.
const MIN_ERRORS: u64 = 5;
const WARN_SEVERITY: i32 = 13;

/// Which points of a signal may open a finding (any may extend an open one).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Opens {
    Any,
    /// Only a value above the expected one (fewer errors than usual is good news) standing on
    /// a count of `events` that chance would rarely give at the band's upper edge
    /// ([`chance`]); `per_value` turns the signal's unit into events of this interval
    /// (requests for a ratio, minutes per interval for a rate a minute).
    Rise {
        events: u64,
        per_value: f64,
    },
    /// None: the evidence is too thin (a single error in an interval).
    No,
}

/// Puts a batch of updates in an order that depends on nothing but the findings: by the end
/// of each finding's first update in the batch, then its signal, every finding's updates
/// together and in the order they were made. Closing an interval walks hash maps (patterns,
/// operations, tracked signals), so the order the engine found things in changes from one
/// process to the next — and the correlator, which joins findings in the order they come,
/// made different incidents of identical findings in two replays of the same day.
fn in_stable_order(updates: &mut [Anomaly]) {
    if updates.len() < 2 {
        return;
    }
    let mut first: HashMap<String, (i64, String)> = HashMap::new();
    for a in updates.iter() {
        first
            .entry(a.id.clone())
            .or_insert_with(|| (a.end_ms, a.signal.key.clone()));
    }
    // Stable: a finding's updates (same key) keep the order they were made in.
    updates.sort_by_cached_key(|a| {
        let (end, key) = &first[&a.id];
        (*end, key.clone(), a.id.clone())
    });
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
    /// An engine with no history and no feedback: every series warms up from its first
    /// points. Use [`Engine::restore_state`] and [`Engine::restore_feedback`] to resume.
    pub fn new(cfg: EngineConfig) -> Engine {
        let interval_s = cfg.interval_ms as f64 / 1000.0;
        Engine {
            series_cfgs: SeriesConfigs::new(&cfg.series, interval_s),
            cfg,
            tracked: HashMap::new(),
            lanes: Default::default(),
            wall_ms: 0,
            service_first_ms: HashMap::new(),
            pattern_templates: HashMap::new(),
            pattern_severity: HashMap::new(),
            new_pattern_owner: HashMap::new(),
            peer_groups: HashMap::new(),
            feedback: BTreeMap::new(),
            updates: Vec::new(),
            stats: EngineStats::default(),
            exemplars: Vec::new(),
        }
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The engine's counters as of now, for export (the collector's `vigil_detect_*`
    /// metrics).
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

    /// Replaces all recorded verdicts with ones saved from [`Engine::feedback_state`];
    /// thresholds follow at once.
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
        let mut updates = std::mem::take(&mut self.updates);
        in_stable_order(&mut updates);
        updates
    }

    /// Event time as the sources agree on it: the newest time at least two of them have
    /// reached (see `engine/sources.rs`), in the lane of signals furthest ahead (see `engine/lanes.rs`);
    /// `i64::MIN` before any event. The caller's clock for quiet spells should start from
    /// it, not from the newest timestamp seen.
    pub fn event_time(&self) -> i64 {
        self.lanes
            .iter()
            .map(|l| l.sources.event_time())
            .max()
            .unwrap_or(i64::MIN)
    }

    /// Event time up to which every kind of signal is final: the lowest watermark of the
    /// lanes that have had data (each lane's event time minus the allowed lateness; what is
    /// older arrives late). `i64::MIN` before any event. What reads the stored data of a
    /// window — an incident's investigation — waits for this to pass the window's end, so it
    /// reads what detection counted and not a part of it.
    pub fn settled_time(&self) -> i64 {
        self.lanes
            .iter()
            .filter(|l| l.has_data())
            .map(|l| l.watermark_ms)
            .min()
            .unwrap_or(i64::MIN)
    }

    /// Scores one metric point on its series right away (no interval, no lateness: only a
    /// point older than the series' last is rejected), files it for its peer group's
    /// interval (where a point past the lateness counts in `late_events`), and moves the
    /// metrics lane's event time, which may close intervals. Updated findings wait for
    /// [`Engine::drain`].
    pub fn observe_metric(&mut self, m: &MetricPoint<'_>) {
        let key = format!("metric:{}", m.key);
        let signal = || SignalRef {
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
        self.saw(lanes::Lane::Metrics, source, m.ts_ms);
    }
}

#[cfg(test)]
mod tests;
