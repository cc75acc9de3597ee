//! The engine's learned state as data, so that a restart does not throw away what every
//! series has learned — seasons, level, noise, all-time range, open findings, intervals
//! still filling — and put every signal through a cold warm-up at once.
//!
//! The engine stays free of I/O: it hands out a serialisable view ([`Engine::state`]) and
//! takes one back ([`Engine::restore_state`]); where and how it is written is the caller's
//! business. Feedback verdicts are not part of it: the collector stores them as they arrive.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::lanes::{LaneState, from_single_clock};
use super::sources::SourceClock;
use super::{Engine, IntervalBucket, PeerGroup, Tracked};

fn no_watermark() -> i64 {
    i64::MIN
}

/// Bumped when the layout changes incompatibly: a state of another version is refused
/// (the engine then starts cold) rather than misread.
pub const STATE_VERSION: u32 = 1;

/// What [`Engine::state`] serialises (borrowed: saving does not copy the engine).
#[derive(Serialize)]
pub struct EngineStateRef<'a> {
    version: u32,
    lanes: &'a [LaneState; 3],
    tracked: &'a HashMap<String, Tracked>,
    service_first_ms: &'a HashMap<String, i64>,
    pattern_templates: &'a HashMap<u64, String>,
    pattern_severity: &'a HashMap<u64, i32>,
    peer_groups: &'a HashMap<String, PeerGroup>,
}

/// A saved engine state, read back.
#[derive(Debug, Deserialize)]
pub struct EngineState {
    version: u32,
    /// Absent in states saved before each kind of signal had a clock of its own: those
    /// have the one clock below, which every lane takes.
    #[serde(default)]
    lanes: Option<[LaneState; 3]>,
    #[serde(default = "no_watermark")]
    watermark_ms: i64,
    /// Absent in states saved before sources had clocks of their own.
    #[serde(default)]
    sources: SourceClock,
    tracked: HashMap<String, Tracked>,
    #[serde(default)]
    buckets: BTreeMap<i64, IntervalBucket>,
    service_first_ms: HashMap<String, i64>,
    pattern_templates: HashMap<u64, String>,
    #[serde(default)]
    pattern_severity: HashMap<u64, i32>,
    peer_groups: HashMap<String, PeerGroup>,
}

impl EngineState {
    /// Signals with learned state.
    pub fn series(&self) -> usize {
        self.tracked.len()
    }
}

/// A saved state this build cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMismatch {
    /// The state format version the file was written with.
    pub found: u32,
}

impl std::fmt::Display for VersionMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "saved detector state has version {}, this build reads version {STATE_VERSION}",
            self.found
        )
    }
}

impl std::error::Error for VersionMismatch {}

impl Engine {
    /// The learned state, ready to serialise. Take it after [`Engine::drain`]: pending
    /// updates are not part of it.
    pub fn state(&self) -> EngineStateRef<'_> {
        EngineStateRef {
            version: STATE_VERSION,
            lanes: &self.lanes,
            tracked: &self.tracked,
            service_first_ms: &self.service_first_ms,
            pattern_templates: &self.pattern_templates,
            pattern_severity: &self.pattern_severity,
            peer_groups: &self.peer_groups,
        }
    }

    /// Replaces the learned state with a saved one. The current configuration wins: series
    /// beyond `max_series` are dropped (least recently seen first) and each history is
    /// trimmed to the configured length.
    pub fn restore_state(&mut self, state: EngineState) -> Result<(), VersionMismatch> {
        if state.version != STATE_VERSION {
            return Err(VersionMismatch { found: state.version });
        }
        self.lanes = match state.lanes {
            Some(lanes) => lanes,
            None => from_single_clock(state.watermark_ms, state.sources, state.buckets),
        };
        self.tracked = state.tracked;
        while self.tracked.len() > self.cfg.max_series {
            self.evict_oldest();
        }
        let history = self.cfg.series.history;
        for t in self.tracked.values_mut() {
            t.detector.trim_history(history);
        }
        self.service_first_ms = state.service_first_ms;
        self.pattern_templates = state.pattern_templates;
        self.pattern_severity = state.pattern_severity;
        self.peer_groups = state.peer_groups;
        self.new_pattern_owner = self
            .tracked
            .iter()
            .filter(|(_, t)| t.open.is_some())
            .flat_map(|(k, t)| t.new_patterns.iter().map(move |p| (*p, k.clone())))
            .collect();
        Ok(())
    }
}

