//! The JSON query API, health endpoints and `/metrics`.

mod alertmanager;
mod alerts;
mod investigations;
mod oncall;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use serde_json::json;

use crate::auth::{Identity, TokenCheck};
use crate::config::UserRole;
use crate::pipeline::{AnomalyStore, FeedbackError, PipelineSender};
use crate::storage::{Agg, LogQuery, MetricQuery, QueryError, Selector, Store, parse_label_list};
use crate::telemetry::{EndpointLabel, Metrics};
use crate::timeutil::{now_ns, parse_duration, parse_time};

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub token: TokenCheck,
    pub max_results: usize,
    pub retention_hours: u64,
    pub anomalies: Arc<AnomalyStore>,
    pub incidents: Arc<crate::pipeline::IncidentStore>,
    pub topology: Arc<std::sync::Mutex<vigil_rca::topology::Topology>>,
    pub pipeline: PipelineSender,
    pub alerts: Arc<crate::alerts::AlertService>,
    /// Accepted (besides the API token) on the responder actions: ack, resolve, comment…
    pub responder: TokenCheck,
    /// Personal tokens (viewer, responder, admin), named in everything they do.
    pub users: Arc<crate::auth::Users>,
    pub investigations: Arc<crate::investigations::InvestigationStore>,
}

/// An API error: what kind of mistake, with a message saying what was wrong. The one place
/// where kinds become HTTP statuses is [`ApiError::status`].
#[derive(Debug)]
pub enum ApiError {
    /// The request is malformed or asks for something impossible (400).
    BadRequest(String),
    /// No credentials, or wrong ones (401).
    Unauthorized(String),
    /// Credentials that do not allow this (403).
    Forbidden(String),
    /// No such alert, silence, incident, investigation… (404).
    NotFound(String),
    /// The request collides with what is there (409).
    Conflict(String),
    /// Something that was valid no longer is, such as an expired link (410).
    Gone(String),
    /// Vigil failed, not the caller (500); logged where it happened.
    Internal(String),
}

