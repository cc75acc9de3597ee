//! Alerts: by state, with acknowledge / unacknowledge / resolve / silence / useful / noise,
//! and each alert's own page with its labels, comments and audit trail.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::{Nav, back, csrf_field, error_page, layout, notice, query_link};
use crate::UiState;
use crate::api::{segment, url};
use crate::auth::{Role, Session};
use crate::fmt;
use crate::view::{Alert, AlertState, AuditEntry, Delivery};

#[derive(Deserialize)]
struct AlertList {
    alerts: Vec<Alert>,
}

#[derive(Deserialize)]
struct DeliveryList {
    deliveries: Vec<Delivery>,
}

#[derive(Deserialize)]
pub(crate) struct AuditList {
    pub(crate) entries: Vec<AuditEntry>,
}

const TABS: &[(&str, &str)] = &[
    ("firing", "Firing"),
    ("acknowledged", "Acknowledged"),
    ("silenced", "Silenced"),
    ("resolved", "Resolved"),
];

fn state_badge(a: &Alert) -> Markup {
    if !a.silenced_by.is_empty() {
        return html! { span.badge.silenced { "silenced" } };
    }
    match a.state {
        AlertState::Firing => html! { span.badge.crit { "firing" } },
        AlertState::Acknowledged => html! { span.badge.ack { "acknowledged" } },
        AlertState::Resolved => html! { span.badge.resolved { "resolved" } },
    }
}

/// Matchers that pick this alert out: its labels, as a silence would write them.
fn matchers_of(a: &Alert) -> String {
    let parts: Vec<String> = a
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

fn action_button(a: &Alert, session: &Session, back_to: &str, action: &str, label: &str, class: &str) -> Markup {
    html! {
        form.inline method="post" action={"/ui/alerts/" (segment(&a.id)) "/" (action)} {
            (csrf_field(session))
            input type="hidden" name="back" value=(back_to);
            button type="submit" class=(class) data-action=(action) { (label) }
        }
    }
}

/// The buttons a responder needs on one alert (nothing but the state for a viewer).
pub(crate) fn alert_row_actions(a: &Alert, session: &Session, back_to: &str) -> Markup {
    html! {
        div.alert-actions data-alert=(a.id) {
            span.state { (state_badge(a)) }
            @if let Some(by) = &a.acknowledged_by {
                @if a.state == AlertState::Acknowledged { span.muted { " by " (by) } }
            }
            @if session.can(Role::Responder) {
                @match a.state {
                    AlertState::Firing => { (action_button(a, session, back_to, "ack", "Acknowledge", "primary")) }
                    AlertState::Acknowledged => { (action_button(a, session, back_to, "unack", "Unacknowledge", "")) }
                    AlertState::Resolved => {}
                }
                @if a.state != AlertState::Resolved {
                    (action_button(a, session, back_to, "resolve", "Resolve", ""))
                    a.button href=(url("/ui/silences/new", &[("matchers", &matchers_of(a)), ("back", back_to)])) { "Silence…" }
                }
                (action_button(a, session, back_to, "useful", "Useful", "good"))
                (action_button(a, session, back_to, "noise", "Noise", "bad"))
            }
        }
    }
}

pub(crate) async fn list(
    State(ui): State<UiState>,
    Extension(session): Extension<Session>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let state = params
        .get("state")
        .map(String::as_str)
        .filter(|s| TABS.iter().any(|t| t.0 == *s))
        .unwrap_or("firing");
    let api_url = url("/api/v1/alerts", &[("state", state)]);
    let mut alerts = match ui.api.get::<AlertList>(&api_url).await {
        Ok(l) => l.alerts,
        Err(e) => return error_page(&session, Nav::Alerts, "Alerts", &e),
    };
    alerts.sort_by_key(|a| std::cmp::Reverse(a.starts_at_ms));
    let back_to = url("/ui/alerts", &[("state", state)]);
    let content = html! {
        (notice(params.get("done").map(String::as_str)))
        div.title-row {
            h1 { "Alerts" }
            nav.tabs {
                @for (value, label) in TABS {
                    a href=(url("/ui/alerts", &[("state", value)])) class=[(state == *value).then_some("current")] { (label) }
                }
            }
            (query_link(&api_url))
        }
        @if alerts.is_empty() {
            p.empty #no-alerts { "No " (state) " alerts." }
        } @else {
            table.list #alerts {
                thead { tr { th { "Alert" } th { "Started" } th { "Summary" } th { "State and actions" } } }
                tbody {
                    @for a in &alerts {
                        tr.alert data-id=(a.id) {
                            td {
                                a href={"/ui/alerts/" (segment(&a.id))} { strong { (a.name()) } }
                                div.labels { @for (k, v) in &a.labels { @if k != "alertname" { span.label { (k) "=" (v) } } } }
                            }
                            td { (fmt::time(a.starts_at_ms)) }
                            td.summary {
                                (a.annotations.get("summary").map(String::as_str).unwrap_or(""))
                                @if let Some(inc) = a.annotations.get("vigil_incident_id") {
                                    " " a href={"/ui/incidents/" (segment(inc))} { "report" }
                                }
                            }
                            td { (alert_row_actions(a, &session, &back_to)) }
                        }
                    }
                }
            }
        }
    };
    layout("Alerts", Nav::Alerts, &session, content)
}

