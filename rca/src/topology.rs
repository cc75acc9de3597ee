//! The service dependency graph, built from spans as they arrive.
//!
//! A span whose parent belongs to another service is a call from the parent's service to
//! the span's. Parents are found through a bounded map of recent span ids; a child that
//! arrives before its parent waits (bounded) until the parent shows up. Each edge keeps its
//! call count, errors and a log-scale latency histogram over a sliding window of one-minute
//! buckets, so the graph reflects current traffic.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use serde::Serialize;

/// Recent spans remembered for parent lookups.
const MAX_SPANS: usize = 200_000;
/// Children waiting for their parent span.
const MAX_PENDING: usize = 50_000;
/// Minutes of traffic an edge's figures cover.
const WINDOW_MINUTES: usize = 15;
const LAT_BUCKETS: usize = 96;
/// An edge with no call for this long (event time) is forgotten by
/// [`Topology::forget_idle`]: a call that was removed by a deploy stops linking its services,
/// and a long-running collector's graph does not keep every edge it ever saw.
const EDGE_IDLE_MS: i64 = 24 * 3_600_000;

/// What the topology needs from one span.
#[derive(Debug, Clone)]
pub struct SpanRef<'a> {
    /// `service.name` of the span's resource.
    pub service: &'a str,
    /// The 8-byte OTLP span id read as a big-endian integer (the collector's reading; any
    /// reading works if parents use the same). Parents are looked up by it alone, not by
    /// trace.
    pub span_id: u64,
    /// The parent's span id, read like `span_id`; `None` for a root span.
    pub parent_span_id: Option<u64>,
    /// End time, unix ms: picks the one-minute bucket the call is counted in (event time).
    pub end_ms: i64,
    /// Duration in seconds; the call's latency on its edge.
    pub duration_s: f64,
    /// OTLP status code ERROR; counts toward the edge's `error_ratio`.
    pub error: bool,
    /// The service a client span calls, when it names it (`peer.service`): the edge to it is
    /// counted from this span, so a callee that answers nothing (it is down) still has its
    /// edge, drawn failing.
    pub peer: Option<&'a str>,
}

#[derive(Debug, Clone)]
struct Minute {
    start_ms: i64,
    calls: u64,
    errors: u64,
    latency: [u32; LAT_BUCKETS],
}

#[derive(Debug, Clone, Default)]
struct EdgeStats {
    minutes: VecDeque<Minute>,
    last_seen_ms: i64,
}

fn lat_bucket(seconds: f64) -> usize {
    // 1.25^i microseconds: 96 buckets reach past an hour.
    let us = (seconds * 1e6).max(1.0);
    ((us.ln() / 1.25f64.ln()).floor().max(0.0) as usize).min(LAT_BUCKETS - 1)
}

impl EdgeStats {
    fn add(&mut self, end_ms: i64, duration_s: f64, error: bool) {
        let start = end_ms - end_ms.rem_euclid(60_000);
        if self.minutes.back().is_none_or(|m| m.start_ms < start) {
            self.minutes.push_back(Minute {
                start_ms: start,
                calls: 0,
                errors: 0,
                latency: [0; LAT_BUCKETS],
            });
            while self.minutes.len() > WINDOW_MINUTES {
                self.minutes.pop_front();
            }
        }
        // Late spans land in their own minute when it is still in the window.
        if let Some(m) = self.minutes.iter_mut().rev().find(|m| m.start_ms == start) {
            m.calls += 1;
            m.errors += u64::from(error);
            m.latency[lat_bucket(duration_s)] += 1;
        }
        self.last_seen_ms = self.last_seen_ms.max(end_ms);
    }
}

/// One edge of the graph as served.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edge {
    /// The calling service.
    pub from: String,
    /// The called service (possibly one that never sent spans, named by a client span's
    /// `peer.service`).
    pub to: String,
    /// Calls in the one-minute buckets starting within the fifteen minutes before `now_ms`.
    pub calls: u64,
    /// `calls` divided by the minutes that had calls (not by the whole fifteen): the rate
    /// while the edge was busy.
    pub calls_per_s: f64,
    /// Share of `calls` that ended in error, 0..1; 0 with no calls.
    pub error_ratio: f64,
    /// Median call duration, seconds: the geometric middle of a histogram bucket 25 % wide,
    /// so good to about ±12 %; 0 with no calls.
    pub p50_s: f64,
    /// 99th percentile call duration, seconds, as coarse as `p50_s`; 0 with no calls.
    pub p99_s: f64,
    /// End time of the latest call ever counted on the edge, unix ms (may fall outside the
    /// window's buckets for a late span).
    pub last_seen_ms: i64,
}

