//! The correlator on hand-made anomalies and topologies.

use super::*;
use crate::topology::SpanRef;
use vigil_detectors::{Severity, SignalRef};

mod corroboration;

const T0: i64 = 1_795_392_000_000;

pub(super) fn anomaly(
    id: &str,
    service: &str,
    detector: DetectorKind,
    start_s: i64,
    score: f64,
    open: bool,
) -> Anomaly {
    Anomaly {
        id: id.into(),
        detector,
        signal: SignalRef {
            key: format!("k:{id}"),
            service: Some(service.into()),
            name: format!("{service} signal"),
            labels: BTreeMap::new(),
        },
        start_ms: T0 + start_s * 1000,
        end_ms: T0 + start_s * 1000 + 60_000,
        score,
        severity: Severity::from_score(score),
        observed: 1.0,
        expected: 0.0,
        lower: 0.0,
        upper: 0.5,
        unit: String::new(),
        open,
        explanation: format!("{service} {id} went bad"),
        exemplars: Vec::new(),
        evidence: Vec::new(),
        warming_up: false,
    }
}

/// frontend → checkout → payment; inventory is unrelated.
pub(super) fn topology() -> Topology {
    let mut t = Topology::new();
    for i in 0..10u64 {
        let b = i * 10;
        t.observe(&SpanRef {
            service: "frontend",
            span_id: b + 1,
            parent_span_id: None,
            end_ms: T0,
            duration_s: 0.2,
            error: false,
            peer: None,
        });
        t.observe(&SpanRef {
            service: "checkout",
            span_id: b + 2,
            parent_span_id: Some(b + 1),
            end_ms: T0,
            duration_s: 0.1,
            error: false,
            peer: None,
        });
        t.observe(&SpanRef {
            service: "payment",
            span_id: b + 3,
            parent_span_id: Some(b + 2),
            end_ms: T0,
            duration_s: 0.05,
            error: false,
            peer: None,
        });
        t.observe(&SpanRef {
            service: "inventory",
            span_id: b + 4,
            parent_span_id: None,
            end_ms: T0,
            duration_s: 0.05,
            error: false,
            peer: None,
        });
    }
    t
}

#[test]
fn a_marginal_finding_minutes_early_does_not_make_a_caller_first_to_go_wrong() {
    // payment breaks at 0 s and its callers' latency with it; two minutes earlier the
    // frontend had one marginal finding (a log pattern's rate dipping, score 0.58). It used
    // to date the frontend's onset, making it "first to go wrong" and the top candidate.
    let topo = topology();
    let mut c = Correlator::new(IncidentConfig::default());
    c.observe(
        &anomaly("w", "frontend", DetectorKind::LogPatternRate, -120, 0.58, false),
        &topo,
    );
    for (id, service) in [("p", "payment"), ("c", "checkout"), ("f", "frontend")] {
        c.observe(&anomaly(id, service, DetectorKind::TraceRed, 0, 1.0, true), &topo);
    }
    let all = c.drain();
    let inc = all
        .iter()
        .find(|i| i.services.len() == 3)
        .expect("one incident with the three services");
    assert_eq!(inc.candidates[0].service, "payment", "{:#?}", inc.candidates);
}

