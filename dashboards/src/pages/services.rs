//! Services: the dependency graph with rate, errors and latency per edge, and the trace
//! waterfall reached from any trace id.

use std::collections::{HashMap, HashSet};

use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use serde_json::Value;

use super::logs::Services;
use super::{Nav, error_page, layout, query_link};
use crate::UiState;
use crate::api::{segment, url};
use crate::auth::Session;
use crate::fmt;
use crate::graph::{self, Graph};

#[derive(Deserialize)]
struct Trace {
    trace_id: String,
    spans: Vec<Value>,
}

pub(crate) async fn page(State(ui): State<UiState>, Extension(session): Extension<Session>) -> Response {
    let graph: Graph = match ui.api.get("/api/v1/services/graph").await {
        Ok(g) => g,
        Err(e) => return error_page(&session, Nav::Services, "Services", &e),
    };
    let end = fmt::now_ms() + 60_000;
    let services_url = url(
        "/api/v1/services",
        &[("start", &(end - 86_400_000).to_string()), ("end", &end.to_string())],
    );
    let services = ui
        .api
        .get::<Services>(&services_url)
        .await
        .map(|s| s.services)
        .unwrap_or_default();
    let mut edges = graph.edges.clone();
    edges.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
    let content = html! {
        div.title-row {
            h1 { "Services" }
            (query_link("/api/v1/services/graph"))
            // The graph shows the last 15 minutes; so does the investigation it starts.
            (super::investigations::investigate_button(&session, end - 60_000 - 900_000, end - 60_000, None))
        }
        form.query method="get" action="/ui/traces" {
            input.mono type="search" name="id" placeholder="trace id (32 hex digits)" required pattern="[0-9a-fA-F]{32}";
            button type="submit" { "Open trace" }
        }
        section #service-graph { (graph::render(&graph, None, &[])) }
        @if !edges.is_empty() {
            h2 { "Calls" }
            table.list #edges {
                thead { tr { th { "Caller" } th { "Callee" } th.num { "Rate" } th.num { "Errors" } th.num { "p50" } th.num { "p99" } } }
                tbody {
                    @for e in &edges {
                        tr {
                            td { (e.from) } td { (e.to) }
                            td.num { (format!("{:.2}/s", e.calls_per_s)) }
                            td.num.bad[e.error_ratio >= 0.05] { (format!("{:.1} %", e.error_ratio * 100.0)) }
                            td.num { (fmt::value(e.p50_s, "s")) }
                            td.num { (fmt::value(e.p99_s, "s")) }
                        }
                    }
                }
            }
        }
        h2 { "Seen in the last 24 hours" }
        @if services.is_empty() { p.empty { "No service has sent spans or logs yet." } } @else {
            table.list #services {
                thead { tr { th { "Service" } th.num { "Spans" } th.num { "Log records" } th {} } }
                tbody {
                    @for s in &services {
                        tr {
                            td { strong { (s.name) } }
                            td.num { (fmt::count(s.spans)) }
                            td.num { (fmt::count(s.logs)) }
                            td { a href=(url("/ui/logs", &[("service", &s.name)])) { "logs" } " · " a href=(url("/ui/incidents", &[])) { "incidents" } }
                        }
                    }
                }
            }
            p.muted { (query_link(&services_url)) }
        }
    };
    layout("Services", Nav::Services, &session, content)
}

/// `/ui/traces?id=…` from the lookup box.
pub(crate) async fn trace_lookup(Query(p): Query<HashMap<String, String>>) -> Response {
    let id = p.get("id").map(|s| s.trim()).unwrap_or("");
    Redirect::to(&format!("/ui/traces/{}", segment(id))).into_response()
}

struct SpanRow<'a> {
    span: &'a Value,
    depth: usize,
    start: i64,
    end: i64,
}

fn ns(v: &Value) -> i64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_i64())
        .unwrap_or(0)
}

