//! Engine behaviour on synthetic streams with known anomalies.

use super::*;

const MIN: i64 = 60_000;
const T0: i64 = 1_795_392_000_000; // 2026-11-23 00:00:00 UTC

/// Deterministic jitter in [0, 1).
fn jitter(i: u64) -> f64 {
    let x = i
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(17)
        .wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn engine() -> Engine {
    Engine::new(EngineConfig::default())
}

/// Spans of `checkout POST /pay`: `per_min` a minute for `minutes`, latency from `latency`.
fn pay_traffic(e: &mut Engine, from_min: i64, minutes: i64, latency: impl Fn(i64, u64) -> f64) {
    for m in from_min..from_min + minutes {
        for k in 0..20u64 {
            let ts = T0 + m * MIN + (k as i64) * 3000;
            e.observe_span("checkout", "POST /pay", ts, latency(m, k), false);
        }
    }
}

fn findings(e: &mut Engine) -> BTreeMap<String, Anomaly> {
    // Updates of one anomaly share its id; the last update is its current state.
    e.drain().into_iter().map(|a| (a.id.clone(), a)).collect()
}

#[test]
fn latency_regression_is_found_with_a_checkable_explanation() {
    let mut e = engine();
    pay_traffic(&mut e, 0, 240, |_, k| 0.2 + 0.1 * jitter(k));
    pay_traffic(&mut e, 240, 20, |m, k| {
        0.2 + 0.1 * jitter(k + m as u64) + if k % 4 == 0 { 2.2 } else { 0.0 }
    });
    e.advance(T0 + 262 * MIN);
    let all = findings(&mut e);
    let before: Vec<_> = all.values().filter(|a| a.start_ms < T0 + 240 * MIN).collect();
    assert!(before.is_empty(), "false alarms on steady traffic: {before:#?}");
    let p99 = all
        .values()
        .find(|a| a.signal.key == "red:checkout:POST /pay:p99")
        .expect("p99 regression found");
    assert_eq!(p99.detector, DetectorKind::TraceRed);
    assert_eq!(
        p99.start_ms,
        T0 + 240 * MIN,
        "stamped with the start of the first slow interval"
    );
    assert!(p99.observed > 2.0 && p99.upper < 1.0, "{p99:?}");
    assert!(
        p99.explanation.starts_with("p99 latency of checkout POST /pay was 2."),
        "{}",
        p99.explanation
    );
    assert!(p99.explanation.contains("since 04:00:00"), "{}", p99.explanation);
}

#[test]
fn findings_carry_the_series_around_them_for_charts() {
    let mut e = engine();
    pay_traffic(&mut e, 0, 240, |_, k| 0.2 + 0.1 * jitter(k));
    // 150 slow minutes: longer than the evidence window, which must stay bounded.
    pay_traffic(&mut e, 240, 150, |m, k| {
        0.2 + 0.1 * jitter(k + m as u64) + if k % 4 == 0 { 2.2 } else { 0.0 }
    });
    e.advance(T0 + 392 * MIN);
    let all = findings(&mut e);
    let p99 = all
        .values()
        .find(|a| a.signal.key == "red:checkout:POST /pay:p99")
        .expect("p99 regression found");
    let ev = &p99.evidence;
    let context: Vec<_> = ev.iter().take_while(|p| p.lower.is_none()).collect();
    assert_eq!(context.len(), EVIDENCE_BEFORE, "{ev:?}");
    assert!(
        context
            .iter()
            .all(|p| p.t_ms < p99.start_ms && p.value < 1.0 && !p.anomalous)
    );
    assert_eq!(
        context.last().map(|p| p.t_ms),
        Some(p99.start_ms - MIN),
        "spaced by the step"
    );
    let during = &ev[context.len()..];
    assert_eq!(during.len(), EVIDENCE_DURING, "bounded");
    assert!(during.windows(2).all(|w| w[0].t_ms < w[1].t_ms), "in time order");
    assert!(during.iter().all(|p| p.lower.is_some() && p.upper.is_some()));
    assert_eq!(during[0].t_ms, p99.start_ms, "the onset is kept");
    assert!(during[0].anomalous && during[0].value > during[0].upper.unwrap_or(f64::MAX));
    assert!(
        during.last().is_some_and(|p| p.t_ms >= p99.end_ms),
        "the newest are kept"
    );
}

#[test]
fn error_log_spike_and_pattern_collapse_are_found() {
    let mut e = engine();
    for m in 0..200i64 {
        for k in 0..30 {
            let ts = T0 + m * MIN + k * 2000;
            // Pattern 1 is a steady heartbeat that stops at minute 180.
            if m < 180 {
                e.observe_log("cart", 1, m == 0 && k == 0, "heartbeat ok", 9, ts);
            }
            let erroring = (150..160).contains(&m);
            let sev = if erroring || (m * 30 + k) % 97 == 0 { 17 } else { 9 };
            e.observe_log("cart", 2, m == 0 && k == 0, "request <*> done", sev, ts + 500);
        }
    }
    e.advance(T0 + 200 * MIN);
    let all = findings(&mut e);
    // The earliest error-rate finding is the spike (the return to normal may be one too).
    let err = all
        .values()
        .filter(|a| a.signal.key == "logerr:cart")
        .min_by_key(|a| a.start_ms)
        .expect("error-rate spike");
    assert_eq!(err.start_ms, T0 + 150 * MIN);
    assert!(
        err.explanation.starts_with("error-log rate of cart was 30/min"),
        "{}",
        err.explanation
    );
    let collapse = all
        .values()
        .find(|a| a.signal.key == "lograte:cart:1")
        .expect("heartbeat collapse");
    assert_eq!(collapse.start_ms, T0 + 180 * MIN);
    assert_eq!(collapse.observed, 0.0);
    assert!(
        collapse.explanation.contains("heartbeat ok"),
        "{}",
        collapse.explanation
    );
}

#[test]
fn new_error_patterns_are_findings_after_warm_up_and_grouped() {
    let mut e = engine();
    // During warm-up everything is new: no finding.
    e.observe_log("auth", 10, true, "user <*> logged in", 9, T0);
    e.observe_log("auth", 11, true, "token cache cold", 13, T0 + MIN);
    assert!(e.drain().is_empty());
    // After warm-up: an INFO pattern is not news, an ERROR one is, and a second one
    // shortly after joins the same finding.
    e.observe_log("auth", 12, true, "config reloaded", 9, T0 + 20 * MIN);
    e.observe_log("auth", 13, true, "db connection refused to <*>", 17, T0 + 30 * MIN);
    e.observe_log("auth", 14, true, "retry budget exhausted", 17, T0 + 31 * MIN);
    let all = findings(&mut e);
    assert_eq!(all.len(), 1, "{all:#?}");
    let a = all.values().next().expect("one finding");
    assert_eq!(a.detector, DetectorKind::LogNewPattern);
    assert_eq!(a.observed, 2.0);
    assert_eq!(a.severity, Severity::Critical);
    assert!(
        a.explanation
            .contains("2 log patterns never seen before since 00:30:00"),
        "{}",
        a.explanation
    );
    assert!(
        a.explanation.contains("db connection refused to <*>"),
        "{}",
        a.explanation
    );
}

#[test]
fn noise_verdicts_raise_the_threshold_and_say_so() {
    let mut e = engine();
    assert_eq!(e.feedback("lognew:auth", Verdict::Noise), 0.62);
    assert_eq!(e.feedback("lognew:auth", Verdict::Noise), 0.74);
    // WARN new patterns (score 0.7) are now below the signal's threshold; ERROR ones still fire.
    e.observe_log("auth", 1, true, "a", 9, T0);
    e.observe_log("auth", 2, true, "slow login <*>", 13, T0 + 20 * MIN);
    assert!(e.drain().is_empty());
    e.observe_log("auth", 3, true, "login failed <*>", 17, T0 + 21 * MIN);
    let a = e.drain().pop().expect("error pattern still reported");
    assert!(
        a.explanation.ends_with("Sensitivity lowered after 2 noise verdicts."),
        "{}",
        a.explanation
    );
    // "real" lowers it back.
    assert!(e.feedback("lognew:auth", Verdict::Real) < 0.74);
    let state = e.feedback_state().clone();
    let mut restored = engine();
    restored.restore_feedback(state.clone());
    assert_eq!(restored.feedback_state(), &state);
}

#[test]
fn replay_gives_the_same_findings() {
    let run = || {
        let mut e = engine();
        pay_traffic(&mut e, 0, 200, |m, k| {
            0.1 + 0.05 * jitter(k * 7 + m as u64) + if m >= 180 { 1.0 } else { 0.0 }
        });
        e.advance(T0 + 210 * MIN);
        e.drain()
    };
    let (a, b) = (run(), run());
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

#[test]
fn late_events_are_counted_not_scored_and_series_are_capped() {
    let mut e = Engine::new(EngineConfig {
        max_series: 10,
        ..EngineConfig::default()
    });
    e.observe_span("s", "op", T0 + 10 * MIN, 0.1, false);
    e.observe_span("s", "op", T0, 0.1, false); // ten minutes late
    assert_eq!(e.stats().late_events, 1);
    let labels = BTreeMap::new();
    for i in 0..50 {
        let key = format!("series-{i}");
        e.observe_metric(&MetricPoint {
            key: &key,
            name: "m",
            service: None,
            labels: &labels,
            unit: "",
            ts_ms: T0 + 20 * MIN + i,
            value: 1.0,
        });
    }
    assert!(e.stats().series <= 10);
    assert!(e.stats().series_evicted >= 40);
}

#[test]
fn metric_points_with_bad_values_are_rejected_without_panic() {
    let mut e = engine();
    let labels = BTreeMap::from([("host".to_string(), "a".to_string())]);
    for (i, v) in [1.0, f64::NAN, f64::INFINITY, 2.0, 2.0].into_iter().enumerate() {
        e.observe_metric(&MetricPoint {
            key: "cpu|host=a",
            name: "cpu",
            service: None,
            labels: &labels,
            unit: "",
            ts_ms: T0 + (i as i64 / 4) * MIN, // the last is a duplicate timestamp
            value: v,
        });
    }
    assert_eq!(e.stats().points_rejected, 3);
    assert_eq!(e.stats().points_scored, 2);
}

#[test]
fn the_one_hot_host_among_its_peers_is_found_and_closed_when_it_cools() {
    let mut e = engine();
    for m in 0..80i64 {
        for h in 0..5u64 {
            let host = format!("web-{h}");
            let labels = BTreeMap::from([
                ("host.name".to_string(), host.clone()),
                ("mode".to_string(), "user".into()),
            ]);
            // web-3 runs hot from minute 40 to 60; everyone else, and web-3 before and after,
            // wobbles around 20 %.
            let hot = h == 3 && (40..60).contains(&m);
            let value = if hot {
                92.0
            } else {
                20.0 + 4.0 * jitter(m as u64 * 5 + h)
            };
            let key = format!("cpu|{host}");
            e.observe_metric(&MetricPoint {
                key: &key,
                name: "system.cpu.utilization",
                service: None,
                labels: &labels,
                unit: "%",
                ts_ms: T0 + m * MIN + 1000,
                value,
            });
        }
    }
    e.advance(T0 + 81 * MIN);
    let all = findings(&mut e);
    let peer: Vec<_> = all
        .values()
        .filter(|a| a.detector == DetectorKind::MetricPeer)
        .collect();
    assert_eq!(peer.len(), 1, "{peer:#?}");
    let a = peer[0];
    assert_eq!(a.signal.labels.get("host.name").map(String::as_str), Some("web-3"));
    assert!(!a.open, "closed once web-3 cooled down");
    assert!(
        a.start_ms > T0 + 40 * MIN && a.start_ms <= T0 + 51 * MIN,
        "start {}",
        (a.start_ms - T0) / MIN
    );
    assert!(a.lower >= 20.0 && a.upper <= 24.0, "{a:?}");
    assert!(
        a.explanation
            .starts_with("system.cpu.utilization{host.name=web-3,mode=user} averaged"),
        "{}",
        a.explanation
    );
    assert!(
        a.explanation.contains("while its 4 peers averaged"),
        "{}",
        a.explanation
    );
}

#[test]
fn identical_peers_are_not_outliers() {
    let mut e = engine();
    for m in 0..30i64 {
        for h in 0..4 {
            let host = format!("q-{h}");
            let labels = BTreeMap::from([("host.name".to_string(), host.clone())]);
            let key = format!("queue|{host}");
            e.observe_metric(&MetricPoint {
                key: &key,
                name: "queue.depth",
                service: None,
                labels: &labels,
                unit: "",
                ts_ms: T0 + m * MIN,
                value: 0.0,
            });
        }
    }
    e.advance(T0 + 31 * MIN);
    assert!(
        findings(&mut e)
            .values()
            .all(|a| a.detector != DetectorKind::MetricPeer)
    );
}

#[test]
fn a_sustained_regression_is_one_anomaly_open_until_it_ends() {
    let mut e = engine();
    pay_traffic(&mut e, 0, 240, |_, k| 0.2 + 0.1 * jitter(k));
    pay_traffic(&mut e, 240, 40, |m, k| {
        0.2 + 0.1 * jitter(k + m as u64) + if k % 4 == 0 { 2.2 } else { 0.0 }
    });
    // Every interval up to the 280th closed: its end plus the allowed lateness.
    let lateness = e.config().lateness_ms;
    e.advance(T0 + 280 * MIN + lateness);
    let during = findings(&mut e);
    let p99: Vec<_> = during
        .values()
        .filter(|a| a.signal.key == "red:checkout:POST /pay:p99")
        .collect();
    assert_eq!(p99.len(), 1, "{p99:#?}");
    assert!(p99[0].open, "still slow, still open (the detector has adapted by now)");
    assert_eq!(p99[0].end_ms, T0 + 279 * MIN);
    pay_traffic(&mut e, 280, 20, |_, k| 0.2 + 0.1 * jitter(k));
    e.advance(T0 + 300 * MIN + lateness);
    let after = findings(&mut e);
    let closed = after.get(&p99[0].id).expect("the same anomaly closes");
    assert!(!closed.open);
    assert_eq!(closed.start_ms, T0 + 240 * MIN);
}

#[test]
fn a_missing_morning_ramp_on_ten_second_data_is_a_time_of_day_finding() {
    // Three days of requests per second with a daily cycle, every 10 s; on the fourth day
    // the morning ramp does not come.
    let mut e = engine();
    let labels = BTreeMap::from([("service.name".to_string(), "web".to_string())]);
    let day = 24 * 60 * MIN;
    let daily = |t: i64| 60.0 - 40.0 * ((t - T0) as f64 * std::f64::consts::TAU / day as f64).cos();
    let stuck_from = T0 + 3 * day + 4 * 60 * MIN;
    let mut t = T0;
    let mut k = 0u64;
    while t < stuck_from + 3 * 60 * MIN {
        let base = daily(t.min(stuck_from));
        e.observe_metric(&MetricPoint {
            key: "rps|web",
            name: "http.server.request.rate",
            service: Some("web"),
            labels: &labels,
            unit: "/s",
            ts_ms: t,
            value: base + 4.0 * (jitter(k) - 0.5),
        });
        t += 10_000;
        k += 1;
    }
    e.advance(t);
    let all = findings(&mut e);
    let before: Vec<&Anomaly> = all.values().filter(|a| a.start_ms < stuck_from).collect();
    assert!(before.is_empty(), "nothing before the ramp failed: {before:#?}");
    let found = all
        .values()
        .find(|a| a.explanation.contains("at this time of day"))
        .unwrap_or_else(|| panic!("a time-of-day finding: {all:#?}"));
    assert!(found.start_ms < stuck_from + 60 * MIN, "{found:#?}");
    assert!(
        found.explanation.starts_with("http.server.request.rate") && found.explanation.contains("over five minutes"),
        "{}",
        found.explanation
    );
}

#[test]
fn one_host_with_a_fast_clock_does_not_make_everyone_else_late() {
    let mut e = engine();
    // checkout and payment report on time; the batch host's clock runs ten minutes fast.
    for m in 0..30i64 {
        for k in 0..20i64 {
            let ts = T0 + m * MIN + k * 3000;
            e.observe_span("checkout", "POST /pay", ts, 0.2, false);
            e.observe_span("payment", "charge", ts + 100, 0.1, false);
            e.observe_span("batch", "run", ts + 10 * MIN, 0.5, false);
        }
    }
    assert_eq!(e.stats().late_events, 0, "on-time spans dropped as late");
    // Intervals still close as the on-time sources move on.
    assert!(e.event_time() >= T0 + 29 * MIN, "{}", e.event_time());
    assert!(e.stats().points_scored > 0);
}

#[test]
fn errors_that_stop_are_good_news_not_a_finding() {
    // A warning pattern ten times a minute and a heartbeat, both of which stop at minute
    // 180 while requests go on. The heartbeat going silent is news; the warnings going
    // silent are not.
    let mut e = engine();
    for m in 0..200i64 {
        for k in 0..10 {
            let ts = T0 + m * MIN + k * 6000;
            e.observe_log("cart", 2, m == 0 && k == 0, "request <*> done", 9, ts + 100);
            if m < 180 {
                e.observe_log("cart", 1, m == 0 && k == 0, "heartbeat ok", 9, ts);
                e.observe_log("cart", 3, m == 0 && k == 0, "upstream <*> failed", 13, ts + 300);
            }
        }
    }
    e.advance(T0 + 200 * MIN);
    let all = findings(&mut e);
    assert!(
        all.values().any(|a| a.signal.key == "lograte:cart:1"),
        "the heartbeat's silence is a finding"
    );
    let quiet: Vec<_> = all.values().filter(|a| a.signal.key == "lograte:cart:3").collect();
    assert!(quiet.is_empty(), "warnings that stopped became a finding: {quiet:#?}");
}

#[test]
fn a_batch_host_whose_disk_writes_stop_is_found_with_a_checkable_explanation() {
    // Disk writes of one host: zero, with a burst every 10–29 minutes, for 90 bursts (just
    // over a day); then none for four hours after the last.
    let mut e = engine();
    let labels = BTreeMap::from([("host.name".to_string(), "batch-1".to_string())]);
    let mut m = 0i64;
    let mut silent_from = 0;
    let point = |e: &mut Engine, m: i64, value: f64| {
        e.observe_metric(&MetricPoint {
            key: "disk|batch-1",
            name: "system.disk.io",
            service: None,
            labels: &labels,
            unit: "By",
            ts_ms: T0 + m * MIN,
            value,
        });
    };
    for burst in 0..90u64 {
        point(&mut e, m, 2e8 + 3e8 * jitter(burst));
        m += 1;
        silent_from = m;
        for _ in 0..9 + (jitter(burst + 1000) * 20.0) as i64 {
            point(&mut e, m, 0.0);
            m += 1;
        }
    }
    while m < silent_from + 240 {
        point(&mut e, m, 0.0);
        m += 1;
    }
    e.advance(T0 + m * MIN);
    let all = findings(&mut e);
    let quiet: Vec<_> = all
        .values()
        .filter(|a| a.explanation.contains("longer than in any earlier quiet spell"))
        .collect();
    assert_eq!(
        quiet.len(),
        1,
        "{:#?}",
        all.values().map(|a| &a.explanation).collect::<Vec<_>>()
    );
    let a = quiet[0];
    assert_eq!(a.signal.labels.get("host.name").map(String::as_str), Some("batch-1"));
    // The finding starts where the silence did; it is found once the silence outlasts the
    // longest earlier spell (≤ 28 minutes) and three mean ones (about 18 each).
    assert_eq!(a.start_ms, T0 + silent_from * MIN);
    let found_after = (a.end_ms - a.start_ms) / MIN;
    assert!(
        (34..90).contains(&found_after),
        "found {found_after} minutes into the silence"
    );
    let since = format!("{:02}:{:02}:00", silent_from % 1440 / 60, silent_from % 60);
    assert_eq!(
        a.explanation,
        format!(
            "system.disk.io{{host.name=batch-1}} has stayed at its floor of 0 By since {since}, longer than in \
             any earlier quiet spell"
        )
    );
}

/// Spans of checkout and payment, and a heartbeat log line of cart, for minute `m`.
fn lane_traffic(e: &mut Engine, m: i64, logs: bool, spans: bool) {
    for k in 0..10i64 {
        let ts = T0 + m * MIN + k * 6000;
        if spans {
            e.observe_span("checkout", "POST /pay", ts, 0.2, false);
            e.observe_span("payment", "charge", ts + 100, 0.1, false);
        }
        if logs {
            e.observe_log("cart", 1, m == 0 && k == 0, "heartbeat ok", 9, ts + 200);
            e.observe_log("orders", 2, m == 0 && k == 0, "order <*> placed", 9, ts + 300);
        }
    }
}

#[test]
fn logs_held_back_behind_spans_are_counted_not_dropped() {
    // A log pipeline that batches for half an hour while spans flow on time: each kind has
    // its own clock, so the logs arrive behind the spans but not late.
    let mut e = engine();
    for m in 0..30 {
        lane_traffic(&mut e, m, true, true);
    }
    for block in 1..4i64 {
        for m in block * 30..block * 30 + 30 {
            lane_traffic(&mut e, m, false, true);
        }
        for m in block * 30..block * 30 + 30 {
            lane_traffic(&mut e, m, true, false);
        }
    }
    assert_eq!(e.stats().late_events, 0, "held-back logs dropped as late");
    let log_rates = e.tracked.get("lograte:cart:1").map(|t| t.last_seen_ms);
    assert_eq!(
        log_rates,
        Some(T0 + 116 * MIN),
        "log intervals closed by the logs' own clock (lateness: 2 min)"
    );
}

#[test]
fn a_kind_that_goes_silent_everywhere_is_scored_as_zeros_once_idle() {
    // Logs stop everywhere at minute 180 while spans go on; the wall clock runs with the
    // data (a live system). The log lane is idle after the allowed lateness of wall time,
    // is brought up to the spans, and the heartbeat's silence becomes a finding.
    let mut e = engine();
    for m in 0..240 {
        e.set_wall_clock(T0 + m * MIN);
        lane_traffic(&mut e, m, m < 180, true);
    }
    let all = findings(&mut e);
    let silence = all
        .values()
        .find(|a| a.signal.key == "lograte:cart:1")
        .unwrap_or_else(|| panic!("the heartbeat's silence: {all:#?}"));
    assert!(
        (T0 + 180 * MIN..T0 + 190 * MIN).contains(&silence.start_ms),
        "{silence:#?}"
    );
}

#[test]
fn a_lane_far_behind_keeps_a_bounded_number_of_intervals_open() {
    // No wall clock (a replay): a lane that stopped is never idle, but its open intervals
    // are bounded.
    let mut e = engine();
    for m in 0..10 {
        lane_traffic(&mut e, m, true, true);
    }
    for m in 10..(lanes::MAX_OPEN_INTERVALS as i64 + 200) {
        lane_traffic(&mut e, m, false, true);
    }
    let logs = &e.lanes[lanes::Lane::Logs as usize];
    assert_eq!(logs.buckets.len(), lanes::MAX_OPEN_INTERVALS);
    assert_eq!(e.stats().late_events, 0);
}

#[test]
fn a_quiet_spell_moves_each_lane_from_its_own_latest_event() {
    let wall = T0 + 1000 * MIN;
    let mut e = engine();
    e.set_wall_clock(wall);
    for m in 0..60 {
        lane_traffic(&mut e, m, m < 30, true);
    }
    // A second with no data at all: the logs, half an hour behind, stay behind…
    e.advance_quiet(wall + 1000);
    for m in 30..60 {
        lane_traffic(&mut e, m, true, false);
    }
    assert_eq!(e.stats().late_events, 0, "the quiet spell made the held-back logs late");
    // …and a long quiet spell closes every lane's last intervals.
    e.advance_quiet(wall + 10 * MIN);
    for key in ["lograte:cart:1", "red:checkout:POST /pay:rate"] {
        let last = e.tracked.get(key).map(|t| t.last_seen_ms);
        assert_eq!(last, Some(T0 + 59 * MIN), "{key}");
    }
}
