//! Which incident a finding belongs to, and when pending findings make one: the join and
//! corroboration rules of the module documentation ([`super`]).

use std::collections::BTreeSet;

use vigil_detectors::Anomaly;

use super::{CLEAR_SCORE, Correlator, IncidentStatus, Member, is_resource_metric, kind_family};
use crate::topology::Topology;

impl Correlator {
    /// The open incident `a` belongs to, if any: close in time and topology, not too old,
    /// not sealed by a human.
    pub(super) fn joinable(&self, a: &Anomaly, service: &str, topo: &Topology) -> Option<String> {
        self.incidents
            .values()
            .filter(|i| i.status == IncidentStatus::Open && !i.sealed)
            .filter(|i| {
                // Only trouble still going on takes a new finding in: a finding of it active
                // around the new one's start. What was over is not what a new fault is part
                // of (a one-minute error burst must not absorb the fault five minutes
                // later), however long the incident stays open for a slow metric.
                let going_on = i.timeline.iter().any(|m| self.active_at(m, a.start_ms));
                // A service is in the incident once its requests or logs were: a resource
                // metric of it that moved alongside (a pod's memory, a latency gauge) does not
                // say it is in the trouble, and its own fault minutes later must not be
                // absorbed as more of it. On the Nezha day food-service's memory moved with
                // basic-service's fault, and food's own fault 13 minutes later joined that
                // incident instead of paging. A metric finding joins by a metric membership
                // only while that onset is recent: a resource metric is judged by its onset,
                // and the same service's metrics moving again a quarter of an hour later are
                // a new event (on the Nezha day auth's latency gauges, in an incident since
                // its first minutes, moved again with verification-code's fault fifteen
                // minutes on, and the log finding that fault left had nothing left to open
                // an incident with).
                let new_is_metric = is_resource_metric(a.detector);
                let in_it = i.timeline.iter().any(|m| {
                    m.service == service && (m.is_symptom() || (new_is_metric && self.active_at(m, a.start_ms)))
                });
                let max_age = if in_it {
                    self.cfg.max_join_age_ms
                } else {
                    self.cfg.max_spread_ms
                };
                going_on && a.start_ms + self.cfg.join_window_ms >= i.start_ms && a.start_ms - i.start_ms <= max_age
            })
            .filter(|i| service == "unknown" || i.services.iter().any(|s| topo.near(s, service, self.cfg.max_hops)))
            // Ties (findings end on interval boundaries) go by what the incidents hold, not by
            // their ids: an id hashes the start time, so the same day replayed an hour later
            // would pick the other incident.
            .max_by(|x, y| {
                (x.end_ms, x.start_ms, &x.services, x.timeline.len()).cmp(&(
                    y.end_ms,
                    y.start_ms,
                    &y.services,
                    y.timeline.len(),
                ))
            })
            .map(|i| i.id.clone())
    }

    /// Whether `m` is part of what is going on at `t_ms`: from its start (a little before:
    /// findings of one fault start an interval or two apart) until its latest activity plus
    /// the quiet gap. A resource metric's shift stays open as long as the new level lasts
    /// (memory after a restart: hours), so only its onset counts as activity.
    fn active_at(&self, m: &Member, t_ms: i64) -> bool {
        let gap = self.cfg.max_quiet_join_ms;
        let last = if is_resource_metric(m.detector) {
            m.start_ms
        } else {
            m.end_ms
        };
        m.start_ms - gap <= t_ms && t_ms <= last + gap
    }

    /// Whether request-path finding `m` was over (its latest activity more than the quiet
    /// gap past) when `later` started. Resource metrics are judged by their onsets only.
    fn over_before(&self, m: &Member, later: &Member) -> bool {
        !is_resource_metric(m.detector) && m.end_ms + self.cfg.max_quiet_join_ms < later.start_ms
    }

    /// Whether `m` has lasted as long as a finding alone must to open an incident (a rule's
    /// `for:`): a blip is over by then.
    fn sustained(&self, m: &Member) -> bool {
        m.end_ms - m.start_ms >= self.cfg.alone_sustained_ms
    }

    /// The pending findings that, with `id`, make an incident: started close together on
    /// related services, of two signal kinds or three services; or `id` alone when strong
    /// and sustained.
    pub(super) fn corroborated(&self, id: &str, topo: &Topology) -> Option<Vec<Member>> {
        let me = self.pending.get(id)?;
        // Page on symptoms, not causes: a resource metric with no symptom on the request
        // path (no slower or failing request, no error logged) is not trouble anyone felt —
        // a pod's memory settling higher after a restart, a latency gauge shifting for an
        // hour. It stays a finding to look at and joins the incident a symptom opens. On the
        // Nezha day lone per-pod and per-node metrics of services that send no spans opened
        // 31 of 52 incidents, none of them a fault. A metric showing the thing stopped (a
        // zero where there was traffic) is the symptom itself.
        // A series still learning its band (before its first fit) has only a cold-start
        // median and spread to go by: alone, its finding pages nobody. With another kind of
        // signal or other services agreeing it may: gating those too kept every fault of the
        // replayed Nezha day's first 96 minutes — half its faults — from any incident.
        let can_stand_alone = me.is_symptom() && !me.warming_up;
        if can_stand_alone && me.score >= self.cfg.alone_score && self.sustained(me) {
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
        let on_request_path = group.iter().any(|m| !is_resource_metric(m.detector));
        // Weak findings agreeing are still weak: one request that failed once logs a line
        // in every service on its path, and one odd point wobbles a few series. An incident
        // needs at least one clear finding (a warning or worse), and a clear symptom: a CPU
        // gauge a little past its band beside a one-off error line is a wobble and a blip
        // (the demo paged a warning so during its warm-up); the metric may corroborate a
        // symptom, not stand in for one.
        // A series still learning its band is measured against a cold-start spread: its
        // "beyond anything seen" is clear only with another clear finding beside it, not a
        // one-off line (the demo's warm-up paged a p50 blip in one service beside the first
        // background error line of another) — or once it has lasted as long as a finding
        // alone must (a rule's `for:`): a blip is over by then. On the replayed Nezha day
        // route-service's routine line, from a series still learning, fell for 17 minutes
        // with its fault while travel's latency gauge moved, and paged nobody.
        let clear: Vec<&Member> = group
            .iter()
            .filter(|m| m.score >= CLEAR_SCORE && m.is_symptom())
            .collect();
        let clear = clear.iter().any(|m| !m.warming_up || self.sustained(m)) || clear.len() >= 2;
        (clear && (kinds.len() >= 2 || (services.len() >= 3 && on_request_path))).then_some(group)
    }
}
