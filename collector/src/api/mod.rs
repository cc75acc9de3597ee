//! The JSON query API, health endpoints and `/metrics`.

mod access;
mod alertmanager;
mod alerts;
mod error;
mod findings;
mod investigations;
mod oncall;
pub(crate) mod prometheus;
mod signals;

pub(crate) use error::ApiError;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{FromRef, Query, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::header::CONTENT_TYPE;

use crate::auth::TokenCheck;
use crate::pipeline::{AnomalyStore, PipelineSender};
use crate::storage::{QueryError, Store};
use crate::telemetry::{EndpointLabel, Metrics};
use crate::timeutil::{now_ns, parse_time};

/// Shared state of the API handlers.
#[derive(Clone)]
pub(crate) struct ApiState {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub token: TokenCheck,
    pub max_results: usize,
    pub retention_hours: u64,
    pub anomalies: Arc<AnomalyStore>,
    pub incidents: Arc<crate::pipeline::IncidentStore>,
    pub topology: Arc<std::sync::Mutex<vigil_rca::Topology>>,
    pub pipeline: PipelineSender,
    pub alerts: Arc<crate::alerts::AlertService>,
    /// Accepted (besides the API token) on the responder actions: ack, resolve, comment…
    pub responder: TokenCheck,
    /// Personal tokens (viewer, responder, admin), named in everything they do.
    pub users: Arc<crate::auth::Users>,
    pub investigations: Arc<crate::investigations::InvestigationStore>,
    /// Where investigations read: this collector's indexes, or a correlator's workers.
    pub investigation_reader: Arc<dyn crate::investigations::Reader>,
    /// The log pattern catalogue: templates and first sightings of the ids in the index.
    pub patterns: Arc<crate::process::PatternCatalog>,
    /// Help texts of metrics, for the Prometheus `metadata` API.
    pub metric_help: Arc<crate::process::MetricHelp>,
    /// Slots for PromQL queries and Prometheus listings (`api.max_concurrent_queries`).
    pub prom_queries: Arc<tokio::sync::Semaphore>,
}

/// What every node's API has, with or without storage (a cluster's ingest node has no
/// more): the readiness flag and self-metrics for the probes and `/metrics`, and the tokens
/// the API asks for.
#[derive(Clone)]
pub(crate) struct NodeState {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub token: TokenCheck,
    pub users: Arc<crate::auth::Users>,
}

impl FromRef<ApiState> for NodeState {
    fn from_ref(state: &ApiState) -> NodeState {
        NodeState {
            metrics: Arc::clone(&state.metrics),
            ready: Arc::clone(&state.ready),
            token: state.token.clone(),
            users: Arc::clone(&state.users),
        }
    }
}

/// The API of a node without storage: the probes, and `/metrics` and `routes` behind the
/// API token exactly as on a single collector.
pub(crate) fn node_router(node: NodeState, routes: Router) -> Router {
    let protected = routes
        .merge(
            Router::new()
                .route("/metrics", get(self_metrics))
                .with_state(node.clone()),
        )
        .route_layer(middleware::from_fn_with_state(node.clone(), access::require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(node)
        .merge(protected)
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
}

type Params = Query<HashMap<String, String>>;

/// The API router; `/api/*` and `/metrics` require the API token when one is set.
pub(crate) fn router(state: ApiState) -> Router {
    alertmanager::mark_started();
    let protected = Router::new()
        .route("/api/v1/logs/search", get(signals::logs_search))
        .route("/api/v1/logs/histogram", get(signals::logs_histogram))
        .route("/api/v1/logs/patterns", get(signals::logs_patterns))
        .route("/api/v1/logs/patterns/{id}", get(signals::log_pattern))
        .route("/api/v1/anomalies", get(findings::anomalies))
        .route("/api/v1/anomalies/{id}", get(findings::anomaly))
        .route("/api/v1/anomalies/{id}/feedback", post(findings::anomaly_feedback))
        .route("/api/v1/incidents", get(findings::incidents))
        .route("/api/v1/incidents/{id}", get(findings::incident))
        .route("/api/v1/services/graph", get(findings::services_graph))
        .route(
            "/api/v1/investigations",
            get(investigations::list).post(investigations::create),
        )
        .route("/api/v1/investigations/read", post(investigations::read))
        .route("/api/v1/investigations/{id}", get(investigations::get_one))
        .route("/api/v1/traces/{trace_id}", get(signals::trace))
        .route("/api/v1/services", get(signals::services))
        .route("/api/v1/metrics/names", get(signals::metric_names))
        .route("/api/v1/metrics/series", get(signals::metric_series))
        .route("/api/v1/metrics/query", get(signals::metric_query))
        .route("/api/v1/metrics/samples", get(prometheus::samples))
        .route("/metrics", get(self_metrics))
        .route(
            "/prometheus/api/v1/query",
            get(prometheus::query).post(prometheus::query),
        )
        .route(
            "/prometheus/api/v1/query_range",
            get(prometheus::query_range).post(prometheus::query_range),
        )
        .route(
            "/prometheus/api/v1/series",
            get(prometheus::series).post(prometheus::series),
        )
        .route(
            "/prometheus/api/v1/labels",
            get(prometheus::labels).post(prometheus::labels),
        )
        .route("/prometheus/api/v1/label/{name}/values", get(prometheus::label_values))
        .route("/prometheus/api/v1/metadata", get(prometheus::metadata))
        .route("/prometheus/api/v1/status/buildinfo", get(prometheus::buildinfo))
        .route("/prometheus/api/v1/rules", get(prometheus::rules))
        .route("/prometheus/api/v1/alerts", get(prometheus::alerts))
        .route(
            "/prometheus/api/v1/query_exemplars",
            get(prometheus::exemplars).post(prometheus::exemplars),
        )
        .route("/prometheus/api/v1/{*rest}", axum::routing::any(prometheus::unknown))
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
        .route_layer(middleware::from_fn_with_state(state.clone(), access::require_token));
    let responder = Router::new()
        .route("/api/v1/alerts/{id}/{action}", post(alerts::alert_action))
        .route_layer(middleware::from_fn_with_state(state.clone(), access::require_responder));
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

async fn readyz(State(state): State<NodeState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn self_metrics(State(state): State<NodeState>) -> Response {
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
