//! Vigil's PromQL engine: Prometheus' query language, parsed by `promql-parser` and
//! evaluated here with Prometheus' semantics over any [`Storage`] — the collector's store in
//! production, a vector of series in tests. Pure: no I/O, no clock (the caller passes the
//! evaluation times and a deadline).
//!
//! Semantics follow Prometheus 2.x, the version Debian ships and the end-to-end tests compare
//! against: an instant selector takes each series' latest sample no older than the lookback
//! delta (5 min, both ends inclusive); a range selector takes the samples in `[t - range,
//! t]`; `rate`/`increase`/`delta` extrapolate to the window's edges as Prometheus does;
//! subqueries without a step use the default evaluation interval (1 min), aligned to
//! multiples of the step. A staleness marker ([`STALE_MARKER_BITS`]) ends a series: an
//! instant selector whose latest sample is one finds nothing, and range windows leave
//! markers out; a series that simply stops stays visible for the lookback delta.
//!
//! Entry points: [`instant_query`] and [`range_query`]; [`json`] writes answers in the
//! Prometheus HTTP API's format.

#![warn(missing_docs)]

mod aggregate;
mod binary;
mod eval;
mod functions;
pub mod json;
mod numeric;
mod plan;
mod query;
mod stream;
mod value;

#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;

pub use eval::{instant_query, range_query};
pub use promql_parser::label::{MatchOp, Matcher};
pub use value::{
    Error, Labels, METRIC_NAME, Options, STALE_MARKER_BITS, Sample, Series, Storage, Value, VectorElement, is_stale,
};

/// The matchers of a series selector such as `match[]` of `/api/v1/series`: one set per
/// `or` alternative, the metric name as a `__name__` matcher.
pub fn selector_matchers(text: &str) -> Result<Vec<Vec<Matcher>>, Error> {
    use promql_parser::parser::Expr;
    let expr = promql_parser::parser::parse(text)
        .map_err(|e| Error::BadData(format!("invalid parameter \"match[]\": {e}")))?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(Error::BadData(format!(
            "invalid parameter \"match[]\": {text:?} is not a series selector"
        )));
    };
    let name = vs.name.as_ref().map(|n| Matcher::new(MatchOp::Equal, METRIC_NAME, n));
    let mut sets = if vs.matchers.or_matchers.is_empty() {
        vec![vs.matchers.matchers.clone()]
    } else {
        vs.matchers.or_matchers.clone()
    };
    for set in &mut sets {
        set.extend(name.clone());
    }
    Ok(sets)
}

/// A duration parameter as Prometheus takes it: `1m30s`, or float seconds (`90`, `0.5`).
pub fn parse_duration_ms(text: &str) -> Result<i64, Error> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        if !seconds.is_finite() || seconds.abs() * 1000.0 > eval::MAX_ABS_MS as f64 {
            return Err(Error::BadData(format!("cannot parse {text:?} to a valid duration")));
        }
        return Ok((seconds * 1000.0).round() as i64);
    }
    promql_parser::util::parse_duration(text)
        .map(|d| eval::duration_ms(&d))
        .map_err(|e| Error::BadData(format!("cannot parse {text:?} to a valid duration: {e}")))
}
