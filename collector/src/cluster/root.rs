//! The query root of a cluster, as Quickwit's root searcher: a query is asked of every live
//! worker (each answers for the partitions it holds) and the answers merged — log hits by
//! time, newest first, cut to the limit; totals, histogram buckets and services' counts
//! summed; log patterns by template; metric names united; a trace's spans gathered from every
//! worker; findings listed together, newest first. Incidents, alerts and silences belong to
//! the cluster's active correlator (`--role rca`): those requests are passed to it as they
//! are. `GET /api/v1/cluster` shows the workers, their partitions and the correlator.
//!
//! While a partition changes hands its new owner is still catching up and the old one has
//! purged its copy: a query then sees less of that partition, never the same record twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{
    HeaderMap, StatusCode,
    header::{AUTHORIZATION, CONTENT_TYPE},
};
use axum::response::Json;
use axum::routing::{any, get};
use serde_json::{Value, json};

use super::lease::{Member, cluster_view};
use crate::api::ApiError;

type Answer = Result<Json<Value>, ApiError>;
type Params = Query<HashMap<String, String>>;

/// Shared by the root's handlers.
pub(crate) struct Root {
    kv: kv::Store,
    http: reqwest::Client,
}

impl Root {
    pub(crate) fn new(kv: kv::Store) -> anyhow::Result<Root> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        Ok(Root { kv, http })
    }
}

pub(crate) fn router(root: Arc<Root>) -> Router {
    Router::new()
        .route("/api/v1/logs/search", get(logs_search))
        .route("/api/v1/logs/histogram", get(logs_histogram))
        .route("/api/v1/logs/patterns", get(logs_patterns))
        .route("/api/v1/services", get(services))
        .route("/api/v1/metrics/names", get(metric_names))
        .route("/api/v1/traces/{trace_id}", get(trace))
        .route("/api/v1/anomalies", get(anomalies))
        .route("/api/v1/incidents", any(to_correlator))
        .route("/api/v1/incidents/{*rest}", any(to_correlator))
        .route("/api/v1/alerts", any(to_correlator))
        .route("/api/v1/alerts/{*rest}", any(to_correlator))
        .route("/api/v1/silences", any(to_correlator))
        .route("/api/v1/silences/{*rest}", any(to_correlator))
        .route("/api/v1/actions/{*rest}", any(to_correlator))
        .route("/api/v1/cluster", get(cluster))
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
    fan_out_with(root, path, params, headers, false).await
}

