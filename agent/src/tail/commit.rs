//! The committer: the tailer's records appended to the disk buffer in order, on a thread
//! of its own.

use super::*;

/// What the committer writes: an encoded OTLP logs request, or only checkpoints.
pub(super) enum Payload {
    Logs(Vec<u8>),
    Empty,
}

/// Appends the tailer's records to the buffer on a thread of its own, in order, so
/// reading and building the next batch overlap encoding and fsyncing this one. Order
/// is what keeps checkpoints right (a restart-at-0 after a truncation must land after
/// the batch before it), so every append of the tailer goes through here. The channel
/// is short: when the buffer blocks, the committer blocks, and so does the tailer.
pub(super) struct Committer {
    tx: Option<std::sync::mpsc::SyncSender<(Vec<Entry>, Payload)>>,
    thread: Option<std::thread::JoinHandle<Result<(), BufferError>>>,
}

impl Committer {
    pub(super) fn start(buffer: Arc<DiskBuffer>) -> Committer {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<Entry>, Payload)>(4);
        let thread = std::thread::Builder::new()
            .name("vigil-commit".into())
            .spawn(move || {
                let to_record = |(entries, payload): (Vec<Entry>, Payload)| match payload {
                    Payload::Logs(request) => NewRecord::compressed(Kind::Logs, entries, &request),
                    Payload::Empty => NewRecord::new(Kind::Logs, entries, Bytes::new()),
                };
                while let Ok(first) = rx.recv() {
                    // Group commit: whatever queued up during the last fsync shares the next.
                    let mut group = vec![to_record(first)];
                    while let Ok(more) = rx.try_recv() {
                        group.push(to_record(more));
                    }
                    buffer.append_many(group)?;
                }
                Ok(())
            })
            .ok();
        Committer { tx: Some(tx), thread }
    }

    pub(super) fn append(&mut self, entries: Vec<Entry>, payload: Payload) -> Result<(), BufferError> {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send((entries, payload)).is_ok());
        if sent {
            return Ok(());
        }
        // The committer stopped: report why.
        Err(self.finish().err().unwrap_or(BufferError::Closed))
    }

    /// Waits until everything handed over is in the buffer.
    pub(super) fn finish(&mut self) -> Result<(), BufferError> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t.join().unwrap_or(Err(BufferError::Closed)),
            None => Err(BufferError::Closed),
        }
    }
}
