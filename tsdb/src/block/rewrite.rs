//! A block rewritten at a coarser resolution (downsampling, `store/downsample.rs`): the
//! day's live series copied into a new, empty block, each keeping the last sample of every
//! step, with the WAL bookkeeping of the original (each series complete up to the newest
//! entry the original held of it, the heads snapshot's entry, the purges), so that a WAL
//! replay after the swap skips what the day already held exactly as it did before.

use std::io::Write;
use std::path::Path;

use super::{Block, CHUNKS_FILE, ChunkMeta, SERIES_FILE};
use crate::chunk::{self, Sample};
use crate::head::CHUNK_SAMPLES;
use crate::read::{Found, read_samples};
use crate::record::sync_dir;
use crate::{Error, Labels, layout, record, snapshot};

/// Written last into a rewritten block, holding its step in milliseconds: a block
/// directory that has it is complete.
pub(crate) const RESOLUTION_FILE: &str = "resolution";

/// The step a block was rewritten at, from its [`RESOLUTION_FILE`]; `None` for a block at
/// full resolution.
pub(crate) fn read_resolution(dir: &Path) -> Result<Option<i64>, Error> {
    let path = dir.join(RESOLUTION_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|&step| step > 0)
            .map(Some)
            .ok_or_else(|| Error::corrupt(&path, "not a step in milliseconds")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// The last sample of each `step`-long interval (intervals aligned to the epoch) of
/// `samples`, which are in time order: what VictoriaMetrics' downsampling keeps. A counter
/// keeps its value at the end of every interval, so `rate` and `increase` over ranges of a
/// few steps read as before (a reset shows as a lower value, unless the counter climbed
/// back past it within the interval); a gauge keeps a value, not its extremes; a staleness
/// marker that ends an interval stays, and the series still ends there.
pub(crate) fn last_per_step(samples: &[Sample], step: i64) -> Vec<Sample> {
    let mut out: Vec<Sample> = Vec::new();
    for &s in samples {
        match out.last_mut() {
            Some(last) if last.0.div_euclid(step) == s.0.div_euclid(step) => *last = s,
            _ => out.push(s),
        }
    }
    out
}

/// One live series of a block as a rewrite copies it: where its samples are, read one
/// series at a time ([`Block::read_copied`]) so a rewrite holds one series' samples, not
/// the day's.
pub(crate) struct Copied {
    pub(crate) created_lsn: u64,
    /// The newest WAL entry the original held of it, in a chunk or in its head.
    pub(crate) held_lsn: u64,
    pub(crate) found: Found,
}

/// What a block holds, for a rewrite: its live series, its purges, and the entry its heads
/// snapshot was taken at.
pub(crate) struct Contents {
    pub(crate) series: Vec<Copied>,
    pub(crate) purges: Vec<(Labels, u64)>,
    pub(crate) snapshot_lsn: u64,
}

impl Block {
    /// Everything a rewrite copies. The caller holds the block's lock throughout the
    /// rewrite, so nothing is appended between this read and the swap.
    pub(crate) fn contents(&self) -> Contents {
        let series = self
            .series
            .iter()
            .filter(|s| !s.deleted)
            .map(|s| Copied {
                created_lsn: s.created_lsn,
                held_lsn: s.complete_lsn.max(s.head.last_lsn().unwrap_or(0)),
                found: Found {
                    labels: s.labels.clone(),
                    chunks: s.chunks.clone(),
                    head: s.head.samples().to_vec(),
                },
            })
            .collect();
        Contents {
            series,
            purges: self.purged_at.iter().map(|(l, &lsn)| (l.clone(), lsn)).collect(),
            snapshot_lsn: self.snapshot_lsn,
        }
    }

    /// Every sample of a series of [`Block::contents`], in time order.
    pub(crate) fn read_copied(&self, copied: &Copied) -> Result<Vec<Sample>, Error> {
        read_samples(&self.chunks_file, &copied.found, i64::MIN, i64::MAX)
            .map_err(|e| Error::io(&self.dir.join(CHUNKS_FILE), e))
    }

    /// Writes `copied` into this new block with `samples` (its samples, downsampled) in
    /// chunks of [`CHUNK_SAMPLES`], each complete up to the entry the original held.
    pub(crate) fn write_copy(&mut self, copied: &Copied, samples: &[Sample]) -> Result<(), Error> {
        if samples.is_empty() {
            return Ok(());
        }
        let id = self.series.len() as u32;
        let labels = &copied.found.labels;
        let record = layout::series(id, copied.created_lsn, labels);
        record::append(&self.series_file, &mut self.series_end, &record)
            .map_err(|e| Error::io(&self.dir.join(SERIES_FILE), e))?;
        self.add_series(labels.clone(), copied.created_lsn);
        for part in samples.chunks(CHUNK_SAMPLES) {
            let (min_t, max_t) = (part[0].0, part[part.len() - 1].0);
            let bytes = chunk::encode(part);
            let mut payload = layout::chunk_header(id, copied.held_lsn, min_t, max_t);
            let header = payload.len();
            payload.extend_from_slice(&bytes);
            let at = record::append(&self.chunks_file, &mut self.chunks_end, &payload)
                .map_err(|e| Error::io(&self.dir.join(CHUNKS_FILE), e))?;
            let series = &mut self.series[id as usize];
            series.chunks.push(ChunkMeta {
                offset: at + header as u64,
                len: bytes.len() as u32,
                count: part.len() as u16,
                min_t,
                max_t,
            });
            series.complete_lsn = copied.held_lsn;
        }
        self.dirty = true;
        Ok(())
    }

    /// Writes a purge of the original into this new block: the labels, deleted as of
    /// entry `lsn`, so that a replay of older entries does not bring the series back.
    pub(crate) fn write_purge(&mut self, labels: &Labels, lsn: u64) -> Result<(), Error> {
        let id = self.series.len() as u32;
        let io = |e| Error::io(&self.dir.join(SERIES_FILE), e);
        record::append(&self.series_file, &mut self.series_end, &layout::series(id, 0, labels)).map_err(io)?;
        record::append(&self.series_file, &mut self.series_end, &layout::deletion(id, lsn)).map_err(io)?;
        self.add_series(labels.clone(), 0);
        self.mark_deleted(id, lsn);
        self.dirty = true;
        Ok(())
    }

    /// The rewrite's directory was renamed to `dir`: its open files are the same.
    pub(crate) fn moved_to(&mut self, dir: &Path) {
        self.dir = dir.to_path_buf();
    }

    /// Fails every later sync of this block: its files may no longer be where a restart
    /// reads them, so the WAL must keep what they hold until then.
    pub(crate) fn fail_syncs(&mut self) {
        self.sync_failed = true;
    }

    /// Whether an fsync of this block failed (see `Block::begin_sync`).
    pub(crate) fn syncs_failed(&self) -> bool {
        self.sync_failed
    }

    /// Makes this new block durable and complete: both files synced, an empty heads
    /// snapshot as of the original's (`applied`), and last the resolution file naming
    /// `step`, synced with the directory.
    pub(crate) fn finish_rewrite(&mut self, step: i64, applied: u64) -> Result<(), Error> {
        self.series_file
            .sync_data()
            .map_err(|e| Error::io(&self.dir.join(SERIES_FILE), e))?;
        self.chunks_file
            .sync_data()
            .map_err(|e| Error::io(&self.dir.join(CHUNKS_FILE), e))?;
        snapshot::write(&self.dir, applied, std::iter::empty())?;
        let path = self.dir.join(RESOLUTION_FILE);
        std::fs::File::create(&path)
            .and_then(|mut f| {
                f.write_all(step.to_string().as_bytes())?;
                f.sync_all()
            })
            .map_err(|e| Error::io(&path, e))?;
        sync_dir(&self.dir)?;
        self.dirty = false;
        self.snapshot_lsn = applied;
        self.resolution_ms = Some(step);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::last_per_step;

    #[test]
    fn each_step_keeps_its_last_sample_and_steps_are_aligned_to_the_epoch() {
        let samples = [
            (0, 1.0),
            (15, 2.0),
            (59, 3.0),
            (60, 4.0),
            (61, 5.0),
            (200, 6.0),
            (-1, 0.5),
        ];
        // In time order, as a block reads them (the negative one first).
        let mut sorted = samples.to_vec();
        sorted.sort_by_key(|s| s.0);
        assert_eq!(
            last_per_step(&sorted, 60),
            vec![(-1, 0.5), (59, 3.0), (61, 5.0), (200, 6.0)]
        );
        assert_eq!(last_per_step(&sorted, 1), sorted);
        assert!(last_per_step(&[], 60).is_empty());
    }
}