/// [`fan_out`]; with `missing_ok` a worker's 404 counts as an empty answer (a trace whose
/// spans all live on other workers).
async fn fan_out_with(
    root: &Root,
    path: &str,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    missing_ok: bool,
) -> Result<Vec<Value>, ApiError> {
    let members = members(root).await?;
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    let calls = members.iter().filter_map(|(m, _)| m.api.clone()).map(|api| {
        let mut request = root.http.get(format!("{api}{path}?{query}"));
        if let Some(auth) = headers.get(AUTHORIZATION) {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        async move {
            let response = request.send().await.map_err(|e| format!("{api}: {e}"))?;
            let status = response.status();
            if missing_ok && status == StatusCode::NOT_FOUND {
                return Ok(Value::Null);
            }
            let body: Value = response.json().await.map_err(|e| format!("{api}: {e}"))?;
            if status.is_success() {
                Ok(body)
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

/// A nanosecond timestamp field of an answer (the API writes them as decimal strings).
fn nanos(value: &Value, field: &str) -> i128 {
    value[field].as_str().and_then(|t| t.parse().ok()).unwrap_or(0)
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

async fn logs_search(State(root): State<Arc<Root>>, headers: HeaderMap, Query(params): Params) -> Answer {
    let limit = limit(&params, 100);
    gather(&root, "/api/v1/logs/search", params, &headers, |b| {
        merge_search(b, limit)
    })
    .await
}

/// Sums the totals and keeps the newest `limit` hits of all answers.
fn merge_search(bodies: Vec<Value>, limit: usize) -> Value {
    let mut total = 0u64;
    let mut hits = Vec::new();
    for body in bodies {
        total += body["total"].as_u64().unwrap_or(0);
        if let Value::Array(h) = &body["hits"] {
            hits.extend(h.iter().cloned());
        }
    }
    hits.sort_by_key(|h| std::cmp::Reverse(nanos(h, "time_unix_nano")));
    hits.truncate(limit);
    json!({ "total": total, "hits": hits })
}

async fn logs_histogram(State(root): State<Arc<Root>>, headers: HeaderMap, Query(params): Params) -> Answer {
    let mut params = params;
    let now_ms = crate::timeutil::now_ns() / 1_000_000;
    params
        .entry("start".into())
        .or_insert_with(|| now_ms.saturating_sub(3_600_000).to_string());
    gather(&root, "/api/v1/logs/histogram", params, &headers, merge_histograms).await
}

/// Adds the workers' counts bucket by bucket (the pinned range gives them one grid).
fn merge_histograms(bodies: Vec<Value>) -> Value {
    let mut interval = Value::Null;
    let mut counts: std::collections::BTreeMap<i64, u64> = std::collections::BTreeMap::new();
    for body in bodies {
        interval = body["interval_ms"].clone();
        for b in body["buckets"].as_array().into_iter().flatten() {
            let start = b["start_ms"].as_i64().unwrap_or(0);
            *counts.entry(start).or_default() += b["count"].as_u64().unwrap_or(0);
        }
    }
    let buckets: Vec<Value> = counts
        .into_iter()
        .map(|(s, c)| json!({ "start_ms": s, "count": c }))
        .collect();
    json!({ "interval_ms": interval, "buckets": buckets })
}

async fn logs_patterns(State(root): State<Arc<Root>>, headers: HeaderMap, Query(params): Params) -> Answer {
    let limit = limit(&params, 100);
    gather(&root, "/api/v1/logs/patterns", params, &headers, |b| {
        merge_patterns(b, limit)
    })
    .await
}

/// Each worker mines its own patterns, so ids are its own: the same template from two workers
/// is one pattern here (counts summed, the earliest first sighting, new only if new on every
/// worker that has it, the busiest worker's id and sample).
fn merge_patterns(bodies: Vec<Value>, limit: usize) -> Value {
    let mut by_template: Vec<(String, Value)> = Vec::new();
    for body in bodies {
        for p in body["patterns"].as_array().into_iter().flatten() {
            let key = match p["template"].as_str() {
                Some(t) => t.to_string(),
                None => format!("\u{0}{}", p["pattern_id"]),
            };
            match by_template.iter_mut().find(|(k, _)| *k == key) {
                None => by_template.push((key, p.clone())),
                Some((_, merged)) => {
                    let (a, b) = (merged["count"].as_u64().unwrap_or(0), p["count"].as_u64().unwrap_or(0));
                    if b > a {
                        merged["pattern_id"] = p["pattern_id"].clone();
                        merged["sample"] = p["sample"].clone();
                    }
                    merged["count"] = json!(a + b);
                    merged["is_new"] =
                        json!(merged["is_new"].as_bool().unwrap_or(false) && p["is_new"].as_bool().unwrap_or(false));
                    if let (Some(x), Some(y)) = (merged["first_seen"].as_str(), p["first_seen"].as_str())
                        && y < x
                    {
                        merged["first_seen"] = p["first_seen"].clone();
                    }
                }
            }
        }
    }
    let mut patterns: Vec<Value> = by_template.into_iter().map(|(_, p)| p).collect();
    patterns.sort_by_key(|p| std::cmp::Reverse(p["count"].as_u64().unwrap_or(0)));
    patterns.truncate(limit);
    json!({ "patterns": patterns })
}

async fn services(State(root): State<Arc<Root>>, headers: HeaderMap, Query(params): Params) -> Answer {
    gather(&root, "/api/v1/services", params, &headers, merge_services).await
}

/// A service's records live in one partition, so normally on one worker; summed all the same
/// (during a hand-over both may hold part of it).
fn merge_services(bodies: Vec<Value>) -> Value {
    let mut by_name: std::collections::BTreeMap<String, (u64, u64)> = std::collections::BTreeMap::new();
    for body in bodies {
        for s in body["services"].as_array().into_iter().flatten() {
            let entry = by_name
                .entry(s["name"].as_str().unwrap_or_default().to_string())
                .or_default();
            entry.0 += s["spans"].as_u64().unwrap_or(0);
            entry.1 += s["logs"].as_u64().unwrap_or(0);
        }
    }
    let services: Vec<Value> = by_name
        .into_iter()
        .map(|(name, (spans, logs))| json!({ "name": name, "spans": spans, "logs": logs }))
        .collect();
    json!({ "services": services })
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

/// A trace crosses services, so its spans are spread over the workers: all of them, together.
async fn trace(State(root): State<Arc<Root>>, headers: HeaderMap, Path(trace_id): Path<String>) -> Answer {
    let trace_id = trace_id.to_ascii_lowercase();
    let path = format!("/api/v1/traces/{}", urlencode(&trace_id));
    let bodies = fan_out_with(&root, &path, &HashMap::new(), &headers, true).await?;
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

/// Every worker's `key` lists together, newest start first (as each worker orders its own),
/// cut to `limit`.
fn merge_newest_first(bodies: Vec<Value>, key: &str, limit: usize) -> Value {
    let mut items: Vec<Value> = bodies
        .iter()
        .flat_map(|b| b[key].as_array().cloned().unwrap_or_default())
        .collect();
    items.sort_by(|a, b| {
        let start = |v: &Value| v["start_ms"].as_i64().unwrap_or(0);
        start(b)
            .cmp(&start(a))
            .then_with(|| a["id"].as_str().cmp(&b["id"].as_str()))
    });
    items.truncate(limit);
    json!({ key: items })
}

/// Largest request body passed on to the correlator (alert and silence bodies are small).
const MAX_FORWARDED_BODY: usize = 4 << 20;

/// Passes the request to the active correlator as it is (method, path, query, body, the
/// caller's credentials) and its answer back as it is.
async fn to_correlator(
    State(root): State<Arc<Root>>,
    request: axum::extract::Request,
) -> Result<axum::response::Response, ApiError> {
    let leader = tokio::time::timeout(Duration::from_secs(2), super::rca::leader(&root.kv))
        .await
        .map_err(|_| ApiError::Unavailable("cannot read the cluster's correlator: no answer within 2 s".into()))?
        .map_err(|e| ApiError::Unavailable(format!("cannot read the cluster's correlator: {e}")))?;
    let Some(api) = leader.and_then(|m| m.api) else {
        return Err(ApiError::Unavailable(
            "the cluster has no active correlator: start one with --role rca".into(),
        ));
    };
    let (parts, body) = request.into_parts();
    let target = parts.uri.path_and_query().map_or(parts.uri.path(), |p| p.as_str());
    let body = axum::body::to_bytes(body, MAX_FORWARDED_BODY)
        .await
        .map_err(|e| ApiError::BadRequest(format!("cannot read the request body: {e}")))?;
    let mut forward = root.http.request(parts.method, format!("{api}{target}")).body(body);
    for name in [AUTHORIZATION, CONTENT_TYPE] {
        if let Some(value) = parts.headers.get(&name) {
            forward = forward.header(name, value.clone());
        }
    }
    let answer = forward
        .send()
        .await
        .map_err(|e| ApiError::BadGateway(format!("the correlator at {api} failed: {e}")))?;
    let status = answer.status();
    let content_type = answer.headers().get(CONTENT_TYPE).cloned();
    let bytes = answer
        .bytes()
        .await
        .map_err(|e| ApiError::BadGateway(format!("the correlator at {api} failed: {e}")))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_answers_merge_newest_first_and_totals_add_up() {
        let a = json!({ "total": 3, "hits": [{"time_unix_nano": "30"}, {"time_unix_nano": "10"}] });
        let b = json!({ "total": 5, "hits": [{"time_unix_nano": "20"}, {"time_unix_nano": "5"}] });
        let merged = merge_search(vec![a, b], 3);
        assert_eq!(merged["total"], 8);
        let times: Vec<i128> = merged["hits"]
            .as_array()
            .expect("hits")
            .iter()
            .map(|h| nanos(h, "time_unix_nano"))
            .collect();
        assert_eq!(times, vec![30, 20, 10]);
    }

    #[test]
    fn patterns_merge_by_template_across_workers() {
        let a = json!({ "patterns": [
            {"pattern_id": 1, "template": "user <*> logged in", "count": 5, "is_new": false, "first_seen": "2026-01-02", "sample": "a"},
            {"pattern_id": 2, "template": "disk full", "count": 1, "is_new": true, "first_seen": "2026-01-03", "sample": "d"},
        ]});
        let b = json!({ "patterns": [
            {"pattern_id": 7, "template": "user <*> logged in", "count": 9, "is_new": true, "first_seen": "2026-01-01", "sample": "b"},
        ]});
        let merged = merge_patterns(vec![a, b], 10);
        let first = &merged["patterns"][0];
        assert_eq!(first["count"], 14);
        assert_eq!(first["pattern_id"], 7, "the busiest worker's id and sample");
        assert_eq!(first["sample"], "b");
        assert_eq!(first["first_seen"], "2026-01-01");
        assert_eq!(first["is_new"], false, "new only where new everywhere");
        assert_eq!(merged["patterns"][1]["template"], "disk full");
        assert_eq!(
            merge_patterns(vec![merged.clone()], 1)["patterns"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn findings_from_every_worker_come_newest_first() {
        let a = json!({ "incidents": [{"id": "a2", "start_ms": 20}, {"id": "a1", "start_ms": 5}] });
        let b = json!({ "incidents": [{"id": "b1", "start_ms": 10}] });
        let merged = merge_newest_first(vec![a, b], "incidents", 2);
        assert_eq!(
            merged,
            json!({ "incidents": [{"id": "a2", "start_ms": 20}, {"id": "b1", "start_ms": 10}] })
        );
    }

    #[test]
    fn services_add_up_by_name() {
        let a = json!({ "services": [{"name": "cart", "spans": 3, "logs": 1}] });
        let b =
            json!({ "services": [{"name": "cart", "spans": 1, "logs": 0}, {"name": "api", "spans": 2, "logs": 2}] });
        assert_eq!(
            merge_services(vec![a, b]),
            json!({ "services": [{"name": "api", "spans": 2, "logs": 2}, {"name": "cart", "spans": 4, "logs": 1}] })
        );
    }

    #[test]
    fn histogram_counts_add_bucket_by_bucket() {
        let a =
            json!({ "interval_ms": 1000, "buckets": [{"start_ms": 0, "count": 2}, {"start_ms": 1000, "count": 1}] });
        let b = json!({ "interval_ms": 1000, "buckets": [{"start_ms": 1000, "count": 4}] });
        let merged = merge_histograms(vec![a, b]);
        assert_eq!(
            merged["buckets"],
            json!([{"start_ms": 0, "count": 2}, {"start_ms": 1000, "count": 5}])
        );
    }
}
