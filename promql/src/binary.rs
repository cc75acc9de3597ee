//! Binary operators: arithmetic, comparison (filtering or `bool`), and set operators, with
//! Prometheus' vector matching (`on`, `ignoring`, `group_left`, `group_right`).

use std::collections::{HashMap, HashSet};

use promql_parser::label::Labels as LabelList;
use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD, T_MUL, T_NEQ, T_POW,
    T_SUB, TokenId,
};
use promql_parser::parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality};

use crate::eval::{Evaluator, value_name};
use crate::value::{Error, Labels, METRIC_NAME, Value, VectorElement, drop_name};

pub(crate) fn eval(ev: &Evaluator<'_, '_>, b: &BinaryExpr, t: i64) -> Result<Value, Error> {
    let op = b.op.id();
    let modifier = b.modifier.clone().unwrap_or_default();
    if modifier.fill_values.lhs.is_some() || modifier.fill_values.rhs.is_some() {
        return Err(Error::Execution("fill modifiers are not supported".into()));
    }
    let return_bool = modifier.return_bool;
    let lhs = ev.eval(&b.lhs, t)?;
    let rhs = ev.eval(&b.rhs, t)?;
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => {
            let (v, keep) = apply(op, l, r);
            if is_comparison(op) {
                // The parser allows scalar comparisons only with `bool`.
                Ok(Value::Scalar(if keep { 1.0 } else { 0.0 }))
            } else {
                Ok(Value::Scalar(v))
            }
        }
        (Value::Vector(l), Value::Scalar(r)) => Ok(Value::Vector(vector_scalar(op, l, r, false, return_bool))),
        (Value::Scalar(l), Value::Vector(r)) => Ok(Value::Vector(vector_scalar(op, r, l, true, return_bool))),
        (Value::Vector(l), Value::Vector(r)) => {
            let out = match op {
                T_LAND => and(l, r, modifier.matching.as_ref()),
                T_LOR => or(l, r, modifier.matching.as_ref()),
                T_LUNLESS => unless(l, r, modifier.matching.as_ref()),
                _ => vector_vector(op, l, r, &modifier)?,
            };
            Ok(Value::Vector(out))
        }
        (l, r) => Err(Error::Execution(format!(
            "binary operator between {} and {}",
            value_name(&l),
            value_name(&r)
        ))),
    }
}

fn is_comparison(op: TokenId) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// Arithmetic drops the metric name: `a + b` is neither `a` nor `b`.
fn drops_name(op: TokenId) -> bool {
    // `atan2` keeps it in Prometheus 2.x.
    matches!(op, T_ADD | T_SUB | T_MUL | T_DIV | T_POW | T_MOD)
}

