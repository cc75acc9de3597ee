//! `heads.snap`: a block's open heads, written whole every so often so that the WAL need
//! not keep a head's samples until the head fills a chunk (half an hour at a 15 s scrape, two
//! hours at a minute). It is written to a temporary file, synced, and renamed over the last
//! one, so a crash leaves either the old snapshot or the new one, never a torn one.
//!
//! A snapshot taken at WAL entry `A` (every entry up to `A` applied, every chunk before it
//! synced) holds every head sample of entries up to `A`; replay skips those entries.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::layout::{self, SnapshotHead};
use crate::{Error, record};

const FILE: &str = "heads.snap";
const TEMP: &str = "heads.snap.tmp";

/// Writes the snapshot of `heads` (id, first LSN, last LSN, samples) taken at `applied`.
pub(crate) fn write<'a>(
    dir: &Path,
    applied: u64,
    heads: impl Iterator<Item = (u32, u64, u64, &'a [crate::Sample])>,
) -> Result<(), Error> {
    let temp = dir.join(TEMP);
    let io = |e| Error::io(&temp, e);
    let file = File::create(&temp).map_err(io)?;
    let mut out = std::io::BufWriter::new(&file);
    let mut frame = |payload: &[u8]| -> std::io::Result<()> {
        out.write_all(&(payload.len() as u32).to_le_bytes())?;
        out.write_all(&crc32fast::hash(payload).to_le_bytes())?;
        out.write_all(payload)
    };
    frame(&layout::snapshot_header(applied)).map_err(io)?;
    for (id, first, last, samples) in heads {
        frame(&layout::snapshot_head(id, first, last, samples)).map_err(io)?;
    }
    out.flush().map_err(io)?;
    drop(out);
    file.sync_all().map_err(io)?;
    std::fs::rename(&temp, dir.join(FILE)).map_err(io)?;
    record::sync_dir(dir)
}

/// The last snapshot: the entry it was taken at and its heads; `None` when there is none.
pub(crate) fn read(dir: &Path) -> Result<Option<(u64, Vec<SnapshotHead>)>, Error> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let (records, end) = record::split(&bytes, &mut |_| true);
    // A snapshot is renamed into place whole: anything short of that is damage.
    if end != bytes.len() {
        return Err(Error::corrupt(&path, "a damaged record"));
    }
    let mut records = records.into_iter();
    let applied = records
        .next()
        .and_then(|(_, p)| layout::parse_snapshot_header(&p))
        .ok_or_else(|| Error::corrupt(&path, "no header"))?;
    let heads = records
        .map(|(_, p)| layout::parse_snapshot_head(&p).ok_or_else(|| Error::corrupt(&path, "an unreadable head")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((applied, heads)))
}
