//! Gauge and sum points as samples of the time-series store (`vigil-tsdb`): one series per
//! metric name and label set, the point's kind, temporality, monotonicity and unit kept as
//! reserved labels of the series (they do not change from point to point, so they cost
//! nothing per sample), the timestamp in milliseconds (PromQL's resolution; two points of
//! one series within a millisecond keep the later).
//!
//! Histograms, exponential histograms and summaries stay documents of the metric index
//! (their buckets are JSON there).

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::NumberDataPoint;
use serde_json::{Map, Value as Json};
use vigil_tsdb::{Labels, Matcher};

use super::convert::{PointCommon, attribute_label, number_value};
use super::metrics_query::{Selector, SeriesInfo};

/// The stored (OTLP) metric name.
pub(crate) const NAME: &str = "__name__";
const KIND: &str = "__kind__";
const TEMPORALITY: &str = "__temporality__";
const MONOTONIC: &str = "__monotonic__";
const UNIT: &str = "__unit__";

/// Labels the store keeps for itself, never shown as a series' labels.
pub(crate) fn is_reserved(name: &str) -> bool {
    matches!(name, NAME | KIND | TEMPORALITY | MONOTONIC | UNIT)
}

/// One gauge or sum point, ready for the store.
pub(crate) struct MetricSample {
    pub labels: Labels,
    pub t_ms: i64,
    pub value: f64,
}

/// A point's labels: the resource's identifying keys, then its own attributes.
pub(crate) fn point_labels(
    resource_labels: &BTreeMap<String, String>,
    attributes: &[KeyValue],
) -> BTreeMap<String, String> {
    let mut labels = resource_labels.clone();
    // `extend` inserts pair by pair: an attribute overrides a resource label of its name.
    labels.extend(attribute_pairs(attributes));
    labels
}

/// A point's own attributes as label pairs, in their order.
fn attribute_pairs(attributes: &[KeyValue]) -> impl Iterator<Item = (String, String)> + '_ {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), attribute_label(kv.value.as_ref())))
}

/// Gauge or sum points of one metric as samples: its name and what it is as the series'
/// reserved labels.
pub(super) fn number_samples(m: &PointCommon<'_>, points: &[NumberDataPoint], out: &mut Vec<MetricSample>) {
    for p in points {
        // Resource labels first: a point's own attribute of the same name wins, as in
        // `point_labels` (`Labels::new` keeps the last of two pairs with one name).
        let mut pairs: Vec<(String, String)> = m
            .resource_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(attribute_pairs(&p.attributes))
            .filter(|(k, _)| !is_reserved(k))
            .collect();
        pairs.push((NAME.into(), m.name.into()));
        pairs.push((KIND.into(), m.kind.into()));
        pairs.push((TEMPORALITY.into(), m.temporality.into()));
        if m.monotonic {
            pairs.push((MONOTONIC.into(), "true".into()));
        }
        pairs.push((UNIT.into(), m.unit.into()));
        let ns = i64::try_from(p.time_unix_nano).unwrap_or(i64::MAX);
        out.push(MetricSample {
            labels: Labels::new(pairs),
            t_ms: ns.div_euclid(1_000_000),
            value: number_value(p),
        });
    }
}

/// A stored series as the query API describes it (its id is the hash the metric index
/// used for the same name and labels, so both stores name a series alike).
pub(crate) fn series_info(labels: &Labels) -> (u64, SeriesInfo) {
    let user: BTreeMap<String, String> = labels
        .iter()
        .filter(|(k, _)| !is_reserved(k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let name = labels.get(NAME).unwrap_or("").to_string();
    let id = super::series_id(&name, &user);
    let json: Map<String, Json> = user.into_iter().map(|(k, v)| (k, Json::String(v))).collect();
    let text = |key| labels.get(key).unwrap_or("").to_string();
    (
        id,
        SeriesInfo {
            series_id: format!("{id:016x}"),
            name,
            labels: Json::Object(json),
            kind: text(KIND),
            temporality: text(TEMPORALITY),
            monotonic: labels.get(MONOTONIC) == Some("true"),
            unit: text(UNIT),
            points: 0,
        },
    )
}

/// The store's matchers for a query API selector (a name and label equalities).
pub(crate) fn selector_matchers(selector: &Selector) -> Vec<Matcher> {
    let mut matchers: Vec<Matcher> = selector
        .labels
        .iter()
        .map(|(k, v)| Matcher::Equal(k.clone(), v.clone()))
        .collect();
    if let Some(name) = &selector.name {
        matchers.push(Matcher::Equal(NAME.into(), name.clone()));
    }
    matchers
}

/// `[start_ns, end_ns]` as the milliseconds whose samples fall in it.
pub(crate) fn ms_range(start_ns: i64, end_ns: i64) -> (i64, i64) {
    let ceil = |ns: i64| ns.div_euclid(1_000_000) + i64::from(ns.rem_euclid(1_000_000) != 0);
    (ceil(start_ns), end_ns.div_euclid(1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_is_a_sample_whose_series_keeps_its_kind_and_reads_back_as_stored() {
        let resource_labels = BTreeMap::from([("service.name".to_string(), "api".to_string())]);
        let metric = PointCommon {
            name: "http.requests",
            unit: "1",
            kind: "sum",
            temporality: "cumulative",
            monotonic: true,
            resource_labels: &resource_labels,
            resource: &Map::new(),
        };
        let point = NumberDataPoint {
            time_unix_nano: 1_700_000_000_123_456_789,
            value: Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(7)),
            attributes: vec![KeyValue {
                key: "route".into(),
                value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                    value: Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                        "/a".into(),
                    )),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut out = Vec::new();
        number_samples(&metric, &[point], &mut out);
        assert_eq!((out[0].t_ms, out[0].value), (1_700_000_000_123, 7.0));
        let (id, info) = series_info(&out[0].labels);
        assert_eq!(
            (
                info.name.as_str(),
                info.kind.as_str(),
                info.temporality.as_str(),
                info.monotonic,
                info.unit.as_str()
            ),
            ("http.requests", "sum", "cumulative", true, "1")
        );
        assert_eq!(info.labels, serde_json::json!({"route": "/a", "service.name": "api"}));
        let user = BTreeMap::from([
            ("route".to_string(), "/a".to_string()),
            ("service.name".to_string(), "api".to_string()),
        ]);
        assert_eq!(id, super::super::series_id("http.requests", &user));
    }

    #[test]
    fn a_nanosecond_range_covers_the_milliseconds_inside_it() {
        assert_eq!(ms_range(1_000_000, 3_000_000), (1, 3));
        assert_eq!(ms_range(1_000_001, 2_999_999), (2, 2));
        assert_eq!(ms_range(-1_500_000, -1), (-1, -1));
    }
}
