//! Every incident gets an investigation of its first minutes, and ranks its root causes by
//! it. The correlator opens incidents online, from findings as they happen, and its ranking
//! can only weigh those findings; once the incident's first minutes are stored, the same
//! comparison an engineer would run — the window against a baseline, over every stored
//! signal — ranks the services far better. The incident keeps the correlator's ranking too
//! (`correlated_candidates` in the API).
//!
//! When the trouble began is known only roughly: a finding is stamped with the start of the
//! interval it showed in, a change shows an interval or two after it began, and the first
//! finding may be a symptom that came later still. An investigation is sharp about its
//! window — started a minute early it dilutes the change with quiet minutes, a minute late
//! it counts the change's first minute as "already going on" — so one window would bet the
//! ranking on one guess. The incident is investigated over several windows, their starts
//! from three minutes before its first finding to half a minute after, and each window's
//! first-ranked service gets a vote (see [`combine`]).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use vigil_rca::incident::Incident;

use super::{Investigation, InvestigationStore, Request};
use crate::pipeline::IncidentStore;
use crate::storage::Store;
use crate::telemetry::Metrics;

/// Where the windows investigated start, relative to the incident's first finding; each
/// is [`WINDOW_MS`] long.
const ALIGNMENTS_MS: [i64; 8] = [-180_000, -150_000, -120_000, -90_000, -60_000, -30_000, 0, 30_000];
const WINDOW_MS: i64 = 180_000;
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
    // Incidents whose investigation failed: tried once, not again every tick (the warning
    // says why); bounded like the incidents looked at.
    let mut failed: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let last_end = ALIGNMENTS_MS.iter().max().copied().unwrap_or(0) + WINDOW_MS;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Event time the detectors have reached: the data's own clock, so a replay at
        // any speed investigates each incident once its minutes are in.
        let event_ms = metrics.detect_event_time.get().saturating_mul(1000);
        let due: Vec<Incident> = incidents
            .query(0, i64::MAX, None, RECENT)
            .into_iter()
            .filter(|i| i.start_ms + last_end <= event_ms)
            .filter(|i| kept.count_for_incident(&i.id) == 0 && !failed.contains(&i.id))
            .collect();
        for inc in due {
            if stop.is_cancelled() {
                return;
            }
            let now_ms = i64::try_from(crate::timeutil::now_ns() / 1_000_000).unwrap_or(i64::MAX);
            let id = inc.id.clone();
            let (s, k, a) = (Arc::clone(&store), Arc::clone(&kept), Arc::clone(&alerts));
            let done = tokio::task::spawn_blocking(move || -> Result<(), String> {
                let mut runs = Vec::new();
                for offset in ALIGNMENTS_MS {
                    let request = Request {
                        start: inc.start_ms + offset,
                        end: inc.start_ms + offset + WINDOW_MS,
                        baseline: None,
                        services: Vec::new(),
                        incident: Some(inc.id.clone()),
                        lead_in: true,
                    };
                    runs.push(super::run(&s, &request, now_ms).map_err(|e| format!("{e:?}"))?);
                }
                let Some(inv) = combine(runs) else {
                    return Ok(());
                };
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
            failed.push_back(id);
            if failed.len() > RECENT {
                failed.pop_front();
            }
        }
    }
}

