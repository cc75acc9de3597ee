//! Logs and spans in event-time intervals: event time across sources, the buckets, and new
//! patterns (closing an interval into points is `closing.rs`).

use super::lanes::{Lane, MAX_OPEN_INTERVALS};
use super::*;

impl Engine {
    /// Notes an event of `source` in `lane` and closes what the lane's agreed event time
    /// allows.
    pub(super) fn saw(&mut self, lane: Lane, source: &str, ts_ms: i64) {
        let idle_after = self.cfg.lateness_ms;
        let state = &mut self.lanes[lane as usize];
        state.note_resumption(source, ts_ms, idle_after);
        state.sources.saw(source, ts_ms);
        if self.wall_ms > 0 {
            state.sources.heard(source, self.wall_ms);
        }
        state.heard_wall_ms = self.wall_ms;
        let now = state.sources.event_time();
        self.advance_lane(lane, now);
    }

    /// Moves event time forward to `ts_ms` (the latest event time known to the caller) in
    /// every lane; intervals that ended more than the lateness before it are closed and
    /// scored.
    pub fn advance(&mut self, ts_ms: i64) {
        for lane in Lane::ALL {
            self.advance_lane(lane, ts_ms);
        }
    }

    /// The wall clock, for telling a lane that went quiet from one that is merely behind
    /// (see `engine/lanes.rs`): a lane that had nothing for the allowed lateness of
    /// wall time follows the wall clock from its own latest event. Called with every batch
    /// and during quiet spells alike: a pause shorter than the lateness moves no lane, so a
    /// stalled pipeline (a slow index commit holding back the next batch) closes nothing
    /// early, and where intervals close never depends on how fast a replay ran.
    pub fn set_wall_clock(&mut self, wall_ms: i64) {
        self.wall_ms = wall_ms;
        for lane in Lane::ALL {
            let state = &mut self.lanes[lane as usize];
            if state.heard_wall_ms == 0 {
                // Restored (or not heard from since this engine started): as just heard.
                state.heard_wall_ms = wall_ms;
            }
            // A source that stopped leaves the agreement on event time (`engine/sources.rs`).
            if state.sources.retire_idle(wall_ms, self.cfg.lateness_ms) {
                let now = state.sources.event_time();
                self.advance_lane(lane, now);
            }
            let state = &mut self.lanes[lane as usize];
            if state.heard_wall_ms.saturating_add(self.cfg.lateness_ms) <= wall_ms {
                self.follow_wall_clock(lane, wall_ms);
            }
        }
    }

    /// Moves a quiet lane's event time on at the wall clock's pace from its own latest
    /// event — never to another lane's time: kinds of signal are sent on clocks of their own
    /// (a recording's metrics stamped minutes ahead of its spans), and a lane that is merely
    /// behind would find everything it still has on its way made late.
    fn follow_wall_clock(&mut self, lane: Lane, wall_ms: i64) {
        let state = &self.lanes[lane as usize];
        let latest = state.sources.event_time();
        if latest == i64::MIN {
            return;
        }
        let quiet_for = wall_ms.saturating_sub(state.heard_wall_ms).max(0);
        self.advance_lane(lane, latest.saturating_add(quiet_for).min(wall_ms.max(latest)));
    }

    fn advance_lane(&mut self, lane: Lane, ts_ms: i64) {
        let wm = ts_ms.saturating_sub(self.cfg.lateness_ms);
        let state = &mut self.lanes[lane as usize];
        if wm <= state.watermark_ms {
            return;
        }
        state.watermark_ms = wm;
        self.close_until(lane, |start, open| start + open.cfg.interval_ms <= wm);
    }

    /// Closes the lane's oldest intervals while `due(start)` says so.
    fn close_until(&mut self, lane: Lane, due: impl Fn(i64, &Engine) -> bool) {
        while let Some((&start, _)) = self.lanes[lane as usize].buckets.first_key_value() {
            if !due(start, self) {
                break;
            }
            if let Some(bucket) = self.lanes[lane as usize].buckets.remove(&start) {
                self.close_interval(lane, start, bucket);
            }
        }
    }

