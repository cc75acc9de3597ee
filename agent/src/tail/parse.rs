//! Turning a log line into an OTLP record: JSON and logfmt lines become attributes,
//! a severity is recognised in the common formats, a timestamp field is honoured.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

use crate::config::ParseMode;

/// What a line says about itself.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// The message, when the line had a message field; otherwise the whole line is the body.
    pub body: Option<String>,
    pub severity: Option<(i32, String)>,
    pub time_unix_nano: Option<u64>,
    pub attributes: Vec<KeyValue>,
}

const MESSAGE_KEYS: &[&str] = &["msg", "message", "log", "body"];
const LEVEL_KEYS: &[&str] = &["level", "lvl", "severity", "loglevel", "log.level", "levelname"];
const TIME_KEYS: &[&str] = &["time", "timestamp", "ts", "@timestamp", "t"];

pub fn parse(line: &str, mode: ParseMode) -> Parsed {
    let trimmed = line.trim_start();
    match mode {
        ParseMode::None => plain(line),
        ParseMode::Json => json(trimmed).unwrap_or_else(|| plain(line)),
        ParseMode::Logfmt => logfmt(trimmed).unwrap_or_else(|| plain(line)),
        ParseMode::Auto => {
            if trimmed.starts_with('{') {
                json(trimmed).unwrap_or_else(|| plain(line))
            } else {
                logfmt(trimmed).unwrap_or_else(|| plain(line))
            }
        }
    }
}

fn plain(line: &str) -> Parsed {
    Parsed {
        severity: severity_in_text(line),
        ..Parsed::default()
    }
}

fn json(line: &str) -> Option<Parsed> {
    let serde_json::Value::Object(map) = serde_json::from_str::<serde_json::Value>(line).ok()? else {
        return None;
    };
    let mut parsed = Parsed::default();
    for (key, value) in map {
        let lower = key.to_ascii_lowercase();
        if parsed.body.is_none() && MESSAGE_KEYS.contains(&lower.as_str()) && value.is_string() {
            parsed.body = value.as_str().map(str::to_string);
            continue;
        }
        if parsed.severity.is_none()
            && LEVEL_KEYS.contains(&lower.as_str())
            && let Some(s) = value
                .as_str()
                .and_then(severity_word)
                .or_else(|| value.as_i64().and_then(severity_number))
        {
            parsed.severity = Some(s);
            continue;
        }
        if parsed.time_unix_nano.is_none()
            && TIME_KEYS.contains(&lower.as_str())
            && let Some(t) = timestamp(&value)
        {
            parsed.time_unix_nano = Some(t);
            continue;
        }
        parsed.attributes.push(KeyValue {
            key,
            value: Some(json_value(value)),
            ..KeyValue::default()
        });
    }
    if parsed.severity.is_none()
        && let Some(body) = &parsed.body
    {
        parsed.severity = severity_in_text(body);
    }
    Some(parsed)
}

fn json_value(value: serde_json::Value) -> AnyValue {
    let v = match value {
        serde_json::Value::String(s) => Value::StringValue(s),
        serde_json::Value::Bool(b) => Value::BoolValue(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::IntValue(i),
            None => Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        // Nested values stay readable as their JSON text.
        other => Value::StringValue(other.to_string()),
    };
    AnyValue { value: Some(v) }
}

fn timestamp(value: &serde_json::Value) -> Option<u64> {
    match value {
        serde_json::Value::String(s) => rfc3339_nanos(s),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_u64() {
                // Seconds, milliseconds, microseconds or nanoseconds since the epoch.
                let ns = match i {
                    0 => return None,
                    i if i < 100_000_000_000 => i.checked_mul(1_000_000_000)?,
                    i if i < 100_000_000_000_000 => i.checked_mul(1_000_000)?,
                    i if i < 100_000_000_000_000_000 => i.checked_mul(1_000)?,
                    i => i,
                };
                return Some(ns);
            }
            let f = n.as_f64()?;
            // Seconds, milliseconds, microseconds or nanoseconds since the epoch.
            let ns = if f < 1e11 {
                f * 1e9
            } else if f < 1e14 {
                f * 1e6
            } else if f < 1e17 {
                f * 1e3
            } else {
                f
            };
            (ns > 0.0).then_some(ns as u64)
        }
        _ => None,
    }
}

