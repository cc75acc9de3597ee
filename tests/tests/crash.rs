//! Durability: a collector taking concurrent writes is SIGKILLed mid-stream and
//! restarted; every acknowledged record is searchable exactly once, and retries of
//! the unacknowledged batches (same batch id) complete the set without duplicates.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use prost::Message;
use tokio::sync::Mutex;
use vigil_e2e::otlp::{log_record, logs_request};
use vigil_e2e::{Collector, Options, eventually, get_json, now_ns, search_logs};

const WRITERS: i64 = 4;
const BATCHES_PER_WRITER: i64 = 400;
const RECORDS_PER_BATCH: i64 = 25;

fn batch_key(writer: i64, batch: i64) -> i64 {
    writer * 10_000 + batch
}

fn batch_body(key: i64, base_ns: u64) -> Vec<u8> {
    let records = (0..RECORDS_PER_BATCH)
        .map(|r| {
            let t = base_ns + u64::try_from(key * 100 + r).unwrap_or(0);
            log_record(
                t,
                &format!("crash test record {r} of batch {key}"),
                &[("batch", key), ("record", r)],
            )
        })
        .collect();
    logs_request("crash-test", records).encode_to_vec()
}

async fn send(client: &reqwest::Client, url: &str, key: i64, base_ns: u64) -> Result<bool> {
    let response = client
        .post(url)
        .header("content-type", "application/x-protobuf")
        .header("x-vigil-batch-id", format!("crash-{key}"))
        .body(batch_body(key, base_ns))
        .send()
        .await;
    Ok(matches!(response, Ok(r) if r.status().as_u16() == 200))
}

async fn count_batch(client: &reqwest::Client, c: &Collector, key: i64) -> Result<u64> {
    let q = format!("attributes.batch:{key}");
    let (total, _) = search_logs(
        client,
        c,
        &[("service", "crash-test"), ("q", q.as_str()), ("limit", "1")],
    )
    .await?;
    Ok(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acknowledged_record_and_duplicates_none() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let options = Options {
        data_dir: Some(data_dir.clone()),
        ..Options::default()
    };
    let collector = Collector::start_with(options.clone())?;
    let url = collector.http_url("/v1/logs");
    let base_ns = now_ns() - 60_000_000_000;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;

    let acked: Arc<Mutex<BTreeSet<i64>>> = Arc::default();
    let attempted: Arc<Mutex<BTreeSet<i64>>> = Arc::default();
    let ack_count = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (client, url, acked, attempted, ack_count) = (
            client.clone(),
            url.clone(),
            acked.clone(),
            attempted.clone(),
            ack_count.clone(),
        );
        writers.push(tokio::spawn(async move {
            for b in 0..BATCHES_PER_WRITER {
                let key = batch_key(w, b);
                attempted.lock().await.insert(key);
                if send(&client, &url, key, base_ns).await.unwrap_or(false) {
                    acked.lock().await.insert(key);
                    ack_count.fetch_add(1, Ordering::SeqCst);
                } else {
                    // The collector is gone: stop this writer.
                    break;
                }
            }
        }));
    }
    // Kill once a good number of batches were acknowledged, while writers are busy.
    eventually(Duration::from_secs(60), "40 acknowledged batches", || {
        let n = ack_count.load(Ordering::SeqCst);
        async move { Ok((n >= 40).then_some(())) }
    })
    .await?;
    collector.kill()?;
    for w in writers {
        w.await?;
    }
    let acked = acked.lock().await.clone();
    let attempted = attempted.lock().await.clone();
    assert!(
        acked.len() < (WRITERS * BATCHES_PER_WRITER) as usize,
        "the kill must land mid-stream (all batches were acknowledged before it)"
    );

    // Restart on the same data: acknowledged batches are all there, exactly once.
    let collector = Collector::start_with(options)?;
    let last = *acked.iter().next_back().expect("some acked batch");
    eventually(Duration::from_secs(30), "replayed data to be searchable", || {
        let (client, c) = (&client, &collector);
        async move { Ok((count_batch(client, c, last).await? == RECORDS_PER_BATCH as u64).then_some(())) }
    })
    .await?;
    for key in &attempted {
        let n = count_batch(&client, &collector, *key).await?;
        if acked.contains(key) {
            assert_eq!(
                n, RECORDS_PER_BATCH as u64,
                "acknowledged batch {key} has {n} records after the crash"
            );
        } else {
            // Never acknowledged: it may or may not have reached the WAL, but never twice.
            assert!(
                n == 0 || n == RECORDS_PER_BATCH as u64,
                "unacknowledged batch {key} has {n} records"
            );
        }
    }

    // The client retries what was not acknowledged, with the same batch ids.
    let url = collector.http_url("/v1/logs");
    for key in attempted.difference(&acked) {
        assert!(send(&client, &url, *key, base_ns).await?, "retry of batch {key} failed");
    }
    // And, to be sure, re-sends an acknowledged one: deduplicated by its id.
    assert!(send(&client, &url, last, base_ns).await?);
    let expected = attempted.len() as u64 * RECORDS_PER_BATCH as u64;
    eventually(Duration::from_secs(30), "retried batches to be searchable", || {
        let (client, c) = (&client, &collector);
        async move {
            let (total, _) = search_logs(client, c, &[("service", "crash-test"), ("limit", "1")]).await?;
            Ok((total >= expected).then_some(()))
        }
    })
    .await?;
    for key in &attempted {
        assert_eq!(
            count_batch(&client, &collector, *key).await?,
            RECORDS_PER_BATCH as u64,
            "batch {key}"
        );
    }
    let (total, _) = search_logs(&client, &collector, &[("service", "crash-test"), ("limit", "1")]).await?;
    assert_eq!(total, expected, "no duplicates overall");

    // Log pattern ids survive restarts: note the one of this test's lines.
    let (_, hits) = search_logs(&client, &collector, &[("service", "crash-test"), ("limit", "1")]).await?;
    let pattern_before = hits[0]["pattern_id"].as_u64().expect("pattern id");

    // A clean shutdown exits 0 and keeps everything.
    assert!(collector.terminate()?, "SIGTERM must exit cleanly");
    let collector = Collector::start_with(Options {
        data_dir: Some(data_dir),
        ..Options::default()
    })?;
    let (total, _) = search_logs(&client, &collector, &[("service", "crash-test"), ("limit", "1")]).await?;
    assert_eq!(total, expected, "data survives a graceful restart, searchable at once");
    assert!(send(&client, &collector.http_url("/v1/logs"), 999_999, base_ns).await?);
    let hits = eventually(Duration::from_secs(10), "the batch sent after the restart", || {
        let (client, c) = (&client, &collector);
        async move {
            let (n, hits) = search_logs(
                client,
                c,
                &[
                    ("service", "crash-test"),
                    ("q", "attributes.batch:999999"),
                    ("limit", "1"),
                ],
            )
            .await?;
            Ok((n > 0).then_some(hits))
        }
    })
    .await?;
    assert_eq!(
        hits[0]["pattern_id"].as_u64(),
        Some(pattern_before),
        "same pattern id after a restart"
    );
    Ok(())
}

