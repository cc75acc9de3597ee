//! Incidents: anomalies correlated by time and topology, with ranked root-cause candidates.
//!
//! An anomaly joins the open incident that is still going on when it starts — one of the
//! incident's findings active then, give or take two minutes (for a resource metric, which
//! may stay shifted for hours: its onset) — within ten minutes of the incident's start (half
//! an hour for a service already in it), on a service that is the same as, or within two
//! calls of, a service already in it — unless a human has acknowledged or silenced that
//! incident (it is sealed: a new fault gets its own). Trouble that was over does not take
//! in a new fault, however long the incident stays open. Otherwise
//! it may open a new incident, but only once it is corroborated: findings of two signal kinds
//! (metrics, logs, traces), or of three services with at least one log or trace finding among
//! them (metrics of many services moving together is a change of load), that started within
//! five minutes of each other on related services; or one strong finding (score ≥ 0.9) that
//! lasted three minutes — never a resource metric alone (page on symptoms, not causes),
//! unless it shows the thing stopped.
//! Until then it waits (pending, fifteen minutes at most). One wobbling series is a finding
//! to look at, not a page; a finding of a series still learning its band opens nothing. An
//! incident resolves when all its anomalies have closed and stayed closed for the resolve
//! delay.
//!
//! Candidates are the incident's services, ranked by a weighted sum of four checkable facts:
//! topology (0.35: others that call it degraded too — the most downstream anomalous service
//! is the likelier cause), time precedence (0.3: who went wrong first; within a minute of the
//! first counts as first), strength (0.2: the highest anomaly score), and agreement of signal
//! kinds (0.15: metrics, logs and traces on the same service).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use vigil_detectors::anomaly::{Anomaly, DetectorKind, Severity, format_time};

use crate::topology::Topology;

/// Onsets this close to the incident's first count as simultaneous.
const SIMULTANEOUS_MS: i64 = 60_000;
/// Findings at least this strong date a service's onset; weaker ones only when it has
/// nothing stronger. A lone marginal finding minutes early (a log pattern's rate dipping)
/// must not make a bystander "first to go wrong" ahead of the service whose every signal
/// broke together.
const ONSET_SCORE: f64 = 0.8;

/// When a service went wrong: its first strong finding, or its first finding if none is.
fn onset(members: &[&Member]) -> Option<i64> {
    let strong = members
        .iter()
        .filter(|m| m.score >= ONSET_SCORE)
        .map(|m| m.start_ms)
        .min();
    strong.or_else(|| members.iter().map(|m| m.start_ms).min())
}

#[derive(Debug, Clone)]
pub struct IncidentConfig {
    /// A finding that started this long before an incident began (it reached the correlator
    /// late) is not part of it.
    pub join_window_ms: i64,
    /// All anomalies closed for this long resolves the incident.
    pub resolve_after_ms: i64,
    /// Calls apart two services may be and still share an incident.
    pub max_hops: usize,
    /// A finding on a service not yet in an incident, starting this long after the incident
    /// began, is a new fault, not more of it (a cascade reaches its services within minutes)…
    pub max_spread_ms: i64,
    /// …and on a service already in it, after this long.
    pub max_join_age_ms: i64,
    /// A finding joins an incident only while it is going on: one of its findings active
    /// (for a resource metric: starting) no more than this long before the new one starts.
    pub max_quiet_join_ms: i64,
    /// Findings corroborate each other when they start this close together.
    pub corroboration_window_ms: i64,
    /// A finding alone opens an incident when at least this strong…
    pub alone_score: f64,
    /// …and it has lasted this long (one odd point is not an outage).
    pub alone_sustained_ms: i64,
    /// Uncorroborated findings are forgotten (as incident material) after this long.
    pub pending_ttl_ms: i64,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        IncidentConfig {
            join_window_ms: 10 * 60_000,
            resolve_after_ms: 5 * 60_000,
            max_hops: 2,
            max_spread_ms: 10 * 60_000,
            max_join_age_ms: 30 * 60_000,
            max_quiet_join_ms: 2 * 60_000,
            corroboration_window_ms: 5 * 60_000,
            alone_score: 0.9,
            alone_sustained_ms: 3 * 60_000,
            pending_ttl_ms: 15 * 60_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    Open,
    Resolved,
}

/// An anomaly as the incident keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub anomaly_id: String,
    pub service: String,
    pub detector: DetectorKind,
    pub signal: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub score: f64,
    pub open: bool,
    pub explanation: String,
    /// Below what was expected but not zero — less traffic, less CPU, faster responses: what
    /// a service shows when its callers are in trouble, not what a cause looks like (a
    /// service that stopped shows zeros, which do count).
    #[serde(default)]
    pub traffic_drop: bool,
    /// Zero where something was expected: the thing stopped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedService {
    pub service: String,
    pub score: f64,
    /// The service's strongest finding: which signal inside it to look at first.
    #[serde(default)]
    pub signal: String,
    /// The facts behind the rank, each checkable.
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub status: IncidentStatus,
    pub start_ms: i64,
    /// Latest activity (anomaly end) so far.
    pub end_ms: i64,
    pub services: Vec<String>,
    /// Ranked root-cause candidates, most likely first.
    pub candidates: Vec<RankedService>,
    /// The anomalies, in order of onset (the timeline).
    pub timeline: Vec<Member>,
    /// Plain words a human can check.
    pub summary: String,
    /// A human acknowledged or silenced it: it takes no new findings (a new fault nearby
    /// opens its own incident rather than hiding in one nobody is watching).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sealed: bool,
}

