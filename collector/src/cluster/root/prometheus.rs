//! The Prometheus HTTP API at a cluster's query root. PromQL is evaluated here, with the same
//! engine as on one collector, over the raw samples every worker sends for each selector
//! (`GET /api/v1/metrics/samples`, staleness markers included) — as Thanos' querier
//! evaluates over its stores' raw series. So `sum by (le) (rate(..[5m]))` across services
//! held by different workers is one correct answer, not a sum of per-worker sums, and every
//! Prometheus semantic (lookback, staleness, extrapolation) holds as on one collector.
//! Listings (`series`, `labels`, label values, `metadata`) ask every worker and unite their
//! answers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use axum::routing::{any, get};
use serde_json::{Value as Json, json};
use vigil_promql::{Error, Labels, Matcher, Options, Series, Storage, json as answer};

use super::{Root, fan_out_query};
use crate::api::prometheus::{
    Params, admit, alerts, buildinfo, exemplars, instant_request, on_query_thread, range_request, reply, rules, unknown,
};
use crate::timeutil::now_ms;

pub(super) fn routes() -> Router<Arc<Root>> {
    Router::new()
        .route("/prometheus/api/v1/query", get(query).post(query))
        .route("/prometheus/api/v1/query_range", get(query_range).post(query_range))
        .route("/prometheus/api/v1/series", get(series).post(series))
        .route("/prometheus/api/v1/labels", get(labels).post(labels))
        .route("/prometheus/api/v1/label/{name}/values", get(label_values))
        .route("/prometheus/api/v1/metadata", get(metadata))
        .route("/prometheus/api/v1/status/buildinfo", get(buildinfo))
        .route("/prometheus/api/v1/rules", get(rules))
        .route("/prometheus/api/v1/alerts", get(alerts))
        .route("/prometheus/api/v1/query_exemplars", get(exemplars).post(exemplars))
        .route("/prometheus/api/v1/{*rest}", any(unknown))
}

/// The workers as the engine's storage: each `select` asks all of them for the selector's
/// raw samples. The engine loads every selector before it evaluates, on a thread of its own,
/// so the calls block that thread on the runtime, never the reactor.
struct Workers {
    root: Arc<Root>,
    headers: HeaderMap,
    runtime: tokio::runtime::Handle,
    deadline: Instant,
}

