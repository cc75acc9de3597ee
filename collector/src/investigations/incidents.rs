//! Every incident gets an investigation of its first minutes, and ranks its root causes by
//! it. The correlator opens incidents online, from findings as they happen, and its ranking
//! can only weigh those findings; once the incident's first minutes are stored, the same
//! comparison an engineer would run — the window against a baseline, over every stored
//! signal — ranks the services far better. The incident keeps the correlator's ranking too
//! (`correlated_candidates` in the API).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use vigil_rca::incident::Incident;

use super::{Investigation, InvestigationStore, Request};
use crate::pipeline::IncidentStore;
use crate::storage::Store;
use crate::telemetry::Metrics;

/// The window investigated: from a minute before the incident's first finding (its
/// interval may have started late) to three minutes after it.
const BEFORE_MS: i64 = 60_000;
const AFTER_MS: i64 = 180_000;
/// How often incidents are looked at.
const TICK: Duration = Duration::from_secs(2);
/// Incidents looked back on at each tick (the newest first).
const RECENT: usize = 200;

/// Investigates incidents whose first minutes the detectors have passed, one at a time,
/// until `stop`.
pub async fn run(
    store: Arc<Store>,
    incidents: Arc<IncidentStore>,
    kept: Arc<InvestigationStore>,
    alerts: Arc<crate::alerts::AlertService>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    // Investigations that failed (incident and onset): tried once, not again every tick
    // (the warning says why); bounded like the incidents looked at.
    let mut failed: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Event time the detectors have reached: the data's own clock, so a replay at
        // any speed investigates each incident once its minutes are in.
        let event_ms = metrics.detect_event_time.get().saturating_mul(1000);
        let due: Vec<(Incident, i64)> = incidents
            .query(0, i64::MAX, None, RECENT)
            .into_iter()
            .filter_map(|i| {
                if kept.count_for_incident(&i.id) >= MAX_PER_INCIDENT {
                    return None;
                }
                let onset = onset_to_investigate(&i, kept.for_incident(&i.id).as_ref())?;
                (onset + AFTER_MS <= event_ms && !failed.contains(&attempt_key(&i.id, onset))).then_some((i, onset))
            })
            .collect();
        for (inc, onset) in due {
            if stop.is_cancelled() {
                return;
            }
            let request = Request {
                start: onset - BEFORE_MS,
                end: onset + AFTER_MS,
                baseline: None,
                services: Vec::new(),
                incident: Some(inc.id.clone()),
                lead_in: false,
            };
            let now_ms = i64::try_from(crate::timeutil::now_ns() / 1_000_000).unwrap_or(i64::MAX);
            let key = attempt_key(&inc.id, onset);
            let id = inc.id.clone();
            let (s, k, a) = (Arc::clone(&store), Arc::clone(&kept), Arc::clone(&alerts));
            let done = tokio::task::spawn_blocking(move || -> Result<(), String> {
                let inv = super::run(&s, &request, now_ms).map_err(|e| format!("{e:?}"))?;
                // The incident's alert names the investigation's root cause from now on
                // (same labels: the same alert, updated; no second page).
                let ranked = ranked_by(&inc, &inv);
                k.add(inv).map_err(|e| e.to_string())?;
                if let Some(ranked) = ranked {
                    a.on_incidents(&[ranked]);
                }
                Ok(())
            })
            .await;
            let error = match done {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(e) => e.to_string(),
            };
            tracing::warn!(incident = %id, error = %error, "could not investigate an incident");
            failed.push_back(key);
            if failed.len() > RECENT {
                failed.pop_front();
            }
        }
    }
}

/// Investigations an incident gets at most (its first onset and later ones).
const MAX_PER_INCIDENT: usize = 8;

fn attempt_key(incident: &str, onset: i64) -> String {
    format!("{incident}@{onset}")
}

/// The onset an incident's next investigation looks at: its start when it has none yet;
/// afterwards, the first finding that began after the window already investigated — trouble
/// that started later joined it (a fault on a neighbour while an earlier burst was still
/// open), and the ranking should be about what is going on now, not about how it began.
fn onset_to_investigate(inc: &Incident, last: Option<&Investigation>) -> Option<i64> {
    let Some(last) = last else {
        return Some(inc.start_ms);
    };
    inc.timeline
        .iter()
        .map(|m| m.start_ms)
        .filter(|&s| s >= last.window.end)
        .min()
}

