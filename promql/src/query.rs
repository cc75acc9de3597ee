//! One query's data and limits: what its selectors read (planned first, read once), what was
//! evaluated series by series, its sample budget and deadline, shared by every evaluator it
//! creates.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Instant, UNIX_EPOCH};

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{AtModifier, Expr};

use crate::eval::duration_ms;
use crate::plan::{Needs, plan};
use crate::stream::Steps;
use crate::value::{Error, Labels, METRIC_NAME, Options, Series, Storage, Value, VectorElement};

/// A subquery node (by address) and the range it was evaluated over.
pub(crate) type SubqueryKey = (usize, i64, i64);

/// One query's data and limits, shared by every evaluator it creates.
pub(crate) struct Query<'a> {
    pub(crate) opts: &'a Options,
    deadline: Instant,
    /// The query's own range, for `@ start()` and `@ end()`.
    start: i64,
    end: i64,
    /// Series read for each selector (by the selector node's address).
    pub(crate) data: HashMap<usize, Vec<Series>>,
    /// Subqueries evaluated over an evaluator's whole range, by (node, range).
    pub(crate) subqueries: RefCell<HashMap<SubqueryKey, Rc<Vec<Series>>>>,
    /// `label_replace`'s regular expressions, compiled once per query rather than at every
    /// step (its pattern is a string literal, so a query holds few).
    regexes: RefCell<HashMap<String, Rc<regex::Regex>>>,
    samples: Cell<usize>,
    /// Nodes evaluated series by series over a range query's steps (by the node's address):
    /// their value at every step.
    precomputed: HashMap<usize, Vec<Series>>,
}

impl<'a> Query<'a> {
    /// `pattern` anchored and compiled, as `label_replace` matches it (whole value, `.` across
    /// newlines); compiled once per query.
    pub(crate) fn anchored_regex(&self, pattern: &str) -> Result<Rc<regex::Regex>, regex::Error> {
        if let Some(re) = self.regexes.borrow().get(pattern) {
            return Ok(Rc::clone(re));
        }
        let re = Rc::new(regex::Regex::new(&format!("^(?s:{pattern})$"))?);
        self.regexes.borrow_mut().insert(pattern.to_string(), Rc::clone(&re));
        Ok(re)
    }

    /// Reads what `expr` needs over `[start, end]`; with `steps`, what can be is evaluated
    /// series by series first.
    pub(crate) fn load(
        storage: &dyn Storage,
        expr: &Expr,
        start: i64,
        end: i64,
        opts: &'a Options,
        steps: Option<Steps>,
    ) -> Result<Query<'a>, Error> {
        let mut q = Query {
            opts,
            deadline: Instant::now() + opts.timeout,
            start,
            end,
            data: HashMap::new(),
            subqueries: RefCell::new(HashMap::new()),
            regexes: RefCell::new(HashMap::new()),
            samples: Cell::new(0),
            precomputed: HashMap::new(),
        };
        if let Some(steps) = steps {
            q.precomputed = crate::stream::precompute(storage, expr, steps, &q)?;
        }
        let mut needs: HashMap<usize, Needs<'_>> = HashMap::new();
        plan(expr, start, end, &q, &mut needs);
        for (node, need) in needs {
            q.check_deadline()?;
            let name = &need.selector.name;
            let mut series = if need.selector.matchers.or_matchers.is_empty() {
                storage.select(&named(&need.selector.matchers.matchers, name), need.start, need.end)?
            } else {
                // `{a="1" or b="2"}`: the union of each alternative, once per series.
                let mut union: BTreeMap<Labels, Series> = BTreeMap::new();
                for alternative in &need.selector.matchers.or_matchers {
                    for s in storage.select(&named(alternative, name), need.start, need.end)? {
                        union.entry(s.labels.clone()).or_insert(s);
                    }
                }
                union.into_values().collect()
            };
            series.retain(|s| !s.samples.is_empty());
            q.count(series.iter().map(|s| s.samples.len()).sum())?;
            q.data.insert(node, series);
        }
        Ok(q)
    }

    /// Counts samples loaded or produced against the query's limit.
    pub(crate) fn count(&self, n: usize) -> Result<(), Error> {
        let total = self.samples.get().saturating_add(n);
        self.samples.set(total);
        if total > self.opts.max_samples {
            return Err(too_many_samples(self.opts.max_samples));
        }
        Ok(())
    }

    /// Whether `n` more samples may be held for a moment (one series being read) without
    /// passing the limit; they are not counted.
    pub(crate) fn check_held(&self, n: usize) -> Result<(), Error> {
        if self.samples.get().saturating_add(n) > self.opts.max_samples {
            return Err(too_many_samples(self.opts.max_samples));
        }
        Ok(())
    }

    /// Whether a node was evaluated series by series.
    pub(crate) fn is_precomputed(&self, node: usize) -> bool {
        self.precomputed.contains_key(&node)
    }

    /// A node evaluated series by series: its value at `t`, or `None` when it was not.
    pub(crate) fn precomputed_at(&self, node: usize, t: i64) -> Option<Value> {
        let series = self.precomputed.get(&node)?;
        Some(Value::Vector(
            series
                .iter()
                .filter_map(|s| {
                    let i = s.samples.binary_search_by_key(&t, |p| p.t).ok()?;
                    Some(VectorElement {
                        labels: s.labels.clone(),
                        v: s.samples[i].v,
                    })
                })
                .collect(),
        ))
    }

    pub(crate) fn check_deadline(&self) -> Result<(), Error> {
        if Instant::now() > self.deadline {
            return Err(Error::Timeout(format!(
                "query timed out in expression evaluation (timeout {:?})",
                self.opts.timeout
            )));
        }
        Ok(())
    }

    /// The time an `@` modifier pins evaluation to, unix ms.
    pub(crate) fn at_ms(&self, at: &AtModifier) -> i64 {
        match at {
            AtModifier::Start => self.start,
            AtModifier::End => self.end,
            AtModifier::At(t) => match t.duration_since(UNIX_EPOCH) {
                Ok(d) => duration_ms(&d),
                Err(e) => -duration_ms(&e.duration()),
            },
        }
    }
}

fn too_many_samples(limit: usize) -> Error {
    Error::Execution(format!(
        "query processing would load too many samples into memory in query execution (limit {limit})"
    ))
}

/// A selector's `matchers` with its metric name, if it names one, as a `__name__` matcher.
pub(crate) fn named(matchers: &[Matcher], name: &Option<String>) -> Vec<Matcher> {
    let mut all = matchers.to_vec();
    if let Some(name) = name {
        all.push(Matcher::new(MatchOp::Equal, METRIC_NAME, name));
    }
    all
}