impl Storage for Workers {
    fn select(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Result<Vec<Series>, Error> {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("match", &selector_text(matchers))
            .append_pair("start", &start_ms.to_string())
            .append_pair("end", &end_ms.to_string())
            .finish();
        let left = self.deadline.saturating_duration_since(Instant::now());
        let bodies = self
            .runtime
            .block_on(async {
                // Inside the runtime's context: a timer needs it.
                tokio::time::timeout(
                    left,
                    fan_out_query(&self.root, "/api/v1/metrics/samples", &query, &self.headers, false),
                )
                .await
            })
            .map_err(|_| Error::Timeout("query timed out while the workers sent samples".into()))?
            .map_err(|e| Error::Internal(e.message().to_string()))?;
        let mut parts = Vec::with_capacity(bodies.len());
        for body in bodies {
            parts.push(
                answer::parse_raw_series(&body["data"])
                    .map_err(|e| Error::Internal(format!("a worker's samples: {e}")))?,
            );
        }
        Ok(unite(parts))
    }
}

/// `{m1,m2,..}`: matchers written back as a selector, which reads back to the same matchers.
/// A set that matches the empty value everywhere (one alternative of `{a="" or b="x"}`) is
/// not a selector on its own: it gets `__name__=~".+"`, which every series matches.
fn selector_text(matchers: &[Matcher]) -> String {
    let mut inner: Vec<String> = matchers.iter().map(ToString::to_string).collect();
    if matchers.iter().all(|m| m.is_match("")) {
        inner.push(format!("{}=~\".+\"", vigil_promql::METRIC_NAME));
    }
    format!("{{{}}}", inner.join(","))
}

/// The workers' series as one list. A series lives on the worker holding its service's
/// partition; during a hand-over two may hold part of it: their samples are merged, one per
/// timestamp.
fn unite(parts: Vec<Vec<Series>>) -> Vec<Series> {
    let mut by_labels: BTreeMap<Labels, BTreeMap<i64, f64>> = BTreeMap::new();
    for series in parts.into_iter().flatten() {
        let samples = by_labels.entry(series.labels).or_default();
        for p in series.samples {
            samples.entry(p.t).or_insert(p.v);
        }
    }
    by_labels
        .into_iter()
        .map(|(labels, samples)| Series {
            labels,
            samples: samples
                .into_iter()
                .map(|(t, v)| vigil_promql::Sample { t, v })
                .collect(),
        })
        .collect()
}

/// Evaluates `f` over the workers once a query slot is free; the wait counts against the
/// query's timeout.
async fn evaluate<F>(root: &Arc<Root>, headers: &HeaderMap, opts: Options, f: F) -> Result<Json, Error>
where
    F: FnOnce(&dyn Storage, &Options) -> Result<Json, Error> + Send + 'static,
{
    let started = Instant::now();
    let _slot = admit(&root.prom_slots, opts.timeout).await?;
    let left = opts.timeout.saturating_sub(started.elapsed());
    let mut forwarded = HeaderMap::new();
    if let Some(auth) = headers.get(http::header::AUTHORIZATION) {
        forwarded.insert(http::header::AUTHORIZATION, auth.clone());
    }
    let workers = Workers {
        root: Arc::clone(root),
        headers: forwarded,
        runtime: tokio::runtime::Handle::current(),
        deadline: Instant::now() + left,
    };
    on_query_thread(move || f(&workers, &Options { timeout: left, ..opts })).await
}

/// `GET|POST /prometheus/api/v1/query`.
async fn query(State(root): State<Arc<Root>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let params = Params::parse(&uri, &headers, &body)?;
        let (text, t, opts) = instant_request(&params)?;
        evaluate(&root, &headers, opts, move |storage, opts| {
            let value = vigil_promql::instant_query(storage, &text, t, opts)?;
            Ok(answer::instant_data(&value, t))
        })
        .await
    }
    .await;
    reply(result)
}

/// `GET|POST /prometheus/api/v1/query_range`.
async fn query_range(State(root): State<Arc<Root>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let params = Params::parse(&uri, &headers, &body)?;
        let (text, start, end, step, opts) = range_request(&params)?;
        evaluate(&root, &headers, opts, move |storage, opts| {
            let series = vigil_promql::range_query(storage, &text, start, end, step, opts)?;
            Ok(answer::range_data(&series))
        })
        .await
    }
    .await;
    reply(result)
}

/// Every worker's answer to the same listing, `data` of each. Selectors are checked here
/// first, so a malformed one is the caller's 400, not a worker's failure; the range is
/// pinned so every worker lists the same hours whatever its clock.
async fn listing(root: &Root, path: &str, params: &Params, headers: &HeaderMap) -> Result<Vec<Json>, Error> {
    for selector in params.all("match[]") {
        vigil_promql::selector_matchers(selector)?;
    }
    let mut pairs: Vec<(String, String)> = params.pairs().to_vec();
    if params.get("end").is_none() {
        pairs.retain(|(k, _)| k != "end");
        pairs.push(("end".into(), format!("{:.3}", now_ms() as f64 / 1000.0)));
    }
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let bodies = fan_out_query(root, path, &query, headers, false)
        .await
        .map_err(|e| Error::Internal(e.message().to_string()))?;
    Ok(bodies.into_iter().map(|mut b| b["data"].take()).collect())
}

/// The members of every worker's list, once each, in order.
fn united<T: Ord + serde::de::DeserializeOwned + serde::Serialize>(lists: Vec<Json>) -> Json {
    let all: BTreeSet<T> = lists
        .into_iter()
        .filter_map(|l| serde_json::from_value::<Vec<T>>(l).ok())
        .flatten()
        .collect();
    json!(all)
}

