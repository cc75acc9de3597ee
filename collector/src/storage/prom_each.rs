//! PromQL's series-by-series selection: the series a selector matches handed over one at a
//! time, so that the engine's series-major evaluation (`rate`, `sum by (…) (rate(…))` over a
//! day of thousands of series) holds one series' samples, not the selection's.

use vigil_promql::{Labels, Matcher, Sample, Series};

use super::Store;
use super::metrics_query::{MAX_POINTS, Selector};
use super::prom::{matches_all, series_labels, served, term_filters, too_many_samples};
use super::samples;
use super::search::QueryError;

impl Store {
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
                for series in whole.into_iter().filter(|s| !s.samples.is_empty()) {
                    f(series)?;
                }
                continue;
            }
            let distributions: Vec<_> = documents.info.into_iter().filter(|(_, i)| served(i)).collect();
            if !distributions.is_empty() {
                let series = self
                    .distribution_series(&selector, distributions, matchers, start_ns, end_ns, true)
                    .map_err(promql_error)?;
                for s in series.into_iter().filter(|s| !s.samples.is_empty()) {
                    f(s)?;
                }
            }
            let planned = self.tsdb.plan(&samples::selector_matchers(&selector), start_ms, end_ms);
            let mut wanted: Vec<(Labels, &vigil_tsdb::PlannedSeries)> = planned
                .series()
                .iter()
                .filter_map(|s| {
                    let (_, info) = samples::series_info(&s.labels);
                    if !served(&info) {
                        return None;
                    }
                    let labels = series_labels(&info);
                    matches_all(matchers, &labels).then_some((labels, s))
                })
                .collect();
            wanted.sort_by(|a, b| a.0.cmp(&b.0));
            for (labels, s) in wanted {
                let samples: Vec<Sample> = planned
                    .read(s, start_ms, end_ms)
                    .map_err(|e| promql_error(e.into()))?
                    .into_iter()
                    .map(|(t, v)| Sample { t, v })
                    .collect();
                if !samples.is_empty() {
                    f(Series { labels, samples })?;
                }
            }
        }
        Ok(())
    }
}

/// A store error as the engine reports it: a refused selection is the query's fault.
pub(super) fn promql_error(e: QueryError) -> vigil_promql::Error {
    match e {
        QueryError::BadRequest(m) => vigil_promql::Error::Execution(m),
        other => vigil_promql::Error::Internal(other.to_string()),
    }
}
