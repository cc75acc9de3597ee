//! The API's one error type, and the one place its kinds become HTTP statuses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;

use crate::storage::QueryError;

/// An API error: what kind of mistake, with a message saying what was wrong. The one place
/// where kinds become HTTP statuses is [`ApiError::status`].
#[derive(Debug)]
pub(crate) enum ApiError {
    /// The request is malformed or asks for something impossible (400).
    BadRequest(String),
    /// No credentials, or wrong ones (401).
    Unauthorized(String),
    /// Credentials that do not allow this (403).
    Forbidden(String),
    /// No such alert, silence, incident, investigation… (404).
    NotFound(String),
    /// The request collides with what is there (409).
    Conflict(String),
    /// Something that was valid no longer is, such as an expired link (410).
    Gone(String),
    /// Vigil failed, not the caller (500); logged where it happened.
    Internal(String),
    /// Another node asked on the caller's behalf failed (502): a cluster's worker.
    BadGateway(String),
    /// Not now, try again (503): the cluster's membership could not be read.
    Unavailable(String),
}

impl ApiError {
    pub(super) fn bad(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(message.into())
    }

    /// The HTTP status of each kind of error.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub(crate) fn message(&self) -> &str {
        match self {
            ApiError::BadRequest(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::Gone(m)
            | ApiError::Internal(m)
            | ApiError::BadGateway(m)
            | ApiError::Unavailable(m) => m,
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> ApiError {
        match e {
            QueryError::BadRequest(m) => ApiError::BadRequest(m),
            QueryError::Internal(e) => {
                tracing::error!(error = %e, "query failed");
                ApiError::Internal(format!("search failed: {e}"))
            }
            QueryError::Samples(e) => {
                tracing::error!(error = %e, "query failed");
                ApiError::Internal(format!("reading metric samples failed: {e}"))
            }
            QueryError::Worker(m) => ApiError::BadGateway(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(json!({ "error": self.message() }))).into_response()
    }
}
