//! Span evidence: self time, where failures start, requests that stopped.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::logs::ERROR;
use super::stats::{median, per_minute, rank_rise, robust_rise};
use super::{Evidence, EvidenceKind, Input, MIN_STRENGTH, SpanRow};

/// How far up a trace ancestors are followed (a cycle in bad data must not hang us).
const MAX_DEPTH: usize = 256;
/// The weight of "served no requests" when its callers went on without failing: they
/// stopped calling it, which is weaker evidence against it than an outage.
const NOT_CALLED: f64 = 0.25;

/// The spans of an investigation indexed by trace: parents, children, self times, and
/// which spans sit above a failure in another service.
pub(crate) struct TraceIndex<'a> {
    spans: &'a [SpanRow],
    by_id: HashMap<(&'a str, &'a str), usize>,
    /// Sum of the durations of each span's children, ns.
    children_ns: Vec<i64>,
    /// Services of each span's children.
    child_services: Vec<BTreeSet<&'a str>>,
}

impl<'a> TraceIndex<'a> {
    pub(crate) fn new(spans: &'a [SpanRow]) -> TraceIndex<'a> {
        let by_id: HashMap<(&str, &str), usize> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.trace_id.as_str(), s.span_id.as_str()), i))
            .collect();
        let mut children_ns = vec![0i64; spans.len()];
        let mut child_services = vec![BTreeSet::new(); spans.len()];
        for s in spans {
            if let Some(&p) = by_id.get(&(s.trace_id.as_str(), s.parent_span_id.as_str())) {
                children_ns[p] = children_ns[p].saturating_add((s.end_ns - s.start_ns).max(0));
                child_services[p].insert(s.service.as_str());
            }
        }
        TraceIndex {
            spans,
            by_id,
            children_ns,
            child_services,
        }
    }

    /// The service a span's own time and failure belong to: its own, except for a client
    /// span that names its callee and got no answer from it (no child span of the callee):
    /// then the time went waiting for the callee and the failure is the callee's — a
    /// refused connection to a service that is down is that service's outage.
    pub(crate) fn charged_service(&self, i: usize) -> &'a str {
        let s = &self.spans[i];
        if !s.peer.is_empty() && s.peer != s.service && !self.child_services[i].contains(s.peer.as_str()) {
            s.peer.as_str()
        } else {
            s.service.as_str()
        }
    }

    /// The service a span waited on: for a call into one other service — a span nested in
    /// its own service's work (its parent is of the same service) whose children are all that
    /// other service's — the time the call took beyond the callee's own span (the network,
    /// and the queue the request sat in before the callee began its work) belongs to the
    /// callee, not to the caller that made the call. A service starved of CPU shows that way:
    /// its spans stay short, its callers' calls into it grow. A span that is the entry of its
    /// service's work (a root, or called from another service) does its own work around the
    /// calls it makes, and keeps its time.
    pub(crate) fn waited_on(&self, i: usize) -> Option<&'a str> {
        let s = &self.spans[i];
        let nested = self
            .lookup(&s.trace_id, &s.parent_span_id)
            .is_some_and(|p| self.spans[p].service == s.service);
        let callees = &self.child_services[i];
        match callees.iter().next() {
            Some(callee) if nested && callees.len() == 1 && *callee != s.service.as_str() => Some(callee),
            _ => None,
        }
    }

    /// The operation as shown for the service it is charged to.
    pub(crate) fn charged_operation(&self, i: usize) -> String {
        let s = &self.spans[i];
        if self.charged_service(i) == s.service {
            s.operation.clone()
        } else {
            format!("calls from {} ({})", s.service, s.operation)
        }
    }

    pub(crate) fn lookup(&self, trace_id: &str, span_id: &str) -> Option<usize> {
        self.by_id.get(&(trace_id, span_id)).copied()
    }

    /// A span's own time: its duration minus its children's (never below zero; children
    /// that run in parallel can add up to more than their parent).
    pub(crate) fn self_ns(&self, i: usize) -> i64 {
        let s = &self.spans[i];
        ((s.end_ns - s.start_ns) - self.children_ns[i]).max(0)
    }

    /// The ancestors of span `i`, nearest first.
    fn ancestors(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        let mut current = i;
        std::iter::from_fn(move || {
            let s = &self.spans[current];
            let parent = self.lookup(&s.trace_id, &s.parent_span_id)?;
            current = parent;
            Some(parent)
        })
        .take(MAX_DEPTH)
    }

    /// Spans that have a failing span of *another* service below them: a failure there
    /// is propagating, not originating. `failing` are the failure sites.
    pub(crate) fn above_failures(&self, failing: &[usize]) -> HashSet<usize> {
        let mut marked = HashSet::new();
        for &site in failing {
            let service = self.charged_service(site);
            for a in self.ancestors(site) {
                if self.spans[a].service != service {
                    marked.insert(a);
                }
            }
        }
        marked
    }

    /// Caller → callees, from parent/child spans in different services.
    pub(crate) fn calls(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut calls: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (i, callees) in self.child_services.iter().enumerate() {
            let caller = &self.spans[i].service;
            for callee in callees {
                if *callee != caller {
                    calls.entry(caller.clone()).or_default().insert((*callee).to_string());
                }
            }
        }
        calls
    }
}

