//! The range functions (`rate`, `increase`, `*_over_time`, …): one series' samples in a
//! window to one value. The step-by-step evaluator applies them to every series of a window;
//! the series-major one ([`crate::stream`]) to every step of one series at a time.

use promql_parser::parser::Expr;

use crate::aggregate::extreme;
use crate::eval::Evaluator;
use crate::numeric::{compensated_variance, kahan_sum, kahan_sum_inc, running_mean};
use crate::value::{Error, Sample};

use super::quantile;

/// A range function with its scalar arguments' values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RangeOp {
    Rate,
    Increase,
    Delta,
    Irate,
    Idelta,
    Changes,
    Resets,
    Deriv,
    /// Seconds ahead.
    PredictLinear(f64),
    /// Smoothing and trend factors.
    HoltWinters(f64, f64),
    AvgOverTime,
    SumOverTime,
    CountOverTime,
    MinOverTime,
    MaxOverTime,
    StdvarOverTime,
    StddevOverTime,
    PresentOverTime,
    LastOverTime,
    /// The quantile.
    QuantileOverTime(f64),
}

/// Which argument of a range function is its range vector, which are scalars.
struct Arguments {
    matrix: usize,
    scalars: &'static [usize],
}

fn arguments(name: &str) -> Option<Arguments> {
    let (matrix, scalars): (usize, &'static [usize]) = match name {
        "rate" | "increase" | "delta" | "irate" | "idelta" | "changes" | "resets" | "deriv" | "avg_over_time"
        | "sum_over_time" | "count_over_time" | "min_over_time" | "max_over_time" | "stdvar_over_time"
        | "stddev_over_time" | "present_over_time" | "last_over_time" => (0, &[]),
        "predict_linear" => (0, &[1]),
        "holt_winters" => (0, &[1, 2]),
        "quantile_over_time" => (1, &[0]),
        _ => return None,
    };
    Some(Arguments { matrix, scalars })
}

impl RangeOp {
    /// Whether `name` is a range function.
    pub(crate) fn named(name: &str) -> bool {
        arguments(name).is_some()
    }

    /// The range function `name` called with `args` at `t`: its scalar arguments evaluated,
    /// and its range-vector argument.
    pub(crate) fn of_call<'e>(
        ev: &Evaluator<'_, '_>,
        name: &str,
        args: &[&'e Expr],
        t: i64,
    ) -> Result<(RangeOp, &'e Expr), Error> {
        let spec = arguments(name).ok_or_else(|| Error::Execution(format!("{name} is not a range function")))?;
        let arg = |i: usize| {
            args.get(i)
                .copied()
                .ok_or_else(|| Error::BadData(format!("{name}: argument {} is missing", i + 1)))
        };
        let mut scalars = Vec::with_capacity(spec.scalars.len());
        for &i in spec.scalars {
            scalars.push(ev.scalar(arg(i)?, t)?);
        }
        Ok((RangeOp::new(name, &scalars)?, arg(spec.matrix)?))
    }

    /// The range function `name` with its scalar arguments' values, checked.
    fn new(name: &str, scalars: &[f64]) -> Result<RangeOp, Error> {
        let scalar = |i: usize| scalars.get(i).copied().unwrap_or(f64::NAN);
        Ok(match name {
            "rate" => RangeOp::Rate,
            "increase" => RangeOp::Increase,
            "delta" => RangeOp::Delta,
            "irate" => RangeOp::Irate,
            "idelta" => RangeOp::Idelta,
            "changes" => RangeOp::Changes,
            "resets" => RangeOp::Resets,
            "deriv" => RangeOp::Deriv,
            "predict_linear" => RangeOp::PredictLinear(scalar(0)),
            "holt_winters" => {
                let (sf, tf) = (scalar(0), scalar(1));
                if !(sf > 0.0 && sf < 1.0) {
                    return Err(Error::Execution(format!(
                        "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf}"
                    )));
                }
                if !(tf > 0.0 && tf < 1.0) {
                    return Err(Error::Execution(format!(
                        "invalid trend factor. Expected: 0 < tf < 1, got: {tf}"
                    )));
                }
                RangeOp::HoltWinters(sf, tf)
            }
            "avg_over_time" => RangeOp::AvgOverTime,
            "sum_over_time" => RangeOp::SumOverTime,
            "count_over_time" => RangeOp::CountOverTime,
            "min_over_time" => RangeOp::MinOverTime,
            "max_over_time" => RangeOp::MaxOverTime,
            "stdvar_over_time" => RangeOp::StdvarOverTime,
            "stddev_over_time" => RangeOp::StddevOverTime,
            "present_over_time" => RangeOp::PresentOverTime,
            "last_over_time" => RangeOp::LastOverTime,
            "quantile_over_time" => RangeOp::QuantileOverTime(scalar(0)),
            other => return Err(Error::Execution(format!("{other} is not a range function"))),
        })
    }

