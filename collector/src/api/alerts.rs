//! Alerting endpoints: the Alertmanager-compatible intake, alert state and human actions,
//! silences, the audit log, and signed one-click links.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use vigil_alerting::ActionError;
use vigil_alerting::LinkError;
use vigil_alerting::Silence;
use vigil_alerting::{Matcher, MatcherSpec, parse_matchers};
use vigil_detectors::Verdict;

use super::alertmanager::parse_ts;
use super::{ApiError, ApiState};
use crate::alerts::{AlertService, AlertServiceError};
use crate::auth::Identity;

impl From<AlertServiceError> for ApiError {
    fn from(e: AlertServiceError) -> ApiError {
        let message = e.to_string();
        match &e {
            AlertServiceError::Action(
                ActionError::UnknownAlert(_) | ActionError::UnknownSilence(_) | ActionError::UnknownSchedule(_),
            ) => ApiError::NotFound(message),
            AlertServiceError::Action(ActionError::Invalid(_)) => ApiError::BadRequest(message),
            AlertServiceError::Link(LinkError::Expired) => ApiError::Gone(message),
            AlertServiceError::Link(LinkError::Replayed) => ApiError::Conflict(message),
            AlertServiceError::Link(LinkError::Malformed) => ApiError::BadRequest(message),
            AlertServiceError::Link(LinkError::BadSignature) => ApiError::Forbidden(message),
            AlertServiceError::NotLeader | AlertServiceError::Replication(_) => ApiError::Unavailable(message),
            AlertServiceError::Store(_) => {
                tracing::error!(error = %e, "alerting store failed");
                ApiError::Internal(message)
            }
        }
    }
}

/// Runs a store-writing call off the async workers.
pub(super) async fn blocking<T: Send + 'static>(
    svc: &Arc<AlertService>,
    f: impl FnOnce(&AlertService) -> Result<T, AlertServiceError> + Send + 'static,
) -> Result<T, ApiError> {
    let svc = Arc::clone(svc);
    tokio::task::spawn_blocking(move || f(&svc))
        .await
        .map_err(|e| ApiError::Internal(format!("alerting task failed: {e}")))?
        .map_err(ApiError::from)
}

pub(super) async fn list_alerts(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let alerts = state.alerts.alerts(params.get("state").map(String::as_str))?;
    Ok(Json(json!({ "alerts": alerts })).into_response())
}

/// How many entries a listing returns: `limit` (1 to 10 000), else `default`.
fn limit_param(params: &HashMap<String, String>, default: usize) -> Result<usize, ApiError> {
    match params.get("limit") {
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| ApiError::bad("limit must be between 1 and 10000")),
        None => Ok(default),
    }
}

/// Delivery records listed unless told otherwise.
const DELIVERIES_LISTED: usize = 200;

/// `GET /api/v1/alerts/{id}/notifications`: every delivery attempt of every notification
/// that listed this alert, newest first.
pub(super) async fn alert_notifications(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let limit = limit_param(&params, DELIVERIES_LISTED)?;
    if state.alerts.alert(&id).is_none() {
        return Err(ApiError::NotFound(format!("no alert with id {id:?}")));
    }
    let deliveries = blocking(&state.alerts, move |s| s.deliveries(|d| d.alerts.contains(&id), limit)).await?;
    Ok(Json(json!({ "deliveries": deliveries })).into_response())
}

/// `GET /api/v1/notifications?receiver=&group=&limit=`: the delivery history, newest
/// first, for one receiver or one group (Alertmanager's group key) if asked.
pub(super) async fn notifications(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let limit = limit_param(&params, DELIVERIES_LISTED)?;
    let receiver = params.get("receiver").cloned();
    let group = params.get("group").cloned();
    let deliveries = blocking(&state.alerts, move |s| {
        s.deliveries(
            |d| receiver.as_ref().is_none_or(|r| &d.receiver == r) && group.as_ref().is_none_or(|g| &d.group_key == g),
            limit,
        )
    })
    .await?;
    Ok(Json(json!({ "deliveries": deliveries })).into_response())
}

pub(super) async fn get_alert(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match state.alerts.alert(&id) {
        Some(a) => Ok(Json(a).into_response()),
        None => Err(ApiError::NotFound(format!("no alert with id {id:?}"))),
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
    Extension(identity): Extension<Identity>,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b = action_body(&body)?;
    // A personal token's owner, whatever "by" says; a shared token's "by".
    let by = identity.actor(b.by.as_deref());
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
        other => return Err(ApiError::NotFound(format!("no alert action {other:?}"))),
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
    /// Set when updating a silence (Alertmanager's `POST /api/v2/silences` with an id).
    #[serde(default)]
    id: Option<String>,
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

/// A silence as posted (Alertmanager's `PostableSilence`), and the id it replaces if any;
/// created by the identity's owner when it is a personal token.
pub(super) fn parse_silence(body: &Bytes, identity: &Identity) -> Result<(Option<String>, Silence), ApiError> {
    let p: PostableSilence =
        serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("invalid silence: {e}")))?;
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
    if p.created_by.trim().is_empty() && !identity.personal {
        return Err(ApiError::bad("createdBy must not be empty"));
    }
    let now = crate::timeutil::now_ms();
    let silence = Silence {
        id: String::new(),
        matchers,
        starts_at_ms: parse_ts(&p.starts_at, "startsAt")?.unwrap_or(now),
        ends_at_ms: parse_ts(&Some(p.ends_at), "endsAt")?.ok_or_else(|| ApiError::bad("endsAt is required"))?,
        created_by: identity.actor(Some(&p.created_by)),
        comment: p.comment,
        created_at_ms: 0,
    };
    Ok((p.id, silence))
}

/// Incidents whose alerts a new silence covers take no new findings.
pub(super) fn seal_silenced(state: &ApiState, matchers: &[Matcher]) {
    if let Ok(alerts) = state.alerts.alerts(None) {
        for a in alerts {
            if matchers.iter().all(|m| m.matches(&a.labels))
                && let Some(incident) = a.labels.get("incident")
            {
                state.pipeline.seal(incident.clone());
            }
        }
    }
}

pub(super) async fn post_silence(
    State(state): State<ApiState>,
    Extension(identity): Extension<Identity>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (id, silence) = parse_silence(&body, &identity)?;
    if id.is_some_and(|i| !i.is_empty()) {
        return Err(ApiError::bad(
            "id: to replace a silence, POST it to /api/v2/silences (Alertmanager's update)",
        ));
    }
    let matchers = silence.matchers.clone();
    let id = blocking(&state.alerts, move |s| s.add_silence(silence)).await?;
    seal_silenced(&state, &matchers);
    Ok(Json(json!({ "silenceID": id })).into_response())
}

pub(super) async fn list_silences(State(state): State<ApiState>) -> Response {
    Json(json!({ "silences": state.alerts.silences() })).into_response()
}

pub(super) async fn delete_silence(
    State(state): State<ApiState>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    expire_silence(&state, &identity, id).await?;
    Ok(Json(json!({ "expired": true })).into_response())
}

/// Expires a silence now, as `identity` (both APIs' DELETE).
pub(super) async fn expire_silence(state: &ApiState, identity: &Identity, id: String) -> Result<(), ApiError> {
    let by = identity.actor(None);
    blocking(&state.alerts, move |s| s.expire_silence(&id, &by)).await
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
    let limit = limit_param(&params, 1000)?;
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
