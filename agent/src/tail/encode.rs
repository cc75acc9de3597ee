//! Log records encoded straight into the bytes of an OTLP export request.
//!
//! The tailer's hot path handles hundreds of thousands of lines a second. Building a
//! prost `LogRecord` per line means half a dozen allocations to fill it and as many
//! to free it, plus a recursive length pass at encoding: more than the reading itself.
//! Here each line is written once, with prost's own wire primitives, into the batch's
//! byte buffer; the file attributes are encoded once per file and copied. The test
//! below decodes the result with prost and compares it field by field, so the bytes
//! are exactly what prost would have produced.

use bytes::BufMut;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

/// One line's fields, borrowed.
pub struct Fields<'a> {
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    pub severity_number: i32,
    pub severity_text: &'a str,
    pub body: &'a str,
    /// Already-encoded attribute fields (`log.file.*`), copied as they are.
    pub encoded_attributes: &'a [u8],
    pub attributes: &'a [KeyValue],
}

/// Encoded `attributes` fields (tag 6 of LogRecord) for string key/values.
pub fn encode_string_attributes(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        let value_len = len_delimited_len(1, v.len());
        let kv_len = len_delimited_len(1, k.len()) + len_delimited_len(2, value_len);
        encode_key(6, WireType::LengthDelimited, &mut out);
        encode_varint(kv_len as u64, &mut out);
        put_bytes(1, k.as_bytes(), &mut out);
        encode_key(2, WireType::LengthDelimited, &mut out);
        encode_varint(value_len as u64, &mut out);
        put_bytes(1, v.as_bytes(), &mut out);
    }
    out
}

/// Bytes a length-delimited field of `len` content bytes takes, key included.
fn len_delimited_len(tag: u32, len: usize) -> usize {
    prost::encoding::key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_bytes(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.put_slice(bytes);
}

/// The `log_records` of one ScopeLogs, growing line by line.
#[derive(Default)]
pub struct LogBatch {
    records: Vec<u8>,
    scratch: Vec<u8>,
    count: usize,
}

impl LogBatch {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    pub fn len(&self) -> usize {
        self.count
    }
    pub fn bytes(&self) -> usize {
        self.records.len()
    }

    pub fn push(&mut self, f: &Fields<'_>) {
        let s = &mut self.scratch;
        s.clear();
        if f.time_unix_nano != 0 {
            encode_key(1, WireType::SixtyFourBit, s);
            s.put_u64_le(f.time_unix_nano);
        }
        if f.severity_number != 0 {
            encode_key(2, WireType::Varint, s);
            encode_varint(f.severity_number as u64, s);
        }
        if !f.severity_text.is_empty() {
            put_bytes(3, f.severity_text.as_bytes(), s);
        }
        // body: AnyValue { string_value (1) }
        encode_key(5, WireType::LengthDelimited, s);
        encode_varint(len_delimited_len(1, f.body.len()) as u64, s);
        put_bytes(1, f.body.as_bytes(), s);
        s.put_slice(f.encoded_attributes);
        for kv in f.attributes {
            prost::encoding::message::encode(6, kv, s);
        }
        if f.observed_time_unix_nano != 0 {
            encode_key(11, WireType::SixtyFourBit, s);
            s.put_u64_le(f.observed_time_unix_nano);
        }
        encode_key(2, WireType::LengthDelimited, &mut self.records);
        encode_varint(s.len() as u64, &mut self.records);
        self.records.extend_from_slice(s);
        self.count += 1;
    }

    /// The whole `ExportLogsServiceRequest`, leaving the batch empty for reuse.
    pub fn finish(&mut self, resource: &Resource, scope: &InstrumentationScope) -> Vec<u8> {
        let scope_len = len_delimited_len(1, scope.encoded_len()) + self.records.len();
        let resource_logs_len = len_delimited_len(1, resource.encoded_len()) + len_delimited_len(2, scope_len);
        let mut out = Vec::with_capacity(len_delimited_len(1, resource_logs_len));
        // ExportLogsServiceRequest.resource_logs (1)
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(resource_logs_len as u64, &mut out);
        // ResourceLogs.resource (1), ResourceLogs.scope_logs (2)
        prost::encoding::message::encode(1, resource, &mut out);
        encode_key(2, WireType::LengthDelimited, &mut out);
        encode_varint(scope_len as u64, &mut out);
        // ScopeLogs.scope (1), ScopeLogs.log_records (2)*
        prost::encoding::message::encode(1, scope, &mut out);
        out.extend_from_slice(&self.records);
        self.records.clear();
        self.count = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    use super::*;
    use crate::otlp::{kv, kv_bool, scope};

    #[test]
    fn the_bytes_are_what_prost_would_encode() {
        let file_attrs = encode_string_attributes(&[("log.file.path", "/var/log/a.log"), ("log.file.name", "a.log")]);
        let extra = vec![kv("user", "ann"), kv_bool("log.record.truncated", true)];
        let mut batch = LogBatch::default();
        let lines = [("first line", 0, ""), ("ERROR second ü", 17, "ERROR")];
        for (i, (body, sev, text)) in lines.iter().enumerate() {
            batch.push(&Fields {
                time_unix_nano: 1_000 + i as u64,
                observed_time_unix_nano: 2_000 + i as u64,
                severity_number: *sev,
                severity_text: text,
                body,
                encoded_attributes: &file_attrs,
                attributes: if i == 1 { &extra } else { &[] },
            });
        }
        assert_eq!(batch.len(), 2);
        let resource = Resource {
            attributes: vec![kv("service.name", "shop"), kv("host.name", "h1")],
            ..Resource::default()
        };
        let bytes = batch.finish(&resource, &scope());
        assert!(batch.is_empty());
        let decoded = ExportLogsServiceRequest::decode(&bytes[..]).expect("valid OTLP");
        let record = |i: usize, body: &str, sev: i32, text: &str, more: &[KeyValue]| {
            let mut attributes = vec![kv("log.file.path", "/var/log/a.log"), kv("log.file.name", "a.log")];
            attributes.extend_from_slice(more);
            LogRecord {
                time_unix_nano: 1_000 + i as u64,
                observed_time_unix_nano: 2_000 + i as u64,
                severity_number: sev,
                severity_text: text.into(),
                body: Some(AnyValue {
                    value: Some(Value::StringValue(body.into())),
                }),
                attributes,
                ..LogRecord::default()
            }
        };
        let expected = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(resource),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope()),
                    log_records: vec![
                        record(0, "first line", 0, "", &[]),
                        record(1, "ERROR second ü", 17, "ERROR", &extra),
                    ],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        assert_eq!(decoded, expected);
        assert_eq!(bytes, expected.encode_to_vec(), "byte for byte");
    }
}
