//! The Prometheus HTTP API under `/prometheus/api/v1/`: what Grafana's Prometheus data
//! source and `promtool query` call, answered from the metric store with Vigil's PromQL
//! engine (`vigil-promql`). Parameters come in the query string or, for POST, a form body,
//! as Prometheus takes them; errors are Prometheus' error JSON with its status codes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value as Json_, json};
use vigil_promql::{Error, Options, json as answer};

mod request;

use request::lookback_for;
#[cfg(test)]
use request::options;
pub(crate) use request::{Params, instant_request, range_request};

use super::ApiState;
use crate::storage::{PromView, QueryError};
use crate::telemetry::EndpointLabel;
use crate::timeutil::now_ms;

/// The Prometheus version whose API (and PromQL semantics) Vigil answers as.
const COMPATIBLE_VERSION: &str = "2.42.0";
/// What a listing without `start` covers (Prometheus: all data; Vigil: this far back).
const LISTING_WINDOW_MS: i64 = 6 * 3_600_000;
/// The longest query text accepted (Grafana's longest dashboard queries are a few KiB).
const MAX_QUERY_BYTES: usize = 64 * 1024;
/// Stack of a query's thread: enough for a query of `MAX_QUERY_BYTES` nested all the way.
const QUERY_STACK_BYTES: usize = 512 * 1024 * 1024;

pub(crate) fn reply(result: Result<Json_, Error>) -> Response {
    match result {
        Ok(data) => Json(answer::success(data)).into_response(),
        Err(e) => {
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, Json(answer::failure(&e))).into_response()
        }
    }
}

/// A slot to evaluate in, waited for up to `timeout`: queries beyond
/// `api.max_concurrent_queries` queue (as Prometheus' `--query.max-concurrency` makes them),
/// so a dashboard's burst of panels neither fails nor runs unbounded threads and memory.
pub(crate) async fn admit(
    slots: &std::sync::Arc<tokio::sync::Semaphore>,
    timeout: Duration,
) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
    match tokio::time::timeout(timeout, std::sync::Arc::clone(slots).acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_)) => Err(Error::Internal("the collector is shutting down".into())),
        Err(_) => Err(Error::Timeout(format!(
            "query timed out waiting {:.1} s for one of the query slots, all busy \
             (api.max_concurrent_queries)",
            timeout.as_secs_f64()
        ))),
    }
}

/// Runs `f` on a blocking thread against the store once a query slot is free, timed under
/// `endpoint`. The wait for the slot counts against `timeout`; `f` gets what is left.
async fn run<F>(state: &ApiState, endpoint: &'static str, timeout: Duration, f: F) -> Result<Json_, Error>
where
    F: FnOnce(&crate::storage::Store, Duration) -> Result<Json_, Error> + Send + 'static,
{
    let started = Instant::now();
    let _slot = admit(&state.prom_queries, timeout).await?;
    let left = timeout.saturating_sub(started.elapsed());
    let store = std::sync::Arc::clone(&state.store);
    let result = on_query_thread(move || f(&store, left)).await;
    state
        .metrics
        .query_seconds
        .get_or_create(&EndpointLabel { endpoint })
        .observe(started.elapsed().as_secs_f64());
    result
}

/// Runs `f` on a thread of its own, off the reactor. Parsing, evaluating and dropping an
/// expression recurse as deep as it nests: a query of thousands of parentheses would
/// overflow a blocking thread's 2 MiB stack and abort the process, so the thread has room
/// for the longest query accepted.
pub(crate) async fn on_query_thread<F>(f: F) -> Result<Json_, Error>
where
    F: FnOnce() -> Result<Json_, Error> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("vigil-promql".into())
                .stack_size(QUERY_STACK_BYTES)
                .spawn_scoped(scope, f)
                .map_err(|e| Error::Internal(format!("cannot start a query thread: {e}")))?
                .join()
                .map_err(|_| Error::Internal("the query failed (see the collector's log)".into()))?
        })
    })
    .await
    .map_err(|e| Error::Internal(format!("query task failed: {e}")))?
}