    /// The open interval of `lane` holding `ts_ms`; `None` (counted late) when the lane has
    /// closed it already.
    pub(super) fn bucket_for(&mut self, lane: Lane, ts_ms: i64) -> Option<&mut IntervalBucket> {
        let start = ts_ms - ts_ms.rem_euclid(self.cfg.interval_ms);
        let interval = self.cfg.interval_ms;
        if start + interval <= self.lanes[lane as usize].watermark_ms {
            self.stats.late_events += 1;
            return None;
        }
        if !self.lanes[lane as usize].buckets.contains_key(&start) {
            // Every lane that has data and still has this interval open counts it too, so a
            // kind silent here is scored as zeros (see the module docs of `lanes`).
            for other in Lane::ALL {
                let o = &mut self.lanes[other as usize];
                if other != lane && o.has_data() && start + interval > o.watermark_ms {
                    o.buckets.entry(start).or_default();
                }
            }
            if self.lanes[lane as usize].buckets.len() >= MAX_OPEN_INTERVALS {
                let keep = MAX_OPEN_INTERVALS - 1;
                self.close_until(lane, |_, open| open.lanes[lane as usize].buckets.len() > keep);
            }
            for other in Lane::ALL {
                if self.lanes[other as usize].buckets.len() > MAX_OPEN_INTERVALS {
                    self.close_until(other, |_, open| {
                        open.lanes[other as usize].buckets.len() > MAX_OPEN_INTERVALS
                    });
                }
            }
        }
        Some(self.lanes[lane as usize].buckets.entry(start).or_default())
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
        } else if !is_new_pattern && !self.new_pattern_owner.is_empty() {
            self.new_pattern_recurred(pattern_id, severity_number, ts_ms);
        }
        if let Some(b) = self.bucket_for(Lane::Logs, ts_ms) {
            *b.patterns.entry((service.to_string(), pattern_id)).or_default() += 1;
            if severity_number >= ERROR_SEVERITY {
                *b.errors.entry(service.to_string()).or_default() += 1;
            } else {
                b.errors.entry(service.to_string()).or_default();
            }
        }
        self.saw(Lane::Logs, service, ts_ms);
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
        if let Some(b) = self.bucket_for(Lane::Spans, end_ms) {
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
        self.saw(Lane::Spans, service, end_ms);
    }

