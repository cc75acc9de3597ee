//! Investigations: "what changed between these times, and where?" — started from any page
//! with a time range (logs, metrics, services) or from an incident, and their reports.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::alerts::parse_form;
use super::{Nav, csrf_field, error_page, layout, query_link};
use crate::UiState;
use crate::api::{ApiFailure, segment};
use crate::auth::{Role, Session};
use crate::fmt;
use crate::view::{Candidate, Evidence};

#[derive(Debug, Clone, Copy, Deserialize)]
struct Range {
    start: i64,
    end: i64,
}

/// What `GET /api/v1/investigations/{id}` answers (the parts shown).
#[derive(Debug, Deserialize)]
struct Report {
    id: String,
    window: Range,
    baseline: Range,
    baseline_reason: String,
    #[serde(default)]
    lead_in: Option<Range>,
    #[serde(default)]
    services: Vec<String>,
    #[serde(default)]
    incident: Option<String>,
    candidates: Vec<Candidate>,
    #[serde(default)]
    notes: Vec<String>,
    read: ReadCounts,
    took_ms: f64,
}

#[derive(Debug, Deserialize)]
struct ReadCounts {
    window_spans: u64,
    baseline_spans: u64,
    window_log_lines: u64,
    baseline_log_lines: u64,
    metric_series: u64,
}

#[derive(Debug, Deserialize)]
struct ListEntry {
    id: String,
    window: Range,
    #[serde(default)]
    incident: Option<String>,
    #[serde(default)]
    services: Vec<String>,
    candidates: Vec<ListCandidate>,
}

#[derive(Debug, Deserialize)]
struct ListCandidate {
    service: String,
    score: f64,
}

#[derive(Debug, Deserialize)]
struct List {
    investigations: Vec<ListEntry>,
}

/// The "Investigate" button for a time range: a form that starts one (responders only;
/// a viewer reads reports but does not start the work).
pub(crate) fn investigate_button(session: &Session, start_ms: i64, end_ms: i64, incident: Option<&str>) -> Markup {
    html! {
        @if session.can(Role::Responder) {
            form.inline.investigate method="post" action="/ui/investigations" {
                (csrf_field(session))
                input type="hidden" name="start" value=(start_ms);
                input type="hidden" name="end" value=(end_ms);
                @if let Some(id) = incident { input type="hidden" name="incident" value=(id); }
                button type="submit" title="Compare this time range with a baseline over every stored signal and rank the services behind what changed" { "Investigate" }
            }
        }
    }
}

pub(crate) async fn list(State(ui): State<UiState>, Extension(session): Extension<Session>) -> Response {
    let list: List = match ui.api.get("/api/v1/investigations?limit=100").await {
        Ok(l) => l,
        Err(e) => return error_page(&session, Nav::Investigations, "Investigations", &e),
    };
    let now = fmt::now_ms();
    let content = html! {
        div.title-row { h1 { "Investigations" } (query_link("/api/v1/investigations")) }
        p.lead {
            "Pick a time range where something went wrong; Vigil compares it with a baseline it chooses from the stored data — log patterns, spans' own time and failures, metrics — and ranks the services behind what changed."
        }
        section #new-investigation {
            h2 { "Investigate the last…" }
            div.quick {
                @for (label, minutes) in [("15 minutes", 15), ("30 minutes", 30), ("hour", 60)] {
                    (quick_button(&session, label, now - minutes * 60_000, now))
                }
            }
        }
        @if list.investigations.is_empty() {
            p.empty { "No investigations yet. Start one here, or with the Investigate button on an incident, the logs, metrics or services page." }
        } @else {
            table.list #investigations {
                thead { tr { th { "Window" } th { "Length" } th { "Most likely" } th { "Then" } th { "From" } } }
                tbody {
                    @for i in &list.investigations {
                        tr {
                            td { a href={"/ui/investigations/" (segment(&i.id))} { (fmt::time(i.window.start)) } }
                            td { (fmt::duration(i.window.end - i.window.start)) }
                            td {
                                @match i.candidates.first() {
                                    Some(c) => { strong { (c.service) } " " span.muted { (format!("{:.2}", c.score)) } }
                                    None => { span.muted { "nothing changed" } }
                                }
                            }
                            td { (i.candidates.iter().skip(1).take(2).map(|c| c.service.as_str()).collect::<Vec<_>>().join(", ")) }
                            td {
                                @if let Some(id) = &i.incident { a href={"/ui/incidents/" (segment(id))} { "incident" } }
                                @else if !i.services.is_empty() { (i.services.join(", ")) }
                            }
                        }
                    }
                }
            }
        }
    };
    layout("Investigations", Nav::Investigations, &session, content)
}

fn quick_button(session: &Session, label: &str, start: i64, end: i64) -> Markup {
    html! {
        @if session.can(Role::Responder) {
            form.inline method="post" action="/ui/investigations" {
                (csrf_field(session))
                input type="hidden" name="start" value=(start);
                input type="hidden" name="end" value=(end);
                button type="submit" { (label) }
            }
        }
    }
}

