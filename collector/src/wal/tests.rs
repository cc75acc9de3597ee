use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::telemetry::Metrics;

fn small_segments() -> WalOptions {
    WalOptions {
        segment_bytes: 256,
        queue_len: 64,
        max_group_bytes: 1024,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("test runtime")
}

fn reopen(dir: &Path, options: WalOptions) -> (Wal, Vec<WalRecord>) {
    let mut replayed = Vec::new();
    let wal = Wal::open(dir, options, 1, |r| replayed.push(r)).expect("open wal");
    (wal, replayed)
}

/// Appends `payloads` concurrently and returns the LSNs the writer acknowledged plus
/// what it forwarded to the sink.
fn append_all(wal: Wal, payloads: &[Vec<u8>]) -> (Vec<u64>, Vec<WalEntry>, WalTruncator) {
    let (sink_tx, sink_rx) = std_mpsc::channel();
    let (appender, truncator, handle) = wal
        .start(Arc::new(Metrics::default()), move |e| {
            let _ = sink_tx.send(e);
        })
        .expect("start wal");
    let lsns = runtime().block_on(async {
        let futures: Vec<_> = payloads
            .iter()
            .map(|p| {
                let appender = appender.clone();
                let p = Bytes::from(p.clone());
                async move { appender.append(p).await.expect("append") }
            })
            .collect();
        futures::future::join_all(futures).await
    });
    drop(appender);
    handle.join().expect("writer thread");
    (lsns, sink_rx.into_iter().collect(), truncator)
}

#[test]
fn acknowledged_appends_are_replayed_in_order_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, replayed) = reopen(dir.path(), small_segments());
    assert!(replayed.is_empty());
    let payloads: Vec<Vec<u8>> = (0..50).map(|i| format!("record-{i}").into_bytes()).collect();
    let (lsns, forwarded, _) = append_all(wal, &payloads);
    assert_eq!(lsns, (1..=50).collect::<Vec<u64>>());
    assert_eq!(forwarded.iter().map(|e| e.lsn).collect::<Vec<_>>(), lsns);

    let (wal, replayed) = reopen(dir.path(), small_segments());
    assert_eq!(replayed.len(), 50);
    for (record, payload) in replayed.iter().zip(&payloads) {
        assert_eq!(&record.payload, payload);
    }
    assert_eq!(wal.next_lsn(), 51);
}

#[test]
fn truncation_drops_only_checkpointed_closed_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = reopen(dir.path(), small_segments());
    let payloads: Vec<Vec<u8>> = (0..40).map(|_| vec![7u8; 60]).collect();
    let (_, _, truncator) = append_all(wal, &payloads);
    // The first segment closes after the group that takes it past 256 bytes: at worst three
    // records (the writer woke for the first ones) and then a whole group of 18 (1,024
    // bytes of 60-byte payloads), so it ends at record 21 or before. A checkpoint at 20
    // failed now and then, when it ended at 21.
    let deleted = truncator.truncate(25).expect("truncate");
    assert!(deleted > 0, "small segments must have rolled");
    let (_, replayed) = reopen(dir.path(), small_segments());
    let first = replayed.first().map(|r| r.lsn).unwrap_or(0);
    assert!(first <= 26, "records above the checkpoint must survive, first={first}");
    assert_eq!(replayed.last().map(|r| r.lsn), Some(40));
}

#[test]
fn a_fully_truncated_log_does_not_reuse_lsns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = reopen(dir.path(), small_segments());
    let payloads: Vec<Vec<u8>> = (0..30).map(|_| vec![1u8; 80]).collect();
    let (_, _, truncator) = append_all(wal, &payloads);
    truncator.truncate(u64::MAX).expect("truncate");
    let (wal, _) = reopen(dir.path(), small_segments());
    assert!(wal.next_lsn() > 30, "next lsn {} reuses an old one", wal.next_lsn());
    // The indexes can demand a higher floor, e.g. when the log directory was wiped.
    let floor = Wal::open(dir.path(), small_segments(), 1000, |_| {}).expect("open");
    assert_eq!(floor.next_lsn(), 1000);
}

