//! What queries read and return: samples, series, instant vectors, and the errors.

use std::collections::BTreeMap;
use std::time::Duration;

use promql_parser::label::Matcher;

/// The label holding a series' metric name.
pub const METRIC_NAME: &str = "__name__";

/// The bits of Prometheus' staleness marker: a NaN no sample can have, written when a series
/// ends (its target went away, it left the scrape). Stored as a sample's value, it ends the
/// series there for selectors, as in Prometheus.
pub const STALE_MARKER_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Whether `v` is a staleness marker.
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_MARKER_BITS
}

/// A series' labels, `__name__` included, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// One sample: unix milliseconds and a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Unix milliseconds.
    pub t: i64,
    /// The value (NaN and infinities are values too).
    pub v: f64,
}

/// A series and its samples, oldest first, one per timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its labels, `__name__` included (absent once a function or operator dropped it).
    pub labels: Labels,
    /// Oldest first.
    pub samples: Vec<Sample>,
}

/// One element of an instant vector: a series' value at the evaluation time.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorElement {
    /// The element's labels.
    pub labels: Labels,
    /// Its value.
    pub v: f64,
}

/// What an expression evaluates to at one time.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number.
    Scalar(f64),
    /// A string literal.
    String(String),
    /// One value per series.
    Vector(Vec<VectorElement>),
    /// Samples per series over a range (a range selector or subquery at the top of an
    /// instant query).
    Matrix(Vec<Series>),
}

/// Where series come from.
pub trait Storage {
    /// Every series matching all `matchers` (label absent = empty value, as Prometheus
    /// matches), with its samples in `[start_ms, end_ms]` sorted by time and one per
    /// timestamp; series without samples there may be left out.
    fn select(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Result<Vec<Series>, Error>;

    /// As [`Storage::select`], handing the series to `f` one at a time, so that a caller
    /// that reduces each series as it comes need not hold them all. A storage that can read
    /// series one by one should; this default selects them all first.
    fn select_each(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        f: &mut dyn FnMut(Series) -> Result<(), Error>,
    ) -> Result<(), Error> {
        for series in self.select(matchers, start_ms, end_ms)? {
            if !series.samples.is_empty() {
                f(series)?;
            }
        }
        Ok(())
    }
}

/// Limits and defaults of one query.
#[derive(Debug, Clone)]
pub struct Options {
    /// How far back an instant selector looks for a series' latest sample (Prometheus:
    /// `--query.lookback-delta`, 5 min).
    pub lookback_ms: i64,
    /// Step of a subquery that names none (Prometheus: the global evaluation interval).
    pub default_subquery_step_ms: i64,
    /// Samples a query may load and produce at most (Prometheus: `--query.max-samples`).
    pub max_samples: usize,
    /// How long a query may run (Prometheus: `--query.timeout`, 2 min).
    pub timeout: Duration,
    /// Steps a range query may have at most (Prometheus refuses more than 11,000).
    pub max_steps: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            lookback_ms: 5 * 60_000,
            default_subquery_step_ms: 60_000,
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            max_steps: 11_000,
        }
    }
}

/// Why a query failed, grouped as the Prometheus API reports it (`errorType`).
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// The query or a parameter is malformed (`bad_data`, HTTP 400).
    BadData(String),
    /// The query is well formed but cannot be evaluated (`execution`, HTTP 422): duplicate
    /// series in a match, too many samples, an unsupported function.
    Execution(String),
    /// The query ran past its timeout (`timeout`, HTTP 503).
    Timeout(String),
    /// The storage failed (`internal`, HTTP 500).
    Internal(String),
}

impl Error {
    /// The Prometheus API's `errorType`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::BadData(_) => "bad_data",
            Error::Execution(_) => "execution",
            Error::Timeout(_) => "timeout",
            Error::Internal(_) => "internal",
        }
    }

    /// The HTTP status Prometheus answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::BadData(_) => 400,
            Error::Execution(_) => 422,
            Error::Timeout(_) => 503,
            Error::Internal(_) => 500,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Error::BadData(m) | Error::Execution(m) | Error::Timeout(m) | Error::Internal(m) => m,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_type(), self.message())
    }
}

impl std::error::Error for Error {}

/// `labels` without the metric name.
pub(crate) fn drop_name(mut labels: Labels) -> Labels {
    labels.remove(METRIC_NAME);
    labels
}