/// The operator on two values: the result, and for comparisons whether it holds (the
/// result is then the left value).
fn apply(op: TokenId, l: f64, r: f64) -> (f64, bool) {
    match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_POW => (l.powf(r), true),
        // Go's math.Mod: the sign of the dividend, NaN for a zero divisor — as Rust's `%`.
        T_MOD => (l % r, true),
        T_ATAN2 => (l.atan2(r), true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

fn vector_scalar(
    op: TokenId,
    v: Vec<VectorElement>,
    s: f64,
    scalar_left: bool,
    return_bool: bool,
) -> Vec<VectorElement> {
    v.into_iter()
        .filter_map(|el| {
            let (l, r) = if scalar_left { (s, el.v) } else { (el.v, s) };
            let (mut value, mut keep) = apply(op, l, r);
            // A comparison keeps the vector's value, whichever side it is on.
            if is_comparison(op) && scalar_left {
                value = el.v;
            }
            if return_bool {
                value = if keep { 1.0 } else { 0.0 };
                keep = true;
            }
            keep.then(|| VectorElement {
                labels: if drops_name(op) || return_bool {
                    drop_name(el.labels)
                } else {
                    el.labels
                },
                v: value,
            })
        })
        .collect()
}

/// The labels two elements are matched on.
fn signature(labels: &Labels, matching: Option<&LabelModifier>) -> Vec<(String, String)> {
    match matching {
        Some(LabelModifier::Include(on)) => on
            .labels
            .iter()
            .map(|k| (k.clone(), labels.get(k).cloned().unwrap_or_default()))
            .filter(|(_, v)| !v.is_empty())
            .collect(),
        Some(LabelModifier::Exclude(ignoring)) => labels
            .iter()
            .filter(|(k, _)| k.as_str() != METRIC_NAME && !ignoring.labels.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        None => labels
            .iter()
            .filter(|(k, _)| k.as_str() != METRIC_NAME)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn and(l: Vec<VectorElement>, r: Vec<VectorElement>, matching: Option<&LabelModifier>) -> Vec<VectorElement> {
    let right: HashSet<_> = r.iter().map(|el| signature(&el.labels, matching)).collect();
    l.into_iter()
        .filter(|el| right.contains(&signature(&el.labels, matching)))
        .collect()
}

fn or(l: Vec<VectorElement>, r: Vec<VectorElement>, matching: Option<&LabelModifier>) -> Vec<VectorElement> {
    let left: HashSet<_> = l.iter().map(|el| signature(&el.labels, matching)).collect();
    let mut out = l;
    out.extend(
        r.into_iter()
            .filter(|el| !left.contains(&signature(&el.labels, matching))),
    );
    out
}

fn unless(l: Vec<VectorElement>, r: Vec<VectorElement>, matching: Option<&LabelModifier>) -> Vec<VectorElement> {
    let right: HashSet<_> = r.iter().map(|el| signature(&el.labels, matching)).collect();
    l.into_iter()
        .filter(|el| !right.contains(&signature(&el.labels, matching)))
        .collect()
}

fn describe(sig: &[(String, String)]) -> String {
    let inner: Vec<String> = sig.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// Arithmetic and comparison between two vectors: Prometheus' `VectorBinop`.
fn vector_vector(
    op: TokenId,
    l: Vec<VectorElement>,
    r: Vec<VectorElement>,
    modifier: &BinModifier,
) -> Result<Vec<VectorElement>, Error> {
    let matching = modifier.matching.as_ref();
    let (card, include) = match &modifier.card {
        VectorMatchCardinality::ManyToOne(include) => (Card::ManyToOne, Some(include)),
        VectorMatchCardinality::OneToMany(include) => (Card::OneToMany, Some(include)),
        VectorMatchCardinality::OneToOne | VectorMatchCardinality::ManyToMany => (Card::OneToOne, None),
    };
    if l.is_empty() || r.is_empty() {
        return Ok(Vec::new());
    }
    // The "many" side is iterated, the "one" side looked up.
    let (many, one) = if card == Card::OneToMany { (r, l) } else { (l, r) };
    let mut one_side: HashMap<Vec<(String, String)>, VectorElement> = HashMap::new();
    for el in one {
        let sig = signature(&el.labels, matching);
        if one_side.contains_key(&sig) {
            let side = if card == Card::OneToMany { "left" } else { "right" };
            return Err(Error::Execution(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: many-to-many matching not allowed: matching labels must be unique on one side",
                describe(&sig)
            )));
        }
        one_side.insert(sig, el);
    }
    let mut matched: HashSet<Vec<(String, String)>> = HashSet::new();
    let mut produced: HashSet<Labels> = HashSet::new();
    let mut out = Vec::new();
    for el in many {
        let sig = signature(&el.labels, matching);
        let Some(other) = one_side.get(&sig) else { continue };
        let (lv, rv) = if card == Card::OneToMany {
            (other.v, el.v)
        } else {
            (el.v, other.v)
        };
        let (mut value, mut keep) = apply(op, lv, rv);
        if modifier.return_bool {
            value = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if !keep {
            continue;
        }
        // As Prometheus: only what the operator kept counts as a match.
        if card == Card::OneToOne && !matched.insert(sig.clone()) {
            return Err(Error::Execution(format!(
                "multiple matches for labels {}: many-to-one matching must be explicit (group_left/group_right)",
                describe(&sig)
            )));
        }
        let mut labels = result_labels(&el.labels, &other.labels, op, card, matching, include);
        if modifier.return_bool {
            labels.remove(METRIC_NAME);
        }
        if card != Card::OneToOne && !produced.insert(labels.clone()) {
            return Err(Error::Execution(format!(
                "multiple matches for labels: grouping labels must ensure uniqueness (result {})",
                describe(&labels.into_iter().collect::<Vec<_>>())
            )));
        }
        out.push(VectorElement { labels, v: value });
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Card {
    OneToOne,
    ManyToOne,
    OneToMany,
}

/// Prometheus' `resultMetric`: the many side's labels, less the metric name for arithmetic,
/// narrowed to the matching labels for one-to-one matching, plus the `group_x` labels taken
/// from the one side.
fn result_labels(
    many: &Labels,
    one: &Labels,
    op: TokenId,
    card: Card,
    matching: Option<&LabelModifier>,
    include: Option<&LabelList>,
) -> Labels {
    let mut labels = many.clone();
    if drops_name(op) {
        labels.remove(METRIC_NAME);
    }
    if card == Card::OneToOne {
        match matching {
            Some(LabelModifier::Include(on)) => labels.retain(|k, _| on.labels.contains(k)),
            Some(LabelModifier::Exclude(ignoring)) => labels.retain(|k, _| !ignoring.labels.contains(k)),
            None => {}
        }
    }
    for name in include.map(|l| l.labels.as_slice()).unwrap_or_default() {
        match one.get(name) {
            Some(v) if !v.is_empty() => {
                labels.insert(name.clone(), v.clone());
            }
            _ => {
                labels.remove(name);
            }
        }
    }
    labels
}