    /// For the series-major evaluator: the range function of a call whose scalar arguments
    /// are valid number literals (the same at every step), and its range-vector argument.
    /// `None` for anything else.
    pub(crate) fn constant_call<'e>(name: &str, args: &[&'e Expr]) -> Option<(RangeOp, &'e Expr)> {
        let spec = arguments(name)?;
        let mut scalars = Vec::with_capacity(spec.scalars.len());
        for &i in spec.scalars {
            match args.get(i).copied() {
                Some(Expr::NumberLiteral(n)) => scalars.push(n.val),
                _ => return None,
            }
        }
        let matrix = args.get(spec.matrix).copied()?;
        Some((RangeOp::new(name, &scalars).ok()?, matrix))
    }

    /// The one range function that keeps the metric name.
    pub(crate) fn keeps_name(self) -> bool {
        self == RangeOp::LastOverTime
    }

    /// The function of samples `s` (markers left out) in the window `[start, end]`,
    /// evaluated at `t`; `None` when it has no value there.
    pub(crate) fn apply(self, start: i64, end: i64, t: i64, s: &[Sample]) -> Option<f64> {
        let values = || s.iter().map(|p| p.v);
        match self {
            RangeOp::Rate => extrapolated_rate(start, end, s, true, true),
            RangeOp::Increase => extrapolated_rate(start, end, s, true, false),
            RangeOp::Delta => extrapolated_rate(start, end, s, false, false),
            RangeOp::Irate => instant_value(s, true),
            RangeOp::Idelta => instant_value(s, false),
            RangeOp::Changes => Some(
                s.windows(2)
                    .filter(|w| w[0].v != w[1].v && !(w[0].v.is_nan() && w[1].v.is_nan()))
                    .count() as f64,
            ),
            RangeOp::Resets => Some(s.windows(2).filter(|w| w[1].v < w[0].v).count() as f64),
            RangeOp::Deriv => (s.len() >= 2).then(|| linear_regression(s, s[0].t).0),
            RangeOp::PredictLinear(seconds) => (s.len() >= 2).then(|| {
                let (slope, intercept) = linear_regression(s, t);
                intercept + slope * seconds
            }),
            RangeOp::HoltWinters(sf, tf) => holt_winters(s, sf, tf),
            RangeOp::AvgOverTime => Some(running_mean(values())),
            RangeOp::SumOverTime => Some(kahan_sum(values())),
            RangeOp::CountOverTime => Some(s.len() as f64),
            RangeOp::MinOverTime => Some(extreme(&values().collect::<Vec<_>>(), |a, b| a < b)),
            RangeOp::MaxOverTime => Some(extreme(&values().collect::<Vec<_>>(), |a, b| a > b)),
            RangeOp::StdvarOverTime => Some(compensated_variance(values())),
            RangeOp::StddevOverTime => Some(compensated_variance(values()).sqrt()),
            RangeOp::PresentOverTime => Some(1.0),
            RangeOp::LastOverTime => s.last().map(|p| p.v),
            RangeOp::QuantileOverTime(q) => Some(quantile(q, values().collect())),
        }
    }
}

/// Prometheus' `extrapolatedRate`: the change over the window, extrapolated to its edges
/// (at most half an average sample interval past the first and last samples, and never
/// below a counter's zero), per second for `rate`.
fn extrapolated_rate(start: i64, end: i64, s: &[Sample], is_counter: bool, is_rate: bool) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let (first, last) = (s[0], s[s.len() - 1]);
    let mut result = last.v - first.v;
    if is_counter {
        let mut previous = 0.0;
        for p in s {
            if p.v < previous {
                result += previous;
            }
            previous = p.v;
        }
    }
    let mut to_start = (first.t - start) as f64 / 1000.0;
    let to_end = (end - last.t) as f64 / 1000.0;
    let sampled = (last.t - first.t) as f64 / 1000.0;
    let average_gap = sampled / (s.len() - 1) as f64;
    if is_counter && result > 0.0 && first.v >= 0.0 {
        let to_zero = sampled * (first.v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average_gap * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        average_gap / 2.0
    };
    interval += if to_end < threshold { to_end } else { average_gap / 2.0 };
    result *= interval / sampled;
    if is_rate {
        result /= (end - start) as f64 / 1000.0;
    }
    Some(result)
}

/// `irate`/`idelta`: from the last two samples.
fn instant_value(s: &[Sample], is_rate: bool) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let (previous, last) = (s[s.len() - 2], s[s.len() - 1]);
    let mut result = if is_rate && last.v < previous.v {
        last.v
    } else {
        last.v - previous.v
    };
    let interval = last.t - previous.t;
    if interval == 0 {
        return None;
    }
    if is_rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// Least-squares slope (per second) and intercept at `intercept_ms`.
fn linear_regression(s: &[Sample], intercept_ms: i64) -> (f64, f64) {
    let first = s[0].v;
    if s.iter().all(|p| p.v == first) {
        return if first.is_infinite() {
            (f64::NAN, f64::NAN)
        } else {
            (0.0, first)
        };
    }
    // Compensated sums, as Prometheus keeps them: `deriv` of a large counter moving by
    // fractions loses its slope to rounding otherwise (2.42 answers 0.006464646464646465 for
    // 1e15 + 0.37·i a minute, a plain sum 0.007757575757575757).
    let (mut n, mut sx, mut sy, mut sxy, mut sx2) = (0.0, (0.0, 0.0), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0));
    for p in s {
        let x = (p.t - intercept_ms) as f64 / 1000.0;
        n += 1.0;
        sx = kahan_sum_inc(x, sx.0, sx.1);
        sy = kahan_sum_inc(p.v, sy.0, sy.1);
        sxy = kahan_sum_inc(x * p.v, sxy.0, sxy.1);
        sx2 = kahan_sum_inc(x * x, sx2.0, sx2.1);
    }
    let (sx, sy, sxy, sx2) = (sx.0 + sx.1, sy.0 + sy.1, sxy.0 + sxy.1, sx2.0 + sx2.1);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

fn holt_winters(s: &[Sample], sf: f64, tf: f64) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, s[0].v);
    let mut b = s[1].v - s[0].v;
    for (i, p) in s.iter().enumerate().skip(1) {
        let x = sf * p.v;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}