/// The service graph as of one moment ([`Topology::graph`]), as
/// `GET /api/v1/services/graph` serves it: edges with traffic in the last fifteen minutes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Graph {
    /// Every service the topology has ever seen, sent spans or named as a peer, sorted;
    /// including services with no edge in the window.
    pub services: Vec<String>,
    /// Caller → callee edges active in the window, with their RED figures; ordered by the
    /// order the services were first seen, not by name.
    pub edges: Vec<Edge>,
}

/// The service dependency graph, learned from spans: parent and child spans of different
/// services, and client spans naming their `peer.service`. The relations
/// ([`Topology::near`], [`Topology::depends_on`], [`Topology::callees`]) use every edge
/// seen until [`Topology::forget_idle`] drops those silent for a day; [`Topology::graph`]
/// shows only the last fifteen minutes' traffic.
#[derive(Debug, Default)]
pub struct Topology {
    span_service: HashMap<u64, u32>,
    span_order: VecDeque<u64>,
    services: Vec<String>,
    service_idx: HashMap<String, u32>,
    pending: HashMap<u64, Vec<(u32, i64, f64, bool)>>,
    pending_count: usize,
    edges: BTreeMap<(u32, u32), EdgeStats>,
    /// Client spans whose edge was counted from the caller's side (their callee's server
    /// span must not count it again).
    peer_spans: HashSet<u64>,
    /// Services that have sent spans (a peer named by a client span may never have).
    senders: HashSet<u32>,
    /// Event time of the last [`Topology::forget_idle`] sweep.
    swept_ms: i64,
}

impl Topology {
    /// An empty graph: no services, no edges, nothing near anything but itself.
    pub fn new() -> Topology {
        Topology::default()
    }

    fn intern(&mut self, service: &str) -> u32 {
        if let Some(&i) = self.service_idx.get(service) {
            return i;
        }
        let i = self.services.len() as u32;
        self.services.push(service.to_string());
        self.service_idx.insert(service.to_string(), i);
        i
    }

    /// Whether `service` has sent spans (its requests can be seen).
    pub fn has_service(&self, service: &str) -> bool {
        self.service_idx.get(service).is_some_and(|i| self.senders.contains(i))
    }

    /// Adds one span: its service, the edge to its `peer` when it names one, and the edge
    /// from its parent's service when that differs. A span whose parent has not arrived
    /// waits and is counted when the parent comes (50,000 may wait; past that the call is
    /// not counted); the last 200,000 span ids are remembered for that lookup. A call
    /// counted from the client's `peer` side is not counted again from the server span.
    pub fn observe(&mut self, span: &SpanRef<'_>) {
        let svc = self.intern(span.service);
        self.senders.insert(svc);
        if self.span_service.insert(span.span_id, svc).is_none() {
            self.span_order.push_back(span.span_id);
            if self.span_order.len() > MAX_SPANS
                && let Some(old) = self.span_order.pop_front()
            {
                self.span_service.remove(&old);
                self.peer_spans.remove(&old);
            }
        }
        if let Some(peer) = span.peer.filter(|p| *p != span.service) {
            let callee = self.intern(peer);
            self.edges
                .entry((svc, callee))
                .or_default()
                .add(span.end_ms, span.duration_s, span.error);
            self.peer_spans.insert(span.span_id);
        }
        let counted_by_caller = self.peer_spans.contains(&span.span_id);
        // Children that were waiting for this span.
        if let Some(children) = self.pending.remove(&span.span_id) {
            self.pending_count -= children.len();
            for (child, end, dur, err) in children {
                if child != svc && !counted_by_caller {
                    self.edges.entry((svc, child)).or_default().add(end, dur, err);
                }
            }
        }
        if let Some(parent) = span.parent_span_id {
            match self.span_service.get(&parent) {
                Some(_) if self.peer_spans.contains(&parent) => {}
                Some(&p) if p != svc => {
                    self.edges
                        .entry((p, svc))
                        .or_default()
                        .add(span.end_ms, span.duration_s, span.error)
                }
                Some(_) => {}
                None if self.pending_count < MAX_PENDING => {
                    self.pending
                        .entry(parent)
                        .or_default()
                        .push((svc, span.end_ms, span.duration_s, span.error));
                    self.pending_count += 1;
                }
                None => {}
            }
        }
    }

