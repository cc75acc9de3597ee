//! A correlator's investigations read every worker's rows. Each read
//! ([`investigations::Read`](crate::investigations::Read)) is asked of all workers at once
//! and their answers combined — rows and counts concatenated, span totals summed, the
//! minutes holding data taken from the busiest worker — and the ranking runs once over the
//! whole, so a caller on one worker is weighed against its callee on another as on one
//! collector. Log-pattern evidence is filled in by the worker that holds the service's lines
//! (pattern ids are each worker's own).
//!
//! The engine's reads are blocking calls made off the reactor (the API's blocking pool, the
//! incident investigator's `spawn_blocking`): each blocks its thread on the runtime.

use std::sync::Arc;

use axum::http::HeaderValue;
use serde::de::DeserializeOwned;
use vigil_rca::{Candidate, LogCount, MetricSeries, SpanRow, TimeRange, WindowLogLine};

use super::root::{Root, post_to_workers};
use crate::investigations::{Read, Reader};
use crate::storage::QueryError;

/// The cluster's workers as an investigation's rows.
pub(crate) struct WorkerRows {
    root: Arc<Root>,
    /// The API token the workers ask for (the cluster's nodes share one), if any.
    authorization: Option<HeaderValue>,
    runtime: tokio::runtime::Handle,
}

impl WorkerRows {
    pub(crate) fn new(root: Arc<Root>, api_token: Option<&str>) -> anyhow::Result<WorkerRows> {
        let authorization = api_token
            .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
            .transpose()
            .map_err(|_| anyhow::anyhow!("auth.api_token: not a valid header value"))?;
        Ok(WorkerRows {
            root,
            authorization,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Every worker's answer to `read`.
    fn each<T: DeserializeOwned>(&self, read: &Read) -> Result<Vec<T>, QueryError> {
        let body = serde_json::to_vec(read).map_err(|e| QueryError::Worker(e.to_string()))?;
        let answers = self
            .runtime
            .block_on(post_to_workers(
                &self.root,
                "/api/v1/investigations/read",
                body,
                self.authorization.clone(),
            ))
            .map_err(|e| QueryError::Worker(e.message().to_string()))?;
        answers
            .into_iter()
            .map(|a| serde_json::from_value(a).map_err(|e| QueryError::Worker(format!("a worker's rows: {e}"))))
            .collect()
    }

    fn concat<T: DeserializeOwned>(&self, read: &Read) -> Result<Vec<T>, QueryError> {
        Ok(self.each::<Vec<T>>(read)?.into_iter().flatten().collect())
    }
}

impl Reader for WorkerRows {
    fn active_minutes(&self, range: TimeRange) -> Result<usize, QueryError> {
        Ok(self
            .each::<usize>(&Read::ActiveMinutes { range })?
            .into_iter()
            .max()
            .unwrap_or(0))
    }

    fn span_count(&self, range: TimeRange) -> Result<u64, QueryError> {
        Ok(self.each::<u64>(&Read::SpanCount { range })?.into_iter().sum())
    }

    fn span_rows(&self, range: TimeRange, limit: usize) -> Result<(Vec<SpanRow>, bool), QueryError> {
        let mut rows = Vec::new();
        let mut cut = false;
        for (part, part_cut) in self.each::<(Vec<SpanRow>, bool)>(&Read::SpanRows { range, limit })? {
            rows.extend(part);
            cut |= part_cut;
        }
        Ok((rows, cut))
    }

    fn log_counts(&self, range: TimeRange, window: TimeRange) -> Result<Vec<LogCount>, QueryError> {
        self.concat(&Read::LogCounts { range, window })
    }

    fn warning_lines(&self, range: TimeRange, limit: usize) -> Result<Vec<WindowLogLine>, QueryError> {
        self.concat(&Read::WarningLines { range, limit })
    }

    fn metric_series(&self, window: TimeRange, baseline: TimeRange) -> Result<Vec<MetricSeries>, QueryError> {
        self.concat(&Read::MetricSeries { window, baseline })
    }

    fn fill_logs(
        &self,
        window: TimeRange,
        baseline: TimeRange,
        candidates: &mut [Candidate],
    ) -> Result<(), QueryError> {
        let read = Read::FillLogs {
            window,
            baseline,
            candidates: candidates.to_vec(),
        };
        for filled in self.each::<Vec<Candidate>>(&read)? {
            take_filled(candidates, filled);
        }
        Ok(())
    }
}

/// Templates and samples one worker filled in, where no other worker had.
fn take_filled(candidates: &mut [Candidate], filled: Vec<Candidate>) {
    for (c, f) in candidates.iter_mut().zip(filled) {
        for (e, f) in c.evidence.iter_mut().zip(f.evidence) {
            if e.template.is_none() && f.template.is_some() {
                e.template = f.template;
                e.samples = f.samples;
            }
        }
    }
}

/// How the answers are read back, checked without a cluster.
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_evidence_takes_the_template_of_the_worker_that_holds_its_lines() {
        let candidate = |template: Option<&str>, samples: &[&str]| -> Candidate {
            serde_json::from_value(json!({
                "service": "cart", "score": 1.0, "reasons": [],
                "evidence": [{
                    "service": "cart", "kind": "log_pattern", "signal": "log pattern 7",
                    "before": 0.0, "after": 5.0, "unit": "lines/min", "strength": 4.0,
                    "sentence": "a new error line", "pattern_id": 7,
                    "template": template, "samples": samples,
                }]
            }))
            .expect("a candidate")
        };
        let mut asked = vec![candidate(None, &[])];
        take_filled(&mut asked, vec![candidate(None, &[])]);
        assert_eq!(
            asked[0].evidence[0].template, None,
            "a worker without the lines fills nothing"
        );
        take_filled(&mut asked, vec![candidate(Some("cart <*> failed"), &["cart 1 failed"])]);
        take_filled(&mut asked, vec![candidate(Some("another <*>"), &["x"])]);
        assert_eq!(asked[0].evidence[0].template.as_deref(), Some("cart <*> failed"));
        assert_eq!(asked[0].evidence[0].samples, vec!["cart 1 failed".to_string()]);
    }
}
