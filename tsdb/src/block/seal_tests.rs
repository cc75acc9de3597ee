//! A chunk write that fails must lose no sample: the head keeps what it holds until its
//! chunk is on disk (a review found the head cleared before the write; this holds the fix).
//! The failure is a real one: writes to `/dev/full` fail with "no space left on device".

use std::fs::OpenOptions;
use std::sync::Arc;

use super::Block;
use crate::{Labels, Matcher};

fn samples_of(block: &Block, name: &str) -> Vec<(i64, f64)> {
    let (file, found) = block.find(&[Matcher::Equal("__name__".into(), name.into())], i64::MIN, i64::MAX);
    found
        .iter()
        .flat_map(|f| crate::read::read_samples(&file, f, i64::MIN, i64::MAX).expect("read"))
        .collect()
}

#[test]
fn a_failed_chunk_write_keeps_the_heads_samples_for_the_next_seal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut block = Block::open(dir.path()).expect("open");
    let labels = Labels::new([("__name__", "m")]);
    let full_head: Vec<(i64, f64)> = (0..120).map(|i| (i * 1000, i as f64)).collect();
    for &(t, v) in &full_head {
        assert!(block.append(1, &labels, t, v).expect("append"));
    }

    let disk = Arc::clone(&block.chunks_file);
    block.chunks_file = Arc::new(OpenOptions::new().append(true).open("/dev/full").expect("/dev/full"));
    // The 121st sample seals the full head first; the chunk write fails.
    assert!(block.append(2, &labels, 120_000, 120.0).is_err());
    assert_eq!(
        block.series[0].head.len(),
        120,
        "the head lost samples to a failed write"
    );
    assert!(block.series[0].chunks.is_empty());
    assert_eq!(samples_of(&block, "m"), full_head, "the samples are still readable");

    // The disk is back: the same samples seal into one chunk, and the replayed sample follows.
    block.chunks_file = disk;
    assert!(
        block
            .append(2, &labels, 120_000, 120.0)
            .expect("append after the disk is back")
    );
    assert_eq!(block.series[0].chunks.len(), 1);
    assert_eq!(block.series[0].head.len(), 1);
    let mut expected = full_head;
    expected.push((120_000, 120.0));
    assert_eq!(samples_of(&block, "m"), expected);
}
