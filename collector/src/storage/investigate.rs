//! What an investigation reads from the indexes: spans with their trace context, log
//! counts per minute from the columns, the window's warning lines with their trace ids,
//! and how many minutes of a range hold any data.

use std::collections::HashMap;

use tantivy::collector::{Collector, DocSetCollector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::query::{Query, RangeQuery};
use tantivy::schema::Value;
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader, TantivyDocument, Term};
use vigil_rca::{Input, LogCount, SpanRow, TimeRange, WindowLogLine};

use super::Store;
use super::collectors::TimeHistogram;
use super::search::{QueryError, and, time_range};
use crate::wal::Signal;

/// OTLP status code ERROR.
const STATUS_ERROR: i64 = 2;
/// OTLP severity number of WARN.
const SEVERITY_WARN: i64 = 13;

fn ns(ms: i64) -> i64 {
    ms.saturating_mul(1_000_000)
}

impl Store {
    /// Documents of `signal` in `range` (by event time).
    pub(crate) fn count_in(&self, signal: Signal, range: TimeRange) -> Result<u64, QueryError> {
        let field = match signal {
            Signal::Logs => self.schemas.logs.ts,
            Signal::Traces => self.schemas.spans.start_ts,
            Signal::Metrics => self.schemas.metrics.ts,
        };
        let query = time_range(field, ns(range.start_ms), ns(range.end_ms) - 1);
        let mut n = 0u64;
        for p in self.partitions.covering(signal, ns(range.start_ms), ns(range.end_ms)) {
            n += p.reader.searcher().search(&query, &tantivy::collector::Count)? as u64;
        }
        Ok(n)
    }

    /// How many whole minutes of `range` (counted from its start) hold a span or a log line.
    pub(crate) fn active_minutes(&self, range: TimeRange) -> Result<usize, QueryError> {
        let buckets = usize::try_from((range.len_ms() + 59_999) / 60_000).unwrap_or(0);
        if buckets == 0 {
            return Ok(0);
        }
        let mut total = vec![0u64; buckets];
        for (signal, field) in [
            (Signal::Logs, self.schemas.logs.ts),
            (Signal::Traces, self.schemas.spans.start_ts),
        ] {
            let query = time_range(field, ns(range.start_ms), ns(range.end_ms) - 1);
            let collector = TimeHistogram {
                field: "ts",
                start_ns: ns(range.start_ms),
                bucket_ns: 60_000_000_000,
                buckets,
            };
            for p in self.partitions.covering(signal, ns(range.start_ms), ns(range.end_ms)) {
                for (t, n) in total.iter_mut().zip(p.reader.searcher().search(&query, &collector)?) {
                    *t += n;
                }
            }
        }
        Ok(total.iter().filter(|&&n| n > 0).count())
    }

    /// Spans that started in `range`, at most `limit` (the first found when more).
    pub(crate) fn span_rows(&self, range: TimeRange, limit: usize) -> Result<(Vec<SpanRow>, bool), QueryError> {
        let f = &self.schemas.spans;
        let query = time_range(f.start_ts, ns(range.start_ms), ns(range.end_ms) - 1);
        let mut rows = Vec::new();
        let mut truncated = false;
        for p in self
            .partitions
            .covering(Signal::Traces, ns(range.start_ms), ns(range.end_ms))
        {
            let searcher = p.reader.searcher();
            for addr in searcher.search(&query, &DocSetCollector)? {
                if rows.len() >= limit {
                    truncated = true;
                    break;
                }
                let doc: TantivyDocument = searcher.doc(addr)?;
                let s = |field| doc.get_first(field).and_then(|v| v.as_str()).unwrap_or("").to_string();
                let i = |field| doc.get_first(field).and_then(|v| v.as_i64()).unwrap_or(0);
                let start_ns = i(f.start_ts);
                // Only client and producer spans name a callee.
                let peer = if matches!(i(f.kind), 3 | 4) {
                    peer_of(&super::search::first_json(&doc, f.attributes))
                } else {
                    String::new()
                };
                rows.push(SpanRow {
                    peer,
                    trace_id: s(f.trace_id),
                    span_id: s(f.span_id),
                    parent_span_id: s(f.parent_span_id),
                    service: s(f.service),
                    operation: s(f.name),
                    start_ns,
                    end_ns: start_ns + i(f.duration_ns).max(0),
                    error: i(f.status_code) == STATUS_ERROR,
                });
            }
        }
        Ok((rows, truncated))
    }

    /// Log lines of `range` counted per service, pattern, severity and minute (minutes as
    /// [`Input::minute_of`] numbers them for `window`), from the columns alone.
    pub(crate) fn log_counts(&self, range: TimeRange, window: TimeRange) -> Result<Vec<LogCount>, QueryError> {
        let query = time_range(self.schemas.logs.ts, ns(range.start_ms), ns(range.end_ms) - 1);
        let collector = LogMinutes { window };
        let mut merged: HashMap<(String, u64, i64, i64), u64> = HashMap::new();
        for p in self
            .partitions
            .covering(Signal::Logs, ns(range.start_ms), ns(range.end_ms))
        {
            for (k, n) in p.reader.searcher().search(&query, &collector)? {
                *merged.entry(k).or_default() += n;
            }
        }
        Ok(merged
            .into_iter()
            .map(|((service, pattern_id, severity, minute), count)| LogCount {
                minute,
                service,
                pattern_id,
                severity: i32::try_from(severity).unwrap_or(0),
                count,
            })
            .collect())
    }

