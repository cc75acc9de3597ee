//! What is done with: records acknowledged and released, segments deleted once everything
//! in them is acknowledged (after the checkpoint snapshot that outlives them), and the oldest
//! unsent segments dropped when the buffer is full and told to drop.

use super::*;

impl Inner {
    /// Forgets the sizes of records up to `to` (they were acknowledged or dropped) and
    /// returns how many records and bytes that was.
    pub(super) fn release_through(&mut self, to: u64) -> (u64, u64) {
        let n = to.saturating_sub(self.acked).min(self.sizes.len() as u64);
        let bytes: u64 = self.sizes.drain(..n as usize).map(u64::from).sum();
        (n, bytes)
    }

    pub(super) fn delete_acked_segments(&mut self) -> Result<(), BufferError> {
        let deletable = self
            .segments
            .iter()
            .take(self.segments.len().saturating_sub(1))
            .take_while(|s| s.last_seq <= self.acked)
            .count();
        if deletable == 0 {
            return Ok(());
        }
        self.write_snapshot()?;
        for _ in 0..deletable {
            if let Some(s) = self.segments.pop_front() {
                fs::remove_file(&s.path).map_err(io_err(&s.path))?;
            }
        }
        Ok(())
    }

    /// Deletes the oldest segment holding unacknowledged records, counting its loss.
    pub(super) fn drop_oldest(&mut self) -> Result<(), BufferError> {
        if self.segments.len() == 1 {
            self.roll()?;
        }
        let Some(oldest) = self.segments.front() else {
            return Ok(());
        };
        let last = oldest.last_seq;
        let (records, bytes) = self.release_through(last);
        self.stats.dropped_records += records;
        self.stats.dropped_bytes += bytes;
        self.stats.pending_records = self.stats.pending_records.saturating_sub(records);
        self.stats.pending_bytes = self.stats.pending_bytes.saturating_sub(bytes);
        if last > self.acked {
            self.acked = last;
            write_atomic(&self.dir.join(ACKED_FILE), last.to_string().as_bytes(), false)?;
        }
        tracing::warn!(records, bytes, "disk buffer full: dropped the oldest unsent records");
        self.delete_acked_segments()
    }

    pub(super) fn write_snapshot(&mut self) -> Result<(), BufferError> {
        let snapshot = Snapshot {
            upto_seq: self.next_seq - 1,
            entries: self
                .checkpoints
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
        };
        let bytes = serde_json::to_vec(&snapshot).unwrap_or_default();
        write_atomic(&self.dir.join(SNAPSHOT_FILE), &bytes, true)
    }
}
