//! The metric store as Prometheus sees it: series named and labelled the way the
//! OpenTelemetry Prometheus compatibility spec maps OTLP to Prometheus, for the PromQL engine
//! and the `/prometheus/api/v1/` listing endpoints.
//!
//! - Name: the stored name with every character outside `[a-zA-Z0-9_:]` replaced by `_`; a
//!   monotonic sum gets `_total` unless its name already ends in one of Prometheus' suffixes
//!   (`_total`, `_bucket`, `_count`, `_sum`), so what came in by remote write reads back as
//!   it was sent.
//! - Labels: `service.name` (with `service.namespace`, `namespace/name`) is `job`,
//!   `service.instance.id` is `instance`; every other key is sanitised like names (a leading
//!   digit gets `key_`), values of keys that collide joined with `;`.
//! - OTLP histograms (cumulative, explicit buckets) are `_bucket` series with an `le` label
//!   (cumulative counts, `+Inf` last), `_sum` and `_count`; summaries are the name with a
//!   `quantile` label, `_sum` and `_count`. Their points are read from the stored documents
//!   (buckets are kept as JSON), so they cost more per point than gauges and sums. Delta
//!   and exponential histograms are not served.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value as Json;
use tantivy::Order;
use tantivy::collector::TopDocs;
use tantivy::schema::Value as _;
use vigil_promql::{Labels, METRIC_NAME, MatchOp, Matcher, Sample, Series};

use super::Store;
use super::collectors::RawPoint;
use super::metrics_query::Selector;
use super::search::{QueryError, term_query};
use crate::wal::Signal;

/// Suffixes Prometheus names end in; a name with one keeps it as is.
const PROMETHEUS_SUFFIXES: [&str; 4] = ["_total", "_bucket", "_count", "_sum"];

/// The store as a PromQL [`vigil_promql::Storage`].
pub(crate) struct PromView<'a>(pub(crate) &'a Store);

/// What the Prometheus `metadata` API says of a metric.
pub(crate) struct MetricKind {
    /// Prometheus' type: counter, gauge, histogram, summary or unknown.
    pub(crate) family: &'static str,
    pub(crate) unit: String,
    /// The name it is stored under (its OTLP name), which its help text is kept by.
    pub(crate) stored: String,
}

impl vigil_promql::Storage for PromView<'_> {
    fn select(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Result<Vec<Series>, vigil_promql::Error> {
        let (start, end) = (start_ms.saturating_mul(1_000_000), end_ms.saturating_mul(1_000_000));
        self.0
            .prom_select(matchers, start, end, true)
            .map_err(super::prom_each::promql_error)
    }

    fn select_each(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        f: &mut dyn FnMut(Series) -> Result<(), vigil_promql::Error>,
    ) -> Result<(), vigil_promql::Error> {
        let (start, end) = (start_ms.saturating_mul(1_000_000), end_ms.saturating_mul(1_000_000));
        self.0.prom_select_each(matchers, start, end, f)
    }
}

/// `name` with what Prometheus does not allow in a metric name replaced by `_`.
fn sanitize_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A label key as Prometheus allows it.
fn sanitize_label(key: &str) -> String {
    let out: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        format!("key_{out}")
    } else {
        out
    }
}

/// The Prometheus name of a stored metric.
pub(crate) fn prom_name(name: &str, kind: &str, monotonic: bool) -> String {
    let base = sanitize_name(name);
    // The stored name decides: `rpc_count` came from Prometheus, `rpc.count` from OTLP.
    if kind == "sum" && monotonic && !PROMETHEUS_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        format!("{base}_total")
    } else {
        base
    }
}

/// The names a stored metric may have in Prometheus (its kind decides which).
fn possible_names(stored: &str) -> [String; 5] {
    let base = sanitize_name(stored);
    ["", "_total", "_bucket", "_sum", "_count"].map(|suffix| format!("{base}{suffix}"))
}

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

/// The Prometheus label name of a stored label key.
fn prom_label_name(key: &str) -> String {
    match key {
        "service.name" | "service.namespace" => "job".into(),
        "service.instance.id" => "instance".into(),
        other => sanitize_label(other),
    }
}

/// Prometheus labels of a stored series (without `__name__`).
fn prom_labels(stored: &Json) -> Labels {
    let mut labels = Labels::new();
    let Some(map) = stored.as_object() else {
        return labels;
    };
    let text = |v: &Json| match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut job = map.get("service.name").map(text);
    if let (Some(name), Some(ns)) = (&job, map.get("service.namespace").map(text)) {
        job = Some(format!("{ns}/{name}"));
    }
    if let Some(job) = job {
        labels.insert("job".into(), job);
    }
    if let Some(instance) = map.get("service.instance.id").map(text) {
        labels.insert("instance".into(), instance);
    }
    for (k, v) in map {
        if matches!(k.as_str(), "service.name" | "service.namespace" | "service.instance.id") {
            continue;
        }
        let value = text(v);
        if value.is_empty() {
            continue;
        }
        labels
            .entry(sanitize_label(k))
            .and_modify(|old: &mut String| {
                old.push(';');
                old.push_str(&value);
            })
            .or_insert(value);
    }
    labels
}

