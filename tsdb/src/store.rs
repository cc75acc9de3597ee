//! The store: one block per UTC day, a sample going to the block of its own timestamp's
//! day, and selections that read every block a range touches and join each series' days.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::block::Block;
use crate::read::Planned;
use crate::record::sync_dir;
use crate::snapshot;
use crate::{Error, Labels, Matcher, Sample};

mod downsample;

pub use downsample::Downsampled;

const MS_PER_DAY: i64 = 86_400_000;

/// A series and its samples in a selected range, in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    pub labels: Labels,
    pub samples: Vec<Sample>,
}

/// A selection's series; `truncated` when it held more samples than it could read, in
/// which case `series` is empty.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selection {
    pub series: Vec<SeriesSamples>,
    pub truncated: bool,
}

/// What the store holds, for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub blocks: usize,
    /// Series summed over the blocks (a series present on two days counts twice).
    pub series: usize,
    pub chunks: usize,
    pub chunk_samples: usize,
    pub head_samples: usize,
}

pub struct Tsdb {
    root: PathBuf,
    /// Blocks by day since the epoch. A block's mutex is held by one append or one
    /// selection's index walk at a time; chunk bytes are read after it is released.
    blocks: RwLock<BTreeMap<i64, Arc<Mutex<Block>>>>,
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn day_of(t_ms: i64) -> i64 {
    t_ms.div_euclid(MS_PER_DAY)
}

pub(crate) fn lock(block: &Mutex<Block>) -> std::sync::MutexGuard<'_, Block> {
    block.lock().unwrap_or_else(|p| p.into_inner())
}

/// The block locked, unless a downsampling replaced it (`Block::retired`): the map holds
/// its rewrite in a moment, and a walk over the map passes it by.
fn lock_live(block: &Mutex<Block>) -> Option<std::sync::MutexGuard<'_, Block>> {
    Some(lock(block)).filter(|b| !b.retired)
}

fn sync_block(block: &Mutex<Block>) -> Result<(), Error> {
    let job = match lock_live(block) {
        Some(b) => b.begin_sync()?,
        None => None,
    };
    let Some(job) = job else {
        return Ok(());
    };
    let result = job.run();
    lock(block).end_sync(&job, result)
}

