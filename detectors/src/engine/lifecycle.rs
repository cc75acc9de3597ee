//! From scored points to anomalies: which signals may open one, scoring through the
//! per-series detectors, opening, extending and closing findings, and the bound on tracked
//! signals.

use super::*;

impl Engine {
    /// Which points of the interval signal `key` may open a finding, with `errors` errors in
    /// the interval. Fewer errors than usual is good news: error rates and ratios open only
    /// when they rise, and only on enough errors (one error is thin evidence); so does the
    /// rate of a log pattern whose lines are warnings or errors.
    /// Which points of `key` may open a finding, for an interval holding `events` of it
    /// (`per_value` of them per unit of its value).
    pub(super) fn opens(&self, kind: DetectorKind, key: &str, events: u64, per_value: f64) -> Opens {
        let error_signal =
            kind == DetectorKind::LogErrorRate || (kind == DetectorKind::TraceRed && key.ends_with(":errors"));
        if error_signal {
            return if events >= MIN_ERRORS {
                Opens::Rise { events, per_value }
            } else {
                Opens::No
            };
        }
        // Keys are `lograte:{service}:{pattern}`.
        let warning_pattern = kind == DetectorKind::LogPatternRate
            && key
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u64>().ok())
                .and_then(|p| self.pattern_severity.get(&p))
                .is_some_and(|&s| s >= WARN_SEVERITY);
        if warning_pattern {
            Opens::Rise { events, per_value }
        } else {
            Opens::Any
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn score(
        &mut self,
        key: &str,
        kind: DetectorKind,
        signal: impl FnOnce() -> SignalRef,
        unit: &str,
        ts_ms: i64,
        value: f64,
        interval_series: bool,
    ) {
        self.score_inner(key, kind, signal, unit, ts_ms, value, interval_series, true, Opens::Any);
    }

    /// `signal` names the series the first time `key` is seen (it is made only then: a
    /// metric's labels would otherwise be copied at every point).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn score_inner(
        &mut self,
        key: &str,
        kind: DetectorKind,
        signal: impl FnOnce() -> SignalRef,
        unit: &str,
        ts_ms: i64,
        value: f64,
        interval_series: bool,
        seen: bool,
        opens: Opens,
    ) {
        if !self.tracked.contains_key(key) {
            self.make_room_for(key);
            self.tracked.insert(
                key.to_string(),
                Tracked {
                    detector: SeriesDetector::new(),
                    kind,
                    signal: signal(),
                    unit: unit.to_string(),
                    last_seen_ms: ts_ms,
                    open: None,
                    peak_signal: Signal::Normal,
                    onset_band: None,
                    last_strong_ms: i64::MIN,
                    quiet: 0,
                    interval_series,
                    new_patterns: Vec::new(),
                    new_pattern_lines: 0,
                    new_pattern_burst: (0, 0),
                },
            );
        }
        let threshold = self.threshold(key);
        let sentence = self.feedback.get(key).and_then(SignalFeedback::sentence);
        let Some(t) = self.tracked.get_mut(key) else { return };
        if seen {
            t.last_seen_ms = ts_ms;
        }
        // A count still learning its band is judged by chance alone (chance.rs): a zero
        // where it came often every time (only interval signals are zero-filled), or more
        // errors than its last intervals make likely (only they open on a count's rise).
        // Without it, a series that gets a point every few minutes stays blind for hours.
        let cold = if !t.detector.has_learned() {
            let recent = t.detector.recent_observed(chance::ROUTINE_INTERVALS);
            match opens {
                // Enough events first, as an error finding needs (a warning pattern's rate
                // opens on a rise without that floor once its band is learned).
                Opens::Rise { events, per_value } if events >= MIN_ERRORS => {
                    chance::rose(&recent, events, per_value).map(|b| (b, per_value))
                }
                _ if !seen && value == 0.0 => events_per_value(&t.unit, self.cfg.interval_ms)
                    .and_then(|per_value| chance::stopped(&recent, per_value).map(|b| (b, per_value))),
                _ => None,
            }
        } else {
            None
        };
        let cfg = self.series_cfgs.of(t.kind, &t.unit);
        let mut point = match t.detector.observe(cfg, ts_ms, value) {
            Ok(p) => p,
            Err(_) => {
                self.stats.points_rejected += 1;
                return;
            }
        };
        if let Some((band, per_value)) = cold
            && point.score < 1.0 - band.chance
        {
            let sigma = (band.median * per_value).max(1.0).sqrt();
            point = PointScore {
                expected: band.median,
                lower: band.lowest,
                upper: band.highest,
                z: (value - band.median) * per_value / sigma,
                score: 1.0 - band.chance,
                signal: Signal::Breakout,
                since_ms: None,
                ..point
            };
        }
        self.stats.points_scored += 1;
        self.apply_point(key, point, threshold, sentence, opens);
    }

