//! The XOR chunk: up to a few hundred samples of one series, timestamps as
//! delta-of-delta and values XORed with the previous one (Gorilla, Facebook 2015), in the
//! layout of Prometheus' `chunkenc.XORChunk`: a big-endian u16 sample count, the first
//! timestamp as a signed varint and its value as 64 bits, the second timestamp's delta as
//! an unsigned varint, then per sample a delta-of-delta in 1, 16, 20, 24 or 68 bits and an
//! XORed value in 1, 2 + meaningful bits, or 13 + meaningful bits.
//!
//! A regular scrape costs one bit per timestamp; a value that repeats one bit; a counter
//! that grows steadily a dozen or two. Prometheus measures 1.3–1.4 bytes per sample on
//! node-exporter data with this layout.

use crate::bits::{BitReader, BitWriter};

/// A sample: milliseconds since the epoch and a value.
pub type Sample = (i64, f64);

/// The most samples one chunk holds (its count is a u16).
pub const MAX_SAMPLES: usize = u16::MAX as usize;

/// Whether `dod` fits a signed field of `width` bits, as Prometheus' `bitRange`.
fn fits(dod: i64, width: u8) -> bool {
    let half = 1i64 << (width - 1);
    -(half - 1) <= dod && dod <= half
}

/// The buckets of a delta-of-delta: control bits, their count, and the field's width.
const DOD_BUCKETS: [(u64, u8, u8); 3] = [(0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20)];

/// The XOR state: leading and trailing zeros of the last value written in full.
#[derive(Clone, Copy)]
struct Window {
    leading: u8,
    trailing: u8,
}

/// Encodes `samples` (strictly increasing timestamps, at most [`MAX_SAMPLES`]).
///
/// # Panics
/// Never in practice: callers pass what [`crate::head`] sealed; a debug assertion checks.
pub fn encode(samples: &[Sample]) -> Vec<u8> {
    debug_assert!(samples.len() <= MAX_SAMPLES);
    debug_assert!(samples.windows(2).all(|w| w[0].0 < w[1].0));
    let mut w = BitWriter::default();
    w.bits(samples.len().min(MAX_SAMPLES) as u64, 16);
    let mut window: Option<Window> = None;
    let (mut prev_t, mut prev_delta, mut prev_v) = (0i64, 0u64, 0u64);
    for (i, &(t, v)) in samples.iter().take(MAX_SAMPLES).enumerate() {
        let bits = v.to_bits();
        match i {
            0 => {
                w.varint(t);
                w.bits(bits, 64);
            }
            1 => {
                prev_delta = t.wrapping_sub(prev_t) as u64;
                w.uvarint(prev_delta);
                write_xor(&mut w, bits ^ prev_v, &mut window);
            }
            _ => {
                let delta = t.wrapping_sub(prev_t) as u64;
                let dod = delta.wrapping_sub(prev_delta) as i64;
                if dod == 0 {
                    w.bit(false);
                } else if let Some(&(control, n, width)) = DOD_BUCKETS.iter().find(|b| fits(dod, b.2)) {
                    w.bits(control, n);
                    w.bits(dod as u64, width);
                } else {
                    w.bits(0b1111, 4);
                    w.bits(dod as u64, 64);
                }
                prev_delta = delta;
                write_xor(&mut w, bits ^ prev_v, &mut window);
            }
        }
        prev_t = t;
        prev_v = bits;
    }
    w.into_bytes()
}

fn write_xor(w: &mut BitWriter, xor: u64, window: &mut Option<Window>) {
    if xor == 0 {
        w.bit(false);
        return;
    }
    w.bit(true);
    let leading = (xor.leading_zeros() as u8).min(31);
    let trailing = xor.trailing_zeros() as u8;
    if let Some(last) = *window
        && leading >= last.leading
        && trailing >= last.trailing
    {
        w.bit(false);
        w.bits(xor >> last.trailing, 64 - last.leading - last.trailing);
        return;
    }
    *window = Some(Window { leading, trailing });
    let meaningful = 64 - leading - trailing;
    w.bit(true);
    w.bits(u64::from(leading), 5);
    // 64 meaningful bits do not fit 6 bits: they are written as 0, read back as 64.
    w.bits(u64::from(meaningful) & 63, 6);
    w.bits(xor >> trailing, meaningful);
}

/// The number of samples in an encoded chunk.
pub fn count(chunk: &[u8]) -> usize {
    match chunk {
        [hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
        _ => 0,
    }
}

/// The samples of an encoded chunk, in order. A chunk cut short (it never is: every
/// record is checksummed) ends the iteration where the bytes end.
pub fn decode(chunk: &[u8]) -> Decoder<'_> {
    let mut r = BitReader::new(chunk);
    let left = r.bits(16).unwrap_or(0) as usize;
    Decoder {
        r,
        left,
        read: 0,
        t: 0,
        delta: 0,
        v: 0,
        window: Window {
            leading: 0,
            trailing: 0,
        },
    }
}

pub struct Decoder<'a> {
    r: BitReader<'a>,
    left: usize,
    read: usize,
    t: i64,
    delta: u64,
    v: u64,
    window: Window,
}

