//! The indexer against real indexes and a real time-series store in a temporary directory.
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

use super::*;
use crate::storage::log_docs;
use crate::storage::partition::NANOS_PER_DAY;
use crate::telemetry::Metrics;

fn setup(dir: &std::path::Path, max_disk_bytes: u64) -> Indexer {
    let store = Arc::new(Store::open(&dir.join("index"), Arc::new(Metrics::default())).expect("store"));
    Indexer::new(
        store,
        IndexerOptions {
            commit_interval: Duration::from_secs(1),
            writer_memory_bytes: 15_000_000,
            retention_ns: 7 * NANOS_PER_DAY,
            max_disk_bytes,
            downsampling: Vec::new(),
            dedup_path: dir.join("batch-ids"),
        },
        BatchDedup::new(60, 100),
    )
}

/// Applies, as entry `lsn`, one sample of gauge `up` at `t_ms`.
fn apply_sample(indexer: &mut Indexer, lsn: u64, t_ms: i64) {
    let sample = MetricSample {
        labels: vigil_tsdb::Labels::new([("__name__", "up"), ("__kind__", "gauge")]),
        t_ms,
        value: lsn as f64,
    };
    indexer.apply(lsn, Signal::Metrics, None, Vec::new(), vec![sample]);
}

fn stored_samples(store: &Store) -> usize {
    let all = store.tsdb.select(&[], i64::MIN, i64::MAX, usize::MAX).expect("select");
    all.series.iter().map(|s| s.samples.len()).sum()
}

#[test]
fn samples_in_open_heads_hold_the_wal_back_until_their_snapshot() {
    let dir = tempfile::tempdir().expect("dir");
    let mut indexer = setup(dir.path(), 0);
    let now_ms = now_ns() / 1_000_000;
    apply_logs(&mut indexer, 1, now_ns() as u64, 3);
    apply_sample(&mut indexer, 2, now_ms);
    apply_logs(&mut indexer, 3, now_ns() as u64, 3);
    indexer.commit();
    // Everything applied is searchable; the WAL must keep entry 2 on.
    assert_eq!(indexer.store.metrics.indexed_lsn.get(), 3);
    assert_eq!(indexer.last_checkpoint, 1);
    indexer.snapshot_samples();
    indexer.commit();
    assert_eq!(indexer.last_checkpoint, 3);
    assert_eq!(indexer.store.metrics.tsdb_head_samples.get(), 1);
}

#[test]
fn a_clean_stop_snapshots_the_heads_and_a_restart_finds_every_sample() {
    let dir = tempfile::tempdir().expect("dir");
    let now_ms = now_ns() / 1_000_000;
    let mut indexer = setup(dir.path(), 0);
    for lsn in 1..=5 {
        apply_sample(&mut indexer, lsn, now_ms + lsn as i64);
    }
    indexer.finish();
    let indexer = setup(dir.path(), 0);
    assert_eq!(stored_samples(&indexer.store), 5);
    // The snapshot holds entries 1 to 5: a replay of them is skipped.
    let labels = vigil_tsdb::Labels::new([("__name__", "up"), ("__kind__", "gauge")]);
    for lsn in 1..=5 {
        let taken = indexer.store.tsdb.append(lsn, &labels, now_ms + lsn as i64, 0.0);
        assert!(!taken.expect("append"), "entry {lsn} is held already");
    }
    assert_eq!(indexer.store.tsdb.max_lsn(), 5);
}

#[test]
fn a_purge_deletes_its_services_metric_samples_too() {
    let dir = tempfile::tempdir().expect("dir");
    let mut indexer = setup(dir.path(), 0);
    let now_ms = now_ns() / 1_000_000;
    let sample = |service: &str, t_ms: i64| MetricSample {
        labels: vigil_tsdb::Labels::new([("__name__", "up"), ("service.name", service)]),
        t_ms,
        value: 1.0,
    };
    let both = vec![sample("gone", now_ms), sample("kept", now_ms)];
    indexer.apply(1, Signal::Metrics, None, Vec::new(), both);
    indexer.purge(2, &|service| service == "gone", &|_| false);
    indexer.apply(3, Signal::Metrics, None, Vec::new(), vec![sample("gone", now_ms + 1)]);
    let all = indexer
        .store
        .tsdb
        .select(&[], i64::MIN, i64::MAX, usize::MAX)
        .expect("select");
    let left: Vec<(Option<&str>, usize)> = all
        .series
        .iter()
        .map(|s| (s.labels.get("service.name"), s.samples.len()))
        .collect();
    // What came after the purge stays: the service may come back to this worker.
    assert_eq!(left, vec![(Some("gone"), 1), (Some("kept"), 1)]);
}

