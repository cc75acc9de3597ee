//! Rings of `f32` in saved state as base64 of their little-endian bytes: a 1,024-point ring
//! is 5.5 KB of text instead of about 10 KB of decimals, and encoding it is a copy, not a
//! float formatting per value. Exact: every bit of every value comes back.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

fn encode<'a>(values: impl ExactSizeIterator<Item = &'a f32>) -> String {
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    STANDARD.encode(bytes)
}

fn decode<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    let bytes = STANDARD.decode(text.as_bytes()).map_err(D::Error::custom)?;
    if bytes.len() % 4 != 0 {
        return Err(D::Error::custom(format!(
            "{} bytes is not a whole number of f32",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// For `VecDeque<f32>` fields.
pub(crate) mod deque {
    use std::collections::VecDeque;

    use super::*;

    pub(crate) fn serialize<S: Serializer>(values: &VecDeque<f32>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(values.iter()))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VecDeque<f32>, D::Error> {
        decode(d).map(VecDeque::from)
    }
}

/// For `Vec<f32>` fields.
pub(crate) mod vec {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(values: &[f32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(values.iter()))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        decode(d)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rings {
        #[serde(with = "super::deque")]
        ring: VecDeque<f32>,
        #[serde(with = "super::vec")]
        profile: Vec<f32>,
    }

    #[test]
    fn round_trips_every_bit_and_rejects_a_torn_value() {
        let rings = Rings {
            ring: VecDeque::from(vec![0.1, -3.5e-30, f32::MAX, 42.0]),
            profile: vec![],
        };
        let json = serde_json::to_string(&rings).expect("serialise");
        assert!(json.len() < 60, "{json}");
        let back: Rings = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, rings);
        let torn = r#"{"ring":"AAAA","profile":"AAAAAAA="}"#;
        let err = serde_json::from_str::<Rings>(torn).expect_err("5 bytes");
        assert!(err.to_string().contains("whole number of f32"), "{err}");
    }
}
