//! A bit stream: the XOR chunk writes fields of any width, most significant bit first, as
//! Prometheus' `bstream` does, so a chunk is byte-for-byte the layout Prometheus documents.

/// Appends bits to a byte vector.
#[derive(Default)]
pub(crate) struct BitWriter {
    bytes: Vec<u8>,
    /// Bits still free in the last byte (0 when it is full or there is none).
    free: u8,
}

impl BitWriter {
    pub(crate) fn bit(&mut self, on: bool) {
        if self.free == 0 {
            self.bytes.push(0);
            self.free = 8;
        }
        self.free -= 1;
        if on && let Some(last) = self.bytes.last_mut() {
            *last |= 1 << self.free;
        }
    }

    /// The low `width` bits of `value`, most significant first, a byte's worth at a time.
    pub(crate) fn bits(&mut self, value: u64, width: u8) {
        let mut left = width;
        while left > 0 {
            if self.free == 0 {
                self.bytes.push(0);
                self.free = 8;
            }
            let take = left.min(self.free);
            let part = (value >> (left - take)) & ((1u64 << take) - 1);
            if let Some(last) = self.bytes.last_mut() {
                *last |= (part as u8) << (self.free - take);
            }
            self.free -= take;
            left -= take;
        }
    }

    pub(crate) fn byte(&mut self, b: u8) {
        self.bits(u64::from(b), 8);
    }

    /// An unsigned LEB128 varint, as Go's `binary.PutUvarint`.
    pub(crate) fn uvarint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte((v as u8) | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    /// A zig-zag signed varint, as Go's `binary.PutVarint`.
    pub(crate) fn varint(&mut self, v: i64) {
        self.uvarint(((v << 1) ^ (v >> 63)) as u64);
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads bits back; every read fails cleanly at the end of the bytes.
pub(crate) struct BitReader<'a> {
    bytes: &'a [u8],
    /// Position in bits.
    at: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> BitReader<'a> {
        BitReader { bytes, at: 0 }
    }

    pub(crate) fn bit(&mut self) -> Option<bool> {
        let byte = *self.bytes.get(self.at / 8)?;
        let on = byte >> (7 - self.at % 8) & 1 == 1;
        self.at += 1;
        Some(on)
    }

    pub(crate) fn bits(&mut self, width: u8) -> Option<u64> {
        if self.at + usize::from(width) > self.bytes.len() * 8 {
            return None;
        }
        let mut v = 0u64;
        let mut left = width;
        while left > 0 {
            let byte = u64::from(*self.bytes.get(self.at / 8)?);
            let free = 8 - (self.at % 8) as u8;
            let take = left.min(free);
            let part = (byte >> (free - take)) & ((1u64 << take) - 1);
            // `v << 64` would overflow when a whole word is read: shift in two steps.
            v = (v << (take - 1) << 1) | part;
            self.at += usize::from(take);
            left -= take;
        }
        Some(v)
    }

    pub(crate) fn uvarint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.bits(8)?;
            v |= (b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    pub(crate) fn varint(&mut self) -> Option<i64> {
        let u = self.uvarint()?;
        Some((u >> 1) as i64 ^ -((u & 1) as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_any_width_and_varints_read_back() {
        let mut w = BitWriter::default();
        w.bit(true);
        w.bits(0b1011, 4);
        w.varint(-1_700_000_000_000);
        w.bits(u64::MAX, 64);
        w.uvarint(300);
        let bytes = w.into_bytes();
        let mut r = BitReader::new(&bytes);
        assert_eq!(r.bit(), Some(true));
        assert_eq!(r.bits(4), Some(0b1011));
        assert_eq!(r.varint(), Some(-1_700_000_000_000));
        assert_eq!(r.bits(64), Some(u64::MAX));
        assert_eq!(r.uvarint(), Some(300));
        // Only the padding of the last byte is left: a wider read fails.
        assert_eq!(r.bits(8), None);
    }

    #[test]
    fn bits_are_written_most_significant_first() {
        let mut w = BitWriter::default();
        w.bits(0b101, 3);
        w.byte(0xff);
        assert_eq!(w.into_bytes(), vec![0b1011_1111, 0b1110_0000]);
    }
}
