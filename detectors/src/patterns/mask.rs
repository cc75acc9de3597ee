//! Token classification: which tokens of a log line are variables (numbers, hex ids,
//! IPs, UUIDs, paths, URLs, durations, dates) and which are the template's words.
//!
//! Hand-written scanners instead of regexes: the miner sees every log line, and one
//! pass over each token's bytes is all this needs.

use std::borrow::Cow;

/// The wildcard that stands for a variable in templates.
pub const WILDCARD: &str = "<*>";

/// Whether a token is a variable. A token with any digit in it is one (ids, counts,
/// sizes, times, addresses, versions of things): across loghub-like corpora the
/// constant words of templates almost never carry digits, while their parameters
/// almost always do. URLs and absolute paths are variables too.
pub fn is_variable(token: &str) -> bool {
    let bytes = token.as_bytes();
    if bytes.iter().any(u8::is_ascii_digit) {
        return !is_source_location(token);
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

/// Source file extensions a logger's call site names (`Foo.java:42`, `handler.go:88`).
const SOURCE_EXTENSIONS: [&str; 22] = [
    "java", "kt", "scala", "groovy", "go", "py", "rb", "c", "cc", "cpp", "cxx", "h", "hpp", "rs", "js", "ts", "cs",
    "php", "swift", "m", "ex", "erl",
];

/// Whether a token names the line of code that wrote the log line: `Foo.java:42`,
/// `[ib_sm_sweep.c:1455]:`, `pkg/handler.go:88`, a stack frame's `(Foo.java:42)`, or
/// logback's `%C{1}#%L` as `t.s.TravelServiceImpl#366`. Its digits are not a variable:
/// each call site is its own log statement, so two lines that differ only there are two
/// events (loghub's Thunderbird templates keep `[ib_sm_sweep.c:1455]` as written) — and a
/// line that stops being written while its neighbours go on is what a failing method
/// looks like from outside.
fn is_source_location(token: &str) -> bool {
    let core =
        token.trim_matches(|c: char| matches!(c, '[' | ']' | '(' | ')' | '{' | '}' | '<' | '>' | ':' | ',' | ';'));
    let Some((site, line)) = core.rsplit_once([':', '#']) else {
        return false;
    };
    // The line, and perhaps a column after it (`main.go:42:7`).
    let (site, line) = match site.rsplit_once(':') {
        Some((file, first)) if core.as_bytes()[site.len()] == b':' && is_number(first) => (file, first),
        _ => (site, line),
    };
    if !is_number(line) || site.is_empty() {
        return false;
    }
    if core.as_bytes()[site.len()] == b'#' {
        // A class: dotted, its last part a capitalised identifier.
        let parts: Vec<&str> = site.split('.').collect();
        let ident = |p: &str| {
            let mut b = p.bytes();
            b.next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b'$')
                && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'$')
        };
        return parts.len() >= 2
            && parts.iter().all(|p| ident(p))
            && parts.last().is_some_and(|p| p.as_bytes()[0].is_ascii_uppercase());
    }
    let Some((file, ext)) = site.rsplit_once('.') else {
        return false;
    };
    let name = file.rsplit('/').next().unwrap_or(file);
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'$'))
        && SOURCE_EXTENSIONS.contains(&ext)
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.len() <= 6 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_windows_path(bytes: &[u8]) -> bool {
    let drive = bytes.len() >= 3 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' && bytes[2] == b'\\';
    let share = bytes.starts_with(b"\\\\");
    drive || share || bytes.iter().filter(|&&b| b == b'\\').count() >= 2
}