/// Distinct minutes holding at least one span, per range.
fn active_minutes(input: &Input) -> (BTreeSet<i64>, BTreeSet<i64>) {
    let mut baseline = BTreeSet::new();
    let mut window = BTreeSet::new();
    for s in &input.spans {
        if input.window.contains_ns(s.start_ns) {
            window.insert(Input::minute_of(input.window, s.start_ns));
        } else if input.baseline.contains_ns(s.start_ns) {
            baseline.insert(Input::minute_of(input.window, s.start_ns));
        }
    }
    (baseline, window)
}

/// How the operation of a call's wait is named, before the caller and its operation.
const WAITING: &str = "calls from ";

/// Operations whose median self time in the window is far above the medians the same
/// operation had minute by minute in the baseline. The self time of a call into one other
/// service is that service's wait ([`TraceIndex::waited_on`]).
pub(crate) fn self_time(input: &Input, index: &TraceIndex<'_>) -> Vec<Evidence> {
    type Key<'a> = (&'a str, String);
    let mut baseline: HashMap<Key<'_>, BTreeMap<i64, Vec<f64>>> = HashMap::new();
    let mut window: HashMap<Key<'_>, Vec<(f64, usize)>> = HashMap::new();
    for (i, s) in input.spans.iter().enumerate() {
        let own = (index.charged_service(i), index.charged_operation(i));
        // A call's wait is evidence on both ends: a starved callee queues the request, a
        // starved caller is late to read the answer. Other evidence decides between them.
        let waited = index
            .waited_on(i)
            .map(|callee| (callee, format!("{WAITING}{} ({})", s.service, s.operation)));
        let ms = index.self_ns(i) as f64 / 1e6;
        for key in std::iter::once(own).chain(waited) {
            if input.window.contains_ns(s.start_ns) {
                window.entry(key).or_default().push((ms, i));
            } else if input.baseline.contains_ns(s.start_ns) {
                baseline
                    .entry(key)
                    .or_default()
                    .entry(Input::minute_of(input.window, s.start_ns))
                    .or_default()
                    .push(ms);
            }
        }
    }
    let mut out = Vec::new();
    for (key, mut spans) in window {
        let Some(minutes) = baseline.get(&key) else { continue };
        if spans.len() < 3 || minutes.len() < 3 {
            continue;
        }
        let medians: Vec<f64> = minutes.values().map(|v| median(v)).collect();
        let before = median(&medians);
        let window_requests: Vec<f64> = spans.iter().map(|s| s.0).collect();
        let after = median(&window_requests);
        // A tenth of the usual value or a millisecond: timer resolution and GC pauses
        // move a sub-millisecond operation by more than its MAD.
        let shift = robust_rise(after, &medians, (0.1 * before).max(1.0));
        // Kept while the shift itself is strong enough, even if the cap below is not: the
        // lead-in has fewer requests, and its shift must be there to compare the window's
        // with. What stays below the minimum once compared is dropped (`finish`).
        if shift < MIN_STRENGTH || after < 1.2 * before {
            continue;
        }
        // How far the median moved, but no further than the requests can show: per-minute
        // medians of a rare operation wobble little in a quiet baseline, and five slow
        // requests then read as a 60 σ shift that outranked every other service. The rank
        // test's z grows with the requests seen (about √(3n) at most for n requests against
        // a much larger baseline: 3.9 for five, 9.5 for thirty), so a shift counts
        // only as far as both its size and its sample support it.
        let baseline_requests: Vec<f64> = minutes.values().flatten().copied().collect();
        let strength = shift.min(rank_rise(&window_requests, &baseline_requests));
        // The slowest first, ties by trace id: the same rows in any order give the same
        // samples (a cluster's workers send them in no particular order).
        spans.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then_with(|| input.spans[a.1].trace_id.cmp(&input.spans[b.1].trace_id))
        });
        let mut samples: Vec<String> = Vec::new();
        for (_, i) in &spans {
            let t = &input.spans[*i].trace_id;
            if !samples.contains(t) {
                samples.push(t.clone());
            }
            if samples.len() == 3 {
                break;
            }
        }
        let sentence = match key.1.strip_prefix(WAITING) {
            Some(caller) => format!(
                "{}: calls into it from {caller} took {} at the median over {} requests beyond its own spans, against {} before (time on the network or queued before it began the work)",
                key.0,
                fmt_ms(after),
                spans.len(),
                fmt_ms(before)
            ),
            None => format!(
                "{} {}: its own time (without the calls it makes) was {} at the median over {} requests, against {} before",
                key.0,
                key.1,
                fmt_ms(after),
                spans.len(),
                fmt_ms(before)
            ),
        };
        out.push(Evidence {
            operation: Some(key.1.to_string()),
            samples,
            uncapped: Some(shift),
            ..Evidence::new(
                EvidenceKind::SelfTime,
                key.0,
                key.1.to_string(),
                (before, after),
                "ms",
                strength,
                sentence,
            )
        });
    }
    out
}