/// Label equality matchers that can narrow the index search: stored keys that map to the
/// Prometheus name one way only (no `_`, which may stand for a `.`).
pub(super) fn term_filters(matchers: &[Matcher]) -> BTreeMap<String, String> {
    let mut terms = BTreeMap::new();
    for m in matchers {
        if !matches!(m.op, MatchOp::Equal) || m.value.is_empty() {
            continue;
        }
        match m.name.as_str() {
            METRIC_NAME => {}
            "job" if !m.value.contains('/') => {
                terms.insert("service.name".to_string(), m.value.clone());
            }
            // `namespace/name` is two stored keys: filtered after the search. Derived labels
            // (made from an OTLP histogram's or summary's points) are not stored at all.
            "job" | "le" | "quantile" => {}
            "instance" => {
                terms.insert("service.instance.id".to_string(), m.value.clone());
            }
            name if !name.contains('_') => {
                terms.insert(name.to_string(), m.value.clone());
            }
            _ => {}
        }
    }
    terms
}

/// Whether Prometheus is served a stored series of this kind.
pub(super) fn served(info: &super::metrics_query::SeriesInfo) -> bool {
    match info.kind.as_str() {
        // Delta sums are not counters: their raw per-interval values would read as a reset
        // at every point (the compatibility spec drops them too).
        "sum" => info.temporality != "delta",
        "gauge" | "summary" => true,
        "histogram" => info.temporality == "cumulative",
        _ => false,
    }
}

/// The Prometheus labels of a stored gauge or sum, `__name__` included.
pub(super) fn series_labels(info: &super::metrics_query::SeriesInfo) -> Labels {
    let mut labels = prom_labels(&info.labels);
    labels.insert(METRIC_NAME.into(), prom_name(&info.name, &info.kind, info.monotonic));
    labels
}

/// A selection past the read cap: refused rather than answered with part of it.
pub(super) fn too_many_samples() -> QueryError {
    QueryError::BadRequest(
        "the selection holds more samples than a query may read; narrow the selector or the time range".into(),
    )
}

