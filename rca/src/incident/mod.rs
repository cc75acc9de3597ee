//! Incidents: anomalies correlated by time and topology, with ranked root-cause candidates.
//!
//! An anomaly joins the open incident that is still going on when it starts — one of the
//! incident's findings active then, give or take two minutes (for a resource metric, which
//! may stay shifted for hours: its onset) — within five minutes of the incident's start (half
//! an hour for a service already in it by its requests or logs; a resource metric that moved
//! alongside makes it a member only for more of its metrics, and only around that onset), on
//! a service that is the same as, or within two calls of, a service already in it — unless a
//! human has acknowledged or silenced that incident (it is sealed: a new fault gets its own).
//! Trouble that was over does not take in a new fault, however long the incident stays open.
//! Otherwise it may open a new incident, but only once it is corroborated: findings of two
//! signal kinds (metrics, logs, traces), or of three services with at least one log or trace
//! finding among them (metrics of many services moving together is a change of load), that
//! started within five minutes of each other on related services, at least one of them clear
//! (score ≥ 0.7); or one strong finding (score ≥ 0.9) that lasted three minutes — never a
//! resource metric alone (page on symptoms, not causes), unless it shows the thing stopped.
//! Until then it waits (pending, fifteen minutes at most). One wobbling series is a finding
//! to look at, not a page; a finding of a series still learning its band opens nothing alone,
//! and is clear only beside another clear finding or once it has lasted three minutes. An
//! incident is dated by its first symptom (the metrics that moved before it stay in its
//! timeline), and resolves when all its anomalies have closed and stayed closed for the
//! resolve delay.
//!
//! Candidates are the incident's services, ranked by a weighted sum of four checkable facts:
//! topology (0.35: others that call it degraded too — the most downstream anomalous service
//! is the likelier cause), time precedence (0.3: who went wrong first; within a minute of the
//! first counts as first), strength (0.2: the highest anomaly score), and agreement of signal
//! kinds (0.15: metrics, logs and traces on the same service).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use vigil_detectors::{Anomaly, DetectorKind, Severity};

use crate::topology::Topology;

mod join;
mod rank;
use rank::refresh;

/// Onsets this close to the incident's first count as simultaneous.
const SIMULTANEOUS_MS: i64 = 60_000;
/// Findings at least this strong date a service's onset; weaker ones only when it has
/// nothing stronger. A lone marginal finding minutes early (a log pattern's rate dipping)
/// must not make a bystander "first to go wrong" ahead of the service whose every signal
/// broke together.
const ONSET_SCORE: f64 = 0.8;

/// A finding at least this strong is clear (a warning or worse); an incident needs one.
const CLEAR_SCORE: f64 = 0.7;

/// When a service went wrong: its first strong finding, or its first finding if none is.
fn onset(members: &[&Member]) -> Option<i64> {
    let strong = members
        .iter()
        .filter(|m| m.score >= ONSET_SCORE)
        .map(|m| m.start_ms)
        .min();
    strong.or_else(|| members.iter().map(|m| m.start_ms).min())
}

/// How the correlator joins, opens and resolves incidents. Durations are milliseconds of
/// event time; the defaults are the product's.
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
    /// began, is a new fault, not more of it (a cascade reaches its services within minutes;
    /// the same span as [`IncidentConfig::corroboration_window_ms`], so what joins later is
    /// what could have corroborated the opening)…
    pub max_spread_ms: i64,
    /// …and on a service already in it by a request-path finding (spans, logs; for a
    /// metric finding, also by a metric onset of it within
    /// [`IncidentConfig::max_quiet_join_ms`]), after this long.
    pub max_join_age_ms: i64,
    /// A finding joins an incident only while it is going on: one of its findings active
    /// (for a resource metric: starting) no more than this long before the new one starts.
    pub max_quiet_join_ms: i64,
    /// Findings corroborate each other when they start this close together.
    pub corroboration_window_ms: i64,
    /// A finding alone opens an incident when at least this strong…
    pub alone_score: f64,
    /// …and it has lasted this long (one odd point is not an outage). A finding of a series
    /// still learning its band that lasted this long is clear enough to corroborate.
    pub alone_sustained_ms: i64,
    /// Uncorroborated findings are forgotten (as incident material) after this long.
    pub pending_ttl_ms: i64,
    /// A resolved incident is forgotten by the correlator this long after its last activity
    /// (the collector's incident store keeps it for the API): the correlator's memory is
    /// bounded by the incidents of a day, not of its whole life.
    pub keep_resolved_ms: i64,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        IncidentConfig {
            join_window_ms: 10 * 60_000,
            resolve_after_ms: 5 * 60_000,
            max_hops: 2,
            max_spread_ms: 5 * 60_000,
            max_join_age_ms: 30 * 60_000,
            max_quiet_join_ms: 2 * 60_000,
            corroboration_window_ms: 5 * 60_000,
            alone_score: 0.9,
            alone_sustained_ms: 3 * 60_000,
            pending_ttl_ms: 15 * 60_000,
            keep_resolved_ms: 24 * 3_600_000,
        }
    }
}

