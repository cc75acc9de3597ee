//! Series-major evaluation of a range query's range functions: `rate(x[5m])` and
//! `sum by (l) (rate(x[5m]))` computed one series at a time over every step, before the
//! step-by-step evaluation, which then reads them back.
//!
//! The step-by-step evaluator holds every selected sample for the whole query: a dashboard
//! panel over 10 k series and a day is 57.6 M samples at 15 s, past any sensible limit. Here
//! the storage hands the series over one at a time ([`Storage::select_each`]); each is turned
//! into its function's value at every step and dropped, so what a query holds is its output:
//! one value per series and step for a bare range function, one per group and step under an
//! aggregation. Prometheus evaluates a function over a range vector series by series too
//! (its engine's `rangeEval`), and counts what is held at once against `--query.max-samples`;
//! so does this.
//!
//! Taken: a range function whose scalar arguments are literals, over a range selector
//! without `@` or `or`, optionally under `sum`, `avg`, `count`, `min`, `max` or `group`; and
//! an instant selector (no `@`, no `or`), alone (`a / b`) or under one of those aggregations
//! (`sum by (mode) (node_memory_…)`); never inside a subquery (whose steps differ from the
//! query's) or `timestamp()`. Everything else is evaluated step by step, as before.

use std::collections::{BTreeMap, HashMap};

use promql_parser::parser::token::{T_AVG, T_COUNT, T_GROUP, T_MAX, T_MIN, T_SUM};
use promql_parser::parser::{AggregateExpr, Call, Expr, LabelModifier, MatrixSelector, VectorSelector};

use crate::aggregate::group_labels;
use crate::eval::{duration_ms, node_id, offset_ms};
use crate::functions::range::RangeOp;
use crate::numeric::RunningMean;
use crate::query::{Query, named};
use crate::value::{Error, Labels, METRIC_NAME, Sample, Series, Storage, is_stale};

/// The steps of a range query, unix ms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Steps {
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) step: i64,
}

impl Steps {
    fn count(self) -> usize {
        usize::try_from((self.end - self.start) / self.step + 1).unwrap_or(0)
    }

    fn time(self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }
}

/// A node evaluated series by series: a range function, maybe under an aggregation, or an
/// instant selector under one.
struct Target<'e> {
    /// The node whose values are computed (the call, or the aggregation above it).
    node: usize,
    input: Input<'e>,
    aggregation: Option<(u16, Option<&'e LabelModifier>)>,
}

/// What each series' value at a step is made from.
#[derive(Clone, Copy)]
enum Input<'e> {
    /// A range function of the samples in `[t − range, t]`.
    Range(RangeOp, &'e MatrixSelector),
    /// The latest sample no older than the lookback delta, unless it is a staleness marker.
    Instant(&'e VectorSelector),
}

impl Input<'_> {
    fn selector(&self) -> &VectorSelector {
        match self {
            Input::Range(_, ms) => &ms.vs,
            Input::Instant(vs) => vs,
        }
    }

    /// Whether its value keeps the metric name (until an aggregation drops it).
    fn keeps_name(&self) -> bool {
        match self {
            Input::Range(op, _) => op.keeps_name(),
            Input::Instant(_) => true,
        }
    }
}

/// The address of a call or aggregation node, by which its values are found.
pub(crate) fn call_id(c: &Call) -> usize {
    std::ptr::from_ref(c) as usize
}

/// As [`call_id`], for an aggregation.
pub(crate) fn aggregate_id(a: &AggregateExpr) -> usize {
    std::ptr::from_ref(a) as usize
}

fn unparen(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

/// `c` as a range function over a plain range selector with literal scalar arguments. An
/// invalid literal (holt_winters' factors) is left to the step-by-step evaluator, which
/// reports it.
fn range_call(c: &Call) -> Option<Input<'_>> {
    let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
    let (op, matrix) = RangeOp::constant_call(c.func.name, &args)?;
    match unparen(matrix) {
        Expr::MatrixSelector(ms) if plain(&ms.vs) => Some(Input::Range(op, ms)),
        _ => None,
    }
}

/// A selector read the same way at every step, one series at a time: no `@`, no `or`.
fn plain(vs: &VectorSelector) -> bool {
    vs.at.is_none() && vs.matchers.or_matchers.is_empty()
}

/// What an aggregation's argument is made from, when it is evaluated series by series.
fn aggregated(e: &Expr) -> Option<Input<'_>> {
    match unparen(e) {
        Expr::Call(c) => range_call(c),
        Expr::VectorSelector(vs) if plain(vs) => Some(Input::Instant(vs)),
        _ => None,
    }
}