/// Applies, as entry `lsn`, a log request of `n` records from `ts`.
fn apply_logs(indexer: &mut Indexer, lsn: u64, ts: u64, n: usize) {
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: (0..n)
                    .map(|i| LogRecord {
                        time_unix_nano: ts + i as u64,
                        observed_time_unix_nano: ts,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let docs = log_docs(&indexer.store.schemas.logs, &request, &mut |_, _| 0);
    indexer.apply(lsn, Signal::Logs, None, docs, Vec::new());
}

fn doc_count(indexer: &Indexer) -> u64 {
    indexer
        .store
        .partitions
        .all()
        .iter()
        .map(|p| p.reader.searcher().num_docs())
        .sum()
}

#[test]
fn replay_skips_what_a_partition_already_committed() {
    let dir = tempfile::tempdir().expect("dir");
    let now = now_ns() as u64;
    let yesterday = now - NANOS_PER_DAY as u64;
    {
        let mut indexer = setup(dir.path(), 0);
        apply_logs(&mut indexer, 1, now, 3);
        apply_logs(&mut indexer, 2, yesterday, 2);
        indexer.commit();
        assert_eq!(doc_count(&indexer), 5);
    }
    // A restart replays the same WAL entries plus one new one.
    let mut indexer = setup(dir.path(), 0);
    apply_logs(&mut indexer, 1, now, 3);
    apply_logs(&mut indexer, 2, yesterday, 2);
    apply_logs(&mut indexer, 3, now, 4);
    indexer.commit();
    assert_eq!(doc_count(&indexer), 9, "entries 1 and 2 must not be indexed twice");
    assert_eq!(indexer.store.partitions.max_committed_lsn(), 3);
}

/// Applies, as entry `lsn`, `n` records of `service` (with a batch id).
fn apply_service_logs(indexer: &mut Indexer, lsn: u64, ts: u64, n: usize, service: &str, batch_id: &str) {
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(crate::storage::convert::service_resource(service)),
            scope_logs: vec![ScopeLogs {
                log_records: (0..n)
                    .map(|i| LogRecord {
                        time_unix_nano: ts + i as u64,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let docs = log_docs(&indexer.store.schemas.logs, &request, &mut |_, _| 0);
    indexer.apply(lsn, Signal::Logs, Some(batch_id), docs, Vec::new());
}

#[test]
fn a_purge_deletes_its_services_and_ids_and_nothing_after_it() {
    let dir = tempfile::tempdir().expect("dir");
    let now = now_ns() as u64;
    let doomed = |s: &str| s == "gone";
    let forget = |id: &str| id.ends_with("/p3");
    let run = |indexer: &mut Indexer| {
        apply_service_logs(indexer, 1, now, 3, "kept", "a/p4");
        apply_service_logs(indexer, 2, now, 2, "gone", "b/p3");
        indexer.commit();
        // Not committed when the purge comes: deleted all the same.
        apply_service_logs(indexer, 3, now, 4, "gone", "c/p3");
        indexer.purge(4, &doomed, &forget);
        // The partition taken back and rebuilt: after the purge, so it stays.
        apply_service_logs(indexer, 5, now, 5, "gone", "d/p3");
        indexer.commit();
    };
    let mut indexer = setup(dir.path(), 0);
    run(&mut indexer);
    assert_eq!(doc_count(&indexer), 3 + 5, "the purge removed entries 2 and 3 only");
    let dedup = Arc::clone(&indexer.dedup);
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime.block_on(async {
        assert!(
            matches!(dedup.claim("b/p3").await, crate::wal::Claim::New(_)),
            "a purged partition's ids are forgotten"
        );
        assert!(
            matches!(dedup.claim("a/p4").await, crate::wal::Claim::Duplicate),
            "other partitions' ids stay"
        );
        assert!(
            matches!(dedup.claim("d/p3").await, crate::wal::Claim::Duplicate),
            "ids after the purge stay"
        );
    });
    drop(indexer);
    // A replay of the same log after a restart ends in the same place.
    let mut indexer = setup(dir.path(), 0);
    run(&mut indexer);
    assert_eq!(doc_count(&indexer), 3 + 5);
}

#[test]
fn retention_drops_partitions_by_age_then_by_disk_budget() {
    let dir = tempfile::tempdir().expect("dir");
    let today = day_of(now_ns());
    let mut indexer = setup(dir.path(), 0);
    let partitions = &indexer.store.partitions;
    let old = partitions.get_or_open(Signal::Logs, today - 10).expect("old");
    let old_dir = old.dir.clone();
    drop(old);
    for day in [today - 2, today - 1, today] {
        partitions.get_or_open(Signal::Traces, day).expect("partition");
    }
    // Samples, each in its day's block of the time-series store.
    let labels = vigil_tsdb::Labels::new([("__name__", "up")]);
    for (lsn, day) in [(1, today - 10), (2, today - 1), (3, today)] {
        let t_ms = day * 86_400_000 + 1;
        indexer.store.tsdb.append(lsn, &labels, t_ms, 1.0).expect("append");
    }
    let sample_days = |indexer: &Indexer| -> Vec<i64> { indexer.store.tsdb.days() };
    indexer.enforce_retention();
    assert!(!old_dir.exists(), "a partition past retention must be deleted");
    assert_eq!(indexer.store.partitions.len(), 3);
    assert_eq!(sample_days(&indexer), vec![today - 1, today]);

    indexer.options.max_disk_bytes = 1;
    indexer.enforce_retention();
    let left: Vec<i64> = indexer.store.partitions.all().iter().map(|p| p.day).collect();
    assert_eq!(left, vec![today], "over the disk budget everything but today goes");
    assert_eq!(sample_days(&indexer), vec![today]);
}

#[test]
fn old_days_are_downsampled_one_a_tick_to_the_coarsest_level_they_are_old_enough_for() {
    use crate::config::downsampling::{DownsamplingLevel, levels};
    let dir = tempfile::tempdir().expect("dir");
    // A fixed "now", mid-day: the test does not depend on the wall clock's day.
    let today = day_of(now_ns());
    let now = today * NANOS_PER_DAY + NANOS_PER_DAY / 2;
    let mut indexer = setup(dir.path(), 0);
    assert!(
        !indexer.downsample_one_day(now),
        "no levels configured: nothing is rewritten"
    );
    let level = |after: &str, step: &str| DownsamplingLevel {
        after: after.into(),
        step: step.into(),
    };
    indexer.options.downsampling = levels(&[level("1d", "5m"), level("2d", "1h")]).expect("levels");
    // A sample a minute over four days. Today's block and yesterday's (ended less than a
    // day ago) stay whole; the day before ended a day ago (5 m); the one before that, two (1 h).
    let labels = vigil_tsdb::Labels::new([("__name__", "up")]);
    let mut lsn = 0;
    for day in today - 3..=today {
        for minute in 0..1_440 {
            lsn += 1;
            let t_ms = day * 86_400_000 + minute * 60_000;
            indexer.store.tsdb.append(lsn, &labels, t_ms, 1.0).expect("append");
        }
    }
    // Not while a sample the store failed to take waits in the WAL for the replay.
    indexer.samples_failed_at = Some(1);
    assert!(!indexer.downsample_one_day(now));
    indexer.samples_failed_at = None;
    assert!(indexer.downsample_one_day(now));
    assert_eq!(
        indexer.store.tsdb.resolution(today - 3),
        Some(3_600_000),
        "the oldest first"
    );
    assert_eq!(indexer.store.tsdb.resolution(today - 2), None, "one day a tick");
    assert!(indexer.downsample_one_day(now));
    assert!(!indexer.downsample_one_day(now), "nothing left to do");
    let resolutions: Vec<Option<i64>> = (today - 3..=today).map(|d| indexer.store.tsdb.resolution(d)).collect();
    assert_eq!(resolutions, vec![Some(3_600_000), Some(300_000), None, None]);
    assert_eq!(stored_samples(&indexer.store), 24 + 288 + 2 * 1_440);
    assert_eq!(indexer.store.metrics.tsdb_days_downsampled.get(), 2);
}
