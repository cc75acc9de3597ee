//! Log search, log histograms, traces and the service list.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use serde::Serialize;
use serde_json::{Map, Value as Json};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, Query, QueryParser, RangeQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, OwnedValue, Value};
use tantivy::tokenizer::TokenizerManager;
use tantivy::{DocAddress, Order, Searcher, TantivyDocument, Term};

use super::Store;
use super::collectors::{CountByStr, CountByU64, TimeHistogram};
use crate::timeutil::format_ns;
use crate::wal::Signal;

/// Errors of the query side; `BadRequest` becomes HTTP 400 with the message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QueryError {
    #[error("{0}")]
    BadRequest(String),
    #[error("search failed: {0}")]
    Internal(tantivy::TantivyError),
    #[error("time-series store: {0}")]
    Samples(#[from] vigil_tsdb::Error),
    /// A cluster's worker, asked for its share of the rows, failed or did not answer.
    #[error("{0}")]
    Worker(String),
}

impl From<tantivy::TantivyError> for QueryError {
    fn from(e: tantivy::TantivyError) -> QueryError {
        match e {
            // Raised for queries the index cannot run as asked: the user's to fix.
            tantivy::TantivyError::InvalidArgument(m) => QueryError::BadRequest(format!("unsupported query: {m}")),
            other => QueryError::Internal(other),
        }
    }
}

/// Filters shared by log search and the log histogram.
#[derive(Debug, Clone)]
pub(crate) struct LogQuery {
    /// tantivy query syntax; empty or `*` matches everything.
    pub query: String,
    pub start_ns: i64,
    pub end_ns: i64,
    pub service: Option<String>,
    /// Only records carrying one of these pattern ids (a pattern and the ids merged into it,
    /// from the catalogue's `ids_of`; none at all matches nothing); `None`: every pattern.
    pub patterns: Option<Vec<u64>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct LogHits {
    /// Matching records in the time range (not only the returned ones).
    pub total: u64,
    pub hits: Vec<Json>,
}

#[derive(Debug, Serialize)]
pub(crate) struct HistogramBucket {
    /// Bucket start, unix ms.
    pub start_ms: i64,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct PatternSummary {
    pub pattern_id: u64,
    /// `None` when the pattern has been evicted from the miner since.
    pub template: Option<String>,
    /// Records in the queried range.
    pub count: u64,
    pub first_seen: Option<String>,
    /// First seen inside the queried range.
    pub is_new: bool,
    /// The newest matching body.
    pub sample: Option<Json>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ServiceSummary {
    pub name: String,
    pub spans: u64,
    pub logs: u64,
}

pub(crate) fn term_query(field: Field, text: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_text(field, text),
        IndexRecordOption::Basic,
    ))
}

fn pattern_query(field: Field, ids: &[u64]) -> Box<dyn Query> {
    let terms: Vec<Term> = ids.iter().map(|id| Term::from_field_u64(field, *id)).collect();
    match terms.as_slice() {
        [one] => Box::new(TermQuery::new(one.clone(), IndexRecordOption::Basic)),
        _ => Box::new(tantivy::query::TermSetQuery::new(terms)),
    }
}

pub(crate) fn time_range(field: Field, start_ns: i64, end_ns: i64) -> Box<dyn Query> {
    Box::new(RangeQuery::new(
        Bound::Included(Term::from_field_i64(field, start_ns)),
        Bound::Included(Term::from_field_i64(field, end_ns)),
    ))
}

pub(crate) fn and(queries: Vec<Box<dyn Query>>) -> Box<dyn Query> {
    Box::new(BooleanQuery::intersection(queries))
}

fn first_str(doc: &TantivyDocument, field: Field) -> Option<&str> {
    doc.get_first(field).and_then(|v| v.as_str())
}

fn first_i64(doc: &TantivyDocument, field: Field) -> Option<i64> {
    doc.get_first(field).and_then(|v| v.as_i64())
}

fn first_u64(doc: &TantivyDocument, field: Field) -> Option<u64> {
    doc.get_first(field).and_then(|v| v.as_u64())
}

/// A stored JSON field as a JSON value (an empty object when absent).
pub(crate) fn first_json(doc: &TantivyDocument, field: Field) -> Json {
    match doc.get_first(field).map(OwnedValue::from) {
        Some(v @ OwnedValue::Object(_)) => serde_json::to_value(&v).unwrap_or(Json::Null),
        _ => Json::Object(Map::new()),
    }
}

impl Store {
    fn parse_log_query(&self, text: &str) -> Result<Box<dyn Query>, QueryError> {
        let text = text.trim();
        if text.is_empty() || text == "*" {
            return Ok(Box::new(AllQuery));
        }
        let f = &self.schemas.logs;
        let mut parser = QueryParser::new(f.schema.clone(), vec![f.body], TokenizerManager::default());
        parser.set_conjunction_by_default();
        parser
            .parse_query(text)
            .map_err(|e| QueryError::BadRequest(format!("invalid query {text:?}: {e}")))
    }

