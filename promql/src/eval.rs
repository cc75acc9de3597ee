//! Evaluation: a query is planned (which series, over which times), its series are read
//! once, and the expression is evaluated at each step from them.

use std::collections::BTreeMap;
use std::rc::Rc;

use promql_parser::parser::{self, Expr, MatrixSelector, Offset, SubqueryExpr, VectorSelector};

use crate::query::Query;
use crate::stream::{Steps, aggregate_id, call_id};
use crate::value::{Error, Labels, Options, Sample, Series, Storage, Value, VectorElement, drop_name, is_stale};

/// Times and durations are held within this many milliseconds of the epoch (about 3,000
/// years): arithmetic on a few of them cannot overflow, whatever a query asks for.
pub(crate) const MAX_ABS_MS: i64 = 100_000_000_000_000;

fn check_time(name: &str, t_ms: i64) -> Result<(), Error> {
    if !(-MAX_ABS_MS..=MAX_ABS_MS).contains(&t_ms) {
        return Err(Error::BadData(format!(
            "invalid parameter \"{name}\": {t_ms} ms is out of range"
        )));
    }
    Ok(())
}

/// Evaluates `query` at `t_ms` (Prometheus' `/api/v1/query`).
pub fn instant_query(storage: &dyn Storage, query: &str, t_ms: i64, opts: &Options) -> Result<Value, Error> {
    check_time("time", t_ms)?;
    let expr = parse(query)?;
    // One step: a range function over many series is read series by series here too.
    let steps = Steps {
        start: t_ms,
        end: t_ms,
        step: 1,
    };
    let q = Query::load(storage, &expr, t_ms, t_ms, opts, Some(steps))?;
    let ev = Evaluator {
        q: &q,
        start: t_ms,
        end: t_ms,
        step: 1,
    };
    let value = ev.eval(&expr, t_ms)?;
    q.check_deadline()?;
    Ok(value)
}

/// Evaluates `query` at every `step_ms` from `start_ms` to `end_ms` (Prometheus'
/// `/api/v1/query_range`): one series per label set, sorted by labels.
pub fn range_query(
    storage: &dyn Storage,
    query: &str,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
    opts: &Options,
) -> Result<Vec<Series>, Error> {
    range_query_with(storage, query, start_ms, end_ms, step_ms, opts, true)
}

/// [`range_query`], with the series-major evaluation of range functions ([`crate::stream`])
/// or without (the tests compare the two).
pub(crate) fn range_query_with(
    storage: &dyn Storage,
    query: &str,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
    opts: &Options,
    series_major: bool,
) -> Result<Vec<Series>, Error> {
    if step_ms <= 0 {
        return Err(Error::BadData(
            "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
        ));
    }
    check_time("start", start_ms)?;
    check_time("end", end_ms)?;
    if end_ms < start_ms {
        return Err(Error::BadData("end timestamp must not be before start time".into()));
    }
    if (end_ms - start_ms) / step_ms > opts.max_steps {
        return Err(Error::BadData(format!(
            "exceeded maximum resolution of {} points per timeseries. Try decreasing the query resolution (?step=XX)",
            opts.max_steps
        )));
    }
    let expr = parse(query)?;
    if let parser::value::ValueType::Matrix | parser::value::ValueType::String = expr.value_type() {
        return Err(Error::BadData(format!(
            "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
            type_name(&expr)
        )));
    }
    let steps = series_major.then_some(Steps {
        start: start_ms,
        end: end_ms,
        step: step_ms,
    });
    let q = Query::load(storage, &expr, start_ms, end_ms, opts, steps)?;
    let ev = Evaluator {
        q: &q,
        start: start_ms,
        end: end_ms,
        step: step_ms,
    };
    ev.range(&expr)
}

fn type_name(e: &Expr) -> &'static str {
    match e.value_type() {
        parser::value::ValueType::Vector => "instant vector",
        parser::value::ValueType::Scalar => "scalar",
        parser::value::ValueType::Matrix => "range vector",
        parser::value::ValueType::String => "string",
    }
}