/// The caller named in a callee's wait evidence.
fn waiting_caller(e: &Evidence) -> Option<&str> {
    if e.kind != EvidenceKind::SelfTime {
        return None;
    }
    let rest = e.signal.strip_prefix(WAITING)?;
    Some(rest.rsplit_once(" (").map_or(rest, |(caller, _)| caller))
}

/// Decides, for each call whose wait grew, which end it speaks against — the caller keeps
/// its own evidence of the same spans either way. One caller waiting longer on several
/// callees is the common factor (a starved caller is late to read every answer): the
/// callees' copies are dropped. Several callers waiting longer on one callee point at it:
/// kept. One caller and one callee: the wait only corroborates — kept for a callee that
/// shows something else too (its CPU, its errors), dropped otherwise.
pub(crate) fn settle_waits(evidence: &mut Vec<Evidence>) {
    let mut callees_of: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut callers_of: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut other: HashSet<String> = HashSet::new();
    for e in evidence.iter() {
        match waiting_caller(e) {
            Some(caller) => {
                callees_of
                    .entry(caller.to_string())
                    .or_default()
                    .insert(e.service.clone());
                callers_of
                    .entry(e.service.clone())
                    .or_default()
                    .insert(caller.to_string());
            }
            None => {
                other.insert(e.service.clone());
            }
        }
    }
    evidence.retain(|e| {
        let Some(caller) = waiting_caller(e) else { return true };
        let fan_out = callees_of.get(caller).map_or(0, BTreeSet::len);
        let fan_in = callers_of.get(&e.service).map_or(0, BTreeSet::len);
        fan_in > fan_out || (fan_in == fan_out && other.contains(&e.service))
    });
}

/// Operations where more requests failed than in the baseline, counting a failure only
/// in the service where it started.
pub(crate) fn error_ratio(input: &Input, index: &TraceIndex<'_>) -> Vec<Evidence> {
    let failing: Vec<usize> = (0..input.spans.len()).filter(|&i| input.spans[i].error).collect();
    if failing.is_empty() {
        return Vec::new();
    }
    let propagating = index.above_failures(&failing);
    type Key<'a> = (&'a str, String);
    // per key: minute -> (requests, originating errors)
    let mut baseline: HashMap<Key<'_>, BTreeMap<i64, (u64, u64)>> = HashMap::new();
    let mut window: HashMap<Key<'_>, (u64, u64, Vec<usize>)> = HashMap::new();
    for (i, s) in input.spans.iter().enumerate() {
        let key = (index.charged_service(i), index.charged_operation(i));
        let originating = s.error && !propagating.contains(&i);
        if input.window.contains_ns(s.start_ns) {
            let w = window.entry(key).or_default();
            w.0 += 1;
            if originating {
                w.1 += 1;
                w.2.push(i);
            }
        } else if input.baseline.contains_ns(s.start_ns) {
            let m = baseline
                .entry(key)
                .or_default()
                .entry(Input::minute_of(input.window, s.start_ns))
                .or_default();
            m.0 += 1;
            m.1 += u64::from(originating);
        }
    }
    let mut out = Vec::new();
    for (key, (requests, errors, failed)) in window {
        if errors < 3 {
            continue;
        }
        let ratios: Vec<f64> = baseline
            .get(&key)
            .map(|m| m.values().map(|(n, e)| *e as f64 / *n as f64).collect())
            .unwrap_or_default();
        let ratios = if ratios.is_empty() { vec![0.0] } else { ratios };
        let before = median(&ratios);
        let after = errors as f64 / requests as f64;
        // The binomial noise of the window's own ratio is the least a change must beat.
        let p = before.max(0.5 / requests as f64);
        let floor = (p * (1.0 - p) / requests as f64).sqrt().max(0.01);
        let strength = robust_rise(after, &ratios, floor);
        if strength < MIN_STRENGTH {
            continue;
        }
        // The latest failures, ties by trace id: independent of the rows' order.
        let mut latest: Vec<&SpanRow> = failed.iter().map(|&i| &input.spans[i]).collect();
        latest.sort_by(|a, b| b.start_ns.cmp(&a.start_ns).then_with(|| a.trace_id.cmp(&b.trace_id)));
        let mut samples: Vec<String> = Vec::new();
        for span in latest {
            if !samples.contains(&span.trace_id) {
                samples.push(span.trace_id.clone());
            }
            if samples.len() == 3 {
                break;
            }
        }
        let sentence = format!(
            "{} {}: {errors} of {requests} requests failed there ({:.1} %), against {:.1} % before; failures of its callees are not counted here",
            key.0,
            key.1,
            after * 100.0,
            before * 100.0
        );
        out.push(Evidence {
            operation: Some(key.1.to_string()),
            samples,
            new: before == 0.0,
            ..Evidence::new(
                EvidenceKind::ErrorRatio,
                key.0,
                key.1.to_string(),
                (before * 100.0, after * 100.0),
                "%",
                strength,
                sentence,
            )
        });
    }
    out
}

