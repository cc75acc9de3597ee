//! Token classification: which tokens of a log line are variables (numbers, hex ids,
//! IPs, UUIDs, paths, URLs, durations, dates) and which are the template's words.
//!
//! Hand-written scanners instead of regexes: the miner sees every log line, and one
//! pass over each token's bytes is all this needs.

/// The wildcard that stands for a variable in templates.
pub const WILDCARD: &str = "<*>";

/// Whether a token is a variable. A token with any digit in it is one (ids, counts,
/// sizes, times, addresses, versions of things): across loghub-like corpora the
/// constant words of templates almost never carry digits, while their parameters
/// almost always do. URLs and absolute paths are variables too.
pub fn is_variable(token: &str) -> bool {
    let bytes = token.as_bytes();
    if bytes.iter().any(u8::is_ascii_digit) {
        return true;
    }
    if token.contains("://") {
        return true;
    }
    // An absolute path with at least two components: /var/log/app.log
    if bytes.first() == Some(&b'/') && bytes.iter().skip(1).any(|&b| b == b'/') {
        return true;
    }
    // The same on Windows: a drive (C:\Windows\Temp), a share (\\host\share), or any
    // token with two backslash-separated components (Microsoft\Windows\Update).
    if is_windows_path(bytes) {
        return true;
    }
    // Long hex-only tokens without digits are rare but exist (e.g. "deadbeefcafe").
    bytes.len() >= 12 && bytes.iter().all(u8::is_ascii_hexdigit)
}

fn is_windows_path(bytes: &[u8]) -> bool {
    let drive = bytes.len() >= 3 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' && bytes[2] == b'\\';
    let share = bytes.starts_with(b"\\\\");
    drive || share || bytes.iter().filter(|&&b| b == b'\\').count() >= 2
}

/// Splits `key=value` / `key:value` tokens so the key stays part of the template:
/// returns the length of the constant prefix (including the separator) when the
/// part before the first `=` or `:` is a plain word and the rest is a variable.
pub(crate) fn constant_prefix(token: &str) -> Option<usize> {
    let at = token.find(['=', ':'])?;
    let (key, rest) = (&token[..at], &token[at + 1..]);
    if key.is_empty() || rest.is_empty() {
        return None;
    }
    let plain = key
        .bytes()
        .all(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'-' || b == b'.');
    (plain && is_variable(rest)).then_some(at + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_recognised() {
        for v in [
            "blk_-6952295868487656571",
            "10.251.73.220:50010",
            "0x7f3a",
            "550e8400-e29b-41d4-a716-446655440000",
            "12ms",
            "2026-11-23T10:02:10Z",
            "http://example.com/a",
            "/var/log/app.log",
            "deadbeefcafe",
            r"C:\Windows\Temp\setup.log",
            r"\\fileserver\share",
            r"Microsoft\Windows\Update",
            r"D:\",
        ] {
            assert!(is_variable(v), "{v}");
        }
        for c in [
            "PacketResponder",
            "terminating",
            "NameSystem.addStoredBlock:",
            "<*>",
            "ERROR",
            "/tmp",
            "cafe",
            r"domain\user",
        ] {
            assert!(!is_variable(c), "{c}");
        }
    }

    #[test]
    fn key_value_tokens_keep_their_key() {
        assert_eq!(constant_prefix("size=1234"), Some(5));
        assert_eq!(constant_prefix("user=john"), None);
        assert_eq!(constant_prefix("port:8080"), Some(5));
        assert_eq!(constant_prefix("10.0.0.1:80"), None);
        assert_eq!(constant_prefix("=5"), None);
    }
}