/// Day and month names (English, abbreviated or full, any case), AM/PM and the common
/// time-zone abbreviations: the words of a written date. They are variables only beside
/// another part of a date (see [`mask_dates`]): alone, "may" or "mar" can be a template's word.
pub(crate) fn is_calendar_word(token: &str) -> bool {
    let word = token
        .trim_start_matches(['[', '('])
        .trim_end_matches([',', '.', ']', ')'])
        .as_bytes();
    if word.is_empty() || word.len() > 9 || !word[0].is_ascii_alphabetic() {
        return false;
    }
    // Lower-cased on the stack: the miner asks this of every word of every line.
    let mut buf = [0u8; 9];
    for (b, c) in buf.iter_mut().zip(word) {
        *b = c.to_ascii_lowercase();
    }
    matches!(
        &buf[..word.len()],
        b"mon"
            | b"tue"
            | b"tues"
            | b"wed"
            | b"thu"
            | b"thur"
            | b"thurs"
            | b"fri"
            | b"sat"
            | b"sun"
            | b"monday"
            | b"tuesday"
            | b"wednesday"
            | b"thursday"
            | b"friday"
            | b"saturday"
            | b"sunday"
            | b"jan"
            | b"feb"
            | b"mar"
            | b"apr"
            | b"may"
            | b"jun"
            | b"jul"
            | b"aug"
            | b"sep"
            | b"sept"
            | b"oct"
            | b"nov"
            | b"dec"
            | b"january"
            | b"february"
            | b"march"
            | b"april"
            | b"june"
            | b"july"
            | b"august"
            | b"september"
            | b"october"
            | b"november"
            | b"december"
            | b"am"
            | b"pm"
            | b"utc"
            | b"gmt"
            | b"z"
    )
}

/// Masks the words of written dates: a day or month name next to a variable (a day of the
/// month, a time, a year) or next to another such word that is, so `Tue Mar  5 14:02:11 2024`
/// becomes five wildcards wherever it stands. Without this a ctime or syslog timestamp puts
/// the day and month names into the template, and every day of the week becomes its own
/// pattern. `is_wildcard(i)` says whether token `i` is already a variable.
pub(crate) fn mask_dates(raw: &[&str], is_wildcard: impl Fn(usize) -> bool) -> Vec<bool> {
    let mut masked: Vec<bool> = (0..raw.len()).map(&is_wildcard).collect();
    let calendar: Vec<bool> = raw.iter().map(|t| is_calendar_word(t)).collect();
    // Forward then backward, so a run of date words is masked from either end.
    for i in 1..raw.len() {
        if calendar[i] && !masked[i] && masked[i - 1] && (calendar[i - 1] || is_wildcard(i - 1)) {
            masked[i] = true;
        }
    }
    for i in (0..raw.len().saturating_sub(1)).rev() {
        if calendar[i] && !masked[i] && masked[i + 1] && (calendar[i + 1] || is_wildcard(i + 1)) {
            masked[i] = true;
        }
    }
    masked
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
    (is_plain_key(key) && is_variable(rest)).then_some(at + 1)
}

/// A key's name: letters, `_`, `-` and `.` (`status`, `http.method`, `retry-after`).
fn is_plain_key(word: &str) -> bool {
    word.bytes()
        .all(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'-' || b == b'.')
}

/// Punctuation that glues a value to the words around it without a space: a call's or an
/// index's brackets (`took(25)`, `slots[3]`, `<id>7</id>`), a field separator (`a|25|b`,
/// `x;y`) and quotes. Not `=` and `:` (keys, see [`constant_prefix`]), not `.`, `-`, `_`,
/// `/` or `\` (inside names, versions, hosts and paths), and not `,`: a list's length
/// varies, and each item would become a token of its own.
const GLUE: &[u8] = b"()[]{}<>|;\"'";

/// [`GLUE`] as a byte table: the miner asks this of every byte of every token.
const IS_GLUE: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < GLUE.len() {
        table[GLUE[i] as usize] = true;
        i += 1;
    }
    table
};

fn is_glue(b: u8) -> bool {
    IS_GLUE[b as usize]
}

