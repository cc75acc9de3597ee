//! Investigations on small synthetic systems: frontend → checkout → payment.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

const MIN: i64 = 60_000;
/// The window: minutes 60..63; the baseline: minutes 0..55.
const WINDOW: TimeRange = TimeRange {
    start_ms: 60 * MIN,
    end_ms: 63 * MIN,
};
const BASELINE: TimeRange = TimeRange {
    start_ms: 0,
    end_ms: 55 * MIN,
};

/// Builds traces of frontend → checkout → payment, one every 6 s, with per-service self
/// times (ms) and failures chosen per minute.
struct System {
    spans: Vec<SpanRow>,
    next: u64,
    /// checkout's calls to payment go through a client span naming it (`peer.service`).
    client_spans: bool,
}

#[derive(Clone, Copy, Default)]
struct Minute {
    frontend_ms: f64,
    checkout_ms: f64,
    payment_ms: f64,
    payment_fails: bool,
    payment_down: bool,
    /// checkout no longer calls payment (and nothing fails).
    payment_skipped: bool,
}

impl Minute {
    fn normal() -> Minute {
        Minute {
            frontend_ms: 2.0,
            checkout_ms: 10.0,
            payment_ms: 30.0,
            ..Minute::default()
        }
    }
}

impl System {
    fn new() -> System {
        System {
            spans: Vec::new(),
            next: 1,
            client_spans: false,
        }
    }

    fn id(&mut self) -> String {
        self.next += 1;
        format!("{:016x}", self.next)
    }

    /// Ten requests in minute `m`; a little jitter so the baseline has a spread.
    fn minute(&mut self, m: i64, how: Minute) {
        for k in 0..10 {
            let jitter = ((m * 7 + k * 3) % 5) as f64 * 0.05 + 0.9;
            let trace = format!("{:032x}", m * 100 + k + 1);
            let start = (m * MIN + k * 6_000) * 1_000_000;
            let ns = |ms: f64| (ms * jitter * 1e6) as i64;
            let (f, c, p) = (self.id(), self.id(), self.id());
            let payment_ns = if how.payment_down { 0 } else { ns(how.payment_ms) };
            let checkout_ns = ns(how.checkout_ms) + payment_ns;
            let frontend_ns = ns(how.frontend_ms) + checkout_ns;
            let failing = how.payment_fails || how.payment_down;
            self.spans.push(SpanRow {
                trace_id: trace.clone(),
                span_id: f.clone(),
                parent_span_id: String::new(),
                service: "frontend".into(),
                operation: "GET /buy".into(),
                start_ns: start,
                end_ns: start + frontend_ns,
                error: failing,
                peer: String::new(),
            });
            self.spans.push(SpanRow {
                trace_id: trace.clone(),
                span_id: c.clone(),
                parent_span_id: f,
                service: "checkout".into(),
                operation: "POST /checkout".into(),
                start_ns: start + 1,
                end_ns: start + 1 + checkout_ns,
                error: failing,
                peer: String::new(),
            });
            // The span payment's server span hangs under: checkout's own, or its client span.
            let caller = if self.client_spans {
                let call = self.id();
                // A refused connection waits for the connect timeout: a second.
                let call_ns = if how.payment_down {
                    1_000_000_000
                } else {
                    payment_ns + 1_000
                };
                self.spans.push(SpanRow {
                    trace_id: trace.clone(),
                    span_id: call.clone(),
                    parent_span_id: c.clone(),
                    service: "checkout".into(),
                    operation: "HTTP POST".into(),
                    start_ns: start + 2,
                    end_ns: start + 2 + call_ns,
                    error: failing,
                    peer: "payment".into(),
                });
                call
            } else {
                c
            };
            if !how.payment_down && !how.payment_skipped {
                self.spans.push(SpanRow {
                    trace_id: trace,
                    span_id: p,
                    parent_span_id: caller,
                    service: "payment".into(),
                    operation: "POST /pay".into(),
                    start_ns: start + 2,
                    end_ns: start + 2 + payment_ns,
                    error: how.payment_fails,
                    peer: String::new(),
                });
            }
        }
    }

