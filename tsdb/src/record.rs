//! Framing of the block files: each record is `[len: u32 LE][crc32 of payload: u32 LE]
//! [payload]`, appended, never rewritten. A crash can leave the last record torn; opening
//! a file reads records up to the first one that is short or fails its checksum and cuts
//! the file there, so what follows a torn record is never read as data.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

const HEADER: usize = 8;
/// A record larger than this is corruption, not data: a chunk is a few hundred bytes,
/// a series' labels a few kilobytes.
pub(crate) const MAX_PAYLOAD: usize = 16 << 20;

/// Appends one framed record at `*end`, the file's end (it is opened to append); returns
/// the payload's offset. Takes `&File`: readers share the handle, which only grows.
pub(crate) fn append(mut file: &File, end: &mut u64, payload: &[u8]) -> std::io::Result<u64> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l as usize <= MAX_PAYLOAD)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "record too large"))?;
    let mut framed = Vec::with_capacity(HEADER + payload.len());
    framed.extend_from_slice(&len.to_le_bytes());
    framed.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    framed.extend_from_slice(payload);
    if let Err(e) = file.write_all(&framed) {
        // A partial write (a full disk) must not stay: the next record would land after
        // it, and every offset computed from `end` would be wrong.
        let _ = file.set_len(*end);
        return Err(e);
    }
    let at = *end + HEADER as u64;
    *end += framed.len() as u64;
    Ok(at)
}

/// What a file held: its whole records (payload offset, payload), and how many bytes of
/// torn or corrupt tail were cut off.
pub(crate) struct Recovered {
    pub records: Vec<(u64, Vec<u8>)>,
    pub end: u64,
    pub cut_bytes: u64,
}

/// The whole records at the start of `bytes` that `valid` accepts, and where they end.
/// An empty record ends them too: no payload is empty, and a file whose size grew before
/// its data was written (a crash on some filesystems) reads as zeros, whose checksum is 0.
pub(crate) fn split(bytes: &[u8], valid: &mut dyn FnMut(&[u8]) -> bool) -> (Vec<(u64, Vec<u8>)>, usize) {
    let mut records = Vec::new();
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 || len > MAX_PAYLOAD {
            break;
        }
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc || !valid(payload) {
            break;
        }
        records.push(((at + HEADER) as u64, payload.to_vec()));
        at += HEADER + len;
    }
    (records, at)
}

/// Reads every whole record of `file` that `valid` accepts (in order: a record it refuses
/// is treated as torn, and so is all that follows) and truncates the file after the last.
pub(crate) fn recover(file: &mut File, valid: &mut dyn FnMut(&[u8]) -> bool) -> std::io::Result<Recovered> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    let (records, at) = split(&bytes, valid);
    let cut_bytes = (bytes.len() - at) as u64;
    if cut_bytes > 0 {
        file.set_len(at as u64)?;
        file.sync_all()?;
    }
    file.seek(SeekFrom::End(0))?;
    Ok(Recovered {
        records,
        end: at as u64,
        cut_bytes,
    })
}

/// Makes a new, renamed or removed entry of `dir` durable: it is only once the directory is.
pub(crate) fn sync_dir(dir: &std::path::Path) -> Result<(), crate::Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| crate::Error::io(dir, e))
}

/// Unsigned LEB128 varints for the payloads.
pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint at `*at`, advancing it; `None` when the bytes end first.
pub(crate) fn get_uvarint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn get_str(bytes: &[u8], at: &mut usize) -> Option<String> {
    let len = usize::try_from(get_uvarint(bytes, at)?).ok()?;
    let s = bytes.get(*at..at.checked_add(len)?)?;
    *at += len;
    String::from_utf8(s.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(records: &[&[u8]]) -> (tempfile::NamedTempFile, Vec<u64>) {
        let f = tempfile::NamedTempFile::new().expect("temp file");
        let mut end = 0;
        let offsets = records
            .iter()
            .map(|r| append(f.as_file(), &mut end, r).expect("append"))
            .collect();
        (f, offsets)
    }

    #[test]
    fn whole_records_read_back_at_their_offsets() {
        let (mut f, offsets) = file_with(&[b"one", b"2", b"three"]);
        let got = recover(f.as_file_mut(), &mut |_| true).expect("recover");
        assert_eq!(got.cut_bytes, 0);
        let payloads: Vec<&[u8]> = got.records.iter().map(|(_, p)| p.as_slice()).collect();
        assert_eq!(payloads, vec![&b"one"[..], b"2", b"three"]);
        assert_eq!(got.records.iter().map(|r| r.0).collect::<Vec<_>>(), offsets);
    }

    #[test]
    fn a_torn_corrupt_zeroed_or_refused_tail_is_cut_and_the_file_appends_after_the_last_whole_record() {
        for damage in ["torn", "flipped", "zeroed", "refused"] {
            let (mut f, _) = file_with(&[b"kept", b"lost record"]);
            let len = f.as_file().metadata().expect("meta").len();
            let mut valid = |p: &[u8]| damage != "refused" || p == b"kept";
            match damage {
                "torn" => f.as_file().set_len(len - 3).expect("truncate"),
                "flipped" => {
                    use std::os::unix::fs::FileExt;
                    f.as_file().write_all_at(b"X", len - 1).expect("flip");
                }
                "zeroed" => f.as_file().set_len(len + 64).expect("grow"),
                _ => {}
            }
            if damage == "zeroed" {
                // The grown tail reads as zeros: an empty record whose checksum is 0.
                let got = recover(f.as_file_mut(), &mut valid).expect("recover");
                assert_eq!(got.records.len(), 2, "{damage}");
                assert_eq!(got.cut_bytes, 64, "{damage}");
                continue;
            }
            let got = recover(f.as_file_mut(), &mut valid).expect("recover");
            assert_eq!(got.records.len(), 1, "{damage}");
            assert!(got.cut_bytes > 0, "{damage}");
            let mut end = got.end;
            append(f.as_file(), &mut end, b"after").expect("append");
            let again = recover(f.as_file_mut(), &mut |_| true).expect("recover");
            let payloads: Vec<&[u8]> = again.records.iter().map(|(_, p)| p.as_slice()).collect();
            assert_eq!(payloads, vec![&b"kept"[..], b"after"], "{damage}");
        }
    }

    #[test]
    fn varints_and_strings_read_back_and_fail_cleanly_when_cut() {
        let mut out = Vec::new();
        put_uvarint(&mut out, u64::MAX);
        put_str(&mut out, "instance");
        let mut at = 0;
        assert_eq!(get_uvarint(&out, &mut at), Some(u64::MAX));
        assert_eq!(get_str(&out, &mut at).as_deref(), Some("instance"));
        let mut at = 0;
        assert_eq!(get_uvarint(&out[..3], &mut at), None);
        let mut at = 10;
        assert_eq!(get_str(&out[..12], &mut at), None);
    }
}
