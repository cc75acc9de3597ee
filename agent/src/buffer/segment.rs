//! On-disk framing of buffer records.
//!
//! A segment is a file of records, each `[len: u32 LE][crc32: u32 LE][body]`, the CRC
//! covering the body. The body is:
//!
//! ```text
//! seq u64 | kind u8 (bit 7: payload is LZ4) | entries u32 | (key_len u16, key, value_len u32, value)* | payload
//! ```
//!
//! A crash can leave the last record of the last segment half-written; reading stops
//! at the first record whose length or CRC does not check out, and the opener
//! truncates the file there. Such a record was never acknowledged to its producer.

use std::io::{self, Read};

use bytes::{BufMut, Bytes, BytesMut};

/// What a record carries, so the sender knows which OTLP service it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Logs = 1,
    Metrics = 2,
    Traces = 3,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        match v {
            1 => Some(Kind::Logs),
            2 => Some(Kind::Metrics),
            3 => Some(Kind::Traces),
            _ => None,
        }
    }
}

/// A checkpoint entry committed together with the record's data: `value` empty
/// deletes the key.
pub type Entry = (String, Vec<u8>);

/// One unit of shipping: a whole OTLP export request, plus the checkpoint entries that
/// become true once it is durable.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub seq: u64,
    pub kind: Kind,
    /// The payload is LZ4-compressed (size-prepended block); see `Record::otlp`.
    pub lz4: bool,
    pub entries: Vec<Entry>,
    pub payload: Bytes,
}

impl Record {
    /// The OTLP export request bytes, decompressed if stored compressed.
    pub fn otlp(&self) -> std::io::Result<Bytes> {
        if !self.lz4 {
            return Ok(self.payload.clone());
        }
        lz4_flex::block::decompress_size_prepended(&self.payload)
            .map(Bytes::from)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

const HEADER: usize = 8;
/// No record may claim more than this; a larger length is corruption, not data.
pub(crate) const MAX_RECORD: usize = 256 * 1024 * 1024;

/// Bytes the record takes on disk, framing included.
pub fn encoded_len(entries: &[Entry], payload_len: usize) -> usize {
    HEADER + 8 + 1 + 4 + entries.iter().map(|(k, v)| 2 + k.len() + 4 + v.len()).sum::<usize>() + payload_len
}

pub(crate) fn encode(record: &Record) -> Bytes {
    let len = encoded_len(&record.entries, record.payload.len());
    let mut body = BytesMut::with_capacity(len);
    body.put_u32_le(0);
    body.put_u32_le(0);
    body.put_u64_le(record.seq);
    body.put_u8(record.kind as u8 | if record.lz4 { 0x80 } else { 0 });
    body.put_u32_le(record.entries.len() as u32);
    for (k, v) in &record.entries {
        body.put_u16_le(k.len() as u16);
        body.put_slice(k.as_bytes());
        body.put_u32_le(v.len() as u32);
        body.put_slice(v);
    }
    body.put_slice(&record.payload);
    let body_len = (body.len() - HEADER) as u32;
    let crc = crc32fast::hash(&body[HEADER..]);
    body[0..4].copy_from_slice(&body_len.to_le_bytes());
    body[4..8].copy_from_slice(&crc.to_le_bytes());
    body.freeze()
}

/// Why reading stopped before the end of a segment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Torn {
    /// The file ends inside a record.
    Short,
    /// A length beyond any record, or a CRC or body that does not check out.
    Corrupt(&'static str),
}

/// Reads the next record. `Ok(None)` at a clean end of file; `Err(Ok(torn))` when the
/// bytes from here on are not a whole, valid record.
pub(crate) fn read_record(reader: &mut impl Read) -> io::Result<Result<Option<(Record, usize)>, Torn>> {
    let mut header = [0u8; HEADER];
    match read_full(reader, &mut header)? {
        0 => return Ok(Ok(None)),
        n if n < HEADER => return Ok(Err(Torn::Short)),
        _ => {}
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if !(13..=MAX_RECORD).contains(&len) {
        return Ok(Err(Torn::Corrupt("impossible record length")));
    }
    let mut body = vec![0u8; len];
    if read_full(reader, &mut body)? < len {
        return Ok(Err(Torn::Short));
    }
    if crc32fast::hash(&body) != crc {
        return Ok(Err(Torn::Corrupt("checksum mismatch")));
    }
    Ok(decode_body(Bytes::from(body)).map(|r| Some((r, HEADER + len))))
}

fn decode_body(body: Bytes) -> Result<Record, Torn> {
    let bad = Torn::Corrupt("malformed record body");
    let mut pos = 0usize;
    let take = |pos: &mut usize, n: usize| -> Result<std::ops::Range<usize>, Torn> {
        let r = *pos..pos
            .checked_add(n)
            .filter(|e| *e <= body.len())
            .ok_or(Torn::Corrupt("malformed record body"))?;
        *pos += n;
        Ok(r)
    };
    let seq = u64::from_le_bytes(body[take(&mut pos, 8)?].try_into().map_err(|_| Torn::Corrupt("seq"))?);
    let kind_byte = body[take(&mut pos, 1)?][0];
    let lz4 = kind_byte & 0x80 != 0;
    let kind = Kind::from_u8(kind_byte & 0x7f).ok_or(Torn::Corrupt("unknown record kind"))?;
    let n = u32::from_le_bytes(
        body[take(&mut pos, 4)?]
            .try_into()
            .map_err(|_| Torn::Corrupt("entries"))?,
    ) as usize;
    let mut entries = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let klen = u16::from_le_bytes(body[take(&mut pos, 2)?].try_into().map_err(|_| Torn::Corrupt("key"))?) as usize;
        let key =
            String::from_utf8(body[take(&mut pos, klen)?].to_vec()).map_err(|_| Torn::Corrupt("key is not UTF-8"))?;
        let vlen = u32::from_le_bytes(
            body[take(&mut pos, 4)?]
                .try_into()
                .map_err(|_| Torn::Corrupt("value"))?,
        ) as usize;
        let value = body[take(&mut pos, vlen)?].to_vec();
        entries.push((key, value));
    }
    if pos > body.len() {
        return Err(bad);
    }
    let payload = body.slice(pos..);
    Ok(Record {
        seq,
        kind,
        lz4,
        entries,
        payload,
    })
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            seq: 42,
            kind: Kind::Logs,
            lz4: true,
            entries: vec![("file:1:2".into(), b"offset".to_vec()), ("gone".into(), Vec::new())],
            payload: Bytes::from_static(b"otlp bytes"),
        }
    }

    #[test]
    fn round_trips_and_reports_its_length() {
        let r = record();
        let bytes = encode(&r);
        assert_eq!(bytes.len(), encoded_len(&r.entries, r.payload.len()));
        let (back, used) = read_record(&mut &bytes[..]).expect("io").expect("valid").expect("some");
        assert_eq!(back, r);
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_detected() {
        let bytes = encode(&record());
        for cut in 1..bytes.len() {
            assert!(read_record(&mut &bytes[..cut]).expect("io").is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.to_vec();
            b[i] ^= 0x10;
            assert!(
                !matches!(read_record(&mut &b[..]).expect("io"), Ok(Some((ref r, _))) if *r == record()),
                "flip at {i} went unnoticed"
            );
        }
    }
}
