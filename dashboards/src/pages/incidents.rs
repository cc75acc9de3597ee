//! The incident list and the incident report: what broke, where it started, the evidence,
//! and the buttons to act on the alert it raised.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Extension, Path, Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::{Nav, error_page, layout, notice, query_link};
use crate::UiState;
use crate::api::{segment, url};
use crate::auth::Session;
use crate::chart::{Line, TimeChart, bar_chart, time_chart};
use crate::fmt;
use crate::graph::{self, Graph};
use crate::view::{Alert, Anomaly, Incident, IncidentStatus, Member, Severity};

/// Evidence charts drawn per report; the rest of the findings are listed in words.
const MAX_CHARTS: usize = 8;

#[derive(Deserialize)]
struct IncidentList {
    incidents: Vec<Incident>,
}

#[derive(Deserialize)]
struct Report {
    #[serde(flatten)]
    incident: Incident,
    #[serde(default)]
    evidence: Vec<Evidence>,
    /// The investigation of the incident's first minutes that ranks its candidates.
    #[serde(default)]
    investigation: Option<String>,
}

#[derive(Deserialize)]
struct Evidence {
    anomaly: Option<Anomaly>,
    query: String,
    logs: String,
    #[serde(default)]
    sample_lines: Vec<Value>,
    #[serde(default)]
    traces: Vec<String>,
}

#[derive(Deserialize)]
struct AlertList {
    alerts: Vec<Alert>,
}

/// `GET /api/v1/logs/histogram`.
#[derive(Deserialize)]
pub(crate) struct Histogram {
    pub(crate) interval_ms: i64,
    pub(crate) buckets: Vec<Bucket>,
}

#[derive(Deserialize)]
pub(crate) struct Bucket {
    pub(crate) start_ms: i64,
    pub(crate) count: u64,
}

pub(crate) fn severity_badge(s: Severity) -> Markup {
    html! { span class=(s.class()) { (s.label()) } }
}

fn status_badge(s: IncidentStatus) -> Markup {
    match s {
        IncidentStatus::Open => html! { span.badge.open { (s.label()) } },
        IncidentStatus::Resolved => html! { span.badge.resolved { (s.label()) } },
    }
}

pub(crate) async fn list(
    State(ui): State<UiState>,
    Extension(session): Extension<Session>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let status = params.get("status").map(String::as_str).unwrap_or("");
    let api_url = url("/api/v1/incidents", &[("status", status), ("limit", "100")]);
    let list: IncidentList = match ui.api.get(&api_url).await {
        Ok(l) => l,
        Err(e) => return error_page(&session, Nav::Incidents, "Incidents", &e),
    };
    let now = fmt::now_ms();
    let content = html! {
        div.title-row {
            h1 { "Incidents" }
            nav.tabs {
                @for (value, label) in [("", "all"), ("open", "open"), ("resolved", "resolved")] {
                    a href=(url("/ui/incidents", &[("status", value)])) class=[(status == value).then_some("current")] { (label) }
                }
            }
            (query_link(&api_url))
        }
        @if list.incidents.is_empty() {
            p.empty #no-incidents {
                "No incidents" @if !status.is_empty() { " " (status) } ". Vigil opens one when anomalies in related services start together; "
                "they appear here, and the alert they raise links back."
            }
        } @else {
            table.list #incidents {
                thead { tr { th { "State" } th { "Severity" } th { "Started" } th { "Duration" } th { "Services" } th { "Likely root cause" } th { "Summary" } } }
                tbody {
                    @for inc in &list.incidents {
                        @let end = if inc.status == IncidentStatus::Open { now.max(inc.end_ms) } else { inc.end_ms };
                        tr.incident data-id=(inc.id) {
                            td { (status_badge(inc.status)) }
                            td { (severity_badge(inc.severity)) }
                            td { a href={"/ui/incidents/" (segment(&inc.id))} { time datetime=(fmt::iso(inc.start_ms)) { (fmt::time(inc.start_ms)) } } }
                            td { (fmt::duration(end - inc.start_ms)) }
                            td { (inc.services.join(", ")) }
                            td { @if let Some(c) = inc.candidates.first() { strong { (c.service) } } }
                            td.summary { a href={"/ui/incidents/" (segment(&inc.id))} { (inc.summary) } }
                        }
                    }
                }
            }
        }
    };
    layout("Incidents", Nav::Incidents, &session, content)
}