#[test]
fn corruption_in_a_closed_segment_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = reopen(dir.path(), small_segments());
    let payloads: Vec<Vec<u8>> = (0..20).map(|_| vec![3u8; 100]).collect();
    append_all(wal, &payloads);
    let first_segment = segment::segment_path(dir.path(), 1);
    let mut bytes = std::fs::read(&first_segment).expect("read");
    bytes[20] ^= 0xff;
    std::fs::write(&first_segment, bytes).expect("write");
    match Wal::open(dir.path(), small_segments(), 1, |_| {}) {
        Err(WalError::Corrupt { path, .. }) => assert_eq!(path, first_segment),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a corrupt closed segment must not be skipped silently"),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Vec<u8>>),
    Truncate(u8),
    TearTail(u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 1..8).prop_map(Op::Append),
        1 => any::<u8>().prop_map(Op::Truncate),
        1 => (1u8..40).prop_map(Op::TearTail),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// The log checked against a model: after any sequence of appends, truncations,
    /// torn tails (a crash mid-write of an unacknowledged frame) and restarts, replay
    /// returns every acknowledged record above the checkpoint exactly once, in order.
    #[test]
    fn wal_matches_model(ops in proptest::collection::vec(op(), 1..25)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut model: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut checkpoint = 0u64;
        let (mut wal, _) = reopen(dir.path(), small_segments());
        let mut truncator: Option<WalTruncator> = None;
        for op in ops {
            match op {
                Op::Append(payloads) => {
                    let (lsns, _, t) = append_all(wal, &payloads);
                    truncator = Some(t);
                    for (lsn, p) in lsns.into_iter().zip(payloads) {
                        model.push((lsn, p));
                    }
                    let (w, _) = reopen(dir.path(), small_segments());
                    wal = w;
                }
                Op::Truncate(fraction) => {
                    if let (Some(t), Some((last, _))) = (&truncator, model.last()) {
                        checkpoint = checkpoint.max(last * u64::from(fraction) / 255);
                        t.truncate(checkpoint).expect("truncate");
                    }
                }
                Op::TearTail(junk) => {
                    // Garbage after the last frame: a write the crash interrupted.
                    drop(wal);
                    let active = std::fs::read_dir(dir.path()).expect("ls")
                        .filter_map(|e| e.ok())
                        .map(|e| e.path())
                        .max()
                        .expect("active segment");
                    let mut bytes = std::fs::read(&active).expect("read");
                    bytes.extend(std::iter::repeat_n(junk, usize::from(junk)));
                    std::fs::write(&active, bytes).expect("write");
                    let (w, _) = reopen(dir.path(), small_segments());
                    wal = w;
                }
                Op::Reopen => {
                    drop(wal);
                    let (w, _) = reopen(dir.path(), small_segments());
                    wal = w;
                }
            }
        }
        drop(wal);
        let (_, replayed) = reopen(dir.path(), small_segments());
        let expected_above: Vec<&(u64, Vec<u8>)> = model.iter().filter(|(lsn, _)| *lsn > checkpoint).collect();
        let replayed_above: Vec<&WalRecord> = replayed.iter().filter(|r| r.lsn > checkpoint).collect();
        prop_assert_eq!(replayed_above.len(), expected_above.len());
        for (r, (lsn, p)) in replayed_above.iter().zip(expected_above) {
            prop_assert_eq!(r.lsn, *lsn);
            prop_assert_eq!(&r.payload, p);
        }
        // Nothing below the checkpoint may come back that the model does not know.
        for r in &replayed {
            prop_assert!(model.iter().any(|(lsn, p)| *lsn == r.lsn && p == &r.payload));
        }
    }
}
