use std::collections::VecDeque;

use proptest::prelude::*;

use super::*;

fn opts(max_bytes: u64, when_full: WhenFull) -> BufferOptions {
    BufferOptions {
        max_bytes,
        when_full,
        segment_bytes: 300,
        memory_bytes: 200,
        fsync: false,
    }
}

fn payload(seq_hint: u64, len: usize) -> Bytes {
    Bytes::from(format!("{seq_hint:08}").repeat(len / 8 + 1)[..len.max(8)].to_string())
}

fn drain(buffer: &DiskBuffer) -> Vec<Arc<Record>> {
    let mut out = Vec::new();
    let mut after = buffer.acked();
    while let Some(r) = buffer.next_after(after).expect("read") {
        after = r.seq;
        out.push(r);
    }
    out
}

#[test]
fn records_come_back_in_order_after_reopen_and_acked_ones_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (b, rec) = DiskBuffer::open(dir.path(), opts(100_000, WhenFull::Block)).expect("open");
    assert_eq!(rec.pending_records, 0);
    for i in 0..20 {
        let seq = b
            .append(
                Kind::Logs,
                vec![(format!("k{}", i % 3), format!("{i}").into_bytes())],
                payload(i, 50),
            )
            .expect("append");
        assert_eq!(seq, i + 1);
    }
    b.ack(7).expect("ack");
    drop(b);
    let (b, rec) = DiskBuffer::open(dir.path(), opts(100_000, WhenFull::Block)).expect("reopen");
    assert_eq!(rec.pending_records, 13);
    // The checkpoints are the last entry written per key, acked or not.
    assert_eq!(rec.checkpoints.get("k0").map(Vec::as_slice), Some(&b"18"[..]));
    assert_eq!(rec.checkpoints.get("k1").map(Vec::as_slice), Some(&b"19"[..]));
    assert_eq!(rec.checkpoints.get("k2").map(Vec::as_slice), Some(&b"17"[..]));
    let seqs: Vec<u64> = drain(&b).iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (8..=20).collect::<Vec<_>>());
    assert_eq!(b.append(Kind::Metrics, vec![], payload(0, 10)).expect("append"), 21);
}

#[test]
fn acked_segments_are_deleted_and_their_checkpoints_survive_in_the_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (b, _) = DiskBuffer::open(dir.path(), opts(100_000, WhenFull::Block)).expect("open");
    for i in 0..40 {
        b.append(
            Kind::Logs,
            vec![("file".into(), format!("{i}").into_bytes())],
            payload(i, 60),
        )
        .expect("append");
    }
    b.append(Kind::Logs, vec![("other".into(), b"x".to_vec())], payload(0, 60))
        .expect("append");
    b.append(Kind::Logs, vec![("other".into(), Vec::new())], payload(0, 60))
        .expect("append");
    let segments_before = std::fs::read_dir(dir.path()).expect("ls").count();
    b.ack(42).expect("ack");
    let segments_after = std::fs::read_dir(dir.path()).expect("ls").count();
    assert!(
        segments_after < segments_before,
        "{segments_before} -> {segments_after}"
    );
    drop(b);
    let (b, rec) = DiskBuffer::open(dir.path(), opts(100_000, WhenFull::Block)).expect("reopen");
    assert_eq!(rec.checkpoints.get("file").map(Vec::as_slice), Some(&b"39"[..]));
    assert!(!rec.checkpoints.contains_key("other"), "a deleted key stays deleted");
    assert!(drain(&b).is_empty());
    assert_eq!(b.append(Kind::Logs, vec![], payload(0, 10)).expect("append"), 43);
}

