//! The payloads of a block's records (framed by `record.rs`).
//!
//! `series.log`:
//! - a series: `0, id, created_lsn, n, (name, value) × n` — varints and length-prefixed
//!   strings. Ids count up from 0 in the file's order.
//! - a deletion: `1, id, lsn` — the series was purged by WAL entry `lsn`.
//!
//! `chunks.log`: `id, complete_lsn, max_t − min_t, chunk` — the chunk's first timestamp is
//! `min_t`, so it is not written twice.
//!
//! `heads.snap`: a first record `applied_lsn`, then per open head `id, first_lsn, last_lsn,
//! chunk`.

use crate::chunk;
use crate::record::{get_str, get_uvarint, put_str, put_uvarint};
use crate::{Labels, Sample};

const SERIES: u64 = 0;
const DELETION: u64 = 1;

pub(crate) enum SeriesRecord {
    Series { id: u32, created_lsn: u64, labels: Labels },
    Deletion { id: u32, lsn: u64 },
}

pub(crate) fn series(id: u32, created_lsn: u64, labels: &Labels) -> Vec<u8> {
    let mut out = Vec::new();
    put_uvarint(&mut out, SERIES);
    put_uvarint(&mut out, u64::from(id));
    put_uvarint(&mut out, created_lsn);
    put_uvarint(&mut out, labels.len() as u64);
    for (name, value) in labels.iter() {
        put_str(&mut out, name);
        put_str(&mut out, value);
    }
    out
}

pub(crate) fn deletion(id: u32, lsn: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_uvarint(&mut out, DELETION);
    put_uvarint(&mut out, u64::from(id));
    put_uvarint(&mut out, lsn);
    out
}

fn id_at(payload: &[u8], at: &mut usize) -> Option<u32> {
    u32::try_from(get_uvarint(payload, at)?).ok()
}

pub(crate) fn parse_series(payload: &[u8]) -> Option<SeriesRecord> {
    let mut at = 0;
    match get_uvarint(payload, &mut at)? {
        SERIES => {
            let id = id_at(payload, &mut at)?;
            let created_lsn = get_uvarint(payload, &mut at)?;
            let n = get_uvarint(payload, &mut at)?;
            let mut pairs = Vec::new();
            for _ in 0..n {
                pairs.push((get_str(payload, &mut at)?, get_str(payload, &mut at)?));
            }
            Some(SeriesRecord::Series {
                id,
                created_lsn,
                labels: Labels::new(pairs),
            })
        }
        DELETION => Some(SeriesRecord::Deletion {
            id: id_at(payload, &mut at)?,
            lsn: get_uvarint(payload, &mut at)?,
        }),
        _ => None,
    }
}

/// A chunk record's header; the chunk's bytes follow it.
pub(crate) fn chunk_header(id: u32, complete_lsn: u64, min_t: i64, max_t: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    put_uvarint(&mut out, u64::from(id));
    put_uvarint(&mut out, complete_lsn);
    put_uvarint(&mut out, max_t.wrapping_sub(min_t) as u64);
    out
}

pub(crate) struct ChunkRecord<'a> {
    pub id: u32,
    pub complete_lsn: u64,
    pub min_t: i64,
    pub max_t: i64,
    /// Where the chunk starts in the payload.
    pub chunk_at: usize,
    pub chunk: &'a [u8],
}

pub(crate) fn parse_chunk(payload: &[u8]) -> Option<ChunkRecord<'_>> {
    let mut at = 0;
    let id = id_at(payload, &mut at)?;
    let complete_lsn = get_uvarint(payload, &mut at)?;
    let span = i64::try_from(get_uvarint(payload, &mut at)?).ok()?;
    let bytes = payload.get(at..)?;
    let (min_t, _) = chunk::decode(bytes).next()?;
    Some(ChunkRecord {
        id,
        complete_lsn,
        min_t,
        max_t: min_t.checked_add(span)?,
        chunk_at: at,
        chunk: bytes,
    })
}

pub(crate) fn snapshot_header(applied_lsn: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_uvarint(&mut out, applied_lsn);
    out
}

pub(crate) fn parse_snapshot_header(payload: &[u8]) -> Option<u64> {
    get_uvarint(payload, &mut 0)
}

/// An open head in a snapshot.
pub(crate) struct SnapshotHead {
    pub id: u32,
    pub first_lsn: u64,
    pub last_lsn: u64,
    pub samples: Vec<Sample>,
}

pub(crate) fn snapshot_head(id: u32, first_lsn: u64, last_lsn: u64, samples: &[Sample]) -> Vec<u8> {
    let mut out = Vec::new();
    put_uvarint(&mut out, u64::from(id));
    put_uvarint(&mut out, first_lsn);
    put_uvarint(&mut out, last_lsn);
    out.extend_from_slice(&chunk::encode(samples));
    out
}

pub(crate) fn parse_snapshot_head(payload: &[u8]) -> Option<SnapshotHead> {
    let mut at = 0;
    let id = id_at(payload, &mut at)?;
    let first_lsn = get_uvarint(payload, &mut at)?;
    let last_lsn = get_uvarint(payload, &mut at)?;
    let bytes = payload.get(at..)?;
    let samples: Vec<Sample> = chunk::decode(bytes).collect();
    (samples.len() == chunk::count(bytes)).then_some(SnapshotHead {
        id,
        first_lsn,
        last_lsn,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_reads_back() {
        let labels = Labels::new([("__name__", "up"), ("job", "node")]);
        match parse_series(&series(7, 42, &labels)) {
            Some(SeriesRecord::Series {
                id,
                created_lsn,
                labels: l,
            }) => {
                assert_eq!((id, created_lsn, l), (7, 42, labels));
            }
            _ => panic!("a series record"),
        }
        assert!(matches!(
            parse_series(&deletion(7, 99)),
            Some(SeriesRecord::Deletion { id: 7, lsn: 99 })
        ));
        assert!(parse_series(&[9]).is_none(), "an unknown kind");

        let samples = [(1_000, 1.0), (2_000, 2.0), (3_500, -1.0)];
        let mut payload = chunk_header(3, 12, 1_000, 3_500);
        payload.extend_from_slice(&chunk::encode(&samples));
        let c = parse_chunk(&payload).expect("chunk");
        assert_eq!((c.id, c.complete_lsn, c.min_t, c.max_t), (3, 12, 1_000, 3_500));
        assert_eq!(chunk::decode(c.chunk).collect::<Vec<_>>(), samples);
        assert_eq!(&payload[c.chunk_at..], c.chunk);

        assert_eq!(parse_snapshot_header(&snapshot_header(77)), Some(77));
        let h = parse_snapshot_head(&snapshot_head(2, 5, 9, &samples)).expect("head");
        assert_eq!((h.id, h.first_lsn, h.last_lsn, h.samples), (2, 5, 9, samples.to_vec()));
    }
}
