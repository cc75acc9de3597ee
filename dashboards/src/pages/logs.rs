//! Log search: a query box (tantivy syntax, the parser's error shown inline), time range,
//! service filter, a volume histogram, results newest first, and the Patterns tab.

use std::collections::HashMap;

use axum::extract::{Extension, Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::incidents::{Histogram, body_text};
use super::{Nav, error_page, layout, query_link};
use crate::UiState;
use crate::api::{ApiFailure, segment, url};
use crate::auth::Session;
use crate::chart::{bar_chart, sparkline};
use crate::fmt;

const PAGE: usize = 100;
/// Patterns given a sparkline (each costs one histogram query).
const SPARKLINES: usize = 25;

#[derive(Deserialize)]
struct Hits {
    total: u64,
    hits: Vec<Value>,
    #[serde(default)]
    took_ms: f64,
}

#[derive(Deserialize)]
struct Patterns {
    patterns: Vec<Pattern>,
}

#[derive(Deserialize)]
struct Pattern {
    pattern_id: u64,
    template: Option<String>,
    count: u64,
    first_seen: Option<String>,
    is_new: bool,
    sample: Option<Value>,
}

#[derive(Deserialize)]
pub(crate) struct Services {
    pub(crate) services: Vec<ServiceSummary>,
}

#[derive(Deserialize)]
pub(crate) struct ServiceSummary {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) spans: u64,
    #[serde(default)]
    pub(crate) logs: u64,
}

fn severity_class(n: i64) -> &'static str {
    match n {
        17.. => "sev error",
        13..=16 => "sev warn",
        9..=12 => "sev info",
        1..=8 => "sev debug",
        _ => "sev",
    }
}

/// The query form shared by both tabs.
fn form(p: &HashMap<String, String>, services: &[ServiceSummary], range: &str, tab: &str) -> Markup {
    let q = p.get("q").map(String::as_str).unwrap_or("");
    let service = p.get("service").map(String::as_str).unwrap_or("");
    html! {
        form.query #log-query method="get" action="/ui/logs" {
            input type="hidden" name="tab" value=(tab);
            @if let Some(pat) = p.get("pattern").filter(|v| !v.is_empty()) { input type="hidden" name="pattern" value=(pat); }
            input.mono #q type="search" name="q" value=(q) placeholder="tantivy query: body:timeout AND severity_text:ERROR — empty for everything" autocomplete="off";
            select name="service" aria-label="service" {
                option value="" { "all services" }
                @for s in services {
                    option value=(s.name) selected[s.name == service] { (s.name) " (" (fmt::count(s.logs)) ")" }
                }
            }
            select name="range" aria-label="time range" {
                @for (value, label, _) in fmt::RANGES { option value=(value) selected[*value == range] { (label) } }
            }
            button.primary type="submit" { "Search" }
        }
    }
}

pub(crate) async fn page(
    State(ui): State<UiState>,
    Extension(session): Extension<Session>,
    Query(p): Query<HashMap<String, String>>,
) -> Response {
    let (range, span) = fmt::range_ms(p.get("range").map(String::as_str), "24h");
    let end = fmt::now_ms() + 60_000;
    let start = end - span;
    let (start_s, end_s) = (start.to_string(), end.to_string());
    let tab = if p.get("tab").map(String::as_str) == Some("patterns") {
        "patterns"
    } else {
        "results"
    };
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
    let services = ui
        .api
        .get::<Services>(&url("/api/v1/services", &[("start", &start_s), ("end", &end_s)]))
        .await
        .map(|s| s.services)
        .unwrap_or_default();
    let filter = [
        ("q", get("q")),
        ("service", get("service")),
        ("pattern", get("pattern")),
        ("start", start_s.as_str()),
        ("end", end_s.as_str()),
    ];
    let here = |t: &str| {
        url(
            "/ui/logs",
            &[
                ("q", get("q")),
                ("service", get("service")),
                ("pattern", get("pattern")),
                ("range", &range),
                ("tab", t),
            ],
        )
    };
    let body = if tab == "patterns" {
        patterns_tab(&ui, &filter, start, end, &range).await
    } else {
        match results_tab(&ui, &filter, start, end).await {
            Ok(m) => m,
            Err(e) if e.is_bad_request() => html! {
                p.error #query-error role="alert" { "Query error: " (e.message) }
            },
            Err(e) => return error_page(&session, Nav::Logs, "Logs", &e),
        }
    };
    let content = html! {
        div.title-row { h1 { "Logs" } (super::investigations::investigate_button(&session, start, end.min(fmt::now_ms()), None)) }
        (form(&p, &services, &range, tab))
        @if let Some(pat) = p.get("pattern").filter(|v| !v.is_empty()) {
            p.filter-note { "Only pattern " strong.mono { (pat) } ". "
                a href=(url("/ui/logs", &[("q", get("q")), ("service", get("service")), ("range", &range)])) { "Show all patterns" } }
        }
        nav.tabs.page-tabs {
            a #tab-results href=(here("results")) class=[(tab == "results").then_some("current")] { "Results" }
            a #tab-patterns href=(here("patterns")) class=[(tab == "patterns").then_some("current")] { "Patterns" }
        }
        (body)
    };
    layout("Logs", Nav::Logs, &session, content)
}