    fn input(self, window: Minute) -> Input {
        let mut sys = self;
        for m in 0..55 {
            sys.minute(m, Minute::normal());
        }
        for m in 60..63 {
            sys.minute(m, window);
        }
        Input {
            window: WINDOW,
            baseline: BASELINE,
            spans: sys.spans,
            log_counts: Vec::new(),
            window_lines: Vec::new(),
            metrics: Vec::new(),
            services: Vec::new(),
            lead_in: None,
        }
    }

    /// As [`System::input`], with the minutes 57..60 (the lead-in) behaving as `lead_in`.
    fn input_with_lead_in(mut self, lead_in: Minute, window: Minute) -> Input {
        for m in 57..60 {
            self.minute(m, lead_in);
        }
        let mut input = self.input(window);
        input.lead_in = Input::lead_in_for(WINDOW, BASELINE);
        input
    }
}

/// `count` lines of `pattern` (at `severity`) from `service` in minute `m` of the test clock.
fn log_count(m: i64, service: &str, pattern: u64, severity: i32, count: u64) -> LogCount {
    LogCount {
        minute: Input::minute_of(WINDOW, m * MIN * 1_000_000),
        service: service.into(),
        pattern_id: pattern,
        severity,
        count,
    }
}

fn services(c: &[Candidate]) -> Vec<&str> {
    c.iter().map(|c| c.service.as_str()).collect()
}

#[test]
fn a_slow_callee_is_blamed_not_its_callers() {
    let input = System::new().input(Minute {
        payment_ms: 400.0,
        ..Minute::normal()
    });
    let ranked = investigate(&input);
    assert_eq!(
        services(&ranked),
        ["payment"],
        "callers' own time did not change: {ranked:#?}"
    );
    let e = &ranked[0].evidence[0];
    assert_eq!(e.kind, EvidenceKind::SelfTime);
    assert!(e.before < 40.0 && e.after > 350.0, "{e:?}");
    assert_eq!(e.samples.len(), 3, "exemplar traces");
}

#[test]
fn nothing_changed_means_no_candidates() {
    let input = System::new().input(Minute::normal());
    assert!(investigate(&input).is_empty());
}

#[test]
fn failures_count_where_they_start() {
    let input = System::new().input(Minute {
        payment_fails: true,
        ..Minute::normal()
    });
    let ranked = investigate(&input);
    assert_eq!(services(&ranked), ["payment"], "{ranked:#?}");
    assert_eq!(ranked[0].evidence[0].kind, EvidenceKind::ErrorRatio);
    assert!(ranked[0].evidence[0].new);
}

#[test]
fn error_lines_of_callers_above_a_failing_callee_are_propagation() {
    let mut input = System::new().input(Minute::normal());
    // In the window, payment logs an error on its span and checkout logs one on its own
    // span of the same traces (what a caller prints when its call fails); no span status.
    let mut lines = Vec::new();
    let mut counts = Vec::new();
    let window_spans: Vec<SpanRow> = input
        .spans
        .iter()
        .filter(|s| WINDOW.contains_ns(s.start_ns))
        .cloned()
        .collect();
    for s in &window_spans {
        let (service, pattern) = match s.service.as_str() {
            "payment" => ("payment", 7),
            "checkout" => ("checkout", 8),
            _ => continue,
        };
        lines.push(WindowLogLine {
            ts_ns: s.start_ns,
            service: service.into(),
            pattern_id: pattern,
            severity: 17,
            trace_id: s.trace_id.clone(),
            span_id: s.span_id.clone(),
        });
        counts.push(LogCount {
            minute: Input::minute_of(WINDOW, s.start_ns),
            service: service.into(),
            pattern_id: pattern,
            severity: 17,
            count: 1,
        });
    }
    // Routine info lines in every minute, the window's too.
    for m in (0..55).chain(60..63) {
        counts.push(log_count(m, "checkout", 1, 9, 10));
    }
    input.window_lines = lines;
    input.log_counts = counts;
    let ranked = investigate(&input);
    assert_eq!(services(&ranked), ["payment"], "{ranked:#?}");
    assert!(
        ranked[0].reasons[0].contains("new error pattern"),
        "{:?}",
        ranked[0].reasons
    );
}

