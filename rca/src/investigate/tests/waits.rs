//! A call's wait (its self time beyond the callee's own span): which end it speaks against.

use super::*;

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