fn parse(query: &str) -> Result<Expr, Error> {
    if query.trim().is_empty() {
        return Err(Error::BadData("invalid parameter \"query\": empty query".into()));
    }
    // The parser panics on some malformed numbers (`foo[1e400]`): bad input, not a crash.
    match std::panic::catch_unwind(|| parser::parse(query)) {
        Ok(parsed) => parsed.map_err(|e| Error::BadData(format!("invalid parameter \"query\": {e}"))),
        Err(_) => Err(Error::BadData(
            "invalid parameter \"query\": the expression could not be parsed (a number or duration out of range?)"
                .into(),
        )),
    }
}

/// Milliseconds an `offset` moves a selector back in time (negative: forward).
pub(crate) fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        None => 0,
        Some(Offset::Pos(d)) => duration_ms(d),
        Some(Offset::Neg(d)) => -duration_ms(d),
    }
}

/// A duration in milliseconds, at most [`MAX_ABS_MS`].
pub(crate) fn duration_ms(d: &std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).min(MAX_ABS_MS)
}

/// Where a window's series live: a selector's data (read once for the query) or a
/// subquery's result (cached for the evaluator's range).
enum Source<'q> {
    Selected(&'q [Series]),
    Subquery(Rc<Vec<Series>>),
}

/// A range vector at one evaluation time: each series' samples inside the window, borrowed
/// (a window is made at every step for every series: copying them was most of a range
/// query's time).
pub(crate) struct Window<'q> {
    source: Source<'q>,
    /// (series index, first sample, one past the last) of each series with samples inside.
    parts: Vec<(usize, usize, usize)>,
    /// The window's edges, unix ms (both inclusive).
    pub(crate) start: i64,
    pub(crate) end: i64,
}

impl<'q> Window<'q> {
    fn new(source: Source<'q>, start: i64, end: i64) -> Window<'q> {
        let all: &[Series] = match &source {
            Source::Selected(s) => s,
            Source::Subquery(s) => s,
        };
        let parts = all
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let lo = s.samples.partition_point(|p| p.t < start);
                let hi = s.samples.partition_point(|p| p.t <= end);
                // Staleness markers are not samples of a window.
                s.samples[lo..hi].iter().any(|p| !is_stale(p.v)).then_some((i, lo, hi))
            })
            .collect();
        Window {
            source,
            parts,
            start,
            end,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Calls `f` with each series' labels and its samples in the window, markers left out.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Labels, &[Sample])) {
        let all: &[Series] = match &self.source {
            Source::Selected(s) => s,
            Source::Subquery(s) => s,
        };
        for &(i, lo, hi) in &self.parts {
            let s = &all[i];
            let samples = &s.samples[lo..hi];
            if samples.iter().any(|p| is_stale(p.v)) {
                let kept: Vec<Sample> = samples.iter().copied().filter(|p| !is_stale(p.v)).collect();
                f(&s.labels, &kept);
            } else {
                f(&s.labels, samples);
            }
        }
    }

    /// The window as series (the answer to an instant query for a range vector).
    pub(crate) fn into_matrix(self) -> Vec<Series> {
        let mut out = Vec::with_capacity(self.parts.len());
        self.for_each(|labels, samples| {
            out.push(Series {
                labels: labels.clone(),
                samples: samples.to_vec(),
            });
        });
        out
    }
}

/// Evaluates expressions at times within `[start, end]`, stepping by `step` (subqueries
/// inside evaluate over that range).
pub(crate) struct Evaluator<'q, 'a> {
    pub(crate) q: &'q Query<'a>,
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) step: i64,
}

