//! The query root of a cluster, as Quickwit's root searcher: a log search or histogram is
//! asked of every live worker (each answers for the partitions it holds) and the answers
//! merged — hits by time, newest first, cut to the limit; totals and bucket counts summed.
//! `GET /api/v1/cluster` shows the workers and their partitions.
//!
//! While a partition changes hands its new owner is still catching up and the old one has
//! purged its copy: a query then sees less of that partition, never the same record twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::lease::cluster_view;

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
        .route("/api/v1/cluster", get(cluster))
        .with_state(root)
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The same request of every worker with an API. A worker that does not answer fails the
/// query (502): a partial answer would pass for a whole one.
async fn fan_out(
    root: &Root,
    path: &str,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Vec<Value>, Response> {
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
        bodies.push(answer.map_err(|e| error(StatusCode::BAD_GATEWAY, format!("a worker failed the query: {e}")))?);
    }
    Ok(bodies)
}

/// The workers, asking again when the stream's leader does not answer at once (a NATS
/// server just died and its streams are electing new leaders).
async fn members(root: &Root) -> Result<Vec<(super::lease::Member, Vec<u32>)>, Response> {
    let mut last = String::new();
    for _ in 0..4 {
        match tokio::time::timeout(Duration::from_secs(2), cluster_view(&root.kv)).await {
            Ok(Ok(members)) => return Ok(members),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "no answer within 2 s".into(),
        }
    }
    Err(error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("cannot read the cluster's members: {last}"),
    ))
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

async fn logs_search(
    State(root): State<Arc<Root>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let limit: usize = params.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100);
    let params = pin_range(params);
    let bodies = match fan_out(&root, "/api/v1/logs/search", &params, &headers).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    Json(merge_search(bodies, limit)).into_response()
}

fn time_of(hit: &Value) -> i128 {
    hit["time_unix_nano"].as_str().and_then(|t| t.parse().ok()).unwrap_or(0)
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
    hits.sort_by_key(|h| std::cmp::Reverse(time_of(h)));
    hits.truncate(limit);
    json!({ "total": total, "hits": hits })
}

async fn logs_histogram(
    State(root): State<Arc<Root>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let mut params = pin_range(params);
    let now_ms = crate::timeutil::now_ns() / 1_000_000;
    params
        .entry("start".into())
        .or_insert_with(|| now_ms.saturating_sub(3_600_000).to_string());
    let bodies = match fan_out(&root, "/api/v1/logs/histogram", &params, &headers).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    Json(merge_histograms(bodies)).into_response()
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

async fn cluster(State(root): State<Arc<Root>>) -> Response {
    match members(&root).await {
        Ok(members) => Json(json!({
            "workers": members.into_iter().map(|(m, partitions)| json!({
                "node": m.node, "api": m.api, "partitions": partitions,
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(response) => response,
    }
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
        let times: Vec<i128> = merged["hits"].as_array().expect("hits").iter().map(time_of).collect();
        assert_eq!(times, vec![30, 20, 10]);
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