/// The nodes of `e` to evaluate series by series.
fn targets<'e>(e: &'e Expr, out: &mut Vec<Target<'e>>) {
    match e {
        Expr::Aggregate(a) => {
            let op = a.op.id();
            if a.param.is_none()
                && [T_SUM, T_AVG, T_COUNT, T_MIN, T_MAX, T_GROUP].contains(&op)
                && let Some(input) = aggregated(&a.expr)
            {
                out.push(Target {
                    node: aggregate_id(a),
                    input,
                    aggregation: Some((op, a.modifier.as_ref())),
                });
                return;
            }
            targets(&a.expr, out);
            if let Some(p) = &a.param {
                targets(p, out);
            }
        }
        Expr::Call(c) => {
            if let Some(input) = range_call(c) {
                out.push(Target {
                    node: call_id(c),
                    input,
                    aggregation: None,
                });
                return;
            }
            // `timestamp(x)` reads its selector's samples, times and all.
            if c.func.name == "timestamp" {
                return;
            }
            for arg in &c.args.args {
                targets(arg, out);
            }
        }
        Expr::Paren(p) => targets(&p.expr, out),
        Expr::Unary(u) => targets(&u.expr, out),
        Expr::Binary(b) => {
            targets(&b.lhs, out);
            targets(&b.rhs, out);
        }
        Expr::VectorSelector(vs) if plain(vs) => out.push(Target {
            node: node_id(vs),
            input: Input::Instant(vs),
            aggregation: None,
        }),
        // A subquery's inner steps are not the query's: evaluated step by step.
        Expr::Subquery(_)
        | Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::Extension(_) => {}
    }
}

/// Evaluates every target of `e` over `steps`, series by series: each node's value at every
/// step, as series whose samples sit at step times.
pub(crate) fn precompute(
    storage: &dyn Storage,
    e: &Expr,
    steps: Steps,
    q: &Query<'_>,
) -> Result<HashMap<usize, Vec<Series>>, Error> {
    let mut found = Vec::new();
    targets(e, &mut found);
    let mut out = HashMap::new();
    for target in found {
        let series = evaluate(storage, &target, steps, q)?;
        out.insert(target.node, series);
    }
    Ok(out)
}

/// Per step of one output: what an aggregation has gathered so far.
#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    members: u32,
    value: f64,
    mean: RunningMean,
}

fn evaluate(storage: &dyn Storage, target: &Target<'_>, steps: Steps, q: &Query<'_>) -> Result<Vec<Series>, Error> {
    let vs = target.input.selector();
    // How far back of each step a series' samples count.
    let back_ms = match target.input {
        Input::Range(_, ms) => duration_ms(&ms.range),
        Input::Instant(_) => q.opts.lookback_ms,
    };
    let offset = offset_ms(&vs.offset);
    let matchers = named(&vs.matchers.matchers, &vs.name);
    let n = steps.count();
    let mut seen = Collisions::default();
    // A bare function: its series; under an aggregation: one row of cells per group.
    let mut plain: Vec<Series> = Vec::new();
    let mut groups: BTreeMap<Labels, Vec<Cell>> = BTreeMap::new();
    let mut values: Vec<Option<f64>> = vec![None; n];
    let mut scratch: Vec<Sample> = Vec::new();
    storage.select_each(
        &matchers,
        steps.start - offset - back_ms,
        steps.end - offset,
        &mut |series: Series| {
            q.check_deadline()?;
            q.check_held(series.samples.len())?;
            let s = &series.samples;
            match target.input {
                Input::Range(op, _) => range_values(op, s, steps, offset, back_ms, &mut values, &mut scratch),
                Input::Instant(_) => instant_values(s, steps, offset, back_ms, &mut values),
            }
            let mut labels = series.labels;
            // The storage's label sets are unique: only dropping the name can make two equal.
            if !target.input.keeps_name() {
                labels.remove(METRIC_NAME);
                seen.check(&labels, &values)?;
            }
            match target.aggregation {
                None => {
                    let samples: Vec<Sample> = values
                        .iter()
                        .enumerate()
                        .filter_map(|(i, v)| v.map(|v| Sample { t: steps.time(i), v }))
                        .collect();
                    q.count(samples.len())?;
                    if !samples.is_empty() {
                        plain.push(Series { labels, samples });
                    }
                }
                Some((op, modifier)) => {
                    let key = group_labels(&labels, modifier);
                    let cells = match groups.get_mut(&key) {
                        Some(cells) => cells,
                        None => {
                            q.count(n)?;
                            groups.entry(key).or_insert_with(|| vec![Cell::default(); n])
                        }
                    };
                    for (cell, v) in cells.iter_mut().zip(&values) {
                        if let Some(v) = *v {
                            fold(cell, op, v);
                        }
                    }
                }
            }
            Ok(())
        },
    )?;
    if target.aggregation.is_none() {
        return Ok(plain);
    }
    let op = target.aggregation.map_or(T_SUM, |(op, _)| op);
    Ok(groups
        .into_iter()
        .map(|(labels, cells)| Series {
            labels,
            samples: cells
                .iter()
                .enumerate()
                .filter(|(_, c)| c.members > 0)
                .map(|(i, c)| Sample {
                    t: steps.time(i),
                    v: finish(c, op),
                })
                .collect(),
        })
        .filter(|s| !s.samples.is_empty())
        .collect())
}

