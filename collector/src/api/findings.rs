//! What the detectors and the correlator found: anomalies (and a human's verdict on them),
//! incidents with their evidence, and the service graph.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;

use super::{ApiError, ApiState, Params, limit_param, range, timed};
use crate::pipeline::FeedbackError;
use crate::storage::LogQuery;

pub(super) async fn anomalies(State(state): State<ApiState>, Query(params): Params) -> Result<Response, ApiError> {
    let (start, end) = range(&state, &params)?;
    let limit = limit_param(&state, &params, 100)?;
    let service = params.get("service").cloned();
    let store = Arc::clone(&state.anomalies);
    let found = store.query(start / 1_000_000, end / 1_000_000, service.as_deref(), limit);
    Ok(Json(json!({ "anomalies": found })).into_response())
}

pub(super) async fn incidents(State(state): State<ApiState>, Query(params): Params) -> Result<Response, ApiError> {
    let (start, end) = range(&state, &params)?;
    let limit = limit_param(&state, &params, 100)?;
    let status = match params.get("status").map(String::as_str) {
        None => None,
        Some("open") => Some(vigil_rca::IncidentStatus::Open),
        Some("resolved") => Some(vigil_rca::IncidentStatus::Resolved),
        Some(other) => return Err(ApiError::bad(format!("status: {other:?} is not open or resolved"))),
    };
    let found: Vec<serde_json::Value> = state
        .incidents
        .query(start / 1_000_000, end / 1_000_000, status, limit)
        .iter()
        .map(|i| crate::investigations::incidents::with_investigation(i, &state.investigations))
        .collect();
    Ok(Json(json!({ "incidents": found })).into_response())
}

/// One incident: ranked candidates with reasons, the anomaly timeline, the summary, and
/// for each anomaly the query that reproduces its evidence.
pub(super) async fn incident(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let Some(inc) = state.incidents.get(&id) else {
        return Err(ApiError::NotFound(format!("no incident with id {id:?}")));
    };
    // Evidence per anomaly: the anomaly (band, exemplar trace ids), the queries that
    // reproduce it, and for log findings a few sample lines of the pattern.
    let mut evidence = Vec::new();
    for m in &inc.timeline {
        let anomaly = state.anomalies.get(&m.anomaly_id);
        let pattern = anomaly
            .as_ref()
            .and_then(|a| a.signal.labels.get("pattern"))
            .and_then(|p| p.parse::<u64>().ok());
        let window = (m.start_ms - 300_000, m.end_ms + 60_000);
        let mut logs_query = format!(
            "/api/v1/logs/search?service={}&start={}&end={}",
            m.service, window.0, window.1
        );
        let mut samples = Vec::new();
        if let Some(p) = pattern {
            // Pattern ids are global, and a line may have been joined to its service (by trace
            // id or host) without carrying the name: search by pattern alone.
            logs_query = format!("/api/v1/logs/search?pattern={p}&start={}&end={}", window.0, window.1);
            let q = LogQuery {
                query: String::new(),
                start_ns: window.0.saturating_mul(1_000_000),
                end_ns: window.1.saturating_mul(1_000_000),
                service: None,
                patterns: Some(state.patterns.ids_of(p)),
            };
            if let Ok(hits) = timed(&state, "incident_samples", move |s| s.search_logs(&q, 3)).await {
                samples = hits.hits;
            }
        }
        let traces: Vec<String> = anomaly
            .as_ref()
            .map(|a| a.exemplars.iter().map(|t| format!("/api/v1/traces/{t}")).collect())
            .unwrap_or_default();
        evidence.push(json!({
            "anomaly": anomaly,
            "query": format!("/api/v1/anomalies/{}", m.anomaly_id),
            "logs": logs_query,
            "sample_lines": samples,
            "traces": traces,
        }));
    }
    let mut body = crate::investigations::incidents::with_investigation(&inc, &state.investigations);
    body["evidence"] = serde_json::Value::Array(evidence);
    Ok(Json(body).into_response())
}

pub(super) async fn services_graph(State(state): State<ApiState>) -> Response {
    let now = crate::timeutil::now_ms();
    let graph = state.topology.lock().unwrap_or_else(|e| e.into_inner()).graph(now);
    Json(graph).into_response()
}

pub(super) async fn anomaly(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match state.anomalies.get(&id) {
        Some(a) => Ok(Json(a).into_response()),
        None => Err(ApiError::NotFound(format!("no anomaly with id {id:?}"))),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    verdict: vigil_detectors::Verdict,
}

/// A human's verdict on a finding: "noise" makes that signal less sensitive, "real" keeps
/// or restores its sensitivity. Durable before the answer.
pub(super) async fn anomaly_feedback(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: FeedbackBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("expected {{\"verdict\": \"noise\" | \"real\"}}: {e}")))?;
    let store = Arc::clone(&state.anomalies);
    let id2 = id.clone();
    let recorded = tokio::task::spawn_blocking(move || store.record_feedback(&id2, body.verdict))
        .await
        .map_err(|e| ApiError::Internal(format!("feedback task failed: {e}")))?;
    match recorded {
        Ok((key, counts)) => {
            state.pipeline.feedback(key.clone(), body.verdict);
            let threshold = counts.threshold(vigil_detectors::EngineConfig::default().threshold);
            Ok(Json(json!({
                "anomaly_id": id,
                "signal": key,
                "noise": counts.noise,
                "real": counts.real,
                "threshold": threshold,
            }))
            .into_response())
        }
        Err(FeedbackError::UnknownAnomaly(_)) => Err(ApiError::NotFound(format!("no anomaly with id {id:?}"))),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}
