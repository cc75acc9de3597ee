//! Idempotent ingest: a batch carrying `x-vigil-batch-id` is stored once, however often
//! it is retried (e.g. after a response lost to a timeout).
//!
//! Ids are claimed before the WAL append. A concurrent retry of a batch still being
//! appended waits for that append's outcome instead of racing it. The append and the
//! claim's outcome run in a task of their own, so a client that goes away mid-request
//! cannot leave a batch written but its id forgotten. Completed ids are
//! remembered for a window (and up to a count), rebuilt after a restart from the WAL
//! replay plus a snapshot file written before WAL segments are deleted.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

#[derive(Default)]
struct State {
    /// id -> unix seconds when it was stored.
    done: HashMap<String, u64>,
    /// Completion order, oldest first, for expiry.
    order: VecDeque<(u64, String)>,
    /// Appends in progress; the value turns `Some(stored)` when they finish.
    in_flight: HashMap<String, watch::Receiver<Option<bool>>>,
}

/// The table of recently stored batch ids.
pub(crate) struct BatchDedup {
    state: Mutex<State>,
    window_secs: u64,
    max_ids: usize,
}

/// The result of claiming a batch id.
pub(crate) enum Claim {
    /// First time seen: store the batch, then call [`ClaimGuard::stored`].
    New(ClaimGuard),
    /// Already stored; acknowledge without storing again.
    Duplicate,
}

/// Holds an id in flight. Dropped without [`ClaimGuard::stored`], the claim is
/// released so a retry can store the batch.
pub(crate) struct ClaimGuard {
    dedup: Arc<BatchDedup>,
    id: String,
    tx: watch::Sender<Option<bool>>,
    stored: bool,
}

impl ClaimGuard {
    pub(crate) fn stored(mut self, now_secs: u64) {
        self.stored = true;
        let mut state = self.dedup.lock();
        state.in_flight.remove(&self.id);
        self.dedup.insert_done(&mut state, self.id.clone(), now_secs);
        let _ = self.tx.send(Some(true));
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if !self.stored {
            self.dedup.lock().in_flight.remove(&self.id);
            let _ = self.tx.send(Some(false));
        }
    }
}

impl BatchDedup {
    pub(crate) fn new(window_secs: u64, max_ids: usize) -> Arc<BatchDedup> {
        Arc::new(BatchDedup {
            state: Mutex::new(State::default()),
            window_secs,
            max_ids: max_ids.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the maps inconsistent in a way
        // that matters more than refusing all ingest would.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn insert_done(&self, state: &mut State, id: String, at: u64) {
        if state.done.insert(id.clone(), at).is_none() {
            state.order.push_back((at, id));
        }
        self.expire(state, at);
    }

    fn expire(&self, state: &mut State, now: u64) {
        while let Some((at, _)) = state.order.front() {
            let too_old = now.saturating_sub(*at) > self.window_secs;
            if !too_old && state.order.len() <= self.max_ids {
                break;
            }
            if let Some((at, id)) = state.order.pop_front()
                && state.done.get(&id) == Some(&at)
            {
                state.done.remove(&id);
            }
        }
    }

    /// Records an id as stored without a claim (WAL replay, snapshot load).
    pub(crate) fn remember(&self, id: String, at: u64) {
        let mut state = self.lock();
        self.insert_done(&mut state, id, at);
    }

    /// Forgets every stored id `doomed` picks (a worker gave the partition they belong to
    /// up: were it to take the partition again, it must store those batches anew). Returns
    /// how many were forgotten.
    pub(crate) fn forget_matching(&self, doomed: impl Fn(&str) -> bool) -> usize {
        let mut state = self.lock();
        let before = state.done.len();
        state.done.retain(|id, _| !doomed(id));
        // Their places in `order` stay behind and are skipped when they come up: expiry
        // only removes an id whose time still matches.
        before - state.done.len()
    }

    /// Claims `id`, waiting if another request is storing the same batch right now.
    pub(crate) async fn claim(self: &Arc<Self>, id: &str) -> Claim {
        loop {
            let mut waiter = {
                let mut state = self.lock();
                if state.done.contains_key(id) {
                    return Claim::Duplicate;
                }
                match state.in_flight.get(id) {
                    Some(rx) => rx.clone(),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        state.in_flight.insert(id.to_string(), rx);
                        return Claim::New(ClaimGuard {
                            dedup: Arc::clone(self),
                            id: id.to_string(),
                            tx,
                            stored: false,
                        });
                    }
                }
            };
            // Wait for the other append; if it failed, loop and try to claim it ourselves.
            match waiter.wait_for(|v| v.is_some()).await.map(|v| *v) {
                Ok(Some(true)) => return Claim::Duplicate,
                _ => continue,
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().done.len()
    }

    /// Writes the remembered ids atomically (temp file, fsync, rename).
    pub(crate) fn save(&self, path: &Path, now_secs: u64) -> io::Result<()> {
        let entries: Vec<(u64, String)> = {
            let mut state = self.lock();
            self.expire(&mut state, now_secs);
            state.order.iter().cloned().collect()
        };
        let tmp = path.with_extension("tmp");
        {
            let mut out = io::BufWriter::new(std::fs::File::create(&tmp)?);
            for (at, id) in entries {
                // Ids never contain newlines: the header value parser rejects them.
                writeln!(out, "{at}\t{id}")?;
            }
            out.flush()?;
            out.get_ref().sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Loads a snapshot written by [`BatchDedup::save`]; a missing file is empty.
    pub(crate) fn load(&self, path: &Path) -> io::Result<usize> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut n = 0;
        for line in io::BufReader::new(file).lines() {
            let line = line?;
            if let Some((at, id)) = line.split_once('\t')
                && let Ok(at) = at.parse()
            {
                self.remember(id.to_string(), at);
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn second_claim_after_store_is_duplicate_and_failed_store_releases() {
        rt().block_on(async {
            let d = BatchDedup::new(60, 10);
            let Claim::New(guard) = d.claim("a").await else {
                panic!("first claim must be new")
            };
            drop(guard); // the append failed
            let Claim::New(guard) = d.claim("a").await else {
                panic!("a failed store must not block the retry")
            };
            guard.stored(100);
            assert!(matches!(d.claim("a").await, Claim::Duplicate));
        });
    }

    #[test]
    fn concurrent_retry_waits_for_the_first_append() {
        rt().block_on(async {
            let d = BatchDedup::new(60, 10);
            let Claim::New(guard) = d.claim("b").await else {
                panic!("new")
            };
            let d2 = Arc::clone(&d);
            let retry = tokio::spawn(async move { matches!(d2.claim("b").await, Claim::Duplicate) });
            tokio::task::yield_now().await;
            guard.stored(5);
            assert!(retry.await.expect("join"));
        });
    }

    #[test]
    fn ids_expire_by_window_and_count_and_survive_save_load() {
        let d = BatchDedup::new(100, 2);
        d.remember("old".into(), 0);
        d.remember("x".into(), 150);
        assert_eq!(d.len(), 1, "'old' is outside the window");
        d.remember("y".into(), 151);
        d.remember("z".into(), 152);
        assert_eq!(d.len(), 2, "count cap");
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("dedup.ids");
        d.save(&path, 160).expect("save");
        let back = BatchDedup::new(100, 2);
        assert_eq!(back.load(&path).expect("load"), 2);
        rt().block_on(async {
            assert!(matches!(back.claim("z").await, Claim::Duplicate));
            assert!(matches!(back.claim("x").await, Claim::New(_)));
        });
    }
}
