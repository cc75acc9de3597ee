//! The unit stored in the write-ahead log: one sanitized OTLP export request.
//!
//! Layout: `| version: u8 | signal: u8 | batch id len: u16 LE | batch id | OTLP protobuf |`.
//! Keeping the sanitized request as protobuf (rather than index documents) makes the
//! WAL compact, fast to write, and independent of the index schema.

use bytes::{BufMut, Bytes, BytesMut};

const VERSION: u8 = 1;

/// The three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Signal {
    Logs,
    Traces,
    Metrics,
}

impl Signal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Signal::Logs => "logs",
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
        }
    }

    /// What one record of this signal is called, for messages.
    pub(crate) fn record_noun(self) -> &'static str {
        match self {
            Signal::Logs => "log records",
            Signal::Traces => "spans",
            Signal::Metrics => "metric data points",
        }
    }

    fn code(self) -> u8 {
        match self {
            Signal::Logs => 1,
            Signal::Traces => 2,
            Signal::Metrics => 3,
        }
    }

    fn from_code(code: u8) -> Option<Signal> {
        match code {
            1 => Some(Signal::Logs),
            2 => Some(Signal::Traces),
            3 => Some(Signal::Metrics),
            _ => None,
        }
    }
}

/// A decoded WAL payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalBatch {
    pub signal: Signal,
    pub batch_id: Option<String>,
    /// The sanitized export request, protobuf-encoded.
    pub otlp: Bytes,
}

impl WalBatch {
    pub(crate) fn encode(&self) -> Bytes {
        let id = self.batch_id.as_deref().unwrap_or("");
        let id = &id.as_bytes()[..id.len().min(u16::MAX as usize)];
        let mut out = BytesMut::with_capacity(4 + id.len() + self.otlp.len());
        out.put_u8(VERSION);
        out.put_u8(self.signal.code());
        out.put_u16_le(id.len() as u16);
        out.put_slice(id);
        out.put_slice(&self.otlp);
        out.freeze()
    }

    pub(crate) fn decode(payload: &Bytes) -> Result<WalBatch, String> {
        if payload.len() < 4 {
            return Err("payload shorter than its header".into());
        }
        if payload[0] != VERSION {
            return Err(format!("unknown batch format version {}", payload[0]));
        }
        let signal = Signal::from_code(payload[1]).ok_or_else(|| format!("unknown signal code {}", payload[1]))?;
        let id_len = u16::from_le_bytes([payload[2], payload[3]]) as usize;
        if payload.len() < 4 + id_len {
            return Err("batch id runs past the payload".into());
        }
        let batch_id = if id_len == 0 {
            None
        } else {
            Some(String::from_utf8(payload[4..4 + id_len].to_vec()).map_err(|_| "batch id is not UTF-8".to_string())?)
        };
        Ok(WalBatch {
            signal,
            batch_id,
            otlp: payload.slice(4 + id_len..),
        })
    }
}

/// Signal code of a control entry: "forget a stream partition's services" (see [`Purge`]).
const PURGE_CODE: u8 = 0x7f;

/// A control entry in a worker's local log: the worker gave up a stream partition, so its
/// indexes must no longer answer for the partition's services (the new owner does), and the
/// batch ids remembered for it are forgotten. Written after the partition's last consumed
/// entry, it applies in log order like any entry — on a replay too.
///
/// Layout: `| version: u8 | 0x7f | 0u16 | partition: u32 LE | partitions: u32 LE |`; an
/// older reader sees an unknown signal and skips it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Purge {
    pub partition: u32,
    pub partitions: u32,
}

impl Purge {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(12);
        out.put_u8(VERSION);
        out.put_u8(PURGE_CODE);
        out.put_u16_le(0);
        out.put_u32_le(self.partition);
        out.put_u32_le(self.partitions);
        out.freeze()
    }

    /// The purge an entry is, if it is one.
    pub(crate) fn decode(payload: &[u8]) -> Option<Purge> {
        if payload.len() != 12 || payload[0] != VERSION || payload[1] != PURGE_CODE {
            return None;
        }
        let word = |at: usize| u32::from_le_bytes([payload[at], payload[at + 1], payload[at + 2], payload[at + 3]]);
        Some(Purge {
            partition: word(4),
            partitions: word(8),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_is_told_apart_from_a_batch() {
        let purge = Purge {
            partition: 5,
            partitions: 16,
        };
        let bytes = purge.encode();
        assert_eq!(Purge::decode(&bytes), Some(purge));
        assert!(
            WalBatch::decode(&bytes).is_err(),
            "a batch reader must not take it for data"
        );
        let batch = WalBatch {
            signal: Signal::Logs,
            batch_id: None,
            otlp: Bytes::from_static(b"\x0a\x00\x0a\x00\x0a\x00\x0a\x00"),
        };
        assert_eq!(Purge::decode(&batch.encode()), None);
    }

    #[test]
    fn round_trips_with_and_without_batch_id() {
        for batch_id in [None, Some("retry-42".to_string())] {
            let batch = WalBatch {
                signal: Signal::Traces,
                batch_id,
                otlp: Bytes::from_static(b"\x0a\x00"),
            };
            assert_eq!(WalBatch::decode(&batch.encode()), Ok(batch));
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(WalBatch::decode(&Bytes::from_static(b"\x01")).is_err());
        assert!(WalBatch::decode(&Bytes::from_static(b"\x01\x09\x00\x00")).is_err());
        assert!(WalBatch::decode(&Bytes::from_static(b"\x01\x01\xff\x00ab")).is_err());
    }
}
