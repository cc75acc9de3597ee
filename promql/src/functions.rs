//! PromQL functions, with Prometheus 2.x's arithmetic (rate extrapolation, bucket
//! interpolation, regression) so answers agree with a Prometheus server's.

use promql_parser::parser::{Call, Expr};
use regex::Regex;

use crate::aggregate::{extreme, mean, valid_label_name, variance};
use crate::eval::{Evaluator, Window};
use crate::value::{Error, Labels, METRIC_NAME, Sample, Value, VectorElement, drop_name};

pub(crate) fn call(ev: &Evaluator<'_, '_>, c: &Call, t: i64) -> Result<Value, Error> {
    let name = c.func.name;
    let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
    let arg = |i: usize| {
        args.get(i)
            .copied()
            .ok_or_else(|| Error::BadData(format!("{name}: argument {} is missing", i + 1)))
    };
    let out = match name {
        // Over a range of samples.
        "rate" => over_range(ev, arg(0)?, t, true, |w, s| extrapolated_rate(w, s, true, true))?,
        "increase" => over_range(ev, arg(0)?, t, true, |w, s| extrapolated_rate(w, s, true, false))?,
        "delta" => over_range(ev, arg(0)?, t, true, |w, s| extrapolated_rate(w, s, false, false))?,
        "irate" => over_range(ev, arg(0)?, t, true, |_, s| instant_value(s, true))?,
        "idelta" => over_range(ev, arg(0)?, t, true, |_, s| instant_value(s, false))?,
        "changes" => over_range(ev, arg(0)?, t, true, |_, s| {
            Some(
                s.windows(2)
                    .filter(|w| w[0].v != w[1].v && !(w[0].v.is_nan() && w[1].v.is_nan()))
                    .count() as f64,
            )
        })?,
        "resets" => over_range(ev, arg(0)?, t, true, |_, s| {
            Some(s.windows(2).filter(|w| w[1].v < w[0].v).count() as f64)
        })?,
        "deriv" => over_range(ev, arg(0)?, t, true, |_, s| {
            (s.len() >= 2).then(|| linear_regression(s, s[0].t).0)
        })?,
        "predict_linear" => {
            let seconds = ev.scalar(arg(1)?, t)?;
            over_range(ev, arg(0)?, t, true, |_, s| {
                (s.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(s, t);
                    intercept + slope * seconds
                })
            })?
        }
        "holt_winters" => {
            let sf = ev.scalar(arg(1)?, t)?;
            let tf = ev.scalar(arg(2)?, t)?;
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
            over_range(ev, arg(0)?, t, true, |_, s| holt_winters(s, sf, tf))?
        }
        "avg_over_time" => over_range(ev, arg(0)?, t, true, |_, s| Some(mean(&values(s))))?,
        "sum_over_time" => over_range(ev, arg(0)?, t, true, |_, s| Some(s.iter().map(|p| p.v).sum()))?,
        "count_over_time" => over_range(ev, arg(0)?, t, true, |_, s| Some(s.len() as f64))?,
        "min_over_time" => over_range(ev, arg(0)?, t, true, |_, s| Some(extreme(&values(s), |a, b| a < b)))?,
        "max_over_time" => over_range(ev, arg(0)?, t, true, |_, s| Some(extreme(&values(s), |a, b| a > b)))?,
        "stdvar_over_time" => over_range(ev, arg(0)?, t, true, |_, s| Some(variance(&values(s))))?,
        "stddev_over_time" => over_range(ev, arg(0)?, t, true, |_, s| Some(variance(&values(s)).sqrt()))?,
        "present_over_time" => over_range(ev, arg(0)?, t, true, |_, _| Some(1.0))?,
        // The one range function that keeps the metric name.
        "last_over_time" => over_range(ev, arg(0)?, t, false, |_, s| s.last().map(|p| p.v))?,
        "quantile_over_time" => {
            let q = ev.scalar(arg(0)?, t)?;
            over_range(ev, arg(1)?, t, true, |_, s| Some(quantile(q, values(s))))?
        }
        "absent_over_time" => {
            let w = ev.window(arg(0)?, t)?;
            absent(w.is_empty(), arg(0)?)
        }
        "absent" => {
            let v = ev.vector(arg(0)?, t)?;
            absent(v.is_empty(), arg(0)?)
        }
        // Element-wise.
        "abs" => map(ev, arg(0)?, t, f64::abs)?,
        "ceil" => map(ev, arg(0)?, t, f64::ceil)?,
        "floor" => map(ev, arg(0)?, t, f64::floor)?,
        "exp" => map(ev, arg(0)?, t, f64::exp)?,
        "ln" => map(ev, arg(0)?, t, f64::ln)?,
        "log2" => map(ev, arg(0)?, t, f64::log2)?,
        "log10" => map(ev, arg(0)?, t, f64::log10)?,
        "sqrt" => map(ev, arg(0)?, t, f64::sqrt)?,
        "sgn" => map(ev, arg(0)?, t, |v| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        })?,
        "deg" => map(ev, arg(0)?, t, f64::to_degrees)?,
        "rad" => map(ev, arg(0)?, t, f64::to_radians)?,
        "acos" => map(ev, arg(0)?, t, f64::acos)?,
        "acosh" => map(ev, arg(0)?, t, f64::acosh)?,
        "asin" => map(ev, arg(0)?, t, f64::asin)?,
        "asinh" => map(ev, arg(0)?, t, f64::asinh)?,
        "atan" => map(ev, arg(0)?, t, f64::atan)?,
        "atanh" => map(ev, arg(0)?, t, f64::atanh)?,
        "cos" => map(ev, arg(0)?, t, f64::cos)?,
        "cosh" => map(ev, arg(0)?, t, f64::cosh)?,
        "sin" => map(ev, arg(0)?, t, f64::sin)?,
        "sinh" => map(ev, arg(0)?, t, f64::sinh)?,
        "tan" => map(ev, arg(0)?, t, f64::tan)?,
        "tanh" => map(ev, arg(0)?, t, f64::tanh)?,
        "round" => {
            let to = match args.get(1) {
                Some(e) => ev.scalar(e, t)?,
                None => 1.0,
            };
            let inverse = 1.0 / to;
            map(ev, arg(0)?, t, |v| (v * inverse + 0.5).floor() / inverse)?
        }
        "clamp" => {
            let (lo, hi) = (ev.scalar(arg(1)?, t)?, ev.scalar(arg(2)?, t)?);
            if hi < lo {
                Vec::new()
            } else {
                map(ev, arg(0)?, t, |v| go_min(go_max(v, lo), hi))?
            }
        }
        "clamp_min" => {
            let lo = ev.scalar(arg(1)?, t)?;
            map(ev, arg(0)?, t, |v| go_max(v, lo))?
        }
        "clamp_max" => {
            let hi = ev.scalar(arg(1)?, t)?;
            map(ev, arg(0)?, t, |v| go_min(v, hi))?
        }
        "timestamp" => match unparen(arg(0)?) {
            Expr::VectorSelector(vs) => ev
                .instant_samples(vs, t)
                .into_iter()
                .map(|(labels, s)| VectorElement {
                    labels: drop_name(labels),
                    v: s.t as f64 / 1000.0,
                })
                .collect(),
            other => map(ev, other, t, |_| t as f64 / 1000.0)?,
        },
        "histogram_quantile" => {
            let q = ev.scalar(arg(0)?, t)?;
            histogram_quantile(q, ev.vector(arg(1)?, t)?)
        }
        "label_replace" => label_replace(ev, &args, t)?,
        "label_join" => label_join(ev, &args, t)?,
        "sort" => sorted(ev.vector(arg(0)?, t)?, false),
        "sort_desc" => sorted(ev.vector(arg(0)?, t)?, true),
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute" | "month" | "year" => {
            let input = match args.first() {
                Some(e) => ev.vector(e, t)?,
                None => vec![VectorElement {
                    labels: Labels::new(),
                    v: t as f64 / 1000.0,
                }],
            };
            input
                .into_iter()
                .map(|el| VectorElement {
                    labels: drop_name(el.labels),
                    v: date_part(name, el.v),
                })
                .collect()
        }
        // Scalars and conversions.
        "time" => return Ok(Value::Scalar(t as f64 / 1000.0)),
        "pi" => return Ok(Value::Scalar(std::f64::consts::PI)),
        "scalar" => {
            let v = ev.vector(arg(0)?, t)?;
            return Ok(Value::Scalar(if v.len() == 1 { v[0].v } else { f64::NAN }));
        }
        "vector" => vec![VectorElement {
            labels: Labels::new(),
            v: ev.scalar(arg(0)?, t)?,
        }],
        other => {
            return Err(Error::Execution(format!(
                "function {other}() is not supported by Vigil's PromQL engine"
            )));
        }
    };
    unique(&out)?;
    Ok(Value::Vector(out))
}

