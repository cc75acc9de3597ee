//! A worker's position in each partition of the stream: the last stream sequence whose
//! message is durable in the worker's local write-ahead log (and so, through the log's own
//! checkpoints, in its indexes and detector state). A partition the worker takes (back)
//! resumes after it; one it never held starts from the stream's beginning, so the worker's
//! indexes hold the partition's whole retained history.
//!
//! The file is saved about once a second, after the appends it names are durable. A crash
//! can leave it behind the log; the messages in between come again and are recognised by
//! their ids, which the local log's deduplication remembers across restarts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Stream sequences by partition, shared by the partitions' consumers and the saver.
pub(crate) struct Checkpoints {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    done: BTreeMap<u32, u64>,
    dirty: bool,
}

impl Checkpoints {
    /// Loads `path`; a missing file is a worker that never consumed anything.
    pub(crate) fn open(path: &Path) -> std::io::Result<Checkpoints> {
        let done = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<BTreeMap<u32, u64>>(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a checkpoint file: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Checkpoints {
            path: path.to_path_buf(),
            state: Mutex::new(State { done, dirty: false }),
        })
    }

    /// The last sequence of `partition` that is durable here (0: none).
    pub(crate) fn get(&self, partition: u32) -> u64 {
        self.state
            .lock()
            .map(|s| s.done.get(&partition).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Records that everything of `partition` up to `sequence` is durable here.
    pub(crate) fn advance(&self, partition: u32, sequence: u64) {
        if let Ok(mut s) = self.state.lock() {
            let slot = s.done.entry(partition).or_insert(0);
            if sequence > *slot {
                *slot = sequence;
                s.dirty = true;
            }
        }
    }

    /// Partitions this worker has (or may have) data of: a key with sequence 0 is a
    /// partition whose purge was started but is not known to be done.
    pub(crate) fn known(&self) -> Vec<u32> {
        self.state
            .lock()
            .map(|s| s.done.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Starts giving `partition` up: taken again, it is consumed from the beginning.
    pub(crate) fn reset(&self, partition: u32) {
        if let Ok(mut s) = self.state.lock() {
            s.done.insert(partition, 0);
            s.dirty = true;
        }
    }

    /// Finishes giving `partition` up: nothing of it is held here any more.
    pub(crate) fn remove(&self, partition: u32) {
        if let Ok(mut s) = self.state.lock()
            && s.done.remove(&partition).is_some()
        {
            s.dirty = true;
        }
    }

    /// Writes the file if anything moved since the last save (write, fsync, rename).
    pub(crate) fn save(&self) -> std::io::Result<()> {
        let bytes = {
            let Ok(mut s) = self.state.lock() else {
                return Ok(());
            };
            if !s.dirty {
                return Ok(());
            }
            s.dirty = false;
            serde_json::to_vec(&s.done).map_err(std::io::Error::other)?
        };
        crate::files::write_atomically(&self.path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_survive_a_reopen_and_never_go_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("checkpoints.json");
        let c = Checkpoints::open(&path).expect("open");
        assert_eq!(c.get(3), 0);
        c.advance(3, 40);
        c.advance(3, 12);
        c.advance(7, 5);
        c.save().expect("save");
        let again = Checkpoints::open(&path).expect("reopen");
        assert_eq!((again.get(3), again.get(7), again.get(0)), (40, 5, 0));
        again.reset(3);
        again.save().expect("save");
        let reset = Checkpoints::open(&path).expect("reopen");
        assert_eq!(
            (reset.get(3), reset.known()),
            (0, vec![3, 7]),
            "a reset partition is still known"
        );
        reset.remove(3);
        assert_eq!(reset.known(), vec![7]);
        std::fs::write(&path, b"{not json").expect("write");
        let err = Checkpoints::open(&path).err().expect("garbage is an error");
        assert!(err.to_string().contains("checkpoints.json"), "{err}");
    }
}
