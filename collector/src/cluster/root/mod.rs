//! The query root of a cluster, as Quickwit's root searcher: a query is asked of every live
//! worker (each answers for the partitions it holds) and the answers merged (`merge.rs`) —
//! log hits by time, newest first, cut to the limit; totals, histogram buckets and services'
//! counts summed; log patterns by template; metric names united, metric series listed
//! together; a trace's spans gathered from every worker; findings listed together, newest
//! first. PromQL is evaluated here over the raw samples the workers send (`prometheus.rs`),
//! so an aggregation across services on different workers is one answer. Incidents, alerts,
//! silences, the service graph and the on-call state belong to the cluster's active
//! correlator (`--role rca`): those requests are passed to it as they are — investigations
//! too, which the correlator ranks over every worker's rows (`cluster/investigate.rs`).
//! `GET /api/v1/cluster` shows the workers, their partitions and the correlator. The web UI
//! of an ingest node asks this router, so it shows the whole cluster.
//!
//! While a partition changes hands its new owner is still catching up and the old one has
//! purged its copy: a query then sees less of that partition, never the same record twice.

mod logs;
mod merge;
mod prometheus;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{
    HeaderMap, HeaderValue, Method, StatusCode,
    header::{AUTHORIZATION, CONTENT_TYPE},
};
use axum::response::Json;
use axum::routing::{any, get, post};
use serde_json::{Value, json};

use super::lease::{Member, cluster_view};
use crate::api::ApiError;
use merge::{merge_metric_query, merge_metric_series, merge_newest_first, merge_services, nanos};

type Answer = Result<Json<Value>, ApiError>;
type Params = Query<HashMap<String, String>>;

/// Shared by the root's handlers.
pub(crate) struct Root {
    kv: kv::Store,
    http: reqwest::Client,
    /// Slots for PromQL queries evaluated here (`api.max_concurrent_queries`).
    prom_slots: Arc<tokio::sync::Semaphore>,
}

impl Root {
    pub(crate) fn new(kv: kv::Store, max_concurrent_queries: usize) -> anyhow::Result<Root> {
        // A PromQL query may take the engine's whole timeout (2 min) fetching samples.
        let http = reqwest::Client::builder().timeout(Duration::from_secs(150)).build()?;
        Ok(Root {
            kv,
            http,
            prom_slots: Arc::new(tokio::sync::Semaphore::new(max_concurrent_queries)),
        })
    }
}

pub(crate) fn router(root: Arc<Root>) -> Router {
    let mut router = Router::new()
        .route("/api/v1/logs/search", get(logs::search))
        .route("/api/v1/logs/histogram", get(logs::histogram))
        .route("/api/v1/logs/patterns", get(logs::patterns))
        .route("/api/v1/services", get(services))
        .route("/api/v1/metrics/names", get(metric_names))
        .route("/api/v1/metrics/series", get(metric_series))
        .route("/api/v1/metrics/query", get(metric_query))
        .route("/api/v1/traces/{trace_id}", get(trace))
        .route("/api/v1/anomalies", get(anomalies))
        .route("/api/v1/anomalies/{id}", get(anomaly))
        .route("/api/v1/anomalies/{id}/feedback", post(anomaly_feedback))
        .route("/api/v1/cluster", get(cluster));
    // What the correlator owns: incidents and the graph they are drawn on, alerts, silences,
    // notifications and their audit trail, on-call schedules, the Alertmanager API.
    for path in [
        "/api/v1/incidents",
        "/api/v1/investigations",
        "/api/v1/services/graph",
        "/api/v1/alerts",
        "/api/v1/silences",
        "/api/v1/notifications",
        "/api/v1/audit",
        "/api/v1/oncall",
        "/api/v1/schedules",
    ] {
        router = router
            .route(path, any(to_correlator))
            .route(&format!("{path}/{{*rest}}"), any(to_correlator));
    }
    router
        .route("/api/v1/actions/{*rest}", any(to_correlator))
        .route("/api/v2/{*rest}", any(to_correlator))
        .merge(prometheus::routes())
        .with_state(root)
}

/// The same request of every worker with an API. A worker that does not answer fails the
/// query (502): a partial answer would pass for a whole one.
async fn fan_out(
    root: &Root,
    path: &str,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Vec<Value>, ApiError> {
    fan_out_query(root, path, &encode(params), headers, false).await
}

/// `params` as a query string.
fn encode(params: &HashMap<String, String>) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish()
}