fn unparen(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

fn values(s: &[Sample]) -> Vec<f64> {
    s.iter().map(|p| p.v).collect()
}

/// A range function applied to each series of its argument's window.
fn over_range(
    ev: &Evaluator<'_, '_>,
    e: &Expr,
    t: i64,
    drop_metric_name: bool,
    f: impl Fn(&Window<'_>, &[Sample]) -> Option<f64>,
) -> Result<Vec<VectorElement>, Error> {
    let w = ev.window(e, t)?;
    let mut out = Vec::new();
    w.for_each(|labels, samples| {
        if let Some(v) = f(&w, samples) {
            let mut labels = labels.clone();
            if drop_metric_name {
                labels.remove(METRIC_NAME);
            }
            out.push(VectorElement { labels, v });
        }
    });
    Ok(out)
}

/// An element-wise function; the result has no metric name.
fn map(ev: &Evaluator<'_, '_>, e: &Expr, t: i64, f: impl Fn(f64) -> f64) -> Result<Vec<VectorElement>, Error> {
    Ok(ev
        .vector(e, t)?
        .into_iter()
        .map(|el| VectorElement {
            labels: drop_name(el.labels),
            v: f(el.v),
        })
        .collect())
}

/// A function's result must not hold two elements with the same labels (dropping the
/// metric name can make `rate(a[1m]) or …` collide).
pub(crate) fn unique(v: &[VectorElement]) -> Result<(), Error> {
    let mut seen = std::collections::HashSet::new();
    for el in v {
        if !seen.insert(&el.labels) {
            return Err(Error::Execution(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
    }
    Ok(())
}

/// Prometheus' `extrapolatedRate`: the change over the window, extrapolated to its edges
/// (at most half an average sample interval past the first and last samples, and never
/// below a counter's zero), per second for `rate`.
fn extrapolated_rate(w: &Window<'_>, s: &[Sample], is_counter: bool, is_rate: bool) -> Option<f64> {
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
    let mut to_start = (first.t - w.start) as f64 / 1000.0;
    let to_end = (w.end - last.t) as f64 / 1000.0;
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
        result /= w.range_ms as f64 / 1000.0;
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
    let (mut n, mut sx, mut sy, mut sxy, mut sx2) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for p in s {
        let x = (p.t - intercept_ms) as f64 / 1000.0;
        n += 1.0;
        sx += x;
        sy += p.v;
        sxy += x * p.v;
        sx2 += x * x;
    }
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

/// Prometheus' `quantile`: linear interpolation between the closest ranks.
pub(crate) fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(nan_first);
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

fn nan_first(a: &f64, b: &f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        (false, false) => a.total_cmp(b),
    }
}

/// `sort`/`sort_desc`: NaN last either way, as Prometheus sorts.
fn sorted(mut v: Vec<VectorElement>, descending: bool) -> Vec<VectorElement> {
    v.sort_by(|a, b| match (a.v.is_nan(), b.v.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        (false, false) if descending => b.v.total_cmp(&a.v),
        (false, false) => a.v.total_cmp(&b.v),
    });
    v
}

/// Go's `math.Max`: NaN wins (Rust's `f64::max` ignores it).
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) }
}

/// Go's `math.Min`: NaN wins.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.min(b) }
}

/// `absent(v)` / `absent_over_time(v[d])`: one element valued 1, labelled with the
/// selector's equality matchers, when `empty`.
fn absent(empty: bool, arg: &Expr) -> Vec<VectorElement> {
    if !empty {
        return Vec::new();
    }
    let selector = match arg {
        Expr::VectorSelector(vs) => Some(vs),
        Expr::MatrixSelector(ms) => Some(&ms.vs),
        _ => None,
    };
    let mut labels = Labels::new();
    if let Some(vs) = selector {
        // Prometheus: labels of equality matchers, unless the same label has another matcher
        // of any kind; empty values name no label.
        let mut count: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for m in &vs.matchers.matchers {
            *count.entry(m.name.as_str()).or_default() += 1;
        }
        for m in &vs.matchers.matchers {
            if m.name != METRIC_NAME
                && matches!(m.op, promql_parser::label::MatchOp::Equal)
                && count.get(m.name.as_str()) == Some(&1)
                && !m.value.is_empty()
            {
                labels.insert(m.name.clone(), m.value.clone());
            }
        }
    }
    vec![VectorElement { labels, v: 1.0 }]
}

/// `histogram_quantile(φ, buckets)` over classic `le` buckets.
fn histogram_quantile(q: f64, v: Vec<VectorElement>) -> Vec<VectorElement> {
    let mut groups: std::collections::BTreeMap<Labels, Vec<(f64, f64)>> = std::collections::BTreeMap::new();
    for el in v {
        let Some(upper) = el.labels.get("le").and_then(|le| parse_bound(le)) else {
            continue;
        };
        // Buckets are grouped by every label but `le` — the metric name too, so two
        // histograms whose other labels agree are not merged into one (Prometheus then
        // refuses the result: both answers would carry the same labels).
        let mut key = el.labels;
        key.remove("le");
        groups.entry(key).or_default().push((upper, el.v));
    }
    groups
        .into_iter()
        .map(|(labels, buckets)| VectorElement {
            labels: drop_name(labels),
            v: bucket_quantile(q, buckets),
        })
        .collect()
}

fn parse_bound(le: &str) -> Option<f64> {
    match le.trim() {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

/// Prometheus' `bucketQuantile`: the bucket holding the rank, interpolated linearly.
fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Buckets with the same bound (series that differ only in a dropped label) add up.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for (bound, count) in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == bound => last.1 += count,
            _ => merged.push((bound, count)),
        }
    }
    // Counts must not fall with the bound (scrapes of buckets are not atomic).
    let mut max = f64::NEG_INFINITY;
    for b in &mut merged {
        if b.1 > max {
            max = b.1;
        } else {
            b.1 = max;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = merged[..merged.len() - 1]
        .iter()
        .position(|b| b.1 >= rank)
        .unwrap_or(merged.len() - 1);
    if b == merged.len() - 1 {
        return merged[merged.len() - 2].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let (mut start, end, mut count) = (0.0, merged[b].0, merged[b].1);
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

fn label_replace(ev: &Evaluator<'_, '_>, args: &[&Expr], t: i64) -> Result<Vec<VectorElement>, Error> {
    let [v, dst, replacement, src, regex] = args else {
        return Err(Error::BadData("label_replace needs 5 arguments".into()));
    };
    let (dst, replacement, src, pattern) = (
        ev.string(dst, t)?,
        ev.string(replacement, t)?,
        ev.string(src, t)?,
        ev.string(regex, t)?,
    );
    let re = Regex::new(&format!("^(?s:{pattern})$"))
        .map_err(|e| Error::Execution(format!("invalid regular expression in label_replace(): {e}")))?;
    if !valid_label_name(&dst) {
        return Err(Error::Execution(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    let out: Vec<VectorElement> = ev
        .vector(v, t)?
        .into_iter()
        .map(|mut el| {
            let value = el.labels.get(&src).cloned().unwrap_or_default();
            if let Some(caps) = re.captures(&value) {
                let mut result = String::new();
                caps.expand(&replacement, &mut result);
                el.labels.remove(&dst);
                if !result.is_empty() {
                    el.labels.insert(dst.clone(), result);
                }
            }
            el
        })
        .collect();
    Ok(out)
}

fn label_join(ev: &Evaluator<'_, '_>, args: &[&Expr], t: i64) -> Result<Vec<VectorElement>, Error> {
    let [v, dst, separator, sources @ ..] = args else {
        return Err(Error::BadData("label_join needs at least 3 arguments".into()));
    };
    let (dst, separator) = (ev.string(dst, t)?, ev.string(separator, t)?);
    if !valid_label_name(&dst) {
        return Err(Error::Execution(format!(
            "invalid destination label name in label_join(): {dst}"
        )));
    }
    let sources: Vec<String> = sources.iter().map(|s| ev.string(s, t)).collect::<Result<_, _>>()?;
    Ok(ev
        .vector(v, t)?
        .into_iter()
        .map(|mut el| {
            let joined = sources
                .iter()
                .map(|s| el.labels.get(s).cloned().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(&separator);
            el.labels.remove(&dst);
            if !joined.is_empty() {
                el.labels.insert(dst.clone(), joined);
            }
            el
        })
        .collect())
}

/// A calendar field of unix seconds `v`, in UTC.
fn date_part(name: &str, v: f64) -> f64 {
    if !v.is_finite() {
        return f64::NAN;
    }
    let secs = v as i64;
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    match name {
        "day_of_month" => d as f64,
        // 1970-01-01 was a Thursday (4).
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_year" => (days - days_from_civil(y, 1, 1) + 1) as f64,
        "days_in_month" => {
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (days_from_civil(ny, nm, 1) - days_from_civil(y, m, 1)) as f64
        }
        "hour" => (of_day / 3600) as f64,
        "minute" => (of_day % 3600 / 60) as f64,
        "month" => m as f64,
        "year" => y as f64,
        _ => f64::NAN,
    }
}

/// Howard Hinnant's `civil_from_days`: (year, month, day) of days since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days since 1970-01-01 of a civil date (the inverse of [`civil_from_days`]).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