impl ApiError {
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(message.into())
    }

    /// The HTTP status of each kind of error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn message(&self) -> &str {
        match self {
            ApiError::BadRequest(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::Gone(m)
            | ApiError::Internal(m) => m,
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> ApiError {
        match e {
            QueryError::BadRequest(m) => ApiError::BadRequest(m),
            QueryError::Internal(e) => {
                tracing::error!(error = %e, "query failed");
                ApiError::Internal(format!("search failed: {e}"))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(json!({ "error": self.message() }))).into_response()
    }
}

type Params = Query<HashMap<String, String>>;

/// The API router; `/api/*` and `/metrics` require the API token when one is set.
pub fn router(state: ApiState) -> Router {
    alertmanager::mark_started();
    let protected = Router::new()
        .route("/api/v1/logs/search", get(logs_search))
        .route("/api/v1/logs/histogram", get(logs_histogram))
        .route("/api/v1/logs/patterns", get(logs_patterns))
        .route("/api/v1/anomalies", get(anomalies))
        .route("/api/v1/anomalies/{id}", get(anomaly))
        .route("/api/v1/anomalies/{id}/feedback", post(anomaly_feedback))
        .route("/api/v1/incidents", get(incidents))
        .route("/api/v1/incidents/{id}", get(incident))
        .route("/api/v1/services/graph", get(services_graph))
        .route(
            "/api/v1/investigations",
            get(investigations::list).post(investigations::create),
        )
        .route("/api/v1/investigations/{id}", get(investigations::get_one))
        .route("/api/v1/traces/{trace_id}", get(trace))
        .route("/api/v1/services", get(services))
        .route("/api/v1/metrics/names", get(metric_names))
        .route("/api/v1/metrics/series", get(metric_series))
        .route("/api/v1/metrics/query", get(metric_query))
        .route("/metrics", get(prometheus))
        .route(
            "/api/v2/alerts",
            get(alertmanager::get_alerts).post(alertmanager::post_alerts),
        )
        .route("/api/v2/alerts/groups", get(alertmanager::get_groups))
        .route(
            "/api/v2/silences",
            get(alertmanager::get_silences).post(alertmanager::post_silences),
        )
        .route(
            "/api/v2/silence/{id}",
            get(alertmanager::get_silence).delete(alertmanager::delete_silence),
        )
        .route("/api/v2/receivers", get(alertmanager::get_receivers))
        .route("/api/v2/status", get(alertmanager::get_status))
        .route("/api/v1/alerts", get(alerts::list_alerts))
        .route("/api/v1/alerts/{id}", get(alerts::get_alert))
        .route("/api/v1/alerts/{id}/notifications", get(alerts::alert_notifications))
        .route("/api/v1/notifications", get(alerts::notifications))
        .route(
            "/api/v1/silences",
            get(alerts::list_silences).post(alerts::post_silence),
        )
        .route("/api/v1/silences/{id}", axum::routing::delete(alerts::delete_silence))
        .route("/api/v1/audit", get(alerts::audit))
        .route("/api/v1/oncall", get(oncall::now))
        .route("/api/v1/schedules", get(oncall::list))
        .route(
            "/api/v1/schedules/{name}",
            get(oncall::get_one).put(oncall::put).delete(oncall::delete),
        )
        .route("/api/v1/schedules/{name}/overrides", post(oncall::add_override))
        .route(
            "/api/v1/schedules/{name}/overrides/{id}",
            axum::routing::delete(oncall::delete_override),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let responder = Router::new()
        .route("/api/v1/alerts/{id}/{action}", post(alerts::alert_action))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_responder));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        // The signed token is the authorization: single purpose, expiring, single use.
        .route(
            "/api/v1/actions/{token}",
            get(alerts::link_page).post(alerts::follow_link),
        )
        // The signed URL is the authorization: calendar apps send no headers.
        .route("/api/v1/schedules/{name}/calendar.ics", get(oncall::calendar))
        .merge(protected)
        .merge(responder)
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .with_state(state)
}

/// The API token (admin), or a personal token whose role allows the request: a viewer
/// reads, a responder also silences, an admin does everything. The identity found goes to
/// the handlers, which record actions under it.
async fn require_token(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    let header = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    let identity = if state.token.check(header) {
        Some(Identity::shared("api", UserRole::Admin))
    } else {
        state.users.by_header(header)
    };
    let Some(identity) = identity else {
        return unauthorized();
    };
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    // What on-call people change themselves: silences, and who covers a shift.
    let path = request.uri().path();
    let responders_change = path.contains("/silence") || path.contains("/overrides");
    let needed = if reading {
        UserRole::Viewer
    } else if responders_change {
        UserRole::Responder
    } else {
        UserRole::Admin
    };
    if identity.role < needed {
        return forbidden(&identity, needed);
    }
    request.extensions_mut().insert(identity);
    next.run(request).await
}

/// The API token, the shared responder token (which can do nothing but act on alerts), or a
/// personal token of a responder or admin.
async fn require_responder(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    let header = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    let identity = if state.token.check(header) {
        Some(Identity::shared("api", UserRole::Admin))
    } else if state.responder.is_configured() && state.responder.check(header) {
        Some(Identity::shared("responder", UserRole::Responder))
    } else {
        state.users.by_header(header)
    };
    match identity {
        Some(identity) if identity.role >= UserRole::Responder => {
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        Some(identity) => forbidden(&identity, UserRole::Responder),
        None => unauthorized(),
    }
}

fn role_name(role: UserRole) -> &'static str {
    match role {
        UserRole::Viewer => "viewer",
        UserRole::Responder => "responder",
        UserRole::Admin => "admin",
    }
}

fn unauthorized() -> Response {
    let mut r = ApiError::Unauthorized("missing or invalid bearer token".into()).into_response();
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
    r
}

fn forbidden(identity: &Identity, needed: UserRole) -> Response {
    ApiError::Forbidden(format!(
        "{} is a {} and this needs a {}",
        identity.name,
        role_name(identity.role),
        role_name(needed)
    ))
    .into_response()
}

async fn readyz(State(state): State<ApiState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn prometheus(State(state): State<ApiState>) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.encode(),
    )
        .into_response()
}

/// Runs a blocking store query off the reactor and records its latency.
async fn timed<T, F>(state: &ApiState, endpoint: &'static str, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, QueryError> + Send + 'static,
{
    let started = Instant::now();
    let store = Arc::clone(&state.store);
    let result = tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError::Internal(format!("query task failed: {e}")))?;
    state
        .metrics
        .query_seconds
        .get_or_create(&EndpointLabel { endpoint })
        .observe(started.elapsed().as_secs_f64());
    Ok(result?)
}

fn time_param(params: &HashMap<String, String>, key: &str, default: i64) -> Result<i64, ApiError> {
    match params.get(key).filter(|v| !v.is_empty()) {
        Some(v) => parse_time(v).map_err(|e| ApiError::bad(format!("{key}: {e}"))),
        None => Ok(default),
    }
}

/// `start`/`end` with defaults: end = now, start = the retention horizon.
fn range(state: &ApiState, params: &HashMap<String, String>) -> Result<(i64, i64), ApiError> {
    let now = i64::try_from(now_ns()).unwrap_or(i64::MAX);
    let horizon = now.saturating_sub(
        i64::try_from(state.retention_hours)
            .unwrap_or(0)
            .saturating_mul(3_600_000_000_000),
    );
    // A little slack past now so records stamped by a fast clock are still found.
    let end = time_param(params, "end", now.saturating_add(3_600_000_000_000))?;
    let start = time_param(params, "start", horizon)?;
    if start > end {
        return Err(ApiError::bad("start is after end"));
    }
    Ok((start, end))
}

fn log_query(state: &ApiState, params: &HashMap<String, String>) -> Result<LogQuery, ApiError> {
    let (start_ns, end_ns) = range(state, params)?;
    Ok(LogQuery {
        query: params.get("q").cloned().unwrap_or_default(),
        start_ns,
        end_ns,
        service: params.get("service").cloned(),
        pattern: match params.get("pattern").filter(|p| !p.is_empty()) {
            Some(p) => Some(
                p.parse()
                    .map_err(|_| ApiError::bad(format!("pattern: {p:?} is not a pattern id")))?,
            ),
            None => None,
        },
    })
}