/// The template of a token in which punctuation glues a value to the words around it:
/// `took(25)` → `took(<*>`, `len:|1893|time:|0.24` → `len:|<*>|time:|<*>`,
/// `[line=15]` → `[line=<*>]`. Without it the digit makes the whole token a variable, and
/// the word that names the value, the one that tells two events apart, is lost.
///
/// What is kept: the token's leading name, keys (`time:`, `line=<*>`) and call sites
/// (`Foo.java:42`). Everything else, from the first part not kept up to the next kept one,
/// is one wildcard: a value's own punctuation (`LOCAL(0),`, `(10.0.0.1,)`) varies with the
/// value and must not split the event.
/// `None` when the token has no digit or no gluing punctuation, or is a URL, a path or a
/// source location (those stay whole); the wildcard when nothing is kept.
pub(crate) fn glued_template(token: &str) -> Option<Cow<'static, str>> {
    let bytes = token.as_bytes();
    if !bytes.iter().any(|&b| is_glue(b)) || !bytes.iter().any(u8::is_ascii_digit) {
        return None;
    }
    if token.contains("://") || is_source_location(token) || bytes.first() == Some(&b'/') || is_windows_path(bytes) {
        return None;
    }
    // Most such tokens are a value in brackets (`123)`, `(uid=7)`: one wildcard); only a
    // token with something to keep pays for building its template.
    let kept = |segment: &str, leading: bool| -> Option<(usize, bool)> {
        if is_source_location(segment) {
            // A call site names its log statement: `bar(Foo.java:42)` stays whole.
            Some((segment.len(), false))
        } else if let Some(at) = constant_prefix(segment) {
            Some((at, true))
        } else if is_key(segment) || (leading && !is_variable(segment)) {
            Some((segment.len(), false))
        } else {
            None
        }
    };
    let mut leading = true;
    let mut any_kept = false;
    for (segment, _) in glued_parts(token) {
        if !segment.is_empty() {
            any_kept |= kept(segment, leading).is_some();
            leading = false;
        }
    }
    if !any_kept {
        return Some(Cow::Borrowed(WILDCARD));
    }
    let mut out = String::with_capacity(token.len());
    let mut in_value = false;
    let mut value_end = "";
    let mut leading = true;
    for (segment, glue) in glued_parts(token) {
        let keep = if segment.is_empty() {
            None
        } else {
            kept(segment, leading)
        };
        if keep.is_none() && !segment.is_empty() {
            in_value = true;
        }
        leading &= segment.is_empty();
        match keep {
            Some((len, valued)) => {
                if in_value {
                    // The value ends at the punctuation just before the key.
                    out.push_str(WILDCARD);
                    out.push_str(value_end);
                    in_value = false;
                }
                out.push_str(&segment[..len]);
                if valued {
                    out.push_str(WILDCARD);
                }
                out.push_str(glue);
            }
            None if !in_value => out.push_str(glue),
            None => value_end = glue,
        }
    }
    if in_value {
        out.push_str(WILDCARD);
    }
    Some(Cow::Owned(out))
}

/// The name a glued template leads with (`took(<*>` → `took`, `"GET(<*>` → `GET`): a word
/// of letters, after any opening quotes or brackets, that gluing punctuation follows. `None`
/// for a token without one (a key, `len:|<*>`, is not a name here: its value follows it on
/// every line anyway). Whether the glued part is a word or a value differs between lines of
/// one event, so such a token picks no bucket; its name does not differ, and two lines whose
/// names differ at one place are two events (see the miner's `best_in_except`).
pub(crate) fn glued_name(token: &str) -> Option<&str> {
    // One pass over the bytes, most tokens leaving at their first: the miner asks this of
    // every token of every line.
    let bytes = token.as_bytes();
    let start = bytes.iter().position(|&b| !is_glue(b))?;
    let len = bytes[start..].iter().position(|b| !b.is_ascii_alphabetic())?;
    let rest = &token[start + len..];
    // A bracketed word (`[LNKD]`, `(root)`) is a constant the similarity compares.
    (len > 0 && is_glue(rest.as_bytes()[0]) && rest.contains(WILDCARD)).then(|| &token[start..start + len])
}

/// A token's parts between gluing punctuation, each with the punctuation after it (empty
/// for the last).
fn glued_parts(token: &str) -> impl Iterator<Item = (&str, &str)> {
    token
        .split_inclusive(|c: char| c.is_ascii() && is_glue(c as u8))
        .map(|part| match part.as_bytes().last() {
            Some(&b) if is_glue(b) => part.split_at(part.len() - 1),
            _ => (part, ""),
        })
}

/// A key written before its value: a plain word ending in `:` or `=` (`time:`, `len=`).
fn is_key(segment: &str) -> bool {
    let Some(word) = segment.strip_suffix([':', '=']) else {
        return false;
    };
    !word.is_empty() && is_plain_key(word)
}

/// A `key=value` field (`table=orders`, `size=<*>`): its value is a word on one line and
/// another word on the next, so the token is not a word of the template's own. Not the
/// message of a structured line (`msg=started`, `message="disk`): like the first words of a
/// plain line, it names the event, and in logfmt every other field is shared by all events.
pub(crate) fn is_assignment(token: &str) -> bool {
    token
        .split_once('=')
        .is_some_and(|(key, value)| !key.is_empty() && !value.is_empty() && is_plain_key(key) && !is_message_key(key))
}