    /// The conditions of a log query other than its time range (the windowed search
    /// varies the range and reuses these), validated once.
    fn log_conditions(&self, q: &LogQuery) -> Result<Vec<Box<dyn Query>>, QueryError> {
        if q.start_ns > q.end_ns {
            return Err(QueryError::BadRequest("start is after end".into()));
        }
        let f = &self.schemas.logs;
        let mut parts = vec![self.parse_log_query(&q.query)?];
        if let Some(service) = q.service.as_deref().filter(|s| !s.is_empty()) {
            parts.push(term_query(f.service, service));
        }
        if let Some(patterns) = &q.patterns {
            parts.push(pattern_query(f.pattern_id, patterns));
        }
        Ok(parts)
    }

    /// `conditions` restricted to `[start_ns, end_ns]`.
    fn in_range(&self, conditions: &[Box<dyn Query>], start_ns: i64, end_ns: i64) -> Box<dyn Query> {
        let mut parts: Vec<Box<dyn Query>> = conditions.iter().map(|c| c.box_clone()).collect();
        parts.push(time_range(self.schemas.logs.ts, start_ns, end_ns));
        and(parts)
    }

    fn log_filter(&self, q: &LogQuery) -> Result<Box<dyn Query>, QueryError> {
        Ok(self.in_range(&self.log_conditions(q)?, q.start_ns, q.end_ns))
    }

    fn log_searchers(&self, q: &LogQuery) -> Vec<Searcher> {
        self.partitions
            .covering(Signal::Logs, q.start_ns, q.end_ns)
            .iter()
            .map(|p| p.reader.searcher())
            .collect()
    }

    /// Newest first, with the total number of matches.
    pub(crate) fn search_logs(&self, q: &LogQuery, limit: usize) -> Result<LogHits, QueryError> {
        let conditions = self.log_conditions(q)?;
        let query = self.in_range(&conditions, q.start_ns, q.end_ns);
        let searchers = self.log_searchers(q);
        let mut total = 0u64;
        for searcher in &searchers {
            total += searcher.search(&query, &Count)? as u64;
        }
        let hits = self.newest_logs(&searchers, &conditions, q, total, limit)?;
        Ok(LogHits { total, hits })
    }

    /// The newest `limit` of the `total` records matching `conditions` in `q`'s range.
    ///
    /// Sorting every match by time is what makes a broad query slow on a big index,
    /// so they are looked for in a time window ending at the newest document, widened
    /// eightfold until it holds enough hits or the whole range. `total` (counted by
    /// the caller, cheaply) tells when enough is all there is.
    fn newest_logs(
        &self,
        searchers: &[Searcher],
        conditions: &[Box<dyn Query>],
        q: &LogQuery,
        total: u64,
        limit: usize,
    ) -> Result<Vec<Json>, QueryError> {
        if total == 0 || limit == 0 {
            return Ok(Vec::new());
        }
        // Column maxima are O(1): the newest timestamp present, without a scan.
        let newest = searchers
            .iter()
            .flat_map(|s| s.segment_readers().iter())
            .filter_map(|r| r.fast_fields().i64("ts").ok().map(|c| c.max_value()))
            .max()
            .unwrap_or(q.end_ns)
            .min(q.end_ns);
        let wanted = usize::try_from(total).unwrap_or(usize::MAX).min(limit);
        let mut window: i64 = 1_000_000_000;
        // (ts, searcher index, address) over all partitions, then the newest `limit`.
        let mut candidates: Vec<(i64, usize, DocAddress)> = Vec::new();
        loop {
            let low = newest.saturating_sub(window).max(q.start_ns);
            let windowed = self.in_range(conditions, low, q.end_ns);
            candidates.clear();
            for (i, searcher) in searchers.iter().enumerate() {
                let top = TopDocs::with_limit(limit).order_by_fast_field::<i64>("ts", Order::Desc);
                let top = searcher.search(&windowed, &top)?;
                candidates.extend(top.into_iter().map(|(ts, addr)| (ts.unwrap_or(0), i, addr)));
            }
            if candidates.len() >= wanted || low <= q.start_ns {
                break;
            }
            window = window.saturating_mul(8);
        }
        candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
        candidates.truncate(limit);
        let mut hits = Vec::with_capacity(candidates.len());
        for (_, i, addr) in candidates {
            let doc: TantivyDocument = searchers[i].doc(addr)?;
            hits.push(self.log_to_json(&doc));
        }
        Ok(hits)
    }