    /// The window's warning-or-worse lines with their trace context, at most `limit`.
    pub(crate) fn warning_lines(&self, range: TimeRange, limit: usize) -> Result<Vec<WindowLogLine>, QueryError> {
        let f = &self.schemas.logs;
        let severe: Box<dyn Query> = Box::new(RangeQuery::new(
            std::ops::Bound::Included(Term::from_field_i64(f.severity_number, SEVERITY_WARN)),
            std::ops::Bound::Unbounded,
        ));
        let query = and(vec![time_range(f.ts, ns(range.start_ms), ns(range.end_ms) - 1), severe]);
        let mut out = Vec::new();
        for p in self
            .partitions
            .covering(Signal::Logs, ns(range.start_ms), ns(range.end_ms))
        {
            let searcher = p.reader.searcher();
            for addr in searcher.search(&query, &DocSetCollector)? {
                if out.len() >= limit {
                    return Ok(out);
                }
                let doc: TantivyDocument = searcher.doc(addr)?;
                let s = |field| doc.get_first(field).and_then(|v| v.as_str()).unwrap_or("").to_string();
                out.push(WindowLogLine {
                    ts_ns: doc.get_first(f.ts).and_then(|v| v.as_i64()).unwrap_or(0),
                    service: s(f.service),
                    pattern_id: doc.get_first(f.pattern_id).and_then(|v| v.as_u64()).unwrap_or(0),
                    severity: doc
                        .get_first(f.severity_number)
                        .and_then(|v| v.as_i64())
                        .and_then(|v| i32::try_from(v).ok())
                        .unwrap_or(0),
                    trace_id: s(f.trace_id),
                    span_id: s(f.span_id),
                });
            }
        }
        Ok(out)
    }
}

/// `peer.service` (or `service.peer.name`) from a span's stored attributes, whether the
/// JSON field kept the dotted key or expanded it into objects.
fn peer_of(attributes: &serde_json::Value) -> String {
    for key in ["peer.service", "service.peer.name"] {
        let flat = attributes.get(key);
        let nested = key.split('.').try_fold(attributes, |v, k| v.get(k));
        if let Some(name) = flat.or(nested).and_then(|v| v.as_str()) {
            return name.to_string();
        }
    }
    String::new()
}

/// Counts log lines per (service, pattern, severity, minute) from the fast fields.
struct LogMinutes {
    window: TimeRange,
}

struct LogMinutesSegment {
    window: TimeRange,
    ts: Column<i64>,
    service: Option<StrColumn>,
    pattern: Column<u64>,
    severity: Column<i64>,
    counts: HashMap<(u64, u64, i64, i64), u64>,
}

type LogMinutesFruit = HashMap<(String, u64, i64, i64), u64>;

impl Collector for LogMinutes {
    type Fruit = LogMinutesFruit;
    type Child = LogMinutesSegment;

    fn for_segment(&self, _: SegmentOrdinal, segment: &SegmentReader) -> tantivy::Result<LogMinutesSegment> {
        let ff = segment.fast_fields();
        Ok(LogMinutesSegment {
            window: self.window,
            ts: ff.i64("ts")?,
            service: ff.str("service")?,
            pattern: ff.u64("pattern_id")?,
            severity: ff.i64("severity_number")?,
            counts: HashMap::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<LogMinutesFruit>) -> tantivy::Result<LogMinutesFruit> {
        let mut out = LogMinutesFruit::new();
        for fruit in fruits {
            for (k, n) in fruit {
                *out.entry(k).or_default() += n;
            }
        }
        Ok(out)
    }
}

impl SegmentCollector for LogMinutesSegment {
    type Fruit = LogMinutesFruit;

    fn collect(&mut self, doc: DocId, _: Score) {
        let Some(ts) = self.ts.first(doc) else { return };
        // A line without a service counts under the empty name (ordinal u64::MAX).
        let service = self
            .service
            .as_ref()
            .and_then(|c| c.term_ords(doc).next())
            .unwrap_or(u64::MAX);
        let pattern = self.pattern.first(doc).unwrap_or(0);
        let severity = self.severity.first(doc).unwrap_or(0);
        let minute = Input::minute_of(self.window, ts);
        *self.counts.entry((service, pattern, severity, minute)).or_default() += 1;
    }

    fn harvest(self) -> LogMinutesFruit {
        let mut names: HashMap<u64, String> = HashMap::new();
        let mut out = LogMinutesFruit::with_capacity(self.counts.len());
        for ((ord, pattern, severity, minute), n) in self.counts {
            let name = names
                .entry(ord)
                .or_insert_with(|| {
                    let mut s = String::new();
                    if let Some(c) = &self.service
                        && ord != u64::MAX
                    {
                        let _ = c.ord_to_str(ord, &mut s);
                    }
                    s
                })
                .clone();
            *out.entry((name, pattern, severity, minute)).or_default() += n;
        }
        out
    }
}