/// `dir` with `suffix` on its last component (`7` → `7.deleting`).
fn with_suffix(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A block being deleted is renamed first: a crash midway leaves a directory that is not a
/// day, which the next open removes, never a day with some of its files.
const DELETING: &str = ".deleting";

impl Tsdb {
    /// Opens the blocks under `root` (directories named by their day number), cutting
    /// any torn tail a crash left, and finishing or undoing what a crash interrupted: a
    /// deletion, a downsampling's swap (`store/downsample.rs`).
    pub fn open(root: &Path) -> Result<Tsdb, Error> {
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let mut names = Vec::new();
        for entry in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
            let entry = entry.map_err(|e| Error::io(root, e))?;
            names.extend(entry.file_name().to_str().map(str::to_string));
        }
        for name in &names {
            if name.ends_with(DELETING) {
                let path = root.join(name);
                std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            } else {
                downsample::recover_rewrite(root, name)?;
            }
        }
        let mut blocks = BTreeMap::new();
        for entry in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
            let entry = entry.map_err(|e| Error::io(root, e))?;
            let Some(day) = entry.file_name().to_str().and_then(|n| n.parse::<i64>().ok()) else {
                continue;
            };
            blocks.insert(day, Arc::new(Mutex::new(Block::open(&entry.path())?)));
        }
        Ok(Tsdb {
            root: root.to_path_buf(),
            blocks: RwLock::new(blocks),
        })
    }

    fn block(&self, day: i64) -> Result<Arc<Mutex<Block>>, Error> {
        if let Some(b) = self.read().get(&day) {
            return Ok(Arc::clone(b));
        }
        let mut blocks = self.blocks.write().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = blocks.get(&day) {
            return Ok(Arc::clone(b));
        }
        let block = Arc::new(Mutex::new(Block::open(&self.root.join(day.to_string()))?));
        // The new directory's name is durable only once its parent is.
        sync_dir(&self.root)?;
        blocks.insert(day, Arc::clone(&block));
        Ok(block)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<i64, Arc<Mutex<Block>>>> {
        self.blocks.read().unwrap_or_else(|p| p.into_inner())
    }

    fn blocks_in(&self, start: i64, end: i64) -> Vec<Arc<Mutex<Block>>> {
        if start > end {
            return Vec::new();
        }
        self.read()
            .range(day_of(start)..=day_of(end))
            .map(|(_, b)| Arc::clone(b))
            .collect()
    }

    /// Stores sample `(t, v)` of series `labels`, carried by WAL entry `lsn`. Returns false
    /// when the sample is already in a sealed chunk (the entry is being replayed). Entries
    /// must come in LSN order, as the WAL hands them out.
    pub fn append(&self, lsn: u64, labels: &Labels, t: i64, v: f64) -> Result<bool, Error> {
        loop {
            let block = self.block(day_of(t))?;
            if let Some(mut live) = lock_live(&block) {
                return live.append(lsn, labels, t, v);
            }
            // Downsampled meanwhile: the map holds the rewrite in a moment.
            std::thread::yield_now();
        }
    }

    /// Seals the heads whose newest sample came in a WAL entry before `lsn`: series that
    /// went quiet, whose heads would otherwise be held in memory and snapshotted for ever.
    pub fn seal_idle_heads(&self, lsn: u64) -> Result<usize, Error> {
        self.seal_heads(&|_, last| last < lsn)
    }

    /// Seals every open head (a benchmark's end, a test; the collector snapshots instead).
    pub fn seal_all_heads(&self) -> Result<usize, Error> {
        self.seal_heads(&|_, _| true)
    }

    fn seal_heads(&self, pick: &dyn Fn(u64, u64) -> bool) -> Result<usize, Error> {
        let mut sealed = 0;
        for block in self.read().values() {
            if let Some(mut b) = lock_live(block) {
                sealed += b.seal_heads(pick)?;
            }
        }
        Ok(sealed)
    }

    /// Deletes, as WAL entry `lsn`, every series older than it that `doomed` picks, in
    /// every block. Its samples from before `lsn` stay deleted on a replay; samples after it
    /// make a new series. Returns how many series went.
    pub fn delete(&self, lsn: u64, doomed: &dyn Fn(&Labels) -> bool) -> Result<usize, Error> {
        let mut deleted = 0;
        for block in self.read().values() {
            if let Some(mut b) = lock_live(block) {
                deleted += b.delete(lsn, doomed)?;
            }
        }
        Ok(deleted)
    }

    /// Flushes every block written since its last sync. The fsyncs run without the
    /// blocks' locks, so queries do not wait on them. A failed fsync fails every later sync
    /// too (the WAL then keeps everything until the restart replays it).
    pub fn sync(&self) -> Result<(), Error> {
        for block in self.read().values() {
            sync_block(block)?;
        }
        Ok(())
    }

    /// Syncs every block and writes its open heads to its snapshot, as of WAL entry
    /// `applied` (every entry up to it applied). Afterwards [`Tsdb::wal_floor`] no longer
    /// needs the entries those heads came in. The heads are copied under the block's lock
    /// and written without it.
    pub fn snapshot_heads(&self, applied: u64) -> Result<(), Error> {
        for block in self.read().values() {
            sync_block(block)?;
            let Some((taken, dir)) = lock_live(block).map(|b| (b.heads_to_snapshot(), b.dir().to_path_buf())) else {
                continue;
            };
            let Some((generation, heads)) = taken else { continue };
            let heads = heads
                .iter()
                .map(|(id, first, last, samples)| (*id, *first, *last, samples.as_slice()));
            snapshot::write(&dir, applied, heads)?;
            lock(block).snapshot_written(applied, generation);
        }
        Ok(())
    }

    /// The largest WAL entry the store has seen: a WAL started afresh (its directory lost)
    /// must hand out larger ones, or the store would skip them as already held.
    pub fn max_lsn(&self) -> u64 {
        self.read().values().map(|b| lock(b).max_lsn()).max().unwrap_or(0)
    }

    /// The lowest WAL entry with a sample not yet durable here: the WAL must keep it and
    /// every later one. `None` when everything appended is durable.
    pub fn wal_floor(&self) -> Option<u64> {
        self.read().values().filter_map(|b| lock(b).wal_floor()).min()
    }

    /// Every series matching `matchers` with a sample in `[start, end]` (milliseconds,
    /// inclusive), sorted by labels, reading at most `limit` samples: past it the selection
    /// stops and says it is truncated.
    pub fn select(&self, matchers: &[Matcher], start: i64, end: i64, limit: usize) -> Result<Selection, Error> {
        let planned = self.plan(matchers, start, end);
        let mut series = Vec::with_capacity(planned.series().len());
        let mut read = 0usize;
        for s in planned.series() {
            let samples = planned.read(s, start, end)?;
            read += samples.len();
            if read > limit {
                return Ok(Selection {
                    series: Vec::new(),
                    truncated: true,
                });
            }
            if !samples.is_empty() {
                series.push(SeriesSamples {
                    labels: s.labels.clone(),
                    samples,
                });
            }
        }
        Ok(Selection {
            series,
            truncated: false,
        })
    }

    /// Every series matching `matchers` with a chunk or head sample overlapping `[start,
    /// end]`, from the label index, sorted by labels; their samples are read one series at a
    /// time with [`Planned::read`].
    pub fn plan(&self, matchers: &[Matcher], start: i64, end: i64) -> Planned {
        let found = self
            .blocks_in(start, end)
            .iter()
            .map(|block| {
                let b = lock(block);
                let (file, found) = b.find(matchers, start, end);
                (file, b.dir().to_path_buf(), found)
            })
            .collect();
        Planned::new(found)
    }

    /// The labels of every series matching `matchers` with a chunk or head overlapping
    /// `[start, end]`, without reading samples (a chunk that overlaps the range may still
    /// hold no sample inside it), sorted.
    pub fn series_labels(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<Labels> {
        let planned = self.plan(matchers, start, end);
        planned.series().iter().map(|s| s.labels.clone()).collect()
    }

    /// Label names of the blocks `[start, end]` touches.
    pub fn label_names(&self, start: i64, end: i64) -> BTreeSet<String> {
        self.blocks_in(start, end)
            .iter()
            .flat_map(|b| lock(b).label_names())
            .collect()
    }

    /// Values of label `name` in the blocks `[start, end]` touches.
    pub fn label_values(&self, name: &str, start: i64, end: i64) -> BTreeSet<String> {
        self.blocks_in(start, end)
            .iter()
            .flat_map(|b| lock(b).label_values(name))
            .collect()
    }

    /// The days the store holds a block of, oldest first.
    pub fn days(&self) -> Vec<i64> {
        self.read().keys().copied().collect()
    }

    /// Each block's day and bytes on disk, oldest first (for a disk budget).
    pub fn day_bytes(&self) -> Vec<(i64, u64)> {
        let dirs: Vec<(i64, PathBuf)> = self
            .read()
            .iter()
            .map(|(day, b)| (*day, lock(b).dir().to_path_buf()))
            .collect();
        dirs.into_iter().map(|(day, dir)| (day, dir_bytes(&dir))).collect()
    }

    /// Deletes one day's block (retention: by age, or the oldest within a disk budget).
    pub fn drop_day(&self, day: i64) -> Result<bool, Error> {
        let removed = self.blocks.write().unwrap_or_else(|p| p.into_inner()).remove(&day);
        let Some(block) = removed else {
            return Ok(false);
        };
        let dir = lock(&block).dir().to_path_buf();
        self.delete_dir(&dir)?;
        // A rewrite of the day left by a failed downsampling would be put in place at the
        // next open.
        let staged = downsample::staged_dir(&dir);
        if staged.exists() {
            std::fs::remove_dir_all(&staged).map_err(|e| Error::io(&staged, e))?;
        }
        Ok(true)
    }

    fn delete_dir(&self, dir: &Path) -> Result<(), Error> {
        let doomed = with_suffix(dir, DELETING);
        std::fs::rename(dir, &doomed).map_err(|e| Error::io(dir, e))?;
        sync_dir(&self.root)?;
        std::fs::remove_dir_all(&doomed).map_err(|e| Error::io(&doomed, e))
    }

    pub fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        for block in self.read().values() {
            let (series, chunks, sealed, head) = lock(block).counts();
            stats.blocks += 1;
            stats.series += series;
            stats.chunks += chunks;
            stats.chunk_samples += sealed;
            stats.head_samples += head;
        }
        stats
    }

    /// Bytes torn tails cost when the blocks were opened (0 after a clean shutdown).
    pub fn recovered_cut_bytes(&self) -> u64 {
        self.read().values().map(|b| lock(b).recovered_cut_bytes).sum()
    }
}