pub(super) fn matches_all(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers
        .iter()
        .all(|m| m.is_match(labels.get(&m.name).map_or("", String::as_str)))
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
        if scan.truncated || *read > super::metrics_query::MAX_POINTS {
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
                if read > super::metrics_query::MAX_POINTS {
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

    /// Label names stored in `[start, end]`, as Prometheus names them.
    pub(crate) fn prom_label_names(&self, start_ns: i64, end_ns: i64) -> Result<BTreeSet<String>, QueryError> {
        let mut names = BTreeSet::from([METRIC_NAME.to_string()]);
        self.for_each_label_pair(start_ns, end_ns, |key, _| {
            names.insert(prom_label_name(key));
        })?;
        Ok(names)
    }

    /// Values of Prometheus label `name` stored in `[start, end]`.
    pub(crate) fn prom_label_values(
        &self,
        name: &str,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<BTreeSet<String>, QueryError> {
        if name == METRIC_NAME {
            return Ok(self.prom_metric_kinds(start_ns, end_ns)?.into_keys().collect());
        }
        let mut values = BTreeSet::new();
        let mut namespaced = false;
        self.for_each_label_pair(start_ns, end_ns, |key, value| {
            namespaced |= key == "service.namespace";
            if prom_label_name(key) == name && key != "service.namespace" {
                values.insert(value.to_string());
            }
        })?;
        if name == "job" && namespaced {
            // `namespace/name` pairs are only known per series.
            let all = self.prom_select(&[], start_ns, end_ns, false)?;
            values = all.into_iter().filter_map(|s| s.labels.get("job").cloned()).collect();
        }
        Ok(values)
    }

    /// Every stored metric in `[start, end]` by Prometheus name, with its type
    /// (`counter`, `gauge`, `histogram`, `summary`), unit and stored (OTLP) name, read from
    /// its newest point.
    pub(crate) fn prom_metric_kinds(
        &self,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<BTreeMap<String, MetricKind>, QueryError> {
        let f = &self.schemas.metrics;
        let mut kinds = BTreeMap::new();
        let (start_ms, end_ms) = super::samples::ms_range(start_ns, end_ns);
        for stored in self.metric_names(start_ns, end_ns, usize::MAX)? {
            let query = term_query(f.name, &stored);
            let name = vigil_tsdb::Matcher::Equal(super::samples::NAME.into(), stored.clone());
            let mut found = self
                .tsdb
                .series_labels(&[name], start_ms, end_ms)
                .first()
                .map(|labels| {
                    let (_, info) = super::samples::series_info(labels);
                    (info.kind, info.monotonic, info.unit)
                });
            // Histograms and summaries are documents of the metric index.
            for partition in self.partitions.covering(Signal::Metrics, start_ns, end_ns) {
                if found.is_some() {
                    break;
                }
                let searcher = partition.reader.searcher();
                if let Some((_, addr)) = searcher
                    .search(
                        &query,
                        &TopDocs::with_limit(1).order_by_fast_field::<i64>("ts", Order::Desc),
                    )?
                    .first()
                {
                    let doc: tantivy::TantivyDocument = searcher.doc(*addr)?;
                    let s = |field| doc.get_first(field).and_then(|v| v.as_str()).unwrap_or("").to_string();
                    let monotonic = doc.get_first(f.monotonic).and_then(|v| v.as_bool()).unwrap_or(false);
                    found = Some((s(f.kind), monotonic, s(f.unit)));
                    break;
                }
            }
            let Some((kind, monotonic, unit)) = found else { continue };
            let family = match kind.as_str() {
                "sum" if monotonic => "counter",
                "gauge" | "sum" => "gauge",
                // Not served as series yet (see the module docs); listed for what they are.
                "histogram" | "exponential_histogram" => "histogram",
                "summary" => "summary",
                _ => "unknown",
            };
            kinds.insert(
                prom_name(&stored, &kind, monotonic),
                MetricKind { family, unit, stored },
            );
        }
        Ok(kinds)
    }

    /// Calls `f(key, value)` for every stored `key=value` label term in `[start, end]`.
    fn for_each_label_pair(&self, start_ns: i64, end_ns: i64, mut f: impl FnMut(&str, &str)) -> Result<(), QueryError> {
        let (start_ms, end_ms) = super::samples::ms_range(start_ns, end_ns);
        for key in self.tsdb.label_names(start_ms, end_ms) {
            if super::samples::is_reserved(&key) {
                continue;
            }
            for value in self.tsdb.label_values(&key, start_ms, end_ms) {
                f(&key, &value);
            }
        }
        for partition in self.partitions.covering(Signal::Metrics, start_ns, end_ns) {
            let searcher = partition.reader.searcher();
            for segment in searcher.segment_readers() {
                let index = segment.inverted_index(self.schemas.metrics.label_pairs)?;
                let mut terms = index.terms().stream().map_err(tantivy::TantivyError::from)?;
                while let Some((term, _)) = terms.next() {
                    let pair = String::from_utf8_lossy(term);
                    if let Some((k, v)) = pair.split_once('=') {
                        f(k, v);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_map_as_the_compatibility_spec_says() {
        assert_eq!(
            prom_name("http.server.request.count", "sum", true),
            "http_server_request_count_total"
        );
        assert_eq!(
            prom_name("node_cpu_seconds_total", "sum", true),
            "node_cpu_seconds_total"
        );
        assert_eq!(
            prom_name("rpc_duration_bucket", "sum", true),
            "rpc_duration_bucket",
            "remote-written names read back as sent"
        );
        assert_eq!(
            prom_name("process.memory.usage", "gauge", false),
            "process_memory_usage"
        );
        assert_eq!(prom_name("2xx.rate", "gauge", false), "_2xx_rate");
        let labels = prom_labels(&serde_json::json!({
            "service.name": "api", "service.namespace": "shop", "service.instance.id": "pod-1",
            "http.method": "GET", "http_method": "POST", "1st": "x", "mode": "idle",
        }));
        assert_eq!(labels["job"], "shop/api");
        assert_eq!(labels["instance"], "pod-1");
        assert_eq!(labels["mode"], "idle");
        assert_eq!(labels["key_1st"], "x");
        // Keys that collide once sanitised keep both values.
        assert_eq!(labels["http_method"], "GET;POST");
    }

    #[test]
    fn only_unambiguous_equality_matchers_narrow_the_search() {
        let m = |name: &str, op: MatchOp, value: &str| Matcher::new(op, name, value);
        let terms = term_filters(&[
            m("job", MatchOp::Equal, "node"),
            m("instance", MatchOp::Equal, "h:9100"),
            m("mode", MatchOp::Equal, "idle"),
            m("http_method", MatchOp::Equal, "GET"),
            m("device", MatchOp::NotEqual, "lo"),
            m("cpu", MatchOp::Equal, ""),
            m("le", MatchOp::Equal, "0.5"),
            m("quantile", MatchOp::Equal, "0.99"),
            m(METRIC_NAME, MatchOp::Equal, "up"),
        ]);
        assert_eq!(
            terms,
            BTreeMap::from([
                ("mode".to_string(), "idle".to_string()),
                ("service.instance.id".to_string(), "h:9100".to_string()),
                ("service.name".to_string(), "node".to_string()),
            ])
        );
        // A namespaced job is no stored term at all (it used to become `job=shop/api`, and
        // nothing matched).
        assert!(term_filters(&[m("job", MatchOp::Equal, "shop/api")]).is_empty());
    }
}
