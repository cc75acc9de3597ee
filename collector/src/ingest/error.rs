//! Ingest errors and their one mapping to HTTP status and gRPC code (OTLP spec:
//! <https://opentelemetry.io/docs/specs/otlp/#failures>).

use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Malformed payload: undecodable protobuf or JSON, invalid UTF-8.
    #[error("{0}")]
    Invalid(String),
    /// Body over `otlp.max_request_bytes`, or decompressed over `otlp.max_decompressed_bytes`.
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("missing or invalid bearer token")]
    Unauthenticated,
    /// Too much data in flight: the client should slow down.
    #[error("too much data in flight; retry later")]
    Overloaded,
    /// The WAL queue is full, or the collector is shutting down.
    #[error("{0}; retry later")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl IngestError {
    pub fn http_status(&self) -> StatusCode {
        match self {
            IngestError::Invalid(_) => StatusCode::BAD_REQUEST,
            IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::Unauthenticated => StatusCode::UNAUTHORIZED,
            IngestError::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            IngestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            IngestError::Invalid(_) => tonic::Code::InvalidArgument,
            IngestError::TooLarge(_) => tonic::Code::InvalidArgument,
            IngestError::UnsupportedMediaType(_) => tonic::Code::InvalidArgument,
            IngestError::Unauthenticated => tonic::Code::Unauthenticated,
            IngestError::Overloaded => tonic::Code::ResourceExhausted,
            IngestError::Unavailable(_) => tonic::Code::Unavailable,
            IngestError::Internal(_) => tonic::Code::Internal,
        }
    }

    /// Seconds a client should wait before retrying, for retryable errors.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            IngestError::Overloaded | IngestError::Unavailable(_) => Some(1),
            _ => None,
        }
    }

    /// The headers an HTTP answer to this error carries: `Retry-After` when retrying later
    /// can help, `WWW-Authenticate` when a token is missing. One place for every HTTP front
    /// end (OTLP/HTTP, remote write).
    pub(crate) fn add_http_headers(&self, headers: &mut http::HeaderMap) {
        if let Some(secs) = self.retry_after_secs() {
            headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        if matches!(self, IngestError::Unauthenticated) {
            headers.insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        }
    }

    /// A short label for the requests metric.
    pub fn outcome(&self) -> &'static str {
        match self {
            IngestError::Invalid(_) => "invalid",
            IngestError::TooLarge(_) => "too_large",
            IngestError::UnsupportedMediaType(_) => "unsupported_media_type",
            IngestError::Unauthenticated => "unauthenticated",
            IngestError::Overloaded => "overloaded",
            IngestError::Unavailable(_) => "unavailable",
            IngestError::Internal(_) => "internal",
        }
    }
}

impl From<IngestError> for tonic::Status {
    fn from(err: IngestError) -> tonic::Status {
        tonic::Status::new(err.grpc_code(), err.to_string())
    }
}
