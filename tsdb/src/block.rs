//! One UTC day of samples: `series.log` (each series' labels, once, and deletions) and
//! `chunks.log` (sealed chunks), both append-only record files (`record.rs`, `layout.rs`),
//! `heads.snap` (the open heads, `snapshot.rs`), and in memory the label index, each
//! series' chunk list and its head.
//!
//! Order of durability: a series' record is written before any chunk that names it, `sync`
//! flushes the series file before the chunk file, and a snapshot is taken only after a
//! sync, so what a file on disk names always exists. Opening a block reads all three, cuts
//! a torn tail, and learns which WAL entries it already holds: those up to the snapshot's,
//! and for each series those up to its last chunk's `complete_lsn`. Replay skips them.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use foldhash::quality::RandomState;

use crate::chunk::{self, Sample};
use crate::head::Head;
use crate::layout::{self, SeriesRecord};
use crate::postings::Postings;
use crate::read::Found;
use crate::{Error, Labels, Matcher, record, snapshot};

const SERIES_FILE: &str = "series.log";
const CHUNKS_FILE: &str = "chunks.log";

/// Where a sealed chunk lies and what it covers.
#[derive(Clone, Copy)]
pub(crate) struct ChunkMeta {
    pub(crate) offset: u64,
    pub(crate) len: u32,
    /// Samples in the chunk (its header's count).
    count: u16,
    min_t: i64,
    max_t: i64,
}

struct Series {
    labels: Labels,
    /// The WAL entry that brought its first sample: a purge deletes only older series.
    created_lsn: u64,
    chunks: Vec<ChunkMeta>,
    head: Head,
    /// Samples of this series from WAL entries up to this one are in chunks.
    complete_lsn: u64,
    deleted: bool,
}

pub(crate) struct Block {
    dir: PathBuf,
    series_file: Arc<File>,
    series_end: u64,
    chunks_file: Arc<File>,
    chunks_end: u64,
    series: Vec<Series>,
    /// Live series by labels (a deleted series' labels name a new series if they return).
    ids: HashMap<Labels, u32, RandomState>,
    /// The last purge of each deleted label set: its samples from before it stay deleted.
    purged_at: HashMap<Labels, u64, RandomState>,
    postings: Postings,
    /// Written since the last sync: the files need flushing.
    dirty: bool,
    /// Counts writes to either file and changes to the heads, so that a sync or a snapshot
    /// done outside the lock knows whether anything came in meanwhile.
    generation: u64,
    /// An fsync failed: the kernel may have dropped the pages it could not write, and a
    /// second fsync would report success for data that is not on disk. Every later sync
    /// fails, so the WAL keeps everything from here to the restart, whose replay restores it.
    sync_failed: bool,
    /// The lowest WAL entry with a sample in a chunk, or a deletion, not yet synced.
    unsynced_floor: Option<u64>,
    /// Every head sample of entries up to this one is in `heads.snap`.
    snapshot_lsn: u64,
    /// Heads changed since the last snapshot.
    changed: bool,
    /// Bytes cut off torn tails when the block was opened.
    pub(crate) recovered_cut_bytes: u64,
    /// The step the block was downsampled to (`rewrite.rs`), `None` at full resolution.
    pub(crate) resolution_ms: Option<i64>,
    /// Replaced by its rewrite: a writer that waited for its lock looks the day up again
    /// (`Tsdb::append`), and the walks over the blocks pass it by.
    pub(crate) retired: bool,
}

/// An open head copied for a snapshot: series id, first and last WAL entry, samples.
pub(crate) type HeadCopy = (u32, u64, u64, Vec<Sample>);

/// The files to fsync, and the block's generation when the sync began.
pub(crate) struct SyncJob {
    series: Arc<File>,
    chunks: Arc<File>,
    generation: u64,
}

impl SyncJob {
    /// Flushes both files, series first: a chunk on disk always has its series.
    pub(crate) fn run(&self) -> std::io::Result<()> {
        self.series.sync_data()?;
        self.chunks.sync_data()
    }
}

