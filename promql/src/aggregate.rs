//! Aggregation operators (`sum`, `avg`, `topk`, `quantile`, … with `by`/`without`).

use std::collections::BTreeMap;

use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_GROUP, T_MAX, T_MIN, T_QUANTILE, T_STDDEV, T_STDVAR, T_SUM, T_TOPK,
};
use promql_parser::parser::{AggregateExpr, LabelModifier};

use crate::eval::Evaluator;
use crate::functions::quantile;
use crate::json::format_value;
use crate::numeric::{compensated_variance, running_mean};
use crate::value::{Error, Labels, METRIC_NAME, Value, VectorElement};

pub(crate) fn eval(ev: &Evaluator<'_, '_>, a: &AggregateExpr, t: i64) -> Result<Value, Error> {
    let input = ev.vector(&a.expr, t)?;
    let op = a.op.id();
    let modifier = a.modifier.as_ref();
    if op == T_COUNT_VALUES {
        let label = match &a.param {
            Some(p) => ev.string(p, t)?,
            None => return Err(Error::BadData("count_values needs a label name".into())),
        };
        if !valid_label_name(&label) {
            return Err(Error::Execution(format!("invalid label name {label:?}")));
        }
        let mut counts: BTreeMap<Labels, f64> = BTreeMap::new();
        for el in input {
            let mut key = group_labels(&el.labels, modifier);
            key.insert(label.clone(), format_value(el.v));
            *counts.entry(key).or_default() += 1.0;
        }
        return Ok(Value::Vector(
            counts
                .into_iter()
                .map(|(labels, v)| VectorElement { labels, v })
                .collect(),
        ));
    }
    let param = match (&a.param, op) {
        (Some(p), T_TOPK | T_BOTTOMK) => {
            let k = ev.scalar(p, t)?;
            // Prometheus converts k to an int64 first, whatever the input: NaN, ±Inf and
            // beyond ±2^63 are errors (checked against Prometheus 2.42), not "nothing kept".
            if !(i64::MIN as f64..=i64::MAX as f64).contains(&k) {
                return Err(Error::Execution(format!(
                    "Scalar value {} overflows int64",
                    go_float(k)
                )));
            }
            Some(k)
        }
        (Some(p), T_QUANTILE) => Some(ev.scalar(p, t)?),
        (None, T_TOPK | T_BOTTOMK | T_QUANTILE) => {
            return Err(Error::BadData(format!("{} needs a parameter", a.op)));
        }
        _ => None,
    };
    // Groups in order of first appearance, as Prometheus returns them.
    let mut order: Vec<Labels> = Vec::new();
    let mut groups: BTreeMap<Labels, Vec<VectorElement>> = BTreeMap::new();
    for el in input {
        let key = group_labels(&el.labels, modifier);
        let group = groups.entry(key.clone()).or_default();
        if group.is_empty() {
            order.push(key);
        }
        group.push(el);
    }
    let mut out = Vec::new();
    for key in order {
        let members = groups.remove(&key).unwrap_or_default();
        let values: Vec<f64> = members.iter().map(|m| m.v).collect();
        let single = |v: f64| VectorElement { labels: key.clone(), v };
        match op {
            T_SUM => out.push(single(values.iter().sum())),
            T_AVG => out.push(single(running_mean(values.iter().copied()))),
            T_COUNT => out.push(single(values.len() as f64)),
            T_GROUP => out.push(single(1.0)),
            T_MIN => out.push(single(extreme(&values, |a, b| a < b))),
            T_MAX => out.push(single(extreme(&values, |a, b| a > b))),
            T_STDVAR => out.push(single(compensated_variance(values.iter().copied()))),
            T_STDDEV => out.push(single(compensated_variance(values.iter().copied()).sqrt())),
            T_QUANTILE => out.push(single(quantile(param.unwrap_or(f64::NAN), values))),
            T_TOPK | T_BOTTOMK => {
                let k = param.unwrap_or(0.0);
                // Fewer than one: nothing kept.
                if k < 1.0 {
                    continue;
                }
                let k = (k as usize).min(members.len());
                let mut members = members;
                // NaN last either way, as Prometheus' heaps order them.
                members.sort_by(|x, y| match (x.v.is_nan(), y.v.is_nan()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    (false, false) if op == T_TOPK => y.v.total_cmp(&x.v),
                    (false, false) => x.v.total_cmp(&y.v),
                });
                out.extend(members.into_iter().take(k));
            }
            _ => {
                return Err(Error::Execution(format!("aggregation {} is not supported", a.op)));
            }
        }
    }
    Ok(Value::Vector(out))
}

/// A float as Go's `%v` writes it (`'g'`, shortest): `NaN`, `+Inf`, `1e+20`, `100000` — the spelling
/// of Prometheus' own error messages.
fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let exp10 = if v == 0.0 { 0 } else { v.abs().log10().floor() as i32 };
    // Go's shortest 'g' switches to an exponent outside 1e-4 ≤ |v| < 1e6.
    if !(-4..6).contains(&exp10) {
        let text = format!("{v:e}");
        if let Some((mantissa, exp)) = text.split_once('e') {
            let (sign, digits) = exp.strip_prefix('-').map_or(("+", exp), |d| ("-", d));
            return format!("{mantissa}e{sign}{digits:0>2}");
        }
    }
    format!("{v}")
}

/// The labels of an element's group: `by` keeps the listed ones, `without` drops them and
/// the metric name; no modifier groups everything together.
pub(crate) fn group_labels(labels: &Labels, modifier: Option<&LabelModifier>) -> Labels {
    match modifier {
        Some(LabelModifier::Include(by)) => labels
            .iter()
            .filter(|(k, v)| by.labels.contains(*k) && !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Some(LabelModifier::Exclude(without)) => labels
            .iter()
            .filter(|(k, _)| k.as_str() != METRIC_NAME && !without.labels.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        None => Labels::new(),
    }
}

pub(crate) fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `min`/`max`: NaN only when every value is NaN.
pub(crate) fn extreme(values: &[f64], better: impl Fn(f64, f64) -> bool) -> f64 {
    values
        .iter()
        .copied()
        .fold(f64::NAN, |acc, v| if acc.is_nan() || better(v, acc) { v } else { acc })
}
