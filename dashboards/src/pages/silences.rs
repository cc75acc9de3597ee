//! Silences (list, create with prefilled matchers, expire) and the audit log.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use serde_json::json;

use super::alerts::{AuditList, back_target, parse_form};
use super::{Nav, back, csrf_field, error_page, layout, notice, query_link};
use crate::UiState;
use crate::api::{ApiFailure, segment, url};
use crate::auth::{Role, Session};
use crate::fmt;
use crate::view::Silence;

#[derive(Deserialize)]
struct SilenceList {
    silences: Vec<Silence>,
}

/// Durations offered for a new silence: (parameter, label, milliseconds).
const DURATIONS: &[(&str, &str, i64)] = &[
    ("1h", "1 hour", 3_600_000),
    ("2h", "2 hours", 7_200_000),
    ("4h", "4 hours", 14_400_000),
    ("24h", "1 day", 86_400_000),
    ("168h", "1 week", 604_800_000),
];

pub(crate) async fn list(
    State(ui): State<UiState>,
    Extension(session): Extension<Session>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let mut silences = match ui.api.get::<SilenceList>("/api/v1/silences").await {
        Ok(l) => l.silences,
        Err(e) => return error_page(&session, Nav::Silences, "Silences", &e),
    };
    let now = fmt::now_ms();
    silences.sort_by_key(|s| std::cmp::Reverse(s.created_at_ms));
    let content = html! {
        (notice(params.get("done").map(String::as_str)))
        div.title-row {
            h1 { "Silences" }
            @if session.can(Role::Responder) { a.button.primary href="/ui/silences/new" { "New silence" } }
            (query_link("/api/v1/silences"))
        }
        @if silences.is_empty() {
            p.empty #no-silences { "No silences. A silence mutes the notifications of matching alerts for a while; the alerts still show here." }
        } @else {
            table.list #silences {
                thead { tr { th { "State" } th { "Matchers" } th { "From" } th { "Until" } th { "By" } th { "Comment" } th {} } }
                tbody {
                    @for s in &silences {
                        @let active = s.is_active(now);
                        @let pending = s.starts_at_ms > now;
                        tr.silence data-id=(s.id) {
                            td { @if active { span.badge.silenced { "active" } } @else if pending { span.badge.info { "pending" } } @else { span.badge.resolved { "expired" } } }
                            td.mono { @for m in &s.matchers { span.label { (m.text()) } } }
                            td { (fmt::time(s.starts_at_ms)) }
                            td { (fmt::time(s.ends_at_ms)) }
                            td { (s.created_by) }
                            td { (s.comment) }
                            td {
                                @if (active || pending) && session.can(Role::Responder) {
                                    form.inline method="post" action={"/ui/silences/" (segment(&s.id)) "/expire"} {
                                        (csrf_field(&session))
                                        button type="submit" { "Expire" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout("Silences", Nav::Silences, &session, content)
}

pub(crate) async fn new_form(
    State(ui): State<UiState>,
    Extension(session): Extension<Session>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    silence_form(&ui, &session, &params).await
}

/// The form again, with the alerts its matchers would mute now (the Preview button).
pub(crate) async fn preview(
    State(ui): State<UiState>,
    Extension(session): Extension<Session>,
    body: Bytes,
) -> Response {
    silence_form(&ui, &session, &parse_form(&body)).await
}

/// An alert as `GET /api/v2/alerts` lists it (the parts the preview shows).
#[derive(Deserialize)]
struct Listed {
    fingerprint: String,
    labels: std::collections::BTreeMap<String, String>,
    status: ListedStatus,
}

#[derive(Deserialize)]
struct ListedStatus {
    state: String,
}

/// The new-silence form, filled from `fields`; when they hold matchers, the alerts those
/// match now — what the silence will mute — or the parser's objection.
async fn silence_form(ui: &UiState, session: &Session, fields: &HashMap<String, String>) -> Response {
    let matchers = fields.get("matchers").cloned().unwrap_or_default();
    let comment = fields.get("comment").cloned().unwrap_or_default();
    let duration = fields.get("duration").cloned().unwrap_or_else(|| "2h".into());
    let mut error = fields.get("error").cloned();
    let back_to = back_target(fields, "/ui/silences");
    let matched: Option<Vec<Listed>> = if matchers.trim().is_empty() {
        None
    } else {
        match ui
            .api
            .get::<Vec<Listed>>(&url("/api/v2/alerts", &[("filter", &matchers)]))
            .await
        {
            Ok(list) => Some(list),
            Err(e) => {
                error.get_or_insert(e.message);
                None
            }
        }
    };
    let content = html! {
        h1 { "New silence" }
        @if let Some(e) = &error { p.error #silence-error { (e) } }
        form.stack method="post" action="/ui/silences" {
            (csrf_field(session))
            input type="hidden" name="back" value=(back_to);
            label { "Matchers " span.muted { "(label=\"value\", label=~\"regex\", label!=\"value\")" }
                input.mono type="text" name="matchers" value=(matchers) required placeholder="{alertname=\"HighLatency\", service=\"checkout\"}"; }
            label { "For"
                select name="duration" {
                    @for (value, label, _) in DURATIONS { option value=(value) selected[*value == duration] { (label) } }
                }
            }
            label { "Comment" input type="text" name="comment" value=(comment) maxlength="1000" placeholder="why, and a ticket if there is one"; }
            div.actions {
                button type="submit" formaction="/ui/silences/preview" { "Preview" }
                button.primary type="submit" { "Create silence" }
            }
        }
        @if let Some(list) = &matched {
            h2 { "What it would mute now" }
            @if list.is_empty() {
                p.empty #silence-preview { "No alert matches these matchers now (it will still mute any that come while it lasts)." }
            } @else {
                p { (list.len()) " alert" @if list.len() != 1 { "s" } " match:" }
                table.list #silence-preview {
                    thead { tr { th { "Alert" } th { "State" } th { "Labels" } } }
                    tbody { @for a in list { tr {
                        td { a href={"/ui/alerts/" (segment(&a.fingerprint))} { (a.labels.get("alertname").map_or("", String::as_str)) } }
                        td { (a.status.state) }
                        td { @for (k, v) in &a.labels { span.label { (k) "=" (v) } } }
                    } } }
                }
            }
        }
    };
    layout("New silence", Nav::Silences, session, content)
}

pub(crate) async fn create(State(ui): State<UiState>, Extension(session): Extension<Session>, body: Bytes) -> Response {
    let form = parse_form(&body);
    let matchers = form.get("matchers").cloned().unwrap_or_default();
    let duration = DURATIONS
        .iter()
        .find(|d| Some(d.0) == form.get("duration").map(String::as_str))
        .map_or(7_200_000, |d| d.2);
    let ends = fmt::iso(fmt::now_ms() + duration);
    let payload = json!({
        "matchers": matchers,
        "endsAt": ends,
        "createdBy": session.actor,
        "comment": form.get("comment").cloned().unwrap_or_default(),
    });
    match ui.api.post("/api/v1/silences", &payload).await {
        Ok(_) => back(&back_target(&form, "/ui/silences"), "silenced"),
        // A matcher typo goes back to the form with the parser's words.
        Err(e) if e.is_bad_request() => axum::response::IntoResponse::into_response(axum::response::Redirect::to(
            &url("/ui/silences/new", &[("matchers", &matchers), ("error", &e.message)]),
        )),
        Err(e) => error_page(&session, Nav::Silences, "Creating the silence failed", &e),
    }
}

pub(crate) async fn expire(
    State(ui): State<UiState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    match ui.api.delete(&format!("/api/v1/silences/{}", segment(&id))).await {
        Ok(_) => back("/ui/silences", "expired"),
        Err(e) => error_page(&session, Nav::Silences, "Expiring the silence failed", &e),
    }
}

pub(crate) async fn audit(
    State(ui): State<UiState>,
    Extension(session): Extension<Session>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if !session.can(Role::Admin) {
        let e = ApiFailure {
            status: http::StatusCode::FORBIDDEN,
            message: "The audit log is for admins.".into(),
        };
        return error_page(&session, Nav::Audit, "Audit log", &e);
    }
    let after = params.get("after").and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
    let api_url = url("/api/v1/audit", &[("after", &after.to_string()), ("limit", "10000")]);
    let mut entries = match ui.api.get::<AuditList>(&api_url).await {
        Ok(l) => l.entries,
        Err(e) => return error_page(&session, Nav::Audit, "Audit log", &e),
    };
    entries.reverse();
    let content = html! {
        div.title-row { h1 { "Audit log" } (query_link(&api_url)) }
        p.muted { "Every human (and API) action, newest first. Append-only." }
        @if entries.is_empty() { p.empty #no-audit { "Nothing has been done yet." } } @else {
            table.list #audit {
                thead { tr { th { "#" } th { "When" } th { "Who" } th { "Action" } th { "Target" } th { "Detail" } } }
                tbody {
                    @for e in &entries {
                        tr {
                            td { (e.seq) }
                            td { (fmt::time(e.at_ms)) }
                            td { (e.actor) }
                            td { (e.action) }
                            td.mono {
                                @if e.action.starts_with("silence") { a href="/ui/silences" { (e.target) } }
                                @else { a href={"/ui/alerts/" (segment(&e.target))} { (e.target) } }
                            }
                            td { (e.detail) }
                        }
                    }
                }
            }
        }
    };
    layout("Audit log", Nav::Audit, &session, content)
}