/// The incident with the investigation's ranking (none when it found no change).
fn ranked_by(inc: &Incident, inv: &Investigation) -> Option<Incident> {
    if inv.candidates.is_empty() {
        return None;
    }
    let mut ranked = inc.clone();
    ranked.candidates = inv
        .candidates
        .iter()
        .map(|c| vigil_rca::incident::RankedService {
            service: c.service.clone(),
            score: c.score,
            signal: c.evidence.first().map(|e| e.signal.clone()).unwrap_or_default(),
            reasons: c.reasons.clone(),
        })
        .collect();
    Some(ranked)
}

/// The incident as the API shows it: ranked by its investigation when it has one (the
/// correlator's ranking kept as `correlated_candidates`).
pub fn with_investigation(inc: &Incident, kept: &InvestigationStore) -> Value {
    let mut v = serde_json::to_value(inc).unwrap_or(Value::Null);
    if let Some(inv) = kept.for_incident(&inc.id) {
        apply(&mut v, &inv);
    }
    v
}

fn apply(v: &mut Value, inv: &Investigation) {
    let Some(obj) = v.as_object_mut() else { return };
    let ranked: Vec<Value> = inv
        .candidates
        .iter()
        .map(|c| {
            json!({
                "service": c.service,
                "score": c.score,
                "signal": c.evidence.first().map(|e| e.signal.as_str()).unwrap_or(""),
                "reasons": c.reasons,
            })
        })
        .collect();
    if let Some(old) = obj.remove("candidates") {
        obj.insert("correlated_candidates".into(), old);
    }
    // No change found in the window: the correlator's ranking is all there is.
    if ranked.is_empty() {
        if let Some(old) = obj.remove("correlated_candidates") {
            obj.insert("candidates".into(), old);
        }
    } else {
        obj.insert("candidates".into(), Value::Array(ranked));
    }
    obj.insert("investigation".into(), json!(inv.id));
}

#[cfg(test)]
mod tests {
    use vigil_detectors::anomaly::DetectorKind;
    use vigil_rca::incident::{IncidentStatus, Member};

    use super::super::{RangeMs, ReadCounts};
    use super::*;

    fn member(start_ms: i64) -> Member {
        Member {
            anomaly_id: format!("a{start_ms}"),
            service: "payment".into(),
            detector: DetectorKind::TraceRed,
            signal: "s".into(),
            start_ms,
            end_ms: start_ms + 60_000,
            score: 0.9,
            open: true,
            explanation: String::new(),
            traffic_drop: false,
        }
    }

    fn investigated(start: i64, end: i64) -> Investigation {
        Investigation {
            id: "i".into(),
            created_ms: 0,
            window: RangeMs { start, end },
            baseline: RangeMs { start: 0, end: 1 },
            baseline_reason: String::new(),
            lead_in: None,
            services: Vec::new(),
            incident: Some("inc".into()),
            candidates: Vec::new(),
            notes: Vec::new(),
            read: ReadCounts::default(),
            took_ms: 0.0,
        }
    }

    #[test]
    fn trouble_that_joined_after_the_investigated_window_is_investigated_at_its_own_onset() {
        const MIN: i64 = 60_000;
        let mut inc = Incident {
            id: "inc".into(),
            status: IncidentStatus::Open,
            start_ms: 10 * MIN,
            end_ms: 11 * MIN,
            services: vec!["payment".into()],
            candidates: Vec::new(),
            timeline: vec![member(10 * MIN), member(11 * MIN)],
            summary: String::new(),
            sealed: false,
        };
        assert_eq!(onset_to_investigate(&inc, None), Some(10 * MIN), "first: its start");
        let first = investigated(9 * MIN, 13 * MIN);
        assert_eq!(onset_to_investigate(&inc, Some(&first)), None, "nothing new since");
        inc.timeline.push(member(15 * MIN));
        inc.timeline.push(member(16 * MIN));
        assert_eq!(
            onset_to_investigate(&inc, Some(&first)),
            Some(15 * MIN),
            "a later fault joined"
        );
    }
}
