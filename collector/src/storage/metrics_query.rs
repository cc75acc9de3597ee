//! Metric series listing and range queries with per-step aggregation.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use serde_json::Value as Json;
use tantivy::query::Query;
use tantivy::schema::Value;
use tantivy::{DocAddress, Searcher, TantivyDocument};

use super::Store;
use super::collectors::{MetricPoints, RawPoint};
use super::search::{QueryError, and, first_json, term_query, time_range};
use crate::wal::Signal;

/// Upper bound on points read for one query.
pub(super) const MAX_POINTS: usize = 5_000_000;
/// Upper bound on steps in one query's answer.
const MAX_STEPS: i64 = 11_000;

/// A series selector: `name`, `name{k="v",...}` or `{k="v",...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Selector {
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl Selector {
    pub(crate) fn parse(text: &str) -> Result<Selector, String> {
        let text = text.trim();
        let (name, rest) = match text.find('{') {
            Some(i) => (text[..i].trim(), Some(&text[i..])),
            None => (text, None),
        };
        let mut selector = Selector {
            name: (!name.is_empty()).then(|| name.to_string()),
            labels: BTreeMap::new(),
        };
        if let Some(rest) = rest {
            let inner = rest
                .strip_prefix('{')
                .and_then(|r| r.strip_suffix('}'))
                .ok_or_else(|| format!("selector {text:?}: unbalanced braces"))?;
            selector.labels = parse_label_list(inner).map_err(|e| format!("selector {text:?}: {e}"))?;
        }
        if selector.name.is_none() && selector.labels.is_empty() {
            return Err("empty selector: give a metric name or label matchers".into());
        }
        Ok(selector)
    }
}

/// Parses `k="v", k2="v2"` (quotes optional when the value has no comma).
pub(crate) fn parse_label_list(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(labels);
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let key = key.trim().to_string();
        if key.is_empty() {
            return Err("label matcher without a name".into());
        }
        let mut value = String::new();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(format!("unterminated quote in the value of {key}"));
            }
        } else {
            value = chars
                .by_ref()
                .take_while(|c| *c != ',')
                .collect::<String>()
                .trim()
                .to_string();
        }
        labels.insert(key, value);
    }
}

/// Aggregation applied to the points falling into one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Agg {
    Avg,
    Min,
    Max,
    Sum,
    Last,
}

impl Agg {
    pub(crate) fn parse(s: &str) -> Result<Agg, String> {
        Ok(match s {
            "avg" | "" => Agg::Avg,
            "min" => Agg::Min,
            "max" => Agg::Max,
            "sum" => Agg::Sum,
            "last" => Agg::Last,
            other => return Err(format!("unknown agg {other:?}; use avg, min, max, sum or last")),
        })
    }