impl Incident {
    /// Graded: critical only when the trouble is corroborated — a strong finding (≥ 0.9)
    /// backed by another signal kind or another service with a clear finding (≥ 0.7), or a
    /// service that stopped; warning for a clear finding; info otherwise.
    pub fn severity(&self) -> Severity {
        let peak = self.timeline.iter().map(|m| m.score).fold(0.0, f64::max);
        let clear: Vec<&Member> = self.timeline.iter().filter(|m| m.score >= 0.7).collect();
        let kinds: BTreeSet<&str> = clear.iter().map(|m| kind_family(m.detector)).collect();
        let services: BTreeSet<&str> = clear.iter().map(|m| m.service.as_str()).collect();
        if peak >= 0.9 && (kinds.len() >= 2 || services.len() >= 2) {
            Severity::Critical
        } else {
            Severity::from_score(peak.min(0.89))
        }
    }
}

#[derive(Debug, Default)]
pub struct Correlator {
    cfg: IncidentConfig,
    incidents: BTreeMap<String, Incident>,
    of_anomaly: BTreeMap<String, String>,
    updated: BTreeSet<String>,
    /// Findings waiting for corroboration, by anomaly id.
    pending: BTreeMap<String, Member>,
}

fn incident_id(first_anomaly: &str, start_ms: i64) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in first_anomaly.as_bytes().iter().chain(start_ms.to_le_bytes().iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("inc-{h:016x}")
}

fn kind_family(d: DetectorKind) -> &'static str {
    match d {
        DetectorKind::Metric | DetectorKind::MetricPeer => "metrics",
        DetectorKind::LogNewPattern | DetectorKind::LogPatternRate | DetectorKind::LogErrorRate => "logs",
        DetectorKind::TraceRed => "traces",
    }
}

impl Correlator {
    pub fn new(cfg: IncidentConfig) -> Correlator {
        Correlator {
            cfg,
            ..Correlator::default()
        }
    }

    /// Files one anomaly update (new or changed) into its incident.
    pub fn observe(&mut self, a: &Anomaly, topo: &Topology) {
        let service = a.signal.service.clone().unwrap_or_else(|| "unknown".into());
        let member = Member {
            anomaly_id: a.id.clone(),
            service: service.clone(),
            detector: a.detector,
            signal: a.signal.name.clone(),
            start_ms: a.start_ms,
            end_ms: a.end_ms,
            score: a.score,
            open: a.open,
            explanation: a.explanation.clone(),
            traffic_drop: a.observed < a.expected && a.observed > 0.0,
            stopped: a.observed == 0.0 && a.expected > 0.0,
        };
        let id = match self.of_anomaly.get(&a.id) {
            Some(id) => id.clone(),
            None => match self.joinable(a, &service, topo) {
                Some(id) => {
                    self.pending.remove(&a.id);
                    self.of_anomaly.insert(a.id.clone(), id.clone());
                    id
                }
                None => {
                    if a.warming_up {
                        return;
                    }
                    self.pending.insert(a.id.clone(), member);
                    let Some(group) = self.corroborated(&a.id, topo) else {
                        return;
                    };
                    self.open_with(group, topo);
                    return;
                }
            },
        };
        if let Some(inc) = self.incidents.get_mut(&id) {
            match inc.timeline.iter_mut().find(|m| m.anomaly_id == member.anomaly_id) {
                Some(m) => *m = member,
                None => inc.timeline.push(member),
            }
            inc.start_ms = inc.start_ms.min(a.start_ms);
            inc.end_ms = inc.end_ms.max(a.end_ms);
            inc.status = IncidentStatus::Open;
            refresh(inc, topo);
            self.updated.insert(id);
        }
    }