#[test]
fn a_cascade_is_one_incident_led_by_the_downstream_service_that_broke_first() {
    let topo = topology();
    let mut c = Correlator::new(IncidentConfig::default());
    c.observe(&anomaly("a1", "payment", DetectorKind::Metric, 0, 0.95, true), &topo);
    c.observe(
        &anomaly("a2", "payment", DetectorKind::LogNewPattern, 5, 0.9, true),
        &topo,
    );
    c.observe(
        &anomaly("a3", "checkout", DetectorKind::TraceRed, 40, 0.99, true),
        &topo,
    );
    c.observe(
        &anomaly("a4", "frontend", DetectorKind::TraceRed, 45, 0.99, true),
        &topo,
    );
    let all = c.drain();
    assert_eq!(all.len(), 1, "one incident for the cascade");
    let inc = &all[0];
    assert_eq!(inc.services, ["checkout", "frontend", "payment"]);
    assert_eq!(inc.candidates[0].service, "payment");
    assert!(
        inc.candidates[0].reasons[0].starts_with("first to go wrong"),
        "{:?}",
        inc.candidates[0].reasons
    );
    assert!(
        inc.candidates[0]
            .reasons
            .iter()
            .any(|r| r == "evidence from logs, metrics")
    );
    assert!(
        inc.candidates[0]
            .reasons
            .iter()
            .any(|r| r == "called by anomalous checkout, frontend")
    );
    assert!(
        inc.summary
            .starts_with("payment likely root cause: payment a1 went bad; 40 s later: checkout a3 went bad"),
        "{}",
        inc.summary
    );
    assert_eq!(
        inc.timeline.iter().map(|m| m.anomaly_id.as_str()).collect::<Vec<_>>(),
        ["a1", "a2", "a3", "a4"]
    );
}

#[test]
fn a_service_that_only_drops_below_its_levels_is_affected_not_the_cause() {
    // checkout → payment → database (topology from `topology()`: add the database edge).
    let mut topo = topology();
    for i in 0..10u64 {
        topo.observe(&SpanRef {
            service: "database",
            span_id: 1000 + i,
            parent_span_id: Some(i * 10 + 3),
            end_ms: T0,
            duration_s: 0.01,
            error: false,
            peer: None,
        });
    }
    let mut c = Correlator::new(IncidentConfig::default());
    // checkout's callers-side errors show first; payment (down) reports zeros a minute
    // later; database simply gets less traffic.
    let mut errors = anomaly("e", "checkout", DetectorKind::TraceRed, 0, 1.0, true);
    errors.observed = 1.0;
    c.observe(&errors, &topo);
    let mut zero = anomaly("z", "payment", DetectorKind::Metric, 60, 1.0, true);
    (zero.observed, zero.expected) = (0.0, 10.0);
    c.observe(&zero, &topo);
    let mut drop = anomaly("d", "database", DetectorKind::TraceRed, 60, 1.0, true);
    (drop.observed, drop.expected) = (4.0, 10.0);
    c.observe(&drop, &topo);
    let inc = c.drain().pop().expect("incident");
    let order: Vec<&str> = inc.candidates.iter().map(|c| c.service.as_str()).collect();
    assert_eq!(order[0], "payment", "{:#?}", inc.candidates);
    let db = inc
        .candidates
        .iter()
        .find(|c| c.service == "database")
        .expect("database ranked");
    assert!(
        db.reasons.iter().any(|r| r.contains("affected, not a suspect")),
        "{:?}",
        db.reasons
    );
}

