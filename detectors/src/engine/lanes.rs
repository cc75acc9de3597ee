//! Event time per kind of signal.
//!
//! Logs, spans and metrics reach the collector through pipelines of their own: an
//! OpenTelemetry Collector has one per signal, each with its own batching, queue and retry.
//! One kind can run minutes behind another — a log batch held until it fills while spans
//! flow on — and if one clock closed every interval, that kind's records would all arrive
//! "late" and be dropped from detection. So each kind is a lane: its own event time (as its
//! sources agree on it, see [`super::sources`]), its own watermark and its own open
//! intervals. A lane closes an interval when *its* event time has passed the interval's end
//! plus the allowed lateness.
//!
//! Two rules keep the lanes honest with each other:
//! - An interval any lane has data for is opened (empty) in every other lane that has had
//!   data and not yet closed it, so a kind that went silent everywhere is scored there — as
//!   one signal, the lane's volume, not as zeros of each series (`closing.rs`).
//! - A lane that had nothing for the allowed lateness of *wall* time is idle (Flink's
//!   idleness): it follows the wall clock from its own latest event, so a kind that stopped
//!   does not keep its intervals open for ever — never jumping to another lane's time,
//!   which may run on another clock. Wall time comes from the caller
//!   ([`super::Engine::set_wall_clock`]); without it no lane is ever idle, and a replay
//!   gives the same answers at any speed.
//!
//! And a kind that comes back after a silence longer than the allowed lateness (it went
//! idle: the whole system stopped sending it — no traffic at night, a tracing pipeline that
//! was down, a load test that starts) is not scored for its first interval's length of
//! data: the intervals overlapping its first minute back hold a part of a minute, a load
//! that is ramping up, cold caches and JIT — every rate and latency "beyond anything seen",
//! and nothing that a person should be paged for. A fault that is there when traffic comes
//! back is still found a minute later. The interval in which a kind stops is not scored
//! either (`closing.rs`): it too holds part of a minute.
//! (On the replayed Nezha day, whose load generator runs in three-minute episodes, 465 of
//! the 804 span findings and 118 of the 139 log-rate findings fell within a minute of an
//! episode's start, and incidents opened there, before the fault.)

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::IntervalBucket;
use super::sources::SourceClock;
use crate::anomaly::DetectorKind;

/// Intervals a lane keeps open at most; beyond it the oldest are closed (a lane far behind
/// the others is bounded in memory even when no wall clock says it is idle).
pub(super) const MAX_OPEN_INTERVALS: usize = 1440;

/// Resumptions remembered at most (each is pruned once every interval overlapping its first
/// minute has closed; this bounds a lane flapping faster than its intervals close).
const MAX_RESUMPTIONS: usize = 64;

/// A kind of signal with a clock of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    Logs = 0,
    Spans = 1,
    Metrics = 2,
}

impl Lane {
    pub(super) const ALL: [Lane; 3] = [Lane::Logs, Lane::Spans, Lane::Metrics];

    /// Whether the interval series of `kind` are closed in this lane (zero-filled there).
    pub(super) fn scores(self, kind: DetectorKind) -> bool {
        match self {
            Lane::Logs => matches!(kind, DetectorKind::LogPatternRate | DetectorKind::LogErrorRate),
            Lane::Spans => kind == DetectorKind::TraceRed,
            Lane::Metrics => matches!(kind, DetectorKind::Metric | DetectorKind::MetricPeer),
        }
    }
}

/// One lane's clock and open intervals.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct LaneState {
    pub(super) sources: SourceClock,
    pub(super) watermark_ms: i64,
    pub(super) buckets: BTreeMap<i64, IntervalBucket>,
    /// Wall time of the lane's latest event (not saved: after a restart every lane starts
    /// as just heard from).
    #[serde(skip)]
    pub(super) heard_wall_ms: i64,
    /// Event time of the first event after the lane's latest silence longer than the
    /// lateness (`i64::MIN`: none yet).
    #[serde(default = "never")]
    pub(super) resumed_ms: i64,
    /// Every resumption whose first minute an open interval may still overlap, oldest first.
    /// The latest alone is not enough: data that stops again within the lateness (a
    /// three-minute episode) leaves its first minute's intervals open until the next
    /// episode's first event moves the lane's clock — and judged against that resumption
    /// they were scored (on the replayed Nezha day, a burst of findings 20 s into every
    /// episode, before its fault). Pruned as intervals close; bounded.
    #[serde(default)]
    pub(super) resumptions: VecDeque<i64>,
    /// Start of the run of closed intervals without an event of this lane that the latest
    /// closed interval belongs to (`i64::MIN`: it held events).
    #[serde(default = "never")]
    pub(super) silent_since: i64,
    /// The longest such run that has ended, in milliseconds: a silence no longer than the
    /// lane has had before (the night, the pause between load runs) is not news.
    #[serde(default)]
    pub(super) longest_silence_ms: i64,
}

fn never() -> i64 {
    i64::MIN
}

impl Default for LaneState {
    fn default() -> Self {
        LaneState {
            sources: SourceClock::default(),
            watermark_ms: i64::MIN,
            buckets: BTreeMap::new(),
            heard_wall_ms: 0,
            resumed_ms: i64::MIN,
            resumptions: VecDeque::new(),
            silent_since: i64::MIN,
            longest_silence_ms: 0,
        }
    }
}