#[test]
fn a_pattern_present_all_along_is_not_news() {
    let mut input = System::new().input(Minute::normal());
    for m in (0..55).chain(60..63) {
        input
            .log_counts
            .push(log_count(m, "checkout", 3, 17, 4 + (m % 3) as u64));
    }
    assert!(investigate(&input).is_empty());
}

#[test]
fn a_service_that_stopped_answering_is_named() {
    let input = System::new().input(Minute {
        payment_down: true,
        ..Minute::normal()
    });
    let ranked = investigate(&input);
    assert_eq!(ranked[0].service, "payment", "{ranked:#?}");
    assert_eq!(ranked[0].evidence[0].kind, EvidenceKind::RequestsStopped);
    assert!(ranked[0].reasons[0].contains("down or unreachable"));
}

#[test]
fn metrics_alone_rank_below_the_request_path_and_corroborate_it() {
    let mut input = System::new().input(Minute {
        payment_ms: 400.0,
        ..Minute::normal()
    });
    let series = |service: &str, jump: f64| MetricSeries {
        service: service.into(),
        name: "cpu.usage".into(),
        labels: String::new(),
        unit: "%".into(),
        points: (0..63)
            .map(|m| (m * MIN, if m >= 60 { jump } else { 20.0 + (m % 4) as f64 }))
            .collect(),
    };
    input.metrics = vec![series("catalogue", 95.0), series("payment", 90.0)];
    let ranked = investigate(&input);
    assert_eq!(services(&ranked), ["payment", "catalogue"], "{ranked:#?}");
    assert!(ranked[0].reasons.iter().any(|r| r.starts_with("Corroborated")));
    assert!(ranked[1].reasons.iter().any(|r| r.starts_with("Only resource metrics")));
}

#[test]
fn a_metric_jump_however_large_does_not_outrank_a_weak_request_path_change() {
    let ev = |kind, service: &str, strength| {
        Evidence::new(kind, service, "s".into(), (1.0, 2.0), "", strength, String::new())
    };
    let calls = BTreeMap::from([("frontend".to_string(), BTreeSet::from(["route".to_string()]))]);
    let ranked = rank_candidates(
        vec![
            ev(EvidenceKind::Metric, "admin", 500.0),
            ev(EvidenceKind::Metric, "config", 8.0),
            // A caller demoted for its callee's trouble still ranks above metrics alone.
            ev(EvidenceKind::LogPattern, "frontend", MIN_STRENGTH),
            ev(EvidenceKind::LogPattern, "route", MIN_STRENGTH + 0.5),
        ],
        &calls,
    );
    assert_eq!(
        services(&ranked),
        ["route", "frontend", "admin", "config"],
        "{ranked:#?}"
    );
    assert!(ranked.windows(2).all(|w| w[0].score >= w[1].score));
}

#[test]
fn the_lead_in_is_the_whole_minutes_before_the_window_after_the_baseline() {
    assert_eq!(
        Input::lead_in_for(WINDOW, BASELINE),
        Some(TimeRange {
            start_ms: 57 * MIN,
            end_ms: 60 * MIN
        })
    );
    let touching = TimeRange {
        start_ms: 0,
        end_ms: 60 * MIN,
    };
    assert_eq!(Input::lead_in_for(WINDOW, touching), None);
    let later = TimeRange {
        start_ms: 70 * MIN,
        end_ms: 90 * MIN,
    };
    assert_eq!(Input::lead_in_for(WINDOW, later), None);
}

#[test]
fn trouble_already_under_way_before_the_window_is_not_what_began_in_it() {
    let slow_payment = Minute {
        payment_ms: 400.0,
        ..Minute::normal()
    };
    let window = Minute {
        checkout_ms: 200.0,
        ..slow_payment
    };
    // Without a lead-in, both changes look equally new…
    let blind = investigate(&System::new().input(window));
    assert_eq!(services(&blind)[0], "payment", "{blind:#?}");
    // …with it, payment was as slow before the window: checkout is what began.
    let ranked = investigate(&System::new().input_with_lead_in(slow_payment, window));
    assert_eq!(services(&ranked), ["checkout"], "{ranked:#?}");
    // A change that grew further in the window keeps the rise since, and says so.
    let worse = Minute {
        payment_ms: 4000.0,
        ..Minute::normal()
    };
    let ranked = investigate(&System::new().input_with_lead_in(slow_payment, worse));
    assert_eq!(services(&ranked), ["payment"], "{ranked:#?}");
    assert!(ranked[0].evidence[0].sentence.contains("already"), "{ranked:#?}");
}

