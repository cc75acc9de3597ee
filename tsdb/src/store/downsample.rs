//! Downsampling: an old day rewritten keeping the last sample of every step of each series
//! (`block/rewrite.rs`), then swapped in for the original so that a crash at any point
//! leaves the day whole — the original, or the rewrite.
//!
//! The swap: the rewrite is written complete under `<day>.rewriting` (its resolution file
//! last), the original renamed to `<day>.deleting`, the rewrite renamed to `<day>`, each
//! rename made durable before the next. [`Tsdb::open`] removes a `.deleting` directory, puts
//! a complete `.rewriting` one in place when its day is missing (the crash fell between the
//! renames), and removes it otherwise (the crash fell before the swap: the original stands,
//! and the next pass rewrites it again).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{DELETING, Tsdb, lock, with_suffix};
use crate::Error;
use crate::block::{Block, RESOLUTION_FILE, last_per_step};
use crate::record::sync_dir;

/// The suffix of a rewrite not yet swapped in.
pub(super) const REWRITING: &str = ".rewriting";

/// What rewriting one day did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Downsampled {
    pub series: usize,
    pub samples_before: usize,
    pub samples_after: usize,
}

/// At open: what to do with a directory named `<day>.rewriting` under `root`.
pub(super) fn recover_rewrite(root: &Path, name: &str) -> Result<(), Error> {
    let Some(day) = name.strip_suffix(REWRITING) else {
        return Ok(());
    };
    let path = root.join(name);
    let target = root.join(day);
    if path.join(RESOLUTION_FILE).exists() && !target.exists() {
        std::fs::rename(&path, &target).map_err(|e| Error::io(&path, e))?;
    } else {
        std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
    }
    sync_dir(root)
}

/// Where the rewrite of the block in `dir` is staged.
pub(super) fn staged_dir(dir: &Path) -> PathBuf {
    with_suffix(dir, REWRITING)
}

impl Tsdb {
    /// The step day `day` was downsampled to; `None` when it is at full resolution or
    /// absent.
    pub fn resolution(&self, day: i64) -> Option<i64> {
        let block = self.read().get(&day).cloned()?;
        lock(&block).resolution_ms
    }

    /// The coarsest step among the downsampled days `[start, end]` (ms) touches; `None`
    /// when all are at full resolution.
    pub fn coarsest_resolution(&self, start: i64, end: i64) -> Option<i64> {
        self.blocks_in(start, end)
            .iter()
            .filter_map(|b| lock(b).resolution_ms)
            .max()
    }

    /// Rewrites day `day` keeping, of each live series, the last sample of every `step_ms`
    /// (aligned to the epoch). Nothing is done (`None`) when the day is absent or already at
    /// that step or a coarser one. The day's block stays locked during the rewrite: its
    /// queries and late writes wait (on an old day, both are rare), and a write that waited
    /// goes to the rewritten block; samples written into the day afterwards stay at full
    /// resolution. Call it from the thread that appends and purges (the collector's
    /// indexer): a purge or a snapshot walking the blocks on another thread meanwhile
    /// could pass the day by. A day whose syncs failed is refused. On an error before the
    /// rewrite is in place the original stays in use; once the original was moved aside,
    /// its syncs fail from then on (so the WAL keeps what is written until the restart,
    /// whose open finishes or undoes the swap). Once the rewrite is in place it is used,
    /// and if that could not be made durable its syncs fail instead.
    pub fn downsample_day(&self, day: i64, step_ms: i64) -> Result<Option<Downsampled>, Error> {
        if step_ms <= 0 {
            return Ok(None);
        }
        let Some(block) = self.read().get(&day).cloned() else {
            return Ok(None);
        };
        let mut old = lock(&block);
        if old.retired || old.resolution_ms.is_some_and(|r| r >= step_ms) {
            return Ok(None);
        }
        if old.syncs_failed() {
            // Its pages may not be on disk, and only the WAL's replay at the next start
            // restores them: a rewrite now would mark them complete.
            return Err(Error::io(old.dir(), std::io::Error::other("an earlier fsync failed")));
        }
        let dir = old.dir().to_path_buf();
        let staged = staged_dir(&dir);
        let (mut new, done) = match self.write_rewrite(&old, &staged, step_ms) {
            Ok(written) => written,
            Err(e) => {
                // A complete rewrite left behind would be put in place at the next open,
                // even after retention dropped the day.
                let _ = std::fs::remove_dir_all(&staged);
                return Err(e);
            }
        };
        let doomed = with_suffix(&dir, DELETING);
        if let Err(e) = std::fs::rename(&dir, &doomed) {
            drop(new);
            let _ = std::fs::remove_dir_all(&staged);
            return Err(Error::io(&dir, e));
        }
        let moved_in =
            sync_dir(&self.root).and_then(|()| std::fs::rename(&staged, &dir).map_err(|e| Error::io(&staged, e)));
        if let Err(e) = moved_in {
            // The day has no block under its name: put the original back. Until a restart
            // the original's syncs fail either way (a crash before the rename back is durable
            // would bring up the rewrite, without what was written since), so the WAL keeps
            // everything written from here.
            old.fail_syncs();
            if std::fs::rename(&doomed, &dir).is_ok() {
                let _ = sync_dir(&self.root);
                let _ = std::fs::remove_dir_all(&staged);
            }
            return Err(e);
        }
        // The rewrite is in place. Its open files followed the rename; only its directory's
        // name changed.
        new.moved_to(&dir);
        let durable = sync_dir(&self.root);
        if durable.is_err() {
            // A crash could still bring back the original's name: keep everything written
            // into the rewrite in the WAL until the restart.
            new.fail_syncs();
        }
        old.retired = true;
        drop(old);
        // The map's lock is taken only after the old block's is released: the other
        // walks over the blocks hold the map's lock while they take a block's.
        self.blocks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(day, Arc::new(Mutex::new(new)));
        // A directory left here is removed at the next open.
        let _ = std::fs::remove_dir_all(&doomed);
        durable.map(|()| Some(done))
    }

    /// Writes the rewrite of `old` at `step_ms` under `staged`, complete and durable.
    fn write_rewrite(&self, old: &Block, staged: &Path, step_ms: i64) -> Result<(Block, Downsampled), Error> {
        if staged.exists() {
            std::fs::remove_dir_all(staged).map_err(|e| Error::io(staged, e))?;
        }
        let contents = old.contents();
        let mut done = Downsampled {
            series: contents.series.len(),
            samples_before: 0,
            samples_after: 0,
        };
        let mut new = Block::open(staged)?;
        // Purges first: a label set purged and then written again is a live series, which
        // must come after its purge, as in the original.
        for (labels, lsn) in &contents.purges {
            new.write_purge(labels, *lsn)?;
        }
        for copied in &contents.series {
            let samples = old.read_copied(copied)?;
            let kept = last_per_step(&samples, step_ms);
            done.samples_before += samples.len();
            done.samples_after += kept.len();
            new.write_copy(copied, &kept)?;
        }
        new.finish_rewrite(step_ms, contents.snapshot_lsn)?;
        sync_dir(&self.root)?;
        Ok((new, done))
    }
}
