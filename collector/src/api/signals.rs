//! Reading the stored signals: log search, histograms and patterns, traces, services and
//! metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;

use super::{ApiError, ApiState, Params, limit_param, range, time_param, timed};
use crate::storage::{Agg, LogQuery, MetricQuery, Selector, parse_label_list};
use crate::timeutil::{now_ns, parse_duration};

pub(super) fn log_query(state: &ApiState, params: &HashMap<String, String>) -> Result<LogQuery, ApiError> {
    let (start_ns, end_ns) = range(state, params)?;
    Ok(LogQuery {
        query: params.get("q").cloned().unwrap_or_default(),
        start_ns,
        end_ns,
        service: params.get("service").cloned(),
        patterns: match (
            params.get("pattern").filter(|p| !p.is_empty()),
            params.get("template").filter(|t| !t.is_empty()),
        ) {
            (Some(_), Some(_)) => return Err(ApiError::bad("give pattern or template, not both")),
            (Some(p), None) => Some(
                state.patterns.ids_of(
                    p.parse()
                        .map_err(|_| ApiError::bad(format!("pattern: {p:?} is not a pattern id")))?,
                ),
            ),
            // The template as the patterns listing shows it: a cluster's query root filters by
            // it, pattern ids being each worker's own.
            (None, Some(t)) => Some(state.patterns.ids_with_template(t)),
            (None, None) => None,
        },
    })
}

/// `GET /api/v1/logs/patterns/{id}`: one pattern as the catalogue holds it (template and
/// first sighting), without reading the indexes.
pub(super) async fn log_pattern(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad(format!("{id:?} is not a pattern id")))?;
    let info = state
        .patterns
        .info(id)
        .ok_or_else(|| ApiError::NotFound(format!("no pattern {id} (never seen, or evicted from the miner)")))?;
    Ok(Json(json!({
        "pattern_id": info.id,
        "template": info.template,
        "first_seen": crate::timeutil::format_ns(info.first_seen_ns),
    }))
    .into_response())
}

pub(super) async fn logs_search(State(state): State<ApiState>, Query(params): Params) -> Result<Response, ApiError> {
    let q = log_query(&state, &params)?;
    let limit = limit_param(&state, &params, 100)?;
    let started = Instant::now();
    let hits = timed(&state, "logs_search", move |s| s.search_logs(&q, limit)).await?;
    Ok(Json(json!({
        "total": hits.total,
        "hits": hits.hits,
        "took_ms": started.elapsed().as_secs_f64() * 1000.0,
    }))
    .into_response())
}

pub(super) async fn logs_patterns(State(state): State<ApiState>, Query(params): Params) -> Result<Response, ApiError> {
    let q = log_query(&state, &params)?;
    let limit = limit_param(&state, &params, 100)?;
    let catalog = Arc::clone(&state.patterns);
    let describe = move |id| catalog.info(id).map(|p| (p.id, p.template, p.first_seen_ns));
    let patterns = timed(&state, "logs_patterns", move |s| s.log_patterns(&q, limit, &describe)).await?;
    Ok(Json(json!({ "patterns": patterns })).into_response())
}

pub(super) async fn logs_histogram(State(state): State<ApiState>, Query(params): Params) -> Result<Response, ApiError> {
    let q = log_query(&state, &params)?;
    let interval = match params.get("interval") {
        Some(v) => parse_duration(v).map_err(|e| ApiError::bad(format!("interval: {e}")))?,
        // About 100 buckets, rounded up to a whole second.
        None => (((q.end_ns - q.start_ns) / 100).max(1) as u64).div_ceil(1_000_000_000) as i64 * 1_000_000_000,
    };
    let buckets = timed(&state, "logs_histogram", move |s| s.log_histogram(&q, interval)).await?;
    Ok(Json(json!({ "interval_ms": interval / 1_000_000, "buckets": buckets })).into_response())
}

pub(super) async fn trace(State(state): State<ApiState>, Path(trace_id): Path<String>) -> Result<Response, ApiError> {
    let id = trace_id.clone();
    let spans = timed(&state, "trace", move |s| s.trace(&id)).await?;
    if spans.is_empty() {
        return Err(ApiError::NotFound(format!("trace {trace_id} not found")));
    }
    Ok(Json(json!({ "trace_id": trace_id.to_ascii_lowercase(), "spans": spans })).into_response())
}

pub(super) async fn services(State(state): State<ApiState>, Query(params): Params) -> Result<Response, ApiError> {
    let (start, end) = range(&state, &params)?;
    let services = timed(&state, "services", move |s| s.services(start, end)).await?;
    Ok(Json(json!({ "services": services })).into_response())
}

pub(super) async fn metric_names(State(state): State<ApiState>, Query(params): Params) -> Result<Response, ApiError> {
    let (start, end) = range(&state, &params)?;
    let limit = limit_param(&state, &params, 1000)?;
    let names = timed(&state, "metrics_names", move |s| s.metric_names(start, end, limit)).await?;
    Ok(Json(json!({ "names": names })).into_response())
}

pub(super) async fn metric_series(State(state): State<ApiState>, Query(params): Params) -> Result<Response, ApiError> {
    let selector = match params.get("match") {
        Some(m) => Selector::parse(m).map_err(|e| ApiError::bad(format!("match: {e}")))?,
        None => {
            return Err(ApiError::bad(
                "match is required, e.g. match=http.server.duration{service.name=\"cart\"}",
            ));
        }
    };
    let (start, end) = range(&state, &params)?;
    let limit = limit_param(&state, &params, 1000)?;
    let series = timed(&state, "metrics_series", move |s| {
        s.metric_series(&selector, start, end, limit)
    })
    .await?;
    Ok(Json(json!({ "series": series })).into_response())
}

pub(super) async fn metric_query(State(state): State<ApiState>, Query(params): Params) -> Result<Response, ApiError> {
    let name = params
        .get("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad("name is required"))?;
    let labels = match params.get("labels") {
        Some(l) => parse_label_list(l).map_err(|e| ApiError::bad(format!("labels: {e}")))?,
        None => Default::default(),
    };
    let now = i64::try_from(now_ns()).unwrap_or(i64::MAX);
    let end = time_param(&params, "end", now)?;
    let start = time_param(&params, "start", end.saturating_sub(3_600_000_000_000))?;
    if start > end {
        return Err(ApiError::bad("start is after end"));
    }
    let step_ns = match params.get("step") {
        Some(v) => parse_duration(v).map_err(|e| ApiError::bad(format!("step: {e}")))?,
        None => (((end - start) / 300).max(1) as u64).div_ceil(1_000_000_000) as i64 * 1_000_000_000,
    };
    let agg = Agg::parse(params.get("agg").map(String::as_str).unwrap_or("avg"))
        .map_err(|e| ApiError::bad(format!("agg: {e}")))?;
    let rate = match params.get("rate").map(String::as_str) {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => return Err(ApiError::bad(format!("rate: {other:?} is not true or false"))),
    };
    let q = MetricQuery {
        selector: Selector {
            name: Some(name.clone()),
            labels,
        },
        start_ns: start,
        end_ns: end,
        step_ns,
        agg,
        rate,
    };
    let result = timed(&state, "metrics_query", move |s| s.metric_query(&q)).await?;
    Ok(Json(json!({ "name": name, "result": result })).into_response())
}