#[test]
fn the_lead_in_s_lines_are_not_the_baseline() {
    // A short baseline (minutes 50..52) and a lead-in (57..60) in which payment already
    // logs the error it logs in the window: compared with the baseline it is new. When the
    // lead-in's minutes were counted as baseline (three of its five minutes), the pattern
    // looked routine and the window's comparison found nothing.
    let mut input = System::new().input_with_lead_in(Minute::normal(), Minute::normal());
    input.baseline = TimeRange {
        start_ms: 50 * MIN,
        end_ms: 52 * MIN,
    };
    input.lead_in = Input::lead_in_for(WINDOW, input.baseline);
    for m in [50, 51].into_iter().chain(57..60).chain(60..63) {
        input.log_counts.push(log_count(m, "checkout", 22, 9, 10));
        if m >= 57 {
            input.log_counts.push(log_count(m, "payment", 31, 17, 20));
        }
    }
    let evidence = gather(&input);
    let e = evidence
        .iter()
        .find(|e| e.kind == EvidenceKind::LogPattern)
        .unwrap_or_else(|| panic!("no log evidence: {evidence:#?}"));
    assert_eq!(
        (e.service.as_str(), e.pattern_id, e.new),
        ("payment", Some(31), true),
        "{e:#?}"
    );
    assert_eq!(e.before, 0.0, "{e:#?}");
    // With the lead-in consulted, the error was already there: not what began.
    let ranked = investigate(&input);
    assert!(!services(&ranked).contains(&"payment"), "{ranked:#?}");
}

#[test]
fn the_services_filter_keeps_only_those() {
    let mut input = System::new().input(Minute {
        payment_ms: 400.0,
        ..Minute::normal()
    });
    input.services = vec!["checkout".into()];
    assert!(investigate(&input).is_empty());
}

#[test]
fn a_routine_line_that_stopped_while_the_service_kept_working_is_named() {
    let mut input = System::new().input(Minute::normal());
    for m in (0..55).chain(60..63) {
        // payment prints "charged card" for every request, until the window; checkout's
        // own routine line goes on.
        for (service, pattern) in [("payment", 21), ("checkout", 22)] {
            if service == "payment" && m >= 60 {
                continue;
            }
            input.log_counts.push(log_count(m, service, pattern, 9, 10));
        }
    }
    let ranked = investigate(&input);
    assert_eq!(services(&ranked), ["payment"], "{ranked:#?}");
    let e = &ranked[0].evidence[0];
    assert_eq!(e.kind, EvidenceKind::LogPatternStopped);
    assert_eq!(e.pattern_id, Some(21));
    assert!(ranked[0].reasons[0].contains("no longer reached"));
}

#[test]
fn a_service_with_less_traffic_is_not_missing_lines() {
    let mut input = System::new().input(Minute::normal());
    // Only a tenth of payment's lines in the window and none of its spans: it was idle,
    // which is not a line that stopped while it kept working.
    input
        .spans
        .retain(|s| !(s.service == "payment" && WINDOW.contains_ns(s.start_ns)));
    for m in (0..55).chain(60..63) {
        input
            .log_counts
            .push(log_count(m, "payment", 21, 9, if m >= 60 { 1 } else { 10 }));
    }
    let ranked = investigate(&input);
    assert!(
        ranked
            .iter()
            .flat_map(|c| &c.evidence)
            .all(|e| e.kind != EvidenceKind::LogPatternStopped),
        "{ranked:#?}"
    );
}

