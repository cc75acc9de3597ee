//! PromQL's selections: the series a selector matches, named and labelled as Prometheus
//! names them (see `prom.rs`), with their samples — whole (`prom_select`, for the step-by-step
//! evaluator and the listings) or handed over one series at a time (`prom_select_each`), so
//! that the engine's series-major evaluation (`rate`, `sum by (…) (rate(…))` over a day of
//! thousands of series) holds one series' samples, not the selection's.

use std::collections::HashMap;

use serde_json::Value as Json;
use tantivy::schema::Value as _;
use vigil_promql::{Labels, METRIC_NAME, Matcher, Sample, Series};

use super::Store;
use super::collectors::RawPoint;
use super::metrics_query::{MAX_POINTS, Selector};
use super::prom::{matches_all, possible_names, prom_labels, sanitize_name, series_labels, served, term_filters};
use super::samples;
use super::search::QueryError;
use crate::wal::Signal;

/// One stored histogram or summary point, as read from its document.
struct DistributionPoint {
    ts_ms: i64,
    count: f64,
    sum: f64,
    /// (upper bound, cumulative count) of a histogram; (quantile, value) of a summary.
    parts: Vec<(f64, f64)>,
}

fn float(v: &Json) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// The points of one histogram or summary document: cumulative buckets (`+Inf` last) or
/// quantiles.
fn distribution_point(kind: &str, ts_ms: i64, count: f64, sum: f64, detail: &Json) -> DistributionPoint {
    let parts = if kind == "histogram" {
        let bounds: Vec<f64> = detail["explicit_bounds"]
            .as_array()
            .into_iter()
            .flatten()
            .map(float)
            .collect();
        let counts: Vec<f64> = detail["bucket_counts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(float)
            .collect();
        let mut running = 0.0;
        counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                running += c;
                (bounds.get(i).copied().unwrap_or(f64::INFINITY), running)
            })
            .collect()
    } else {
        detail["quantiles"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|q| (float(&q["quantile"]), float(&q["value"])))
            .collect()
    };
    DistributionPoint {
        ts_ms,
        count,
        sum,
        parts,
    }
}