    fn apply(self, values: &[f64]) -> f64 {
        match self {
            Agg::Avg => values.iter().sum::<f64>() / values.len() as f64,
            Agg::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
            Agg::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Agg::Sum => values.iter().sum(),
            Agg::Last => values.last().copied().unwrap_or(f64::NAN),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SeriesInfo {
    pub series_id: String,
    pub name: String,
    pub labels: Json,
    pub kind: String,
    pub temporality: String,
    pub monotonic: bool,
    pub unit: String,
    /// Points in the range.
    pub points: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct SeriesData {
    #[serde(flatten)]
    pub info: SeriesInfo,
    /// Whether the values are per-second rates derived from a counter.
    pub rate: bool,
    /// `[unix ms of the step start, value]`.
    pub values: Vec<(i64, f64)>,
}

#[derive(Debug, Serialize)]
pub(crate) struct MetricQueryResult {
    pub step_ms: i64,
    pub series: Vec<SeriesData>,
    /// True when the point cap cut the scan short.
    pub truncated: bool,
}

pub(crate) struct MetricQuery {
    pub selector: Selector,
    pub start_ns: i64,
    pub end_ns: i64,
    pub step_ns: i64,
    pub agg: Agg,
    /// Turn monotonic sums into per-second rates (the default); `false` returns
    /// the raw counter values.
    pub rate: bool,
}

pub(super) struct Scan {
    pub(super) points: Vec<RawPoint>,
    pub(super) info: HashMap<u64, SeriesInfo>,
    pub(super) truncated: bool,
}

impl Store {
    pub(super) fn metric_filter(&self, selector: &Selector, start_ns: i64, end_ns: i64) -> Box<dyn Query> {
        let f = &self.schemas.metrics;
        let mut parts = vec![time_range(f.ts, start_ns, end_ns)];
        if let Some(name) = &selector.name {
            parts.push(term_query(f.name, name));
        }
        for (k, v) in &selector.labels {
            parts.push(term_query(f.label_pairs, &format!("{k}={v}")));
        }
        and(parts)
    }

    /// Points and series of `selector` in `[start_ns, end_ns]`. `with_samples: false` is for
    /// listings: the time-series store's series are named from its label index without a
    /// sample read (a series whose chunk overlaps the range is listed even if no sample of it
    /// falls inside, as Prometheus' index-based listings do).
    pub(super) fn scan(
        &self,
        selector: &Selector,
        start_ns: i64,
        end_ns: i64,
        with_samples: bool,
    ) -> Result<Scan, QueryError> {
        let mut scan = self.scan_documents(selector, start_ns, end_ns)?;
        self.scan_samples(selector, start_ns, end_ns, with_samples, &mut scan)?;
        Ok(scan)
    }

    /// The part of [`Store::scan`] kept as documents in the metric index: histograms,
    /// summaries, and gauges and sums written before the time-series store.
    pub(super) fn scan_documents(&self, selector: &Selector, start_ns: i64, end_ns: i64) -> Result<Scan, QueryError> {
        if start_ns > end_ns {
            return Err(QueryError::BadRequest("start is after end".into()));
        }
        let query = self.metric_filter(selector, start_ns, end_ns);
        let mut scan = Scan {
            points: Vec::new(),
            info: HashMap::new(),
            truncated: false,
        };
        for partition in self.partitions.covering(Signal::Metrics, start_ns, end_ns) {
            let searcher = partition.reader.searcher();
            let budget = MAX_POINTS.saturating_sub(scan.points.len());
            let (points, firsts, truncated) = searcher.search(&query, &MetricPoints { max_points: budget })?;
            scan.truncated |= truncated;
            for (series_id, addr) in firsts {
                if let std::collections::hash_map::Entry::Vacant(e) = scan.info.entry(series_id) {
                    e.insert(self.series_info(&searcher, series_id, addr)?);
                }
            }
            for p in &points {
                if let Some(info) = scan.info.get_mut(&p.series_id) {
                    info.points += 1;
                }
            }
            scan.points.extend(points);
        }
        Ok(scan)
    }

    /// Adds the gauge and sum series of the time-series store to `scan`, with their samples
    /// unless `with_samples` is false.
    fn scan_samples(
        &self,
        selector: &Selector,
        start_ns: i64,
        end_ns: i64,
        with_samples: bool,
        scan: &mut Scan,
    ) -> Result<(), QueryError> {
        let (start_ms, end_ms) = super::samples::ms_range(start_ns, end_ns);
        let matchers = super::samples::selector_matchers(selector);
        if !with_samples {
            for labels in self.tsdb.series_labels(&matchers, start_ms, end_ms) {
                let (series_id, info) = super::samples::series_info(&labels);
                scan.info.entry(series_id).or_insert(info);
            }
            return Ok(());
        }
        let budget = MAX_POINTS.saturating_sub(scan.points.len());
        let selection = self.tsdb.select(&matchers, start_ms, end_ms, budget)?;
        scan.truncated |= selection.truncated;
        for series in selection.series {
            let (series_id, mut info) = super::samples::series_info(&series.labels);
            // A series with documents too: gauges stored before the time-series store came
            // (an upgraded data directory), whose WAL replay also fills the store. A sample
            // at a millisecond the documents have is the same point.
            let documented: HashSet<i64> = if scan.info.contains_key(&series_id) {
                scan.points
                    .iter()
                    .filter(|p| p.series_id == series_id)
                    .map(|p| p.ts.div_euclid(1_000_000))
                    .collect()
            } else {
                HashSet::new()
            };
            let before = scan.points.len();
            scan.points
                .extend(
                    series
                        .samples
                        .into_iter()
                        .filter(|(t, _)| !documented.contains(t))
                        .map(|(t, value)| RawPoint {
                            series_id,
                            ts: t.saturating_mul(1_000_000),
                            value,
                        }),
                );
            info.points = (scan.points.len() - before + documented.len()) as u64;
            scan.info.insert(series_id, info);
        }
        Ok(())
    }

    fn series_info(&self, searcher: &Searcher, series_id: u64, addr: DocAddress) -> Result<SeriesInfo, QueryError> {
        let f = &self.schemas.metrics;
        let doc: TantivyDocument = searcher.doc(addr)?;
        let s = |field| doc.get_first(field).and_then(|v| v.as_str()).unwrap_or("").to_string();
        Ok(SeriesInfo {
            series_id: format!("{series_id:016x}"),
            name: s(f.name),
            labels: first_json(&doc, f.labels),
            kind: s(f.kind),
            temporality: s(f.temporality),
            monotonic: doc.get_first(f.monotonic).and_then(|v| v.as_bool()).unwrap_or(false),
            unit: s(f.unit),
            points: 0,
        })
    }

    /// Metric names stored in the partitions covering `[start, end]`, sorted, at most
    /// `limit`. Read from the term dictionaries and the time-series store's label index, so
    /// it costs nothing per point.
    pub(crate) fn metric_names(&self, start_ns: i64, end_ns: i64, limit: usize) -> Result<Vec<String>, QueryError> {
        let (start_ms, end_ms) = super::samples::ms_range(start_ns, end_ns);
        let mut names = self.tsdb.label_values(super::samples::NAME, start_ms, end_ms);
        for partition in self.partitions.covering(Signal::Metrics, start_ns, end_ns) {
            let searcher = partition.reader.searcher();
            for segment in searcher.segment_readers() {
                let index = segment.inverted_index(self.schemas.metrics.name)?;
                let mut terms = index.terms().stream().map_err(tantivy::TantivyError::from)?;
                while let Some((term, _)) = terms.next() {
                    names.insert(String::from_utf8_lossy(term).into_owned());
                }
            }
        }
        Ok(names.into_iter().take(limit).collect())
    }

    /// Series matching a selector that have points in `[start, end]`.
    pub(crate) fn metric_series(
        &self,
        selector: &Selector,
        start_ns: i64,
        end_ns: i64,
        limit: usize,
    ) -> Result<Vec<SeriesInfo>, QueryError> {
        let scan = self.scan(selector, start_ns, end_ns, true)?;
        let mut series: Vec<SeriesInfo> = scan.info.into_values().collect();
        series.sort_by(|a, b| (&a.name, a.labels.to_string()).cmp(&(&b.name, b.labels.to_string())));
        series.truncate(limit);
        Ok(series)
    }

    /// Values per step for every matching series. Monotonic sums are turned into
    /// per-second rates (cumulative: from the difference of successive points,
    /// with counter resets handled; delta: from each point's own interval).
    pub(crate) fn metric_query(&self, q: &MetricQuery) -> Result<MetricQueryResult, QueryError> {
        if q.step_ns <= 0 {
            return Err(QueryError::BadRequest("step must be positive".into()));
        }
        let steps = (q.end_ns - q.start_ns) / q.step_ns + 1;
        if steps > MAX_STEPS {
            return Err(QueryError::BadRequest(format!(
                "{steps} steps requested; at most {MAX_STEPS} (raise step)"
            )));
        }
        let scan = self.scan(&q.selector, q.start_ns, q.end_ns, true)?;
        let mut by_series: HashMap<u64, Vec<RawPoint>> = HashMap::new();
        for p in scan.points {
            by_series.entry(p.series_id).or_default().push(p);
        }
        let mut series = Vec::new();
        for (series_id, mut points) in by_series {
            let Some(info) = scan.info.get(&series_id) else {
                continue;
            };
            points.sort_by_key(|p| p.ts);
            // A staleness marker is the end of a series, not a value (nor a counter reset).
            points.retain(|p| !vigil_promql::is_stale(p.value));
            let rate = q.rate && info.kind == "sum" && info.monotonic;
            let samples: Vec<(i64, f64)> = if rate && info.temporality == "cumulative" {
                points
                    .windows(2)
                    .filter(|w| w[1].ts > w[0].ts)
                    .map(|w| {
                        let delta = if w[1].value >= w[0].value {
                            w[1].value - w[0].value
                        } else {
                            w[1].value
                        };
                        (w[1].ts, delta / ((w[1].ts - w[0].ts) as f64 / 1e9))
                    })
                    .collect()
            } else if rate {
                // Delta sums: the value covers one export interval; without its start
                // time here, spread it over the step.
                points
                    .iter()
                    .map(|p| (p.ts, p.value / (q.step_ns as f64 / 1e9)))
                    .collect()
            } else {
                points.iter().map(|p| (p.ts, p.value)).collect()
            };
            let mut buckets: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
            for (ts, v) in samples {
                if v.is_finite() {
                    buckets.entry((ts - q.start_ns) / q.step_ns).or_default().push(v);
                }
            }
            let agg = if rate && info.temporality == "delta" {
                Agg::Sum
            } else {
                q.agg
            };
            let values = buckets
                .into_iter()
                .map(|(i, vs)| ((q.start_ns + i * q.step_ns) / 1_000_000, agg.apply(&vs)))
                .collect();
            series.push(SeriesData {
                info: info.clone(),
                rate,
                values,
            });
        }
        series.sort_by_key(|a| a.info.labels.to_string());
        Ok(MetricQueryResult {
            step_ms: q.step_ns / 1_000_000,
            series,
            truncated: scan.truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_names_and_quoted_labels() {
        let s = Selector::parse(r#"http.server.duration{service.name="cart", route="/a,b", x=1}"#).expect("parse");
        assert_eq!(s.name.as_deref(), Some("http.server.duration"));
        assert_eq!(s.labels.get("route").map(String::as_str), Some("/a,b"));
        assert_eq!(s.labels.get("x").map(String::as_str), Some("1"));
        assert_eq!(s.labels.get("service.name").map(String::as_str), Some("cart"));
        assert!(Selector::parse("m{a=\"x}").is_err());
        assert!(Selector::parse("m{a=1").is_err());
        assert!(Selector::parse("").is_err());
    }

    #[test]
    fn aggregations() {
        let v = [1.0, 5.0, 3.0];
        assert_eq!(Agg::Avg.apply(&v), 3.0);
        assert_eq!(Agg::Min.apply(&v), 1.0);
        assert_eq!(Agg::Max.apply(&v), 5.0);
        assert_eq!(Agg::Sum.apply(&v), 9.0);
        assert_eq!(Agg::Last.apply(&v), 3.0);
        assert!(Agg::parse("p99").is_err());
    }
}