/// [`run`] for a listing (series, labels, metadata): Prometheus' default timeout, all of it
/// for the listing once it has a slot.
async fn run_listing<F>(state: &ApiState, endpoint: &'static str, f: F) -> Result<Json_, Error>
where
    F: FnOnce(&crate::storage::Store) -> Result<Json_, Error> + Send + 'static,
{
    run(state, endpoint, Options::default().timeout, move |store, _| f(store)).await
}

fn storage_error(e: QueryError) -> Error {
    match e {
        QueryError::BadRequest(m) => Error::Execution(m),
        other => Error::Internal(other.to_string()),
    }
}

/// `GET|POST /prometheus/api/v1/query`.
pub(super) async fn query(State(state): State<ApiState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let params = Params::parse(&uri, &headers, &body)?;
        let (text, t, opts) = instant_request(&params)?;
        run(&state, "prometheus_query", opts.timeout, move |store, left| {
            let lookback_ms = lookback_for(store, &opts, t, t);
            let opts = Options {
                timeout: left,
                lookback_ms,
                ..opts
            };
            let value = vigil_promql::instant_query(&PromView(store), &text, t, &opts)?;
            Ok(answer::instant_data(&value, t))
        })
        .await
    }
    .await;
    reply(result)
}

/// `GET|POST /prometheus/api/v1/query_range`.
pub(super) async fn query_range(State(state): State<ApiState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let params = Params::parse(&uri, &headers, &body)?;
        let (text, start, end, step, opts) = range_request(&params)?;
        run(&state, "prometheus_query_range", opts.timeout, move |store, left| {
            let lookback_ms = lookback_for(store, &opts, start, end);
            let opts = Options {
                timeout: left,
                lookback_ms,
                ..opts
            };
            let series = vigil_promql::range_query(&PromView(store), &text, start, end, step, &opts)?;
            Ok(answer::range_data(&series))
        })
        .await
    }
    .await;
    reply(result)
}

/// `GET /api/v1/metrics/samples?match=<selector>&start=<unix ms>&end=<unix ms>`: every series
/// the selector matches, with its raw samples in `[start, end]` — staleness markers
/// included — in [`answer::raw_series`]' form. A cluster's query root evaluates PromQL over
/// what its workers answer here (`cluster::root::prometheus`).
pub(super) async fn samples(State(state): State<ApiState>, uri: Uri, headers: HeaderMap) -> Response {
    let result = async {
        let params = Params::parse(&uri, &headers, &Bytes::new())?;
        let selector = params.required("match")?.to_string();
        let millis = |key: &str| -> Result<i64, Error> {
            let text = params.required(key)?;
            text.parse::<i64>().map_err(|_| {
                Error::BadData(format!(
                    "invalid parameter \"{key}\": {text:?} is not unix milliseconds"
                ))
            })
        };
        let (start, end) = (millis("start")?, millis("end")?);
        if start > end {
            return Err(Error::BadData("end timestamp must not be before start time".into()));
        }
        let sets = vigil_promql::selector_matchers(&selector)?;
        run_listing(&state, "metrics_samples", move |store| {
            let mut all: std::collections::BTreeMap<vigil_promql::Labels, vigil_promql::Series> = Default::default();
            for matchers in sets {
                for s in store
                    .prom_select(
                        &matchers,
                        start.saturating_mul(1_000_000),
                        end.saturating_mul(1_000_000),
                        true,
                    )
                    .map_err(storage_error)?
                {
                    all.entry(s.labels.clone()).or_insert(s);
                }
            }
            Ok(answer::raw_series(&all.into_values().collect::<Vec<_>>()))
        })
        .await
    }
    .await;
    reply(result)
}

/// `start`/`end` of a listing: the last hours by default.
fn listing_range(params: &Params) -> Result<(i64, i64), Error> {
    let end = params.time("end", now_ms())?;
    let start = params.time("start", end - LISTING_WINDOW_MS)?;
    if start > end {
        return Err(Error::BadData("end timestamp must not be before start time".into()));
    }
    Ok((start.saturating_mul(1_000_000), end.saturating_mul(1_000_000)))
}

/// The label sets of the series matching any `match[]` selector.
fn matching_series(
    store: &crate::storage::Store,
    selectors: &[String],
    start_ns: i64,
    end_ns: i64,
) -> Result<BTreeSet<vigil_promql::Labels>, Error> {
    let mut all = BTreeSet::new();
    for selector in selectors {
        for matchers in vigil_promql::selector_matchers(selector)? {
            if matchers.iter().all(|m| m.is_match("")) {
                return Err(Error::BadData(format!(
                    "invalid parameter \"match[]\": {selector:?}: match[] must contain at least one non-empty matcher"
                )));
            }
            for s in store
                .prom_select(&matchers, start_ns, end_ns, false)
                .map_err(storage_error)?
            {
                all.insert(s.labels);
            }
        }
    }
    Ok(all)
}

