//! What a Prometheus API request asks: its parameters (query string, then a form body), its
//! times, the engine's options, and the lookback a query over downsampled days needs.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Uri};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use vigil_promql::{Error, Options};

use super::MAX_QUERY_BYTES;
use crate::timeutil::now_ms;

/// The request's parameters: the query string, then a form body (POST), repeated keys kept.
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Result<Params, Error> {
        let mut pairs: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
        if !body.is_empty() {
            let form = headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
            if !form {
                return Err(Error::BadData(
                    "a POST body must be application/x-www-form-urlencoded".into(),
                ));
            }
            pairs.extend(form_urlencoded::parse(body).into_owned());
        }
        Ok(Params(pairs))
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// A parameter the request must have.
    pub(crate) fn required(&self, key: &str) -> Result<&str, Error> {
        let value = self
            .get(key)
            .ok_or_else(|| Error::BadData(format!("invalid parameter \"{key}\": missing")))?;
        if value.len() > MAX_QUERY_BYTES {
            return Err(Error::BadData(format!(
                "invalid parameter \"{key}\": {} bytes, at most {MAX_QUERY_BYTES}",
                value.len()
            )));
        }
        Ok(value)
    }

    /// Every parameter as it came, repeated keys kept.
    pub(crate) fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    pub(crate) fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub(super) fn time(&self, key: &str, default: i64) -> Result<i64, Error> {
        self.get(key).map_or(Ok(default), |v| parse_time(key, v))
    }
}

/// A time parameter: float unix seconds or RFC 3339, as Prometheus takes it.
fn parse_time(key: &str, value: &str) -> Result<i64, Error> {
    if let Ok(seconds) = value.parse::<f64>()
        && seconds.is_finite()
        && seconds.abs() < 1e11
    {
        return Ok((seconds * 1000.0).round() as i64);
    }
    OffsetDateTime::parse(value, &Rfc3339)
        .map(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX))
        .map_err(|_| {
            Error::BadData(format!(
                "invalid parameter \"{key}\": cannot parse {value:?} to a valid timestamp"
            ))
        })
}

/// The engine's options for one request: the `timeout` parameter can shorten the default,
/// and `lookback_delta` (as Prometheus takes it) replaces the 5 min lookback.
pub(super) fn options(params: &Params) -> Result<Options, Error> {
    let mut opts = Options::default();
    if let Some(t) = params.get("timeout") {
        let ms = vigil_promql::parse_duration_ms(t)?;
        if ms > 0 {
            opts.timeout = opts.timeout.min(Duration::from_millis(ms.unsigned_abs()));
        }
    }
    if let Some(d) = params.get("lookback_delta") {
        let ms = vigil_promql::parse_duration_ms(d)
            .map_err(|e| Error::BadData(format!("invalid parameter \"lookback_delta\": {e}")))?;
        if ms < 0 {
            return Err(Error::BadData(format!(
                "invalid parameter \"lookback_delta\": {d:?} is negative"
            )));
        }
        // 0 is the default, as Prometheus takes it.
        if ms > 0 {
            opts.lookback_ms = ms;
        }
    }
    Ok(opts)
}

/// The lookback for a query evaluated over `[start, end]`: widened by the step of the
/// coarsest downsampled day in that range (`[[storage.downsampling]]`), so that an instant
/// selector finds that day's samples, one a step (and a scrape's jitter), as it finds raw
/// ones within five minutes. On the raw days read alongside, a series that stopped then
/// stays visible that much longer. Only the evaluation range is looked at: a selector with
/// an `offset`, an `@` or under a subquery that reaches a downsampled day outside it keeps
/// the plain lookback.
pub(super) fn lookback_for(store: &crate::storage::Store, opts: &Options, start: i64, end: i64) -> i64 {
    let coarsest = store
        .tsdb
        .coarsest_resolution(start.saturating_sub(opts.lookback_ms), end);
    coarsest.map_or(opts.lookback_ms, |step| opts.lookback_ms.saturating_add(step))
}

/// What an instant query asks: the expression, the time, the engine's options.
pub(crate) fn instant_request(params: &Params) -> Result<(String, i64, Options), Error> {
    let text = params.required("query")?.to_string();
    let t = params.time("time", now_ms())?;
    Ok((text, t, options(params)?))
}

/// What a range query asks: the expression, start, end and step, the engine's options.
pub(crate) fn range_request(params: &Params) -> Result<(String, i64, i64, i64, Options), Error> {
    let text = params.required("query")?.to_string();
    let start = parse_time("start", params.required("start")?)?;
    let end = parse_time("end", params.required("end")?)?;
    let step = vigil_promql::parse_duration_ms(params.required("step")?)?;
    Ok((text, start, end, step, options(params)?))
}
