//! Engine behaviour on synthetic streams with known anomalies.

use super::*;

mod errors;
mod event_time;
mod resources;

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
    // shortly after joins the same finding. Two lines are still a one-off: info.
    e.observe_log("auth", 12, true, "config reloaded", 9, T0 + 20 * MIN);
    e.observe_log("auth", 13, true, "db connection refused to <*>", 17, T0 + 30 * MIN);
    e.observe_log("auth", 14, true, "retry budget exhausted", 17, T0 + 31 * MIN);
    let all = findings(&mut e);
    assert_eq!(all.len(), 1, "{all:#?}");
    let a = all.values().next().expect("one finding");
    assert_eq!(a.detector, DetectorKind::LogNewPattern);
    assert_eq!(a.observed, 2.0);
    assert_eq!(a.severity, Severity::Info, "two lines are a one-off");
    // The first pattern keeps coming: at five lines in a minute, as many as an error rate
    // needs to start a finding, the finding is critical.
    for k in 1..=3 {
        e.observe_log(
            "auth",
            13,
            false,
            "db connection refused to <*>",
            17,
            T0 + 31 * MIN + k * 5_000,
        );
    }
    assert!(e.drain().is_empty(), "four lines in the minute: not yet");
    e.observe_log(
        "auth",
        13,
        false,
        "db connection refused to <*>",
        17,
        T0 + 31 * MIN + 20_000,
    );
    let a = e.drain().pop().expect("the finding, raised");
    assert_eq!(a.severity, Severity::Critical);
    assert!(a.open);
    assert!(
        a.explanation
            .contains("2 log patterns never seen before since 00:30:00 (6 lines)"),
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
fn a_new_pattern_that_keeps_coming_is_reported_as_still_coming() {
    let mut e = engine();
    e.observe_log("auth", 1, true, "user <*> logged in", 9, T0);
    // Past warm-up, a new error line every ten seconds for ten minutes.
    for k in 0..60 {
        e.observe_log(
            "auth",
            2,
            k == 0,
            "upstream db failed on <*>",
            17,
            T0 + 20 * MIN + k * 10_000,
        );
    }
    let latest = e.drain().pop().expect("the finding, reported");
    assert!(latest.open);
    // Reported at least once a minute: the last report is in the last minute of lines (the
    // finding looked over 10 s after it began when only a minute-long gap re-reported it).
    assert!(
        latest.end_ms >= T0 + 29 * MIN,
        "last reported end {} s after the first line",
        (latest.end_ms - T0 - 20 * MIN) / 1000
    );
    assert!(latest.explanation.contains("(55 lines)"), "{}", latest.explanation);
}

#[test]
fn a_one_off_error_line_is_info_and_the_finding_closes() {
    let mut e = engine();
    e.observe_log("auth", 1, true, "user <*> logged in", 9, T0);
    // Past warm-up, one failed request: one new ERROR line, never again.
    e.observe_log("auth", 2, true, "upstream db failed on <*>", 17, T0 + 20 * MIN);
    let a = e.drain().pop().expect("reported as a finding to look at");
    assert_eq!(a.severity, Severity::Info);
    assert!(a.explanation.contains("(1 line)"), "{}", a.explanation);
    // Other lines go on; five quiet minutes later the finding closes (an incident holding
    // it may resolve), and a recurrence after that is an ordinary line.
    for m in 21..30 {
        e.observe_log("auth", 1, false, "user <*> logged in", 9, T0 + m * MIN);
    }
    let closed = e.drain().into_iter().find(|x| x.id == a.id).expect("closed");
    assert!(!closed.open);
    e.observe_log("auth", 2, false, "upstream db failed on <*>", 17, T0 + 30 * MIN);
    assert!(e.drain().iter().all(|x| x.detector != DetectorKind::LogNewPattern));
}

/// A background one-off four minutes before a fault's burst is over: the burst is a finding
/// of its own, dated by its own first line (it used to extend the one-off and date the
/// demo's error incident four minutes before the fault).
#[test]
fn a_burst_after_a_one_off_is_dated_by_itself() {
    let mut e = engine();
    e.observe_log("pay", 1, true, "payment accepted", 9, T0);
    e.observe_log("pay", 2, true, "upstream db failed on <*>", 17, T0 + 20 * MIN);
    let one_off = e.drain().pop().expect("the one-off, as info");
    assert_eq!(one_off.severity, Severity::Info);
    let burst = T0 + 24 * MIN;
    for k in 0..5 {
        e.observe_log(
            "pay",
            3,
            k == 0,
            "error handling <*>: internal error",
            17,
            burst + k * 1_000,
        );
    }
    let updates = e.drain();
    let closed = updates.iter().find(|a| a.id == one_off.id).expect("the one-off closed");
    assert!(!closed.open);
    let fault = updates.iter().rev().find(|a| a.id != one_off.id).expect("the burst");
    assert_eq!(fault.start_ms, burst);
    assert_eq!(fault.severity, Severity::Critical);
}

#[test]
fn noise_verdicts_raise_the_threshold_and_say_so() {
    let mut e = engine();
    assert_eq!(e.feedback("lognew:auth", Verdict::Noise), 0.62);
    assert_eq!(e.feedback("lognew:auth", Verdict::Noise), 0.74);
    // WARN new patterns (score 0.7 once coming five a minute) are now below the signal's threshold;
    // ERROR ones (0.9) still fire.
    e.observe_log("auth", 1, true, "a", 9, T0);
    for k in 0..5 {
        e.observe_log("auth", 2, k == 0, "slow login <*>", 13, T0 + 20 * MIN + k);
    }
    assert!(e.drain().is_empty());
    for k in 0..5 {
        e.observe_log("auth", 3, k == 0, "login failed <*>", 17, T0 + 40 * MIN + k);
    }
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
    // New-pattern findings are held to the cap as well (they once went past it).
    for i in 0..20u64 {
        let service = format!("svc-{i}");
        e.observe_log(&service, 1, true, "routine", 9, T0 + 20 * MIN);
        e.observe_log(&service, 100 + i, true, "disk <*> failed", 17, T0 + 40 * MIN + i as i64);
    }
    assert!(e.stats().series <= 10, "{} series", e.stats().series);
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
fn updates_come_out_in_an_order_that_depends_only_on_the_findings() {
    // Forty operations break in the same minute: the engine finds them walking hash maps,
    // whose order changes from one process (one Engine) to the next; what it hands out must
    // not. Two engines fed the same data must hand out the same sequence.
    let run = || {
        let mut e = engine();
        for m in 0..200i64 {
            for op in 0..40u64 {
                for k in 0..10u64 {
                    let ts = T0 + m * MIN + (k as i64) * 6000;
                    let slow = if m >= 180 && k % 2 == 0 { 3.0 } else { 0.0 };
                    e.observe_span("checkout", &format!("op{op}"), ts, 0.2 + 0.1 * jitter(k) + slow, false);
                }
            }
        }
        e.advance(T0 + 205 * MIN);
        e.drain().into_iter().map(|a| (a.id, a.end_ms)).collect::<Vec<_>>()
    };
    let first = run();
    assert!(first.len() > 40, "the slow minutes made findings: {}", first.len());
    for _ in 0..3 {
        assert_eq!(run(), first);
    }
}

/// A service whose partition moved to another worker stops here: forgotten, its silence is
/// no finding, and a finding it had open is closed.
#[test]
fn a_forgotten_service_is_not_scored_for_its_silence_and_its_findings_close() {
    let run = |forget: bool| {
        let mut e = engine();
        let mut forgotten = 0;
        for m in 0..240i64 {
            if forget && m == 180 {
                forgotten = e.forget_services(&|s| s == "web");
            }
            for k in 0..30 {
                let ts = T0 + m * MIN + k * 2000;
                // Two services go on (event time is the newest time two sources agree on).
                e.observe_log("cart", 1, m == 0 && k == 0, "cart heartbeat", 9, ts);
                e.observe_log("api", 3, m == 0 && k == 0, "api heartbeat", 9, ts + 300);
                if m < 180 {
                    e.observe_log("web", 2, m == 0 && k == 0, "web heartbeat", 9, ts + 500);
                    if (170..180).contains(&m) {
                        e.observe_log("web", 4, m == 170 && k == 0, "web upstream failed", 17, ts + 700);
                    }
                }
            }
        }
        e.advance(T0 + 240 * MIN);
        (findings(&mut e), forgotten)
    };
    let (kept, _) = run(false);
    assert!(
        kept.values()
            .any(|a| a.signal.service.as_deref() == Some("web") && a.start_ms >= T0 + 180 * MIN),
        "without forgetting, web's silence is scored: {:?}",
        kept.values().map(|a| (&a.signal.key, a.start_ms)).collect::<Vec<_>>()
    );
    let (moved, forgotten) = run(true);
    assert!(forgotten > 0);
    let web: Vec<&Anomaly> = moved
        .values()
        .filter(|a| a.signal.service.as_deref() == Some("web"))
        .collect();
    assert!(web.iter().all(|a| a.start_ms < T0 + 180 * MIN), "{web:?}");
    assert!(
        web.iter().any(|a| a.signal.key == "logerr:web"),
        "the error spike was found before the move"
    );
    assert!(web.iter().all(|a| !a.open), "web's findings are closed: {web:?}");
}
