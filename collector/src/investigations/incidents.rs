//! Every incident gets an investigation of its first minutes, and ranks its root causes by
//! it. The correlator opens incidents online, from findings as they happen, and its ranking
//! can only weigh those findings; once the incident's first minutes are stored, the same
//! comparison an engineer would run — the window against a baseline, over every stored
//! signal — ranks the services far better. The incident keeps the correlator's ranking too
//! (`correlated_candidates` in the API).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use vigil_rca::{Candidate, Incident};

use super::{Investigation, InvestigationStore, Reader, Request};
use crate::pipeline::{IncidentStore, Settled};
use crate::telemetry::Metrics;

/// The window investigated: from a minute before the incident's first symptom
/// ([`Incident::symptom_start_ms`]: its interval may have started late) to three minutes
/// after it.
const BEFORE_MS: i64 = 60_000;
const AFTER_MS: i64 = 180_000;
/// How often incidents are looked at.
const TICK: Duration = Duration::from_secs(2);
/// Incidents looked back on at each tick (the newest first).
const RECENT: usize = 200;
/// Tries of an investigation a cluster's worker failed (one a tick: a lease period or so).
const WORKER_TRIES: u32 = 10;

/// Investigates incidents whose first minutes are final and indexed, one at a time, until
/// `stop`.
///
/// An incident is due once every kind of signal has settled past its window, or went quiet
/// before it (event time: the data's own clock, so a replay at any speed investigates each
/// incident when its minutes are in; a kind whose data ended hours before the others' holds
/// nothing of the window and keeps nothing waiting) and the indexes hold every write-ahead
/// log entry detection had applied by then. Investigating as soon as the fastest kind had passed the window read whatever
/// the last index commit happened to hold: two replays of the same day ranked the same
/// incidents differently.
///
/// `index_delay` is how long after that to wait on top: a cluster's correlator reads the
/// workers' indexes, whose commits it cannot see, so it gives them a few commit intervals.
#[allow(clippy::too_many_arguments)] // the shared stores it reads and writes, each once
pub(crate) async fn run(
    reader: Arc<dyn Reader>,
    index_delay: Duration,
    incidents: Arc<IncidentStore>,
    settled: Arc<std::sync::Mutex<Settled>>,
    kept: Arc<InvestigationStore>,
    alerts: Arc<crate::alerts::AlertService>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    // Incidents whose investigation failed: tried once, not again every tick (the warning
    // says why); bounded like the incidents looked at.
    let mut failed: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    // Incidents whose investigation a cluster's worker failed, with the tries so far.
    let mut retried: HashMap<String, u32> = HashMap::new();
    // Incidents whose window has settled, with the entry the indexes must hold first and
    // when it settled.
    let mut waiting: HashMap<String, (u64, tokio::time::Instant)> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = settled.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let indexed = u64::try_from(metrics.indexed_lsn.get()).unwrap_or(0);
        let recent = incidents.query(0, i64::MAX, None, RECENT);
        waiting.retain(|id, _| recent.iter().any(|i| &i.id == id));
        retried.retain(|id, _| recent.iter().any(|i| &i.id == id));
        let settled: Vec<Incident> = recent
            .into_iter()
            .filter(|i| now.covers(i.symptom_start_ms() - BEFORE_MS, i.symptom_start_ms() + AFTER_MS))
            .filter(|i| kept.count_for_incident(&i.id) == 0 && !failed.contains(&i.id))
            .collect();
        let mut pending = settled.len();
        let due: Vec<Incident> = settled
            .into_iter()
            .filter(|i| {
                let (lsn, since) = *waiting
                    .entry(i.id.clone())
                    .or_insert((now.applied_lsn, tokio::time::Instant::now()));
                lsn <= indexed && since.elapsed() >= index_delay
            })
            .collect();
        for inc in due {
            waiting.remove(&inc.id);
            if stop.is_cancelled() {
                return;
            }
            let now_ms = i64::try_from(crate::timeutil::now_ns() / 1_000_000).unwrap_or(i64::MAX);
            let id = inc.id.clone();
            let (r, k, a) = (Arc::clone(&reader), Arc::clone(&kept), Arc::clone(&alerts));
            let done = tokio::task::spawn_blocking(move || -> Result<(), (bool, String)> {
                let symptom_ms = inc.symptom_start_ms();
                let request = Request {
                    start: symptom_ms - BEFORE_MS,
                    end: symptom_ms + AFTER_MS,
                    baseline: None,
                    services: Vec::new(),
                    incident: Some(inc.id.clone()),
                    // The window already starts before the detectors' first finding, and
                    // detection lags the onset: a lead-in would hold the onset itself.
                    lead_in: false,
                };
                // A cluster's worker that did not answer (it just died, its partitions are
                // moving) is worth asking again; anything else would fail the same way.
                let inv = super::run(r.as_ref(), &request, now_ms)
                    .map_err(|e| (matches!(e, crate::storage::QueryError::Worker(_)), e.to_string()))?;
                // The incident's alert names the investigation's root cause from now on
                // (same labels: the same alert, updated; no second page).
                let ranked = ranked_by(&inc, &inv);
                k.add(inv).map_err(|e| (false, e.to_string()))?;
                if let Some(ranked) = ranked {
                    a.on_incidents(&[ranked]);
                }
                Ok(())
            })
            .await;
            let (again, error) = match done {
                Ok(Ok(())) => {
                    pending -= 1;
                    continue;
                }
                Ok(Err(e)) => e,
                Err(e) => (false, e.to_string()),
            };
            let tries = retried.entry(id.clone()).or_insert(0);
            *tries += 1;
            if again && *tries < WORKER_TRIES {
                tracing::info!(incident = %id, error = %error, "investigating an incident again soon");
                continue;
            }
            retried.remove(&id);
            pending -= 1;
            tracing::warn!(incident = %id, error = %error, "could not investigate an incident");
            failed.push_back(id);
            if failed.len() > RECENT {
                failed.pop_front();
            }
        }
        // Set after the pass, so that a reader seeing this time with nothing due knows every
        // incident settled by then has its investigation (the evaluation harness waits so).
        metrics
            .investigations_due
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        if now.event_ms > 0 {
            metrics.investigations_settled_time.set(now.event_ms / 1000);
        }
    }
}

