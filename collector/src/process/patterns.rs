//! The log pattern catalogue: the one miner that gives every log record its pattern id, owned
//! by the processing stage (which feeds it) and read by the API (templates, first sightings).
//! Storage only keeps the ids it is handed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use vigil_detectors::{MinerSnapshot, PatternMiner};

/// The miner and where its snapshot lives (`index/patterns.json` of the data dir, as before
/// the stage existed, so older data dirs keep their ids).
pub(crate) struct PatternCatalog {
    miner: Mutex<PatternMiner>,
    path: PathBuf,
    /// Lines were mined since the last save.
    dirty: AtomicBool,
}

/// What the API shows of a pattern: its template as it stands now, and when it was first seen.
pub(crate) struct PatternInfo {
    /// The id it goes by now (another than asked for when that one was merged into it).
    pub id: u64,
    /// The template, variable parts as `<*>`.
    pub template: String,
    /// Event time of the pattern's first line, ns since the epoch.
    pub first_seen_ns: i64,
}

impl PatternCatalog {
    /// Reads the snapshot at `path`, or starts empty. An unreadable snapshot is logged and
    /// replaced: losing pattern ids is bad but recoverable, refusing to start is worse.
    pub(crate) fn open(path: PathBuf) -> PatternCatalog {
        let miner = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<MinerSnapshot>(&bytes) {
                Ok(snapshot) => PatternMiner::restore(snapshot),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "unreadable log pattern snapshot; starting a new one");
                    PatternMiner::default()
                }
            },
            Err(_) => PatternMiner::default(),
        };
        PatternCatalog {
            miner: Mutex::new(miner),
            path,
            dirty: AtomicBool::new(false),
        }
    }

    /// The miner, for the stage to feed (marks the catalogue as needing a save).
    pub(crate) fn feed(&self) -> MutexGuard<'_, PatternMiner> {
        self.dirty.store(true, Ordering::Relaxed);
        self.miner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Template and first sighting of pattern `id`; `None` once the miner evicted it.
    pub(crate) fn info(&self, id: u64) -> Option<PatternInfo> {
        let miner = self.miner.lock().unwrap_or_else(|e| e.into_inner());
        miner.get(id).map(|p| PatternInfo {
            id: p.id,
            template: p.template(),
            first_seen_ns: p.first_seen_ns,
        })
    }

    /// The ids log records of pattern `id` may carry: the id it goes by now and the ids
    /// merged into it (the miner merges patterns found to differ only by a variable word).
    pub(crate) fn ids_of(&self, id: u64) -> Vec<u64> {
        self.miner.lock().unwrap_or_else(|e| e.into_inner()).ids_of(id)
    }

    /// Every id log records of the patterns whose template is `template` may carry (none
    /// when no pattern has it now).
    pub(crate) fn ids_with_template(&self, template: &str) -> Vec<u64> {
        let miner = self.miner.lock().unwrap_or_else(|e| e.into_inner());
        let held: Vec<u64> = miner
            .patterns()
            .filter(|p| p.template() == template)
            .map(|p| p.id)
            .collect();
        held.into_iter().flat_map(|id| miner.ids_of(id)).collect()
    }

    /// Whether lines were mined since the last save.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Relaxed)
    }

    /// Writes the snapshot atomically (`files::write_atomically`).
    pub(crate) fn save(&self) -> std::io::Result<()> {
        self.dirty.store(false, Ordering::Relaxed);
        let snapshot = self.miner.lock().unwrap_or_else(|e| e.into_inner()).snapshot();
        let bytes = serde_json::to_vec(&snapshot).map_err(std::io::Error::other);
        let written = bytes.and_then(|bytes| crate::files::write_atomically(&self.path, &bytes));
        if written.is_err() {
            self.dirty.store(true, Ordering::Relaxed);
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_survive_a_save_and_reopen_and_a_bad_snapshot_starts_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("patterns.json");
        let catalog = PatternCatalog::open(path.clone());
        let id = catalog.feed().add("user 42 logged in", 7).pattern_id;
        assert!(catalog.is_dirty());
        catalog.save().expect("save");
        assert!(!catalog.is_dirty());

        let reopened = PatternCatalog::open(path.clone());
        assert_eq!(reopened.feed().add("user 43 logged in", 8).pattern_id, id);
        let info = reopened.info(id).expect("known pattern");
        assert_eq!(info.first_seen_ns, 7);
        assert!(info.template.contains("logged in"), "{}", info.template);

        std::fs::write(&path, b"{not json").expect("write");
        assert!(PatternCatalog::open(path).info(id).is_none());
    }

    #[test]
    fn a_template_names_every_id_its_lines_carry_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = PatternCatalog::open(dir.path().join("patterns.json"));
        let id = catalog.feed().add("user 42 logged in", 1).pattern_id;
        catalog.feed().add("user 43 logged in", 2);
        catalog.feed().add("disk sda full", 3);
        let template = catalog.info(id).expect("known").template;
        assert_eq!(catalog.ids_with_template(&template), catalog.ids_of(id));
        assert!(catalog.ids_with_template("no such template").is_empty());
    }
}
