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

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;
use tantivy::Order;
use tantivy::collector::TopDocs;
use tantivy::schema::Value as _;
use vigil_promql::{Labels, METRIC_NAME, MatchOp, Matcher, Series};

use super::Store;
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
            .map_err(super::prom_select::promql_error)
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
pub(super) fn sanitize_name(name: &str) -> String {
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
pub(super) fn possible_names(stored: &str) -> [String; 5] {
    let base = sanitize_name(stored);
    ["", "_total", "_bucket", "_sum", "_count"].map(|suffix| format!("{base}{suffix}"))
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
pub(super) fn prom_labels(stored: &Json) -> Labels {
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

pub(super) fn matches_all(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers
        .iter()
        .all(|m| m.is_match(labels.get(&m.name).map_or("", String::as_str)))
}

impl Store {
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