/// The incident with the investigation's ranking (none when it found no change).
fn ranked_by(inc: &Incident, inv: &Investigation) -> Option<Incident> {
    if inv.candidates.is_empty() {
        return None;
    }
    let mut ranked = inc.clone();
    ranked.summary = investigated_summary(&inv.candidates[0]);
    ranked.candidates = inv
        .candidates
        .iter()
        .map(|c| vigil_rca::RankedService {
            service: c.service.clone(),
            score: c.score,
            signal: c.evidence.first().map(|e| e.signal.clone()).unwrap_or_default(),
            reasons: c.reasons.clone(),
        })
        .collect();
    Some(ranked)
}

/// The summary once an investigation ranked the incident: its top candidate and that
/// candidate's first reason, so the line a person reads first (the page, the alert) names the
/// service the ranking under it puts first — not the correlator's first finding, which may be
/// a bystander's blip a minute early.
fn investigated_summary(top: &Candidate) -> String {
    match top.reasons.first() {
        Some(reason) => format!("{} likely root cause: {reason}", top.service),
        None => format!(
            "{} likely root cause: the largest change in the incident's first minutes",
            top.service
        ),
    }
}

/// The incident as the API shows it: ranked by its investigation when it has one (the
/// correlator's ranking kept as `correlated_candidates`).
pub(crate) fn with_investigation(inc: &Incident, kept: &InvestigationStore) -> Value {
    let mut v = serde_json::to_value(inc).unwrap_or(Value::Null);
    // Graded by the correlator, sent so no reader grades it a second way.
    if let Some(obj) = v.as_object_mut() {
        obj.insert("severity".into(), json!(inc.severity()));
    }
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
        if let Some(old) = obj.remove("summary") {
            obj.insert("correlated_summary".into(), old);
        }
        obj.insert("summary".into(), json!(investigated_summary(&inv.candidates[0])));
    }
    obj.insert("investigation".into(), json!(inv.id));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn investigation(candidates: Value) -> Investigation {
        serde_json::from_value(json!({
            "id": "inv-1", "created_ms": 0, "window": {"start": 0, "end": 1},
            "baseline": {"start": -2, "end": -1}, "baseline_reason": "before",
            "candidates": candidates, "took_ms": 1.0,
            "read": {"window_spans": 0, "baseline_spans": 0, "window_log_lines": 0,
                     "baseline_log_lines": 0, "metric_series": 0, "truncated": false}
        }))
        .expect("investigation")
    }

    #[test]
    fn the_summary_names_the_service_the_investigation_ranks_first() {
        let mut v = json!({"summary": "cache likely root cause: p50 latency of cache GET …",
                           "candidates": [{"service": "cache"}]});
        let inv = investigation(json!([
            {"service": "checkout", "score": 0.6, "reasons": ["6 of 34 requests failed there"], "evidence": []},
            {"service": "cache", "score": 0.1, "reasons": [], "evidence": []}
        ]));
        apply(&mut v, &inv);
        assert_eq!(v["candidates"][0]["service"], "checkout");
        assert_eq!(
            v["summary"],
            "checkout likely root cause: 6 of 34 requests failed there"
        );
        assert_eq!(
            v["correlated_summary"],
            "cache likely root cause: p50 latency of cache GET …"
        );

        // Nothing found in the window: the correlator's ranking and summary stand.
        let mut v = json!({"summary": "cache likely root cause", "candidates": [{"service": "cache"}]});
        apply(&mut v, &investigation(json!([])));
        assert_eq!(v["summary"], "cache likely root cause");
        assert_eq!(v["candidates"][0]["service"], "cache");
    }
}