#[test]
fn a_torn_tail_is_cut_and_appends_continue_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (b, _) = DiskBuffer::open(dir.path(), opts(100_000, WhenFull::Block)).expect("open");
    for i in 0..3 {
        b.append(
            Kind::Logs,
            vec![("f".into(), format!("{i}").into_bytes())],
            payload(i, 20),
        )
        .expect("append");
    }
    drop(b);
    // A kill in the middle of the fourth append: half a record at the end.
    let last = last_segment(dir.path());
    let half = segment::encode(&Record {
        seq: 4,
        kind: Kind::Logs,
        lz4: false,
        entries: vec![("f".into(), b"3".to_vec())],
        payload: payload(3, 20),
    });
    let mut f = OpenOptions::new().append(true).open(&last).expect("open seg");
    f.write_all(&half[..half.len() / 2]).expect("write");
    drop(f);
    let (b, rec) = DiskBuffer::open(dir.path(), opts(100_000, WhenFull::Block)).expect("reopen");
    assert_eq!(rec.truncated.len(), 1, "{:?}", rec.truncated);
    assert_eq!(
        rec.checkpoints.get("f").map(Vec::as_slice),
        Some(&b"2"[..]),
        "the torn record's offsets are not taken"
    );
    assert_eq!(b.append(Kind::Logs, vec![], payload(9, 20)).expect("append"), 4);
    drop(b);
    let (b, rec) = DiskBuffer::open(dir.path(), opts(100_000, WhenFull::Block)).expect("reopen twice");
    assert!(rec.truncated.is_empty());
    assert_eq!(drain(&b).iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
}

#[test]
fn a_group_append_is_contiguous_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (b, _) = DiskBuffer::open(dir.path(), opts(100_000, WhenFull::Block)).expect("open");
    b.append(Kind::Logs, vec![], payload(0, 10)).expect("append");
    let group = (1..=5)
        .map(|i| {
            NewRecord::compressed(
                Kind::Logs,
                vec![("f".to_string(), format!("{i}").into_bytes())],
                &payload(i, 90),
            )
        })
        .collect();
    assert_eq!(b.append_many(group).expect("group"), 6);
    assert_eq!(drain(&b).len(), 6);
    drop(b);
    let (b, rec) = DiskBuffer::open(dir.path(), opts(100_000, WhenFull::Block)).expect("reopen");
    assert_eq!(rec.checkpoints.get("f").map(Vec::as_slice), Some(&b"5"[..]));
    let all = drain(&b);
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    assert!(all[1].lz4 && !all[0].lz4);
    assert_eq!(all[1].otlp().expect("decompresses"), payload(1, 90));
}

#[test]
fn a_full_buffer_blocks_or_drops_the_oldest_as_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (b, _) = DiskBuffer::open(dir.path(), opts(1_000, WhenFull::Block)).expect("open");
    let mut n = 0;
    while b.try_append(Kind::Logs, vec![], payload(n, 80)).is_ok() {
        n += 1;
    }
    assert!(matches!(
        b.try_append(Kind::Logs, vec![], payload(n, 80)),
        Err(BufferError::Full)
    ));
    assert!(b.stats().pending_bytes <= 1_000);
    // Acknowledging makes room.
    b.ack(2).expect("ack");
    assert!(b.try_append(Kind::Logs, vec![], payload(n, 80)).is_ok());
    assert_eq!(b.stats().dropped_records, 0);

    let dir = tempfile::tempdir().expect("tempdir");
    let (b, _) = DiskBuffer::open(dir.path(), opts(1_000, WhenFull::DropOldest)).expect("open");
    for i in 0..50 {
        b.append(Kind::Logs, vec![], payload(i, 80))
            .expect("append never blocks");
    }
    let stats = b.stats();
    assert!(stats.dropped_records > 0);
    assert!(stats.pending_bytes <= 1_000);
    assert_eq!(stats.pending_records + stats.dropped_records, 50);
    let kept: Vec<u64> = drain(&b).iter().map(|r| r.seq).collect();
    assert_eq!(kept.last(), Some(&50), "the newest survive");
    assert!(kept.windows(2).all(|w| w[1] == w[0] + 1));
}

#[test]
fn close_wakes_a_blocked_producer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (b, _) = DiskBuffer::open(dir.path(), opts(1_000, WhenFull::Block)).expect("open");
    while b.try_append(Kind::Logs, vec![], payload(0, 80)).is_ok() {}
    let b2 = Arc::clone(&b);
    let producer = std::thread::spawn(move || b2.append(Kind::Logs, vec![], payload(0, 80)));
    b.close();
    assert!(matches!(producer.join().expect("join"), Err(BufferError::Closed)));
}