/// `2026-11-23T10:02:10.123Z` / `+01:00`, or with a space instead of `T`.
fn rfc3339_nanos(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let mut value: i64 = frac[..digits.min(9)].parse().unwrap_or(0);
        for _ in digits.min(9)..9 {
            value *= 10;
        }
        nanos = value;
        rest = &frac[digits..];
    }
    let offset_secs = match rest {
        "" | "Z" | "z" => 0,
        r if r.len() == 6 && (r.starts_with('+') || r.starts_with('-')) => {
            let sign = if r.starts_with('-') { -1 } else { 1 };
            sign * (r[1..3].parse::<i64>().ok()? * 3600 + r[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_secs;
    u64::try_from(secs)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(nanos as u64)
}

/// `key=value key2="quoted value"`: at least two pairs, and the line must start with one.
fn logfmt(line: &str) -> Option<Parsed> {
    let mut pairs = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && bytes[i] != b' ' {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'=' || i == key_start {
            return None;
        }
        let key = &line[key_start..i];
        i += 1;
        let value = if i < bytes.len() && bytes[i] == b'"' {
            i += 1;
            let mut v = String::new();
            let mut closed = false;
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' if i + 1 < bytes.len() => {
                        v.push(bytes[i + 1] as char);
                        i += 2;
                    }
                    b'"' => {
                        closed = true;
                        i += 1;
                        break;
                    }
                    _ => {
                        let ch = line[i..].chars().next()?;
                        v.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            if !closed {
                return None;
            }
            v
        } else {
            let start = i;
            while i < bytes.len() && bytes[i] != b' ' {
                i += 1;
            }
            line[start..i].to_string()
        };
        pairs.push((key.to_string(), value));
    }
    if pairs.len() < 2 {
        return None;
    }
    let mut parsed = Parsed::default();
    for (key, value) in pairs {
        let lower = key.to_ascii_lowercase();
        if parsed.body.is_none() && MESSAGE_KEYS.contains(&lower.as_str()) {
            parsed.body = Some(value);
        } else if parsed.severity.is_none()
            && LEVEL_KEYS.contains(&lower.as_str())
            && let Some(s) = severity_word(&value)
        {
            parsed.severity = Some(s);
        } else if parsed.time_unix_nano.is_none()
            && TIME_KEYS.contains(&lower.as_str())
            && let Some(t) = rfc3339_nanos(&value)
        {
            parsed.time_unix_nano = Some(t);
        } else {
            parsed.attributes.push(KeyValue {
                key,
                value: Some(AnyValue {
                    value: Some(Value::StringValue(value)),
                }),
                ..KeyValue::default()
            });
        }
    }
    Some(parsed)
}

/// OTel severity number and text for a level word.
pub fn severity_word(word: &str) -> Option<(i32, String)> {
    let upper = word.trim().to_ascii_uppercase();
    let number = match upper.as_str() {
        "TRACE" | "TRC" => 1,
        "DEBUG" | "DBG" | "D" => 5,
        "INFO" | "INF" | "I" | "NOTICE" | "INFORMATION" => 9,
        "WARN" | "WARNING" | "WRN" | "W" => 13,
        "ERROR" | "ERR" | "E" | "SEVERE" => 17,
        "FATAL" | "CRITICAL" | "CRIT" | "PANIC" | "EMERG" | "ALERT" | "F" => 21,
        _ => return None,
    };
    Some((number, upper))
}

/// Syslog-style numeric levels (0 emergency … 7 debug) and bunyan/pino's (10 … 60).
fn severity_number(n: i64) -> Option<(i32, String)> {
    let word = match n {
        10 => "TRACE",
        20 | 7 => "DEBUG",
        30 | 6 | 5 => "INFO",
        40 | 4 => "WARN",
        50 | 3 => "ERROR",
        60 | 0..=2 => "FATAL",
        _ => return None,
    };
    severity_word(word)
}

/// A level word near the start of a plain line: `2026-… ERROR …`, `[warn] …`. Only
/// whole words in the first 80 bytes count, written in capitals or bracketed: "error"
/// inside a sentence is not a level.
pub fn severity_in_text(line: &str) -> Option<(i32, String)> {
    let bytes = line.as_bytes();
    let head = &bytes[..bytes.len().min(80)];
    let mut i = 0;
    while i < head.len() {
        if !head[i].is_ascii_alphabetic() {
            i += 1;
            continue;
        }
        let start = i;
        while i < head.len() && head[i].is_ascii_alphabetic() {
            i += 1;
        }
        let word = &head[start..i];
        if !(3..=11).contains(&word.len()) {
            continue;
        }
        let upper = word.iter().all(u8::is_ascii_uppercase);
        let before = start.checked_sub(1).map(|b| head[b]);
        let after = head.get(i).copied();
        let bracketed = matches!((before, after), (Some(b'['), Some(b']')) | (Some(b'<'), Some(b'>')));
        if (upper || bracketed)
            && let Ok(w) = std::str::from_utf8(word)
            && let Some(s) = severity_word(w)
        {
            return Some(s);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr<'a>(p: &'a Parsed, key: &str) -> Option<&'a Value> {
        p.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    #[test]
    fn json_lines_become_body_severity_time_and_attributes() {
        let p = parse(
            r#"{"ts":"2026-11-23T10:02:10.5Z","level":"warn","msg":"slow call","user":"ann","ms":1200,"ok":false,"ctx":{"a":1}}"#,
            ParseMode::Auto,
        );
        assert_eq!(p.body.as_deref(), Some("slow call"));
        assert_eq!(p.severity, Some((13, "WARN".into())));
        assert_eq!(p.time_unix_nano, Some(1_795_428_130_500_000_000));
        assert_eq!(attr(&p, "user"), Some(&Value::StringValue("ann".into())));
        assert_eq!(attr(&p, "ms"), Some(&Value::IntValue(1200)));
        assert_eq!(attr(&p, "ok"), Some(&Value::BoolValue(false)));
        assert_eq!(attr(&p, "ctx"), Some(&Value::StringValue(r#"{"a":1}"#.into())));
    }

    #[test]
    fn logfmt_lines_are_parsed_with_quotes() {
        let p = parse(
            r#"time=2026-11-23T10:02:10+01:00 level=error msg="db \"down\"" retries=3"#,
            ParseMode::Auto,
        );
        assert_eq!(p.body.as_deref(), Some(r#"db "down""#));
        assert_eq!(p.severity, Some((17, "ERROR".into())));
        assert_eq!(p.time_unix_nano, Some(1_795_424_530_000_000_000));
        assert_eq!(attr(&p, "retries"), Some(&Value::StringValue("3".into())));
    }

    #[test]
    fn plain_text_keeps_the_line_and_finds_capital_or_bracketed_levels() {
        let p = parse("2026-11-23 10:02:10 ERROR payment timed out", ParseMode::Auto);
        assert_eq!(p.body, None);
        assert_eq!(p.severity, Some((17, "ERROR".into())));
        assert_eq!(
            parse("[warn] disk almost full", ParseMode::Auto).severity,
            Some((13, "WARN".into()))
        );
        assert_eq!(parse("no error here, all fine", ParseMode::Auto).severity, None);
        // A line that looks like a pair but is prose is not logfmt.
        assert!(parse("a=b is what we said", ParseMode::Auto).attributes.is_empty());
        // Broken JSON stays text.
        let p = parse("{\"unterminated", ParseMode::Auto);
        assert_eq!(p.body, None);
    }

    #[test]
    fn numeric_and_epoch_fields() {
        let p = parse(r#"{"level":50,"time":1795428130123,"msg":"x"}"#, ParseMode::Json);
        assert_eq!(p.severity, Some((17, "ERROR".into())));
        assert_eq!(p.time_unix_nano, Some(1_795_428_130_123_000_000));
    }
}