/// Whether an incident is still going on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    /// Some finding in it is open, or the last one closed less than
    /// [`IncidentConfig::resolve_after_ms`] ago (event time).
    Open,
    /// Every finding closed and the incident's `end_ms` is at least `resolve_after_ms` behind
    /// the time given to [`Correlator::advance`]. Not final: a later update of one of its
    /// anomalies reopens it (new findings never join a resolved incident).
    Resolved,
}

/// An anomaly as the incident keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// [`Anomaly::id`], the key updates of the same finding are matched by.
    pub anomaly_id: String,
    /// The anomaly's service; `"unknown"` when it had none (such a finding may join any open
    /// incident going on at the time, whatever the topology).
    pub service: String,
    /// Which detector found it; its family (metrics, logs, traces) counts for corroboration
    /// and for the ranking's signal-kind agreement.
    pub detector: DetectorKind,
    /// The anomaly's signal name ([`SignalRef::name`](vigil_detectors::SignalRef::name)),
    /// e.g. a metric name or "POST /pay p99 latency".
    pub signal: String,
    /// [`Anomaly::start_ms`]: event time the finding began, unix ms.
    pub start_ms: i64,
    /// [`Anomaly::end_ms`] as of the latest update, unix ms.
    pub end_ms: i64,
    /// The anomaly's peak score in [0, 1].
    pub score: f64,
    /// The anomaly was still open at its latest update; the incident cannot resolve while
    /// any member is.
    pub open: bool,
    /// The anomaly's explanation as of its latest update; the incident summary quotes it.
    pub explanation: String,
    /// Below what was expected but not zero — less traffic, less CPU, faster responses: what
    /// a service shows when its callers are in trouble, not what a cause looks like (a
    /// service that stopped shows zeros, which do count).
    #[serde(default)]
    pub traffic_drop: bool,
    /// Zero where something was expected: the thing stopped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
    /// [`Anomaly::warming_up`]: its series was still learning its band; it may open an
    /// incident only corroborated, never alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warming_up: bool,
}

impl Member {
    /// A symptom: a finding from logs or spans, or a metric showing the thing stopped. A
    /// resource metric otherwise is judged by its onset and pages nobody alone.
    fn is_symptom(&self) -> bool {
        !is_resource_metric(self.detector) || self.stopped
    }
}

/// One root-cause candidate of an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedService {
    /// The service, as the incident's members name it (possibly `"unknown"`).
    pub service: String,
    /// In [0, 1]: 0.3 precedence + 0.2 strength + 0.15 signal-kind agreement + 0.35
    /// downstream position; comparable within one incident only.
    pub score: f64,
    /// The service's strongest finding: which signal inside it to look at first.
    #[serde(default)]
    pub signal: String,
    /// The facts behind the rank, each checkable.
    pub reasons: Vec<String>,
}

/// Anomalies correlated by time and topology, with ranked root-cause candidates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// `inc-` and 16 hex digits hashed from the earliest member's anomaly id and start when
    /// the incident opened; never changes afterwards (an earlier symptom joining later moves
    /// `start_ms`, not the id). What alert labels and URLs carry.
    pub id: String,
    /// Open or resolved; see [`IncidentStatus`].
    pub status: IncidentStatus,
    /// Event time its trouble began, unix ms: its first symptom
    /// ([`Incident::symptom_start_ms`]), or its earliest member when it has none. Resource
    /// metrics that moved before the symptom stay in the timeline, before the start: a
    /// pod's memory creeping up four minutes earlier is context, not when the incident
    /// began (on the replayed Nezha day such metrics, corroborated by the next fault's
    /// symptoms, dated that fault's incident minutes before it was injected, into the
    /// previous fault's minutes).
    pub start_ms: i64,
    /// Latest activity (the largest member `end_ms`) so far, unix ms.
    pub end_ms: i64,
    /// Every service with a member in the incident, sorted and deduplicated; `"unknown"`
    /// stands for findings without a service.
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
    /// and clear findings (≥ 0.7) from at least two signal kinds or two services; warning
    /// for a clear finding (so one signal alone, however strong, is a warning); info
    /// otherwise. Computed from the timeline on each call, not stored.
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

    /// When requests first went wrong: the earliest finding from logs or spans, or of a
    /// metric showing the thing stopped; the incident's start when none is. Resource metrics
    /// often move minutes before anyone feels trouble (load arriving, a pod settling), and a
    /// symptom corroborates them into its incident; what needs explaining is the symptom,
    /// so an investigation of the incident is anchored here (on the replayed Nezha day,
    /// windows anchored at the earliest finding missed the symptoms of most faults whose
    /// incidents began with such metrics), and the incident is dated here.
    pub fn symptom_start_ms(&self) -> i64 {
        first_symptom_ms(&self.timeline).unwrap_or(self.start_ms)
    }

    /// When its timeline says the incident began ([`Incident::start_ms`]): the first
    /// symptom, or the earliest member when it has none.
    fn dated_start(&self) -> i64 {
        let earliest = self.timeline.iter().map(|m| m.start_ms).min();
        first_symptom_ms(&self.timeline).or(earliest).unwrap_or(self.start_ms)
    }
}