    /// Forgets the edges with no call in the day before `now_ms` (event time,
    /// as the caller's sources agree on it: a span stamped far in the future must not wipe
    /// the graph, so the topology does not take its own clock from span times). Sweeps at
    /// most once a minute of event time; services stay known.
    pub fn forget_idle(&mut self, now_ms: i64) {
        if now_ms.saturating_sub(self.swept_ms) < 60_000 {
            return;
        }
        self.swept_ms = now_ms;
        let horizon = now_ms.saturating_sub(EDGE_IDLE_MS);
        self.edges.retain(|_, e| e.last_seen_ms >= horizon);
    }

    /// The graph as of `now_ms` (edges silent for longer than the window are left out).
    pub fn graph(&self, now_ms: i64) -> Graph {
        let horizon = now_ms - (WINDOW_MINUTES as i64) * 60_000;
        let edges: Vec<Edge> = self
            .edges
            .iter()
            .filter(|(_, e)| e.last_seen_ms >= horizon)
            .map(|(&(f, t), e)| {
                let minutes: Vec<&Minute> = e.minutes.iter().filter(|m| m.start_ms >= horizon).collect();
                let calls: u64 = minutes.iter().map(|m| m.calls).sum();
                let errors: u64 = minutes.iter().map(|m| m.errors).sum();
                let mut hist = [0u64; LAT_BUCKETS];
                for m in &minutes {
                    for (h, &c) in hist.iter_mut().zip(m.latency.iter()) {
                        *h += u64::from(c);
                    }
                }
                let q = |p: f64| {
                    let target = ((p * calls as f64).ceil() as u64).max(1);
                    let mut seen = 0;
                    for (i, &c) in hist.iter().enumerate() {
                        seen += c;
                        if seen >= target {
                            return 1.25f64.powf(i as f64 + 0.5) / 1e6;
                        }
                    }
                    0.0
                };
                let span_s = (minutes.len().max(1) * 60) as f64;
                Edge {
                    from: self.services[f as usize].clone(),
                    to: self.services[t as usize].clone(),
                    calls,
                    calls_per_s: calls as f64 / span_s,
                    error_ratio: if calls == 0 { 0.0 } else { errors as f64 / calls as f64 },
                    p50_s: if calls == 0 { 0.0 } else { q(0.5) },
                    p99_s: if calls == 0 { 0.0 } else { q(0.99) },
                    last_seen_ms: e.last_seen_ms,
                }
            })
            .collect();
        let mut services: BTreeSet<String> = self.services.iter().cloned().collect();
        for e in &edges {
            services.insert(e.from.clone());
            services.insert(e.to.clone());
        }
        Graph {
            services: services.into_iter().collect(),
            edges,
        }
    }

    /// Services `service` calls (directly).
    pub fn callees(&self, service: &str) -> Vec<String> {
        let Some(&s) = self.service_idx.get(service) else {
            return Vec::new();
        };
        self.edges
            .keys()
            .filter(|(f, _)| *f == s)
            .map(|(_, t)| self.services[*t as usize].clone())
            .collect()
    }

    /// Whether `to` can be reached from `from` by following calls (callee direction).
    pub fn depends_on(&self, from: &str, to: &str) -> bool {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(s) = stack.pop() {
            for c in self.callees(&s) {
                if c == to {
                    return true;
                }
                if seen.insert(c.clone()) {
                    stack.push(c);
                }
            }
        }
        false
    }

    /// Whether the two services are within `hops` calls of each other, either direction.
    pub fn near(&self, a: &str, b: &str, hops: usize) -> bool {
        if a == b {
            return true;
        }
        let neighbours = |s: &str| -> Vec<String> {
            let Some(&i) = self.service_idx.get(s) else {
                return Vec::new();
            };
            self.edges
                .keys()
                .filter_map(|&(f, t)| {
                    if f == i {
                        Some(self.services[t as usize].clone())
                    } else if t == i {
                        Some(self.services[f as usize].clone())
                    } else {
                        None
                    }
                })
                .collect()
        };
        let mut frontier = vec![a.to_string()];
        let mut seen: BTreeSet<String> = frontier.iter().cloned().collect();
        for _ in 0..hops {
            let mut next = Vec::new();
            for s in &frontier {
                for n in neighbours(s) {
                    if n == b {
                        return true;
                    }
                    if seen.insert(n.clone()) {
                        next.push(n);
                    }
                }
            }
            frontier = next;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span<'a>(service: &'a str, id: u64, parent: Option<u64>, end_ms: i64, dur: f64, error: bool) -> SpanRef<'a> {
        SpanRef {
            service,
            span_id: id,
            parent_span_id: parent,
            end_ms,
            duration_s: dur,
            error,
            peer: None,
        }
    }

