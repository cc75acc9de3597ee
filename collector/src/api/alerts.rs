//! Alerting endpoints: the Alertmanager-compatible intake, alert state and human actions,
//! silences, the audit log, and signed one-click links.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use vigil_alerting::alert::{AlertInput, Silence};
use vigil_alerting::engine::ActionError;
use vigil_alerting::labels::LabelSet;
use vigil_alerting::matcher::{Matcher, MatcherSpec, parse_matchers};
use vigil_alerting::sign::LinkError;
use vigil_detectors::engine::Verdict;

use super::{ApiError, ApiState};
use crate::alerts::{AlertService, AlertServiceError};

impl From<AlertServiceError> for ApiError {
    fn from(e: AlertServiceError) -> ApiError {
        let status = match &e {
            AlertServiceError::Action(ActionError::UnknownAlert(_) | ActionError::UnknownSilence(_)) => {
                StatusCode::NOT_FOUND
            }
            AlertServiceError::Action(ActionError::Invalid(_)) => StatusCode::BAD_REQUEST,
            AlertServiceError::Link(LinkError::Expired) => StatusCode::GONE,
            AlertServiceError::Link(LinkError::Replayed) => StatusCode::CONFLICT,
            AlertServiceError::Link(LinkError::Malformed) => StatusCode::BAD_REQUEST,
            AlertServiceError::Link(LinkError::BadSignature | LinkError::WrongPurpose { .. }) => StatusCode::FORBIDDEN,
            AlertServiceError::Store(_) => {
                tracing::error!(error = %e, "alerting store failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError(status, e.to_string())
    }
}

/// Runs a store-writing call off the async workers.
async fn blocking<T: Send + 'static>(
    svc: &Arc<AlertService>,
    f: impl FnOnce(&AlertService) -> Result<T, AlertServiceError> + Send + 'static,
) -> Result<T, ApiError> {
    let svc = Arc::clone(svc);
    tokio::task::spawn_blocking(move || f(&svc))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("alerting task failed: {e}")))?
        .map_err(ApiError::from)
}

/// One element of Alertmanager's `POST /api/v2/alerts` body.
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

fn parse_ts(value: &Option<String>, key: &str) -> Result<Option<i64>, ApiError> {
    let Some(v) = value.as_deref().filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let t = OffsetDateTime::parse(v, &Rfc3339)
        .map_err(|e| ApiError::bad(format!("{key}: {v:?} is not an RFC 3339 time ({e})")))?;
    // Go's zero time (what amtool and other Go clients send for "unset", with or without
    // fractional seconds) means unset; any other time before 1970 is a mistake.
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

/// Alertmanager-compatible intake, so Prometheus rules can route to Vigil unchanged.
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

pub(super) async fn list_alerts(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let alerts = state.alerts.alerts(params.get("state").map(String::as_str))?;
    Ok(Json(json!({ "alerts": alerts })).into_response())
}

pub(super) async fn get_alert(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match state.alerts.alert(&id) {
        Some(a) => Ok(Json(a).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no alert with id {id:?}"))),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    verdict: Option<String>,
}

fn action_body(body: &Bytes) -> Result<ActionBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ActionBody::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))
}