    /// Opens, extends or closes the anomaly of `key` with one scored point.
    pub(super) fn apply_point(
        &mut self,
        key: &str,
        point: PointScore,
        threshold: f64,
        sentence: Option<String>,
        opens: Opens,
    ) {
        let ts_ms = point.timestamp_ms;
        let Some(t) = self.tracked.get_mut(key) else { return };
        let non_negative = matches!(t.unit.as_str(), "/s" | "/min" | "s" | "ratio");
        let may_open = match opens {
            Opens::Any => true,
            Opens::Rise { events, per_value } => {
                point.value > point.expected && chance::is_rare(events, point.upper.max(0.0) * per_value)
            }
            Opens::No => false,
        };
        // `may_open` is false when the evidence is too thin to start a finding (one error
        // in an interval), though it may still extend one.
        let strong = point.score >= threshold && (may_open || t.open.is_some());
        if t.open.is_none() && !strong {
            // A firing that opens nothing (the count test called it chance, or feedback
            // raised the signal's threshold above it) has no finding to keep one: nothing for
            // the series' cooldown to damp.
            t.detector.dismiss_firing(self.series_cfgs.of(t.kind, &t.unit));
        }
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
                // The series' cooldown guarded this finding; it does not outlive it (a
                // service that fails again an hour later scored half, never a clear finding).
                t.detector.end_cooldown();
                self.updates.push(a);
            } else {
                t.open = Some(a);
            }
        }
    }

    /// Before `key` is tracked: at the cap (`max_series`), the longest silent signal goes.
    /// Every kind of tracked signal comes in through here (new-pattern findings once did not,
    /// and went past the cap).
    pub(super) fn make_room_for(&mut self, key: &str) {
        if !self.tracked.contains_key(key) && self.tracked.len() >= self.cfg.max_series {
            self.evict_oldest();
        }
    }

    /// Forgets what was learned of the services `doomed` names: their signals, first
    /// sightings and new-pattern holders; their open findings are closed (an update each).
    /// A cluster worker that gave up their partition would otherwise score their silence as
    /// zeros for an hour — rates "falling to zero" for services that merely moved to another
    /// worker — and judge their history against stale bands were the partition to come back.
    /// Returns how many signals went.
    pub fn forget_services(&mut self, doomed: &dyn Fn(&str) -> bool) -> usize {
        let keys: Vec<String> = self
            .tracked
            .iter()
            .filter(|(_, t)| t.signal.service.as_deref().is_some_and(doomed))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &keys {
            if let Some(mut a) = self.tracked.remove(key).and_then(|t| t.open) {
                a.open = false;
                self.updates.push(a);
            }
        }
        let tracked = &self.tracked;
        self.new_pattern_owner.retain(|_, key| tracked.contains_key(key));
        self.service_first_ms.retain(|service, _| !doomed(service));
        keys.len()
    }

    pub(super) fn evict_oldest(&mut self) {
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

/// Events one unit of a count signal's value stands for in an interval of `interval_ms`
/// (`None` for what is not a count: latencies, ratios, gauges).
fn events_per_value(unit: &str, interval_ms: i64) -> Option<f64> {
    match unit {
        "/min" => Some(interval_ms as f64 / 60_000.0),
        "/s" => Some(interval_ms as f64 / 1000.0),
        _ => None,
    }
}