impl Decoder<'_> {
    fn next_sample(&mut self) -> Option<Sample> {
        match self.read {
            0 => {
                self.t = self.r.varint()?;
                self.v = self.r.bits(64)?;
            }
            1 => {
                self.delta = self.r.uvarint()?;
                self.t = self.t.wrapping_add(self.delta as i64);
                self.read_xor()?;
            }
            _ => {
                let mut ones = 0;
                while ones < 4 && self.r.bit()? {
                    ones += 1;
                }
                let dod = match ones {
                    0 => 0,
                    4 => self.r.bits(64)? as i64,
                    n => {
                        let width = DOD_BUCKETS[n - 1].2;
                        let raw = self.r.bits(width)? as i64;
                        // Sign-extend as Prometheus does: above half the range is negative.
                        if raw > 1 << (width - 1) {
                            raw - (1 << width)
                        } else {
                            raw
                        }
                    }
                };
                self.delta = self.delta.wrapping_add(dod as u64);
                self.t = self.t.wrapping_add(self.delta as i64);
                self.read_xor()?;
            }
        }
        self.read += 1;
        Some((self.t, f64::from_bits(self.v)))
    }

    fn read_xor(&mut self) -> Option<()> {
        if !self.r.bit()? {
            return Some(());
        }
        if self.r.bit()? {
            let leading = self.r.bits(5)? as u8;
            let meaningful = match self.r.bits(6)? as u8 {
                0 => 64,
                n => n,
            };
            self.window = Window {
                leading,
                trailing: 64u8.checked_sub(leading + meaningful)?,
            };
        }
        let Window { leading, trailing } = self.window;
        let width = 64u8.checked_sub(leading + trailing)?;
        let xor = self.r.bits(width)?.checked_shl(u32::from(trailing))?;
        self.v ^= xor;
        Some(())
    }
}

impl Iterator for Decoder<'_> {
    type Item = Sample;

    fn next(&mut self) -> Option<Sample> {
        if self.read >= self.left {
            return None;
        }
        let sample = self.next_sample();
        if sample.is_none() {
            self.left = 0;
        }
        sample
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(samples: &[Sample]) -> Vec<Sample> {
        let bytes = encode(samples);
        assert_eq!(count(&bytes), samples.len());
        decode(&bytes).collect()
    }

    fn same(a: &[Sample], b: &[Sample]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits())
    }

    #[test]
    fn a_regular_counter_costs_a_few_bits_a_timestamp_and_two_bytes_a_value() {
        let samples: Vec<Sample> = (0..120)
            .map(|i| (1_700_000_000_000 + i * 15_000, (i * 37 + i % 5) as f64))
            .collect();
        let bytes = encode(&samples);
        assert!(same(&round_trip(&samples), &samples));
        // One bit a timestamp; a growing integer's XOR keeps about two bytes of meaning
        // (Gorilla's known cost on counters). Raw, a sample is 16 bytes.
        assert!(bytes.len() < 5 * 120 / 2, "{} bytes", bytes.len());
    }

    #[test]
    fn a_constant_series_costs_two_bits_a_sample() {
        let samples: Vec<Sample> = (0..120).map(|i| (i * 10_000, 42.5)).collect();
        let bytes = encode(&samples);
        assert!(same(&round_trip(&samples), &samples));
        assert!(bytes.len() <= 2 + 8 + 8 + 2 + 120 * 2 / 8 + 1, "{} bytes", bytes.len());
    }

    #[test]
    fn every_delta_of_delta_bucket_and_special_value_reads_back() {
        let mut t = -5_000i64;
        let mut samples = Vec::new();
        let steps = [1i64, 1, 8_000, 8_193, 70_000, 600_000, 1 << 40, 3, 1 << 62, 5];
        let values = [
            0.0,
            -0.0,
            f64::NAN,
            f64::INFINITY,
            f64::MIN_POSITIVE,
            1e300,
            -7.25,
            f64::from_bits(0x7ff0_0000_0000_0002),
            1.0,
            1.0,
        ];
        for (step, v) in steps.iter().zip(values) {
            t = t.saturating_add(*step);
            samples.push((t, v));
        }
        assert!(same(&round_trip(&samples), &samples));
    }

    #[test]
    fn empty_and_single_sample_chunks_read_back() {
        assert!(round_trip(&[]).is_empty());
        assert!(same(&round_trip(&[(i64::MIN + 1, -1.5)]), &[(i64::MIN + 1, -1.5)]));
    }

    #[test]
    fn a_cut_chunk_ends_instead_of_panicking() {
        let samples: Vec<Sample> = (0..50).map(|i| (i * 1000, (i * i) as f64 * 0.1)).collect();
        let bytes = encode(&samples);
        for cut in 0..bytes.len() {
            let read: Vec<Sample> = decode(&bytes[..cut]).collect();
            assert!(read.len() < samples.len());
            assert!(same(&read, &samples[..read.len()]));
        }
    }

    proptest! {
        #[test]
        fn any_increasing_series_reads_back_bit_for_bit(
            start in any::<i32>(),
            steps in proptest::collection::vec(1i64..10_000_000, 0..300),
            values in proptest::collection::vec(any::<u64>(), 300),
        ) {
            let mut t = i64::from(start);
            let mut samples = Vec::new();
            for (step, bits) in steps.iter().zip(&values) {
                t += step;
                samples.push((t, f64::from_bits(*bits)));
            }
            prop_assert!(same(&round_trip(&samples), &samples));
        }
    }
}