fn limit_param(state: &ApiState, params: &HashMap<String, String>, default: usize) -> Result<usize, ApiError> {
    match params.get("limit") {
        None => Ok(default),
        Some(v) => {
            let n: usize = v
                .parse()
                .map_err(|_| ApiError::bad(format!("limit: {v:?} is not a number")))?;
            if n == 0 || n > state.max_results {
                return Err(ApiError::bad(format!(
                    "limit must be between 1 and {}",
                    state.max_results
                )));
            }
            Ok(n)
        }
    }
}

async fn logs_search(State(state): State<ApiState>, Query(params): Params) -> Result<Response, ApiError> {
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

async fn logs_patterns(State(state): State<ApiState>, Query(params): Params) -> Result<Response, ApiError> {
    let q = log_query(&state, &params)?;
    let limit = limit_param(&state, &params, 100)?;
    let patterns = timed(&state, "logs_patterns", move |s| s.log_patterns(&q, limit)).await?;
    Ok(Json(json!({ "patterns": patterns })).into_response())
}

async fn anomalies(State(state): State<ApiState>, Query(params): Params) -> Result<Response, ApiError> {
    let (start, end) = range(&state, &params)?;
    let limit = limit_param(&state, &params, 100)?;
    let service = params.get("service").cloned();
    let store = Arc::clone(&state.anomalies);
    let found = store.query(start / 1_000_000, end / 1_000_000, service.as_deref(), limit);
    Ok(Json(json!({ "anomalies": found })).into_response())
}

async fn incidents(State(state): State<ApiState>, Query(params): Params) -> Result<Response, ApiError> {
    let (start, end) = range(&state, &params)?;
    let limit = limit_param(&state, &params, 100)?;
    let status = match params.get("status").map(String::as_str) {
        None => None,
        Some("open") => Some(vigil_rca::incident::IncidentStatus::Open),
        Some("resolved") => Some(vigil_rca::incident::IncidentStatus::Resolved),
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
async fn incident(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
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
                pattern: Some(p),
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

async fn services_graph(State(state): State<ApiState>) -> Response {
    let now = crate::timeutil::now_ms();
    let graph = state.topology.lock().unwrap_or_else(|e| e.into_inner()).graph(now);
    Json(graph).into_response()
}

async fn anomaly(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match state.anomalies.get(&id) {
        Some(a) => Ok(Json(a).into_response()),
        None => Err(ApiError::NotFound(format!("no anomaly with id {id:?}"))),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    verdict: vigil_detectors::engine::Verdict,
}

/// A human's verdict on a finding: "noise" makes that signal less sensitive, "real" keeps
/// or restores its sensitivity. Durable before the answer.
async fn anomaly_feedback(
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
            let threshold = counts.threshold(vigil_detectors::engine::EngineConfig::default().threshold);
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

async fn logs_histogram(State(state): State<ApiState>, Query(params): Params) -> Result<Response, ApiError> {
    let q = log_query(&state, &params)?;
    let interval = match params.get("interval") {
        Some(v) => parse_duration(v).map_err(|e| ApiError::bad(format!("interval: {e}")))?,
        // About 100 buckets, rounded up to a whole second.
        None => (((q.end_ns - q.start_ns) / 100).max(1) as u64).div_ceil(1_000_000_000) as i64 * 1_000_000_000,
    };
    let buckets = timed(&state, "logs_histogram", move |s| s.log_histogram(&q, interval)).await?;
    Ok(Json(json!({ "interval_ms": interval / 1_000_000, "buckets": buckets })).into_response())
}

async fn trace(State(state): State<ApiState>, Path(trace_id): Path<String>) -> Result<Response, ApiError> {
    let id = trace_id.clone();
    let spans = timed(&state, "trace", move |s| s.trace(&id)).await?;
    if spans.is_empty() {
        return Err(ApiError::NotFound(format!("trace {trace_id} not found")));
    }
    Ok(Json(json!({ "trace_id": trace_id.to_ascii_lowercase(), "spans": spans })).into_response())
}

async fn services(State(state): State<ApiState>, Query(params): Params) -> Result<Response, ApiError> {
    let (start, end) = range(&state, &params)?;
    let services = timed(&state, "services", move |s| s.services(start, end)).await?;
    Ok(Json(json!({ "services": services })).into_response())
}

async fn metric_names(State(state): State<ApiState>, Query(params): Params) -> Result<Response, ApiError> {
    let (start, end) = range(&state, &params)?;
    let limit = limit_param(&state, &params, 1000)?;
    let names = timed(&state, "metrics_names", move |s| s.metric_names(start, end, limit)).await?;
    Ok(Json(json!({ "names": names })).into_response())
}

async fn metric_series(State(state): State<ApiState>, Query(params): Params) -> Result<Response, ApiError> {
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

async fn metric_query(State(state): State<ApiState>, Query(params): Params) -> Result<Response, ApiError> {
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