    /// The open incident `a` belongs to, if any: close in time and topology, not too old,
    /// not sealed by a human.
    fn joinable(&self, a: &Anomaly, service: &str, topo: &Topology) -> Option<String> {
        self.incidents
            .values()
            .filter(|i| i.status == IncidentStatus::Open && !i.sealed)
            .filter(|i| {
                // Only trouble still going on takes a new finding in: a finding of it active
                // around the new one's start. What was over is not what a new fault is part
                // of (a one-minute error burst must not absorb the fault five minutes
                // later), however long the incident stays open for a slow metric.
                let going_on = i.timeline.iter().any(|m| self.active_at(m, a.start_ms));
                let in_it = i.services.iter().any(|s| s == service);
                let max_age = if in_it {
                    self.cfg.max_join_age_ms
                } else {
                    self.cfg.max_spread_ms
                };
                going_on && a.start_ms + self.cfg.join_window_ms >= i.start_ms && a.start_ms - i.start_ms <= max_age
            })
            .filter(|i| service == "unknown" || i.services.iter().any(|s| topo.near(s, service, self.cfg.max_hops)))
            .max_by_key(|i| i.end_ms)
            .map(|i| i.id.clone())
    }

    /// Whether `m` is part of what is going on at `t_ms`: from its start (a little before:
    /// findings of one fault start an interval or two apart) until its latest activity plus
    /// the quiet gap. A resource metric's shift stays open as long as the new level lasts
    /// (memory after a restart: hours), so only its onset counts as activity.
    fn active_at(&self, m: &Member, t_ms: i64) -> bool {
        let gap = self.cfg.max_quiet_join_ms;
        let last = if kind_family(m.detector) == "metrics" {
            m.start_ms
        } else {
            m.end_ms
        };
        m.start_ms - gap <= t_ms && t_ms <= last + gap
    }

    /// Whether request-path finding `m` was over (its latest activity more than the quiet
    /// gap past) when `later` started. Resource metrics are judged by their onsets only.
    fn over_before(&self, m: &Member, later: &Member) -> bool {
        kind_family(m.detector) != "metrics" && m.end_ms + self.cfg.max_quiet_join_ms < later.start_ms
    }

    /// The pending findings that, with `id`, make an incident: started close together on
    /// related services, of two signal kinds or three services; or `id` alone when strong
    /// and sustained.
    fn corroborated(&self, id: &str, topo: &Topology) -> Option<Vec<Member>> {
        let me = self.pending.get(id)?;
        // Page on symptoms, not causes: a resource metric with no symptom on the request
        // path (no slower or failing request, no error logged) is not trouble anyone felt —
        // a pod's memory settling higher after a restart, a latency gauge shifting for an
        // hour. It stays a finding to look at and joins the incident a symptom opens. On the
        // Nezha day lone per-pod and per-node metrics of services that send no spans opened
        // 31 of 52 incidents, none of them a fault. A metric showing the thing stopped (a
        // zero where there was traffic) is the symptom itself.
        let can_stand_alone = kind_family(me.detector) != "metrics" || me.stopped;
        if can_stand_alone && me.score >= self.cfg.alone_score && me.end_ms - me.start_ms >= self.cfg.alone_sustained_ms
        {
            return Some(vec![me.clone()]);
        }
        let group: Vec<Member> = self
            .pending
            .values()
            .filter(|m| (m.start_ms - me.start_ms).abs() <= self.cfg.corroboration_window_ms)
            // Trouble that was over does not corroborate what starts later: a one-point
            // latency blip minutes before a fault must not pull the fault's incident back to
            // it (the demo's error fault opened at such a blip four minutes early).
            .filter(|m| !self.over_before(m, me) && !self.over_before(me, m))
            .filter(|m| m.service == me.service || topo.near(&m.service, &me.service, self.cfg.max_hops))
            .cloned()
            .collect();
        let kinds: BTreeSet<&str> = group.iter().map(|m| kind_family(m.detector)).collect();
        let services: BTreeSet<&str> = group.iter().map(|m| m.service.as_str()).collect();
        // Resource metrics of several services moving together is what a change of load
        // looks like (traffic came or went); requests that slowed or failed, or logs, are
        // what make it trouble.
        let on_request_path = kinds.iter().any(|k| *k != "metrics");
        (kinds.len() >= 2 || (services.len() >= 3 && on_request_path)).then_some(group)
    }