/// After a clean restart the patterns page still names the ids the index holds, with the same
/// ids and templates, even for a collector stopped within the catalogue's save interval (the
/// stage saves it at shutdown; the WAL's replay would also re-learn lines it still holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_keeps_the_pattern_templates() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let collector = Collector::start_with(Options {
        data_dir: Some(data_dir.clone()),
        ..Options::default()
    })?;
    let client = reqwest::Client::new();
    let base_ns = now_ns() - 60_000_000_000;
    let records = (0..20)
        .map(|i| log_record(base_ns + i * 1_000_000, &format!("cache warmed in {i} ms"), &[]))
        .collect();
    let response = client
        .post(collector.http_url("/v1/logs"))
        .header("content-type", "application/x-protobuf")
        .body(logs_request("pattern-keeper", records).encode_to_vec())
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    let url = reqwest::Url::parse_with_params(
        &collector.api_url("/api/v1/logs/patterns"),
        &[("service", "pattern-keeper")],
    )?;
    let before = eventually(Duration::from_secs(10), "the pattern to be searchable", || {
        let (client, url) = (&client, url.as_str());
        async move {
            let (_, body) = get_json(client, url).await?;
            let list = body["patterns"].as_array().cloned().unwrap_or_default();
            Ok(list.first().filter(|p| p["count"] == 20).cloned())
        }
    })
    .await?;
    assert_eq!(before["template"], "cache warmed in <*> ms", "{before}");

    assert!(collector.terminate()?, "SIGTERM must exit cleanly");
    let collector = Collector::start_with(Options {
        data_dir: Some(data_dir),
        ..Options::default()
    })?;
    let url = reqwest::Url::parse_with_params(
        &collector.api_url("/api/v1/logs/patterns"),
        &[("service", "pattern-keeper")],
    )?;
    let (status, after) = get_json(&client, url.as_str()).await?;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["patterns"][0]["pattern_id"], before["pattern_id"], "{after}");
    assert_eq!(after["patterns"][0]["template"], before["template"], "{after}");
    Ok(())
}