/// [`fan_out`] of a query string as it is; with `missing_ok` a worker's 404 counts as an
/// empty answer (a trace whose spans all live on other workers).
async fn fan_out_query(
    root: &Root,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    missing_ok: bool,
) -> Result<Vec<Value>, ApiError> {
    let mut forwarded = None;
    if let Some(auth) = headers.get(AUTHORIZATION) {
        forwarded = Some(auth.clone());
    }
    each_worker(root, forwarded, missing_ok, |http, api| {
        http.get(format!("{api}{path}?{query}"))
    })
    .await
}

/// `body` POSTed as JSON to every worker with an API, with `authorization` if given; their
/// answers, in no particular order.
pub(crate) async fn post_to_workers(
    root: &Root,
    path: &str,
    body: Vec<u8>,
    authorization: Option<HeaderValue>,
) -> Result<Vec<Value>, ApiError> {
    let body = axum::body::Bytes::from(body);
    each_worker(root, authorization, false, |http, api| {
        http.post(format!("{api}{path}"))
            .header(CONTENT_TYPE, "application/json")
            .body(body.clone())
    })
    .await
}

/// The request `build` makes for each worker, sent to all at once; their JSON answers.
async fn each_worker(
    root: &Root,
    authorization: Option<HeaderValue>,
    missing_ok: bool,
    build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
) -> Result<Vec<Value>, ApiError> {
    let named = each_worker_named(root, authorization, missing_ok, build).await?;
    Ok(named.into_iter().map(|(_, body)| body).collect())
}

/// [`each_worker`], each answer with the node that gave it.
async fn each_worker_named(
    root: &Root,
    authorization: Option<HeaderValue>,
    missing_ok: bool,
    build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
) -> Result<Vec<(String, Value)>, ApiError> {
    let members = members(root).await?;
    let calls = members
        .iter()
        .filter_map(|(m, _)| Some((m.node.clone(), m.api.clone()?)))
        .map(|(node, api)| {
            let mut request = build(&root.http, &api);
            if let Some(auth) = &authorization {
                request = request.header(AUTHORIZATION, auth.clone());
            }
            async move {
                let response = request.send().await.map_err(|e| format!("{api}: {e}"))?;
                let status = response.status();
                if missing_ok && status == StatusCode::NOT_FOUND {
                    return Ok((node, Value::Null));
                }
                let body: Value = response.json().await.map_err(|e| format!("{api}: {e}"))?;
                if status.is_success() {
                    Ok((node, body))
                } else {
                    Err(format!("{api} answered {status}: {body}"))
                }
            }
        });
    let answers = futures::future::join_all(calls).await;
    let mut bodies = Vec::with_capacity(answers.len());
    for answer in answers {
        bodies.push(answer.map_err(|e| ApiError::BadGateway(format!("a worker failed the query: {e}")))?);
    }
    Ok(bodies)
}

/// The workers, asking again when the stream's leader does not answer at once (a NATS
/// server just died and its streams are electing new leaders).
async fn members(root: &Root) -> Result<Vec<(Member, Vec<u32>)>, ApiError> {
    let mut last = String::new();
    for _ in 0..4 {
        match tokio::time::timeout(Duration::from_secs(2), cluster_view(&root.kv)).await {
            Ok(Ok(members)) => return Ok(members),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "no answer within 2 s".into(),
        }
    }
    Err(ApiError::Unavailable(format!(
        "cannot read the cluster's members: {last}"
    )))
}

/// Asks every worker (range pinned) and answers with `merge` of their answers.
async fn gather(
    root: &Root,
    path: &str,
    params: HashMap<String, String>,
    headers: &HeaderMap,
    merge: impl FnOnce(Vec<Value>) -> Value,
) -> Answer {
    Ok(Json(merge(fan_out(root, path, &pin_range(params), headers).await?)))
}

/// The `limit` asked for, or `default`: passed on to the workers as it is (each checks it),
/// and the merged answer cut to it.
fn limit(params: &HashMap<String, String>, default: usize) -> usize {
    params.get("limit").and_then(|l| l.parse().ok()).unwrap_or(default)
}

