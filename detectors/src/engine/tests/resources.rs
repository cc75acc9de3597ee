//! Resource metrics: peers, sustained regressions, time of day, errors that stop, stopped writes.

use super::*;

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
    // Every interval but the 280th closed (its end plus the allowed lateness); that one
    // stays open, as nothing after it says yet whether the traffic stopped within it.
    let lateness = e.config().lateness_ms;
    e.advance(T0 + 279 * MIN + lateness);
    let during = findings(&mut e);
    let p99: Vec<_> = during
        .values()
        .filter(|a| a.signal.key == "red:checkout:POST /pay:p99")
        .collect();
    assert_eq!(p99.len(), 1, "{p99:#?}");
    assert!(p99[0].open, "still slow, still open (the detector has adapted by now)");
    assert_eq!(p99[0].end_ms, T0 + 278 * MIN);
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
