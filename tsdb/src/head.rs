//! The head of a series: its newest samples, not yet sealed into a chunk, kept sorted by
//! time in memory. A sample older than the newest is put in its place (a late or
//! out-of-order write), and a second write at the same timestamp replaces the first. The
//! WAL holds every sample of a head until the head is sealed and synced, so a crash loses
//! nothing: replay puts the samples back.

use crate::chunk::{self, Sample};

/// Samples per chunk when a series fills it, as Prometheus: long enough that the chunk's
/// header is a small share of it, short enough that a query decodes little it discards.
pub const CHUNK_SAMPLES: usize = 120;

#[derive(Default)]
pub(crate) struct Head {
    samples: Vec<Sample>,
    /// The WAL sequence numbers of the samples held: the lowest and the highest.
    first_lsn: u64,
    last_lsn: u64,
}

/// A sealed head: its encoded chunk and what the chunk's record must say.
pub(crate) struct Sealed {
    pub bytes: Vec<u8>,
    pub min_t: i64,
    pub max_t: i64,
    /// Every sample of the series with a WAL number up to this one is in a chunk.
    pub complete_lsn: u64,
    pub first_lsn: u64,
}

impl Head {
    pub(crate) fn first_lsn(&self) -> Option<u64> {
        (!self.samples.is_empty()).then_some(self.first_lsn)
    }

    pub(crate) fn last_lsn(&self) -> Option<u64> {
        (!self.samples.is_empty()).then_some(self.last_lsn)
    }

    pub(crate) fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// A head as a snapshot saved it.
    pub(crate) fn restore(first_lsn: u64, last_lsn: u64, samples: Vec<Sample>) -> Head {
        Head {
            samples,
            first_lsn,
            last_lsn,
        }
    }

    /// Whether the head must be sealed before a sample of entry `lsn` goes in: it is full,
    /// and the sample comes from a later WAL entry than any it holds. A head is sealed only
    /// between entries, so that "all samples up to entry N are in chunks" is exact.
    pub(crate) fn full_before(&self, lsn: u64) -> bool {
        (self.samples.len() >= CHUNK_SAMPLES && lsn > self.last_lsn) || self.samples.len() >= chunk::MAX_SAMPLES
    }

    pub(crate) fn insert(&mut self, lsn: u64, t: i64, v: f64) {
        if self.samples.is_empty() {
            self.first_lsn = lsn;
        }
        self.last_lsn = self.last_lsn.max(lsn);
        match self.samples.last() {
            Some(&(last, _)) if t <= last => match self.samples.binary_search_by_key(&t, |s| s.0) {
                Ok(i) => self.samples[i].1 = v,
                Err(i) => self.samples.insert(i, (t, v)),
            },
            _ => self.samples.push((t, v)),
        }
    }

    /// Encodes the samples into a chunk; the head keeps them until [`Head::clear`], called
    /// once the chunk is written. `mid_entry`: the head is sealed while samples of its last
    /// WAL entry may still come (it reached [`chunk::MAX_SAMPLES`]), so it is complete only
    /// up to the entry before.
    pub(crate) fn seal(&self, mid_entry: bool) -> Option<Sealed> {
        let (&(min_t, _), &(max_t, _)) = (self.samples.first()?, self.samples.last()?);
        let complete_lsn = if mid_entry {
            self.last_lsn.saturating_sub(1)
        } else {
            self.last_lsn
        };
        Some(Sealed {
            bytes: chunk::encode(&self.samples),
            min_t,
            max_t,
            complete_lsn,
            first_lsn: self.first_lsn,
        })
    }

    pub(crate) fn clear(&mut self) {
        self.samples.clear();
    }

    /// The samples within `[start, end]`.
    pub(crate) fn within(&self, start: i64, end: i64) -> &[Sample] {
        let from = self.samples.partition_point(|s| s.0 < start);
        let to = self.samples.partition_point(|s| s.0 <= end);
        &self.samples[from..to.max(from)]
    }

    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_samples_take_their_place_and_a_rewrite_replaces() {
        let mut h = Head::default();
        h.insert(5, 3000, 3.0);
        h.insert(6, 1000, 1.0);
        h.insert(6, 2000, 2.0);
        h.insert(7, 2000, 2.5);
        assert_eq!(h.within(i64::MIN, i64::MAX), &[(1000, 1.0), (2000, 2.5), (3000, 3.0)]);
        assert_eq!(h.within(1500, 3000), &[(2000, 2.5), (3000, 3.0)]);
        assert!(h.within(4000, 5000).is_empty());
        let sealed = h.seal(false).expect("sealed");
        assert_eq!(h.len(), 3, "kept until the chunk is written");
        h.clear();
        assert_eq!(
            (sealed.min_t, sealed.max_t, sealed.first_lsn, sealed.complete_lsn),
            (1000, 3000, 5, 7)
        );
        assert_eq!(
            chunk::decode(&sealed.bytes).collect::<Vec<_>>(),
            vec![(1000, 1.0), (2000, 2.5), (3000, 3.0)]
        );
        assert!(h.len() == 0 && h.first_lsn().is_none());
    }

    #[test]
    fn a_full_head_is_sealed_only_between_wal_entries() {
        let mut h = Head::default();
        for i in 0..CHUNK_SAMPLES as i64 {
            h.insert(1, i, 0.0);
        }
        assert!(!h.full_before(1), "the rest of entry 1 goes in the same chunk");
        assert!(h.full_before(2));
        assert_eq!(h.seal(false).map(|s| s.complete_lsn), Some(1));
        assert_eq!(
            h.seal(true).map(|s| s.complete_lsn),
            Some(0),
            "entry 1 may have more samples"
        );
    }
}
