//! Alertmanager's API v2, at its own paths and in its own shapes, so `amtool`, Grafana's
//! Alertmanager data source and anything else written against Alertmanager's OpenAPI
//! spec work with Vigil unchanged: alerts (intake, query, groups), silences (query, get,
//! create, update, expire), receivers and status (with the routing configuration as YAML).
//! Vigil's own views of the same state live under `/api/v1/`.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use vigil_alerting::LabelSet;
use vigil_alerting::{Alert, AlertInput, Silence};
use vigil_alerting::{Matcher, MatcherSpec, parse_matchers};

use super::alerts::blocking;
use super::{ApiError, ApiState};
use crate::auth::Identity;

/// When this process started, for `status.uptime`.
static STARTED: OnceLock<OffsetDateTime> = OnceLock::new();

/// Notes the start time (called when the API is built).
pub(super) fn mark_started() {
    STARTED.get_or_init(OffsetDateTime::now_utc);
}

/// RFC 3339 with milliseconds, UTC, as Alertmanager writes times.
fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Parses an RFC 3339 time to unix ms; Go's zero time (what amtool and other Go clients
/// send for "unset", with or without fractional seconds) is `None`.
pub(super) fn parse_ts(value: &Option<String>, key: &str) -> Result<Option<i64>, ApiError> {
    let Some(v) = value.as_deref().filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let t = OffsetDateTime::parse(v, &Rfc3339)
        .map_err(|e| ApiError::bad(format!("{key}: {v:?} is not an RFC 3339 time ({e})")))?;
    if t.year() == 1 && t.ordinal() == 1 && t.time() == time::Time::MIDNIGHT && t.offset().is_utc() {
        return Ok(None);
    }
    if t.unix_timestamp() < 0 {
        return Err(ApiError::bad(format!("{key}: {v:?} is before 1970")));
    }
    Ok(Some(
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX),
    ))
}

/// One element of `POST /api/v2/alerts`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PostableAlert {
    labels: LabelSet,
    #[serde(default)]
    annotations: LabelSet,
    starts_at: Option<String>,
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
}

/// `POST /api/v2/alerts`: what Prometheus and every Alertmanager client send.
pub(super) async fn post_alerts(State(state): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let posted: Vec<PostableAlert> =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("expected a JSON array of alerts: {e}")))?;
    let mut inputs = Vec::with_capacity(posted.len());
    for (i, a) in posted.into_iter().enumerate() {
        if a.labels.is_empty() {
            return Err(ApiError::bad(format!("alerts[{i}].labels: must not be empty")));
        }
        if let Some((k, _)) = a.labels.iter().find(|(k, v)| k.is_empty() || v.is_empty()) {
            return Err(ApiError::bad(format!(
                "alerts[{i}].labels: label {k:?} has an empty name or value"
            )));
        }
        inputs.push(AlertInput {
            labels: a.labels,
            annotations: a.annotations,
            starts_at_ms: parse_ts(&a.starts_at, &format!("alerts[{i}].startsAt"))?,
            ends_at_ms: parse_ts(&a.ends_at, &format!("alerts[{i}].endsAt"))?,
            generator_url: a.generator_url,
        });
    }
    let ids = blocking(&state.alerts, move |s| s.upsert(inputs)).await?;
    Ok(Json(json!({ "received": ids.len(), "ids": ids })).into_response())
}

/// The query parameters the alert, group and silence listings take (`filter` repeats).
struct Params {
    active: bool,
    silenced: bool,
    inhibited: bool,
    unprocessed: bool,
    filter: Vec<Matcher>,
    receiver: Option<regex::Regex>,
}