    /// Counts per bucket of `bucket_ns` over `[start, end]`.
    pub(crate) fn log_histogram(&self, q: &LogQuery, bucket_ns: i64) -> Result<Vec<HistogramBucket>, QueryError> {
        let query = self.log_filter(q)?;
        if bucket_ns <= 0 {
            return Err(QueryError::BadRequest("interval must be positive".into()));
        }
        let span = q.end_ns.saturating_sub(q.start_ns).saturating_add(1);
        let buckets = usize::try_from(span.div_euclid(bucket_ns) + 1).unwrap_or(usize::MAX);
        if buckets > 10_000 {
            return Err(QueryError::BadRequest(format!(
                "{buckets} buckets requested; at most 10000 (widen the interval or narrow the range)"
            )));
        }
        let collector = TimeHistogram {
            field: "ts",
            start_ns: q.start_ns,
            bucket_ns,
            buckets,
        };
        let mut counts = vec![0u64; buckets];
        for partition in self.partitions.covering(Signal::Logs, q.start_ns, q.end_ns) {
            let part = partition.reader.searcher().search(&query, &collector)?;
            for (c, p) in counts.iter_mut().zip(part) {
                *c += p;
            }
        }
        Ok(counts
            .into_iter()
            .enumerate()
            .map(|(i, count)| HistogramBucket {
                start_ms: (q.start_ns + i as i64 * bucket_ns).div_euclid(1_000_000),
                count,
            })
            .collect())
    }

    fn log_to_json(&self, doc: &TantivyDocument) -> Json {
        let f = &self.schemas.logs;
        let ts = first_i64(doc, f.ts).unwrap_or(0);
        let observed = first_i64(doc, f.observed_ts).unwrap_or(0);
        let body = match first_json(doc, f.body_structured) {
            Json::Object(mut m) if m.contains_key("value") => m.remove("value").unwrap_or(Json::Null),
            _ => first_str(doc, f.body).map_or(Json::Null, |s| Json::String(s.to_string())),
        };
        serde_json::json!({
            "timestamp": format_ns(ts),
            "time_unix_nano": ts.to_string(),
            "observed_time_unix_nano": observed.to_string(),
            "severity_number": first_i64(doc, f.severity_number).unwrap_or(0),
            "severity_text": first_str(doc, f.severity_text).unwrap_or(""),
            "service": first_str(doc, f.service).unwrap_or(""),
            "host": first_str(doc, f.host),
            "body": body,
            "attributes": first_json(doc, f.attributes),
            "resource": first_json(doc, f.resource),
            "trace_id": first_str(doc, f.trace_id),
            "span_id": first_str(doc, f.span_id),
            "scope": first_str(doc, f.scope).unwrap_or(""),
            "event_name": first_str(doc, f.event_name),
            "flags": first_u64(doc, f.flags).unwrap_or(0),
            "dropped_attributes_count": first_u64(doc, f.dropped_attributes).unwrap_or(0),
            "pattern_id": first_u64(doc, f.pattern_id),
        })
    }

