//! Investigations on small synthetic systems: frontend → checkout → payment.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

mod logs;
mod samples;
mod waits;

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
    // …with it, payment was as slow before the window: checkout is what began. Payment is
    // still listed after it, its evidence marked as under way before the window.
    let ranked = investigate(&System::new().input_with_lead_in(slow_payment, window));
    assert_eq!(services(&ranked), ["checkout", "payment"], "{ranked:#?}");
    assert!(ranked[1].evidence.iter().all(|e| e.ongoing), "{ranked:#?}");
    assert!(
        ranked[1].reasons.iter().any(|r| r.contains("before the window")),
        "{ranked:#?}"
    );
    // Below the request path, above a service whose only news is a resource metric.
    let mut with_metric = System::new().input_with_lead_in(slow_payment, window);
    with_metric.metrics.push(MetricSeries {
        service: "db".into(),
        name: "cpu".into(),
        labels: String::new(),
        unit: "%".into(),
        points: (0..63)
            .filter(|m| !(55..60).contains(m))
            .map(|m| (m * MIN, if m >= 60 { 95.0 } else { 10.0 + (m % 3) as f64 }))
            .collect(),
    });
    let ranked = investigate(&with_metric);
    assert_eq!(services(&ranked), ["checkout", "payment", "db"], "{ranked:#?}");
    assert!(ranked[1].score < ranked[0].score / 2.0 && ranked[2].score < ranked[1].score);
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
fn the_services_filter_keeps_only_those() {
    let mut input = System::new().input(Minute {
        payment_ms: 400.0,
        ..Minute::normal()
    });
    input.services = vec!["checkout".into()];
    assert!(investigate(&input).is_empty());
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
