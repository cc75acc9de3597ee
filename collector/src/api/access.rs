//! Who may call what: the API token, personal tokens by role, and the responder token.

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};

use super::{ApiError, ApiState, NodeState};
use crate::auth::Identity;
use crate::config::UserRole;

/// The API token (admin), or a personal token whose role allows the request: a viewer
/// reads, a responder also silences, an admin does everything. The identity found goes to
/// the handlers, which record actions under it.
pub(super) async fn require_token(State(state): State<NodeState>, mut request: Request, next: Next) -> Response {
    let header = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    let identity = if state.token.check(header) {
        Some(Identity::shared("api", UserRole::Admin))
    } else {
        state.users.by_header(header)
    };
    let Some(identity) = identity else {
        return unauthorized();
    };
    // Prometheus' query API takes its reads as POST forms too (Grafana sends them so).
    let reading = matches!(*request.method(), Method::GET | Method::HEAD)
        || request.uri().path().starts_with("/prometheus/api/v1/");
    // What on-call people change themselves: silences, and who covers a shift.
    let path = request.uri().path();
    let responders_change = path.contains("/silence") || path.contains("/overrides");
    let needed = if reading {
        UserRole::Viewer
    } else if responders_change {
        UserRole::Responder
    } else {
        UserRole::Admin
    };
    if identity.role < needed {
        return forbidden(&identity, needed);
    }
    request.extensions_mut().insert(identity);
    next.run(request).await
}

/// The API token, the shared responder token (which can do nothing but act on alerts), or a
/// personal token of a responder or admin.
pub(super) async fn require_responder(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    let header = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    let identity = if state.token.check(header) {
        Some(Identity::shared("api", UserRole::Admin))
    } else if state.responder.is_configured() && state.responder.check(header) {
        Some(Identity::shared("responder", UserRole::Responder))
    } else {
        state.users.by_header(header)
    };
    match identity {
        Some(identity) if identity.role >= UserRole::Responder => {
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        Some(identity) => forbidden(&identity, UserRole::Responder),
        None => unauthorized(),
    }
}

fn role_name(role: UserRole) -> &'static str {
    match role {
        UserRole::Viewer => "viewer",
        UserRole::Responder => "responder",
        UserRole::Admin => "admin",
    }
}

fn unauthorized() -> Response {
    let mut r = ApiError::Unauthorized("missing or invalid bearer token".into()).into_response();
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
    r
}

fn forbidden(identity: &Identity, needed: UserRole) -> Response {
    ApiError::Forbidden(format!(
        "{} is a {} and this needs a {}",
        identity.name,
        role_name(identity.role),
        role_name(needed)
    ))
    .into_response()
}
