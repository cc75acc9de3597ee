//! The detectors' learning on disk while the detection thread runs: restored at start, saved
//! every few minutes (the fsync off the detection thread) and in full at shutdown. The file
//! format is `state_file`'s.

use std::path::Path;
use std::time::{Duration, Instant};

use vigil_detectors::Engine;

use super::state_file::{self, Progress};

/// How often the detector state is saved while running (it is also saved at shutdown). A
/// crash loses at most this much learning, never data: that is in the WAL and the indexes.
const STATE_EVERY: Duration = Duration::from_secs(300);

/// The detectors and how far into the WAL they have read.
pub(super) struct State {
    pub(super) engine: Engine,
    pub(super) progress: Progress,
    pub(super) path: std::path::PathBuf,
}

pub(super) fn restore_state(engine: &mut Engine, path: &Path) -> Progress {
    let cold = Progress {
        latest_event_ms: i64::MIN,
        ..Progress::default()
    };
    match state_file::load(path) {
        Ok(Some(saved)) => {
            let series = saved.engine.series();
            match engine.restore_state(saved.engine) {
                Ok(()) => {
                    let applied_lsn = saved.progress.applied_lsn;
                    tracing::info!(series, applied_lsn, "detector state restored");
                    saved.progress
                }
                Err(e) => {
                    tracing::warn!(error = %e, "detector state not restored; detectors start cold");
                    cold
                }
            }
        }
        Ok(None) => cold,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable detector state; detectors start cold");
            cold
        }
    }
}

/// Saves the detector state: every [`STATE_EVERY`] with the fsync and rename on a helper
/// thread (for 50,000 series the file is hundreds of megabytes, and the detection thread —
/// which indexing waits on — should only pay for serialising it), and in full at shutdown.
pub(super) struct Saver {
    /// The commit of the last periodic save, while it may still run.
    pending: Option<std::thread::JoinHandle<()>>,
    saved_at: Instant,
}

impl Saver {
    pub(super) fn new() -> Self {
        Saver {
            pending: None,
            saved_at: Instant::now(),
        }
    }

    /// Starts a periodic save when one is due and the previous one has been committed
    /// (otherwise it is retried on the next turn of the loop).
    pub(super) fn tick(&mut self, state: &State) {
        if self.saved_at.elapsed() < STATE_EVERY || self.pending.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        self.finish();
        self.saved_at = Instant::now();
        let written = match state_file::write(&state.engine, &state.progress, &state.path) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(path = %state.path.display(), error = %e, "could not save detector state");
                return;
            }
        };
        let series = state.engine.stats().series;
        let write_ms = self.saved_at.elapsed().as_millis() as u64;
        let path = state.path.clone();
        let sync = std::thread::Builder::new()
            .name("vigil-state-sync".into())
            .spawn(move || {
                let started = Instant::now();
                match written.commit() {
                    Ok(bytes) => {
                        let sync_ms = started.elapsed().as_millis() as u64;
                        tracing::debug!(series, bytes, write_ms, sync_ms, "detector state saved");
                    }
                    Err(e) => tracing::error!(path = %path.display(), error = %e, "could not save detector state"),
                }
            });
        match sync {
            Ok(handle) => self.pending = Some(handle),
            Err(e) => tracing::error!(error = %e, "could not start the detector state sync thread"),
        }
    }

    /// Waits for a periodic save still being committed.
    fn finish(&mut self) {
        if let Some(handle) = self.pending.take()
            && handle.join().is_err()
        {
            tracing::error!("the detector state sync thread panicked");
        }
    }

    /// At shutdown: lets a periodic save finish, then saves the final state in full.
    pub(super) fn at_shutdown(mut self, state: &State) {
        self.finish();
        let started = Instant::now();
        match state_file::save(&state.engine, &state.progress, &state.path) {
            Ok(bytes) => {
                let series = state.engine.stats().series;
                let elapsed_ms = started.elapsed().as_millis() as u64;
                tracing::info!(series, bytes, elapsed_ms, "detector state saved");
            }
            Err(e) => tracing::error!(path = %state.path.display(), error = %e, "could not save detector state"),
        }
    }
}