impl Params {
    fn parse(query: Option<&str>) -> Result<Params, ApiError> {
        let mut p = Params {
            active: true,
            silenced: true,
            inhibited: true,
            unprocessed: true,
            filter: Vec::new(),
            receiver: None,
        };
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let flag = || match value.as_ref() {
                "true" => Ok(true),
                "false" => Ok(false),
                other => Err(ApiError::bad(format!("{key}: expected true or false, got {other:?}"))),
            };
            match key.as_ref() {
                "active" => p.active = flag()?,
                "silenced" => p.silenced = flag()?,
                "inhibited" => p.inhibited = flag()?,
                "unprocessed" => p.unprocessed = flag()?,
                "filter" => p
                    .filter
                    .extend(parse_matchers(&value).map_err(|e| ApiError::bad(format!("filter: {e}")))?),
                "receiver" => {
                    p.receiver =
                        Some(regex::Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                            ApiError::bad(format!("receiver: {value:?} is not a regular expression: {e}"))
                        })?);
                }
                _ => {}
            }
        }
        Ok(p)
    }

    /// Alertmanager's listing rules: resolved alerts are gone; each flag drops its kind.
    fn keeps(&self, a: &Alert, receivers: &[String]) -> bool {
        let suppressed = !a.silenced_by.is_empty() || !a.inhibited_by.is_empty();
        a.is_active()
            && (self.active || suppressed)
            && (self.silenced || a.silenced_by.is_empty())
            && (self.inhibited || a.inhibited_by.is_empty())
            && self.filter.iter().all(|m| m.matches(&a.labels))
            && self
                .receiver
                .as_ref()
                .is_none_or(|r| receivers.iter().any(|name| r.is_match(name)))
    }
}

/// A `GettableAlert`.
fn gettable(a: &Alert, receivers: &[String]) -> Value {
    let suppressed = !a.silenced_by.is_empty() || !a.inhibited_by.is_empty();
    let muted: Vec<&String> = a.silenced_by.iter().chain(&a.inhibited_by).collect();
    json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "startsAt": rfc3339(a.starts_at_ms),
        "endsAt": rfc3339(a.ends_at_ms),
        "updatedAt": rfc3339(a.updated_at_ms),
        "generatorURL": a.generator_url,
        "fingerprint": a.id,
        "receivers": receivers.iter().map(|r| json!({ "name": r })).collect::<Vec<_>>(),
        "status": {
            "state": if suppressed { "suppressed" } else { "active" },
            "silencedBy": a.silenced_by,
            "inhibitedBy": a.inhibited_by,
            "mutedBy": muted,
        },
        // Vigil's own: Alertmanager has no acknowledgement.
        "vigil": {
            "state": a.state,
            "acknowledgedBy": a.acknowledged_by,
        },
    })
}

/// Alerts with the receivers they route to, as the listing parameters keep them.
fn listed(state: &ApiState, p: &Params) -> Result<Vec<(Alert, Vec<String>)>, ApiError> {
    let mut out: Vec<(Alert, Vec<String>)> = state
        .alerts
        .alerts(None)?
        .into_iter()
        .map(|a| {
            let receivers = state.alerts.receivers_for(&a.labels);
            (a, receivers)
        })
        .filter(|(a, r)| p.keeps(a, r))
        .collect();
    out.sort_by(|a, b| (a.0.starts_at_ms, &a.0.id).cmp(&(b.0.starts_at_ms, &b.0.id)));
    Ok(out)
}

/// `GET /api/v2/alerts`.
pub(super) async fn get_alerts(State(state): State<ApiState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref())?;
    let alerts: Vec<Value> = listed(&state, &p)?.iter().map(|(a, r)| gettable(a, r)).collect();
    Ok(Json(alerts).into_response())
}

/// `GET /api/v2/alerts/groups`: each aggregation group with its alerts that the
/// parameters keep (groups left empty are not listed).
pub(super) async fn get_groups(State(state): State<ApiState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref())?;
    let alerts = listed(&state, &p)?;
    let mut groups: Vec<Value> = Vec::new();
    for (_key, receiver, labels, ids) in state.alerts.groups() {
        if p.receiver.as_ref().is_some_and(|r| !r.is_match(&receiver)) {
            continue;
        }
        let ids: BTreeSet<&String> = ids.iter().collect();
        let members: Vec<Value> = alerts
            .iter()
            .filter(|(a, _)| ids.contains(&a.id))
            .map(|(a, r)| gettable(a, r))
            .collect();
        if !members.is_empty() {
            groups.push(json!({ "labels": labels, "receiver": { "name": receiver }, "alerts": members }));
        }
    }
    Ok(Json(groups).into_response())
}