/// `segment` made safe as one path segment of the URL a worker is asked.
fn urlencode(segment: &str) -> String {
    form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

/// Fixes the time range once, so every worker answers over the same one (and the same
/// histogram grid), whatever its clock.
fn pin_range(mut params: HashMap<String, String>) -> HashMap<String, String> {
    let now_ms = crate::timeutil::now_ns() / 1_000_000;
    params
        .entry("end".into())
        .or_insert_with(|| (now_ms + 3_600_000).to_string());
    params
}

async fn services(State(root): State<Arc<Root>>, headers: HeaderMap, Query(params): Params) -> Answer {
    gather(&root, "/api/v1/services", params, &headers, merge_services).await
}

async fn metric_names(State(root): State<Arc<Root>>, headers: HeaderMap, Query(params): Params) -> Answer {
    let limit = limit(&params, 1000);
    gather(&root, "/api/v1/metrics/names", params, &headers, |bodies| {
        let names: std::collections::BTreeSet<String> = bodies
            .iter()
            .flat_map(|b| b["names"].as_array().cloned().unwrap_or_default())
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect();
        json!({ "names": names.into_iter().take(limit).collect::<Vec<_>>() })
    })
    .await
}

async fn metric_series(State(root): State<Arc<Root>>, headers: HeaderMap, Query(params): Params) -> Answer {
    let limit = limit(&params, 1000);
    gather(&root, "/api/v1/metrics/series", params, &headers, |b| {
        merge_metric_series(b, limit)
    })
    .await
}

/// A metric query's window is pinned here (by default the last hour, as one collector
/// answers), so every worker buckets its series on the same step grid.
async fn metric_query(State(root): State<Arc<Root>>, headers: HeaderMap, Query(mut params): Params) -> Answer {
    let now_ms = crate::timeutil::now_ns() / 1_000_000;
    let end = params.entry("end".into()).or_insert_with(|| now_ms.to_string()).clone();
    if let Ok(end_ms) = end.parse::<u128>() {
        params
            .entry("start".into())
            .or_insert_with(|| end_ms.saturating_sub(3_600_000).to_string());
    }
    let bodies = fan_out(&root, "/api/v1/metrics/query", &params, &headers).await?;
    Ok(Json(merge_metric_query(bodies)))
}

/// One finding, from the worker whose detectors raised it.
async fn anomaly(State(root): State<Arc<Root>>, headers: HeaderMap, Path(id): Path<String>) -> Answer {
    let path = format!("/api/v1/anomalies/{}", urlencode(&id));
    fan_out_query(&root, &path, "", &headers, true)
        .await?
        .into_iter()
        .find(|b| !b.is_null())
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no anomaly with id {id:?}")))
}

/// A verdict goes to the worker whose detectors raised the finding (the others do not know
/// its id and answer 404): the feedback reaches the detector that learns from it.
async fn anomaly_feedback(
    State(root): State<Arc<Root>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, ApiError> {
    let path = format!("/api/v1/anomalies/{}/feedback", urlencode(&id));
    let members = members(&root).await?;
    let mut refusal = None;
    for api in members.iter().filter_map(|(m, _)| m.api.clone()) {
        let mut request = root
            .http
            .request(Method::POST, format!("{api}{path}"))
            .header(CONTENT_TYPE, "application/json")
            .body(body.clone());
        if let Some(auth) = headers.get(AUTHORIZATION) {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let answer = match request.send().await {
            Ok(answer) => answer,
            // Another worker may know the finding: a dead one does not stop the verdict.
            Err(e) => {
                tracing::warn!(worker = %api, error = %e, "a worker did not take a verdict");
                continue;
            }
        };
        if answer.status() == StatusCode::NOT_FOUND {
            continue;
        }
        // The worker that knows the finding decides (its answer, error or not, is passed on).
        let relayed = relay(answer, &api).await?;
        if relayed.status().is_success() {
            return Ok(relayed);
        }
        refusal = Some(relayed);
    }
    refusal.ok_or_else(|| ApiError::NotFound(format!("no anomaly with id {id:?}")))
}

/// A trace crosses services, so its spans are spread over the workers: all of them, together.
async fn trace(State(root): State<Arc<Root>>, headers: HeaderMap, Path(trace_id): Path<String>) -> Answer {
    let trace_id = trace_id.to_ascii_lowercase();
    let path = format!("/api/v1/traces/{}", urlencode(&trace_id));
    let bodies = fan_out_query(&root, &path, "", &headers, true).await?;
    let mut spans: Vec<Value> = bodies
        .iter()
        .flat_map(|b| b["spans"].as_array().cloned().unwrap_or_default())
        .collect();
    if spans.is_empty() {
        return Err(ApiError::NotFound(format!("trace {trace_id} not found")));
    }
    spans.sort_by_key(|s| nanos(s, "start_time_unix_nano"));
    Ok(Json(json!({ "trace_id": trace_id, "spans": spans })))
}

async fn anomalies(State(root): State<Arc<Root>>, headers: HeaderMap, Query(params): Params) -> Answer {
    let limit = limit(&params, 100);
    gather(&root, "/api/v1/anomalies", params, &headers, |b| {
        merge_newest_first(b, "anomalies", limit)
    })
    .await
}

/// Largest request body passed on to the correlator (alert and silence bodies are small).
const MAX_FORWARDED_BODY: usize = 4 << 20;

/// Passes the request to the active correlator as it is (method, path, query, body, the
/// caller's credentials) and its answer back as it is.
async fn to_correlator(
    State(root): State<Arc<Root>>,
    request: axum::extract::Request,
) -> Result<axum::response::Response, ApiError> {
    let (parts, body) = request.into_parts();
    let target = parts.uri.path_and_query().map_or(parts.uri.path(), |p| p.as_str());
    let body = axum::body::to_bytes(body, MAX_FORWARDED_BODY)
        .await
        .map_err(|e| ApiError::BadRequest(format!("cannot read the request body: {e}")))?;
    // A correlator that has just taken the lease still catches up before it takes changes
    // (it answers 503 meanwhile): a change is asked again for a few seconds, so a failover
    // does not reach the caller.
    let deadline = tokio::time::Instant::now() + TAKEOVER_PATIENCE;
    loop {
        let api = correlator_api(&root).await?;
        let mut forward = root
            .http
            .request(parts.method.clone(), format!("{api}{target}"))
            .body(body.clone());
        for name in [AUTHORIZATION, CONTENT_TYPE] {
            if let Some(value) = parts.headers.get(&name) {
                forward = forward.header(name, value.clone());
            }
        }
        let again = tokio::time::Instant::now() < deadline;
        let answer = match forward.send().await {
            Ok(answer) => answer,
            // The lease still names a correlator that died: the request never left, so it
            // is asked again (of the next leader once the lease moves), changes included.
            Err(e) if e.is_connect() && again => {
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            Err(e) => return Err(ApiError::BadGateway(format!("the correlator at {api} failed: {e}"))),
        };
        if answer.status() == StatusCode::SERVICE_UNAVAILABLE && parts.method != Method::GET && again {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        return relay(answer, &api).await;
    }
}

/// How long a change is asked again of a correlator that answers it is not ready.
const TAKEOVER_PATIENCE: Duration = Duration::from_secs(10);

/// The active correlator's API, as the lease names it.
async fn correlator_api(root: &Root) -> Result<String, ApiError> {
    let leader = tokio::time::timeout(Duration::from_secs(2), super::rca::leader(&root.kv))
        .await
        .map_err(|_| ApiError::Unavailable("cannot read the cluster's correlator: no answer within 2 s".into()))?
        .map_err(|e| ApiError::Unavailable(format!("cannot read the cluster's correlator: {e}")))?;
    leader
        .and_then(|m| m.api)
        .ok_or_else(|| ApiError::Unavailable("the cluster has no active correlator: start one with --role rca".into()))
}

/// Another node's answer passed back as it is: status, content type, body.
async fn relay(answer: reqwest::Response, api: &str) -> Result<axum::response::Response, ApiError> {
    let status = answer.status();
    let content_type = answer.headers().get(CONTENT_TYPE).cloned();
    let bytes = answer
        .bytes()
        .await
        .map_err(|e| ApiError::BadGateway(format!("{api} failed: {e}")))?;
    let mut response = axum::response::Response::new(axum::body::Body::from(bytes));
    *response.status_mut() = status;
    if let Some(ct) = content_type {
        response.headers_mut().insert(CONTENT_TYPE, ct);
    }
    Ok(response)
}

async fn cluster(State(root): State<Arc<Root>>) -> Answer {
    let workers: Vec<Value> = members(&root)
        .await?
        .into_iter()
        .map(|(m, partitions)| json!({ "node": m.node, "api": m.api, "partitions": partitions }))
        .collect();
    let correlator = tokio::time::timeout(Duration::from_secs(2), super::rca::leader(&root.kv))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
        .map(|m| json!({ "node": m.node, "api": m.api }));
    Ok(Json(json!({ "workers": workers, "correlator": correlator })))
}
