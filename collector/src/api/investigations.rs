//! `POST /api/v1/investigations`, `GET /api/v1/investigations[/{id}]`.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;

use super::{ApiError, ApiState, Params, limit_param, timed};
use crate::investigations::{self, Local, Read, Request};
use crate::timeutil::now_ns;

/// Runs an investigation and keeps it; answers it whole (201, with its location).
pub(super) async fn create(
    State(state): State<ApiState>,
    body: Result<Json<Request>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::bad(format!("invalid investigation request: {}", e.body_text())))?;
    let now_ms = i64::try_from(now_ns() / 1_000_000).unwrap_or(i64::MAX);
    let reader = Arc::clone(&state.investigation_reader);
    let inv = timed(&state, "investigations", move |_| {
        investigations::run(reader.as_ref(), &request, now_ms)
    })
    .await?;
    let kept = Arc::clone(&state.investigations);
    let saved = inv.clone();
    tokio::task::spawn_blocking(move || kept.add(saved))
        .await
        .map_err(|e| ApiError::Internal(format!("saving task failed: {e}")))?
        .map_err(|e| {
            tracing::error!(error = %e, "could not save an investigation");
            ApiError::Internal(format!("could not save the investigation: {e}"))
        })?;
    let location = format!("/api/v1/investigations/{}", inv.id);
    Ok((StatusCode::CREATED, [(http::header::LOCATION, location)], Json(inv)).into_response())
}

/// `POST /api/v1/investigations/read`: this collector's share of an investigation's rows,
/// for a cluster's correlator that ranks over every worker's (`investigations::Read`).
pub(super) async fn read(
    State(state): State<ApiState>,
    body: Result<Json<Read>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(read) = body.map_err(|e| ApiError::bad(format!("invalid read: {}", e.body_text())))?;
    let local = Local {
        store: Arc::clone(&state.store),
        patterns: Arc::clone(&state.patterns),
    };
    let answer = timed(&state, "investigations_read", move |_| read.answer(&local)).await?;
    Ok(Json(answer).into_response())
}

/// The newest first: id, window and the top candidates, without the evidence.
pub(super) async fn list(State(state): State<ApiState>, Query(params): Params) -> Result<Response, ApiError> {
    let limit = limit_param(&state, &params, 50)?;
    let items: Vec<serde_json::Value> = state
        .investigations
        .list(limit)
        .into_iter()
        .map(|i| {
            json!({
                "id": i.id,
                "created_ms": i.created_ms,
                "window": i.window,
                "baseline": i.baseline,
                "services": i.services,
                "incident": i.incident,
                "candidates": i.candidates.iter().take(5).map(|c| json!({
                    "service": c.service,
                    "score": c.score,
                    "reason": c.reasons.first(),
                })).collect::<Vec<_>>(),
                "notes": i.notes,
            })
        })
        .collect();
    Ok(Json(json!({ "investigations": items })).into_response())
}

pub(super) async fn get_one(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match state.investigations.get(&id) {
        Some(inv) => Ok(Json(inv).into_response()),
        None => Err(ApiError::NotFound(format!("no investigation with id {id:?}"))),
    }
}