/// `GET|POST /prometheus/api/v1/series`.
pub(super) async fn series(State(state): State<ApiState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let params = Params::parse(&uri, &headers, &body)?;
        let selectors: Vec<String> = params.all("match[]").into_iter().map(String::from).collect();
        if selectors.is_empty() {
            return Err(Error::BadData("no match[] parameter provided".into()));
        }
        let (start, end) = listing_range(&params)?;
        run_listing(&state, "prometheus_series", move |store| {
            Ok(json!(matching_series(store, &selectors, start, end)?))
        })
        .await
    }
    .await;
    reply(result)
}

/// `GET|POST /prometheus/api/v1/labels`.
pub(super) async fn labels(State(state): State<ApiState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let params = Params::parse(&uri, &headers, &body)?;
        let selectors: Vec<String> = params.all("match[]").into_iter().map(String::from).collect();
        let (start, end) = listing_range(&params)?;
        run_listing(&state, "prometheus_labels", move |store| {
            let names: BTreeSet<String> = if selectors.is_empty() {
                store.prom_label_names(start, end).map_err(storage_error)?
            } else {
                matching_series(store, &selectors, start, end)?
                    .into_iter()
                    .flat_map(|l| l.into_keys())
                    .collect()
            };
            Ok(json!(names))
        })
        .await
    }
    .await;
    reply(result)
}

/// `GET /prometheus/api/v1/label/{name}/values`.
pub(super) async fn label_values(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let params = Params::parse(&uri, &headers, &Bytes::new())?;
        let selectors: Vec<String> = params.all("match[]").into_iter().map(String::from).collect();
        let (start, end) = listing_range(&params)?;
        run_listing(&state, "prometheus_label_values", move |store| {
            let values: BTreeSet<String> = if selectors.is_empty() {
                store.prom_label_values(&name, start, end).map_err(storage_error)?
            } else {
                matching_series(store, &selectors, start, end)?
                    .into_iter()
                    .filter_map(|mut l| l.remove(&name))
                    .collect()
            };
            Ok(json!(values))
        })
        .await
    }
    .await;
    reply(result)
}

/// `GET /prometheus/api/v1/metadata`: each metric's type, help text (its OTLP description, or
/// the `# HELP` remote write brought) and unit.
pub(super) async fn metadata(State(state): State<ApiState>, uri: Uri, headers: HeaderMap) -> Response {
    let result = async {
        let params = Params::parse(&uri, &headers, &Bytes::new())?;
        let metric = params.get("metric").map(String::from);
        let limit = match params.get("limit") {
            Some(l) => l
                .parse::<i64>()
                .map_err(|_| Error::BadData(format!("invalid parameter \"limit\": {l:?}")))?,
            None => -1,
        };
        let end = now_ms().saturating_mul(1_000_000);
        let start = end - LISTING_WINDOW_MS * 1_000_000;
        let help = Arc::clone(&state.metric_help);
        run_listing(&state, "prometheus_metadata", move |store| {
            let kinds = store.prom_metric_kinds(start, end).map_err(storage_error)?;
            let mut out = serde_json::Map::new();
            for (name, kind) in kinds {
                if metric.as_ref().is_some_and(|m| *m != name) {
                    continue;
                }
                if limit >= 0 && out.len() as i64 >= limit {
                    break;
                }
                let text = help.get(&kind.stored).unwrap_or_default();
                out.insert(name, json!([{"type": kind.family, "help": text, "unit": kind.unit}]));
            }
            Ok(Json_::Object(out))
        })
        .await
    }
    .await;
    reply(result)
}

/// `GET /prometheus/api/v1/status/buildinfo`: the Prometheus version whose API this is.
pub(crate) async fn buildinfo() -> Response {
    reply(Ok(json!({
        "version": COMPATIBLE_VERSION,
        "revision": format!("vigil-{}", env!("CARGO_PKG_VERSION")),
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    })))
}