/// Starts an investigation through the API and shows its report.
pub(crate) async fn create(State(ui): State<UiState>, Extension(session): Extension<Session>, body: Bytes) -> Response {
    let form: HashMap<String, String> = parse_form(&body);
    let number = |k: &str| form.get(k).and_then(|v| v.trim().parse::<i64>().ok());
    let (Some(start), Some(end)) = (number("start"), number("end")) else {
        let e = ApiFailure {
            status: http::StatusCode::BAD_REQUEST,
            message: "an investigation needs a start and an end (unix milliseconds)".into(),
        };
        return error_page(&session, Nav::Investigations, "Investigation", &e);
    };
    let services: Vec<&str> = form
        .get("services")
        .map(|s| s.split(',').map(str::trim).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let mut body = json!({ "start": start, "end": end, "services": services });
    if let Some(id) = form.get("incident").filter(|v| !v.is_empty()) {
        body["incident"] = json!(id);
    }
    match ui.api.post("/api/v1/investigations", &body).await {
        Ok(answer) => match answer.get("id").and_then(|v| v.as_str()) {
            Some(id) => Redirect::to(&format!("/ui/investigations/{}", segment(id))).into_response(),
            None => Redirect::to("/ui/investigations").into_response(),
        },
        Err(e) => error_page(&session, Nav::Investigations, "Investigation", &e),
    }
}

fn evidence_row(e: &Evidence) -> Markup {
    html! {
        li.evidence data-kind=(e.kind.label()) {
            span.badge { (e.kind.label()) }
            @if e.new { " " span.badge.new { "new" } }
            " " (e.sentence)
            " " span.muted title="robust σ of the change" { (format!("({:.1}σ)", e.strength)) }
            @if let Some(q) = &e.query { " " (query_link(q)) }
            @if let Some(t) = &e.template { div.mono.template { (t) } }
            @if !e.samples.is_empty() {
                @if e.kind.samples_are_traces() {
                    div.samples { "Traces: "
                        @for t in &e.samples { a.mono href={"/ui/traces/" (segment(t))} { (t.get(..12).unwrap_or(t)) } " " }
                    }
                } @else {
                    ul.samples { @for s in &e.samples { li.mono { (s) } } }
                }
            }
        }
    }
}

pub(crate) async fn report(
    State(ui): State<UiState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let api_url = format!("/api/v1/investigations/{}", segment(&id));
    let r: Report = match ui.api.get(&api_url).await {
        Ok(r) => r,
        Err(e) => return error_page(&session, Nav::Investigations, "Investigation", &e),
    };
    let content = html! {
        div.title-row {
            h1 { "Investigation " span.muted.mono { (r.id) } }
            (query_link(&api_url))
        }
        dl.facts {
            dt { "Window" } dd { (fmt::time(r.window.start)) " – " (fmt::clock(r.window.end)) " (" (fmt::duration(r.window.end - r.window.start)) ")" }
            dt { "Compared with" } dd { (fmt::time(r.baseline.start)) " – " (fmt::clock(r.baseline.end)) ": " (r.baseline_reason) }
            @if let Some(l) = r.lead_in {
                dt { "Onset" } dd { "Changes already under way " (fmt::time(l.start)) " – " (fmt::clock(l.end)) " count only by how much more they moved in the window" }
            }
            @if !r.services.is_empty() { dt { "Services" } dd { (r.services.join(", ")) } }
            @if let Some(inc) = &r.incident { dt { "Incident" } dd { a href={"/ui/incidents/" (segment(inc))} { (inc) } } }
            dt { "Read" } dd {
                (fmt::count(r.read.window_spans)) " spans and " (fmt::count(r.read.window_log_lines)) " log lines in the window, "
                (fmt::count(r.read.baseline_spans)) " and " (fmt::count(r.read.baseline_log_lines)) " in the baseline, "
                (r.read.metric_series) " metric series; " (format!("{:.0}", r.took_ms)) " ms"
            }
        }
        @for n in &r.notes { p.notice role="status" { (n) } }
        section #root-causes {
            h2 { "Most likely behind what changed" }
            @if r.candidates.is_empty() {
                p.empty { "Nothing in the window is far from the baseline." }
            } @else {
                ol.candidates {
                    @for (i, c) in r.candidates.iter().enumerate() {
                        li.candidate.first[i == 0] data-service=(c.service) {
                            (super::incidents::candidate_head(i + 1, &c.service, c.score, ""))
                            ul.reasons { @for reason in &c.reasons { li { (reason) } } }
                            details open[i == 0] {
                                summary { "Evidence (" (c.evidence.len()) ")" }
                                ul.evidence-list { @for e in &c.evidence { (evidence_row(e)) } }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(
        &format!("Investigation {}", r.id),
        Nav::Investigations,
        &session,
        content,
    )
}
