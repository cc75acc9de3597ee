//! Log evidence: warning and error patterns, routine lines that stopped or fell behind.

use super::*;

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
fn a_new_error_is_measured_from_its_first_line() {
    // Five lines of an error payment never printed before, all in the window's last minute;
    // routine lines in every minute. Over the window's three minutes five lines are a weak
    // rate (2.9 σ); from the minute the error began they are not, and the quiet minutes
    // before it (a window begun earlier) say nothing of it.
    let mut input = System::new().input(Minute::normal());
    for m in (0..55).chain(60..63) {
        input.log_counts.push(log_count(m, "checkout", 1, 9, 10));
    }
    input.log_counts.push(log_count(62, "payment", 7, 17, 5));
    let ranked = investigate(&input);
    assert_eq!(services(&ranked), ["payment"], "{ranked:#?}");
    let evidence = &ranked[0].evidence[0];
    assert!(evidence.sentence.contains("new error pattern"), "{evidence:?}");
    assert!(evidence.strength >= 5.0 - 1e-9, "{evidence:?}");
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
    // With the lead-in consulted, the error was already there: not what began. It stays
    // listed, marked as under way before the window, in the tier below the request path.
    let ranked = investigate(&input);
    let payment = ranked.iter().find(|c| c.service == "payment").expect("listed");
    assert!(payment.evidence.iter().all(|e| e.ongoing), "{payment:#?}");
    assert!(payment.score < 0.14, "{payment:#?}");
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
fn a_routine_line_that_stopped_partway_through_the_window_is_named() {
    // payment prints "charged card" 20 times a minute, and in the window's first minute
    // still (an incident's window starts before the fault); then none, while its other
    // line goes on. Over the whole window that is a third of the usual count, not a stop.
    // The same, but payment falling silent altogether after the first minute, is no line
    // that stopped while the service kept working.
    let investigated = |service_goes_on: bool| {
        let mut input = System::new().input(Minute::normal());
        if !service_goes_on {
            input
                .spans
                .retain(|s| !(s.service == "payment" && s.start_ns >= 61 * MIN * 1_000_000));
        }
        for m in (0..55).chain(60..63) {
            if m <= 60 {
                input.log_counts.push(log_count(m, "payment", 21, 9, 20));
            }
            // At a pace of its own: no twin to fall behind (`patterns_fell_behind`).
            if m <= 60 || service_goes_on {
                input
                    .log_counts
                    .push(log_count(m, "payment", 22, 9, 14 + (m % 4) as u64 * 4));
            }
            input.log_counts.push(log_count(m, "checkout", 31, 9, 10));
        }
        investigate(&input)
    };
    let ranked = investigated(true);
    assert_eq!(services(&ranked), ["payment"], "{ranked:#?}");
    let e = &ranked[0].evidence[0];
    assert_eq!(
        (e.kind, e.pattern_id),
        (EvidenceKind::LogPatternStopped, Some(21)),
        "{e:#?}"
    );
    assert!(e.sentence.contains("partway"), "{e:#?}");
    assert!(
        investigated(false)
            .iter()
            .flat_map(|c| &c.evidence)
            .all(|e| e.kind != EvidenceKind::LogPatternStopped),
        "a service gone quiet has no line that stopped on its own"
    );
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
fn one_pattern_grown_in_several_services_is_shared_among_them() {
    // Routine lines in every minute; in the window, one error template (7) appears in
    // frontend, checkout and cart at 20 lines a minute each, without trace context — what
    // a framework's "request failed" line looks like, logged again by every caller — while
    // payment logs an error of its own (9) at 12 a minute.
    let mut input = System::new().input(Minute::normal());
    for m in (0..55).chain(60..63) {
        for service in ["frontend", "checkout", "cart", "payment"] {
            input.log_counts.push(log_count(m, service, 1, 9, 10));
        }
    }
    for m in 60..63 {
        for service in ["frontend", "checkout", "cart"] {
            input.log_counts.push(log_count(m, service, 7, 17, 20));
        }
        input.log_counts.push(log_count(m, "payment", 9, 17, 12));
    }
    let ranked = investigate(&input);
    assert_eq!(services(&ranked)[0], "payment", "{ranked:#?}");
    let shared = ranked
        .iter()
        .find(|c| c.service == "cart")
        .expect("cart keeps its share");
    assert!(
        shared.evidence[0].sentence.contains("grew in 3 services"),
        "{:?}",
        shared.evidence[0]
    );
    // In one service alone, the same lines are that service's own evidence.
    let mut alone = System::new().input(Minute::normal());
    for m in 60..63 {
        alone.log_counts.push(log_count(m, "cart", 7, 17, 20));
        alone.log_counts.push(log_count(m, "payment", 9, 17, 12));
    }
    assert_eq!(services(&investigate(&alone))[0], "cart");
}

#[test]
fn the_service_that_printed_a_shared_pattern_first_keeps_it_whole() {
    // Error 7 appears in cart at the window's first minute, and from the next one in
    // frontend and checkout too (the exception cart threw, logged again by its callers as it
    // reaches them); payment logs an error of its own. Cart is where it started: its lines
    // are not shared with the callers that followed, and it ranks above payment.
    let mut input = System::new().input(Minute::normal());
    for m in (0..55).chain(60..63) {
        for service in ["frontend", "checkout", "cart", "payment"] {
            input.log_counts.push(log_count(m, service, 1, 9, 10));
        }
    }
    for m in 60..63 {
        input.log_counts.push(log_count(m, "cart", 7, 17, 20));
        if m > 60 {
            for service in ["frontend", "checkout"] {
                input.log_counts.push(log_count(m, service, 7, 17, 20));
            }
        }
        input.log_counts.push(log_count(m, "payment", 9, 17, 12));
    }
    let ranked = investigate(&input);
    assert_eq!(services(&ranked)[0], "cart", "{ranked:#?}");
    assert!(
        ranked[0].evidence[0].sentence.contains("all after it had begun here"),
        "{:?}",
        ranked[0].evidence[0]
    );
    let frontend = ranked.iter().find(|c| c.service == "frontend");
    assert!(
        frontend.is_none_or(|c| c.evidence[0].sentence.contains("a share of it counts")),
        "{frontend:#?}"
    );
}

#[test]
fn a_shared_pattern_is_compared_with_the_lead_in_before_it_is_shared() {
    // frontend printed error 7 at 12 a minute in the lead-in, alone; in the window at 40 a
    // minute, and so did checkout and cart. frontend's rise is real: compared undivided it
    // began in the window. (Shared first, its third of the window fell below the lead-in's
    // whole and it read as already under way.)
    let mut input = System::new().input_with_lead_in(Minute::normal(), Minute::normal());
    for m in (0..55).chain(57..63) {
        for service in ["frontend", "checkout", "cart"] {
            input.log_counts.push(log_count(m, service, 1, 9, 10));
        }
    }
    for m in 57..60 {
        input.log_counts.push(log_count(m, "frontend", 7, 17, 12));
    }
    for m in 60..63 {
        for service in ["frontend", "checkout", "cart"] {
            input.log_counts.push(log_count(m, service, 7, 17, 40));
        }
    }
    let ranked = investigate(&input);
    let frontend = ranked.iter().find(|c| c.service == "frontend").expect("listed");
    let e = &frontend.evidence[0];
    assert_eq!((e.kind, e.ongoing), (EvidenceKind::LogPattern, false), "{frontend:#?}");
    assert!(e.sentence.contains("grew in 3 services"), "{e:#?}");
}
