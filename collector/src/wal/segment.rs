//! On-disk format of one WAL segment file.
//!
//! A segment is named after the first log sequence number (LSN) it may hold
//! (`00000000000000000042.wal`) and is a plain sequence of frames:
//!
//! ```text
//! | payload len: u32 LE | crc32 of (lsn ++ payload): u32 LE | lsn: u64 LE | payload |
//! ```
//!
//! The checksum covers the LSN so a frame copied to the wrong place is caught. A frame
//! cut short by a crash (a torn write) fails its length or checksum check; recovery
//! truncates the last segment there, which is safe because that frame was never
//! acknowledged: acknowledgements are only sent after the fsync that covers the frame.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// Frame header size in bytes.
pub(crate) const HEADER_LEN: usize = 16;
/// Upper bound on one payload; a larger length in a header means corruption, and
/// refusing it keeps a flipped bit from allocating gigabytes during recovery.
pub(crate) const MAX_PAYLOAD_LEN: usize = 256 * 1024 * 1024;

const SUFFIX: &str = ".wal";

pub(crate) fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:020}{SUFFIX}"))
}

/// Parses a segment file name back into its first LSN; other files are ignored.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn checksum(lsn: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&lsn.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Encodes one frame into `out`.
pub(crate) fn encode_frame(out: &mut Vec<u8>, lsn: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(lsn, payload).to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(payload);
}

/// One record read back from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalRecord {
    pub lsn: u64,
    pub payload: Vec<u8>,
}

/// Why reading a segment stopped before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Reached the end of the file cleanly.
    End,
    /// The bytes from `offset` on do not form a valid frame.
    Invalid { offset: u64, reason: &'static str },
}

/// Reads every valid frame of a segment, calling `on_record` for each, and reports
/// where and why reading stopped. `offset` in the result is the length of the valid
/// prefix, which is where a torn tail gets truncated.
pub(crate) fn read_segment(
    path: &Path,
    mut on_record: impl FnMut(WalRecord) -> io::Result<()>,
) -> io::Result<(u64, Stop)> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut offset: u64 = 0;
    let mut header = [0u8; HEADER_LEN];
    loop {
        if offset == file_len {
            return Ok((offset, Stop::End));
        }
        if file_len - offset < HEADER_LEN as u64 {
            return Ok((offset, invalid(offset, "truncated frame header")));
        }
        reader.read_exact(&mut header)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let mut lsn_bytes = [0u8; 8];
        lsn_bytes.copy_from_slice(&header[8..16]);
        let lsn = u64::from_le_bytes(lsn_bytes);
        if len > MAX_PAYLOAD_LEN {
            return Ok((offset, invalid(offset, "frame length out of range")));
        }
        if file_len - offset - (HEADER_LEN as u64) < len as u64 {
            return Ok((offset, invalid(offset, "truncated frame payload")));
        }
        let mut payload = vec![0u8; len];
        reader.read_exact(&mut payload)?;
        if checksum(lsn, &payload) != crc {
            return Ok((offset, invalid(offset, "checksum mismatch")));
        }
        on_record(WalRecord { lsn, payload })?;
        offset += (HEADER_LEN + len) as u64;
    }
}

fn invalid(offset: u64, reason: &'static str) -> Stop {
    Stop::Invalid { offset, reason }
}

/// The segment currently being appended to.
pub(crate) struct ActiveSegment {
    pub(crate) first_lsn: u64,
    pub(crate) path: PathBuf,
    file: File,
    pub(crate) len: u64,
}

impl ActiveSegment {
    /// Opens (or creates) a segment for appending at `len`, dropping anything beyond it.
    pub(crate) fn open(dir: &Path, first_lsn: u64, len: u64) -> io::Result<Self> {
        let path = segment_path(dir, first_lsn);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        if file.metadata()?.len() != len {
            file.set_len(len)?;
            file.sync_all()?;
        }
        let mut segment = ActiveSegment {
            first_lsn,
            path,
            file,
            len,
        };
        segment.seek_to_len()?;
        Ok(segment)
    }

    fn seek_to_len(&mut self) -> io::Result<()> {
        use std::io::Seek;
        self.file.seek(io::SeekFrom::Start(self.len))?;
        Ok(())
    }

    /// Writes pre-encoded frames and makes them durable with one `fdatasync`.
    /// On failure the file is cut back to its previous length, so a half-written
    /// group never sits in front of later frames.
    pub(crate) fn append_durably(&mut self, frames: &[u8]) -> io::Result<()> {
        let result = self.file.write_all(frames).and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += frames.len() as u64;
                Ok(())
            }
            Err(err) => {
                // Best effort: if even this fails the next append fails too, and
                // recovery drops the bad tail by checksum.
                let _ = self.file.set_len(self.len);
                let _ = self.seek_to_len();
                Err(err)
            }
        }
    }
}

/// Makes a directory entry change (create, rename, delete) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_reject_strangers() {
        let dir = Path::new("/x");
        let path = segment_path(dir, 42);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert_eq!(parse_segment_name(name), Some(42));
        assert_eq!(parse_segment_name("42.wal"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.wal"), None);
        assert_eq!(parse_segment_name("00000000000000000042.tmp"), None);
    }

    #[test]
    fn torn_tail_is_reported_at_the_last_good_frame() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut bytes = Vec::new();
        encode_frame(&mut bytes, 1, b"first");
        encode_frame(&mut bytes, 2, b"second");
        let good_len = bytes.len() as u64;
        encode_frame(&mut bytes, 3, b"third-cut-short");
        bytes.truncate(bytes.len() - 4);
        let path = segment_path(dir.path(), 1);
        std::fs::write(&path, &bytes)?;
        let mut seen = Vec::new();
        let (valid, stop) = read_segment(&path, |r| {
            seen.push(r.lsn);
            Ok(())
        })?;
        assert_eq!(seen, vec![1, 2]);
        assert_eq!(valid, good_len);
        assert!(matches!(
            stop,
            Stop::Invalid {
                reason: "truncated frame payload",
                ..
            }
        ));
        Ok(())
    }

    #[test]
    fn flipped_bit_fails_the_checksum() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut bytes = Vec::new();
        encode_frame(&mut bytes, 7, b"payload");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        let path = segment_path(dir.path(), 7);
        std::fs::write(&path, &bytes)?;
        let (valid, stop) = read_segment(&path, |_| Ok(()))?;
        assert_eq!(valid, 0);
        assert_eq!(
            stop,
            Stop::Invalid {
                offset: 0,
                reason: "checksum mismatch"
            }
        );
        Ok(())
    }
}