#[test]
fn a_callee_that_refuses_connections_is_named_not_its_callers() {
    let mut sys = System::new();
    sys.client_spans = true;
    let input = sys.input(Minute {
        payment_down: true,
        ..Minute::normal()
    });
    let ranked = investigate(&input);
    assert_eq!(ranked[0].service, "payment", "{ranked:#?}");
    let kinds: Vec<EvidenceKind> = ranked[0].evidence.iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&EvidenceKind::RequestsStopped), "{kinds:?}");
    // checkout's failed calls are charged to payment, not to checkout.
    let failed = ranked[0]
        .evidence
        .iter()
        .find(|e| e.kind == EvidenceKind::ErrorRatio)
        .expect("the refused calls");
    assert_eq!(failed.signal, "calls from checkout (HTTP POST)");
    assert!(
        ranked
            .iter()
            .filter(|c| c.service != "payment")
            .all(|c| c.evidence.iter().all(|e| e.kind != EvidenceKind::ErrorRatio)),
        "{ranked:#?}"
    );
}

#[test]
fn with_client_spans_a_slow_callee_is_still_blamed_alone() {
    let mut sys = System::new();
    sys.client_spans = true;
    let input = sys.input(Minute {
        payment_ms: 400.0,
        ..Minute::normal()
    });
    assert_eq!(services(&investigate(&input)), ["payment"]);
}

/// Calls from `callers` into `callees` (each caller calls each callee once a request, through
/// a client span nested in its own server span), ten requests a minute over the baseline and
/// the window; in the window the calls `slow` names take `wait_ms` longer than the callee's
/// own span, which never changes.
fn calls(callers: &[&str], callees: &[&str], slow: &[(&str, &str)], wait_ms: f64) -> Input {
    let mut spans = Vec::new();
    let mut next = 0u64;
    let mut id = || {
        next += 1;
        format!("{next:016x}")
    };
    for m in (0..55).chain(60..63) {
        for k in 0..10 {
            let jitter = ((m * 7 + k * 3) % 5) * 50_000;
            for caller in callers {
                let trace = format!(
                    "{:032x}",
                    (m * 100 + k) * 10 + callers.iter().position(|c| c == caller).unwrap_or(0) as i64
                );
                let start = (m * MIN + k * 6_000) * 1_000_000;
                let server = id();
                let mut end = start + 1_000_000;
                let mut children = Vec::new();
                for callee in callees {
                    let late = m >= 60 && slow.contains(&(*caller, *callee));
                    let gap = 1_000_000 + jitter + if late { (wait_ms * 1e6) as i64 } else { 0 };
                    let (call, handled) = (id(), id());
                    let call_start = end;
                    let call_end = call_start + gap + 5_000_000;
                    children.push(SpanRow {
                        trace_id: trace.clone(),
                        span_id: call.clone(),
                        parent_span_id: server.clone(),
                        service: (*caller).into(),
                        operation: "HTTP GET".into(),
                        start_ns: call_start,
                        end_ns: call_end,
                        error: false,
                        peer: String::new(),
                    });
                    // The callee's own span: the same 5 ms whatever the wait before it.
                    children.push(SpanRow {
                        trace_id: trace.clone(),
                        span_id: handled,
                        parent_span_id: call,
                        service: (*callee).into(),
                        operation: "GET /item".into(),
                        start_ns: call_end - 5_000_000,
                        end_ns: call_end,
                        error: false,
                        peer: String::new(),
                    });
                    end = call_end;
                }
                spans.push(SpanRow {
                    trace_id: trace.clone(),
                    span_id: server,
                    parent_span_id: String::new(),
                    service: (*caller).into(),
                    operation: "GET /page".into(),
                    start_ns: start,
                    end_ns: end + 1_000_000,
                    error: false,
                    peer: String::new(),
                });
                spans.extend(children);
            }
        }
    }
    Input {
        window: WINDOW,
        baseline: BASELINE,
        spans,
        log_counts: Vec::new(),
        window_lines: Vec::new(),
        metrics: Vec::new(),
        services: Vec::new(),
        lead_in: None,
    }
}

