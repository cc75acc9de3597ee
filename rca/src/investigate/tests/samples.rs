//! Evidence weighs as much as its requests can show.

use super::*;

/// `audit` serves one request a minute in the baseline (about 3 ms) and four in the window.
fn rare_operation(input: &mut Input, window_ms: f64) {
    let mut push = |m: i64, k: i64, ms: f64| {
        let start = (m * MIN + k * 10_000) * 1_000_000;
        input.spans.push(SpanRow {
            trace_id: format!("a{:031x}", m * 10 + k),
            span_id: format!("a{:015x}", m * 10 + k),
            parent_span_id: String::new(),
            service: "audit".into(),
            operation: "GET /audit".into(),
            start_ns: start,
            end_ns: start + (ms * 1e6) as i64,
            error: false,
            peer: String::new(),
        });
    };
    for m in 0..55 {
        push(m, 0, 3.0 + (m % 3) as f64 * 0.1);
    }
    for k in 0..4 {
        push(60, k, window_ms);
    }
}

#[test]
fn four_slow_requests_do_not_outweigh_thirty() {
    // checkout's own time grew 2.5× on all thirty requests of the window; a rarely used
    // operation's grew 50× on four. Both are real, but four requests are thin evidence:
    // by the median shift alone the four weighed 147 σ and ranked first.
    let mut input = System::new().input(Minute {
        checkout_ms: 25.0,
        ..Minute::normal()
    });
    rare_operation(&mut input, 150.0);
    let ranked = investigate(&input);
    assert_eq!(services(&ranked), ["checkout", "audit"], "{ranked:#?}");
    let audit = &ranked[1].evidence[0];
    assert!(audit.strength < 4.0 && audit.after > 100.0, "{audit:?}");
    // Alone, the four still make evidence: the cap limits them, it does not hide them.
    let mut quiet = System::new().input(Minute::normal());
    rare_operation(&mut quiet, 150.0);
    assert_eq!(services(&investigate(&quiet)), ["audit"]);
}