pub(crate) async fn report(
    State(ui): State<UiState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let api_url = format!("/api/v1/incidents/{}", segment(&id));
    let report: Report = match ui.api.get(&api_url).await {
        Ok(r) => r,
        Err(e) => return error_page(&session, Nav::Incidents, "Incident", &e),
    };
    let inc = &report.incident;
    // The graph and the alert are garnish: the report stands without them.
    let graph: Graph = ui.api.get("/api/v1/services/graph").await.unwrap_or_default();
    let alert = ui
        .api
        .get::<AlertList>("/api/v1/alerts")
        .await
        .ok()
        .and_then(|l| l.alerts.into_iter().find(|a| a.labels.get("incident") == Some(&inc.id)));
    let root = inc.candidates.first().map(|c| c.service.as_str());
    let affected: Vec<String> = inc
        .services
        .iter()
        .filter(|s| Some(s.as_str()) != root)
        .cloned()
        .collect();
    let now = fmt::now_ms();
    let end = if inc.status == IncidentStatus::Open {
        now.max(inc.end_ms)
    } else {
        inc.end_ms
    };

    // Charts for the strongest findings.
    let mut ranked: Vec<&Evidence> = report.evidence.iter().filter(|e| e.anomaly.is_some()).collect();
    ranked.sort_by(|a, b| {
        let s = |e: &Evidence| e.anomaly.as_ref().map_or(0.0, |a| a.score);
        s(b).total_cmp(&s(a))
    });
    let back_to = format!("/ui/incidents/{}", segment(&inc.id));
    let mut charts: Vec<Markup> = Vec::new();
    for ev in ranked.iter().take(MAX_CHARTS) {
        charts.push(evidence_card(&ui, ev, &session, &back_to).await);
    }
    let rest: Vec<&&Evidence> = ranked.iter().skip(MAX_CHARTS).collect();

    let content = html! {
        (notice(params.get("done").map(String::as_str)))
        div.title-row {
            h1 { "Incident " span.muted.mono { (inc.id) } }
            (status_badge(inc.status))
            (severity_badge(inc.severity))
            (query_link(&api_url))
            (super::investigations::investigate_button(&session, inc.start_ms - 60_000, end, Some(&inc.id)))
        }
        p.lead #summary { (inc.summary) }
        dl.facts {
            dt { "Started" } dd { time datetime=(fmt::iso(inc.start_ms)) { (fmt::time(inc.start_ms)) } }
            dt { "Duration" } dd { (fmt::duration(end - inc.start_ms)) @if inc.status == IncidentStatus::Open { " so far" } }
            dt { "Services" } dd { (inc.services.join(", ")) }
            dt { "Findings" } dd { (inc.timeline.len()) }
        }
        @if let Some(a) = &alert {
            section.actions #incident-alert {
                h2 { "Alert" }
                (super::alerts::alert_row_actions(a, &session, &back_to))
            }
        }
        section #root-causes {
            h2 { "Likely root causes" }
            @if let Some(inv) = &report.investigation {
                p.muted { "Ranked by comparing the incident's first minutes with a baseline over every stored signal: "
                    a href={"/ui/investigations/" (segment(inv))} { "the investigation" } "." }
            }
            @if inc.candidates.is_empty() {
                p.empty { "Not ranked yet." }
            } @else {
                ol.candidates {
                    @for (i, c) in inc.candidates.iter().enumerate() {
                        li.candidate.first[i == 0] data-service=(c.service) {
                            (candidate_head(i + 1, &c.service, c.score, &c.signal))
                            ul.reasons { @for r in &c.reasons { li { (r) } } }
                        }
                    }
                }
            }
        }
        section #service-graph {
            h2 { "Where it sits" }
            (graph::render(&graph, root, &affected))
            p.muted { "Red: likely root cause. Amber: other services in this incident. " (query_link("/api/v1/services/graph")) }
        }
        section #timeline {
            h2 { "Timeline" }
            (timeline(&inc.timeline, inc.start_ms, end))
        }
        section #evidence {
            h2 { "Evidence" }
            @if charts.is_empty() { p.empty { "The findings of this incident are no longer stored." } }
            @for c in &charts { (c) }
            @if !rest.is_empty() {
                h3 { "More findings" }
                ul {
                    @for ev in &rest {
                        @if let Some(a) = &ev.anomaly {
                            li { (a.explanation) " " (query_link(&ev.query)) }
                        }
                    }
                }
            }
        }
    };
    layout(&format!("Incident {}", inc.id), Nav::Incidents, &session, content)
}

