//! HMAC-SHA256 signatures: on every outgoing request (so a receiver can prove it came from
//! us, as PagerDuty's v3 webhooks do) and on one-click action links in notifications (so a
//! responder can acknowledge from a phone without a token: single purpose, expiring, and
//! single use — the nonce is recorded when used).

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Header carrying `v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub const SIGNATURE_HEADER: &str = "x-vigil-signature";
/// Header carrying the unix-seconds timestamp that was signed.
pub const TIMESTAMP_HEADER: &str = "x-vigil-timestamp";

fn mac(secret: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut m = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// Whether `sig` is the HMAC of `parts` under `secret`, compared in constant time.
fn verify_mac(secret: &[u8], parts: &[&[u8]], sig: &[u8]) -> bool {
    let Ok(mut m) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    for p in parts {
        m.update(p);
    }
    m.verify_slice(sig).is_ok()
}

/// The signature header value for a request body sent at `timestamp_secs`.
pub fn sign_body(secret: &[u8], timestamp_secs: i64, body: &[u8]) -> String {
    format!(
        "v1={}",
        hex::encode(mac(secret, &[timestamp_secs.to_string().as_bytes(), b".", body]))
    )
}

/// The token in a schedule's calendar feed URL: calendar apps fetch feeds without
/// headers, so the URL carries a signature of the feed it opens (and only that feed).
pub fn feed_token(secret: &[u8], schedule: &str) -> String {
    hex::encode(mac(secret, &[b"ical-feed\0", schedule.as_bytes()]))
}

/// Whether `token` opens the feed of `schedule` (constant time).
pub fn verify_feed_token(secret: &[u8], schedule: &str, token: &str) -> bool {
    lower_hex(token).is_some_and(|sig| verify_mac(secret, &[b"ical-feed\0", schedule.as_bytes()], &sig))
}

/// What a receiver does: recompute and compare in constant time; reject old timestamps.
pub fn verify_body(
    secret: &[u8],
    timestamp_secs: i64,
    body: &[u8],
    header: &str,
    now_secs: i64,
    tolerance_secs: i64,
) -> bool {
    if (now_secs - timestamp_secs).abs() > tolerance_secs {
        return false;
    }
    let Some(sig) = header.strip_prefix("v1=").and_then(lower_hex) else {
        return false;
    };
    verify_mac(secret, &[timestamp_secs.to_string().as_bytes(), b".", body], &sig)
}

/// Decodes a signature written as Vigil writes it: lower-case hex. Another spelling of the
/// same bytes (upper case) is a different token, not the one that was issued.
fn lower_hex(text: &str) -> Option<Vec<u8>> {
    if !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    hex::decode(text).ok()
}

/// What a signed link may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkAction {
    /// Acknowledge the alert.
    Ack,
    /// Resolve the alert.
    Resolve,
}

impl LinkAction {
    /// The action as the link and the audit log spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkAction::Ack => "ack",
            LinkAction::Resolve => "resolve",
        }
    }

    fn parse(s: &str) -> Option<LinkAction> {
        match s {
            "ack" => Some(LinkAction::Ack),
            "resolve" => Some(LinkAction::Resolve),
            _ => None,
        }
    }
}

/// What a signed one-click link carries: one action on one alert, until it expires, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionLink {
    /// The id of the alert it acts on (its fingerprint).
    pub alert_id: String,
    /// What it does.
    pub action: LinkAction,
    /// When it stops working, unix ms.
    pub expires_ms: i64,
    /// Single-use token ([`nonce_for`]: the same on every retry of a notification); the
    /// caller refuses a link whose nonce was used.
    pub nonce: String,
}

/// Why a signed link or feed token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not a token this code makes.
    #[error("malformed link token")]
    Malformed,
    /// Tampered with, or signed with another secret.
    #[error("link signature does not match (tampered or signed with another secret)")]
    BadSignature,
    /// Past its expiry.
    #[error("link expired")]
    Expired,
    /// Already used: the caller's verdict when its record of used nonces has this one
    /// ([`verify_link`] does not know them).
    #[error("link was already used")]
    Replayed,
}

/// A unique nonce for one link: derived from what the link is for, so the same notification
/// always carries the same link (a retried delivery does not mint new ones).
pub fn nonce_for(notification_id: &str, alert_id: &str, action: LinkAction) -> String {
    let digest = Sha256::digest(format!("{notification_id}|{alert_id}|{}", action.as_str()).as_bytes());
    hex::encode(&digest[..12])
}

/// `<alert id>.<action>.<expires ms>.<nonce>.<hex signature>` — URL-safe as is.
pub fn sign_link(secret: &[u8], link: &ActionLink) -> String {
    let payload = format!(
        "{}.{}.{}.{}",
        link.alert_id,
        link.action.as_str(),
        link.expires_ms,
        link.nonce
    );
    format!("{payload}.{}", hex::encode(mac(secret, &[payload.as_bytes()])))
}

/// Checks signature and expiry (replay is the caller's check, against used nonces).
pub fn verify_link(secret: &[u8], token: &str, now_ms: i64) -> Result<ActionLink, LinkError> {
    let (payload, sig) = token.rsplit_once('.').ok_or(LinkError::Malformed)?;
    let sig = lower_hex(sig).ok_or(LinkError::Malformed)?;
    if !verify_mac(secret, &[payload.as_bytes()], &sig) {
        return Err(LinkError::BadSignature);
    }
    let mut parts = payload.split('.');
    let (Some(alert_id), Some(action), Some(expires), Some(nonce), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(LinkError::Malformed);
    };
    let action = LinkAction::parse(action).ok_or(LinkError::Malformed)?;
    let expires_ms: i64 = expires.parse().map_err(|_| LinkError::Malformed)?;
    if now_ms >= expires_ms {
        return Err(LinkError::Expired);
    }
    Ok(ActionLink {
        alert_id: alert_id.to_string(),
        action,
        expires_ms,
        nonce: nonce.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_signatures_verify_and_reject_tampering_and_old_timestamps() {
        let sig = sign_body(b"s3cret", 1_700_000_000, b"{\"a\":1}");
        assert!(sig.starts_with("v1=") && sig.len() == 3 + 64);
        assert!(verify_body(
            b"s3cret",
            1_700_000_000,
            b"{\"a\":1}",
            &sig,
            1_700_000_010,
            300
        ));
        assert!(!verify_body(
            b"s3cret",
            1_700_000_000,
            b"{\"a\":2}",
            &sig,
            1_700_000_010,
            300
        ));
        assert!(!verify_body(
            b"other",
            1_700_000_000,
            b"{\"a\":1}",
            &sig,
            1_700_000_010,
            300
        ));
        assert!(!verify_body(
            b"s3cret",
            1_700_000_000,
            b"{\"a\":1}",
            &sig,
            1_700_001_000,
            300
        ));
    }

    /// An acknowledge link valid until 2 s after the epoch.
    fn ack_link() -> ActionLink {
        ActionLink {
            alert_id: "00ff00ff00ff00ff".into(),
            action: LinkAction::Ack,
            expires_ms: 2_000,
            nonce: nonce_for("n1", "00ff00ff00ff00ff", LinkAction::Ack),
        }
    }

    #[test]
    fn links_are_single_purpose_expiring_and_tamper_evident() {
        let link = ack_link();
        let token = sign_link(b"k", &link);
        assert_eq!(verify_link(b"k", &token, 1_000), Ok(link.clone()));
        assert_eq!(verify_link(b"k", &token, 2_000), Err(LinkError::Expired));
        let tampered = token.replacen(".ack.", ".resolve.", 1);
        assert_eq!(verify_link(b"k", &tampered, 1_000), Err(LinkError::BadSignature));
        assert_eq!(verify_link(b"k2", &token, 1_000), Err(LinkError::BadSignature));
        assert_eq!(verify_link(b"k", "nonsense", 1_000), Err(LinkError::Malformed));
        assert_eq!(
            nonce_for("n1", "a", LinkAction::Ack),
            nonce_for("n1", "a", LinkAction::Ack)
        );
        assert_ne!(
            nonce_for("n1", "a", LinkAction::Ack),
            nonce_for("n2", "a", LinkAction::Ack)
        );
    }

    #[test]
    fn a_token_signed_for_one_purpose_opens_nothing_else() {
        // What is signed keeps the purposes apart (feeds sign "ical-feed\0<schedule>", links
        // their four fields), so no error of its own is needed for a token used elsewhere.
        let feed = feed_token(b"k", "primary");
        assert!(verify_feed_token(b"k", "primary", &feed));
        assert_eq!(verify_link(b"k", &feed, 1_000), Err(LinkError::Malformed));
        let link = sign_link(b"k", &ack_link());
        let (_, link_sig) = link.rsplit_once('.').expect("signed");
        assert!(!verify_feed_token(b"k", "primary", link_sig));
        assert!(
            !verify_feed_token(b"k", "secondary", &feed),
            "one feed's token opens only it"
        );
    }

    #[test]
    fn an_upper_cased_signature_is_not_the_one_issued() {
        // Regression: hex decoding is case-blind, so an upper-cased signature was accepted.
        let link = ack_link();
        let token = sign_link(b"k", &link);
        let (payload, sig) = token.rsplit_once('.').expect("signed");
        let upper = format!("{payload}.{}", sig.to_ascii_uppercase());
        assert_ne!(upper, token, "the signature has letters");
        assert_eq!(verify_link(b"k", &upper, 1_000), Err(LinkError::Malformed));
        let body_sig = sign_body(b"s3cret", 1_700_000_000, b"{}");
        let shouted = format!("v1={}", body_sig["v1=".len()..].to_ascii_uppercase());
        assert!(!verify_body(
            b"s3cret",
            1_700_000_000,
            b"{}",
            &shouted,
            1_700_000_000,
            300
        ));
    }
}