#[test]
fn a_calls_wait_speaks_against_the_end_it_has_in_common() {
    // A starved callee: calls from both its callers wait longer, its own spans do not change.
    let ranked = investigate(&calls(&["web", "api"], &["db"], &[("web", "db"), ("api", "db")], 80.0));
    assert_eq!(services(&ranked)[0], "db", "{ranked:#?}");
    assert!(
        ranked[0].reasons[0].contains("calls into it from"),
        "{:?}",
        ranked[0].reasons
    );
    // A starved caller: its calls into both its callees wait longer; they are not to blame.
    let ranked = investigate(&calls(
        &["web"],
        &["db", "cache"],
        &[("web", "db"), ("web", "cache")],
        80.0,
    ));
    assert_eq!(services(&ranked), ["web"], "{ranked:#?}");
    // One caller, one callee, nothing else on either: the wait stays the caller's, as it was.
    let ranked = investigate(&calls(&["web"], &["db"], &[("web", "db")], 80.0));
    assert_eq!(services(&ranked), ["web"], "{ranked:#?}");
    // …unless the callee shows something of its own: its CPU.
    let mut input = calls(&["web"], &["db"], &[("web", "db")], 80.0);
    input.metrics.push(MetricSeries {
        service: "db".into(),
        name: "cpu".into(),
        labels: String::new(),
        unit: "%".into(),
        points: (0..55)
            .map(|m| (m * MIN, 10.0 + (m % 3) as f64))
            .chain((60..63).map(|m| (m * MIN, 95.0)))
            .collect(),
    });
    let ranked = investigate(&input);
    assert_eq!(services(&ranked)[0], "db", "{ranked:#?}");
}

#[test]
fn a_line_that_fell_behind_its_twin_is_named() {
    // payment prints "card checked" (21) and then "card charged" (23) for every request,
    // and a routine line of its own (22) at another pace; checkout's line goes on. In the
    // window "card charged" is printed for only a third of the requests: the code between
    // them fails part of the time.
    let lines = |charged_in_window: u64, checked_in_window: u64| {
        let mut input = System::new().input(Minute::normal());
        for m in (0..55).chain(60..63) {
            let window = m >= 60;
            let requests = 10 + (m % 4) as u64 * 3;
            let checked = if window { checked_in_window } else { requests };
            let charged = if window { charged_in_window } else { requests };
            input.log_counts.push(log_count(m, "payment", 21, 9, checked));
            input.log_counts.push(log_count(m, "payment", 23, 9, charged));
            input
                .log_counts
                .push(log_count(m, "payment", 22, 9, 5 + (m % 3) as u64));
            input.log_counts.push(log_count(m, "checkout", 31, 9, requests));
        }
        investigate(&input)
    };
    let ranked = lines(4, 12);
    assert_eq!(services(&ranked), ["payment"], "{ranked:#?}");
    let e = &ranked[0].evidence[0];
    assert_eq!(
        (e.kind, e.pattern_id),
        (EvidenceKind::LogPatternStopped, Some(23)),
        "{e:#?}"
    );
    assert!(e.sentence.contains("fell behind"), "{e:#?}");
    // Both twins printed less (less traffic): nothing fell behind.
    let ranked = lines(4, 4);
    assert!(
        ranked
            .iter()
            .flat_map(|c| &c.evidence)
            .all(|e| !e.sentence.contains("fell behind")),
        "{ranked:#?}"
    );
    // Nearly all of them still printed: a wobble, not a failure.
    let ranked = lines(10, 12);
    assert!(ranked.is_empty(), "{ranked:#?}");
}

#[test]
fn a_service_its_callers_stopped_calling_is_not_an_outage() {
    let sentence = |ranked: &[Candidate]| {
        ranked
            .iter()
            .flat_map(|c| &c.evidence)
            .find(|e| e.kind == EvidenceKind::RequestsStopped && e.service == "payment")
            .map(|e| (e.strength, e.sentence.clone()))
    };
    // Down: checkout's calls fail.
    let down = investigate(&System::new().input(Minute {
        payment_down: true,
        ..Minute::normal()
    }));
    let (down_strength, said) = sentence(&down).unwrap_or_else(|| panic!("{down:#?}"));
    assert!(said.contains("down or unreachable"), "{said}");
    // Not called: checkout goes on without failing and without calling it.
    let skipped = investigate(&System::new().input(Minute {
        payment_skipped: true,
        ..Minute::normal()
    }));
    let (skipped_strength, said) = sentence(&skipped).unwrap_or_else(|| panic!("{skipped:#?}"));
    assert!(said.contains("stopped calling it"), "{said}");
    assert!(
        skipped_strength < down_strength,
        "{skipped_strength} vs {down_strength}"
    );
}