    /// Log patterns of the records matching `q`, most frequent first: counts in the
    /// range, the template as it stands now, when the pattern was first seen, whether
    /// that was inside the range ("new"), and the newest sample line.
    /// `describe` gives the id a pattern goes by now, its template and first sighting (ns),
    /// from the catalogue that assigned the ids: records of patterns merged since count as
    /// the pattern they became.
    pub(crate) fn log_patterns(
        &self,
        q: &LogQuery,
        limit: usize,
        describe: &dyn Fn(u64) -> Option<(u64, String, i64)>,
    ) -> Result<Vec<PatternSummary>, QueryError> {
        let conditions = self.log_conditions(q)?;
        let query = self.in_range(&conditions, q.start_ns, q.end_ns);
        let searchers = self.log_searchers(q);
        let mut counts: HashMap<u64, u64> = HashMap::new();
        for searcher in &searchers {
            for (id, n) in searcher.search(&query, &CountByU64("pattern_id"))? {
                *counts.entry(id).or_default() += n;
            }
        }
        // id now -> (count, ids seen, template, first sighting)
        type Merged = (u64, Vec<u64>, Option<String>, Option<i64>);
        let mut merged: HashMap<u64, Merged> = HashMap::new();
        for (id, n) in counts {
            let (now, template, first) = describe(id).map_or((id, None, None), |(now, t, s)| (now, Some(t), Some(s)));
            let entry = merged.entry(now).or_insert((0, Vec::new(), template, first));
            entry.0 += n;
            entry.1.push(id);
        }
        let mut ranked: Vec<(u64, Merged)> = merged.into_iter().collect();
        ranked.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(&b.0)));
        ranked.truncate(limit);
        let mut out = Vec::with_capacity(ranked.len());
        for (id, (count, ids, template, first_seen_ns)) in ranked {
            // The pattern's count is known: no second counting pass for its sample.
            let mut with_pattern: Vec<Box<dyn Query>> = conditions.iter().map(|c| c.box_clone()).collect();
            with_pattern.push(pattern_query(self.schemas.logs.pattern_id, &ids));
            let sample = self
                .newest_logs(&searchers, &with_pattern, q, count, 1)?
                .into_iter()
                .next()
                .and_then(|h| h.get("body").cloned());
            out.push(PatternSummary {
                pattern_id: id,
                template,
                count,
                first_seen: first_seen_ns.map(format_ns),
                is_new: first_seen_ns.is_some_and(|t| t >= q.start_ns),
                sample,
            });
        }
        Ok(out)
    }

    /// All spans of a trace, by start time. `trace_id` is 32 hex digits.
    pub(crate) fn trace(&self, trace_id: &str) -> Result<Vec<Json>, QueryError> {
        let trace_id = trace_id.to_ascii_lowercase();
        if trace_id.len() != 32 || !trace_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(QueryError::BadRequest(format!(
                "trace id {trace_id:?} is not 32 hex digits"
            )));
        }
        let f = &self.schemas.spans;
        let query = term_query(f.trace_id, &trace_id);
        let mut spans: Vec<(i64, Json)> = Vec::new();
        for partition in self.partitions.covering(Signal::Traces, i64::MIN, i64::MAX) {
            let searcher = partition.reader.searcher();
            let top = searcher.search(
                &query,
                &TopDocs::with_limit(100_000).order_by_fast_field::<i64>("ts", Order::Asc),
            )?;
            for (ts, addr) in top {
                let doc: TantivyDocument = searcher.doc(addr)?;
                spans.push((ts.unwrap_or(0), self.span_to_json(&doc)));
            }
        }
        spans.sort_by_key(|(ts, _)| *ts);
        Ok(spans.into_iter().map(|(_, j)| j).collect())
    }

    fn span_to_json(&self, doc: &TantivyDocument) -> Json {
        let f = &self.schemas.spans;
        let start = first_i64(doc, f.start_ts).unwrap_or(0);
        let end = first_i64(doc, f.end_ts).unwrap_or(start);
        let extra = first_json(doc, f.extra);
        serde_json::json!({
            "trace_id": first_str(doc, f.trace_id).unwrap_or(""),
            "span_id": first_str(doc, f.span_id).unwrap_or(""),
            "parent_span_id": first_str(doc, f.parent_span_id),
            "trace_state": first_str(doc, f.trace_state),
            "service": first_str(doc, f.service).unwrap_or(""),
            "name": first_str(doc, f.name).unwrap_or(""),
            "kind": first_i64(doc, f.kind).unwrap_or(0),
            "start": format_ns(start),
            "start_time_unix_nano": start.to_string(),
            "end_time_unix_nano": end.to_string(),
            "duration_ns": first_i64(doc, f.duration_ns).unwrap_or(0),
            "status": {
                "code": first_i64(doc, f.status_code).unwrap_or(0),
                "message": first_str(doc, f.status_message).unwrap_or(""),
            },
            "attributes": first_json(doc, f.attributes),
            "resource": first_json(doc, f.resource),
            "scope": first_str(doc, f.scope).unwrap_or(""),
            "events": extra.get("events").cloned().unwrap_or(Json::Array(vec![])),
            "links": extra.get("links").cloned().unwrap_or(Json::Array(vec![])),
            "dropped_attributes_count": extra.get("dropped_attributes_count").cloned().unwrap_or(Json::from(0)),
            "flags": first_u64(doc, f.flags).unwrap_or(0),
        })
    }

    /// Services seen in spans and logs over `[start, end]`, with their counts.
    pub(crate) fn services(&self, start_ns: i64, end_ns: i64) -> Result<Vec<ServiceSummary>, QueryError> {
        let mut by_name: BTreeMap<String, ServiceSummary> = BTreeMap::new();
        for (signal, field) in [
            (Signal::Traces, self.schemas.spans.start_ts),
            (Signal::Logs, self.schemas.logs.ts),
        ] {
            let query = time_range(field, start_ns, end_ns);
            for partition in self.partitions.covering(signal, start_ns, end_ns) {
                let counts = partition.reader.searcher().search(&query, &CountByStr("service"))?;
                for (name, n) in counts {
                    let entry = by_name.entry(name.clone()).or_insert(ServiceSummary {
                        name,
                        spans: 0,
                        logs: 0,
                    });
                    match signal {
                        Signal::Traces => entry.spans += n,
                        _ => entry.logs += n,
                    }
                }
            }
        }
        Ok(by_name.into_values().collect())
    }
}
