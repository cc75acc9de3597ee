//! Wall-clock reading and the time formats of the API.

use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now, in unix nanoseconds.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Now, in unix milliseconds (the unit of event time in detection and alerting).
pub(crate) fn now_ms() -> i64 {
    i64::try_from(now_ns() / 1_000_000).unwrap_or(i64::MAX)
}

/// Parses an API time parameter: RFC 3339 (`2026-11-23T10:02:10Z`) or integer unix
/// milliseconds. Returns unix nanoseconds.
pub(crate) fn parse_time(value: &str) -> Result<i64, String> {
    let value = value.trim();
    if let Ok(ms) = value.parse::<i64>() {
        return ms
            .checked_mul(1_000_000)
            .ok_or_else(|| format!("time {value} is out of range (expected unix milliseconds)"));
    }
    OffsetDateTime::parse(value, &Rfc3339)
        .map(|t| i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX))
        .map_err(|e| format!("invalid time {value:?}: expected RFC 3339 or unix milliseconds ({e})"))
}

/// Formats unix nanoseconds as RFC 3339 with nanosecond precision.
pub(crate) fn format_ns(ns: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ns.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_explains_errors() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000_000_000));
        assert_eq!(parse_time("2023-11-14T23:13:20.5+01:00"), Ok(1_700_000_000_500_000_000));
        let err = parse_time("yesterday").expect_err("invalid");
        assert!(err.contains("RFC 3339"), "{err}");
        assert!(parse_time("9223372036854775807").is_err());
    }

    #[test]
    fn formats_with_nanoseconds() {
        assert_eq!(format_ns(1_700_000_000_000_000_001), "2023-11-14T22:13:20.000000001Z");
    }
}

/// Parses a duration: `500ms`, `30s`, `5m`, `1h`, `1d`, or plain milliseconds.
/// Returns nanoseconds.
pub(crate) fn parse_duration(value: &str) -> Result<i64, String> {
    let value = value.trim();
    let split = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {value:?}: expected e.g. 500ms, 30s, 5m, 1h, 1d"))?;
    let scale: i64 = match unit {
        "" | "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        _ => return Err(format!("invalid duration unit in {value:?}: use ms, s, m, h or d")),
    };
    n.checked_mul(scale)
        .filter(|ns| *ns > 0)
        .ok_or_else(|| format!("duration {value:?} must be positive and below 290 years"))
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1500"), Ok(1_500_000_000));
        assert_eq!(parse_duration("30s"), Ok(30_000_000_000));
        assert_eq!(parse_duration("5m"), Ok(300_000_000_000));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("m").is_err());
    }
}
