//! The tantivy schemas of the three signals. Field names are part of the query
//! language users type (`service:checkout AND attributes.http.method:POST`), so they
//! are short and stable.

use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, JsonObjectOptions, STORED, STRING, Schema, TEXT, TextFieldIndexing,
};

fn json_searchable() -> JsonObjectOptions {
    JsonObjectOptions::default()
        .set_stored()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("default")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        // `attributes.http.method:GET` finds the key "http.method".
        .set_expand_dots_enabled()
        // Columnar values make range queries work (`attributes.status:[500 TO 599]`).
        .set_fast("raw")
}

fn json_stored_only() -> JsonObjectOptions {
    JsonObjectOptions::default().set_stored()
}

/// Log records.
#[derive(Clone)]
pub struct LogFields {
    pub schema: Schema,
    /// Event time, unix ns (the record's time, or its observed time when unset).
    pub ts: Field,
    pub observed_ts: Field,
    pub severity_number: Field,
    pub severity_text: Field,
    pub service: Field,
    pub host: Field,
    /// Full text of the body (structured bodies rendered as JSON).
    pub body: Field,
    /// The body as sent when it was structured (map or array).
    pub body_structured: Field,
    pub attributes: Field,
    pub resource: Field,
    pub trace_id: Field,
    pub span_id: Field,
    pub scope: Field,
    pub event_name: Field,
    pub flags: Field,
    pub dropped_attributes: Field,
    /// The log pattern (template group) the body belongs to.
    pub pattern_id: Field,
}

impl Default for LogFields {
    fn default() -> Self {
        Self::new()
    }
}

impl LogFields {
    pub fn new() -> LogFields {
        let mut b = Schema::builder();
        LogFields {
            ts: b.add_i64_field("ts", INDEXED | FAST | STORED),
            observed_ts: b.add_i64_field("observed_ts", STORED),
            severity_number: b.add_i64_field("severity_number", INDEXED | FAST | STORED),
            severity_text: b.add_text_field("severity_text", STRING | STORED),
            service: b.add_text_field("service", STRING | FAST | STORED),
            host: b.add_text_field("host", STRING | STORED),
            body: b.add_text_field("body", TEXT | STORED),
            body_structured: b.add_json_field("body_structured", json_stored_only()),
            attributes: b.add_json_field("attributes", json_searchable()),
            resource: b.add_json_field("resource", json_searchable()),
            trace_id: b.add_text_field("trace_id", STRING | STORED),
            span_id: b.add_text_field("span_id", STRING | STORED),
            scope: b.add_text_field("scope", STRING | STORED),
            event_name: b.add_text_field("event_name", STRING | STORED),
            flags: b.add_u64_field("flags", STORED),
            dropped_attributes: b.add_u64_field("dropped_attributes_count", STORED),
            pattern_id: b.add_u64_field("pattern_id", INDEXED | FAST | STORED),
            schema: b.build(),
        }
    }
}

/// Spans.
#[derive(Clone)]
pub(crate) struct SpanFields {
    pub schema: Schema,
    pub trace_id: Field,
    pub span_id: Field,
    pub parent_span_id: Field,
    pub trace_state: Field,
    pub service: Field,
    pub name: Field,
    pub kind: Field,
    /// Start time, unix ns; the partitioning time of a span.
    pub start_ts: Field,
    pub end_ts: Field,
    pub duration_ns: Field,
    pub status_code: Field,
    pub status_message: Field,
    pub attributes: Field,
    pub resource: Field,
    pub scope: Field,
    /// Events and links, stored for display: `{"events": [...], "links": [...]}`.
    pub extra: Field,
    pub flags: Field,
}

impl Default for SpanFields {
    fn default() -> Self {
        Self::new()
    }
}

impl SpanFields {
    pub(crate) fn new() -> SpanFields {
        let mut b = Schema::builder();
        SpanFields {
            trace_id: b.add_text_field("trace_id", STRING | STORED),
            span_id: b.add_text_field("span_id", STRING | STORED),
            parent_span_id: b.add_text_field("parent_span_id", STRING | STORED),
            trace_state: b.add_text_field("trace_state", STORED),
            service: b.add_text_field("service", STRING | FAST | STORED),
            name: b.add_text_field("name", STRING | FAST | STORED),
            kind: b.add_i64_field("kind", INDEXED | STORED),
            start_ts: b.add_i64_field("ts", INDEXED | FAST | STORED),
            end_ts: b.add_i64_field("end_ts", STORED),
            duration_ns: b.add_i64_field("duration_ns", INDEXED | FAST | STORED),
            status_code: b.add_i64_field("status_code", INDEXED | FAST | STORED),
            status_message: b.add_text_field("status_message", TEXT | STORED),
            attributes: b.add_json_field("attributes", json_searchable()),
            resource: b.add_json_field("resource", json_searchable()),
            scope: b.add_text_field("scope", STRING | STORED),
            extra: b.add_json_field("extra", json_stored_only()),
            flags: b.add_u64_field("flags", STORED),
            schema: b.build(),
        }
    }
}

/// Metric data points.
#[derive(Clone)]
pub(crate) struct MetricFields {
    pub schema: Schema,
    pub name: Field,
    /// Stable hash of the name and the sorted labels.
    pub series_id: Field,
    pub labels: Field,
    /// `key=value` terms, one per label, for exact label matching.
    pub label_pairs: Field,
    pub ts: Field,
    pub start_ts: Field,
    /// Gauge or sum value; for histograms and summaries, sum / count.
    pub value: Field,
    /// `gauge`, `sum`, `histogram`, `exponential_histogram`, `summary`.
    pub kind: Field,
    /// `cumulative`, `delta`, or empty for gauges and summaries.
    pub temporality: Field,
    pub monotonic: Field,
    pub count: Field,
    pub sum: Field,
    /// Buckets, quantiles, min, max: stored for display.
    pub detail: Field,
    pub unit: Field,
    pub resource: Field,
}

impl Default for MetricFields {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricFields {
    pub(crate) fn new() -> MetricFields {
        let mut b = Schema::builder();
        MetricFields {
            name: b.add_text_field("name", STRING | FAST | STORED),
            series_id: b.add_u64_field("series_id", INDEXED | FAST | STORED),
            labels: b.add_json_field("labels", json_stored_only()),
            label_pairs: b.add_text_field("label_pairs", STRING),
            ts: b.add_i64_field("ts", INDEXED | FAST | STORED),
            start_ts: b.add_i64_field("start_ts", STORED),
            value: b.add_f64_field("value", FAST | STORED),
            kind: b.add_text_field("kind", STRING | STORED),
            temporality: b.add_text_field("temporality", STRING | STORED),
            monotonic: b.add_bool_field("monotonic", STORED),
            count: b.add_u64_field("count", STORED),
            sum: b.add_f64_field("sum", STORED),
            detail: b.add_json_field("detail", json_stored_only()),
            unit: b.add_text_field("unit", STORED),
            resource: b.add_json_field("resource", json_stored_only()),
            schema: b.build(),
        }
    }
}

/// All three schemas.
#[derive(Clone)]
pub(crate) struct Schemas {
    pub logs: LogFields,
    pub spans: SpanFields,
    pub metrics: MetricFields,
}

impl Schemas {
    pub(crate) fn new() -> Schemas {
        Schemas {
            logs: LogFields::new(),
            spans: SpanFields::new(),
            metrics: MetricFields::new(),
        }
    }
}

impl Default for Schemas {
    fn default() -> Self {
        Schemas::new()
    }
}
