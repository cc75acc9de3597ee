//! Which samples a query needs: every selector with the time span its evaluations will read,
//! so each is read from storage once, before evaluation.

use std::collections::HashMap;

use promql_parser::parser::{Expr, VectorSelector};

use crate::eval::{duration_ms, node_id, offset_ms};
use crate::query::Query;
use crate::stream::{aggregate_id, call_id};

/// One selector and the times it is read over, unix ms (both inclusive).
pub(crate) struct Needs<'e> {
    pub(crate) selector: &'e VectorSelector,
    pub(crate) start: i64,
    pub(crate) end: i64,
}

/// Walks `e`, evaluated at times within `[start, end]`, noting what each selector reads.
pub(crate) fn plan<'e>(e: &'e Expr, start: i64, end: i64, q: &Query<'_>, out: &mut HashMap<usize, Needs<'e>>) {
    match e {
        Expr::VectorSelector(vs) if q.is_precomputed(node_id(vs)) => {}
        Expr::VectorSelector(vs) => note(vs, start, end, q.opts.lookback_ms, q, out),
        Expr::MatrixSelector(ms) => note(&ms.vs, start, end, duration_ms(&ms.range), q, out),
        Expr::Subquery(sq) => {
            let (from, to) = match &sq.at {
                Some(at) => (q.at_ms(at), q.at_ms(at)),
                None => (start, end),
            };
            let offset = offset_ms(&sq.offset);
            plan(&sq.expr, from - offset - duration_ms(&sq.range), to - offset, q, out);
        }
        Expr::Paren(p) => plan(&p.expr, start, end, q, out),
        Expr::Unary(u) => plan(&u.expr, start, end, q, out),
        Expr::Binary(b) => {
            plan(&b.lhs, start, end, q, out);
            plan(&b.rhs, start, end, q, out);
        }
        // Evaluated series by series before the steps: read there.
        Expr::Aggregate(a) if q.is_precomputed(aggregate_id(a)) => {}
        Expr::Call(c) if q.is_precomputed(call_id(c)) => {}
        Expr::Aggregate(a) => {
            plan(&a.expr, start, end, q, out);
            if let Some(p) = &a.param {
                plan(p, start, end, q, out);
            }
        }
        Expr::Call(c) => {
            for arg in &c.args.args {
                plan(arg, start, end, q, out);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn note<'e>(
    vs: &'e VectorSelector,
    start: i64,
    end: i64,
    back_ms: i64,
    q: &Query<'_>,
    out: &mut HashMap<usize, Needs<'e>>,
) {
    let (from, to) = match &vs.at {
        Some(at) => (q.at_ms(at), q.at_ms(at)),
        None => (start, end),
    };
    let offset = offset_ms(&vs.offset);
    let (lo, hi) = (from - offset - back_ms, to - offset);
    out.entry(node_id(vs))
        .and_modify(|n| {
            n.start = n.start.min(lo);
            n.end = n.end.max(hi);
        })
        .or_insert(Needs {
            selector: vs,
            start: lo,
            end: hi,
        });
}