impl LaneState {
    /// Notes an event of `source` at `ts_ms` before it moves the lane's clock: one more than
    /// `idle_after` past both the lane's event time and its source's own latest event brings
    /// the lane back from a silence. Its own latest too (and a source never heard before
    /// brings nothing back): a host whose clock runs minutes fast is always ahead of the
    /// lane's agreed time without anything having been silent. Only the first such event
    /// counts (the lane's clock moves once two sources are back).
    pub(super) fn note_resumption(&mut self, source: &str, ts_ms: i64, idle_after: i64) {
        let now = self.sources.event_time();
        let silent = |since: i64| ts_ms.saturating_sub(since) > idle_after;
        if now != i64::MIN
            && self.resumed_ms <= now
            && silent(now)
            && self.sources.latest_of(source).is_some_and(silent)
        {
            self.resumed_ms = ts_ms;
            if self.resumptions.len() >= MAX_RESUMPTIONS {
                self.resumptions.pop_front();
            }
            self.resumptions.push_back(ts_ms);
        }
    }

    /// Whether the interval starting at `start` overlaps the lane's first `interval_ms` of
    /// data after any silence. Intervals close in order of their start, so resumptions
    /// whose first minute ended before this one began are forgotten here.
    pub(super) fn in_resumption_grace(&mut self, start: i64, interval_ms: i64) -> bool {
        while self
            .resumptions
            .front()
            .is_some_and(|r| r.saturating_add(interval_ms) <= start)
        {
            self.resumptions.pop_front();
        }
        let overlaps =
            |r: i64| r != i64::MIN && start < r.saturating_add(interval_ms) && start.saturating_add(interval_ms) > r;
        // `resumed_ms` too: a state saved before `resumptions` existed holds only it.
        overlaps(self.resumed_ms) || self.resumptions.iter().any(|r| overlaps(*r))
    }

    /// Notes a closed interval starting at `start`, `silent` when it held no event; returns
    /// whether the silence it is part of has now lasted longer than any before it.
    pub(super) fn note_closed(&mut self, start: i64, silent: bool, interval_ms: i64) -> bool {
        if !silent {
            if self.silent_since != i64::MIN {
                self.longest_silence_ms = self.longest_silence_ms.max(start - self.silent_since);
                self.silent_since = i64::MIN;
            }
            return false;
        }
        if self.silent_since == i64::MIN {
            self.silent_since = start;
        }
        start + interval_ms - self.silent_since > self.longest_silence_ms
    }

    /// Whether any event has reached this lane.
    pub(super) fn has_data(&self) -> bool {
        self.sources.event_time() != i64::MIN
    }
}

/// The three lanes built from a state saved when one clock closed every kind: each lane
/// takes that clock, and each open interval is split by what it counted.
pub(super) fn from_single_clock(
    watermark_ms: i64,
    sources: SourceClock,
    buckets: BTreeMap<i64, IntervalBucket>,
) -> [LaneState; 3] {
    let mut lanes: [LaneState; 3] = Default::default();
    for lane in &mut lanes {
        lane.watermark_ms = watermark_ms;
        lane.sources = sources.clone();
    }
    for (start, b) in buckets {
        lanes[Lane::Logs as usize].buckets.insert(
            start,
            IntervalBucket {
                patterns: b.patterns,
                errors: b.errors,
                ..IntervalBucket::default()
            },
        );
        lanes[Lane::Spans as usize].buckets.insert(
            start,
            IntervalBucket {
                red: b.red,
                ..IntervalBucket::default()
            },
        );
        lanes[Lane::Metrics as usize].buckets.insert(
            start,
            IntervalBucket {
                peers: b.peers,
                ..IntervalBucket::default()
            },
        );
    }
    lanes
}

/// One kind of signal's progress ([`Engine::lane_progress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneProgress {
    /// Event time up to which its intervals are final.
    pub watermark_ms: i64,
    /// Its latest event.
    pub latest_event_ms: i64,
    /// Nothing of it heard for the allowed lateness of wall time.
    pub quiet: bool,
}

impl LaneProgress {
    /// Whether everything of this kind in `[start_ms, end_ms]` is in: its intervals are
    /// final past the end, or it went quiet before the window began.
    pub fn settled_for(&self, start_ms: i64, end_ms: i64) -> bool {
        self.watermark_ms >= end_ms || (self.quiet && self.latest_event_ms < start_ms)
    }
}

impl super::Engine {
    /// Each kind of signal that has had data: how far it is final, its latest event, and
    /// whether it has gone quiet (nothing heard for the allowed lateness of wall time). A
    /// window after a quiet kind's latest event holds nothing of that kind and will not,
    /// however far behind the kind's clock is: a replay whose logs end hours before its
    /// metrics need not wait hours for the logs' clock to catch up.
    pub fn lane_progress(&self) -> Vec<LaneProgress> {
        self.lanes
            .iter()
            .filter(|l| l.has_data())
            .map(|l| LaneProgress {
                watermark_ms: l.watermark_ms,
                latest_event_ms: l.sources.event_time(),
                quiet: self.wall_ms > 0 && l.heard_wall_ms.saturating_add(self.cfg.lateness_ms) <= self.wall_ms,
            })
            .collect()
    }
}
