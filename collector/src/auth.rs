//! Bearer-token checks shared by the OTLP receivers and the API.

use sha2::{Digest, Sha256};

use crate::config::{Secret, UserConfig, UserRole};

/// Who a request acts for, as the API's token check found it.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    /// "api" for the API token (or no token configured), "responder" for the shared
    /// responder token, the owner's name for a personal token.
    pub name: String,
    pub role: UserRole,
    /// A personal token: the name is authoritative. A shared token cannot tell people apart,
    /// so a name given in the request (`"by"`, `createdBy`) is taken instead.
    pub personal: bool,
}

impl Identity {
    pub(crate) fn shared(name: &str, role: UserRole) -> Identity {
        Identity {
            name: name.to_string(),
            role,
            personal: false,
        }
    }

    /// Who an action is recorded under: a personal token's owner, whatever the request
    /// claims; for a shared token the name the request gives, or the token's own.
    pub(crate) fn actor(&self, claimed: Option<&str>) -> String {
        match claimed.map(str::trim).filter(|c| !c.is_empty()) {
            Some(c) if !self.personal => c.to_string(),
            _ => self.name.clone(),
        }
    }
}

/// Personal tokens, kept as their SHA-256.
#[derive(Clone, Default)]
pub(crate) struct Users {
    users: Vec<([u8; 32], String, UserRole)>,
}

impl Users {
    /// From validated configuration (hashes are 64 hex digits).
    pub(crate) fn new(users: &[UserConfig]) -> Users {
        Users {
            users: users
                .iter()
                .filter_map(|u| {
                    let bytes = hex::decode(u.token_sha256.to_ascii_lowercase()).ok()?;
                    Some((bytes.try_into().ok()?, u.name.trim().to_string(), u.role))
                })
                .collect(),
        }
    }

    /// The owner of `token`, if it is a personal token.
    pub(crate) fn by_token(&self, token: &str) -> Option<Identity> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every entry compared, so timing says nothing about which one matched.
        let mut found = None;
        for (h, name, role) in &self.users {
            if constant_time_eq(h, &hash) {
                found = Some(Identity {
                    name: name.clone(),
                    role: *role,
                    personal: true,
                });
            }
        }
        found
    }

    /// The owner of the bearer token in an `authorization` header.
    pub(crate) fn by_header(&self, header: Option<&[u8]>) -> Option<Identity> {
        let token = std::str::from_utf8(header?).ok()?.strip_prefix("Bearer ")?;
        self.by_token(token)
    }
}

/// Accepts `authorization: Bearer <token>` when a token is configured, anything
/// when none is (loopback-only deployments; see `Config::validate`).
#[derive(Clone, Default)]
pub(crate) struct TokenCheck {
    expected: Option<Vec<u8>>,
}

impl TokenCheck {
    pub(crate) fn new(token: Option<&Secret>) -> TokenCheck {
        TokenCheck {
            expected: token.map(|t| format!("Bearer {}", t.expose()).into_bytes()),
        }
    }

    pub(crate) fn is_configured(&self) -> bool {
        self.expected.is_some()
    }

    /// `header` is the raw `authorization` value, if any.
    pub(crate) fn check(&self, header: Option<&[u8]>) -> bool {
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
    fn personal_tokens_are_found_by_their_hash_and_name_their_owner() {
        let hash = |t: &str| hex::encode(Sha256::digest(t.as_bytes()));
        let users = Users::new(&[
            UserConfig {
                name: "ana".into(),
                role: UserRole::Responder,
                token_sha256: hash("ana-token-0123456789"),
            },
            UserConfig {
                name: "bo".into(),
                role: UserRole::Viewer,
                token_sha256: hash("bo-token-0123456789").to_ascii_uppercase(),
            },
        ]);
        let ana = users.by_header(Some(b"Bearer ana-token-0123456789")).expect("ana");
        assert_eq!(
            (ana.name.as_str(), ana.role, ana.personal),
            ("ana", UserRole::Responder, true)
        );
        assert_eq!(
            users.by_token("bo-token-0123456789").map(|i| i.role),
            Some(UserRole::Viewer)
        );
        assert!(users.by_token("ana-token-012345678").is_none());
        assert!(
            users.by_header(Some(b"ana-token-0123456789")).is_none(),
            "Bearer is required"
        );
        // A personal token's owner is who acts, whatever the request says.
        assert_eq!(ana.actor(Some("mallory")), "ana");
        let shared = Identity::shared("responder", UserRole::Responder);
        assert_eq!(shared.actor(Some("dee")), "dee");
        assert_eq!(shared.actor(Some("  ")), "responder");
    }

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
