//! Reading: the record after a sequence number, from memory when it was just written or
//! from its segment on disk.

use super::*;

impl Inner {
    pub(super) fn read_after(&mut self, after: u64) -> Result<Option<Arc<Record>>, BufferError> {
        let want = after.max(self.acked) + 1;
        if want > self.durable {
            return Ok(None);
        }
        if let Some(first) = self.recent.front()
            && first.seq <= want
        {
            let idx = (want - first.seq) as usize;
            return Ok(self.recent.get(idx).cloned());
        }
        // Read from disk, sequentially from the cursor when it is in the right place.
        let Some(seg) = self
            .segments
            .iter()
            .find(|s| s.last_seq >= want && s.last_seq >= s.first_seq)
        else {
            return Ok(None);
        };
        let (first_seq, path) = (seg.first_seq, seg.path.clone());
        let reuse = matches!(&self.cursor, Some((f, next, _)) if *f == first_seq && *next <= want);
        if !reuse {
            let file = File::open(&path).map_err(io_err(&path))?;
            self.cursor = Some((first_seq, first_seq, BufReader::new(file)));
        }
        let Some((_, next, reader)) = self.cursor.as_mut() else {
            return Ok(None);
        };
        loop {
            match segment::read_record(reader).map_err(io_err(&path))? {
                Ok(Some((record, _))) => {
                    *next = record.seq + 1;
                    if record.seq >= want {
                        return Ok(Some(Arc::new(record)));
                    }
                }
                Ok(None) | Err(_) => {
                    // The rest of this segment is unreadable (reported at open): skip it.
                    let skip_to = self
                        .segments
                        .iter()
                        .find(|s| s.first_seq > first_seq)
                        .map(|s| s.first_seq);
                    self.cursor = None;
                    return match skip_to {
                        Some(s) if s > want => self.read_after(s - 1),
                        _ => Ok(None),
                    };
                }
            }
        }
    }
}