    /// Opens an incident holding `members` (taken out of the pending set).
    fn open_with(&mut self, members: Vec<Member>, topo: &Topology) {
        let Some(first) = members.iter().min_by_key(|m| (m.start_ms, m.anomaly_id.clone())) else {
            return;
        };
        let id = incident_id(&first.anomaly_id, first.start_ms);
        let mut inc = Incident {
            id: id.clone(),
            status: IncidentStatus::Open,
            start_ms: first.start_ms,
            end_ms: first.end_ms,
            services: Vec::new(),
            candidates: Vec::new(),
            timeline: Vec::new(),
            summary: String::new(),
            sealed: false,
        };
        for m in members {
            self.pending.remove(&m.anomaly_id);
            self.of_anomaly.insert(m.anomaly_id.clone(), id.clone());
            inc.start_ms = inc.start_ms.min(m.start_ms);
            inc.end_ms = inc.end_ms.max(m.end_ms);
            inc.timeline.push(m);
        }
        refresh(&mut inc, topo);
        self.incidents.insert(id.clone(), inc);
        self.updated.insert(id);
    }

    /// A human acknowledged or silenced the incident's alert: it takes no new findings.
    /// Returns whether it was known and not yet sealed.
    pub fn seal(&mut self, id: &str) -> bool {
        match self.incidents.get_mut(id) {
            Some(inc) if !inc.sealed => {
                inc.sealed = true;
                self.updated.insert(id.to_string());
                true
            }
            _ => false,
        }
    }

    /// Resolves incidents whose anomalies have all been closed long enough (event time).
    pub fn advance(&mut self, now_ms: i64) {
        let ttl = self.cfg.pending_ttl_ms;
        self.pending.retain(|_, m| m.end_ms + ttl > now_ms);
        for inc in self.incidents.values_mut() {
            if inc.status == IncidentStatus::Open
                && inc.timeline.iter().all(|m| !m.open)
                && inc.end_ms + self.cfg.resolve_after_ms <= now_ms
            {
                inc.status = IncidentStatus::Resolved;
                self.updated.insert(inc.id.clone());
            }
        }
    }

    /// Incidents opened, changed or resolved since the last call.
    pub fn drain(&mut self) -> Vec<Incident> {
        std::mem::take(&mut self.updated)
            .into_iter()
            .filter_map(|id| self.incidents.get(&id).cloned())
            .collect()
    }

    pub fn incident(&self, id: &str) -> Option<&Incident> {
        self.incidents.get(id)
    }

    /// Resumes from stored incidents (open ones keep collecting their anomalies).
    pub fn restore(&mut self, incidents: Vec<Incident>) {
        for inc in incidents {
            for m in &inc.timeline {
                self.of_anomaly.insert(m.anomaly_id.clone(), inc.id.clone());
            }
            self.incidents.insert(inc.id.clone(), inc);
        }
    }
}

/// After members were added or changed: the timeline in onset order, the services, the
/// ranking and summary.
fn refresh(inc: &mut Incident, topo: &Topology) {
    inc.timeline.sort_by(|x, y| {
        x.start_ms
            .cmp(&y.start_ms)
            .then_with(|| x.anomaly_id.cmp(&y.anomaly_id))
    });
    let services: BTreeSet<String> = inc.timeline.iter().map(|m| m.service.clone()).collect();
    inc.services = services.into_iter().collect();
    rank(inc, topo);
}

