//! On-call schedules over HTTP: create or replace a schedule's rotations, put someone on
//! call for a while (overrides), ask who is on call now and over the coming days, and
//! subscribe a calendar to the shifts (an iCalendar feed behind a signed URL, since
//! calendar apps send no headers). Changes are attributed to the caller and audited.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use vigil_alerting::{Schedule, Shift};

use super::alertmanager::parse_ts;
use super::alerts::blocking;
use super::{ApiError, ApiState};
use crate::auth::Identity;

const DAY_MS: i64 = 86_400_000;
/// How far `GET /api/v1/schedules/{name}` looks ahead unless told (`days`).
const DEFAULT_DAYS: i64 = 14;
/// The calendar feed: a week back, eight weeks ahead.
const FEED_BACK_MS: i64 = 7 * DAY_MS;
const FEED_AHEAD_MS: i64 = 56 * DAY_MS;

/// A schedule with who is on call now and the shifts of the coming days.
fn view(state: &ApiState, s: &Schedule, now: i64, days: i64) -> Result<Value, ApiError> {
    let compiled = s
        .compile()
        .map_err(|e| ApiError::Internal(format!("stored schedule is invalid: {e}")))?;
    let on_call: Option<Shift> = compiled.on_call_at(now);
    Ok(json!({
        "name": s.name,
        "time_zone": s.time_zone,
        "layers": s.layers,
        "overrides": s.overrides,
        "updated_ms": s.updated_ms,
        "updated_by": s.updated_by,
        "on_call": on_call,
        "shifts": compiled.shifts(now, now + days * DAY_MS),
        "calendar": state.alerts.feed_url(&s.name),
    }))
}

fn days_param(params: &HashMap<String, String>) -> Result<i64, ApiError> {
    match params.get("days") {
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|d| (1..=366).contains(d))
            .ok_or_else(|| ApiError::bad("days must be between 1 and 366")),
        None => Ok(DEFAULT_DAYS),
    }
}

/// `GET /api/v1/schedules`: every schedule with who is on call now.
pub(super) async fn list(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let days = days_param(&params)?;
    let now = crate::timeutil::now_ms();
    let out: Vec<Value> = state
        .alerts
        .schedules()
        .iter()
        .map(|s| view(&state, s, now, days))
        .collect::<Result<_, _>>()?;
    Ok(Json(json!({ "schedules": out })).into_response())
}

/// `GET /api/v1/oncall`: who is on call now, per schedule.
pub(super) async fn now(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let now = crate::timeutil::now_ms();
    let mut out = serde_json::Map::new();
    for s in state.alerts.schedules() {
        let who = s.compile().ok().and_then(|c| c.on_call_at(now));
        out.insert(s.name.clone(), json!(who));
    }
    Ok(Json(json!({ "on_call": out })).into_response())
}

/// `GET /api/v1/schedules/{name}`.
pub(super) async fn get_one(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let days = days_param(&params)?;
    let s = state
        .alerts
        .schedule(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no schedule named {name:?}")))?;
    Ok(Json(view(&state, &s, crate::timeutil::now_ms(), days)?).into_response())
}

/// What `PUT /api/v1/schedules/{name}` takes: the time zone and the layers.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SchedulePut {
    time_zone: String,
    layers: Vec<vigil_alerting::Layer>,
}

/// `PUT /api/v1/schedules/{name}`: creates or replaces the rotations (overrides stay).
pub(super) async fn put(
    State(state): State<ApiState>,
    Extension(identity): Extension<Identity>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p: SchedulePut = serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("invalid schedule: {e}")))?;
    let schedule = Schedule {
        name: name.clone(),
        time_zone: p.time_zone,
        layers: p.layers,
        overrides: Vec::new(),
        updated_ms: 0,
        updated_by: String::new(),
    };
    let by = identity.actor(None);
    blocking(&state.alerts, move |s| s.put_schedule(schedule, &by)).await?;
    let s = state
        .alerts
        .schedule(&name)
        .ok_or_else(|| ApiError::Internal("schedule vanished".into()))?;
    Ok(Json(view(&state, &s, crate::timeutil::now_ms(), DEFAULT_DAYS)?).into_response())
}

/// `DELETE /api/v1/schedules/{name}`.
pub(super) async fn delete(
    State(state): State<ApiState>,
    Extension(identity): Extension<Identity>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let by = identity.actor(None);
    blocking(&state.alerts, move |s| s.delete_schedule(&name, &by)).await?;
    Ok(Json(json!({ "deleted": true })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverridePost {
    user: String,
    start: String,
    end: String,
}

/// `POST /api/v1/schedules/{name}/overrides` `{"user", "start", "end"}` (RFC 3339).
pub(super) async fn add_override(
    State(state): State<ApiState>,
    Extension(identity): Extension<Identity>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p: OverridePost = serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("invalid override: {e}")))?;
    let start = parse_ts(&Some(p.start), "start")?.ok_or_else(|| ApiError::bad("start is required"))?;
    let end = parse_ts(&Some(p.end), "end")?.ok_or_else(|| ApiError::bad("end is required"))?;
    let by = identity.actor(None);
    let user = p.user;
    let id = blocking(&state.alerts, move |s| s.add_override(&name, &user, (start, end), &by)).await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}

/// `DELETE /api/v1/schedules/{name}/overrides/{id}`.
pub(super) async fn delete_override(
    State(state): State<ApiState>,
    Extension(identity): Extension<Identity>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let by = identity.actor(None);
    blocking(&state.alerts, move |s| s.delete_override(&name, &id, &by)).await?;
    Ok(Json(json!({ "deleted": true })).into_response())
}

/// `GET /api/v1/schedules/{name}/calendar.ics?token=…[&user=…]`: the shifts as an
/// iCalendar feed. The signed token is the authorization (it opens this feed only).
pub(super) async fn calendar(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let token = params.get("token").map_or("", String::as_str);
    if !state.alerts.feed_token_ok(&name, token) {
        return Err(ApiError::Forbidden(
            "this calendar link is not valid: copy it again from the schedule".into(),
        ));
    }
    let s = state
        .alerts
        .schedule(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no schedule named {name:?}")))?;
    let compiled = s
        .compile()
        .map_err(|e| ApiError::Internal(format!("stored schedule is invalid: {e}")))?;
    let now = crate::timeutil::now_ms();
    let body = compiled.ical(
        now - FEED_BACK_MS,
        now + FEED_AHEAD_MS,
        params.get("user").map(String::as_str),
        now,
    );
    Ok(([(CONTENT_TYPE, "text/calendar; charset=utf-8")], body).into_response())
}
