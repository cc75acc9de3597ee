//! What opens an incident: findings that agree (kinds, services, a clear symptom), and
//! what does not (a wobble, a blip, a load change, a learning series alone).

use super::*;

#[test]
fn one_wobbling_series_is_not_an_incident_until_something_agrees() {
    let topo = topology();
    let mut c = Correlator::new(IncidentConfig::default());
    c.observe(&anomaly("m", "payment", DetectorKind::Metric, 0, 0.95, true), &topo);
    assert!(c.drain().is_empty(), "a short spike of one series waits");
    // Three minutes later, checkout's latency: two kinds on related services.
    c.observe(&anomaly("t", "checkout", DetectorKind::TraceRed, 180, 0.7, true), &topo);
    let opened = c.drain();
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].timeline.len(), 2);
    assert_eq!(
        opened[0].start_ms,
        T0 + 180_000,
        "the incident starts at its first symptom, the metric before it in its timeline"
    );
    // Uncorroborated findings are dropped after a while and never open anything.
    c.observe(&anomaly("x", "inventory", DetectorKind::Metric, 7200, 0.8, true), &topo);
    c.advance(T0 + 7_200_000 + 60_000 + 15 * 60_000);
    c.observe(
        &anomaly("y", "inventory", DetectorKind::TraceRed, 7200 + 1200, 0.8, true),
        &topo,
    );
    assert!(c.drain().iter().all(|i| i.id == opened[0].id));
}

#[test]
fn metrics_of_several_services_moving_together_are_a_load_change_not_an_incident() {
    let topo = topology();
    let mut c = Correlator::new(IncidentConfig::default());
    for (id, service) in [("a", "frontend"), ("b", "checkout"), ("c", "payment")] {
        c.observe(&anomaly(id, service, DetectorKind::Metric, 0, 0.8, true), &topo);
    }
    assert!(c.drain().is_empty());
    // The same three services with latency findings: trouble on the request path.
    for (id, service) in [("d", "frontend"), ("e", "checkout"), ("f", "payment")] {
        c.observe(&anomaly(id, service, DetectorKind::TraceRed, 3600, 0.8, true), &topo);
    }
    assert_eq!(c.drain().len(), 1);
}

#[test]
fn a_finding_of_a_series_still_learning_opens_nothing_alone() {
    let topo = topology();
    let mut c = Correlator::new(IncidentConfig::default());
    // Strong and lasting: once learned, it would page alone…
    let mut a = anomaly("a", "payment", DetectorKind::LogErrorRate, 0, 1.0, true);
    a.end_ms = a.start_ms + 10 * 60_000;
    a.warming_up = true;
    c.observe(&a, &topo);
    assert!(c.drain().is_empty(), "a learning series paged alone");
    let mut learned = Correlator::new(IncidentConfig::default());
    a.warming_up = false;
    learned.observe(&a, &topo);
    assert_eq!(learned.drain().len(), 1);
    // …while learning, it needs another kind of signal agreeing.
    let mut b = anomaly("b", "payment", DetectorKind::TraceRed, 0, 0.9, true);
    b.warming_up = true;
    c.observe(&b, &topo);
    let opened = c.drain();
    assert_eq!(opened.len(), 1, "corroborated findings opened nothing");
    assert_eq!(opened[0].timeline.len(), 2);
}

#[test]
fn a_learning_series_clear_finding_beside_a_one_off_line_is_a_blip() {
    let topo = topology();
    let mut c = Correlator::new(IncidentConfig::default());
    // payment's p50 past the cold-start spread while its band is still being learned, and
    // checkout's first background error line (new, weak): nothing clear enough to page.
    let mut latency = anomaly("p50", "payment", DetectorKind::TraceRed, 45, 1.0, true);
    latency.warming_up = true;
    c.observe(
        &anomaly("line", "checkout", DetectorKind::LogNewPattern, 0, 0.6, true),
        &topo,
    );
    c.observe(&latency, &topo);
    assert!(c.drain().is_empty(), "a learning blip beside a one-off line paged");
    // The same latency once its band is learned is a clear symptom.
    let mut learned = Correlator::new(IncidentConfig::default());
    latency.warming_up = false;
    learned.observe(
        &anomaly("line", "checkout", DetectorKind::LogNewPattern, 0, 0.6, true),
        &topo,
    );
    learned.observe(&latency, &topo);
    assert_eq!(learned.drain().len(), 1);
    // Still learning, but past its spread for three minutes (a rule's `for:`): no blip.
    let mut sustained = Correlator::new(IncidentConfig::default());
    latency.warming_up = true;
    sustained.observe(
        &anomaly("line", "checkout", DetectorKind::LogNewPattern, 0, 0.6, true),
        &topo,
    );
    sustained.observe(&latency, &topo);
    assert!(sustained.drain().is_empty(), "paged before three minutes");
    latency.end_ms = latency.start_ms + 3 * 60_000;
    sustained.observe(&latency, &topo);
    assert_eq!(sustained.drain().len(), 1, "three minutes past its spread is no blip");
}