/// One investigation from several over differently aligned windows (in [`ALIGNMENTS_MS`]
/// order): each window's first-ranked service gets a vote, and lower places a hundredth
/// each (four for second … one for fifth) so that ties go to the service ranked higher more
/// often. Each service keeps the evidence of the window that ranked it highest (the
/// earliest such window), its score is its share of the votes, and its first reason says how
/// it fared. The investigation shown is the window whose first-ranked service won, nearest
/// the middle of the windows. `None` without runs.
fn combine(runs: Vec<Investigation>) -> Option<Investigation> {
    struct Tally {
        service: String,
        votes: f64,
        firsts: usize,
        /// (place, run) where the service ranked highest.
        best: (usize, usize),
    }
    let k = runs.len();
    let mut tally: Vec<Tally> = Vec::new();
    for (r, run) in runs.iter().enumerate() {
        for (place, c) in run.candidates.iter().enumerate() {
            let vote = if place == 0 {
                1.0
            } else {
                0.01 * 5usize.saturating_sub(place) as f64
            };
            match tally.iter_mut().find(|t| t.service == c.service) {
                Some(t) => {
                    t.votes += vote;
                    t.firsts += usize::from(place == 0);
                    t.best = t.best.min((place, r));
                }
                None => tally.push(Tally {
                    service: c.service.clone(),
                    votes: vote,
                    firsts: usize::from(place == 0),
                    best: (place, r),
                }),
            }
        }
    }
    tally.sort_by(|a, b| b.votes.total_cmp(&a.votes).then_with(|| a.service.cmp(&b.service)));
    let middle = k / 2;
    let shown = tally
        .first()
        .and_then(|winner| {
            (0..k)
                .filter(|&r| runs[r].candidates.first().is_some_and(|c| c.service == winner.service))
                .min_by_key(|&r| r.abs_diff(middle))
        })
        .unwrap_or(middle.min(k.saturating_sub(1)));
    let candidates = tally
        .iter()
        .filter_map(|t| {
            let mut c = runs[t.best.1]
                .candidates
                .iter()
                .find(|c| c.service == t.service)?
                .clone();
            c.score = (t.votes / k as f64).min(1.0);
            c.reasons.insert(
                0,
                format!(
                    "ranked first in {} of {k} windows around the incident's start",
                    t.firsts
                ),
            );
            Some(c)
        })
        .collect();
    let mut inv = runs.into_iter().nth(shown)?;
    inv.candidates = candidates;
    inv.notes.push(format!(
        "ranked over {k} three-minute windows starting from 3 min before the incident's first finding to 30 s after: when trouble began is known only to a minute or two"
    ));
    Some(inv)
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
    use vigil_rca::investigate::Candidate;

    use super::super::{RangeMs, ReadCounts};
    use super::*;

    fn investigated(start: i64, ranked: &[&str]) -> Investigation {
        Investigation {
            id: format!("i{start}"),
            created_ms: 0,
            window: RangeMs {
                start,
                end: start + WINDOW_MS,
            },
            baseline: RangeMs { start: 0, end: 1 },
            baseline_reason: String::new(),
            lead_in: None,
            services: Vec::new(),
            incident: Some("inc".into()),
            candidates: ranked
                .iter()
                .map(|s| Candidate {
                    service: s.to_string(),
                    score: 0.5,
                    reasons: vec![format!("{s} moved in the window from {start}")],
                    evidence: Vec::new(),
                })
                .collect(),
            notes: Vec::new(),
            read: ReadCounts::default(),
            took_ms: 0.0,
        }
    }

    #[test]
    fn windows_around_the_start_vote_for_the_root_cause() {
        let runs = vec![
            investigated(0, &["api", "db"]),
            investigated(30, &["db", "api"]),
            investigated(60, &["db", "cache"]),
            investigated(90, &["cache", "db"]),
        ];
        let inv = combine(runs).expect("four runs");
        let ranked: Vec<&str> = inv.candidates.iter().map(|c| c.service.as_str()).collect();
        // db: first twice; api and cache first once each, second once each (a tie, by name).
        assert_eq!(ranked, ["db", "api", "cache"]);
        let db = &inv.candidates[0];
        assert!((db.score - 2.08 / 4.0).abs() < 1e-9, "{}", db.score);
        assert_eq!(
            db.reasons[0],
            "ranked first in 2 of 4 windows around the incident's start"
        );
        assert_eq!(
            db.reasons[1], "db moved in the window from 30",
            "evidence of its best window"
        );
        assert_eq!(
            inv.window.start, 60,
            "the window shown is one that ranked db first, nearest the middle"
        );
        assert!(inv.notes.iter().any(|n| n.contains("4 three-minute windows")));
        assert!(combine(Vec::new()).is_none());
    }
}