pub(crate) async fn detail(
    State(ui): State<UiState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let api_url = format!("/api/v1/alerts/{}", segment(&id));
    let a: Alert = match ui.api.get(&api_url).await {
        Ok(a) => a,
        Err(e) => return error_page(&session, Nav::Alerts, "Alert", &e),
    };
    // The audit trail of this alert: the log is append-only and small at human rates.
    let trail: Vec<AuditEntry> = ui
        .api
        .get::<AuditList>("/api/v1/audit?limit=10000")
        .await
        .map(|l| l.entries.into_iter().filter(|e| e.target == a.id).collect())
        .unwrap_or_default();
    // What was sent about it, to whom, and what each receiver answered.
    let sent: Vec<Delivery> = ui
        .api
        .get::<DeliveryList>(&format!("/api/v1/alerts/{}/notifications?limit=100", segment(&a.id)))
        .await
        .map(|l| l.deliveries)
        .unwrap_or_default();
    let back_to = format!("/ui/alerts/{}", segment(&a.id));
    let content = html! {
        (notice(params.get("done").map(String::as_str)))
        div.title-row {
            h1 { (a.name()) }
            (query_link(&api_url))
        }
        (alert_row_actions(&a, &session, &back_to))
        @if let Some(s) = a.annotations.get("summary") { p.lead { (s) } }
        @if let Some(inc) = a.annotations.get("vigil_incident_id") {
            p { a.button.primary href={"/ui/incidents/" (segment(inc))} { "Open the incident report" } }
        }
        dl.facts {
            dt { "Started" } dd { (fmt::time(a.starts_at_ms)) }
            dt { "Last update" } dd { (fmt::time(a.updated_at_ms)) }
            dt { (if a.state == AlertState::Resolved { "Ended" } else { "Ends unless re-sent" }) } dd { (fmt::time(a.ends_at_ms)) }
            dt { "Received" } dd { (a.received) " times" }
            @if !a.silenced_by.is_empty() { dt { "Silenced by" } dd { (a.silenced_by.join(", ")) } }
            @if !a.inhibited_by.is_empty() { dt { "Inhibited by" } dd { (a.inhibited_by.join(", ")) } }
        }
        h2 { "Labels" }
        div.labels { @for (k, v) in &a.labels { span.label { (k) "=" (v) } } }
        h2 { "Annotations" }
        table.kv { @for (k, v) in &a.annotations { tr { th { (k) } td { (v) } } } }
        h2 { "Comments" }
        @if a.comments.is_empty() { p.empty { "No comments." } }
        ul.comments { @for c in &a.comments { li { span.muted { (fmt::time(c.at_ms)) " " (c.by) ": " } (c.text) } } }
        @if session.can(Role::Responder) {
            form.stack method="post" action={"/ui/alerts/" (segment(&a.id)) "/comment"} {
                (csrf_field(&session))
                input type="hidden" name="back" value=(back_to);
                label { "Add a comment" textarea name="text" rows="2" maxlength="4000" required {} }
                button type="submit" { "Comment" }
            }
        }
        h2 { "Notifications" }
        @if sent.is_empty() { p.empty #notifications { "Nothing sent about this alert yet." } } @else {
            table.list #notifications {
                thead { tr { th { "When" } th { "To" } th { "Why" } th { "Status" } th { "Attempt" } th { "Outcome" } th { "Answer" } } }
                tbody { @for d in &sent { tr {
                    td { (fmt::time(d.at_ms)) }
                    td { (d.receiver) }
                    td { (d.reason) @if let Some(step) = d.step { " (step " (step) ")" } }
                    td { (d.status) }
                    td { (d.attempt) }
                    td { (d.outcome.label()) }
                    td.mono { (d.answer) }
                } } }
            }
        }
        h2 { "Audit trail" }
        @if trail.is_empty() { p.empty #audit-trail { "No human action on this alert yet." } } @else {
            table.list #audit-trail {
                thead { tr { th { "When" } th { "Who" } th { "Action" } th { "Detail" } } }
                tbody { @for e in &trail { tr { td { (fmt::time(e.at_ms)) } td { (e.actor) } td { (e.action) } td { (e.detail) } } } }
            }
        }
    };
    layout(a.name(), Nav::Alerts, &session, content)
}