/// Whether a line is a structured one with a message field (`msg=…`, `message="…`): its
/// other `key=value` fields (`ts=…`, `level=info`, `caller=…`) are then its envelope, which
/// the miner's similarity leaves out. A logger writes the same envelope on every line, so
/// two lines sharing it says nothing of whether they are one event; counted (with the
/// message key glued to a value, `msg="<*>`), it lifts two events whose messages share four
/// of six constants to seven of nine, over the bar. The message is the event, as a plain
/// line is. Any token with a message key (`msg=`, `message=`, `event=`, any case) makes the
/// line structured, and then every other `key=value` token is left out, those inside the
/// quoted message too.
pub(crate) fn has_message_field(tokens: &[Cow<'_, str>]) -> bool {
    tokens.iter().any(|t| message_value(t).is_some())
}

/// The value of a structured line's message field (`msg=started` → `started`,
/// `msg="<*>` → `<*>`), without its opening quote; `None` for any other token. The key is
/// on every line of the logger, so a message field whose first word is a value is no
/// constant of the event, as that value alone on a plain line is not.
pub(crate) fn message_value(token: &str) -> Option<&str> {
    let (key, value) = token.split_once('=')?;
    let value = value.strip_prefix('"').unwrap_or(value);
    (!value.is_empty() && is_message_key(key)).then_some(value)
}

/// The keys `key=value` loggers write the message under: `msg` (Go's `slog`, logrus, go-kit,
/// Prometheus and Loki), `message` (other logfmt formatters) and `event` (structlog's
/// key-value renderer). JSON lines (`"message":"…"`) are not split on `=` and do not get here.
fn is_message_key(key: &str) -> bool {
    ["msg", "message", "event"].iter().any(|k| key.eq_ignore_ascii_case(k))
}

/// Whether a token picks its line's bucket. A variable and a `key=value` field do not:
/// their values differ from line to line of one event. Nor does a token with a value glued
/// on (`took(<*>`, `LOCAL(<*>`) or a word in brackets after a name (`chdir(pwd)`): whether
/// the glued part is a value or a word differs between lines of one event (`chdir(pwd)`
/// beside `chdir(/p/t800)`), and a line never looks in another bucket than its own; the
/// similarity compares such tokens instead. A bracketed word (`[INFO]`), a call site
/// (`[sweep.c:1455]:`), a contraction (`Couldn't`) or a generic type (`List<String>`) picks.
pub(crate) fn picks_bucket(token: &str) -> bool {
    // The wildcard itself, or a value glued on (`took(<*>`).
    if token.contains(WILDCARD) || is_assignment(token) {
        return false;
    }
    // A name, then an opening bracket or a field separator, then a word: `chdir(pwd)`.
    let bytes = token.as_bytes();
    match bytes.iter().skip(1).position(|b| b"([{|;".contains(b)) {
        Some(p) => !bytes[p + 2..].iter().any(u8::is_ascii_alphanumeric),
        None => true,
    }
}

/// The values a raw token holds at its template token's wildcards: `key=<*>` gives what
/// follows the key, `len:|<*>|time:|<*>` the two values between the literal parts. A token
/// that does not fit its template (the pattern generalised past it) is one value, whole.
pub(crate) fn values_in(template: &str, raw: &str) -> Vec<String> {
    let mut pieces = template.split(WILDCARD);
    let first = pieces.next().unwrap_or("");
    let Some(mut rest) = raw.strip_prefix(first) else {
        return vec![raw.to_string()];
    };
    let literals: Vec<&str> = pieces.collect();
    let mut values = Vec::with_capacity(literals.len());
    for (k, literal) in literals.iter().enumerate() {
        if k + 1 == literals.len() {
            values.push(rest.strip_suffix(literal).unwrap_or(rest).to_string());
        } else {
            match rest.find(literal).filter(|_| !literal.is_empty()) {
                Some(at) => {
                    values.push(rest[..at].to_string());
                    rest = &rest[at + literal.len()..];
                }
                None => return vec![raw.to_string()],
            }
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_glued_to_a_name_keeps_the_name() {
        for (token, template) in [
            ("took(25)", "took(<*>"),
            ("chdir(/p/gb2/t800)", "chdir(<*>"),
            ("len:|1893|time:|0.24", "len:|<*>|time:|<*>"),
            ("[line=15]", "[line=<*>]"),
            ("\"GET(/v2/54fa/servers)", "\"GET(<*>"),
            // The value's own punctuation is part of the value.
            ("to(LOCAL(0),)", "to(<*>"),
            ("to(10.100.20.250,)", "to(<*>"),
            // A call site stays whole, as it does alone.
            ("bar(Foo.java:42)", "bar(Foo.java:42)"),
        ] {
            assert_eq!(glued_template(token).as_deref(), Some(template), "{token}");
        }
        // Nothing but values and punctuation: one wildcard, as before.
        for token in ["(25)", "[req-00af31]", "(10.0.0.1:80)", "\"HTTP/1.1\""] {
            assert_eq!(glued_template(token).as_deref(), Some(WILDCARD), "{token}");
        }
        // Not glued: no digit, no gluing punctuation, or a URL, path or call site kept whole.
        for token in [
            "chdir(pwd)",
            "[INFO]",
            "size=25",
            "http://x/a(1)",
            "/var/log(1)",
            "[sweep.c:1455]:",
            "C:\\x(1)",
        ] {
            assert_eq!(glued_template(token), None, "{token}");
        }
    }

    #[test]
    fn a_raw_token_gives_the_values_at_its_template_s_wildcards() {
        assert_eq!(values_in("status=<*>", "status=500"), ["500"]);
        assert_eq!(values_in("len:|<*>|time:|<*>", "len:|7|time:|0.5"), ["7", "0.5"]);
        assert_eq!(values_in("[line=<*>]", "[line=15]"), ["15"]);
        assert_eq!(
            values_in("took(<*>", "slept(3)"),
            ["slept(3)"],
            "not its template: whole"
        );
    }

    #[test]
    fn a_glued_template_names_what_it_leads_with() {
        assert_eq!(glued_name("took(<*>"), Some("took"));
        assert_eq!(glued_name("\"GET(<*>"), Some("GET"));
        assert_eq!(glued_name("[line=<*>]"), None, "a key, not a name");
        assert_eq!(glued_name("len:|<*>|time:|<*>"), None);
        assert_eq!(glued_name("[LNKD]"), None, "a bracketed word is a constant");
        assert_eq!(glued_name("<*>"), None);
    }

    #[test]
    fn what_is_glued_to_a_name_picks_no_bucket() {
        for token in [
            "[INFO]",
            "[sweep.c:1455]:",
            "failed:",
            "Couldn't",
            "List<String>",
            "(main)",
            "msg=started",
            "message=\"disk",
        ] {
            assert!(picks_bucket(token), "{token}");
        }
        // A word or a value glued on: the lines of one event must share a bucket.
        for token in [
            WILDCARD,
            "chdir(<*>",
            "chdir(pwd)",
            "[<*>]",
            "table=orders",
            "size=<*>",
            "msg=<*>",
            "a|b",
        ] {
            assert!(!picks_bucket(token), "{token}");
        }
    }

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
    fn a_call_site_is_part_of_the_template_and_an_address_is_not() {
        for site in [
            "[ib_sm_sweep.c:1455]:",
            "(TravelServiceImpl.java:372)",
            "pkg/server/handler.go:88",
            "main.go:42:7",
            "t.s.TravelServiceImpl#366",
            "v.s.i.VerifyCodeServiceImpl#129",
            "worker.py:17",
        ] {
            assert!(!is_variable(site), "{site}");
        }
        for variable in [
            "host.example.org:5070",
            "10.251.73.220:50010",
            "app.log:123",
            "job#1234",
            "Worker#3",
            "12:01:01",
            "a.b.C#12345678",
            ".java:12",
        ] {
            assert!(is_variable(variable), "{variable}");
        }
    }

    #[test]
    fn written_dates_are_variables_and_lone_month_words_are_not() {
        let mask = |line: &str| {
            let raw: Vec<&str> = line.split_whitespace().collect();
            mask_dates(&raw, |i| is_variable(raw[i]))
        };
        assert_eq!(
            mask("Tue Mar 5 14:02:11 2024 user logged in"),
            [true, true, true, true, true, false, false, false]
        );
        assert_eq!(mask("at 10:02:03 PM UTC done"), [false, true, true, true, false]);
        assert_eq!(mask("Sunday, December 4, 2005 ok"), [true, true, true, true, false]);
        assert_eq!(
            mask("[Tue Mar 05 14:02:11.123 2024] [error]"),
            [true, true, true, true, true, false]
        );
        // Without a number beside them they stay words.
        assert_eq!(mask("may not start"), [false, false, false]);
        assert_eq!(mask("sun is up"), [false, false, false]);
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
