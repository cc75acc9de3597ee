//! Closing a lane's interval into per-signal points: pattern and error-log rates, request
//! rate, error ratio and latency quantiles — and what an interval holding part of a minute,
//! or nothing at all, says.
//!
//! A lane's interval with no event from any source is a state of the whole lane — no
//! traffic (a night, a load test between runs) or a pipeline that broke — not news about
//! each of its series. It is scored once, on the lane's own volume ("log lines of all
//! services"), which finds a pipeline that stops — a silence longer than any the lane has
//! had, so a nightly lull or a pause between load runs is news once, not every time; the
//! per-series zeros are left out, so a routine line that stops while the rest of its lane
//! goes on is still measured against a band that never learned the lulls as zeros. (On the
//! replayed Nezha day, whose load runs in three-minute episodes, every pattern's band had
//! learned the minutes between episodes as zeros, and a line that stopped at a fault was no
//! news.) A service that stops while others go on is scored as zeros as before.
//!
//! The interval in which a lane stops (nothing from it for the allowed lateness after it)
//! holds part of a minute: every rate in it "drops", and it is not scored either, as the
//! first minute back after a silence is not (`lanes.rs`). A whole lane stopping is still
//! found, a minute later, by its volume.

use super::lanes::Lane;
use super::*;

impl Engine {
    pub(super) fn close_interval(&mut self, lane: Lane, start: i64, mut bucket: IntervalBucket) {
        // An interval's aggregates are stamped with its start, so "since 10:02:00" is when the
        // behaviour began, comparable with per-event findings (new log patterns) inside it.
        let end = start;
        self.close_peers(end, std::mem::take(&mut bucket.peers));
        if lane == Lane::Metrics {
            return;
        }
        if lane == Lane::Logs {
            self.close_quiet_new_patterns(end);
        }
        let silent = !bucket.has_events();
        let longest_silence = self.lanes[lane as usize].note_closed(start, silent, self.cfg.interval_ms);
        if self.lanes[lane as usize].in_resumption_grace(start, self.cfg.interval_ms) {
            // The first minute of a kind of signal coming back: not scored (lanes.rs).
            self.stats.intervals_graced += 1;
            return;
        }
        if !silent && self.lane_silent_for(lane, start + self.cfg.interval_ms, self.cfg.lateness_ms) {
            // The lane's last interval before a silence: part of a minute.
            self.stats.intervals_graced += 1;
            return;
        }
        let volume = match lane {
            Lane::Logs => bucket.patterns.values().sum::<u64>(),
            _ => bucket.red.values().map(|r| r.requests).sum::<u64>(),
        };
        let mut seen = vec![self.score_lane_volume(lane, end, volume, longest_silence)];
        if silent {
            return;
        }
        self.score_bucket(end, bucket, &mut seen);
        // Counts that did not appear are zeros: a pattern or endpoint going silent while the
        // rest of its lane goes on is news.
        seen.sort_unstable();
        let silent: Vec<String> = self
            .tracked
            .iter()
            .filter(|(k, t)| {
                t.interval_series
                    && lane.scores(t.kind)
                    && end - t.last_seen_ms <= self.cfg.zero_fill_intervals * self.cfg.interval_ms
                    && seen.binary_search(k).is_err()
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in silent {
            if let Some(t) = self.tracked.get(&key) {
                let (kind, signal, unit) = (t.kind, t.signal.clone(), t.unit.clone());
                let opens = self.opens(kind, &key, 0, 0.0);
                self.score_inner(&key, kind, move || signal, &unit, end, 0.0, true, false, opens);
            }
        }
    }

    /// Whether the lane has no event in the intervals starting from `from` up to `from +
    /// len` — a silence as long as the one a resumption follows (`lanes.rs`), so a lane with
    /// a quiet minute now and then loses nothing. Asked when closing the interval before
    /// `from`, when the lane's event time is past `from + len`: what is not here by now
    /// would be late.
    fn lane_silent_for(&self, lane: Lane, from: i64, len: i64) -> bool {
        self.lanes[lane as usize]
            .buckets
            .range(from..from.saturating_add(len))
            .all(|(_, b)| !b.has_events())
    }

    /// Scores the lane's volume — log lines a minute, or requests a second, of all services
    /// together — and returns its key. It may open a finding only in a silence longer than
    /// any the lane has had (`longest_silence`): a rise or a dip is told better by the
    /// patterns and operations that make it up, and where traffic comes in runs (a load
    /// test, a nightly lull) its band cannot tell the pauses from a pipeline that broke.
    fn score_lane_volume(&mut self, lane: Lane, end: i64, events: u64, longest_silence: bool) -> String {
        let (key, kind, name, unit, per_value) = match lane {
            Lane::Logs => (
                "lane:logs",
                DetectorKind::LogPatternRate,
                "log lines of all services",
                "/min",
                60_000.0 / self.cfg.interval_ms as f64,
            ),
            _ => (
                "lane:spans",
                DetectorKind::TraceRed,
                "requests of all services",
                "/s",
                1000.0 / self.cfg.interval_ms as f64,
            ),
        };
        let signal = SignalRef {
            key: key.to_string(),
            service: None,
            name: name.to_string(),
            labels: BTreeMap::new(),
        };
        let opens = if longest_silence { Opens::Any } else { Opens::No };
        self.score_inner(
            key,
            kind,
            move || signal,
            unit,
            end,
            events as f64 * per_value,
            false,
            events > 0,
            opens,
        );
        key.to_string()
    }

    /// Scores every pattern, error-log and operation series counted in the interval, adding
    /// their keys to `seen`.
    fn score_bucket(&mut self, end: i64, bucket: IntervalBucket, seen: &mut Vec<String>) {
        let per_sec = 1000.0 / self.cfg.interval_ms as f64;
        for ((service, pattern), n) in bucket.patterns {
            let key = format!("lograte:{service}:{pattern}");
            let template = self.pattern_templates.get(&pattern).cloned().unwrap_or_default();
            let signal = SignalRef {
                key: key.clone(),
                service: Some(service.clone()),
                name: format!("log pattern {pattern} \"{template}\""),
                labels: BTreeMap::from([("pattern".to_string(), pattern.to_string())]),
            };
            self.score_count(key, DetectorKind::LogPatternRate, signal, n, end, seen);
        }
        for (service, n) in bucket.errors {
            let key = format!("logerr:{service}");
            let signal = SignalRef {
                key: key.clone(),
                service: Some(service.clone()),
                name: "error logs".into(),
                labels: BTreeMap::new(),
            };
            self.score_count(key, DetectorKind::LogErrorRate, signal, n, end, seen);
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
                let opens = self.opens(DetectorKind::TraceRed, &key, red.errors, red.requests as f64);
                self.exemplars = match suffix {
                    "errors" => red.failing.clone(),
                    "p50" | "p95" | "p99" => red.slowest.iter().map(|(_, t)| t.clone()).collect(),
                    _ => Vec::new(),
                };
                self.score_inner(
                    &key,
                    DetectorKind::TraceRed,
                    move || signal,
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
    }

    /// Scores `n` lines of a log series in the interval ending at `end` as a rate a minute,
    /// adding its key to `seen`.
    fn score_count(
        &mut self,
        key: String,
        kind: DetectorKind,
        signal: SignalRef,
        n: u64,
        end: i64,
        seen: &mut Vec<String>,
    ) {
        let per_min = 60_000.0 / self.cfg.interval_ms as f64;
        let opens = self.opens(kind, &key, n, 1.0 / per_min);
        self.score_inner(
            &key,
            kind,
            move || signal,
            "/min",
            end,
            n as f64 * per_min,
            true,
            true,
            opens,
        );
        seen.push(key);
    }
}