/// One row per service, one bar per finding, across the incident's span.
/// A ranked candidate's heading, the same in incident and investigation reports: rank,
/// service, score, the signal to look at first (when known), a link to its logs.
pub(crate) fn candidate_head(rank: usize, service: &str, score: f64, signal: &str) -> Markup {
    html! {
        div.cand-head {
            span.rank { (rank) }
            strong.service { (service) }
            span.score title="rank score" { (format!("{score:.2}")) }
            @if !signal.is_empty() { span.muted { " — " (signal) } }
            a.query href=(url("/ui/logs", &[("service", service)])) { "logs" }
        }
    }
}

fn timeline(members: &[Member], start_ms: i64, end_ms: i64) -> Markup {
    // From before the earliest finding: resource metrics that moved before the first
    // symptom (the incident's start) stay in its timeline as context.
    let first = members.iter().map(|m| m.start_ms).min().unwrap_or(start_ms);
    let from = first.min(start_ms) - 120_000;
    let to = end_ms.max(start_ms + 60_000) + 60_000;
    let mut by_service: BTreeMap<&str, Vec<&Member>> = BTreeMap::new();
    for m in members {
        by_service.entry(m.service.as_str()).or_default().push(m);
    }
    // Services in order of their first finding: where it started reads first.
    let mut rows: Vec<(&str, Vec<&Member>)> = by_service.into_iter().collect();
    rows.sort_by_key(|(_, ms)| ms.iter().map(|m| m.start_ms).min().unwrap_or(0));
    let span = (to - from).max(1) as f64;
    let pct = |t: i64| ((t - from) as f64 / span * 100.0).clamp(0.0, 100.0);
    html! {
        div.timeline {
            div.tl-axis {
                span { (fmt::clock(from)) }
                span { (fmt::clock(from + (to - from) / 2)) }
                span { (fmt::clock(to)) }
            }
            @for (service, ms) in &rows {
                div.tl-row {
                    div.tl-label { (service) }
                    div.tl-track {
                        @for m in ms {
                            @let left = pct(m.start_ms);
                            @let width = (pct(m.end_ms.max(m.start_ms + 1000)) - left).max(0.8);
                            a class={"tl-bar " (m.detector.family())}
                                href={"#a-" (m.anomaly_id)}
                                style=(format!("left:{left:.2}%;width:{width:.2}%"))
                                title=(format!("{} — {}", fmt::clock(m.start_ms), m.explanation)) {}
                        }
                    }
                }
            }
            div.tl-legend { span.metrics { "metrics" } span.logs { "logs" } span.traces { "traces" } }
        }
    }
}