    /// A service logged a pattern never seen before: opens the service's new-pattern
    /// finding, or adds the pattern to the open one (new patterns arriving close together are
    /// one finding: a deploy, an outage).
    pub(super) fn new_pattern(
        &mut self,
        service: &str,
        pattern_id: u64,
        template: &str,
        severity_number: i32,
        ts_ms: i64,
    ) {
        let key = format!("lognew:{service}");
        let close_after = self.new_pattern_close_ms();
        let reported_above = self.threshold(&key);
        self.make_room_for(&key);
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
            new_patterns: Vec::new(),
            new_pattern_lines: 0,
            new_pattern_burst: (0, 0),
        });
        entry.last_seen_ms = ts_ms;
        // A finding that is still a one-off (info) is over once an interval has passed without
        // its lines: a new pattern after that starts a finding of its own, so a fault's burst
        // is not dated from a background line minutes before it (the demo's error fault
        // opened its incident four minutes early that way).
        let interval = self.cfg.interval_ms;
        let mut ended = None;
        let open = entry.open.take().filter(|a| {
            let takes_in = ts_ms - a.end_ms <= close_after && (a.score >= 0.7 || ts_ms - a.end_ms <= interval);
            if !takes_in {
                ended = Some(a.clone());
            }
            takes_in
        });
        if let Some(mut over) = ended {
            over.open = false;
            for p in entry.new_patterns.drain(..) {
                self.new_pattern_owner.remove(&p);
            }
            if over.score >= reported_above {
                self.updates.push(over);
            }
        }
        let Some(entry) = self.tracked.get_mut(&key) else {
            return;
        };
        let a = match open {
            Some(mut a) => {
                a.end_ms = a.end_ms.max(ts_ms);
                a.observed += 1.0;
                a
            }
            _ => {
                entry.new_patterns.clear();
                entry.new_pattern_lines = 0;
                entry.new_pattern_burst = (0, 0);
                Anomaly {
                    id: anomaly_id(&key, ts_ms),
                    detector: DetectorKind::LogNewPattern,
                    signal: SignalRef {
                        labels: BTreeMap::from([("pattern".to_string(), pattern_id.to_string())]),
                        ..entry.signal.clone()
                    },
                    start_ms: ts_ms,
                    end_ms: ts_ms,
                    score: 0.0,
                    severity: Severity::Info,
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
                }
            }
        };
        if entry.new_patterns.len() < MAX_FINDING_PATTERNS {
            entry.new_patterns.push(pattern_id);
            self.new_pattern_owner.insert(pattern_id, key.clone());
        }
        entry.new_pattern_lines += 1;
        entry.count_burst(ts_ms, self.cfg.interval_ms);
        self.report_new_patterns(&key, a, severity_number, template, true);
    }

    /// A line of a pattern the open new-pattern finding of its service holds: the pattern
    /// keeps coming, which is what makes it more than a one-off.
    fn new_pattern_recurred(&mut self, pattern_id: u64, severity_number: i32, ts_ms: i64) {
        let Some(key) = self.new_pattern_owner.get(&pattern_id).cloned() else {
            return;
        };
        let close_after = self.new_pattern_close_ms();
        let Some(t) = self.tracked.get_mut(&key) else {
            self.new_pattern_owner.remove(&pattern_id);
            return;
        };
        let holds = t.new_patterns.contains(&pattern_id);
        let Some(mut a) = t.open.take().filter(|a| holds && ts_ms - a.end_ms <= close_after) else {
            self.new_pattern_owner.remove(&pattern_id);
            return;
        };
        t.new_pattern_lines += 1;
        t.count_burst(ts_ms, self.cfg.interval_ms);
        t.last_seen_ms = t.last_seen_ms.max(ts_ms);
        // Reported again when the score rises or once per interval (at its first line), not
        // for every line — so what was reported says how long the lines have kept coming.
        a.end_ms = a.end_ms.max(ts_ms);
        let due = t.new_pattern_burst.1 == 1;
        self.report_new_patterns(&key, a, severity_number, "", due);
    }

    /// Scores the new-pattern finding of `key` after a line of it, writes its explanation
    /// and reports it (when `report`, or its score rose) if it clears the signal's threshold.
    fn report_new_patterns(&mut self, key: &str, mut a: Anomaly, severity_number: i32, template: &str, report: bool) {
        let threshold = self.threshold(key);
        let sentence = self.feedback.get(key).and_then(SignalFeedback::sentence);
        let Some(entry) = self.tracked.get_mut(key) else { return };
        // A few lines are events — a request that failed once logs one line in every
        // service on its path, and a service above many others collects their rare failures
        // — and a finding to look at, not a page: the score reaches ERROR's 0.9 (WARN's 0.7)
        // once the new patterns come as often as an error rate needs to start a finding.
        let error = severity_number >= ERROR_SEVERITY;
        let score = match (entry.new_pattern_burst.1 >= MIN_ERRORS, error) {
            (true, true) => 0.9,
            (true, false) => 0.7,
            (false, true) => 0.6,
            (false, false) => 0.5,
        };
        let rose = score > a.score;
        a.score = a.score.max(score);
        a.severity = Severity::from_score(a.score);
        let level = if a.score >= 0.9 || severity_number >= ERROR_SEVERITY {
            "ERROR"
        } else {
            "WARN"
        };
        let n = a.observed as u64;
        let first_template = a
            .signal
            .labels
            .get("pattern")
            .and_then(|p| p.parse::<u64>().ok())
            .and_then(|p| self.pattern_templates.get(&p).cloned())
            .unwrap_or_else(|| truncate(template, 160));
        let lines = entry.new_pattern_lines;
        a.explanation = format!(
            "{service} logged {} never seen before since {} ({lines} {}); the first, at {level} severity: \"{first_template}\"",
            if n == 1 {
                "a log pattern".to_string()
            } else {
                format!("{n} log patterns")
            },
            format_time(a.start_ms, a.end_ms),
            if lines == 1 { "line" } else { "lines" },
            service = a.signal.service.as_deref().unwrap_or("unknown"),
        );
        if let Some(s) = sentence {
            a.explanation = format!("{}. {s}", a.explanation);
        }
        if (report || rose) && a.score >= threshold {
            self.updates.push(a.clone());
        }
        entry.open = Some(a);
    }

    /// A new-pattern finding takes in new patterns, and closes, this long after its latest
    /// line (five intervals).
    fn new_pattern_close_ms(&self) -> i64 {
        self.cfg.interval_ms * 5
    }

    /// Closes the new-pattern findings whose latest line is more than the closing gap before
    /// `end` (event time of the logs lane): an incident holding one can resolve.
    pub(super) fn close_quiet_new_patterns(&mut self, end: i64) {
        let gap = self.new_pattern_close_ms();
        let threshold_of = |e: &Engine, k: &str| e.threshold(k);
        let mut closed = Vec::new();
        for (key, t) in &mut self.tracked {
            if t.kind != DetectorKind::LogNewPattern {
                continue;
            }
            if let Some(mut a) = t.open.take_if(|a| end - a.end_ms > gap) {
                a.open = false;
                for p in t.new_patterns.drain(..) {
                    closed.push((p, None));
                }
                t.new_pattern_lines = 0;
                closed.push((0, Some((key.clone(), a))));
            }
        }
        for (pattern, finding) in closed {
            match finding {
                None => {
                    self.new_pattern_owner.remove(&pattern);
                }
                // Only findings that were reported are closed where anyone can see it.
                Some((key, a)) if a.score >= threshold_of(self, &key) => self.updates.push(a),
                Some(_) => {}
            }
        }
    }
}