/// Services that served requests every baseline minute and none in the window, while
/// others did: the service is down or unreachable — or, when the services that called it
/// went on in the window without failing, no longer called.
pub(crate) fn requests_stopped(input: &Input, index: &TraceIndex<'_>) -> Vec<Evidence> {
    let (baseline_minutes, window_minutes) = active_minutes(input);
    if window_minutes.is_empty() || baseline_minutes.len() < 3 {
        return Vec::new();
    }
    let mut served: BTreeMap<&str, BTreeMap<i64, u64>> = BTreeMap::new();
    let mut in_window: HashSet<&str> = HashSet::new();
    // Who failed in the window: an error span (a client span that got no answer is one), or
    // an error line.
    let mut failed: HashSet<&str> = HashSet::new();
    for s in &input.spans {
        if input.window.contains_ns(s.start_ns) {
            in_window.insert(s.service.as_str());
            if s.error {
                failed.insert(s.service.as_str());
            }
        } else if input.baseline.contains_ns(s.start_ns) {
            *served
                .entry(s.service.as_str())
                .or_default()
                .entry(Input::minute_of(input.window, s.start_ns))
                .or_default() += 1;
        }
    }
    for l in &input.window_lines {
        if l.severity >= ERROR && input.window.contains_ns(l.ts_ns) {
            failed.insert(l.service.as_str());
        }
    }
    // Who calls whom, read only when some service stopped.
    let mut calls: Option<BTreeMap<String, BTreeSet<String>>> = None;
    let mut out = Vec::new();
    for (service, minutes) in served {
        if in_window.contains(service) {
            continue;
        }
        let before = median(&per_minute(Some(&minutes), &baseline_minutes));
        if before < 1.0 {
            continue;
        }
        // Poisson: seeing none where n·λ were expected has a z of about √(n·λ).
        let expected = before * window_minutes.len() as f64;
        let strength = expected.sqrt().max(3.0);
        // Its callers went on working and none of them failed: they stopped calling it.
        // A service that is down makes its callers fail (refused connections, timeouts);
        // one nobody calls any more is where a change upstream shows, not an outage.
        let went_on: Vec<&str> = calls
            .get_or_insert_with(|| index.calls())
            .iter()
            .filter(|(caller, callees)| callees.contains(service) && in_window.contains(caller.as_str()))
            .map(|(caller, _)| caller.as_str())
            .collect();
        let abandoned = !went_on.is_empty() && went_on.iter().all(|c| !failed.contains(c));
        let (strength, sentence) = if abandoned {
            (
                (strength * NOT_CALLED).max(MIN_STRENGTH),
                format!(
                    "{service} served no requests in the window, against {before:.0} a minute before, and its callers ({}) went on without failing: they stopped calling it — a change upstream rather than an outage",
                    went_on.join(", ")
                ),
            )
        } else {
            (
                strength,
                format!(
                    "{service} served no requests in the window, against {before:.0} a minute before, while other services went on: it is down or unreachable"
                ),
            )
        };
        out.push(Evidence::new(
            EvidenceKind::RequestsStopped,
            service,
            "requests".into(),
            (before, 0.0),
            "/min",
            strength,
            sentence,
        ));
    }
    out
}

pub(crate) fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.2} ms")
    }
}
