//! Reading a series' samples out of what a block found for it: its chunks, decoded from
//! the chunk file without the block's lock, and its head.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::block::ChunkMeta;
use crate::chunk::{self, Sample};
use crate::{Error, Labels};

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

/// The series a selection found in the label index, their samples not read yet: each is read
/// with [`Planned::read`] when wanted, so a caller that reduces series one at a time holds one
/// series' samples, not the selection's. The chunk files are held open, so a block dropped by
/// retention meanwhile still reads.
pub struct Planned {
    /// Each block's chunk file and directory (for errors), in day order.
    files: Vec<(Arc<File>, PathBuf)>,
    series: Vec<PlannedSeries>,
}

/// One series of a [`Planned`] selection: its labels and where its samples are.
pub struct PlannedSeries {
    pub labels: Labels,
    /// (block, what the block found), in day order.
    parts: Vec<(usize, Found)>,
}

impl Planned {
    pub(crate) fn new(found: Vec<(Arc<File>, PathBuf, Vec<Found>)>) -> Planned {
        let mut by_labels: std::collections::BTreeMap<Labels, Vec<(usize, Found)>> = std::collections::BTreeMap::new();
        let mut files = Vec::with_capacity(found.len());
        for (block, (file, dir, series)) in found.into_iter().enumerate() {
            files.push((file, dir));
            for f in series {
                by_labels.entry(f.labels.clone()).or_default().push((block, f));
            }
        }
        Planned {
            files,
            series: by_labels
                .into_iter()
                .map(|(labels, parts)| PlannedSeries { labels, parts })
                .collect(),
        }
    }

    /// The series, sorted by labels.
    pub fn series(&self) -> &[PlannedSeries] {
        &self.series
    }

    /// The samples of `series` within `[start, end]`, in time order (blocks hold disjoint
    /// days, read in day order).
    pub fn read(&self, series: &PlannedSeries, start: i64, end: i64) -> Result<Vec<Sample>, Error> {
        let mut out = Vec::new();
        for (block, found) in &series.parts {
            let (file, dir) = &self.files[*block];
            let samples = read_samples(file, found, start, end).map_err(|e| Error::io(dir, e))?;
            if out.is_empty() {
                out = samples;
            } else {
                out.extend(samples);
            }
        }
        Ok(out)
    }
}
