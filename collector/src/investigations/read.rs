//! Where an investigation reads its rows. On one collector, its own indexes ([`Local`]); in a
//! cluster, every worker's (`cluster::investigate`), each asked the same [`Read`] over
//! `POST /api/v1/investigations/read` and the answers combined — so the ranking runs once,
//! over every service's rows, and a caller on one worker is weighed against its callee on
//! another exactly as on one collector.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use vigil_rca::{Candidate, EvidenceKind, LogCount, MetricSeries, SpanRow, TimeRange, WindowLogLine};

use crate::process::PatternCatalog;
use crate::storage::{Agg, LogQuery, MetricQuery, QueryError, Selector, Store};
use crate::wal::Signal;

/// Log-pattern evidence that gets its template and sample lines filled in.
const MAX_FILLED: usize = 20;

/// The rows an investigation reads (blocking calls: run off the reactor).
pub(crate) trait Reader: Send + Sync {
    /// How many minutes of `range` hold any data.
    fn active_minutes(&self, range: TimeRange) -> Result<usize, QueryError>;
    /// Spans stored in `range`.
    fn span_count(&self, range: TimeRange) -> Result<u64, QueryError>;
    /// Spans starting in `range`, at most `limit` (of each store); true when cut short.
    fn span_rows(&self, range: TimeRange, limit: usize) -> Result<(Vec<SpanRow>, bool), QueryError>;
    /// Log lines of `range` counted per minute (numbered from `window`'s start).
    fn log_counts(&self, range: TimeRange, window: TimeRange) -> Result<Vec<LogCount>, QueryError>;
    /// Warning-or-worse lines of `range`, at most `limit` (of each store).
    fn warning_lines(&self, range: TimeRange, limit: usize) -> Result<Vec<WindowLogLine>, QueryError>;
    /// Every series with a `service.name`, one mean per minute over both ranges.
    fn metric_series(&self, window: TimeRange, baseline: TimeRange) -> Result<Vec<MetricSeries>, QueryError>;
    /// Log-pattern evidence given its template and sample lines of the window, by the store
    /// that holds the service's lines (pattern ids are each store's own).
    fn fill_logs(&self, window: TimeRange, baseline: TimeRange, candidates: &mut [Candidate])
    -> Result<(), QueryError>;
}

/// One read, as a cluster's reader asks it of every worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "read", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Read {
    ActiveMinutes {
        range: TimeRange,
    },
    SpanCount {
        range: TimeRange,
    },
    SpanRows {
        range: TimeRange,
        limit: usize,
    },
    LogCounts {
        range: TimeRange,
        window: TimeRange,
    },
    WarningLines {
        range: TimeRange,
        limit: usize,
    },
    MetricSeries {
        window: TimeRange,
        baseline: TimeRange,
    },
    FillLogs {
        window: TimeRange,
        baseline: TimeRange,
        candidates: Vec<Candidate>,
    },
}

impl Read {
    /// What `reader` answers, as JSON (a worker's side of the wire).
    pub(crate) fn answer(self, reader: &dyn Reader) -> Result<Value, QueryError> {
        let json = |v: Result<Value, serde_json::Error>| v.map_err(|e| QueryError::Worker(e.to_string()));
        match self {
            Read::ActiveMinutes { range } => Ok(Value::from(reader.active_minutes(range)?)),
            Read::SpanCount { range } => Ok(Value::from(reader.span_count(range)?)),
            Read::SpanRows { range, limit } => json(serde_json::to_value(reader.span_rows(range, limit)?)),
            Read::LogCounts { range, window } => json(serde_json::to_value(reader.log_counts(range, window)?)),
            Read::WarningLines { range, limit } => json(serde_json::to_value(reader.warning_lines(range, limit)?)),
            Read::MetricSeries { window, baseline } => {
                json(serde_json::to_value(reader.metric_series(window, baseline)?))
            }
            Read::FillLogs {
                window,
                baseline,
                mut candidates,
            } => {
                reader.fill_logs(window, baseline, &mut candidates)?;
                json(serde_json::to_value(candidates))
            }
        }
    }
}