#[test]
fn a_blip_that_was_over_does_not_corroborate_a_later_fault() {
    let topo = topology();
    let mut c = Correlator::new(IncidentConfig::default());
    // A one-point latency blip on payment, over at once; four minutes later payment logs
    // a new error (one kind: waits) …
    c.observe(&anomaly("blip", "payment", DetectorKind::TraceRed, 0, 1.0, true), &topo);
    let mut blip = anomaly("blip", "payment", DetectorKind::TraceRed, 0, 1.0, true);
    blip.end_ms = blip.start_ms;
    c.observe(&blip, &topo);
    c.observe(
        &anomaly("err", "payment", DetectorKind::LogErrorRate, 240, 0.9, true),
        &topo,
    );
    assert!(c.drain().is_empty(), "the blip corroborated the later error");
    // … and its failing requests a minute later do: the incident starts with the fault.
    c.observe(
        &anomaly("fail", "payment", DetectorKind::TraceRed, 300, 0.9, true),
        &topo,
    );
    let opened = c.drain();
    assert_eq!(opened.len(), 1, "{opened:#?}");
    assert_eq!(opened[0].start_ms, T0 + 240_000);
    assert!(opened[0].timeline.iter().all(|m| m.anomaly_id != "blip"));
}

#[test]
fn severity_is_graded_by_corroboration() {
    let topo = topology();
    let mut c = Correlator::new(IncidentConfig::default());
    // A sustained metric with no symptom on the request path: no incident, whether or
    // not the service sends spans (a database host). A host that stopped: one.
    let mut quiet_pod = anomaly("q", "inventory", DetectorKind::Metric, 0, 1.0, true);
    quiet_pod.end_ms = quiet_pod.start_ms + 5 * 60_000;
    c.observe(&quiet_pod, &topo);
    let mut busy_host = anomaly("h", "db-host-1", DetectorKind::Metric, 0, 1.0, true);
    busy_host.end_ms = busy_host.start_ms + 5 * 60_000;
    c.observe(&busy_host, &topo);
    assert!(c.drain().is_empty());
    let mut alone = anomaly("a", "db-host-2", DetectorKind::Metric, 0, 1.0, true);
    alone.end_ms = alone.start_ms + 5 * 60_000;
    (alone.observed, alone.expected) = (0.0, 40.0);
    c.observe(&alone, &topo);
    let inc = c.drain().remove(0);
    assert_eq!(inc.services, ["db-host-2"]);
    assert_eq!(inc.severity(), Severity::Warning, "one signal, however strong");
    c.observe(&anomaly("b", "payment", DetectorKind::Metric, 7200, 0.95, true), &topo);
    c.observe(
        &anomaly("c", "payment", DetectorKind::LogErrorRate, 7200, 0.8, true),
        &topo,
    );
    let inc = c.drain().remove(0);
    assert_eq!(inc.severity(), Severity::Critical);
    let mut weak = anomaly("d", "payment", DetectorKind::Metric, 14400, 0.6, true);
    weak.end_ms = weak.start_ms + 5 * 60_000;
    c.observe(&weak, &topo);
    c.observe(
        &anomaly("e", "payment", DetectorKind::TraceRed, 14400, 0.55, true),
        &topo,
    );
    // Weak findings agreeing are still weak: no incident…
    assert!(c.drain().is_empty(), "two weak findings opened an incident");
    // … until one of them becomes clear: a warning, not critical.
    c.observe(
        &anomaly("e", "payment", DetectorKind::TraceRed, 14400, 0.75, true),
        &topo,
    );
    let inc = c.drain().remove(0);
    assert_eq!(inc.timeline.len(), 2);
    assert_eq!(inc.severity(), Severity::Warning);
}

/// One request that failed once logs one new line in every service on its path: weak
/// findings on three services at the same second (the demo's background errors paged this
/// way before the fault). They open nothing until one of them recurs.

#[test]
fn one_failed_request_across_three_services_opens_nothing() {
    let topo = topology();
    let mut c = Correlator::new(IncidentConfig::default());
    for (id, svc) in [("f", "frontend"), ("c", "checkout"), ("p", "payment")] {
        let mut one_line = anomaly(id, svc, DetectorKind::LogNewPattern, 0, 0.6, true);
        one_line.end_ms = one_line.start_ms;
        c.observe(&one_line, &topo);
    }
    assert!(c.drain().is_empty(), "a one-off opened an incident");
    // payment's line keeps coming: a fault, with the others as its path.
    c.observe(
        &anomaly("p", "payment", DetectorKind::LogNewPattern, 0, 0.9, true),
        &topo,
    );
    let opened = c.drain();
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].services, ["checkout", "frontend", "payment"]);
}

#[test]
fn a_clear_metric_beside_a_weak_symptom_is_a_wobble_and_a_blip() {
    let topo = topology();
    // A one-off error line in checkout (weak) and frontend's CPU a little past its band
    // (clear): two kinds of signal, but no clear symptom.
    let mut c = Correlator::new(IncidentConfig::default());
    c.observe(
        &anomaly("log", "checkout", DetectorKind::LogNewPattern, 0, 0.6, true),
        &topo,
    );
    c.observe(&anomaly("cpu", "frontend", DetectorKind::Metric, 30, 1.0, true), &topo);
    assert!(c.drain().is_empty(), "a CPU wobble beside a blip paged");
    // The same metric corroborating a clear symptom opens one.
    c.observe(
        &anomaly("err", "checkout", DetectorKind::TraceRed, 60, 0.8, true),
        &topo,
    );
    let opened = c.drain();
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].timeline.len(), 3);
}
