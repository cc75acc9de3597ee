//! The alerting state machine against a fake clock: every timer is driven by `tick(now)`.

use super::*;
use crate::config::{EscalationStepConfig, InhibitRuleConfig, PersonConfig, ReceiverConfig, RouteConfig};
use crate::history::DeliveryOutcome;

const S: i64 = 1000;
const T0: i64 = 1_795_392_000_000;

fn receivers(names: &[&str]) -> Vec<ReceiverConfig> {
    names
        .iter()
        .map(|n| ReceiverConfig {
            name: n.to_string(),
            ..ReceiverConfig::default()
        })
        .collect()
}

fn config() -> AlertingConfig {
    AlertingConfig {
        route: RouteConfig {
            receiver: Some("team".into()),
            group_by: Some(vec!["alertname".into(), "service".into()]),
            group_wait_secs: Some(30),
            group_interval_secs: Some(300),
            repeat_interval_secs: Some(3600),
            routes: vec![RouteConfig {
                matchers: vec![r#"severity="page""#.into()],
                receiver: Some("oncall".into()),
                escalation: Some("page".into()),
                ..RouteConfig::default()
            }],
            ..RouteConfig::default()
        },
        receivers: receivers(&["team", "oncall", "secondary", "manager"]),
        inhibit_rules: vec![InhibitRuleConfig {
            source_matchers: vec![r#"alertname="NodeDown""#.into()],
            target_matchers: vec![r#"severity=~"warning|page""#.into()],
            equal: vec!["host".into()],
        }],
        escalation_policies: vec![EscalationPolicyConfig {
            name: "page".into(),
            steps: vec![
                EscalationStepConfig {
                    wait_secs: 300,
                    receivers: vec!["secondary".into()],
                    schedules: Vec::new(),
                },
                EscalationStepConfig {
                    wait_secs: 600,
                    receivers: vec!["manager".into()],
                    schedules: Vec::new(),
                },
            ],
            repeat: 0,
        }],
        resolve_timeout_secs: 300,
        people: Vec::new(),
    }
}

fn alert(pairs: &[(&str, &str)]) -> AlertInput {
    AlertInput {
        labels: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        annotations: [("summary".to_string(), "something broke".to_string())].into(),
        ..AlertInput::default()
    }
}

/// Takes due notifications as delivered; returns (receiver, reason, alert count).
fn deliver(a: &mut Alerting, now: i64) -> Vec<(String, NotifyReason, usize)> {
    let due = a.due(now);
    for n in &due {
        a.delivered(&n.id, "200 OK", now);
    }
    due.into_iter()
        .map(|n| (n.receiver, n.reason, n.alerts.len()))
        .collect()
}

fn run(a: &mut Alerting, now: i64) -> Vec<(String, NotifyReason, usize)> {
    a.tick(now);
    deliver(a, now)
}

#[test]
fn repeats_of_one_alert_notify_once() {
    let mut a = Alerting::new(config()).expect("config");
    let cpu = alert(&[("alertname", "HighCPU"), ("service", "cart"), ("severity", "warning")]);
    let mut ids = BTreeSet::new();
    for i in 0..50 {
        ids.insert(a.upsert(cpu.clone(), T0 + i * S / 10));
    }
    assert_eq!(ids.len(), 1, "same labels, same alert");
    let mut sent = Vec::new();
    for t in (0..1800).step_by(10) {
        sent.extend(run(&mut a, T0 + t * S));
        a.upsert(cpu.clone(), T0 + t * S);
    }
    assert_eq!(sent, vec![("team".to_string(), NotifyReason::Initial, 1)]);
    let stored = a.alert(&ids.into_iter().next().expect("id"), T0).expect("stored");
    assert_eq!(stored.received, 50 + 180);
}

#[test]
fn group_wait_batches_then_group_interval_then_repeat() {
    // Long resolve timeout: the alerts stay firing without being re-sent in between.
    let mut a = Alerting::new(AlertingConfig {
        resolve_timeout_secs: 86_400,
        ..config()
    })
    .expect("config");
    a.upsert(alert(&[("alertname", "Err"), ("service", "cart"), ("pod", "a")]), T0);
    assert!(run(&mut a, T0 + 29 * S).is_empty(), "group_wait not over");
    a.upsert(
        alert(&[("alertname", "Err"), ("service", "cart"), ("pod", "b")]),
        T0 + 10 * S,
    );
    assert_eq!(
        run(&mut a, T0 + 30 * S),
        [("team".into(), NotifyReason::Initial, 2)],
        "one message, two alerts"
    );
    // A third alert joins; it waits for group_interval, not group_wait.
    a.upsert(
        alert(&[("alertname", "Err"), ("service", "cart"), ("pod", "c")]),
        T0 + 40 * S,
    );
    assert!(run(&mut a, T0 + 100 * S).is_empty());
    assert_eq!(run(&mut a, T0 + 330 * S), [("team".into(), NotifyReason::Update, 3)]);
    // Unchanged: nothing until repeat_interval (keep the alerts alive meanwhile).
    let mut sent = Vec::new();
    for t in (340..=3930).step_by(10) {
        for pod in ["a", "b", "c"] {
            a.upsert(
                alert(&[("alertname", "Err"), ("service", "cart"), ("pod", pod)]),
                T0 + t * S,
            );
        }
        sent.extend(run(&mut a, T0 + t * S));
    }
    assert_eq!(sent, [("team".into(), NotifyReason::Repeat, 3)]);
}

#[test]
fn resolve_is_announced_only_after_firing_was() {
    let mut a = Alerting::new(config()).expect("config");
    let mut x = alert(&[("alertname", "Disk"), ("service", "db")]);
    a.upsert(x.clone(), T0);
    assert_eq!(run(&mut a, T0 + 30 * S).len(), 1);
    x.ends_at_ms = Some(T0 + 60 * S);
    a.upsert(x.clone(), T0 + 60 * S);
    assert_eq!(run(&mut a, T0 + 330 * S), [("team".into(), NotifyReason::Resolved, 1)]);
    assert!(a.groups().is_empty(), "an all-resolved group ends");
    // Fires and resolves within group_wait: the receiver never hears of it.
    let mut y = alert(&[("alertname", "Blip"), ("service", "db")]);
    a.upsert(y.clone(), T0 + 1000 * S);
    y.ends_at_ms = Some(T0 + 1010 * S);
    a.upsert(y, T0 + 1010 * S);
    assert!(run(&mut a, T0 + 1030 * S).is_empty());
}

#[test]
fn alerts_nobody_resends_resolve_after_the_timeout() {
    let mut a = Alerting::new(config()).expect("config");
    let id = a.upsert(alert(&[("alertname", "Stale"), ("service", "x")]), T0);
    run(&mut a, T0 + 30 * S);
    a.tick(T0 + 299 * S);
    assert_eq!(a.alert(&id, T0).expect("alert").state, AlertState::Firing);
    a.tick(T0 + 300 * S);
    assert_eq!(a.alert(&id, T0).expect("alert").state, AlertState::Resolved);
}

#[test]
fn silences_mute_and_expiring_one_lets_the_alert_through() {
    let mut a = Alerting::new(config()).expect("config");
    let silence = Silence {
        id: String::new(),
        matchers: crate::matcher::parse_matchers(r#"{service=~"cart|checkout"}"#).expect("matchers"),
        starts_at_ms: T0,
        ends_at_ms: T0 + 3600 * S,
        created_by: "ana".into(),
        comment: "deploy".into(),
        created_at_ms: 0,
    };
    let sid = a.add_silence(silence, T0).expect("silence");
    let id = a.upsert(alert(&[("alertname", "Err"), ("service", "cart")]), T0);
    assert!(run(&mut a, T0 + 30 * S).is_empty());
    assert_eq!(a.alert(&id, T0 + 30 * S).expect("alert").silenced_by, vec![sid.clone()]);
    assert_eq!(a.alerts(Some("silenced"), T0 + 30 * S).expect("state").len(), 1);
    a.expire_silence(&sid, "ana", T0 + 100 * S).expect("expire");
    a.upsert(alert(&[("alertname", "Err"), ("service", "cart")]), T0 + 200 * S);
    assert_eq!(run(&mut a, T0 + 330 * S), [("team".into(), NotifyReason::Initial, 1)]);
    let audit: Vec<String> = a.take_changes().audit.into_iter().map(|e| e.action).collect();
    assert_eq!(audit, ["silence_create", "silence_expire"]);
}

#[test]
fn node_down_inhibits_warnings_on_the_same_host_only() {
    let mut a = Alerting::new(config()).expect("config");
    a.upsert(
        alert(&[("alertname", "NodeDown"), ("host", "h1"), ("service", "infra")]),
        T0,
    );
    let same = a.upsert(
        alert(&[
            ("alertname", "Latency"),
            ("host", "h1"),
            ("service", "api"),
            ("severity", "warning"),
        ]),
        T0,
    );
    let other = a.upsert(
        alert(&[
            ("alertname", "Latency"),
            ("host", "h2"),
            ("service", "api"),
            ("severity", "warning"),
        ]),
        T0,
    );
    let sent = run(&mut a, T0 + 30 * S);
    assert_eq!(sent.len(), 2, "NodeDown and the h2 latency group: {sent:?}");
    assert_eq!(a.alert(&same, T0).expect("alert").inhibited_by.len(), 1);
    assert!(a.alert(&other, T0).expect("alert").inhibited_by.is_empty());
    let counts: usize = sent.iter().map(|s| s.2).sum();
    assert_eq!(counts, 2, "the inhibited alert is in no message");
}

#[test]
fn invalid_config_names_the_key() {
    let mut c = config();
    c.route.routes[0].receiver = Some("nobody".into());
    assert_eq!(
        Alerting::new(c).err().map(|e| e.to_string()),
        Some("route.routes[0].receiver: unknown receiver \"nobody\"".into())
    );
    let mut c = config();
    c.inhibit_rules[0].source_matchers = vec![r#"host=~"(""#.into()];
    let e = Alerting::new(c).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        e.starts_with("inhibit_rules[0].source_matchers[0]: bad regular expression"),
        "{e}"
    );
}

#[test]
fn escalation_runs_its_steps_until_acknowledged() {
    let mut a = Alerting::new(config()).expect("config");
    let page = alert(&[
        ("alertname", "CheckoutDown"),
        ("service", "checkout"),
        ("severity", "page"),
    ]);
    let id = a.upsert(page.clone(), T0);
    let mut log = Vec::new();
    for t in (0..1200).step_by(10) {
        a.upsert(page.clone(), T0 + t * S);
        for (r, reason, _) in run(&mut a, T0 + t * S) {
            log.push((t, r, reason));
        }
    }
    assert_eq!(
        log,
        [
            (30, "oncall".to_string(), NotifyReason::Initial),
            (330, "secondary".to_string(), NotifyReason::Escalation),
            (930, "manager".to_string(), NotifyReason::Escalation),
        ]
    );

    // Acknowledged before the first step: no escalation at all, no repeats.
    let mut b = Alerting::new(config()).expect("config");
    let id_b = b.upsert(page.clone(), T0);
    assert_eq!(run(&mut b, T0 + 30 * S).len(), 1);
    let first = b.ack(&id_b, "ana", T0 + 60 * S).expect("ack");
    assert!(first.changed);
    let second = b.ack(&id_b, "bob", T0 + 61 * S).expect("ack");
    assert!(!second.changed);
    assert_eq!(second.message, "already acknowledged by ana");
    let mut later = Vec::new();
    for t in (70..8000).step_by(10) {
        b.upsert(page.clone(), T0 + t * S);
        later.extend(run(&mut b, T0 + t * S));
    }
    assert!(later.is_empty(), "{later:?}");
    assert_eq!(a.alert(&id, T0).map(|x| x.state), Some(AlertState::Firing));
}

#[test]
fn a_restart_mid_escalation_resumes_without_resending() {
    let mut a = Alerting::new(config()).expect("config");
    let page = alert(&[
        ("alertname", "CheckoutDown"),
        ("service", "checkout"),
        ("severity", "page"),
    ]);
    a.upsert(page.clone(), T0);
    assert_eq!(run(&mut a, T0 + 30 * S).len(), 1);
    // Persist everything, as the collector does after each step, then "restart".
    let mut snap = Snapshot::default();
    let ch = a.take_changes();
    snap.alerts = ch.alerts;
    snap.groups = ch.groups;
    snap.outbox = ch.outbox;
    snap.next_seq = ch.next_seq;
    assert!(snap.outbox.is_empty(), "the delivered notification left the outbox");
    let mut b = Alerting::new(config()).expect("config");
    b.restore(snap);
    let mut log = Vec::new();
    for t in (40..700).step_by(10) {
        b.upsert(page.clone(), T0 + t * S);
        for (r, reason, _) in run(&mut b, T0 + t * S) {
            log.push((t, r, reason));
        }
    }
    assert_eq!(log, [(330, "secondary".to_string(), NotifyReason::Escalation)]);
}

#[test]
fn failed_deliveries_back_off_and_stay_queued_until_delivered() {
    let mut a = Alerting::new(config()).expect("config");
    a.upsert(alert(&[("alertname", "Err"), ("service", "cart")]), T0);
    a.tick(T0 + 30 * S);
    let n = a.due(T0 + 30 * S).pop().expect("due");
    a.failed(&n.id, "connection refused", T0 + 30 * S);
    assert!(a.due(T0 + 31 * S).is_empty(), "backoff: 2 s after the first failure");
    assert_eq!(a.due(T0 + 32 * S).len(), 1);
    a.failed(&n.id, "timeout", T0 + 32 * S);
    assert!(a.due(T0 + 35 * S).is_empty());
    assert_eq!(a.due(T0 + 36 * S)[0].attempts, 2);
    a.delivered(&n.id, "202 Accepted", T0 + 36 * S);
    assert!(a.pending().is_empty());
    let ch = a.take_changes();
    assert_eq!(ch.outbox_deleted, vec![n.id]);
    // Every attempt is on record, with what the receiver said.
    let history: Vec<(u32, DeliveryOutcome, String)> = ch
        .deliveries
        .into_iter()
        .map(|d| (d.attempt, d.outcome, d.answer))
        .collect();
    assert_eq!(
        history,
        [
            (1, DeliveryOutcome::Failed, "connection refused".to_string()),
            (2, DeliveryOutcome::Failed, "timeout".to_string()),
            (3, DeliveryOutcome::Delivered, "202 Accepted".to_string()),
        ]
    );
}

#[test]
fn routing_sends_pages_to_oncall_and_the_rest_to_the_team() {
    let mut a = Alerting::new(config()).expect("config");
    a.upsert(alert(&[("alertname", "A"), ("service", "s"), ("severity", "page")]), T0);
    a.upsert(alert(&[("alertname", "B"), ("service", "s"), ("severity", "info")]), T0);
    let mut sent = run(&mut a, T0 + 30 * S);
    sent.sort();
    assert_eq!(
        sent,
        [
            ("oncall".into(), NotifyReason::Initial, 1),
            ("team".into(), NotifyReason::Initial, 1)
        ]
    );
}

#[test]
fn resolved_alerts_are_forgotten_after_a_day_and_come_back_as_new() {
    let mut a = Alerting::new(config()).expect("config");
    let mut x = alert(&[("alertname", "Old"), ("service", "s")]);
    let id = a.upsert(x.clone(), T0);
    run(&mut a, T0 + 30 * S);
    a.ack(&id, "ana", T0 + 40 * S).expect("ack");
    x.ends_at_ms = Some(T0 + 50 * S);
    a.upsert(x.clone(), T0 + 50 * S);
    run(&mut a, T0 + 400 * S);
    a.tick(T0 + 50 * S + RESOLVED_RETENTION_MS);
    assert!(a.alert(&id, T0).is_none());
    assert_eq!(a.take_changes().alerts_deleted, vec![id.clone()]);
    x.ends_at_ms = None;
    a.upsert(x, T0 + 2 * RESOLVED_RETENTION_MS);
    let back = a.alert(&id, T0).expect("back");
    assert_eq!((back.state, back.acknowledged_by), (AlertState::Firing, None));
}

#[test]
fn a_partial_resolve_is_announced_once() {
    // Regression: the update listing the resolved alert was followed, one group interval
    // later, by a second update listing the still-firing ones again (the stored hash
    // included the resolved alert, which had left the group since).
    let mut a = Alerting::new(AlertingConfig {
        resolve_timeout_secs: 86_400,
        ..config()
    })
    .expect("config");
    let x = alert(&[("alertname", "Err"), ("service", "cart"), ("pod", "a")]);
    let mut y = alert(&[("alertname", "Err"), ("service", "cart"), ("pod", "b")]);
    a.upsert(x.clone(), T0);
    a.upsert(y.clone(), T0);
    assert_eq!(run(&mut a, T0 + 30 * S), [("team".into(), NotifyReason::Initial, 2)]);
    y.ends_at_ms = Some(T0 + 100 * S);
    a.upsert(y, T0 + 100 * S);
    assert_eq!(
        run(&mut a, T0 + 330 * S),
        [("team".into(), NotifyReason::Update, 2)],
        "one update: a firing, b resolved"
    );
    let mut later = Vec::new();
    for t in (340..=1000).step_by(10) {
        a.upsert(x.clone(), T0 + t * S);
        later.extend(run(&mut a, T0 + t * S));
    }
    assert!(later.is_empty(), "nothing changed since: {later:?}");
}

#[test]
fn alerts_that_were_never_announced_are_not_announced_resolved() {
    // Regression: a group silenced after its first notification sent a "resolved" listing
    // an alert that joined while silenced and was never announced.
    let mut a = Alerting::new(AlertingConfig {
        resolve_timeout_secs: 86_400,
        ..config()
    })
    .expect("config");
    let mut x = alert(&[("alertname", "Err"), ("service", "cart"), ("pod", "a")]);
    a.upsert(x.clone(), T0);
    assert_eq!(run(&mut a, T0 + 30 * S), [("team".into(), NotifyReason::Initial, 1)]);
    let silence = Silence {
        id: String::new(),
        matchers: crate::matcher::parse_matchers(r#"{service="cart"}"#).expect("matchers"),
        starts_at_ms: T0 + 60 * S,
        ends_at_ms: T0 + 500 * S,
        created_by: "ana".into(),
        comment: "looking".into(),
        created_at_ms: 0,
    };
    a.add_silence(silence, T0 + 60 * S).expect("silence");
    let mut y = alert(&[("alertname", "Err"), ("service", "cart"), ("pod", "b")]);
    a.upsert(y.clone(), T0 + 100 * S);
    y.ends_at_ms = Some(T0 + 200 * S);
    a.upsert(y, T0 + 200 * S);
    let mut sent = Vec::new();
    for t in (210..=1200).step_by(10) {
        if t < 700 {
            a.upsert(x.clone(), T0 + t * S);
        }
        sent.extend(run(&mut a, T0 + t * S));
    }
    // x resolves at 700 s: that is the only news after the silence, and it lists x alone.
    x.ends_at_ms = Some(T0 + 700 * S);
    a.upsert(x, T0 + 1210 * S);
    sent.extend(run(&mut a, T0 + 1600 * S));
    assert_eq!(sent, [("team".into(), NotifyReason::Resolved, 1)], "{sent:?}");
}

#[test]
fn alerts_kept_under_an_older_fingerprint_are_rekeyed_with_their_groups() {
    let mut a = Alerting::new(config()).expect("config");
    let page = alert(&[("alertname", "CheckoutDown"), ("service", "checkout")]);
    let id = a.upsert(page.clone(), T0);
    assert_eq!(run(&mut a, T0 + 30 * S).len(), 1);
    let ch = a.take_changes();
    // As an earlier version stored it: the same alert under another id.
    let old = "00000000deadbeef".to_string();
    let snap = Snapshot {
        alerts: ch.alerts.into_iter().map(|x| Alert { id: old.clone(), ..x }).collect(),
        groups: ch
            .groups
            .into_iter()
            .map(|g| Group {
                alerts: [old.clone()].into(),
                announced: [old.clone()].into(),
                ..g
            })
            .collect(),
        next_seq: ch.next_seq,
        ..Snapshot::default()
    };
    let mut b = Alerting::new(config()).expect("config");
    b.restore(snap);
    assert!(b.alert(&id, T0 + 40 * S).is_some(), "found under its fingerprint");
    assert!(
        b.groups()
            .iter()
            .all(|g| g.alerts.contains(&id) && g.announced.contains(&id))
    );
    let ch = b.take_changes();
    assert_eq!(ch.alerts_deleted, [old]);
    assert_eq!(ch.alerts.len(), 1);
    // Re-sent, it is the same alert: no second notification.
    assert_eq!(b.upsert(page, T0 + 50 * S), id);
    assert!(
        run(&mut b, T0 + 340 * S).is_empty(),
        "nothing new to tell before it times out"
    );
}

#[test]
fn notifications_carry_alertmanagers_group_key() {
    let mut a = Alerting::new(config()).expect("config");
    a.upsert(
        alert(&[("alertname", "Err"), ("service", "cart"), ("severity", "page")]),
        T0,
    );
    a.tick(T0 + 30 * S);
    let n = a.due(T0 + 30 * S).pop().expect("due");
    assert_eq!(n.group_key, r#"{}/{severity="page"}:{alertname="Err", service="cart"}"#);
}

#[test]
fn an_escalation_step_reaches_whoever_is_on_call_through_their_receiver() {
    use crate::oncall::{Layer, Rotation, Schedule};
    let mut cfg = config();
    cfg.people = vec![
        PersonConfig {
            name: "ana".into(),
            receiver: "secondary".into(),
        },
        PersonConfig {
            name: "bo".into(),
            receiver: "manager".into(),
        },
    ];
    cfg.escalation_policies[0].steps = vec![EscalationStepConfig {
        wait_secs: 300,
        receivers: Vec::new(),
        schedules: vec!["primary".into()],
    }];
    cfg.escalation_policies[0].repeat = 1;
    let mut a = Alerting::new(cfg).expect("config");
    // T0 is 2026-11-23T00:00Z: ana's day, then bo's.
    let schedule = Schedule {
        name: "primary".into(),
        time_zone: "UTC".into(),
        layers: vec![Layer {
            name: "daily".into(),
            rotation: Rotation::Daily,
            handoff: "00:00".into(),
            handoff_day: None,
            start: "2026-11-23".into(),
            users: vec!["ana".into(), "bo".into()],
        }],
        overrides: Vec::new(),
        updated_ms: 0,
        updated_by: String::new(),
    };
    a.put_schedule(schedule, "admin", T0).expect("valid schedule");
    let page = alert(&[
        ("alertname", "CheckoutDown"),
        ("service", "checkout"),
        ("severity", "page"),
    ]);
    a.upsert(page.clone(), T0);
    assert_eq!(
        run(&mut a, T0 + 30 * S),
        [("oncall".to_string(), NotifyReason::Initial, 1)]
    );
    a.upsert(page.clone(), T0 + 300 * S);
    assert_eq!(
        run(&mut a, T0 + 330 * S),
        [("secondary".to_string(), NotifyReason::Escalation, 1)],
        "ana is on call: her receiver"
    );
    // An override puts bo on call for the next round.
    a.add_override("primary", "bo", (T0 + 600 * S, T0 + 3600 * S), "ana", T0 + 400 * S)
        .expect("override");
    a.upsert(page, T0 + 600 * S);
    assert_eq!(
        run(&mut a, T0 + 630 * S),
        [("manager".to_string(), NotifyReason::Escalation, 1)],
        "bo by override"
    );
    let audit: Vec<String> = a.take_changes().audit.into_iter().map(|e| e.action).collect();
    assert_eq!(audit, ["schedule_update", "override_create"]);
}