/// `op` of the samples of `s` in each step's window `[t − offset − range_ms, t − offset]`,
/// staleness markers left out; `None` where the window holds no sample.
fn range_values(
    op: RangeOp,
    s: &[Sample],
    steps: Steps,
    offset: i64,
    range_ms: i64,
    values: &mut [Option<f64>],
    scratch: &mut Vec<Sample>,
) {
    let any_stale = s.iter().any(|p| is_stale(p.v));
    let (mut lo, mut hi) = (0, 0);
    for (i, slot) in values.iter_mut().enumerate() {
        let end = steps.time(i) - offset;
        let start = end - range_ms;
        while lo < s.len() && s[lo].t < start {
            lo += 1;
        }
        hi = hi.max(lo);
        while hi < s.len() && s[hi].t <= end {
            hi += 1;
        }
        let window: &[Sample] = if any_stale {
            scratch.clear();
            scratch.extend(s[lo..hi].iter().copied().filter(|p| !is_stale(p.v)));
            scratch
        } else {
            &s[lo..hi]
        };
        *slot = if window.is_empty() {
            None
        } else {
            op.apply(start, end, steps.time(i), window)
        };
    }
}

/// Each step's instant-selector value: the latest sample at or before `t − offset`, if no
/// older than `lookback_ms` and not a staleness marker (which ends the series).
fn instant_values(s: &[Sample], steps: Steps, offset: i64, lookback_ms: i64, values: &mut [Option<f64>]) {
    let mut hi = 0;
    for (i, slot) in values.iter_mut().enumerate() {
        let at = steps.time(i) - offset;
        while hi < s.len() && s[hi].t <= at {
            hi += 1;
        }
        *slot = hi
            .checked_sub(1)
            .map(|last| s[last])
            .filter(|last| last.t >= at - lookback_ms && !is_stale(last.v))
            .map(|last| last.v);
    }
}

/// Adds one member's value to an aggregation's cell, as the step-by-step `aggregate::eval`
/// computes it over the members in the same order.
fn fold(cell: &mut Cell, op: u16, v: f64) {
    let first = cell.members == 0;
    cell.members += 1;
    match op {
        T_SUM => cell.value = if first { v } else { cell.value + v },
        T_AVG => cell.mean.push(v),
        // `min`/`max`: NaN only when every value is NaN (`aggregate::extreme`).
        T_MIN if first || cell.value.is_nan() || v < cell.value => cell.value = v,
        T_MAX if first || cell.value.is_nan() || v > cell.value => cell.value = v,
        _ => {}
    }
}

fn finish(cell: &Cell, op: u16) -> f64 {
    match op {
        T_AVG => cell.mean.value(),
        T_COUNT => f64::from(cell.members),
        T_GROUP => 1.0,
        _ => cell.value,
    }
}

/// Two series whose labels are equal once the metric name is dropped may not both have a
/// value at one step (Prometheus: "vector cannot contain metrics with the same labelset").
#[derive(Default)]
struct Collisions {
    /// The steps each label set had a value at, a bit per step.
    steps: HashMap<Labels, Vec<u64>>,
}

impl Collisions {
    fn check(&mut self, labels: &Labels, values: &[Option<f64>]) -> Result<(), Error> {
        let mut bits = vec![0u64; values.len().div_ceil(64)];
        for (i, v) in values.iter().enumerate() {
            if v.is_some() {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        match self.steps.get_mut(labels) {
            Some(earlier) => {
                if earlier.iter().zip(&bits).any(|(a, b)| a & b != 0) {
                    return Err(Error::Execution(
                        "vector cannot contain metrics with the same labelset".into(),
                    ));
                }
                for (a, b) in earlier.iter_mut().zip(&bits) {
                    *a |= b;
                }
            }
            None => {
                self.steps.insert(labels.clone(), bits);
            }
        }
        Ok(())
    }
}
