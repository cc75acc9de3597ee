//! Appending: a record written to the open segment, fsynced, and segments rolled at their
//! size; files created and replaced durably.

use super::*;

impl Inner {
    pub(super) fn write(&mut self, new: NewRecord) -> Result<u64, BufferError> {
        let active_bytes = self.segments.back().map_or(0, |s| s.bytes);
        if active_bytes >= self.opts.segment_bytes {
            self.roll()?;
        }
        let seq = self.next_seq;
        let record = Record {
            seq,
            kind: new.kind,
            lz4: new.lz4,
            entries: new.entries,
            payload: new.payload,
        };
        let bytes = segment::encode(&record);
        let path = self.segments.back().map(|s| s.path.clone()).unwrap_or_default();
        if let Err(e) = self.active.write_all(&bytes) {
            // Whatever reached the file is a torn record: cut it so later appends stay
            // readable, and let the producer retry.
            let good = self.segments.back().map_or(0, |s| s.bytes);
            let _ = self.active.set_len(good);
            return Err(io_err(&path)(e));
        }
        let len = bytes.len() as u64;
        if let Some(s) = self.segments.back_mut() {
            s.last_seq = seq;
            s.bytes += len;
        }
        self.next_seq += 1;
        self.stats.pending_records += 1;
        self.stats.pending_bytes += len;
        self.sizes.push_back(len as u32);
        merge(&mut self.checkpoints, &record.entries);
        self.recent_bytes += bytes.len();
        self.recent.push_back(Arc::new(record));
        while self.recent_bytes > self.opts.memory_bytes && self.recent.len() > 1 {
            if let Some(old) = self.recent.pop_front() {
                self.recent_bytes -= segment::encoded_len(&old.entries, old.payload.len());
            }
        }
        Ok(seq)
    }

    /// Makes everything written so far durable and visible to the sender.
    pub(super) fn sync(&mut self) -> Result<(), BufferError> {
        if self.durable + 1 == self.next_seq {
            return Ok(());
        }
        if self.opts.fsync {
            let path = self.segments.back().map(|s| s.path.clone()).unwrap_or_default();
            self.active.sync_data().map_err(io_err(&path))?;
        }
        self.durable = self.next_seq - 1;
        Ok(())
    }

    pub(super) fn roll(&mut self) -> Result<(), BufferError> {
        self.sync()?;
        let path = segment_path(&self.dir, self.next_seq);
        self.active = create_segment(&self.dir, &path)?;
        self.segments.push_back(SegmentInfo {
            first_seq: self.next_seq,
            last_seq: self.next_seq - 1,
            bytes: 0,
            path,
        });
        Ok(())
    }
}

pub(super) fn create_segment(dir: &Path, path: &Path) -> Result<File, BufferError> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    sync_dir(dir)?;
    Ok(f)
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), BufferError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

pub(super) fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<(), BufferError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    if durable {
        f.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if durable && let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}
