//! The pages. Each handler asks the API for what it shows and renders it with `maud`,
//! which escapes every interpolated string: log lines, labels and names are text, never
//! markup.

pub(crate) mod alerts;
pub(crate) mod incidents;
pub(crate) mod investigations;
pub(crate) mod logs;
pub(crate) mod metrics;
pub(crate) mod oncall;
pub(crate) mod services;
pub(crate) mod silences;

use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};

use crate::api::ApiFailure;
use crate::auth::{Role, Session};

/// Which navigation entry is current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Incidents,
    Investigations,
    Alerts,
    Logs,
    Metrics,
    Services,
    Silences,
    OnCall,
    Audit,
}

const NAV: &[(Nav, &str, &str)] = &[
    (Nav::Incidents, "/ui/incidents", "Incidents"),
    (Nav::Investigations, "/ui/investigations", "Investigations"),
    (Nav::Alerts, "/ui/alerts", "Alerts"),
    (Nav::Logs, "/ui/logs", "Logs"),
    (Nav::Metrics, "/ui/metrics", "Metrics"),
    (Nav::Services, "/ui/services", "Services"),
    (Nav::Silences, "/ui/silences", "Silences"),
    (Nav::OnCall, "/ui/oncall", "On call"),
    (Nav::Audit, "/ui/audit", "Audit log"),
];

/// The frame around every page: navigation, who is signed in, the content.
pub(crate) fn layout(title: &str, current: Nav, session: &Session, content: Markup) -> Response {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · Vigil" }
                    link rel="stylesheet" href="/ui/assets/vigil.css";
                    link rel="icon" href="/ui/assets/favicon.svg" type="image/svg+xml";
                    script src="/ui/assets/vigil.js" defer {}
                }
                body {
                    header.top {
                        a.brand href="/ui/incidents" { "Vigil" }
                        nav {
                            @for (nav, href, label) in NAV {
                                @if *nav != Nav::Audit || session.can(Role::Admin) {
                                    a href=(href) class=[(*nav == current).then_some("current")] { (label) }
                                }
                            }
                        }
                        div.who {
                            span.muted { "times in UTC" }
                            span { (session.actor) " (" (session.role.as_str()) ")" }
                            @if session.login_enabled {
                                form.inline method="post" action="/ui/logout" {
                                    (csrf_field(session))
                                    button.link type="submit" { "Sign out" }
                                }
                            }
                        }
                    }
                    main { (content) }
                }
            }
        }
        .into_string(),
    )
    .into_response()
}

/// The hidden CSRF field every state-changing form carries.
pub(crate) fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A page saying what failed, with the API's status (404 stays 404).
pub(crate) fn error_page(session: &Session, current: Nav, title: &str, e: &ApiFailure) -> Response {
    let mut r = layout(
        title,
        current,
        session,
        html! {
            h1 { (title) }
            p.error { (e.message) }
        },
    );
    *r.status_mut() = e.status;
    r
}

/// Confirmation messages after an action, chosen by code so a link cannot put arbitrary
/// words on our page.
pub(crate) fn notice(code: Option<&str>) -> Markup {
    let text = match code {
        Some("ack") => "Acknowledged.",
        Some("unack") => "Acknowledgement withdrawn.",
        Some("resolve") => "Resolved.",
        Some("useful") => "Thanks: marked useful; the detectors keep their sensitivity.",
        Some("noise") => "Thanks: marked noise; the detectors behind it become less sensitive.",
        Some("silenced") => "Silence created.",
        Some("expired") => "Silence expired.",
        Some("unchanged") => "Nothing to change: it was already in that state.",
        _ => return html! {},
    };
    html! { p.notice role="status" { (text) } }
}

/// Back to where the form was, with a notice.
pub(crate) fn back(to: &str, code: &str) -> Response {
    let sep = if to.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{to}{sep}done={code}")).into_response()
}

/// A "query behind this" link to the API call that produced a piece of the page.
pub(crate) fn query_link(api_url: &str) -> Markup {
    html! { a.query href=(api_url) title="the API query behind this" { "query" } }
}