/// The earliest finding from logs or spans, or of a metric showing the thing stopped.
fn first_symptom_ms(timeline: &[Member]) -> Option<i64> {
    timeline.iter().filter(|m| m.is_symptom()).map(|m| m.start_ms).min()
}

/// Joins anomalies into incidents and ranks their services. It has no clock of its own:
/// time moves only through the anomalies' event times and [`Correlator::advance`], so a
/// replay gives the same incidents. Holds every incident it has opened or restored, and
/// findings waiting for corroboration (up to [`IncidentConfig::pending_ttl_ms`]).
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

/// Members by onset; ties by what they are (service, signal), never by anomaly id alone — an
/// id hashes the start time, so ordering by it would make the same data replayed at another
/// time come out differently.
fn in_onset_order(x: &Member, y: &Member) -> std::cmp::Ordering {
    (x.start_ms, &x.service, &x.signal, x.detector, &x.anomaly_id).cmp(&(
        y.start_ms,
        &y.service,
        &y.signal,
        y.detector,
        &y.anomaly_id,
    ))
}

/// A metric finding (a pod's CPU or memory, a latency gauge; of one series or against its
/// peers): judged by its onset, and alone it pages nobody unless it shows the thing stopped —
/// unlike a service's requests and logs, which are the symptoms.
fn is_resource_metric(d: DetectorKind) -> bool {
    kind_family(d) == "metrics"
}

fn kind_family(d: DetectorKind) -> &'static str {
    match d {
        DetectorKind::Metric | DetectorKind::MetricPeer => "metrics",
        DetectorKind::LogNewPattern | DetectorKind::LogPatternRate | DetectorKind::LogErrorRate => "logs",
        DetectorKind::TraceRed => "traces",
    }
}

impl Correlator {
    /// A correlator with no incidents; call [`Correlator::restore`] to resume stored ones.
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
            warming_up: a.warming_up,
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
            // An earlier symptom joining moves the start back; nothing moves it later (a
            // metric that showed the thing stopped may read otherwise at a later peak), so
            // the alert's `startsAt` and what joins by age stay put.
            inc.start_ms = inc.start_ms.min(inc.dated_start());
            inc.end_ms = inc.end_ms.max(a.end_ms);
            inc.status = IncidentStatus::Open;
            refresh(inc, topo);
            self.updated.insert(id);
        }
    }

    /// Opens an incident holding `members` (taken out of the pending set).
    fn open_with(&mut self, members: Vec<Member>, topo: &Topology) {
        let Some(first) = members.iter().min_by(|x, y| in_onset_order(x, y)) else {
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
            inc.end_ms = inc.end_ms.max(m.end_ms);
            inc.timeline.push(m);
        }
        inc.start_ms = inc.dated_start();
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

    /// Resolves incidents whose anomalies have all been closed long enough, and forgets
    /// resolved ones past `keep_resolved_ms` (event time).
    pub fn advance(&mut self, now_ms: i64) {
        let ttl = self.cfg.pending_ttl_ms;
        self.pending.retain(|_, m| m.end_ms + ttl > now_ms);
        let keep = self.cfg.keep_resolved_ms;
        let forgotten: Vec<String> = self
            .incidents
            .values()
            .filter(|inc| inc.status == IncidentStatus::Resolved && inc.end_ms.saturating_add(keep) <= now_ms)
            .map(|inc| inc.id.clone())
            .collect();
        for id in forgotten {
            if let Some(inc) = self.incidents.remove(&id) {
                for m in &inc.timeline {
                    self.of_anomaly.remove(&m.anomaly_id);
                }
            }
        }
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

    /// Incident `id` as it stands now (open or resolved), or `None` for an id this
    /// correlator never opened or restored.
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

#[cfg(test)]
mod tests;
