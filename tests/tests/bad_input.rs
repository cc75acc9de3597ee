//! Bad input gets its documented status, the server stays up, and nothing already
//! stored is harmed.

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use prost::Message;
use reqwest::StatusCode;
use serde_json::Value;
use vigil_e2e::otlp::{log_record, logs_request};
use vigil_e2e::{Collector, eventually, now_ns, search_logs};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

/// `google.rpc.Status` as the collector sends it in error bodies.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

struct Poster {
    client: reqwest::Client,
    url: String,
}

impl Poster {
    async fn post(&self, content_type: &str, encoding: Option<&str>, body: Vec<u8>) -> Result<(StatusCode, Vec<u8>)> {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", content_type)
            .body(body);
        if let Some(e) = encoding {
            request = request.header("content-encoding", e);
        }
        let response = request.send().await?;
        let status = response.status();
        Ok((status, response.bytes().await?.to_vec()))
    }
}

fn valid_logs(service: &str, body: &str) -> Vec<u8> {
    logs_request(service, vec![log_record(now_ns() - 1_000_000_000, body, &[("n", 1)])]).encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bad_input_gets_documented_statuses_and_harms_nothing() -> Result<()> {
    let c = Collector::start()?;
    let client = reqwest::Client::new();
    let p = Poster {
        client: client.clone(),
        url: c.http_url("/v1/logs"),
    };

    // Something good is stored first; it must survive everything below.
    let (status, _) = p
        .post(
            "application/x-protobuf",
            None,
            valid_logs("baseline", "the baseline record"),
        )
        .await?;
    assert_eq!(status, 200);

    // Truncated protobuf: 400 with a google.rpc.Status body that says why.
    let mut truncated = valid_logs("bad", "truncated record body");
    truncated.truncate(truncated.len() - 7);
    let (status, body) = p.post("application/x-protobuf", None, truncated).await?;
    assert_eq!(status, 400);
    let rpc = RpcStatus::decode(body.as_slice())?;
    assert_eq!(rpc.code, 3, "INVALID_ARGUMENT");
    assert!(rpc.message.contains("malformed protobuf"), "{}", rpc.message);

    // Wrong content type: 415.
    let (status, _) = p.post("text/plain", None, b"hello".to_vec()).await?;
    assert_eq!(status, 415);

    // Invalid JSON: 400 with a JSON error.
    let (status, body) = p
        .post("application/json", None, b"{\"resourceLogs\": [".to_vec())
        .await?;
    assert_eq!(status, 400);
    let err: Value = serde_json::from_slice(&body)?;
    assert!(
        err["message"].as_str().unwrap_or("").contains("malformed OTLP/JSON"),
        "{err}"
    );

    // Gzip bomb: 64 MiB of zeros in a few dozen KiB; refused as too large.
    let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]);
    assert!(bomb.len() < 200 * 1024);
    let (status, body) = p.post("application/x-protobuf", Some("gzip"), bomb).await?;
    assert_eq!(status, 413);
    assert!(
        RpcStatus::decode(body.as_slice())?
            .message
            .contains("max_decompressed_bytes")
    );

    // Oversized body (over the 4 MiB default): 413, naming the setting.
    let big: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let (status, body) = p.post("application/x-protobuf", None, big).await?;
    assert_eq!(status, 413);
    assert!(
        RpcStatus::decode(body.as_slice())?
            .message
            .contains("max_request_bytes")
    );

    // Unsupported compression: 415.
    let (status, _) = p
        .post("application/x-protobuf", Some("br"), valid_logs("bad", "x"))
        .await?;
    assert_eq!(status, 415);

    // Invalid UTF-8 inside a protobuf string field: 400.
    let marker = "UTF8MARKER";
    let mut bytes = valid_logs("bad", marker);
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .expect("marker");
    bytes[at] = 0xff;
    let (status, _) = p.post("application/x-protobuf", None, bytes).await?;
    assert_eq!(status, 400);

    // Invalid UTF-8 in JSON: 400.
    let (status, _) = p
        .post(
            "application/json",
            None,
            b"{\"resourceLogs\":[{\"x\":\"\xff\"}]}".to_vec(),
        )
        .await?;
    assert_eq!(status, 400);

    // Absurd timestamps: 200 with partial success; the sane record is stored.
    let request = logs_request(
        "timestamps",
        vec![
            log_record(16_725_225_600_000_000_000, "from the year 2500", &[]),
            log_record(1, "from 1970", &[]),
            log_record(now_ns() - 1_000_000, "a sane timestamp", &[]),
        ],
    );
    let (status, body) = p.post("application/json", None, serde_json::to_vec(&request)?).await?;
    assert_eq!(status, 200);
    let reply: Value = serde_json::from_slice(&body)?;
    assert_eq!(reply["partialSuccess"]["rejectedLogRecords"], "2", "{reply}");
    let message = reply["partialSuccess"]["errorMessage"].as_str().unwrap_or("");
    assert!(
        message.contains("in the future") && message.contains("older than the retention"),
        "{message}"
    );

    // Unknown fields, in JSON and in protobuf: ignored, the data is stored.
    let json = format!(
        r#"{{"resourceLogs":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"unknown-fields"}}}}]}},
        "futureField":1,"scopeLogs":[{{"logRecords":[{{"timeUnixNano":"{}","body":{{"stringValue":"json with unknown fields"}},"brandNew":{{"x":1}}}}]}}]}}]}}"#,
        now_ns() - 1_000_000
    );
    let (status, body) = p.post("application/json", None, json.into_bytes()).await?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let mut with_unknown = valid_logs("unknown-fields", "protobuf with an unknown field");
    with_unknown.extend_from_slice(&[0xf8, 0x3e, 0x01]); // field 999, varint 1
    let (status, _) = p.post("application/x-protobuf", None, with_unknown).await?;
    assert_eq!(status, 200);

    // Still up, and exactly the good data is there.
    assert_eq!(client.get(c.api_url("/healthz")).send().await?.status(), 200);
    let (total, _) = eventually(Duration::from_secs(10), "stored records", || async {
        let r = search_logs(&client, &c, &[("service", "unknown-fields")]).await?;
        Ok((r.0 == 2).then_some(r))
    })
    .await?;
    assert_eq!(total, 2);
    let (total, hits) = search_logs(&client, &c, &[("service", "baseline")]).await?;
    assert_eq!(total, 1);
    assert_eq!(hits[0]["body"], "the baseline record");
    let (total, hits) = search_logs(&client, &c, &[("service", "timestamps")]).await?;
    assert_eq!((total, hits[0]["body"].as_str()), (1, Some("a sane timestamp")));
    let (total, _) = search_logs(&client, &c, &[("service", "bad")]).await?;
    assert_eq!(total, 0, "nothing from a refused request may be stored");

    // The refusals are counted by reason.
    let metrics = client.get(c.api_url("/metrics")).send().await?.text().await?;
    assert!(
        metrics.contains(r#"vigil_ingest_records_rejected_total{signal="logs",reason="timestamp_in_future"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"outcome="too_large""#));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_bad_input_gets_grpc_codes_and_the_server_stays_up() -> Result<()> {
    let c = Collector::start()?;
    let mut client = LogsServiceClient::connect(c.grpc_url())
        .await?
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_encoding_message_size(usize::MAX);

    // A gzip bomb over gRPC: a 40 MiB body compresses to almost nothing.
    let huge = "a".repeat(40 * 1024 * 1024);
    let bomb = logs_request("grpc-bad", vec![log_record(now_ns(), &huge, &[])]);
    let status = client.export(bomb).await.expect_err("must be refused");
    assert!(
        matches!(
            status.code(),
            tonic::Code::ResourceExhausted | tonic::Code::InvalidArgument | tonic::Code::OutOfRange
        ),
        "{status:?}"
    );

    // Bad ids: partial success with INVALID ids counted, nothing else stored.
    let mut bad_trace = log_record(now_ns() - 1_000, "bad trace id", &[]);
    bad_trace.trace_id = vec![1, 2, 3];
    let good = log_record(now_ns() - 1_000, "good grpc record", &[]);
    let reply = client
        .export(logs_request("grpc-bad", vec![bad_trace, good]))
        .await?
        .into_inner();
    let partial = reply.partial_success.expect("partial success");
    assert_eq!(partial.rejected_log_records, 1);
    assert!(partial.error_message.contains("trace id"), "{}", partial.error_message);

    let http = reqwest::Client::new();
    let (total, hits) = eventually(Duration::from_secs(10), "the good record", || async {
        let r = search_logs(&http, &c, &[("service", "grpc-bad")]).await?;
        Ok((r.0 >= 1).then_some(r))
    })
    .await?;
    assert_eq!(total, 1);
    assert_eq!(hits[0]["body"], "good grpc record");
    Ok(())
}