/// Where to go after an action: the page the form came from, if it is one of ours.
pub(crate) fn back_target(form: &HashMap<String, String>, fallback: &str) -> String {
    match form.get("back") {
        Some(b) if b.starts_with("/ui/") && !b.starts_with("/ui//") => {
            // Drop an earlier notice so they do not pile up.
            match b.find("done=") {
                Some(i) => b[..i].trim_end_matches(['&', '?']).to_string(),
                None => b.clone(),
            }
        }
        _ => fallback.to_string(),
    }
}

pub(crate) fn parse_form(body: &Bytes) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// ack, unack, resolve, comment, useful, noise — each through the API, in the person's name.
pub(crate) async fn act(
    State(ui): State<UiState>,
    Extension(session): Extension<Session>,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let form = parse_form(&body);
    let fallback = format!("/ui/alerts/{}", segment(&id));
    let to = back_target(&form, &fallback);
    let (api_action, payload) = match action.as_str() {
        "ack" | "unack" | "resolve" => (action.as_str(), json!({ "by": session.actor })),
        "comment" => (
            "comment",
            json!({ "by": session.actor, "text": form.get("text").map(String::as_str).unwrap_or("") }),
        ),
        "useful" | "noise" => ("feedback", json!({ "by": session.actor, "verdict": action })),
        _ => {
            let e = crate::api::ApiFailure {
                status: http::StatusCode::NOT_FOUND,
                message: format!("no alert action {action:?}"),
            };
            return error_page(&session, Nav::Alerts, "Alert", &e);
        }
    };
    let api_url = format!("/api/v1/alerts/{}/{api_action}", segment(&id));
    match ui.api.post(&api_url, &payload).await {
        // A comment shows on the page it returns to; no notice needed.
        Ok(_) if action == "comment" => axum::response::IntoResponse::into_response(axum::response::Redirect::to(&to)),
        Ok(answer) if answer["changed"] == json!(false) => back(&to, "unchanged"),
        Ok(_) => back(&to, &action),
        Err(e) => error_page(&session, Nav::Alerts, "The action failed", &e),
    }
}

/// A verdict on one finding, from the incident report.
pub(crate) async fn anomaly_feedback(
    State(ui): State<UiState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let form = parse_form(&body);
    let verdict = match form.get("verdict").map(String::as_str) {
        Some("real") => "real",
        Some("noise") => "noise",
        other => {
            let e = crate::api::ApiFailure {
                status: http::StatusCode::BAD_REQUEST,
                message: format!("verdict must be real or noise, got {other:?}"),
            };
            return error_page(&session, Nav::Incidents, "Feedback", &e);
        }
    };
    let api_url = format!("/api/v1/anomalies/{}/feedback", segment(&id));
    match ui.api.post(&api_url, &json!({ "verdict": verdict })).await {
        Ok(_) => back(
            &back_target(&form, "/ui/incidents"),
            if verdict == "real" { "useful" } else { "noise" },
        ),
        Err(e) => error_page(&session, Nav::Incidents, "Feedback failed", &e),
    }
}
