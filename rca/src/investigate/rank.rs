//! From evidence to ranked services: request-path evidence decides, metrics corroborate,
//! topology decides between a service and its callers.

use std::collections::{BTreeMap, BTreeSet};

use super::{Candidate, Evidence, EvidenceKind, MIN_STRENGTH};

/// Metrics add at most this share of a service's request-path strength.
const METRIC_CORROBORATION: f64 = 0.25;
/// A caller whose callee shows the same kind of trouble at ≥ this share of its own
/// strength is more likely suffering than causing it…
const CALLEE_SHARE: f64 = 0.5;
/// …and keeps this share of its score.
const CALLER_DEMOTION: f64 = 0.5;
/// Evidence kept per candidate.
const MAX_EVIDENCE: usize = 10;
/// A service with metric evidence only scores below every service whose requests changed,
/// even a caller demoted for its callee's trouble: on per-minute pod metrics some series
/// of some idle service always makes a "new" jump (windows without any fault show them at
/// the top), and such a hint must not outrank a request path that broke, however weakly.
/// Among themselves they keep the order of their strength.
/// Below them, in the lower half of the band under the request path, come services with
/// metric evidence only; in its upper half those whose only request-path evidence was
/// already under way before the window ([`Evidence::ongoing`]): a broken request path that
/// did not break in the window still says more about the service than a pod's gauge.
const METRIC_ALONE_CEILING: f64 = MIN_STRENGTH * CALLER_DEMOTION / 2.0;

/// A score in one tier below the request path: grows with the strength from `floor`,
/// never reaches `floor + METRIC_ALONE_CEILING` (not even in floating point: 500 σ is 0.98
/// of the way).
fn below_the_path(floor: f64, strength: f64) -> f64 {
    floor + METRIC_ALONE_CEILING * strength / (strength + 10.0)
}

/// Ranks services by their evidence (strongest first within each). `calls` maps each
/// caller to the services it calls.
pub fn rank_candidates(mut evidence: Vec<Evidence>, calls: &BTreeMap<String, BTreeSet<String>>) -> Vec<Candidate> {
    // What began in the window first, then what was under way before it; strongest first.
    evidence.sort_by(|a, b| a.ongoing.cmp(&b.ongoing).then_with(|| super::strongest_first(a, b)));
    let mut by_service: BTreeMap<String, Vec<Evidence>> = BTreeMap::new();
    for e in evidence {
        by_service.entry(e.service.clone()).or_default().push(e);
    }
    let stopped: BTreeSet<&str> = by_service
        .iter()
        .filter(|(_, ev)| ev.iter().any(|e| e.kind == EvidenceKind::RequestsStopped && !e.ongoing))
        .map(|(s, _)| s.as_str())
        .collect();
    // The strongest request-path evidence of each service that began in the window, and
    // its family.
    let path_best: BTreeMap<&str, (f64, u8)> = by_service
        .iter()
        .filter_map(|(s, ev)| {
            ev.iter()
                .find(|e| e.began_on_request_path())
                .map(|e| (s.as_str(), (e.strength, e.kind.family())))
        })
        .collect();
    let mut ranked: Vec<(f64, Candidate)> = Vec::new();
    let mut inherit: BTreeMap<String, f64> = BTreeMap::new();
    for (service, ev) in &by_service {
        let path = path_best.get(service.as_str()).map_or(0.0, |b| b.0);
        let metric = ev
            .iter()
            .find(|e| !e.kind.on_request_path())
            .map_or(0.0, |e| e.strength);
        let mut reasons: Vec<String> = ev
            .iter()
            .filter(|e| e.began_on_request_path())
            .take(3)
            .map(|e| e.sentence.clone())
            .collect();
        let ongoing = ev.iter().find(|e| e.ongoing).map_or(0.0, |e| e.strength);
        let mut raw = if path > 0.0 {
            if metric > 0.0
                && let Some(m) = ev.iter().find(|e| !e.kind.on_request_path())
            {
                reasons.push(format!("Corroborated by a resource metric: {}", m.sentence));
            }
            path + METRIC_CORROBORATION * metric.min(path)
        } else if ongoing > 0.0 {
            reasons.extend(ev.iter().filter(|e| e.ongoing).take(2).map(|e| e.sentence.clone()));
            reasons.push(
                "Its requests were already in this trouble before the window; nothing else on its request path began in it."
                    .into(),
            );
            below_the_path(METRIC_ALONE_CEILING, ongoing)
        } else {
            reasons.extend(ev.iter().take(2).map(|e| e.sentence.clone()));
            reasons.push("Only resource metrics moved; no request of this service looked different.".into());
            below_the_path(0.0, metric)
        };
        if let Some(&(strength, family)) = path_best.get(service.as_str()) {
            let suffering_from: Vec<&str> = calls
                .get(service)
                .into_iter()
                .flatten()
                .filter(|callee| *callee != service)
                .filter(|callee| {
                    stopped.contains(callee.as_str())
                        || path_best
                            .get(callee.as_str())
                            .is_some_and(|&(s, f)| f == family && s >= CALLEE_SHARE * strength)
                })
                .map(String::as_str)
                .collect();
            if !suffering_from.is_empty() {
                // A callee that stopped answering explains its callers' failures in full:
                // they are its symptoms, as strong as the callers' own evidence.
                for callee in suffering_from.iter().filter(|c| stopped.contains(*c)) {
                    let inherited = inherit.entry((*callee).to_string()).or_insert(0.0);
                    *inherited = inherited.max(raw);
                }
                raw *= CALLER_DEMOTION;
                reasons.push(format!(
                    "It calls {}, which shows the same kind of trouble: more likely suffering from it than causing it.",
                    suffering_from.join(", ")
                ));
            }
        }
        let mut kept = ev.clone();
        kept.truncate(MAX_EVIDENCE);
        ranked.push((
            raw,
            Candidate {
                service: service.clone(),
                score: 0.0,
                reasons,
                evidence: kept,
            },
        ));
    }
    for (raw, c) in &mut ranked {
        if let Some(&from_callers) = inherit.get(&c.service)
            && from_callers > *raw
        {
            *raw = from_callers;
            c.reasons
                .push("Its callers' failures began when it stopped answering them.".into());
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.service.cmp(&b.1.service)));
    ranked
        .into_iter()
        .map(|(raw, mut c)| {
            // 0..1 and monotonic: 10 robust σ reads as 0.63, 30 as 0.95.
            c.score = 1.0 - (-raw / 10.0).exp();
            c
        })
        .collect()
}