/// ack, unack, resolve, comment, feedback on one alert. Idempotent: repeating an action
/// answers 200 with `changed: false` and says why.
pub(super) async fn alert_action(
    State(state): State<ApiState>,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b = action_body(&body)?;
    let by = b.by.clone().unwrap_or_else(|| "api".into());
    let alert_id = id.clone();
    let svc = Arc::clone(&state.alerts);
    let outcome = match action.as_str() {
        "ack" => blocking(&svc, move |s| s.ack(&id, &by)).await?,
        "unack" => blocking(&svc, move |s| s.unack(&id, &by)).await?,
        "resolve" => blocking(&svc, move |s| s.resolve(&id, &by)).await?,
        "comment" => {
            let text = b
                .text
                .ok_or_else(|| ApiError::bad("comment needs {\"text\": \"...\"}"))?;
            blocking(&svc, move |s| s.comment(&id, &by, &text)).await?
        }
        "feedback" => {
            let verdict = match b.verdict.as_deref() {
                Some("useful") => Verdict::Real,
                Some("noise") => Verdict::Noise,
                other => {
                    return Err(ApiError::bad(format!(
                        "verdict must be \"useful\" or \"noise\", got {other:?}"
                    )));
                }
            };
            let word = if verdict == Verdict::Real { "useful" } else { "noise" };
            let alert = blocking(&svc, move |s| s.feedback(&id, &by, word)).await?;
            // An alert made from an incident passes the verdict on to the detectors, for
            // every anomaly the incident holds.
            let ids: Vec<String> = alert
                .annotations
                .get("vigil_anomaly_ids")
                .map(|v| v.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
                .unwrap_or_default();
            let mut forwarded = 0usize;
            for anomaly_id in ids {
                match state.anomalies.record_feedback(&anomaly_id, verdict) {
                    Ok((key, _)) => {
                        state.pipeline.feedback(key, verdict);
                        forwarded += 1;
                    }
                    Err(e) => tracing::warn!(error = %e, "alert feedback could not reach an anomaly"),
                }
            }
            return Ok(
                Json(json!({ "alert": alert.id, "verdict": word, "forwarded_to_detectors": forwarded }))
                    .into_response(),
            );
        }
        other => return Err(ApiError(StatusCode::NOT_FOUND, format!("no alert action {other:?}"))),
    };
    if matches!(action.as_str(), "ack" | "resolve") {
        seal_incident_of(&state, &alert_id);
    }
    Ok(Json(outcome).into_response())
}

/// Once a human has taken on an incident's alert, the incident takes no new findings.
fn seal_incident_of(state: &ApiState, alert_id: &str) {
    if let Some(incident) = state
        .alerts
        .alert(alert_id)
        .and_then(|a| a.labels.get("incident").cloned())
    {
        state.pipeline.seal(incident);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PostableSilence {
    /// Either Alertmanager's list of matcher objects or one `{a="b", c=~"x"}` string.
    matchers: MatchersField,
    starts_at: Option<String>,
    ends_at: String,
    created_by: String,
    #[serde(default)]
    comment: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum MatchersField {
    Text(String),
    List(Vec<serde_json::Value>),
}

pub(super) async fn post_silence(State(state): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let p: PostableSilence =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("invalid silence: {e}")))?;
    let matchers: Vec<Matcher> = match p.matchers {
        MatchersField::Text(t) => parse_matchers(&t).map_err(|e| ApiError::bad(format!("matchers: {e}")))?,
        MatchersField::List(list) => {
            let mut out = Vec::new();
            for (i, v) in list.into_iter().enumerate() {
                let spec: MatcherSpec =
                    serde_json::from_value(v).map_err(|e| ApiError::bad(format!("matchers[{i}]: {e}")))?;
                out.push(Matcher::try_from(spec).map_err(|e| ApiError::bad(format!("matchers[{i}]: {e}")))?);
            }
            out
        }
    };
    let now = crate::timeutil::now_ms();
    let silence = Silence {
        id: String::new(),
        matchers,
        starts_at_ms: parse_ts(&p.starts_at, "startsAt")?.unwrap_or(now),
        ends_at_ms: parse_ts(&Some(p.ends_at), "endsAt")?.ok_or_else(|| ApiError::bad("endsAt is required"))?,
        created_by: p.created_by,
        comment: p.comment,
        created_at_ms: 0,
    };
    let matchers = silence.matchers.clone();
    let id = blocking(&state.alerts, move |s| s.add_silence(silence)).await?;
    // Incidents whose alerts the silence covers take no new findings.
    if let Ok(alerts) = state.alerts.alerts(None) {
        for a in alerts {
            if matchers.iter().all(|m| m.matches(&a.labels))
                && let Some(incident) = a.labels.get("incident")
            {
                state.pipeline.seal(incident.clone());
            }
        }
    }
    Ok(Json(json!({ "silenceID": id })).into_response())
}

pub(super) async fn list_silences(State(state): State<ApiState>) -> Response {
    Json(json!({ "silences": state.alerts.silences() })).into_response()
}

pub(super) async fn delete_silence(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    blocking(&state.alerts, move |s| s.expire_silence(&id, "api")).await?;
    Ok(Json(json!({ "expired": true })).into_response())
}

pub(super) async fn audit(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let after = match params.get("after") {
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::bad(format!("after: {v:?} is not a sequence number")))?,
        None => 0,
    };
    let limit = match params.get("limit") {
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| ApiError::bad("limit must be between 1 and 10000"))?,
        None => 1000,
    };
    let entries = blocking(&state.alerts, move |s| s.audit(after, limit)).await?;
    Ok(Json(json!({ "entries": entries })).into_response())
}

/// GET shows what the link will do and asks for a click (link scanners and previews fetch
/// with GET; they must not acknowledge pages on someone's behalf).
pub(super) async fn link_page(Path(token): Path<String>) -> Response {
    let action = if token.contains(".resolve.") {
        "Resolve"
    } else {
        "Acknowledge"
    };
    let escaped: String = token
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    Html(format!(
        "<!doctype html><meta name=viewport content='width=device-width'><title>Vigil</title>\
         <form method=post action='/api/v1/actions/{escaped}'><button style='font-size:2em'>{action}</button></form>"
    ))
    .into_response()
}

/// POST carries out the signed action.
pub(super) async fn follow_link(
    State(state): State<ApiState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let (link, outcome) = blocking(&state.alerts, move |s| s.follow_link(&token)).await?;
    seal_incident_of(&state, &link.alert_id);
    Ok(Json(json!({
        "alert": link.alert_id,
        "action": link.action.as_str(),
        "changed": outcome.changed,
        "state": outcome.state,
        "message": outcome.message,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::parse_ts;

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
    }
}
