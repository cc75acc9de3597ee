//! On call: for every schedule, who is on call now, the shifts of the coming week (overrides
//! marked), the overrides, and the link that subscribes a calendar to the shifts.

use axum::extract::{Extension, State};
use axum::response::Response;
use maud::html;
use serde::Deserialize;

use super::{Nav, error_page, layout, query_link};
use crate::UiState;
use crate::auth::Session;
use crate::fmt;
use crate::view::{Layer, Override, Shift};

/// A schedule as `GET /api/v1/schedules` shows it (the parts rendered).
#[derive(Deserialize)]
struct ScheduleView {
    name: String,
    time_zone: String,
    layers: Vec<Layer>,
    overrides: Vec<Override>,
    on_call: Option<Shift>,
    shifts: Vec<Shift>,
    calendar: String,
}

#[derive(Deserialize)]
struct ScheduleList {
    schedules: Vec<ScheduleView>,
}

const API: &str = "/api/v1/schedules?days=7";

pub(crate) async fn page(State(ui): State<UiState>, Extension(session): Extension<Session>) -> Response {
    let list = match ui.api.get::<ScheduleList>(API).await {
        Ok(l) => l.schedules,
        Err(e) => return error_page(&session, Nav::OnCall, "On call", &e),
    };
    let content = html! {
        div.title-row {
            h1 { "On call" }
            (query_link(API))
        }
        @if list.is_empty() {
            p.empty #no-schedules { "No schedules yet. Create one with PUT /api/v1/schedules/{name} (see the README): rotations, layers and overrides; escalation steps can then page whoever is on call." }
        }
        @for s in &list {
            section.schedule data-name=(s.name) {
                h2 { (s.name) " " span.muted { "(" (s.time_zone) ")" } }
                p.lead.on-call-now {
                    @match &s.on_call {
                        Some(now) => { "On call now: " strong { (now.user) } " until " (fmt::time(now.end_ms))
                            @if now.source == "override" { " " span.badge.info { "override" } } }
                        None => { "Nobody is on call now." }
                    }
                }
                p.muted {
                    @for l in &s.layers {
                        span.label { (if l.name.is_empty() { "layer" } else { &l.name }) ": "
                            (l.rotation) " at " (l.handoff)
                            @if let Some(d) = &l.handoff_day { " on " (d) }
                            ", " (l.users.join(" → ")) }
                        " "
                    }
                }
                h3 { "The coming week" }
                table.list.shifts {
                    thead { tr { th { "From" } th { "Until" } th { "Who" } th { "Why" } } }
                    tbody { @for sh in &s.shifts { tr {
                        td { (fmt::time(sh.start_ms)) } td { (fmt::time(sh.end_ms)) } td { (sh.user) } td { (sh.source) }
                    } } }
                }
                @if !s.overrides.is_empty() {
                    h3 { "Overrides" }
                    table.list.overrides {
                        thead { tr { th { "Who" } th { "From" } th { "Until" } th { "Set by" } } }
                        tbody { @for o in &s.overrides { tr {
                            td { (o.user) } td { (fmt::time(o.start_ms)) } td { (fmt::time(o.end_ms)) } td { (o.created_by) }
                        } } }
                    }
                }
                p { "Subscribe a calendar: " a.calendar href=(s.calendar) { "iCalendar feed" } span.muted { " (the link is the key: share it as you would a password)" } }
            }
        }
    };
    layout("On call", Nav::OnCall, &session, content)
}