/// `GET /prometheus/api/v1/rules` and `/alerts`: Vigil evaluates no Prometheus rules (its
/// alerts are its incidents, under `/api/v1/alerts`), so the lists are empty.
pub(crate) async fn rules() -> Response {
    reply(Ok(json!({"groups": []})))
}

pub(crate) async fn alerts() -> Response {
    reply(Ok(json!({"alerts": []})))
}

/// `GET|POST /prometheus/api/v1/query_exemplars`: none are stored for metrics.
pub(crate) async fn exemplars() -> Response {
    reply(Ok(json!([])))
}

/// Anything else under `/prometheus/api/v1/`: Prometheus' 404 JSON.
pub(crate) async fn unknown() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(answer::failure(&Error::BadData(
            "no such Prometheus API endpoint in Vigil".into(),
        ))),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_downsampled_day_widens_the_lookback_and_lookback_delta_sets_it() {
        const HOUR: i64 = 3_600_000;
        let dir = tempfile::tempdir().expect("dir");
        let store =
            crate::storage::Store::open(dir.path(), Arc::new(crate::telemetry::Metrics::default())).expect("store");
        let labels = vigil_tsdb::Labels::new([("__name__", "up"), ("__kind__", "gauge")]);
        let day = 20_000 * 24 * HOUR;
        for n in 0..(24 * 240) {
            store
                .tsdb
                .append(n as u64 + 1, &labels, day + n * 15_000, 1.0)
                .expect("append");
        }
        let found = |opts: &Options, t: i64| match vigil_promql::instant_query(&PromView(&store), "up", t, opts) {
            Ok(vigil_promql::Value::Vector(v)) => v.len(),
            other => panic!("{other:?}"),
        };
        let noon = day + 12 * HOUR + 30 * 60_000;
        let raw = Options::default();
        assert_eq!(lookback_for(&store, &raw, noon, noon), 5 * 60_000);
        assert_eq!(found(&raw, noon), 1);

        store.tsdb.downsample_day(20_000, HOUR).expect("downsample");
        // Half an hour after the last hourly sample: out of five minutes' reach.
        assert_eq!(found(&raw, noon), 0);
        let widened = Options {
            lookback_ms: lookback_for(&store, &raw, noon, noon),
            ..Options::default()
        };
        assert_eq!(widened.lookback_ms, HOUR + 5 * 60_000);
        assert_eq!(found(&widened, noon), 1);

        let uri: Uri = "/prometheus/api/v1/query?query=up&lookback_delta=2h"
            .parse()
            .expect("uri");
        let params = Params::parse(&uri, &HeaderMap::new(), &Bytes::new()).expect("params");
        assert_eq!(options(&params).expect("options").lookback_ms, 2 * HOUR);
        for bad in ["-1m", "soon"] {
            let uri: Uri = format!("/prometheus/api/v1/query?query=up&lookback_delta={bad}")
                .parse()
                .expect("uri");
            let params = Params::parse(&uri, &HeaderMap::new(), &Bytes::new()).expect("params");
            let e = options(&params).expect_err("a bad lookback");
            assert_eq!(e.http_status(), 400, "{e}");
            assert!(e.message().contains("lookback_delta"), "{e}");
        }
        let uri: Uri = "/prometheus/api/v1/query?query=up&lookback_delta=0"
            .parse()
            .expect("uri");
        let params = Params::parse(&uri, &HeaderMap::new(), &Bytes::new()).expect("params");
        assert_eq!(
            options(&params).expect("options").lookback_ms,
            5 * 60_000,
            "0 is the default"
        );
    }

    #[tokio::test]
    async fn a_query_beyond_the_slots_waits_then_times_out_saying_why() {
        let slots = Arc::new(tokio::sync::Semaphore::new(1));
        let busy = admit(&slots, Duration::from_secs(1)).await.expect("a free slot");
        let e = admit(&slots, Duration::from_millis(20))
            .await
            .expect_err("every slot is busy");
        assert_eq!((e.error_type(), e.http_status()), ("timeout", 503), "{e}");
        assert!(e.message().contains("api.max_concurrent_queries"), "{e}");
        // A query waiting when a slot frees gets it.
        let waiting = tokio::spawn({
            let slots = Arc::clone(&slots);
            async move { admit(&slots, Duration::from_secs(30)).await.map(|_| ()) }
        });
        drop(busy);
        assert_eq!(waiting.await.expect("the waiting query"), Ok(()));
    }
}
