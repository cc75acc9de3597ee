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
//!   data and not yet closed it, so a kind that went silent everywhere is scored as zeros
//!   there — as it was when one clock closed all kinds together.
//! - A lane that had nothing for the allowed lateness of *wall* time is idle (Flink's
//!   idleness): it follows the wall clock from its own latest event, so a kind that stopped
//!   does not keep its intervals open for ever — never jumping to another lane's time,
//!   which may run on another clock. Wall time comes from the caller
//!   ([`super::Engine::set_wall_clock`]); without it no lane is ever idle, and a replay
//!   gives the same answers at any speed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::IntervalBucket;
use super::sources::SourceClock;
use crate::anomaly::DetectorKind;

/// Intervals a lane keeps open at most; beyond it the oldest are closed (a lane far behind
/// the others is bounded in memory even when no wall clock says it is idle).
pub(super) const MAX_OPEN_INTERVALS: usize = 1440;

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
}

impl Default for LaneState {
    fn default() -> Self {
        LaneState {
            sources: SourceClock::default(),
            watermark_ms: i64::MIN,
            buckets: BTreeMap::new(),
            heard_wall_ms: 0,
        }
    }
}

impl LaneState {
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
