//! The collector's JSON API, called in-process.
//!
//! The UI asks the API router exactly what a script would ask it over HTTP, through
//! `tower::ServiceExt::oneshot`: no socket, no second implementation of any query, and the
//! API's validation (a bad log query, an unknown alert) comes back as the same message.

use axum::Router;
use axum::body::Body;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tower::ServiceExt;

/// Largest API answer the UI reads (a page of log records with attributes is far smaller).
const MAX_BODY: usize = 64 << 20;

#[derive(Clone)]
pub(crate) struct ApiClient {
    router: Router,
    bearer: Option<String>,
}

/// What went wrong asking the API: its status and its message.
#[derive(Debug, Clone)]
pub(crate) struct ApiFailure {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiFailure {
    /// The user asked for something the API refused as malformed (not a server fault).
    pub(crate) fn is_bad_request(&self) -> bool {
        self.status == StatusCode::BAD_REQUEST
    }
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl ApiClient {
    pub(crate) fn new(router: Router, token: Option<String>) -> ApiClient {
        ApiClient {
            router,
            bearer: token.map(|t| format!("Bearer {t}")),
        }
    }

    /// `GET path_and_query`, the answer decoded as `T`.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, ApiFailure> {
        let value = self.call(Method::GET, path_and_query, None).await?;
        serde_json::from_value(value).map_err(|e| ApiFailure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("unexpected answer from {path_and_query}: {e}"),
        })
    }

    /// `POST path` with a JSON body.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<Value, ApiFailure> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `DELETE path`.
    pub(crate) async fn delete(&self, path: &str) -> Result<Value, ApiFailure> {
        self.call(Method::DELETE, path, None).await
    }

    async fn call(&self, method: Method, uri: &str, body: Option<&Value>) -> Result<Value, ApiFailure> {
        let internal = |message: String| ApiFailure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message,
        };
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(b) = &self.bearer {
            req = req.header(AUTHORIZATION, b);
        }
        let req = match body {
            Some(v) => req
                .header(CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(v).unwrap_or_default())),
            None => req.body(Body::empty()),
        }
        .map_err(|e| internal(format!("bad API request {uri}: {e}")))?;
        let response = match self.router.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), MAX_BODY)
            .await
            .map_err(|e| internal(format!("reading the answer of {uri}: {e}")))?;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| internal(format!("{uri} did not answer JSON: {e}")))?
        };
        if status.is_success() {
            Ok(value)
        } else {
            Err(ApiFailure {
                status,
                message: value["error"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{uri} answered {status}")),
            })
        }
    }
}

/// Builds `path?k=v&…`, percent-encoding the values and leaving out empty ones.
pub(crate) fn url(path: &str, params: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        if !v.is_empty() {
            s.append_pair(k, v);
        }
    }
    let q = s.finish();
    if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{q}")
    }
}

/// One path segment, percent-encoded.
pub(crate) fn segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_values_and_skip_empty_ones() {
        assert_eq!(
            url(
                "/api/v1/logs/search",
                &[("q", "body:\"a b\" & c"), ("service", ""), ("limit", "5")]
            ),
            "/api/v1/logs/search?q=body%3A%22a+b%22+%26+c&limit=5"
        );
        assert_eq!(url("/x", &[("a", "")]), "/x");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