/// This collector's indexes and pattern catalog.
pub(crate) struct Local {
    pub store: Arc<Store>,
    pub patterns: Arc<PatternCatalog>,
}

impl Reader for Local {
    fn active_minutes(&self, range: TimeRange) -> Result<usize, QueryError> {
        self.store.active_minutes(range)
    }

    fn span_count(&self, range: TimeRange) -> Result<u64, QueryError> {
        self.store.count_in(Signal::Traces, range)
    }

    fn span_rows(&self, range: TimeRange, limit: usize) -> Result<(Vec<SpanRow>, bool), QueryError> {
        self.store.span_rows(range, limit)
    }

    fn log_counts(&self, range: TimeRange, window: TimeRange) -> Result<Vec<LogCount>, QueryError> {
        self.store.log_counts(range, window)
    }

    fn warning_lines(&self, range: TimeRange, limit: usize) -> Result<Vec<WindowLogLine>, QueryError> {
        self.store.warning_lines(range, limit)
    }

    fn metric_series(&self, window: TimeRange, baseline: TimeRange) -> Result<Vec<MetricSeries>, QueryError> {
        let start = window.start_ms.min(baseline.start_ms);
        let end = window.end_ms.max(baseline.end_ms);
        // Steps aligned to the window's start, so no step straddles its edge.
        let aligned = window.start_ms - (window.start_ms - start).div_euclid(60_000) * 60_000 - 60_000;
        let result = self.store.metric_query(&MetricQuery {
            selector: Selector::default(),
            start_ns: aligned.saturating_mul(1_000_000),
            end_ns: end.saturating_mul(1_000_000),
            step_ns: 60_000_000_000,
            agg: Agg::Avg,
            rate: true,
        })?;
        let mut out = Vec::new();
        for s in result.series {
            let Some(labels) = s.info.labels.as_object() else {
                continue;
            };
            let Some(service) = labels.get("service.name").and_then(|v| v.as_str()) else {
                continue;
            };
            let shown: Vec<String> = labels
                .iter()
                .filter(|(k, _)| *k != "service.name")
                .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), |s| format!("{s:?}"))))
                .collect();
            out.push(MetricSeries {
                service: service.to_string(),
                name: s.info.name.clone(),
                labels: shown.join(","),
                unit: if s.rate {
                    format!("{}/s", s.info.unit)
                } else {
                    s.info.unit.clone()
                },
                points: s.values,
            });
        }
        Ok(out)
    }

    fn fill_logs(
        &self,
        window: TimeRange,
        baseline: TimeRange,
        candidates: &mut [Candidate],
    ) -> Result<(), QueryError> {
        let mut filled = 0;
        for e in candidates.iter_mut().flat_map(|c| c.evidence.iter_mut()) {
            if !matches!(e.kind, EvidenceKind::LogPattern | EvidenceKind::LogPatternStopped) {
                continue;
            }
            if filled >= MAX_FILLED {
                break;
            }
            let pattern = e.pattern_id.unwrap_or(0);
            let lines = |start_ms: i64, end_ms: i64, limit: usize| {
                let q = LogQuery {
                    query: String::new(),
                    start_ns: start_ms.saturating_mul(1_000_000),
                    end_ns: end_ms.saturating_mul(1_000_000) - 1,
                    service: Some(e.service.clone()),
                    patterns: Some(self.patterns.ids_of(pattern)),
                };
                self.store.search_logs(&q, limit)
            };
            let samples: Vec<String> = lines(window.start_ms, window.end_ms, 3)?
                .hits
                .iter()
                .filter_map(|h| h.get("body").and_then(|b| b.as_str()).map(str::to_string))
                .collect();
            // Pattern ids are each store's own: only the store holding the service's lines
            // of that pattern names it (a pattern that stopped has none in the window).
            let first = baseline.start_ms.min(window.start_ms);
            if samples.is_empty() && lines(first, window.end_ms, 1)?.hits.is_empty() {
                continue;
            }
            filled += 1;
            e.template = self.patterns.info(pattern).map(|p| p.template);
            e.samples = samples;
        }
        Ok(())
    }
}