impl<'q> Evaluator<'q, '_> {
    /// The expression at every step of the evaluator's range, as series.
    pub(crate) fn range(&self, e: &Expr) -> Result<Vec<Series>, Error> {
        let mut out: BTreeMap<Labels, Vec<Sample>> = BTreeMap::new();
        let mut t = self.start;
        while t <= self.end {
            self.q.check_deadline()?;
            // Each step counts, answer or not: a subquery with a tiny step over a long range
            // is bounded by the sample limit, not only by the timeout.
            self.q.count(1)?;
            match self.eval(e, t)? {
                Value::Scalar(v) => out.entry(Labels::new()).or_default().push(Sample { t, v }),
                Value::Vector(elements) => {
                    self.q.count(elements.len())?;
                    for el in elements {
                        out.entry(el.labels).or_default().push(Sample { t, v: el.v });
                    }
                }
                other => {
                    return Err(Error::Execution(format!(
                        "expression evaluated to {} where an instant vector or scalar was expected",
                        value_name(&other)
                    )));
                }
            }
            t += self.step;
        }
        Ok(out
            .into_iter()
            .map(|(labels, samples)| Series { labels, samples })
            .collect())
    }

    /// The expression's value at `t`.
    pub(crate) fn eval(&self, e: &Expr, t: i64) -> Result<Value, Error> {
        match e {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Value::Scalar(v) => Ok(Value::Scalar(-v)),
                Value::Vector(v) => {
                    let negated: Vec<VectorElement> = v
                        .into_iter()
                        .map(|el| VectorElement {
                            labels: drop_name(el.labels),
                            v: -el.v,
                        })
                        .collect();
                    crate::functions::unique(&negated)?;
                    Ok(Value::Vector(negated))
                }
                other => Err(Error::Execution(format!(
                    "unary minus applied to {}",
                    value_name(&other)
                ))),
            },
            Expr::VectorSelector(vs) => match self.q.precomputed_at(node_id(vs), t) {
                Some(v) => Ok(v),
                None => Ok(Value::Vector(self.instant_selector(vs, t))),
            },
            Expr::MatrixSelector(_) | Expr::Subquery(_) => Ok(Value::Matrix(self.window(e, t)?.into_matrix())),
            Expr::Binary(b) => {
                let v = crate::binary::eval(self, b, t)?;
                if let Value::Vector(elements) = &v {
                    crate::functions::unique(elements)?;
                }
                Ok(v)
            }
            Expr::Aggregate(a) => match self.q.precomputed_at(aggregate_id(a), t) {
                Some(v) => Ok(v),
                None => crate::aggregate::eval(self, a, t),
            },
            Expr::Call(c) => match self.q.precomputed_at(call_id(c), t) {
                Some(v) => Ok(v),
                None => crate::functions::call(self, c, t),
            },
            Expr::Extension(_) => Err(Error::Execution("extension expressions are not supported".into())),
        }
    }

    /// Evaluates `e` expecting an instant vector.
    pub(crate) fn vector(&self, e: &Expr, t: i64) -> Result<Vec<VectorElement>, Error> {
        match self.eval(e, t)? {
            Value::Vector(v) => Ok(v),
            other => Err(Error::Execution(format!(
                "expected an instant vector, got {}",
                value_name(&other)
            ))),
        }
    }

    /// Evaluates `e` expecting a scalar.
    pub(crate) fn scalar(&self, e: &Expr, t: i64) -> Result<f64, Error> {
        match self.eval(e, t)? {
            Value::Scalar(v) => Ok(v),
            other => Err(Error::Execution(format!(
                "expected a scalar, got {}",
                value_name(&other)
            ))),
        }
    }

    /// Evaluates `e` expecting a string.
    pub(crate) fn string(&self, e: &Expr, t: i64) -> Result<String, Error> {
        match self.eval(e, t)? {
            Value::String(s) => Ok(s),
            other => Err(Error::Execution(format!(
                "expected a string, got {}",
                value_name(&other)
            ))),
        }
    }

    /// Each series' latest sample no older than the lookback delta.
    fn instant_selector(&self, vs: &VectorSelector, t: i64) -> Vec<VectorElement> {
        self.instant_samples(vs, t)
            .into_iter()
            .map(|(labels, s)| VectorElement { labels, v: s.v })
            .collect()
    }

    /// As [`Self::instant_selector`], with each sample's own timestamp (for `timestamp()`).
    pub(crate) fn instant_samples(&self, vs: &VectorSelector, t: i64) -> Vec<(Labels, Sample)> {
        let at = vs.at.as_ref().map_or(t, |a| self.q.at_ms(a)) - offset_ms(&vs.offset);
        let Some(series) = self.q.data.get(&node_id(vs)) else {
            return Vec::new();
        };
        let lookback = self.q.opts.lookback_ms;
        series
            .iter()
            .filter_map(|s| {
                let i = s.samples.partition_point(|p| p.t <= at);
                let last = s.samples.get(i.checked_sub(1)?)?;
                // A staleness marker ends the series: nothing to select after it.
                (last.t >= at - lookback && !is_stale(last.v)).then(|| (s.labels.clone(), *last))
            })
            .collect()
    }

    /// A range selector's or subquery's samples at `t`.
    pub(crate) fn window(&self, e: &Expr, t: i64) -> Result<Window<'q>, Error> {
        match e {
            Expr::MatrixSelector(ms) => Ok(self.matrix_selector(ms, t)),
            Expr::Subquery(sq) => self.subquery(sq, t),
            Expr::Paren(p) => self.window(&p.expr, t),
            other => Err(Error::Execution(format!(
                "expected a range vector, got {}",
                type_name(other)
            ))),
        }
    }

    fn matrix_selector(&self, ms: &MatrixSelector, t: i64) -> Window<'q> {
        let vs = &ms.vs;
        let range_ms = duration_ms(&ms.range);
        let end = vs.at.as_ref().map_or(t, |a| self.q.at_ms(a)) - offset_ms(&vs.offset);
        let start = end - range_ms;
        let q: &'q Query<'_> = self.q;
        let selected: &'q [Series] = q.data.get(&node_id(vs)).map_or(&[], Vec::as_slice);
        Window::new(Source::Selected(selected), start, end)
    }

    fn subquery(&self, sq: &SubqueryExpr, t: i64) -> Result<Window<'q>, Error> {
        let offset = offset_ms(&sq.offset);
        let range_ms = duration_ms(&sq.range);
        let step = sq
            .step
            .as_ref()
            .map_or(self.q.opts.default_subquery_step_ms, duration_ms)
            .max(1);
        let (from, to) = match &sq.at {
            Some(at) => {
                let at = self.q.at_ms(at);
                (at, at)
            }
            None => (self.start, self.end),
        };
        let key = (std::ptr::from_ref(sq) as usize, from, to);
        let cached = self.q.subqueries.borrow().get(&key).cloned();
        let inner = match cached {
            Some(m) => m,
            None => {
                // Prometheus' alignment: the first multiple of the step at or after the
                // earliest time any outer step needs.
                let lo = from - offset - range_ms;
                let aligned = lo.div_euclid(step) * step + if lo.rem_euclid(step) == 0 { 0 } else { step };
                let sub = Evaluator {
                    q: self.q,
                    start: aligned,
                    end: to - offset,
                    step,
                };
                let m = Rc::new(sub.range(&sq.expr)?);
                self.q.subqueries.borrow_mut().insert(key, Rc::clone(&m));
                m
            }
        };
        let end = sq.at.as_ref().map_or(t, |a| self.q.at_ms(a)) - offset;
        let start = end - range_ms;
        Ok(Window::new(Source::Subquery(inner), start, end))
    }
}

/// The identity of a selector node within one parsed query.
pub(crate) fn node_id(vs: &VectorSelector) -> usize {
    std::ptr::from_ref(vs) as usize
}

pub(crate) fn value_name(v: &Value) -> &'static str {
    match v {
        Value::Scalar(_) => "scalar",
        Value::String(_) => "string",
        Value::Vector(_) => "instant vector",
        Value::Matrix(_) => "range vector",
    }
}