/// A map with composite keys, written as a list of pairs (JSON object keys are strings).
pub(super) mod as_pairs {
    use std::collections::HashMap;
    use std::hash::Hash;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(in crate::engine) fn serialize<S, K, V>(map: &HashMap<K, V>, s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        K: Serialize,
        V: Serialize,
    {
        s.collect_seq(map.iter())
    }

    pub(in crate::engine) fn deserialize<'de, D, K, V>(d: D) -> Result<HashMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Eq + Hash,
        V: Deserialize<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

/// The fixed-size latency histogram of an interval's RED aggregate, as a list.
pub(super) mod latency_histogram {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::super::LAT_BUCKETS;

    pub(in crate::engine) fn serialize<S: Serializer>(h: &[u32; LAT_BUCKETS], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(h.iter())
    }

    pub(in crate::engine) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Box<[u32; LAT_BUCKETS]>, D::Error> {
        let counts = Vec::<u32>::deserialize(d)?;
        let found = counts.len();
        counts
            .into_boxed_slice()
            .try_into()
            .map_err(|_| D::Error::custom(format!("latency histogram has {found} buckets, expected {LAT_BUCKETS}")))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::engine::{EngineConfig, MetricPoint};

    const MIN: i64 = 60_000;

    /// Feeds minutes `from..to` of a steady metric, a steady operation and a log pattern;
    /// minute `spike_at` is a latency and metric spike.
    fn feed(e: &mut Engine, from: i64, to: i64, spike_at: i64) {
        let labels = BTreeMap::from([("host.name".to_string(), "web-1".to_string())]);
        for m in from..to {
            let t = 1_700_000_000_000 + m * MIN;
            let wobble = ((m * 7919) % 13) as f64 / 13.0;
            let value = if m == spike_at { 95.0 } else { 40.0 + 4.0 * wobble };
            e.observe_metric(&MetricPoint {
                key: "cpu{host.name=web-1}",
                name: "system.cpu.utilization",
                service: Some("web"),
                labels: &labels,
                unit: "%",
                ts_ms: t,
                value,
            });
            for k in 0..10 {
                let slow = if m == spike_at { 2.5 } else { 0.0 };
                e.observe_span("web", "GET /", t + k * 1000, 0.2 + 0.01 * k as f64 + slow, false);
            }
            e.observe_log("web", 7, m == from, "request served in <*> ms", 9, t + 500);
        }
    }

    #[test]
    fn a_restored_engine_carries_on_exactly_where_the_saved_one_was() {
        let mut live = Engine::new(EngineConfig::default());
        feed(&mut live, 0, 300, -1);
        live.drain();
        let saved = serde_json::to_string(&live.state()).expect("serialise");

        let mut restored = Engine::new(EngineConfig::default());
        let state: EngineState = serde_json::from_str(&saved).expect("deserialise");
        assert!(state.series() >= 3, "metric, RED and pattern series saved");
        restored.restore_state(state).expect("same version");

        // Same input afterwards, same findings: nothing learned was lost or changed.
        feed(&mut live, 300, 400, 350);
        feed(&mut restored, 300, 400, 350);
        let (a, b) = (live.drain(), restored.drain());
        assert!(!a.is_empty(), "the spike at minute 350 is found");
        assert_eq!(a, b);

        // A cold engine is still warming up and would see nothing of it.
        let mut cold = Engine::new(EngineConfig::default());
        feed(&mut cold, 300, 400, 350);
        assert!(
            cold.drain().len() < a.len(),
            "the saved state is what made the difference"
        );
    }

    /// `saved` rewritten in the layout of states saved when one clock closed every kind of
    /// signal: one watermark, one source clock, buckets holding all kinds.
    fn as_single_clock(saved: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(saved).expect("json");
        let lanes = v.as_object_mut().and_then(|o| o.remove("lanes")).expect("lanes");
        let lanes = lanes.as_array().expect("three lanes");
        let watermark = lanes.iter().filter_map(|l| l["watermark_ms"].as_i64()).min();
        let mut buckets = serde_json::Map::new();
        for lane in lanes {
            for (start, b) in lane["buckets"].as_object().expect("buckets") {
                let merged = buckets.entry(start.clone()).or_insert_with(|| b.clone());
                for (field, value) in b.as_object().expect("bucket") {
                    let empty = value.as_array().is_some_and(Vec::is_empty)
                        || value.as_object().is_some_and(serde_json::Map::is_empty);
                    if !empty {
                        merged[field] = value.clone();
                    }
                }
            }
        }
        v["watermark_ms"] = watermark.into();
        v["sources"] = lanes[1]["sources"].clone();
        v["buckets"] = buckets.into();
        v.to_string()
    }

    #[test]
    fn a_state_saved_with_one_clock_for_every_kind_carries_on_the_same() {
        let mut live = Engine::new(EngineConfig::default());
        feed(&mut live, 0, 300, -1);
        live.drain();
        let saved = serde_json::to_string(&live.state()).expect("serialise");
        let old = as_single_clock(&saved);
        assert!(!old.contains("\"lanes\""));

        let mut restored = Engine::new(EngineConfig::default());
        restored
            .restore_state(serde_json::from_str(&old).expect("the old layout reads"))
            .expect("same version");
        feed(&mut live, 300, 400, 350);
        feed(&mut restored, 300, 400, 350);
        let (a, b) = (live.drain(), restored.drain());
        assert!(!a.is_empty(), "the spike at minute 350 is found");
        assert_eq!(a, b);
        assert_eq!(restored.stats().late_events, 0, "no interval of the old buckets lost");
    }

    #[test]
    fn a_state_of_another_version_is_refused() {
        let live = Engine::new(EngineConfig::default());
        let saved = serde_json::to_string(&live.state()).expect("serialise");
        let bumped = saved.replacen(
            &format!("\"version\":{STATE_VERSION}"),
            &format!("\"version\":{}", STATE_VERSION + 1),
            1,
        );
        let state: EngineState = serde_json::from_str(&bumped).expect("deserialise");
        let err = Engine::new(EngineConfig::default())
            .restore_state(state)
            .expect_err("refused");
        assert_eq!(err.found, STATE_VERSION + 1);
    }

    #[test]
    fn a_smaller_configuration_wins_over_the_saved_state() {
        let mut live = Engine::new(EngineConfig::default());
        feed(&mut live, 0, 300, -1);
        let saved = serde_json::to_string(&live.state()).expect("serialise");
        let cfg = EngineConfig {
            max_series: 1,
            ..EngineConfig::default()
        };
        let mut small = Engine::new(cfg);
        small
            .restore_state(serde_json::from_str(&saved).expect("deserialise"))
            .expect("same version");
        assert_eq!(small.stats().series, 1);
    }
}