async fn results_tab(ui: &UiState, filter: &[(&str, &str)], start: i64, end: i64) -> Result<Markup, ApiFailure> {
    let mut search_params = filter.to_vec();
    let limit = PAGE.to_string();
    search_params.push(("limit", &limit));
    let search_url = url("/api/v1/logs/search", &search_params);
    let hits: Hits = ui.api.get(&search_url).await?;
    let histogram_url = url("/api/v1/logs/histogram", filter);
    let histogram: Option<Histogram> = ui.api.get(&histogram_url).await.ok();
    Ok(html! {
        @if let Some(h) = &histogram {
            @let buckets: Vec<(i64, u64)> = h.buckets.iter().map(|b| (b.start_ms, b.count)).collect();
            div #volume { (bar_chart("log volume", &buckets, h.interval_ms, start, end)) }
        }
        p.muted #result-count {
            (hits.total) " matching records" @if hits.total > hits.hits.len() as u64 { ", newest " (hits.hits.len()) " shown" }
            " · " (format!("{:.0}", hits.took_ms)) " ms · " (query_link(&search_url)) " " (query_link(&histogram_url))
        }
        @if hits.hits.is_empty() {
            p.empty #no-results { "No log records match in this range." }
        } @else {
            table.list.logs #log-results {
                thead { tr { th { "Time" } th { "Level" } th { "Service" } th { "Message" } } }
                tbody {
                    @for h in &hits.hits {
                        @let sev = h["severity_number"].as_i64().unwrap_or(0);
                        @let level = h["severity_text"].as_str().filter(|s| !s.is_empty()).map(str::to_string).unwrap_or_else(|| if sev > 0 { sev.to_string() } else { String::new() });
                        tr.log {
                            td.mono.nowrap { (h["timestamp"].as_str().map(|t| t.replace('T', " ")).unwrap_or_default().chars().take(23).collect::<String>()) }
                            td { span class=(severity_class(sev)) { (level) } }
                            td { (h["service"].as_str().unwrap_or("")) }
                            td.body {
                                details {
                                    summary.mono { (body_text(&h["body"])) }
                                    div.attrs {
                                        @if let Some(pid) = h["pattern_id"].as_u64() {
                                            a href=(url("/ui/logs", &[("pattern", &pid.to_string())])) { "pattern " (pid) } " "
                                        }
                                        @if let Some(t) = h["trace_id"].as_str().filter(|t| !t.is_empty()) {
                                            a href={"/ui/traces/" (segment(t))} { "trace " span.mono { (t) } }
                                        }
                                        pre { (serde_json::to_string_pretty(&serde_json::json!({
                                            "attributes": h["attributes"],
                                            "resource": h["resource"],
                                            "scope": h["scope"],
                                        })).unwrap_or_default()) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    })
}

async fn patterns_tab(ui: &UiState, filter: &[(&str, &str)], start: i64, end: i64, range: &str) -> Markup {
    let mut params = filter.to_vec();
    params.push(("limit", "100"));
    let api_url = url("/api/v1/logs/patterns", &params);
    let patterns = match ui.api.get::<Patterns>(&api_url).await {
        Ok(p) => p.patterns,
        Err(e) => return html! { p.error #query-error role="alert" { "Query error: " (e.message) } },
    };
    // One histogram per pattern for the sparklines, run side by side.
    let interval = ((end - start) / 24).max(1000);
    let interval_s = format!("{}ms", interval);
    let mut tasks = tokio::task::JoinSet::new();
    for p in patterns.iter().take(SPARKLINES) {
        let api = ui.api.clone();
        let mut params: Vec<(&str, String)> = filter
            .iter()
            .filter(|(k, _)| *k != "pattern")
            .map(|(k, v)| (*k, v.to_string()))
            .collect();
        params.push(("pattern", p.pattern_id.to_string()));
        params.push(("interval", interval_s.clone()));
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let u = url("/api/v1/logs/histogram", &pairs);
        let id = p.pattern_id;
        tasks.spawn(async move { (id, api.get::<Histogram>(&u).await.ok()) });
    }
    let mut sparks: HashMap<u64, Vec<u64>> = HashMap::new();
    while let Some(Ok((id, h))) = tasks.join_next().await {
        if let Some(h) = h {
            sparks.insert(id, h.buckets.iter().map(|b| b.count).collect());
        }
    }
    html! {
        p.muted { (patterns.len()) " patterns in range · " (query_link(&api_url)) }
        @if patterns.is_empty() {
            p.empty #no-patterns { "No log patterns in this range." }
        } @else {
            table.list #patterns {
                thead { tr { th { "Count" } th { "Trend" } th { "Pattern" } th { "First seen" } } }
                tbody {
                    @for p in &patterns {
                        tr.pattern data-pattern=(p.pattern_id) {
                            td.num { (fmt::count(p.count)) }
                            td { @if let Some(s) = sparks.get(&p.pattern_id) { (sparkline(s)) } }
                            td {
                                @if p.is_new { span.badge.new { "new" } " " }
                                a.mono href=(url("/ui/logs", &[("pattern", &p.pattern_id.to_string()), ("range", range)])) {
                                    (p.template.as_deref().unwrap_or("(pattern evicted from the miner)"))
                                }
                                @if let Some(s) = &p.sample { div.sample.mono.muted { (body_text(s)) } }
                            }
                            td.nowrap { (p.first_seen.as_deref().map(|t| t.replace('T', " ")).unwrap_or_default().chars().take(19).collect::<String>()) }
                        }
                    }
                }
            }
        }
    }
}
