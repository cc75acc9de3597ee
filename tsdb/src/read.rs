//! Reading a series' samples out of what a block found for it: its chunks, decoded from
//! the chunk file without the block's lock, and its head.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::Labels;
use crate::block::ChunkMeta;
use crate::chunk::{self, Sample};

/// What a selection read from one block: each series' labels and the chunks and head
/// samples that overlap the range, to be decoded without the block's lock.
pub(crate) struct Found {
    pub labels: Labels,
    pub chunks: Vec<ChunkMeta>,
    pub head: Vec<Sample>,
}

/// The samples of `found` within `[start, end]`, in time order: chunks decoded from
/// `file`, then the head. Chunks that overlap (late writes sealed after the chunk they
/// belong in) are merged, the later write winning a shared timestamp.
pub(crate) fn read_samples(file: &File, found: &Found, start: i64, end: i64) -> std::io::Result<Vec<Sample>> {
    let mut out: Vec<Sample> = Vec::new();
    let mut sorted = true;
    let mut buf = Vec::new();
    for c in &found.chunks {
        buf.resize(c.len as usize, 0);
        file.read_exact_at(&mut buf, c.offset)?;
        for s in chunk::decode(&buf).filter(|s| s.0 >= start && s.0 <= end) {
            sorted &= out.last().is_none_or(|l| l.0 < s.0);
            out.push(s);
        }
    }
    for &s in &found.head {
        sorted &= out.last().is_none_or(|l| l.0 < s.0);
        out.push(s);
    }
    if !sorted {
        // Stable: among equal timestamps the later write stays last, and is kept.
        out.sort_by_key(|s| s.0);
        let mut merged: Vec<Sample> = Vec::with_capacity(out.len());
        for s in out {
            match merged.last_mut() {
                Some(last) if last.0 == s.0 => *last = s,
                _ => merged.push(s),
            }
        }
        out = merged;
    }
    Ok(out)
}