fn last_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("ls")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    /// Send and acknowledge up to this many of the oldest pending records.
    Ack(usize),
    /// Kill -9 and restart.
    Crash,
    /// Kill -9 in the middle of an append (a torn tail), then restart.
    CrashMidAppend(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (1usize..120).prop_map(Op::Append),
        3 => (1usize..6).prop_map(Op::Ack),
        1 => Just(Op::Crash),
        1 => (1usize..60).prop_map(Op::CrashMidAppend),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Against a simple in-memory model (a queue of pending records and a map of
    /// checkpoints), the buffer loses nothing acknowledged to a producer, replays
    /// nothing acknowledged by the collector, keeps the order, and keeps checkpoints
    /// exactly in step with the data, across any sequence of crashes.
    #[test]
    fn matches_the_model_across_crashes(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = || opts(2_000, WhenFull::Block);
        let (mut b, _) = DiskBuffer::open(dir.path(), o()).expect("open");
        let mut pending: VecDeque<(u64, Bytes)> = VecDeque::new();
        let mut checkpoints: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut next = 1u64;
        for op in ops {
            match op {
                Op::Append(len) => {
                    let entry = (format!("k{}", len % 4), format!("{next}").into_bytes());
                    let p = payload(next, len);
                    match b.try_append(Kind::Logs, vec![entry.clone()], p.clone()) {
                        Ok(seq) => {
                            prop_assert_eq!(seq, next);
                            pending.push_back((seq, p));
                            checkpoints.insert(entry.0, entry.1);
                            next += 1;
                        }
                        Err(BufferError::Full) => {
                            let size = encoded_len(&[entry], p.len()) as u64;
                            prop_assert!(b.stats().pending_bytes + size > 2_000);
                        }
                        Err(e) => prop_assert!(false, "append failed: {e}"),
                    }
                }
                Op::Ack(n) => {
                    let mut after = b.acked();
                    let mut last = None;
                    for _ in 0..n {
                        match b.next_after(after).expect("read") {
                            Some(r) => {
                                let (seq, p) = pending.pop_front().expect("model has it");
                                prop_assert_eq!(r.seq, seq);
                                prop_assert_eq!(&r.payload, &p);
                                after = r.seq;
                                last = Some(r.seq);
                            }
                            None => prop_assert!(pending.is_empty()),
                        }
                    }
                    if let Some(seq) = last {
                        b.ack(seq).expect("ack");
                    }
                }
                Op::Crash | Op::CrashMidAppend(_) => {
                    drop(b);
                    if let Op::CrashMidAppend(cut) = op {
                        let torn = segment::encode(&Record {
                            seq: next,
                            kind: Kind::Logs,
                            lz4: false,
                            entries: vec![("k0".into(), b"torn".to_vec())],
                            payload: payload(next, 100),
                        });
                        let mut f = OpenOptions::new().append(true).open(last_segment(dir.path())).expect("seg");
                        f.write_all(&torn[..cut.min(torn.len() - 1)]).expect("write");
                    }
                    let (reopened, rec) = DiskBuffer::open(dir.path(), o()).expect("reopen");
                    b = reopened;
                    prop_assert_eq!(&rec.checkpoints, &checkpoints);
                    prop_assert_eq!(rec.pending_records, pending.len() as u64);
                }
            }
            prop_assert_eq!(b.stats().pending_records, pending.len() as u64);
        }
        let all: Vec<u64> = drain(&b).iter().map(|r| r.seq).collect();
        prop_assert_eq!(all, pending.iter().map(|(s, _)| *s).collect::<Vec<_>>());
    }
}

#[test]
fn compressed_otlp_round_trips_through_memory_and_disk() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use prost::Message;
    let mut batch = crate::tail::encode::LogBatch::default();
    for i in 0..200 {
        let body = format!("line {i} with some text");
        batch.push(&crate::tail::encode::Fields {
            time_unix_nano: 1,
            observed_time_unix_nano: 2,
            severity_number: 9,
            severity_text: "INFO",
            body: &body,
            encoded_attributes: &[],
            attributes: &[],
        });
    }
    let bytes = batch.finish(&Default::default(), &crate::otlp::scope());
    let dir = tempfile::tempdir().expect("tempdir");
    // Memory cache too small for the record: the second read comes from disk.
    let (b, _) = DiskBuffer::open(dir.path(), opts(1_000_000, WhenFull::Block)).expect("open");
    b.append_many(vec![
        NewRecord::compressed(Kind::Logs, vec![], &bytes),
        NewRecord::compressed(Kind::Logs, vec![], &bytes),
    ])
    .expect("append");
    for r in drain(&b) {
        let otlp = r.otlp().expect("decompress");
        assert_eq!(otlp, bytes);
        let req = ExportLogsServiceRequest::decode(otlp).expect("decode");
        assert_eq!(req.resource_logs[0].scope_logs[0].log_records.len(), 200);
    }
}