/// Depth-first order under each parent, children by start time; orphans (parent not in the
/// trace, e.g. not yet arrived) start their own subtree.
fn waterfall(spans: &[Value]) -> Vec<SpanRow<'_>> {
    let ids: HashSet<&str> = spans.iter().filter_map(|s| s["span_id"].as_str()).collect();
    let mut children: HashMap<&str, Vec<&Value>> = HashMap::new();
    let mut roots: Vec<&Value> = Vec::new();
    for s in spans {
        match s["parent_span_id"]
            .as_str()
            .filter(|p| !p.is_empty() && ids.contains(p))
        {
            Some(p) => children.entry(p).or_default().push(s),
            None => roots.push(s),
        }
    }
    let by_start = |v: &mut Vec<&Value>| v.sort_by_key(|s| ns(&s["start_time_unix_nano"]));
    by_start(&mut roots);
    for c in children.values_mut() {
        by_start(c);
    }
    let mut out = Vec::with_capacity(spans.len());
    let mut stack: Vec<(&Value, usize)> = roots.into_iter().rev().map(|s| (s, 0)).collect();
    let mut seen: HashSet<&str> = HashSet::new();
    while let Some((s, depth)) = stack.pop() {
        let id = s["span_id"].as_str().unwrap_or("");
        if !seen.insert(id) {
            continue;
        }
        out.push(SpanRow {
            span: s,
            depth,
            start: ns(&s["start_time_unix_nano"]),
            end: ns(&s["end_time_unix_nano"]),
        });
        if let Some(c) = children.get(id) {
            stack.extend(c.iter().rev().map(|c| (*c, depth + 1)));
        }
    }
    out
}

pub(crate) async fn trace(
    State(ui): State<UiState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let api_url = format!("/api/v1/traces/{}", segment(&id));
    let t: Trace = match ui.api.get(&api_url).await {
        Ok(t) => t,
        Err(e) => return error_page(&session, Nav::Services, "Trace", &e),
    };
    let rows = waterfall(&t.spans);
    let t0 = rows.iter().map(|r| r.start).min().unwrap_or(0);
    let t1 = rows.iter().map(|r| r.end).max().unwrap_or(t0).max(t0 + 1);
    let total = (t1 - t0) as f64;
    let services: HashSet<&str> = t.spans.iter().filter_map(|s| s["service"].as_str()).collect();
    let content = html! {
        div.title-row { h1 { "Trace " span.mono.muted { (t.trace_id) } } (query_link(&api_url)) }
        p.lead { (rows.len()) " spans across " (services.len()) " services, " (fmt::value(total / 1e9, "s")) " end to end. "
            a href=(url("/ui/logs", &[("q", &format!("trace_id:{}", t.trace_id))])) { "Logs of this trace" } }
        table.waterfall #waterfall {
            thead { tr { th { "Span" } th { "Service" } th.num { "Duration" } th.bar-col { "" } } }
            tbody {
                @for r in &rows {
                    @let error = r.span["status"]["code"].as_i64() == Some(2);
                    @let left = (r.start - t0) as f64 / total * 100.0;
                    @let width = ((r.end - r.start) as f64 / total * 100.0).max(0.3);
                    tr.span.error[error] {
                        td style=(format!("padding-left:{}px", 8 + r.depth * 16)) {
                            details {
                                summary { (r.span["name"].as_str().unwrap_or("")) }
                                pre { (serde_json::to_string_pretty(&serde_json::json!({
                                    "span_id": r.span["span_id"],
                                    "status": r.span["status"],
                                    "attributes": r.span["attributes"],
                                    "events": r.span["events"],
                                    "resource": r.span["resource"],
                                })).unwrap_or_default()) }
                            }
                        }
                        td { (r.span["service"].as_str().unwrap_or("")) }
                        td.num { (fmt::value((r.end - r.start) as f64 / 1e9, "s")) }
                        td.bar-col { div.wf-track { div.wf-bar style=(format!("left:{left:.2}%;width:{width:.2}%")) {} } }
                    }
                }
            }
        }
    };
    layout("Trace", Nav::Services, &session, content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn children_follow_their_parent_and_orphans_stand_alone() {
        let spans = vec![
            json!({"span_id": "b", "parent_span_id": "a", "start_time_unix_nano": "20", "end_time_unix_nano": "30"}),
            json!({"span_id": "a", "parent_span_id": null, "start_time_unix_nano": "10", "end_time_unix_nano": "50"}),
            json!({"span_id": "c", "parent_span_id": "a", "start_time_unix_nano": "15", "end_time_unix_nano": "18"}),
            json!({"span_id": "d", "parent_span_id": "zz", "start_time_unix_nano": "40", "end_time_unix_nano": "45"}),
        ];
        let rows = waterfall(&spans);
        let order: Vec<(&str, usize)> = rows
            .iter()
            .map(|r| (r.span["span_id"].as_str().unwrap_or(""), r.depth))
            .collect();
        assert_eq!(order, vec![("a", 0), ("c", 1), ("b", 1), ("d", 0)]);
    }
}