#[test]
fn unrelated_faults_make_two_incidents_and_incidents_resolve() {
    let topo = topology();
    let mut c = Correlator::new(IncidentConfig::default());
    // payment: a metric and its traces agree.
    c.observe(&anomaly("p", "payment", DetectorKind::Metric, 0, 0.9, true), &topo);
    c.observe(&anomaly("pt", "payment", DetectorKind::TraceRed, 30, 0.8, true), &topo);
    // inventory: one strong finding on its requests that lasts (four minutes).
    let mut i = anomaly("i", "inventory", DetectorKind::TraceRed, 10, 0.95, true);
    i.end_ms = i.start_ms + 4 * 60_000;
    c.observe(&i, &topo);
    // Long after: a new payment problem is a new incident.
    c.observe(&anomaly("p2", "payment", DetectorKind::Metric, 3600, 0.9, true), &topo);
    c.observe(
        &anomaly("p2t", "payment", DetectorKind::LogErrorRate, 3610, 0.9, true),
        &topo,
    );
    assert_eq!(c.drain().len(), 3);
    for id in ["p", "pt"] {
        let mut closed = anomaly(id, "payment", DetectorKind::Metric, 0, 0.9, false);
        closed.end_ms = T0 + 120_000;
        c.observe(&closed, &topo);
    }
    c.drain();
    c.advance(T0 + 120_000 + 5 * 60_000);
    let resolved = c.drain();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].status, IncidentStatus::Resolved);
    assert_eq!(resolved[0].services, ["payment"]);
    let resolved_id = resolved[0].id.clone();

    // A day after its last activity the correlator forgets the resolved incident (memory
    // stays bounded); the ones still open are kept however old.
    let open: Vec<String> = c.incidents.keys().filter(|id| **id != resolved_id).cloned().collect();
    assert_eq!(open.len(), 2);
    c.advance(T0 + 120_000 + 24 * 3_600_000 - 1);
    assert!(c.incident(&resolved_id).is_some(), "kept for a day");
    c.advance(T0 + 120_000 + 24 * 3_600_000);
    assert!(c.incident(&resolved_id).is_none(), "forgotten after a day");
    assert!(!c.of_anomaly.contains_key("p") && !c.of_anomaly.contains_key("pt"));
    for id in &open {
        assert!(c.incident(id).is_some(), "{id} is open and kept");
    }
}

#[test]
fn a_sealed_or_old_incident_takes_no_new_fault() {
    let topo = topology();
    let mut c = Correlator::new(IncidentConfig::default());
    c.observe(&anomaly("a", "payment", DetectorKind::Metric, 0, 0.9, true), &topo);
    c.observe(&anomaly("b", "payment", DetectorKind::TraceRed, 0, 0.9, true), &topo);
    let first = c.drain()[0].id.clone();
    assert!(c.seal(&first));
    assert!(!c.seal(&first), "already sealed");
    c.drain();
    // A new fault on checkout a minute later: its own incident.
    c.observe(&anomaly("c", "checkout", DetectorKind::Metric, 60, 0.9, true), &topo);
    c.observe(&anomaly("d", "checkout", DetectorKind::TraceRed, 60, 0.9, true), &topo);
    let second = c.drain();
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].id, first);
    // Kept busy by a long finding, the second incident is still open 40 minutes on; a
    // fault then is new, not more of it.
    let mut long = anomaly("d", "checkout", DetectorKind::TraceRed, 60, 0.9, true);
    long.end_ms = T0 + 40 * 60_000;
    c.observe(&long, &topo);
    c.drain();
    c.observe(
        &anomaly("e", "payment", DetectorKind::Metric, 40 * 60, 0.9, true),
        &topo,
    );
    c.observe(
        &anomaly("f", "payment", DetectorKind::LogErrorRate, 40 * 60, 0.9, true),
        &topo,
    );
    let third = c.drain();
    assert!(third.iter().all(|i| i.id != second[0].id), "{third:#?}");
    assert!(third.iter().any(|i| i.timeline.iter().any(|m| m.anomaly_id == "e")));
}

