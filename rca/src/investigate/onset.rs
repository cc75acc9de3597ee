//! Onset: what began in the window, not what was already under way before it.
//!
//! A root cause changes when the trouble starts; a signal that was just as far from its
//! baseline in the minutes before the window is context (a chronically flapping query, a
//! service still recovering from an earlier fault), not the start of what is being
//! investigated. Each piece of evidence is therefore compared with the same signal in the
//! lead-in (the whole minutes just before the window, measured against the same baseline)
//! and keeps only the part of its strength that is new (request-path evidence with no new
//! part is kept whole, marked ongoing, and ranks below everything that began): BARO and the change-point RCA
//! methods rank by the *onset* of a shift for the same reason.

use std::collections::HashMap;

use super::{Evidence, EvidenceKind, MIN_STRENGTH, TimeRange};

/// Keeps the evidence whose strength rose past the lead-in's by at least
/// [`MIN_STRENGTH`], with the lead-in's strength taken off and said in its sentence; other
/// request-path evidence is kept whole and marked [`Evidence::ongoing`], other metric
/// evidence dropped.
pub(crate) fn keep_what_began(window: Vec<Evidence>, lead_in: &[Evidence], range: TimeRange) -> Vec<Evidence> {
    let before: HashMap<(EvidenceKind, &str, &str), &Evidence> = lead_in
        .iter()
        .map(|e| ((e.kind, e.service.as_str(), e.signal.as_str()), e))
        .collect();
    let minutes = range.len_ms() / 60_000;
    window
        .into_iter()
        .filter_map(|mut e| {
            let Some(earlier) = before.get(&(e.kind, e.service.as_str(), e.signal.as_str())) else {
                return Some(e);
            };
            // A capped shift rose by its uncapped size, and counts no more than its cap.
            let (began, already) = match (e.uncapped, earlier.uncapped) {
                (Some(now), Some(then)) => ((now - then).min(e.strength), then),
                _ => (e.strength - earlier.strength, earlier.strength),
            };
            if began < MIN_STRENGTH {
                // Under way before the window: context, not what began in it. A request-path
                // change is kept, marked, for the service it is the only news of — the
                // engineer's start is rough, and a fault whose first minute fell just before
                // it, or that never ended since the last time, still names its service; a
                // resource metric is not (on its own it already ranks last).
                if !e.kind.on_request_path() {
                    return None;
                }
                e.ongoing = true;
                e.sentence.push_str(&format!(
                    " (already {already:.1} σ from the baseline in the {minutes} minutes before: under way before the window began)"
                ));
                return Some(e);
            }
            e.strength = began;
            e.sentence.push_str(&format!(
                " (already {already:.1} σ from the baseline in the {minutes} minutes before, so only the rise since counts)"
            ));
            Some(e)
        })
        .collect()
}
