//! Bearer-token checks shared by the OTLP receivers and the API.

use crate::config::Secret;

/// Accepts `authorization: Bearer <token>` when a token is configured, anything
/// when none is (loopback-only deployments; see `Config::validate`).
#[derive(Clone, Default)]
pub struct TokenCheck {
    expected: Option<Vec<u8>>,
}

impl TokenCheck {
    pub fn new(token: Option<&Secret>) -> TokenCheck {
        TokenCheck {
            expected: token.map(|t| format!("Bearer {}", t.expose()).into_bytes()),
        }
    }

    pub fn is_configured(&self) -> bool {
        self.expected.is_some()
    }

    /// `header` is the raw `authorization` value, if any.
    pub fn check(&self, header: Option<&[u8]>) -> bool {
        match (&self.expected, header) {
            (None, _) => true,
            (Some(expected), Some(given)) => constant_time_eq(expected, given),
            (Some(_), None) => false,
        }
    }
}

/// Compares without an early exit, so response timing does not reveal how much of a
/// guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_must_match_exactly() {
        let check = TokenCheck::new(Some(&Secret::new("s3cret-s3cret-s3cret")));
        assert!(check.check(Some(b"Bearer s3cret-s3cret-s3cret")));
        assert!(!check.check(Some(b"Bearer s3cret-s3cret-s3cre")));
        assert!(!check.check(Some(b"Bearer s3cret-s3cret-s3crett")));
        assert!(!check.check(Some(b"s3cret-s3cret-s3cret")));
        assert!(!check.check(None));
        assert!(TokenCheck::new(None).check(None));
    }
}