/// "active", "pending" or "expired" at `now`.
fn silence_state(s: &Silence, now: i64) -> &'static str {
    if s.ends_at_ms <= now {
        "expired"
    } else if s.starts_at_ms > now {
        "pending"
    } else {
        "active"
    }
}

/// A `GettableSilence`.
fn gettable_silence(s: &Silence, now: i64) -> Value {
    let matchers: Vec<MatcherSpec> = s.matchers.iter().cloned().map(MatcherSpec::from).collect();
    json!({
        "id": s.id,
        "status": { "state": silence_state(s, now) },
        "updatedAt": rfc3339(s.created_at_ms),
        "matchers": matchers,
        "startsAt": rfc3339(s.starts_at_ms),
        "endsAt": rfc3339(s.ends_at_ms),
        "createdBy": s.created_by,
        "comment": s.comment,
    })
}

/// `GET /api/v2/silences`: a silence is listed when the filter matches the label set its
/// matchers name (Alertmanager's rule); active first (soonest to end), then pending
/// (soonest to start), then expired (latest ended first).
pub(super) async fn get_silences(State(state): State<ApiState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref())?;
    let now = crate::timeutil::now_ms();
    let mut silences: Vec<Silence> = state
        .alerts
        .silences()
        .into_iter()
        .filter(|s| {
            let named: LabelSet = s
                .matchers
                .iter()
                .map(|m| (m.name().to_string(), m.value().to_string()))
                .collect();
            p.filter.iter().all(|m| m.matches(&named))
        })
        .collect();
    silences.sort_by_key(|s| match silence_state(s, now) {
        "active" => (0, s.ends_at_ms),
        "pending" => (1, s.starts_at_ms),
        _ => (2, -s.ends_at_ms),
    });
    Ok(Json(silences.iter().map(|s| gettable_silence(s, now)).collect::<Vec<_>>()).into_response())
}

/// `GET /api/v2/silence/{id}`.
pub(super) async fn get_silence(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let now = crate::timeutil::now_ms();
    match state.alerts.silences().iter().find(|s| s.id == id) {
        Some(s) => Ok(Json(gettable_silence(s, now)).into_response()),
        None => Err(ApiError::NotFound(format!("no silence with id {id:?}"))),
    }
}