#[test]
fn a_fault_after_trouble_that_was_over_is_a_new_incident() {
    let topo = topology();
    let mut c = Correlator::new(IncidentConfig::default());
    // A one-minute error burst on checkout (logs and spans, over by T0 + 1 min), and a
    // memory shift of checkout that stays open for hours.
    c.observe(
        &anomaly("a", "checkout", DetectorKind::LogErrorRate, 0, 0.9, false),
        &topo,
    );
    c.observe(&anomaly("b", "checkout", DetectorKind::TraceRed, 0, 0.9, false), &topo);
    let mut memory = anomaly("m", "checkout", DetectorKind::Metric, 30, 0.9, true);
    memory.end_ms = T0 + 3 * 3_600_000;
    c.observe(&memory, &topo);
    let first = c.drain()[0].id.clone();
    // Five minutes later payment, a neighbour, breaks: its own incident, although the
    // first is still open (the memory shift) and checkout is in it.
    c.observe(
        &anomaly("c", "payment", DetectorKind::LogErrorRate, 5 * 60, 0.9, true),
        &topo,
    );
    c.observe(
        &anomaly("d", "payment", DetectorKind::TraceRed, 5 * 60, 0.9, true),
        &topo,
    );
    c.observe(
        &anomaly("e", "checkout", DetectorKind::TraceRed, 5 * 60 + 30, 0.9, true),
        &topo,
    );
    let second = c.drain();
    let new = second
        .iter()
        .find(|i| i.timeline.iter().any(|m| m.anomaly_id == "c"))
        .unwrap_or_else(|| panic!("payment opened an incident: {second:#?}"));
    assert_ne!(new.id, first);
    // While that trouble goes on, a caller's finding joins it.
    assert!(new.timeline.iter().any(|m| m.anomaly_id == "e"), "{new:#?}");
    assert_eq!(c.incident(&first).map(|i| i.timeline.len()), Some(3));
}

#[test]
fn an_incident_is_dated_and_investigated_from_its_first_symptom_not_its_first_metric() {
    let topo = topology();
    let mut c = Correlator::new(IncidentConfig::default());
    // Pod metrics of payment move at 0 (load arriving); four minutes later its requests
    // fail: one incident, which began with that symptom at 240 s, the metric before it.
    c.observe(&anomaly("m", "payment", DetectorKind::Metric, 0, 0.8, true), &topo);
    c.observe(&anomaly("e", "payment", DetectorKind::TraceRed, 240, 0.9, true), &topo);
    let opened = c.drain();
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].start_ms, T0 + 240_000);
    assert_eq!(opened[0].symptom_start_ms(), T0 + 240_000);
    assert_eq!(
        opened[0].timeline[0].anomaly_id, "m",
        "the metric stays in the timeline"
    );
    // An earlier symptom joining later moves the start back.
    c.observe(
        &anomaly("l", "payment", DetectorKind::LogErrorRate, 120, 0.9, true),
        &topo,
    );
    assert_eq!(c.incident(&opened[0].id).map(|i| i.start_ms), Some(T0 + 120_000));
    // A metric showing the thing stopped is the symptom itself.
    let mut stopped = opened[0].clone();
    stopped
        .timeline
        .iter_mut()
        .filter(|m| m.anomaly_id == "m")
        .for_each(|m| m.stopped = true);
    assert_eq!(stopped.symptom_start_ms(), T0);
    // Dated by a stopped metric, the incident keeps its start when a later reading of that
    // metric no longer shows it stopped: the alert's `startsAt` does not move.
    let mut c = Correlator::new(IncidentConfig::default());
    let mut gone = anomaly("m", "payment", DetectorKind::Metric, 0, 0.95, true);
    (gone.observed, gone.expected) = (0.0, 5.0);
    c.observe(&gone, &topo);
    c.observe(&anomaly("e", "checkout", DetectorKind::TraceRed, 240, 0.9, true), &topo);
    let id = c.drain()[0].id.clone();
    assert_eq!(c.incident(&id).map(|i| i.start_ms), Some(T0));
    gone.observed = 2.0;
    c.observe(&gone, &topo);
    assert_eq!(c.incident(&id).map(|i| i.start_ms), Some(T0), "the start moved later");
}