impl Store {
    /// Series matching Prometheus `matchers` with their samples in `[start_ns, end_ns]`
    /// (none when `with_samples` is false). Refuses a selection past the point cap rather
    /// than answer with part of it.
    pub(crate) fn prom_select(
        &self,
        matchers: &[Matcher],
        start_ns: i64,
        end_ns: i64,
        with_samples: bool,
    ) -> Result<Vec<Series>, QueryError> {
        let labels = term_filters(matchers);
        let mut out = Vec::new();
        // One budget for the whole selection, not one per metric name: a selector matching
        // every name must stop at the cap too.
        let mut read = 0usize;
        for name in self.prom_names(matchers, start_ns, end_ns)? {
            let selector = Selector {
                name: Some(name),
                labels: labels.clone(),
            };
            out.extend(self.prom_select_name(&selector, matchers, start_ns, end_ns, with_samples, &mut read)?);
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    /// The stored metric names whose Prometheus names the `__name__` matchers accept.
    pub(super) fn prom_names(
        &self,
        matchers: &[Matcher],
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<String>, QueryError> {
        Ok(self
            .metric_names(start_ns, end_ns, usize::MAX)?
            .into_iter()
            .filter(|stored| {
                let candidates = possible_names(stored);
                matchers
                    .iter()
                    .filter(|m| m.name == METRIC_NAME)
                    .all(|m| candidates.iter().any(|c| m.is_match(c)))
            })
            .collect())
    }

    /// [`Store::prom_select`] for the one stored name of `selector`, its samples counted
    /// into `read`.
    pub(super) fn prom_select_name(
        &self,
        selector: &Selector,
        matchers: &[Matcher],
        start_ns: i64,
        end_ns: i64,
        with_samples: bool,
        read: &mut usize,
    ) -> Result<Vec<Series>, QueryError> {
        let mut out = Vec::new();
        let scan = self.scan(selector, start_ns, end_ns, with_samples)?;
        *read += scan.points.len();
        if scan.truncated || *read > MAX_POINTS {
            return Err(too_many_samples());
        }
        let mut by_series: HashMap<u64, Vec<RawPoint>> = HashMap::new();
        for p in scan.points {
            by_series.entry(p.series_id).or_default().push(p);
        }
        let mut distributions = Vec::new();
        for (id, info) in scan.info {
            if !served(&info) {
                continue;
            }
            if info.kind != "gauge" && info.kind != "sum" {
                distributions.push((id, info));
                continue;
            }
            let labels = series_labels(&info);
            if !matches_all(matchers, &labels) {
                continue;
            }
            let mut points = by_series.remove(&id).unwrap_or_default();
            points.sort_by_key(|p| p.ts);
            let mut samples: Vec<Sample> = Vec::with_capacity(if with_samples { points.len() } else { 0 });
            if with_samples {
                for p in points {
                    let s = Sample {
                        t: p.ts.div_euclid(1_000_000),
                        v: p.value,
                    };
                    // One sample per millisecond: a resent point replaces the earlier.
                    match samples.last_mut() {
                        Some(last) if last.t == s.t => *last = s,
                        _ => samples.push(s),
                    }
                }
            }
            out.push(Series { labels, samples });
        }
        if !distributions.is_empty() {
            out.extend(self.distribution_series(selector, distributions, matchers, start_ns, end_ns, with_samples)?);
        }
        Ok(out)
    }

    /// Histogram and summary series as Prometheus' `_bucket`/quantile, `_sum` and `_count`
    /// series, from their stored documents.
    pub(super) fn distribution_series(
        &self,
        selector: &Selector,
        infos: Vec<(u64, super::metrics_query::SeriesInfo)>,
        matchers: &[Matcher],
        start_ns: i64,
        end_ns: i64,
        with_samples: bool,
    ) -> Result<Vec<Series>, QueryError> {
        let f = &self.schemas.metrics;
        let wanted: HashMap<u64, super::metrics_query::SeriesInfo> = infos.into_iter().collect();
        let mut points: HashMap<u64, Vec<DistributionPoint>> = HashMap::new();
        // Read even for a listing: the bounds and quantiles are in the documents.
        {
            let query = self.metric_filter(selector, start_ns, end_ns);
            let mut read = 0usize;
            for partition in self.partitions.covering(Signal::Metrics, start_ns, end_ns) {
                let searcher = partition.reader.searcher();
                let docs = searcher.search(&query, &tantivy::collector::DocSetCollector)?;
                read += docs.len();
                if read > MAX_POINTS {
                    return Err(too_many_samples());
                }
                for addr in docs {
                    let doc: tantivy::TantivyDocument = searcher.doc(addr)?;
                    let Some(id) = doc.get_first(f.series_id).and_then(|v| v.as_u64()) else {
                        continue;
                    };
                    let Some(info) = wanted.get(&id) else { continue };
                    let ts = doc.get_first(f.ts).and_then(|v| v.as_i64()).unwrap_or(0);
                    let count = doc.get_first(f.count).and_then(|v| v.as_u64()).unwrap_or(0) as f64;
                    let sum = doc.get_first(f.sum).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
                    let detail = super::search::first_json(&doc, f.detail);
                    points.entry(id).or_default().push(distribution_point(
                        &info.kind,
                        ts.div_euclid(1_000_000),
                        count,
                        sum,
                        &detail,
                    ));
                }
            }
        }
        let mut out = Vec::new();
        for (id, info) in &wanted {
            let base = sanitize_name(&info.name);
            let labels = prom_labels(&info.labels);
            let mut series_points = points.remove(id).unwrap_or_default();
            series_points.sort_by_key(|p| p.ts_ms);
            series_points.dedup_by_key(|p| p.ts_ms);
            let named = |name: String, extra: Option<(&str, String)>| {
                let mut l = labels.clone();
                l.insert(METRIC_NAME.into(), name);
                if let Some((k, v)) = extra {
                    l.insert(k.to_string(), v);
                }
                l
            };
            let mut add = |labels: Labels, value: &dyn Fn(&DistributionPoint) -> Option<f64>| {
                if matches_all(matchers, &labels) {
                    let samples = if with_samples {
                        series_points
                            .iter()
                            .filter_map(|p| value(p).map(|v| Sample { t: p.ts_ms, v }))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    out.push(Series { labels, samples });
                }
            };
            add(named(format!("{base}_count"), None), &|p| Some(p.count));
            add(named(format!("{base}_sum"), None), &|p| Some(p.sum));
            // Every bound or quantile any point of the series had (layouts rarely change).
            let mut keys: Vec<f64> = series_points.iter().flat_map(|p| p.parts.iter().map(|x| x.0)).collect();
            keys.sort_by(f64::total_cmp);
            keys.dedup();
            for key in keys {
                let (name, label) = if info.kind == "histogram" {
                    (format!("{base}_bucket"), "le")
                } else {
                    (base.clone(), "quantile")
                };
                let lookup = move |p: &DistributionPoint| p.parts.iter().find(|x| x.0 == key).map(|x| x.1);
                add(
                    named(name, Some((label, vigil_promql::json::format_value(key)))),
                    &lookup,
                );
            }
        }
        Ok(out)
    }

    /// [`Store::prom_select`] handing each series with samples to `f` as it is read. Gauges
    /// and sums come from the time-series store one series at a time, in their Prometheus
    /// labels' order within a metric name, and are not capped here: the engine counts what
    /// it holds against its sample limit. What is kept as documents (histograms, summaries,
    /// and gauges of a data directory written before the time-series store) is read whole
    /// under [`MAX_POINTS`], as by [`Store::prom_select`].
    pub(crate) fn prom_select_each(
        &self,
        matchers: &[Matcher],
        start_ns: i64,
        end_ns: i64,
        f: &mut dyn FnMut(Series) -> Result<(), vigil_promql::Error>,
    ) -> Result<(), vigil_promql::Error> {
        let labels = term_filters(matchers);
        let (start_ms, end_ms) = samples::ms_range(start_ns, end_ns);
        let mut read = 0usize;
        // Every series' labels first, then the series in label order, as `prom_select`
        // sorts them: an aggregation adds its members in that order, and a float sum in
        // another order can differ in its last bit from the same query over a whole
        // selection (a cluster's root answers that way).
        let mut plans: Vec<vigil_tsdb::Planned> = Vec::new();
        let mut pending: Vec<(Labels, Pending)> = Vec::new();
        for name in self.prom_names(matchers, start_ns, end_ns).map_err(promql_error)? {
            let selector = Selector {
                name: Some(name),
                labels: labels.clone(),
            };
            let documents = self.scan_documents(&selector, start_ns, end_ns).map_err(promql_error)?;
            read += documents.points.len();
            if documents.truncated || read > MAX_POINTS {
                return Err(promql_error(too_many_samples()));
            }
            if documents.info.values().any(|i| i.kind == "gauge" || i.kind == "sum") {
                // Documents and store samples of one series are merged by the whole read.
                let whole = self
                    .prom_select_name(&selector, matchers, start_ns, end_ns, true, &mut read)
                    .map_err(promql_error)?;
                pending.extend(whole.into_iter().map(|s| (s.labels.clone(), Pending::Read(s))));
                continue;
            }
            let distributions: Vec<_> = documents.info.into_iter().filter(|(_, i)| served(i)).collect();
            if !distributions.is_empty() {
                let series = self
                    .distribution_series(&selector, distributions, matchers, start_ns, end_ns, true)
                    .map_err(promql_error)?;
                pending.extend(series.into_iter().map(|s| (s.labels.clone(), Pending::Read(s))));
            }
            let planned = self.tsdb.plan(&samples::selector_matchers(&selector), start_ms, end_ms);
            let plan = plans.len();
            for (index, s) in planned.series().iter().enumerate() {
                let (_, info) = samples::series_info(&s.labels);
                if !served(&info) {
                    continue;
                }
                let labels = series_labels(&info);
                if matches_all(matchers, &labels) {
                    pending.push((labels, Pending::Stored { plan, index }));
                }
            }
            plans.push(planned);
        }
        pending.sort_by(|a, b| a.0.cmp(&b.0));
        for (labels, source) in pending {
            let series = match source {
                Pending::Read(series) => series,
                Pending::Stored { plan, index } => {
                    let planned = &plans[plan];
                    let samples = planned
                        .read(&planned.series()[index], start_ms, end_ms)
                        .map_err(|e| promql_error(e.into()))?
                        .into_iter()
                        .map(|(t, v)| Sample { t, v })
                        .collect();
                    Series { labels, samples }
                }
            };
            if !series.samples.is_empty() {
                f(series)?;
            }
        }
        Ok(())
    }
}

/// A series of a selection handed over one at a time: read already (documents), or still
/// in the time-series store (read when its turn comes).
enum Pending {
    Read(Series),
    Stored { plan: usize, index: usize },
}

/// A selection past the read cap: refused rather than answered with part of it.
pub(super) fn too_many_samples() -> QueryError {
    QueryError::BadRequest(
        "the selection holds more samples than a query may read; narrow the selector or the time range".into(),
    )
}

/// A store error as the engine reports it: a refused selection is the query's fault.
pub(super) fn promql_error(e: QueryError) -> vigil_promql::Error {
    match e {
        QueryError::BadRequest(m) => vigil_promql::Error::Execution(m),
        other => vigil_promql::Error::Internal(other.to_string()),
    }
}