    #[test]
    fn client_spans_naming_their_callee_draw_its_edge_even_when_it_is_down() {
        let mut t = Topology::new();
        let t0 = 1_795_392_000_000;
        for i in 0..20u64 {
            let base = i * 10;
            let end = t0 + i as i64 * 1000;
            let down = i >= 10;
            t.observe(&span("checkout", base + 1, None, end, 0.3, down));
            // checkout's client span to payment; payment answers only while it is up.
            t.observe(&SpanRef {
                peer: Some("payment"),
                ..span("checkout", base + 2, Some(base + 1), end, 0.2, down)
            });
            if !down {
                t.observe(&span("payment", base + 3, Some(base + 2), end, 0.15, false));
            }
        }
        let g = t.graph(t0 + 20_000);
        assert_eq!(g.edges.len(), 1, "{:?}", g.edges);
        let e = &g.edges[0];
        assert_eq!(
            (e.from.as_str(), e.to.as_str(), e.calls),
            ("checkout", "payment", 20),
            "counted once per call"
        );
        assert!((e.error_ratio - 0.5).abs() < 1e-9, "{}", e.error_ratio);
        assert!(t.has_service("payment"), "payment sent spans while it was up");
        let mut only_named = Topology::new();
        only_named.observe(&SpanRef {
            peer: Some("db"),
            ..span("checkout", 1, None, t0, 0.01, false)
        });
        assert!(
            !only_named.has_service("db"),
            "named by a caller, but it sends no spans"
        );
        assert!(only_named.depends_on("checkout", "db"));
    }

    #[test]
    fn calls_across_services_become_edges_with_figures() {
        let mut t = Topology::new();
        let t0 = 1_795_392_000_000;
        for i in 0..100u64 {
            let base = i * 10;
            let end = t0 + i as i64 * 1000;
            t.observe(&span("frontend", base + 1, None, end, 0.3, false));
            // checkout's server span is a child of frontend's span; in-service child spans
            // make no edge.
            t.observe(&span("checkout", base + 2, Some(base + 1), end, 0.2, i % 10 == 0));
            t.observe(&span("checkout", base + 3, Some(base + 2), end, 0.01, false));
            // payment's span arrives before its parent (out of order across batches).
            t.observe(&span("payment", base + 5, Some(base + 4), end, 0.1, false));
            t.observe(&span("checkout", base + 4, Some(base + 2), end, 0.12, false));
        }
        let g = t.graph(t0 + 100_000);
        let pairs: Vec<(&str, &str, u64)> = g
            .edges
            .iter()
            .map(|e| (e.from.as_str(), e.to.as_str(), e.calls))
            .collect();
        assert_eq!(pairs, [("frontend", "checkout", 100), ("checkout", "payment", 100)]);
        let fc = &g.edges[0];
        assert!((fc.error_ratio - 0.1).abs() < 1e-9);
        assert!((0.18..0.23).contains(&fc.p50_s), "{}", fc.p50_s);
        assert!(t.depends_on("frontend", "payment"));
        assert!(!t.depends_on("payment", "frontend"));
        assert!(t.near("payment", "frontend", 2));
        assert!(!t.near("payment", "frontend", 1));
        // The window moves on: an hour later the edges are gone from the graph.
        assert!(t.graph(t0 + 3_600_000).edges.is_empty());
        // …but the relations keep them until they have been silent for a day.
        t.forget_idle(t0 + 3_600_000);
        assert!(t.depends_on("frontend", "payment"));
        t.forget_idle(t0 + 99_000 + EDGE_IDLE_MS);
        assert!(t.depends_on("frontend", "payment"), "the last call was under a day ago");
        t.forget_idle(t0 + 99_000 + EDGE_IDLE_MS + 60_000);
        assert!(
            !t.depends_on("frontend", "payment"),
            "an edge silent for a day is forgotten"
        );
        assert!(!t.near("payment", "frontend", 2));
        // A call seen again draws the edge again.
        t.observe(&span("frontend", 5_001, None, t0 + EDGE_IDLE_MS * 2, 0.3, false));
        t.observe(&span("checkout", 5_002, Some(5_001), t0 + EDGE_IDLE_MS * 2, 0.2, false));
        assert!(t.depends_on("frontend", "checkout"));
    }
}