#[test]
fn a_neighbour_going_wrong_minutes_into_an_incident_is_a_new_fault() {
    let topo = topology();
    let mut c = Correlator::new(IncidentConfig::default());
    // payment fails for a quarter of an hour: logs and spans, still open.
    let mut errors = anomaly("a", "payment", DetectorKind::LogErrorRate, 0, 0.9, true);
    errors.end_ms = T0 + 15 * 60_000;
    let mut spans = anomaly("b", "payment", DetectorKind::TraceRed, 0, 0.9, true);
    spans.end_ms = T0 + 15 * 60_000;
    c.observe(&errors, &topo);
    c.observe(&spans, &topo);
    let first = c.drain()[0].id.clone();
    // Its caller slows three minutes in: the cascade, part of the same incident.
    c.observe(
        &anomaly("c", "checkout", DetectorKind::TraceRed, 3 * 60, 0.9, true),
        &topo,
    );
    c.drain();
    assert!(
        c.incident(&first)
            .is_some_and(|i| i.timeline.iter().any(|m| m.anomaly_id == "c"))
    );
    // frontend, two calls away and not yet in it, breaks seven minutes in — later than a
    // cascade reaches its services and later than anything that could have corroborated
    // the opening: a fault of its own, paged and ranked on its own.
    c.observe(
        &anomaly("d", "frontend", DetectorKind::LogErrorRate, 7 * 60, 0.9, true),
        &topo,
    );
    c.observe(
        &anomaly("e", "frontend", DetectorKind::TraceRed, 7 * 60, 0.9, true),
        &topo,
    );
    let later = c.drain();
    let own = later
        .iter()
        .find(|i| i.timeline.iter().any(|m| m.anomaly_id == "d"))
        .unwrap_or_else(|| panic!("frontend opened an incident: {later:#?}"));
    assert_ne!(own.id, first);
    assert!(
        c.incident(&first)
            .is_some_and(|i| !i.services.iter().any(|s| s == "frontend"))
    );
}

#[test]
fn a_service_whose_metrics_moved_in_an_incident_is_not_yet_part_of_it() {
    let topo = topology();
    let build = |early: DetectorKind| {
        let mut c = Correlator::new(IncidentConfig::default());
        // payment fails for a quarter of an hour, logs and spans, still open; checkout's
        // finding a minute in is the cascade.
        for (id, kind) in [("a", DetectorKind::LogErrorRate), ("b", DetectorKind::TraceRed)] {
            let mut f = anomaly(id, "payment", kind, 0, 0.9, true);
            f.end_ms = T0 + 15 * 60_000;
            c.observe(&f, &topo);
        }
        let mut early = anomaly("c", "checkout", early, 60, 0.9, true);
        early.end_ms = T0 + 2 * 60_000;
        c.observe(&early, &topo);
        let first = c.drain()[0].id.clone();
        // Checkout's own requests fail ten minutes in.
        c.observe(
            &anomaly("d", "checkout", DetectorKind::LogErrorRate, 10 * 60, 0.9, true),
            &topo,
        );
        c.observe(
            &anomaly("e", "checkout", DetectorKind::TraceRed, 10 * 60, 0.9, true),
            &topo,
        );
        let joined = c
            .incident(&first)
            .is_some_and(|i| i.timeline.iter().any(|m| m.anomaly_id == "d"));
        (joined, c.drain())
    };
    // Only its CPU had moved: the failure ten minutes later is a fault of its own.
    let (joined, later) = build(DetectorKind::Metric);
    assert!(!joined, "joined the older incident: {later:#?}");
    assert!(
        later
            .iter()
            .any(|i| i.timeline.iter().any(|m| m.anomaly_id == "d") && i.timeline.iter().all(|m| m.anomaly_id != "a")),
        "checkout's failure opened an incident of its own: {later:#?}"
    );
    // Its requests had slowed with payment's: the same failure is more of the incident.
    let (joined, _) = build(DetectorKind::TraceRed);
    assert!(joined, "a service in the incident by its requests stays in it");
}

