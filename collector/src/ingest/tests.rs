//! Backpressure and idempotency through the OTLP/HTTP router, without sockets.

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use axum::body::Body;
use http::{Request, StatusCode};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use tower::ServiceExt;

use super::Ingest;
use crate::auth::TokenCheck;
use crate::config::OtlpConfig;
use crate::telemetry::Metrics;
use crate::wal::BatchDedup;
use crate::wal::{Wal, WalEntry, WalOptions};

fn body(records: usize) -> Vec<u8> {
    let now = crate::timeutil::now_ns();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: (0..records)
                    .map(|i| LogRecord {
                        time_unix_nano: now - i as u64,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn post(bytes: Vec<u8>, batch_id: Option<&str>) -> Request<Body> {
    let mut r = Request::post("/v1/logs").header("content-type", "application/x-protobuf");
    if let Some(id) = batch_id {
        r = r.header("x-vigil-batch-id", id);
    }
    r.body(Body::from(bytes)).expect("request")
}

/// The batch ids the WAL sink reported, up to and including `marker`. Entries reach the
/// sink in order, so once the marker arrives everything sent before it has.
fn ids_until(rx: &std_mpsc::Receiver<Option<String>>, marker: &str) -> Vec<Option<String>> {
    let mut written = Vec::new();
    while let Ok(id) = rx.recv_timeout(std::time::Duration::from_secs(10)) {
        let last = id.as_deref() == Some(marker);
        written.push(id);
        if last {
            break;
        }
    }
    written
}

/// An ingest path whose WAL sink hands entries to `sink`; the returned guard keeps
/// the directory alive.
fn ingest(
    otlp: OtlpConfig,
    queue_len: usize,
    sink: impl FnMut(WalEntry) + Send + 'static,
) -> (Arc<Ingest>, Arc<Metrics>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let options = WalOptions {
        queue_len,
        ..WalOptions::default()
    };
    let wal = Wal::open(dir.path(), options, 1, |_| {}).expect("wal");
    let metrics = Arc::new(Metrics::default());
    let (appender, _, _) = wal.start(Arc::clone(&metrics), sink).expect("start");
    let ingest = Ingest::new(
        otlp,
        24,
        super::service::Durability::Wal(appender),
        BatchDedup::new(60, 100),
        Arc::clone(&metrics),
        TokenCheck::default(),
    );
    (Arc::new(ingest), metrics, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_much_in_flight_answers_429_with_retry_after() {
    let otlp = OtlpConfig {
        max_in_flight_bytes: 2048,
        ..OtlpConfig::default()
    };
    let (ingest, _, _dir) = ingest(otlp, 16, |_| {});
    // ~3 KiB decoded against a 2 KiB budget.
    let response = super::http::router(ingest)
        .oneshot(post(body(200), None))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        response.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_wal_queue_answers_503_with_retry_after() {
    // The indexer side is stuck: the writer blocks in the sink after the first group,
    // so the queue (one slot) fills and the next append is refused.
    let (release_tx, release_rx) = std_mpsc::channel::<()>();
    let (entered_tx, entered_rx) = std_mpsc::channel::<()>();
    let (ingest, _, _dir) = ingest(OtlpConfig::default(), 1, move |_| {
        let _ = entered_tx.send(());
        let _ = release_rx.recv();
    });
    let router = super::http::router(ingest);
    let first = router.clone().oneshot(post(body(1), None)).await.expect("response");
    assert_eq!(first.status(), StatusCode::OK);
    entered_rx.recv().expect("writer reached the sink");
    // Three concurrent requests for one queue slot: one waits in the queue (its ack is
    // behind the stuck sink), the other two are refused at once.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..3 {
        let (router, done_tx) = (router.clone(), done_tx.clone());
        tokio::spawn(async move {
            let r = router.oneshot(post(body(1), None)).await.expect("response");
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let _ = done_tx.send((r.status(), retry_after));
        });
    }
    for _ in 0..2 {
        let (status, retry_after) = done_rx.recv().await.expect("refusal");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("1"));
    }
    drop(release_tx);
    let (status, _) = done_rx.recv().await.expect("queued request");
    assert_eq!(
        status,
        StatusCode::OK,
        "the queued batch is stored once the writer moves on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_id_is_written_once() {
    let (tx, rx) = std_mpsc::channel();
    let (ingest, metrics, _dir) = ingest(OtlpConfig::default(), 16, move |e| {
        let _ = tx.send(crate::wal::WalBatch::decode(&e.payload).ok().and_then(|b| b.batch_id));
    });
    let router = super::http::router(ingest);
    for _ in 0..3 {
        let r = router
            .clone()
            .oneshot(post(body(2), Some("batch-7")))
            .await
            .expect("response");
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = router.oneshot(post(body(2), Some("batch-8"))).await.expect("response");
    assert_eq!(r.status(), StatusCode::OK);
    let written = ids_until(&rx, "batch-8");
    assert_eq!(written, vec![Some("batch-7".to_string()), Some("batch-8".to_string())]);
    assert!(metrics.encode().contains("vigil_ingest_duplicate_batches_total 2"));
}

/// A client that goes away after the WAL has taken its batch (the agent killed, a proxy
/// timing out) must not get the batch stored twice when it retries: the batch is written
/// anyway, so its id has to be remembered even though nobody awaits the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_client_went_away_after_the_wal_took_it_is_not_stored_again_on_retry() {
    let (release_tx, release_rx) = std_mpsc::channel::<()>();
    let (entered_tx, entered_rx) = std_mpsc::channel::<()>();
    let (ids_tx, ids_rx) = std_mpsc::channel();
    let mut first = true;
    let (ingest, _, _dir) = ingest(OtlpConfig::default(), 4, move |e| {
        let _ = ids_tx.send(crate::wal::WalBatch::decode(&e.payload).ok().and_then(|b| b.batch_id));
        if std::mem::take(&mut first) {
            // The writer is stuck here until released, so what follows waits in its queue.
            let _ = entered_tx.send(());
            let _ = release_rx.recv();
        }
    });
    let router = super::http::router(Arc::clone(&ingest));
    let r = router.clone().oneshot(post(body(1), None)).await.expect("response");
    assert_eq!(r.status(), StatusCode::OK);
    entered_rx.recv().expect("writer stuck in the sink");

    // The request for b1 reaches the WAL queue, then its client disappears.
    let gone = tokio::spawn(router.clone().oneshot(post(body(1), Some("b1"))));
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while ingest.wal_queued() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("b1 queued in the WAL");
    gone.abort();
    assert!(gone.await.expect_err("aborted").is_cancelled());
    drop(release_tx);

    // The retry, then a marker: everything before the marker has reached the sink.
    for id in ["b1", "b2"] {
        let r = router.clone().oneshot(post(body(1), Some(id))).await.expect("response");
        assert_eq!(r.status(), StatusCode::OK);
    }
    let written = ids_until(&ids_rx, "b2");
    assert_eq!(
        written,
        vec![None, Some("b1".to_string()), Some("b2".to_string())],
        "b1 stored exactly once"
    );
}
