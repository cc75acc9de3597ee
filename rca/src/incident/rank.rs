//! Ranking an incident's services: who is the likelier cause, with the reasons.

use std::collections::{BTreeMap, BTreeSet};

use vigil_detectors::format_time;

use super::{Incident, Member, RankedService, SIMULTANEOUS_MS, in_onset_order, kind_family, onset};
use crate::topology::Topology;

/// After members were added or changed: the timeline in onset order, the services, the
/// ranking and summary.
pub(super) fn refresh(inc: &mut Incident, topo: &Topology) {
    inc.timeline.sort_by(in_onset_order);
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