/// `GET|POST /prometheus/api/v1/series`.
async fn series(State(root): State<Arc<Root>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let params = Params::parse(&uri, &headers, &body)?;
        if params.all("match[]").is_empty() {
            return Err(Error::BadData("no match[] parameter provided".into()));
        }
        let lists = listing(&root, "/prometheus/api/v1/series", &params, &headers).await?;
        Ok(united::<Labels>(lists))
    }
    .await;
    reply(result)
}

/// `GET|POST /prometheus/api/v1/labels`.
async fn labels(State(root): State<Arc<Root>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let params = Params::parse(&uri, &headers, &body)?;
        let lists = listing(&root, "/prometheus/api/v1/labels", &params, &headers).await?;
        Ok(united::<String>(lists))
    }
    .await;
    reply(result)
}

/// `GET /prometheus/api/v1/label/{name}/values`.
async fn label_values(
    State(root): State<Arc<Root>>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let params = Params::parse(&uri, &headers, &Bytes::new())?;
        let path = format!(
            "/prometheus/api/v1/label/{}/values",
            form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()
        );
        let lists = listing(&root, &path, &params, &headers).await?;
        Ok(united::<String>(lists))
    }
    .await;
    reply(result)
}

/// `GET /prometheus/api/v1/metadata`: every worker's metrics, the first answer's entry for a
/// metric two workers have, `limit` metrics at most.
async fn metadata(State(root): State<Arc<Root>>, uri: Uri, headers: HeaderMap) -> Response {
    let result = async {
        let params = Params::parse(&uri, &headers, &Bytes::new())?;
        let limit = match params.get("limit") {
            Some(l) => l
                .parse::<i64>()
                .map_err(|_| Error::BadData(format!("invalid parameter \"limit\": {l:?}")))?,
            None => -1,
        };
        let answers = listing(&root, "/prometheus/api/v1/metadata", &params, &headers).await?;
        let mut all: BTreeMap<String, Json> = BTreeMap::new();
        for answer in answers {
            if let Json::Object(metrics) = answer {
                for (name, entry) in metrics {
                    all.entry(name).or_insert(entry);
                }
            }
        }
        let kept = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(Json::Object(all.into_iter().take(kept).collect()))
    }
    .await;
    reply(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_promql::Sample;

    #[test]
    fn matchers_written_back_read_back_the_same() {
        let text = r#"{__name__="http_requests_total", job=~"api|web\\.v[0-9]+", path!="/a \"b\"", code!~"5.."}"#;
        let sets = vigil_promql::selector_matchers(text).expect("parses");
        let again = vigil_promql::selector_matchers(&selector_text(&sets[0])).expect("reads back");
        let show = |ms: &[Matcher]| {
            ms.iter()
                .map(|m| (m.name.clone(), m.op.to_string(), m.value.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(show(&again[0]), show(&sets[0]));
        assert!(again[0][1].is_match("web.v2") && !again[0][1].is_match("webxv2"));
        assert!(again[0][2].is_match("/a b") && !again[0][2].is_match("/a \"b\""));
        // An alternative matching the empty value everywhere still reads as a selector.
        let sets = vigil_promql::selector_matchers(r#"{a="" or b="x"}"#).expect("parses");
        let alone = vigil_promql::selector_matchers(&selector_text(&sets[0])).expect("a selector on its own");
        assert_eq!(alone[0].len(), 2, "{:?}", selector_text(&sets[0]));
    }

    #[test]
    fn a_series_split_by_a_hand_over_is_one_with_one_sample_per_time() {
        let labels = |job: &str| -> Labels { [("job".to_string(), job.to_string())].into_iter().collect() };
        let s = |job: &str, ts: &[i64]| Series {
            labels: labels(job),
            samples: ts.iter().map(|&t| Sample { t, v: t as f64 }).collect(),
        };
        let united = unite(vec![vec![s("a", &[1, 3]), s("b", &[1])], vec![s("a", &[2, 3])]]);
        assert_eq!(united.len(), 2);
        assert_eq!(united[0].samples.iter().map(|p| p.t).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(united[1].labels, labels("b"));
    }
}
