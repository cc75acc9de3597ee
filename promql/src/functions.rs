//! PromQL functions, with Prometheus 2.x's arithmetic (rate extrapolation, bucket
//! interpolation, regression) so answers agree with a Prometheus server's.

use promql_parser::parser::{Call, Expr};

use crate::eval::{Evaluator, Window};
use crate::value::{Error, Labels, METRIC_NAME, Sample, Value, VectorElement, drop_name};

mod calendar;
mod histogram;
mod labels;
pub(crate) mod range;

use calendar::date_part;
use histogram::histogram_quantile;
use labels::{label_join, label_replace};

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
        _ if range::RangeOp::named(name) => {
            let (op, matrix) = range::RangeOp::of_call(ev, name, &args, t)?;
            let keeps_name = op.keeps_name();
            over_range(ev, matrix, t, !keeps_name, |w, s| op.apply(w.start, w.end, t, s))?
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