fn open_append(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

fn lower(floor: &mut Option<u64>, lsn: u64) {
    *floor = Some(floor.map_or(lsn, |f| f.min(lsn)));
}

impl Block {
    pub(crate) fn open(dir: &Path) -> Result<Block, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let series_path = dir.join(SERIES_FILE);
        let chunks_path = dir.join(CHUNKS_FILE);
        let mut series_file = open_append(&series_path)?;
        let mut chunks_file = open_append(&chunks_path)?;
        // A record that does not read, or names a series not (yet) on disk, is where a crash
        // cut the file: the WAL still holds what it and everything after it carried.
        let mut known = 0u32;
        let mut series_ok = |p: &[u8]| match layout::parse_series(p) {
            Some(SeriesRecord::Series { id, .. }) if id == known => {
                known += 1;
                true
            }
            Some(SeriesRecord::Deletion { id, .. }) => id < known,
            _ => false,
        };
        let series_read = record::recover(&mut series_file, &mut series_ok).map_err(|e| Error::io(&series_path, e))?;
        let mut chunk_ok = |p: &[u8]| layout::parse_chunk(p).is_some_and(|c| c.id < known);
        let chunks_read = record::recover(&mut chunks_file, &mut chunk_ok).map_err(|e| Error::io(&chunks_path, e))?;
        let mut block = Block {
            dir: dir.to_path_buf(),
            series_file: Arc::new(series_file),
            series_end: series_read.end,
            chunks_file: Arc::new(chunks_file),
            chunks_end: chunks_read.end,
            series: Vec::new(),
            ids: HashMap::default(),
            purged_at: HashMap::default(),
            postings: Postings::default(),
            dirty: false,
            generation: 0,
            sync_failed: false,
            unsynced_floor: None,
            snapshot_lsn: 0,
            changed: false,
            recovered_cut_bytes: series_read.cut_bytes + chunks_read.cut_bytes,
            resolution_ms: rewrite::read_resolution(dir)?,
            retired: false,
        };
        let corrupt = |path: &Path, what| Error::corrupt(path, what);
        for (_, payload) in &series_read.records {
            match layout::parse_series(payload).ok_or_else(|| corrupt(&series_path, "unreadable series record"))? {
                SeriesRecord::Series {
                    id,
                    created_lsn,
                    labels,
                } => {
                    if id as usize != block.series.len() {
                        return Err(corrupt(&series_path, "series records out of order"));
                    }
                    block.add_series(labels, created_lsn);
                }
                SeriesRecord::Deletion { id, lsn } => {
                    if id as usize >= block.series.len() {
                        return Err(corrupt(&series_path, "a deletion names an unknown series"));
                    }
                    block.mark_deleted(id, lsn);
                }
            }
        }
        for (offset, payload) in &chunks_read.records {
            let c = layout::parse_chunk(payload).ok_or_else(|| corrupt(&chunks_path, "unreadable chunk record"))?;
            let series = block
                .series
                .get_mut(c.id as usize)
                .ok_or_else(|| corrupt(&chunks_path, "a chunk names an unknown series"))?;
            series.chunks.push(ChunkMeta {
                offset: offset + c.chunk_at as u64,
                len: c.chunk.len() as u32,
                count: chunk::count(c.chunk) as u16,
                min_t: c.min_t,
                max_t: c.max_t,
            });
            series.complete_lsn = series.complete_lsn.max(c.complete_lsn);
        }
        if let Some((applied, heads)) = snapshot::read(dir)? {
            block.snapshot_lsn = applied;
            for h in heads {
                let Some(series) = block.series.get_mut(h.id as usize) else {
                    return Err(corrupt(dir, "the heads snapshot names an unknown series"));
                };
                // Sealed into a chunk after the snapshot, or deleted: the chunk has them.
                if series.deleted || series.complete_lsn >= h.last_lsn {
                    continue;
                }
                series.head = Head::restore(h.first_lsn, h.last_lsn, h.samples);
            }
        }
        Ok(block)
    }

    fn add_series(&mut self, labels: Labels, created_lsn: u64) -> u32 {
        let id = self.series.len() as u32;
        self.postings.add(id, &labels);
        self.ids.insert(labels.clone(), id);
        self.series.push(Series {
            labels,
            created_lsn,
            chunks: Vec::new(),
            head: Head::default(),
            complete_lsn: 0,
            deleted: false,
        });
        id
    }

    fn mark_deleted(&mut self, id: u32, lsn: u64) {
        let series = &mut self.series[id as usize];
        series.deleted = true;
        series.head = Head::default();
        if self.ids.get(&series.labels) == Some(&id) {
            self.ids.remove(&series.labels);
        }
        let at = self.purged_at.entry(series.labels.clone()).or_default();
        *at = (*at).max(lsn);
    }

    /// Adds a sample of WAL entry `lsn`. Returns false when the block already holds it
    /// (a replay after a restart) or a later purge deleted it.
    pub(crate) fn append(&mut self, lsn: u64, labels: &Labels, t: i64, v: f64) -> Result<bool, Error> {
        // Entries up to the snapshot are held (putting a sample back in its restored head
        // would change nothing, but costs a search); a purged series' older samples stay gone.
        if lsn <= self.snapshot_lsn || self.purged_at.get(labels).is_some_and(|&p| lsn <= p) {
            return Ok(false);
        }
        let id = match self.ids.get(labels) {
            Some(&id) => id,
            None => {
                let payload = layout::series(self.series.len() as u32, lsn, labels);
                record::append(&self.series_file, &mut self.series_end, &payload)
                    .map_err(|e| Error::io(&self.dir.join(SERIES_FILE), e))?;
                self.dirty = true;
                self.generation += 1;
                self.add_series(labels.clone(), lsn)
            }
        };
        let series = &self.series[id as usize];
        if lsn <= series.complete_lsn {
            return Ok(false);
        }
        if series.head.full_before(lsn) {
            let mid_entry = series.head.last_lsn() == Some(lsn);
            self.seal(id, mid_entry)?;
        }
        self.series[id as usize].head.insert(lsn, t, v);
        self.changed = true;
        self.generation += 1;
        Ok(true)
    }

    fn seal(&mut self, id: u32, mid_entry: bool) -> Result<(), Error> {
        // The head keeps its samples until the chunk is written: a failed write loses none.
        let Some(sealed) = self.series[id as usize].head.seal(mid_entry) else {
            return Ok(());
        };
        let mut payload = layout::chunk_header(id, sealed.complete_lsn, sealed.min_t, sealed.max_t);
        let header = payload.len();
        payload.extend_from_slice(&sealed.bytes);
        let at = record::append(&self.chunks_file, &mut self.chunks_end, &payload)
            .map_err(|e| Error::io(&self.dir.join(CHUNKS_FILE), e))?;
        let series = &mut self.series[id as usize];
        series.head.clear();
        series.chunks.push(ChunkMeta {
            offset: at + header as u64,
            len: sealed.bytes.len() as u32,
            count: chunk::count(&sealed.bytes) as u16,
            min_t: sealed.min_t,
            max_t: sealed.max_t,
        });
        series.complete_lsn = series.complete_lsn.max(sealed.complete_lsn);
        self.dirty = true;
        self.changed = true;
        self.generation += 1;
        lower(&mut self.unsynced_floor, sealed.first_lsn);
        Ok(())
    }

    /// Seals the heads `pick` chooses by their first and last WAL entries. Returns how
    /// many were sealed.
    pub(crate) fn seal_heads(&mut self, pick: &dyn Fn(u64, u64) -> bool) -> Result<usize, Error> {
        let picked: Vec<u32> = (0..self.series.len() as u32)
            .filter(|&id| {
                let head = &self.series[id as usize].head;
                matches!((head.first_lsn(), head.last_lsn()), (Some(f), Some(l)) if pick(f, l))
            })
            .collect();
        for &id in &picked {
            self.seal(id, false)?;
        }
        Ok(picked.len())
    }

    /// Deletes, as WAL entry `lsn`, the live series older than it that `doomed` picks.
    /// Applied again on a replay it deletes nothing new: the series it deleted are gone, and
    /// those made since are younger than it. (Were it to delete them, the replay would make
    /// them again from the entries after it; the age check spares that rewrite.)
    pub(crate) fn delete(&mut self, lsn: u64, doomed: &dyn Fn(&Labels) -> bool) -> Result<usize, Error> {
        let picked: Vec<u32> = self
            .ids
            .values()
            .copied()
            .filter(|&id| {
                let s = &self.series[id as usize];
                s.created_lsn < lsn && doomed(&s.labels)
            })
            .collect();
        for &id in &picked {
            record::append(&self.series_file, &mut self.series_end, &layout::deletion(id, lsn))
                .map_err(|e| Error::io(&self.dir.join(SERIES_FILE), e))?;
            self.mark_deleted(id, lsn);
        }
        if !picked.is_empty() {
            self.dirty = true;
            self.changed = true;
            self.generation += 1;
            lower(&mut self.unsynced_floor, lsn);
        }
        Ok(picked.len())
    }

    /// What a sync needs, taken under the block's lock so that the fsyncs run outside it
    /// (queries of today's block would wait on them otherwise): `None` when nothing was
    /// written since the last sync.
    pub(crate) fn begin_sync(&self) -> Result<Option<SyncJob>, Error> {
        if self.sync_failed {
            return Err(Error::io(&self.dir, std::io::Error::other("an earlier fsync failed")));
        }
        Ok(self.dirty.then(|| SyncJob {
            series: Arc::clone(&self.series_file),
            chunks: Arc::clone(&self.chunks_file),
            generation: self.generation,
        }))
    }

    /// Records the outcome of a sync begun with `begin_sync`.
    pub(crate) fn end_sync(&mut self, job: &SyncJob, result: std::io::Result<()>) -> Result<(), Error> {
        if let Err(e) = result {
            self.sync_failed = true;
            return Err(Error::io(&self.dir, e));
        }
        // Whatever was written meanwhile still needs its own sync.
        if self.generation == job.generation {
            self.dirty = false;
            self.unsynced_floor = None;
        }
        Ok(())
    }

    /// The open heads to snapshot (id, first and last LSN, samples), copied under the lock;
    /// `None` when no head changed since the last snapshot.
    pub(crate) fn heads_to_snapshot(&self) -> Option<(u64, Vec<HeadCopy>)> {
        if !self.changed {
            return None;
        }
        let heads = self
            .series
            .iter()
            .enumerate()
            .filter_map(|(id, s)| {
                Some((
                    id as u32,
                    s.head.first_lsn()?,
                    s.head.last_lsn()?,
                    s.head.samples().to_vec(),
                ))
            })
            .collect();
        Some((self.generation, heads))
    }

    /// Records a snapshot written as of entry `applied` from the heads of `generation`.
    pub(crate) fn snapshot_written(&mut self, applied: u64, generation: u64) {
        self.snapshot_lsn = self.snapshot_lsn.max(applied);
        if self.generation == generation {
            self.changed = false;
        }
    }

    /// The largest WAL entry this block has seen (so that a WAL started afresh never hands
    /// out a number the block would take for one it holds).
    pub(crate) fn max_lsn(&self) -> u64 {
        let series = self.series.iter().map(|s| {
            let head = s.head.last_lsn().unwrap_or(0);
            s.complete_lsn.max(s.created_lsn).max(head)
        });
        let purges = self.purged_at.values().copied();
        series.chain(purges).fold(self.snapshot_lsn, u64::max)
    }

    /// The lowest WAL entry some of whose samples (or a deletion) are not yet durable here.
    pub(crate) fn wal_floor(&self) -> Option<u64> {
        let after_snapshot = self.snapshot_lsn + 1;
        self.series
            .iter()
            .filter_map(|s| match (s.head.first_lsn(), s.head.last_lsn()) {
                (Some(first), Some(last)) if last >= after_snapshot => Some(first.max(after_snapshot)),
                _ => None,
            })
            .chain(self.unsynced_floor)
            .min()
    }

    /// The live series matching `matchers`, with what of each overlaps `[start, end]`.
    pub(crate) fn find(&self, matchers: &[Matcher], start: i64, end: i64) -> (Arc<File>, Vec<Found>) {
        let mut found = Vec::new();
        for id in self.postings.candidates(matchers) {
            let Some(series) = self.series.get(id as usize).filter(|s| !s.deleted) else {
                continue;
            };
            if !matchers
                .iter()
                .all(|m| m.matches(series.labels.get(m.name()).unwrap_or("")))
            {
                continue;
            }
            let chunks: Vec<ChunkMeta> = series
                .chunks
                .iter()
                .filter(|c| c.max_t >= start && c.min_t <= end)
                .copied()
                .collect();
            let head = series.head.within(start, end).to_vec();
            if chunks.is_empty() && head.is_empty() {
                continue;
            }
            found.push(Found {
                labels: series.labels.clone(),
                chunks,
                head,
            });
        }
        (Arc::clone(&self.chunks_file), found)
    }

    /// Label names of the block's live series (a purged series' labels are not listed).
    pub(crate) fn label_names(&self) -> Vec<String> {
        self.postings.names(|id| self.live(id)).map(str::to_string).collect()
    }

    /// Values of label `name` among the block's live series.
    pub(crate) fn label_values(&self, name: &str) -> Vec<String> {
        self.postings
            .values(name, |id| self.live(id))
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// Whether series `id` is not deleted (checked only in a block that ever purged one:
    /// the listings of every query's metric names pass here).
    fn live(&self, id: u32) -> bool {
        self.purged_at.is_empty() || self.series.get(id as usize).is_some_and(|s| !s.deleted)
    }

    /// Live series, their sealed chunks, samples in them, and head samples.
    pub(crate) fn counts(&self) -> (usize, usize, usize, usize) {
        let live = || self.series.iter().filter(|s| !s.deleted);
        let chunks = live().map(|s| s.chunks.len()).sum();
        let sealed = live().flat_map(|s| &s.chunks).map(|c| usize::from(c.count)).sum();
        let head = live().map(|s| s.head.len()).sum();
        (live().count(), chunks, sealed, head)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

mod rewrite;
#[cfg(test)]
mod seal_tests;

pub(crate) use rewrite::{RESOLUTION_FILE, last_per_step};