/// A finding with its chart, its explanation, sample lines and exemplar traces.
async fn evidence_card(ui: &UiState, ev: &Evidence, session: &Session, back_to: &str) -> Markup {
    let Some(a) = &ev.anomaly else { return html! {} };
    let chart = if a.evidence.len() >= 2 {
        let first = a.evidence.first().map_or(a.start_ms, |p| p.t_ms);
        let last = a.evidence.last().map_or(a.end_ms, |p| p.t_ms);
        let step = (last - first) / (a.evidence.len() as i64 - 1).max(1);
        time_chart(&TimeChart {
            label: &a.signal.name,
            unit: &a.unit,
            start_ms: first,
            end_ms: last.max(first + 1) + step / 2,
            lines: vec![Line {
                name: a.signal.name.clone(),
                points: a.evidence.iter().map(|p| (p.t_ms, p.value)).collect(),
            }],
            band: a
                .evidence
                .iter()
                .filter_map(|p| Some((p.t_ms, p.lower?, p.upper?)))
                .collect(),
            marks: a
                .evidence
                .iter()
                .filter(|p| p.anomalous)
                .map(|p| (p.t_ms, p.value))
                .collect(),
            regions: vec![(a.start_ms, a.end_ms)],
            width: 720.0,
            height: 200.0,
        })
    } else if let Some(pattern) = a.signal.labels.get("pattern") {
        let (from, to) = (a.start_ms - 1_800_000, a.end_ms.max(a.start_ms) + 300_000);
        let api = url(
            "/api/v1/logs/histogram",
            &[
                ("pattern", pattern),
                ("start", &from.to_string()),
                ("end", &to.to_string()),
                ("interval", "1m"),
            ],
        );
        match ui.api.get::<Histogram>(&api).await {
            Ok(h) => {
                let buckets: Vec<(i64, u64)> = h.buckets.iter().map(|b| (b.start_ms, b.count)).collect();
                bar_chart(
                    &format!("pattern {pattern} per minute"),
                    &buckets,
                    h.interval_ms,
                    from,
                    to,
                )
            }
            Err(_) => html! {},
        }
    } else {
        html! {}
    };
    let ui_link = match a.signal.labels.get("pattern") {
        Some(p) => url("/ui/logs", &[("pattern", p)]),
        None if a.detector.is_metric() => {
            let labels: Vec<String> = a
                .signal
                .labels
                .iter()
                .filter(|(k, _)| k.as_str() != "peers")
                .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
                .collect();
            url(
                "/ui/metrics",
                &[("name", &a.signal.name), ("labels", &labels.join(","))],
            )
        }
        None => url("/ui/logs", &[("service", a.signal.service.as_deref().unwrap_or(""))]),
    };
    html! {
        article.evidence id={"a-" (a.id)} data-detector=(a.detector.family()) {
            header {
                (severity_badge(a.severity))
                strong { (a.signal.service.as_deref().unwrap_or("")) }
                span { " " (a.signal.name) }
                span.links {
                    a href=(ui_link) { "explore" }
                    (query_link(&ev.query))
                    a.query href=(ev.logs) title="the log query for this window" { "logs query" }
                }
            }
            p.explanation { (a.explanation) }
            (chart)
            @if session.can(crate::auth::Role::Responder) {
                div.verdict {
                    span.muted { "Was this finding right? " }
                    @for (verdict, label, class) in [("real", "Real problem", "good"), ("noise", "Noise", "bad")] {
                        form.inline method="post" action={"/ui/anomalies/" (segment(&a.id)) "/feedback"} {
                            (super::csrf_field(session))
                            input type="hidden" name="back" value=(back_to);
                            input type="hidden" name="verdict" value=(verdict);
                            button type="submit" class=(class) data-verdict=(verdict) { (label) }
                        }
                    }
                }
            }
            @if !ev.sample_lines.is_empty() {
                h4 { "Sample lines" }
                ul.samples {
                    @for l in &ev.sample_lines {
                        li.mono { span.muted { (l["timestamp"].as_str().unwrap_or("")) " " } (body_text(&l["body"])) }
                    }
                }
            }
            @if !a.exemplars.is_empty() {
                p.traces { "Exemplar traces: "
                    @for t in &a.exemplars { a.mono href={"/ui/traces/" (segment(t))} { (t) } " " }
                    @for t in &ev.traces { (query_link(t)) " " }
                }
            }
        }
    }
}

/// A log body as text: strings as they are, anything else as compact JSON.
pub(crate) fn body_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