/// Scores every service of the incident and writes the summary.
fn rank(inc: &mut Incident, topo: &Topology) {
    let mut by_service: BTreeMap<&str, Vec<&Member>> = BTreeMap::new();
    for m in &inc.timeline {
        by_service.entry(m.service.as_str()).or_default().push(m);
    }
    let onsets: BTreeMap<&str, i64> = by_service
        .iter()
        .filter_map(|(svc, ms)| onset(ms).map(|t| (*svc, t)))
        .collect();
    let first_ms = onsets.values().copied().min().unwrap_or(inc.start_ms);
    let last_onset = onsets.values().copied().max().unwrap_or(first_ms);
    let spread = (last_onset - first_ms).max(1) as f64;
    let services: Vec<&str> = by_service.keys().copied().collect();
    // Services whose only findings are drops below the expected band are affected, not
    // suspects: they neither earn the downstream bonus nor count against their callers.
    let only_drops: BTreeSet<&str> = by_service
        .iter()
        .filter(|(_, ms)| ms.iter().all(|m| m.traffic_drop))
        .map(|(s, _)| *s)
        .collect();
    let mut ranked: Vec<RankedService> = by_service
        .iter()
        .map(|(svc, members)| {
            let onset = onsets.get(svc).copied().unwrap_or(first_ms);
            let mut strength = members.iter().map(|m| m.score).fold(0.0, f64::max);
            let families: BTreeSet<&str> = members.iter().map(|m| kind_family(m.detector)).collect();
            // Findings within one aggregation interval of the first are simultaneous: a
            // service that goes silent shows it a minute later than the callers that wait
            // on it, and that minute must not decide the rank.
            let precedence = if onset - first_ms <= SIMULTANEOUS_MS {
                1.0
            } else {
                1.0 - (onset - first_ms) as f64 / spread
            };
            // Others in the incident that (transitively) call this service: it is downstream
            // of them, so their trouble may be its trouble.
            let callers: Vec<&str> = services
                .iter()
                .copied()
                .filter(|o| o != svc && topo.depends_on(o, svc))
                .collect();
            let calls_anomalous: Vec<&str> = services
                .iter()
                .copied()
                .filter(|o| o != svc && !only_drops.contains(o) && topo.depends_on(svc, o))
                .collect();
            let mut downstream = if services.len() <= 1 {
                1.0
            } else {
                (callers.len() as f64 - calls_anomalous.len() as f64 * 0.5).max(0.0) / (services.len() - 1) as f64
            };
            if only_drops.contains(svc) {
                downstream = 0.0;
                strength *= 0.3;
            }
            let agreement = families.len() as f64 / 3.0;
            let score = 0.3 * precedence + 0.2 * strength + 0.15 * agreement + 0.35 * downstream;
            let mut reasons = vec![if onset - first_ms <= SIMULTANEOUS_MS {
                format!("first to go wrong, at {}", format_time(onset, onset))
            } else {
                format!("went wrong {} s after the first service", (onset - first_ms) / 1000)
            }];
            reasons.push(format!("strongest anomaly score {strength:.2}"));
            reasons.push(format!(
                "evidence from {}",
                families.into_iter().collect::<Vec<_>>().join(", ")
            ));
            if !callers.is_empty() {
                reasons.push(format!("called by anomalous {}", callers.join(", ")));
            }
            if !calls_anomalous.is_empty() {
                reasons.push(format!("itself calls anomalous {}", calls_anomalous.join(", ")));
            }
            if only_drops.contains(svc) {
                reasons.push("only runs below its usual levels: affected, not a suspect".into());
            }
            let signal = members
                .iter()
                .max_by(|a, b| a.score.total_cmp(&b.score).then_with(|| b.start_ms.cmp(&a.start_ms)))
                .map(|m| m.signal.clone())
                .unwrap_or_default();
            RankedService {
                service: svc.to_string(),
                score,
                signal,
                reasons,
            }
        })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.service.cmp(&b.service)));
    inc.candidates = ranked;
    let Some(top) = inc.candidates.first() else { return };
    let first = inc.timeline.iter().find(|m| m.service == top.service);
    let mut summary = first.map_or_else(String::new, |m| m.explanation.clone());
    if let Some(next) = inc.timeline.iter().find(|m| m.service != top.service)
        && let Some(f) = first
    {
        let dt = (next.start_ms - f.start_ms) / 1000;
        let when = if dt >= 0 {
            format!("{dt} s later")
        } else {
            format!("{} s earlier", -dt)
        };
        summary = format!("{summary}; {when}: {}", next.explanation);
    }
    inc.summary = format!(
        "{} likely root cause: {summary} ({} anomalies across {} services)",
        top.service,
        inc.timeline.len(),
        inc.services.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::SpanRef;
    use vigil_detectors::anomaly::{Severity, SignalRef};

    const T0: i64 = 1_795_392_000_000;

    fn anomaly(id: &str, service: &str, detector: DetectorKind, start_s: i64, score: f64, open: bool) -> Anomaly {
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
    fn topology() -> Topology {
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
    }

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
        assert_eq!(opened[0].start_ms, T0, "the incident starts at its first finding");
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
    fn findings_of_a_series_still_learning_open_nothing() {
        let topo = topology();
        let mut c = Correlator::new(IncidentConfig::default());
        for (id, kind) in [("a", DetectorKind::Metric), ("b", DetectorKind::LogErrorRate)] {
            let mut a = anomaly(id, "payment", kind, 0, 1.0, true);
            a.warming_up = true;
            a.end_ms = a.start_ms + 10 * 60_000;
            c.observe(&a, &topo);
        }
        assert!(c.drain().is_empty());
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
        assert_eq!(c.drain().remove(0).severity(), Severity::Info);
    }
}