#[test]
fn a_resource_metric_moving_again_later_is_a_new_event() {
    // Payment fails for a quarter of an hour; frontend's latency gauge moves with it a
    // minute in. Ten minutes later checkout logs something new and frontend's gauge moves
    // again: that is checkout's fault, and frontend's second move belongs with it, not with
    // payment's incident through the first one.
    let topo = topology();
    let mut c = Correlator::new(IncidentConfig::default());
    for (id, kind) in [("a", DetectorKind::LogErrorRate), ("b", DetectorKind::TraceRed)] {
        let mut f = anomaly(id, "payment", kind, 0, 0.9, true);
        f.end_ms = T0 + 15 * 60_000;
        c.observe(&f, &topo);
    }
    c.observe(&anomaly("c", "frontend", DetectorKind::Metric, 60, 0.9, false), &topo);
    let first = c.drain()[0].id.clone();
    assert!(
        c.incident(&first)
            .is_some_and(|i| i.timeline.iter().any(|m| m.anomaly_id == "c"))
    );
    // Its gauges moving on within two minutes of an onset are the same event, however old
    // the incident: four minutes in (near it, young enough to join anyway), then past five.
    c.observe(
        &anomaly("c2", "frontend", DetectorKind::Metric, 4 * 60, 0.9, false),
        &topo,
    );
    c.observe(
        &anomaly("c3", "frontend", DetectorKind::Metric, 5 * 60 + 30, 0.9, false),
        &topo,
    );
    assert!(
        c.incident(&first).is_some_and(|i| ["c2", "c3"]
            .iter()
            .all(|id| i.timeline.iter().any(|m| m.anomaly_id == *id))),
        "a gauge moving on from a recent onset left the incident"
    );
    c.observe(
        &anomaly("d", "checkout", DetectorKind::LogNewPattern, 10 * 60, 0.9, true),
        &topo,
    );
    c.observe(
        &anomaly("e", "frontend", DetectorKind::Metric, 10 * 60 + 30, 0.9, true),
        &topo,
    );
    // Its gauge again within the quiet gap of that onset is the same event.
    c.observe(
        &anomaly("f", "frontend", DetectorKind::Metric, 11 * 60, 0.9, true),
        &topo,
    );
    let old = c.incident(&first).expect("payment's incident");
    assert!(
        old.timeline.iter().all(|m| m.anomaly_id != "e" && m.anomaly_id != "f"),
        "frontend's later move joined payment's incident: {old:#?}"
    );
    let later = c.drain();
    let own = later
        .iter()
        .find(|i| i.id != first && i.timeline.iter().any(|m| m.anomaly_id == "d"))
        .unwrap_or_else(|| panic!("checkout's finding opened no incident: {later:#?}"));
    assert!(
        ["e", "f"]
            .iter()
            .all(|id| own.timeline.iter().any(|m| m.anomaly_id == *id)),
        "frontend's gauge corroborates checkout's fault: {own:#?}"
    );
}

#[test]
fn the_same_findings_hours_later_make_the_same_incidents() {
    // Two unrelated incidents end at the same moment and a finding with no service joins one
    // of them. Which one must follow from the findings, not from incident ids (they hash the
    // start time): a replay of the same day at another hour makes the same incidents.
    let topo = topology();
    let joined_by = |shift_ms: i64| {
        let mut c = Correlator::new(IncidentConfig::default());
        let at = |mut a: Anomaly| {
            a.start_ms += shift_ms;
            a.end_ms += shift_ms;
            a
        };
        for (id, service) in [("c", "checkout"), ("i", "inventory")] {
            let mut a = anomaly(id, service, DetectorKind::TraceRed, 0, 0.95, true);
            a.end_ms = a.start_ms + 4 * 60_000;
            c.observe(&at(a), &topo);
        }
        let mut u = anomaly("u", "unknown", DetectorKind::LogErrorRate, 60, 0.9, true);
        u.signal.service = None;
        c.observe(&at(u), &topo);
        assert_eq!(c.incidents.len(), 2);
        c.incidents
            .values()
            .find(|i| i.timeline.iter().any(|m| m.anomaly_id == "u"))
            .map(|i| i.services.clone())
    };
    let first = joined_by(0);
    assert!(first.is_some(), "the finding joined neither incident");
    for k in 1..24 {
        assert_eq!(joined_by(k * 3_600_000 + k * 7_919), first, "shifted by {k} h");
    }
}