/// `DELETE /api/v2/silence/{id}`: expires it (kept for the record).
pub(super) async fn delete_silence(
    State(state): State<ApiState>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    super::alerts::expire_silence(&state, &identity, id).await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /api/v2/silences`: creates a silence, or with an `id` replaces that one.
pub(super) async fn post_silences(
    State(state): State<ApiState>,
    Extension(identity): Extension<Identity>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (id, silence) = super::alerts::parse_silence(&body, &identity)?;
    let matchers = silence.matchers.clone();
    let new_id = match id.filter(|i| !i.is_empty()) {
        Some(old) => blocking(&state.alerts, move |s| s.replace_silence(&old, silence)).await?,
        None => blocking(&state.alerts, move |s| s.add_silence(silence)).await?,
    };
    super::alerts::seal_silenced(&state, &matchers);
    Ok(Json(json!({ "silenceID": new_id })).into_response())
}

/// `GET /api/v2/receivers`.
pub(super) async fn get_receivers(State(state): State<ApiState>) -> Response {
    let names: Vec<Value> = state
        .alerts
        .receiver_names()
        .iter()
        .map(|n| json!({ "name": n }))
        .collect();
    Json(names).into_response()
}

/// `GET /api/v2/status`: a single node (no gossip cluster), its version and uptime, and the
/// routing configuration as Alertmanager YAML (`amtool config show`, `config routes`).
pub(super) async fn get_status(State(state): State<ApiState>) -> Response {
    let started = STARTED.get_or_init(OffsetDateTime::now_utc);
    Json(json!({
        "cluster": { "status": "disabled", "peers": [] },
        "versionInfo": {
            "version": env!("CARGO_PKG_VERSION"),
            "revision": "",
            "branch": "",
            "buildUser": "vigil",
            "buildDate": "",
            "goVersion": "none (vigil is written in Rust)",
        },
        "config": { "original": state.alerts.config_yaml() },
        "uptime": started.format(&Rfc3339).unwrap_or_default(),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use vigil_alerting::AlertState;

    use super::*;

    #[test]
    fn go_zero_times_are_unset_in_every_spelling() {
        for zero in [
            "0001-01-01T00:00:00Z",
            "0001-01-01T00:00:00.000Z",
            "0001-01-01T00:00:00.000000000Z",
        ] {
            assert_eq!(parse_ts(&Some(zero.into()), "startsAt").ok(), Some(None), "{zero}");
        }
        assert_eq!(parse_ts(&None, "startsAt").ok(), Some(None));
        assert_eq!(
            parse_ts(&Some("2026-12-04T08:00:00.5Z".into()), "endsAt").ok(),
            Some(Some(1_796_371_200_500))
        );
        assert!(parse_ts(&Some("1969-12-31T23:59:59Z".into()), "endsAt").is_err());
        assert!(parse_ts(&Some("yesterday".into()), "endsAt").is_err());
        assert_eq!(rfc3339(1_796_371_200_500), "2026-12-04T08:00:00.5Z");
    }

    #[test]
    fn listing_parameters_are_read_as_alertmanager_sends_them() {
        let p = Params::parse(Some(
            "active=true&silenced=false&filter=alertname%3D%22Disk%22&filter=%7Bteam%3D~%22db%7Cweb%22%7D&receiver=pag.*",
        ))
        .expect("valid");
        assert!(p.active && !p.silenced && p.inhibited);
        assert_eq!(p.filter.len(), 2);
        assert!(
            p.receiver
                .as_ref()
                .is_some_and(|r| r.is_match("pager") && !r.is_match("xpager"))
        );
        for (query, names) in [("silenced=maybe", "silenced"), ("filter=%3D%3D", "filter")] {
            let e = Params::parse(Some(query)).err().expect("refused");
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{e:?}");
            assert!(matches!(&e, ApiError::BadRequest(m) if m.contains(names)), "{e:?}");
        }
    }

    #[test]
    fn listing_rules_follow_alertmanager() {
        let alert = |silenced: bool, state: AlertState| Alert {
            id: "a".into(),
            labels: LabelSet::from([("alertname".into(), "Disk".into())]),
            annotations: LabelSet::new(),
            state,
            starts_at_ms: 0,
            ends_at_ms: 0,
            explicit_end: false,
            updated_at_ms: 0,
            generator_url: String::new(),
            acknowledged_by: None,
            acknowledged_at_ms: None,
            comments: Vec::new(),
            silenced_by: if silenced { vec!["s1".into()] } else { Vec::new() },
            inhibited_by: Vec::new(),
            received: 1,
        };
        let all = Params::parse(None).expect("defaults");
        let receivers = ["default".to_string()];
        assert!(all.keeps(&alert(false, AlertState::Firing), &receivers));
        assert!(all.keeps(&alert(false, AlertState::Acknowledged), &receivers));
        assert!(
            !all.keeps(&alert(false, AlertState::Resolved), &receivers),
            "resolved alerts are gone"
        );
        let unsilenced = Params::parse(Some("silenced=false")).expect("valid");
        assert!(!unsilenced.keeps(&alert(true, AlertState::Firing), &receivers));
        let suppressed_only = Params::parse(Some("active=false")).expect("valid");
        assert!(suppressed_only.keeps(&alert(true, AlertState::Firing), &receivers));
        assert!(!suppressed_only.keeps(&alert(false, AlertState::Firing), &receivers));
        let other = Params::parse(Some("receiver=pager")).expect("valid");
        assert!(!other.keeps(&alert(false, AlertState::Firing), &receivers));
    }
}
