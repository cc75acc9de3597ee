//! Turns an OTLP/HTTP request body into an export request: content type, optional
//! gzip (with a hard cap on the inflated size), then protobuf or OTLP/JSON.

use std::io::Read;

use bytes::Bytes;
use prost::Message;
use serde::de::DeserializeOwned;

use super::IngestError;
use super::service::ExportRequest;
use crate::wal::Signal;

/// The two OTLP/HTTP encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentKind {
    Protobuf,
    Json,
}

impl ContentKind {
    /// Parses a `Content-Type` header, ignoring parameters such as `charset`.
    pub(crate) fn from_content_type(value: Option<&str>) -> Result<ContentKind, IngestError> {
        let Some(value) = value else {
            return Err(IngestError::UnsupportedMediaType(
                "missing Content-Type; use application/x-protobuf or application/json".into(),
            ));
        };
        let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/x-protobuf" | "application/protobuf" => Ok(ContentKind::Protobuf),
            "application/json" => Ok(ContentKind::Json),
            _ => Err(IngestError::UnsupportedMediaType(format!(
                "unsupported Content-Type {value:?}; use application/x-protobuf or application/json"
            ))),
        }
    }

    pub(crate) fn mime(self) -> &'static str {
        match self {
            ContentKind::Protobuf => "application/x-protobuf",
            ContentKind::Json => "application/json",
        }
    }
}

/// Inflates a gzip body, refusing to produce more than `max` bytes.
fn gunzip(body: &[u8], max: usize) -> Result<Vec<u8>, IngestError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max));
    let mut reader = flate2::read::GzDecoder::new(body).take(max as u64 + 1);
    reader
        .read_to_end(&mut out)
        .map_err(|e| IngestError::Invalid(format!("invalid gzip body: {e}")))?;
    if out.len() > max {
        return Err(IngestError::TooLarge(format!(
            "decompressed body exceeds the limit of {max} bytes (otlp.max_decompressed_bytes)"
        )));
    }
    Ok(out)
}

fn decode_as<P>(kind: ContentKind, bytes: &[u8]) -> Result<P, IngestError>
where
    P: Message + Default + DeserializeOwned,
{
    match kind {
        ContentKind::Protobuf => {
            P::decode(bytes).map_err(|e| IngestError::Invalid(format!("malformed protobuf payload: {e}")))
        }
        ContentKind::Json => {
            let text = std::str::from_utf8(bytes)
                .map_err(|e| IngestError::Invalid(format!("JSON payload is not valid UTF-8: {e}")))?;
            serde_json::from_str(text).map_err(|e| IngestError::Invalid(format!("malformed OTLP/JSON payload: {e}")))
        }
    }
}

/// Decodes a request body. `encoding` is the `Content-Encoding` header.
pub(crate) fn decode_body(
    signal: Signal,
    kind: ContentKind,
    encoding: Option<&str>,
    body: Bytes,
    max_decompressed: usize,
) -> Result<ExportRequest, IngestError> {
    let inflated;
    let bytes: &[u8] = match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("identity") => &body,
        Some("gzip") | Some("x-gzip") => {
            inflated = gunzip(&body, max_decompressed)?;
            &inflated
        }
        Some(other) => {
            return Err(IngestError::UnsupportedMediaType(format!(
                "unsupported Content-Encoding {other:?}; use gzip or none"
            )));
        }
    };
    Ok(match signal {
        Signal::Logs => ExportRequest::Logs(decode_as(kind, bytes)?),
        Signal::Traces => ExportRequest::Traces(decode_as(kind, bytes)?),
        Signal::Metrics => ExportRequest::Metrics(decode_as(kind, bytes)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).expect("gzip");
        enc.finish().expect("gzip")
    }

    #[test]
    fn gzip_bomb_is_refused_as_too_large() {
        let bomb = gzip(&vec![0u8; 10 * 1024 * 1024]);
        assert!(bomb.len() < 64 * 1024);
        let err = decode_body(
            Signal::Logs,
            ContentKind::Protobuf,
            Some("gzip"),
            bomb.into(),
            1024 * 1024,
        )
        .expect_err("bomb");
        assert!(matches!(err, IngestError::TooLarge(_)), "{err:?}");
    }

    #[test]
    fn otlp_json_with_hex_ids_and_string_ints_decodes() {
        let json = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"cart"}}]},
          "scopeSpans":[{"scope":{"name":"s"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c",
          "spanId":"eee19b7ec3c1b174","name":"GET /","kind":2,"startTimeUnixNano":"1544712660000000000",
          "endTimeUnixNano":1544712661000000000,"unknownField":true,
          "attributes":[{"key":"n","value":{"intValue":"42"}}],"status":{"code":2}}]}]}]}"#;
        let req = decode_body(Signal::Traces, ContentKind::Json, None, Bytes::from(json), 1 << 20).expect("decode");
        let ExportRequest::Traces(req) = req else {
            panic!("wrong signal")
        };
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(hex::encode(&span.trace_id), "5b8efff798038103d269b633813fc60c");
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(span.kind, 2);
        assert_eq!(span.status.as_ref().map(|s| s.code), Some(2));
    }

    #[test]
    fn content_type_parameters_are_ignored_and_others_refused() {
        assert_eq!(
            ContentKind::from_content_type(Some("application/json; charset=utf-8")).ok(),
            Some(ContentKind::Json)
        );
        assert!(matches!(
            ContentKind::from_content_type(Some("text/plain")),
            Err(IngestError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn invalid_utf8_in_json_is_a_400() {
        let err = decode_body(
            Signal::Logs,
            ContentKind::Json,
            None,
            Bytes::from_static(b"{\"a\":\"\xff\"}"),
            1 << 20,
        )
        .expect_err("invalid");
        assert!(matches!(err, IngestError::Invalid(_)));
    }

    use proptest::prelude::*;

    fn valid_logs_bytes() -> Vec<u8> {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        time_unix_nano: 1,
                        severity_text: "INFO".into(),
                        trace_id: vec![1; 16],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

        /// The decode path is total: any bytes, in any encoding, give a request or a
        /// 4xx error, never a panic.
        #[test]
        fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048), json in any::<bool>(), gz in any::<bool>()) {
            let kind = if json { ContentKind::Json } else { ContentKind::Protobuf };
            let body = if gz { gzip(&bytes) } else { bytes };
            for signal in [Signal::Logs, Signal::Traces, Signal::Metrics] {
                match decode_body(signal, kind, gz.then_some("gzip"), Bytes::from(body.clone()), 1 << 16) {
                    Ok(_) => {}
                    Err(e) => prop_assert!(e.http_status().is_client_error(), "{e:?}"),
                }
            }
        }

        /// Mutations of a valid message (bit flips, truncation) are caught the same way.
        #[test]
        fn decode_never_panics_on_mutated_messages(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>()) {
            let mut bytes = valid_logs_bytes();
            for (at, x) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= x;
            }
            let keep = cut.index(bytes.len() + 1);
            bytes.truncate(keep);
            if let Err(e) = decode_body(Signal::Logs, ContentKind::Protobuf, None, Bytes::from(bytes), 1 << 16) {
                prop_assert!(e.http_status().is_client_error(), "{e:?}");
            }
        }
    }
}
