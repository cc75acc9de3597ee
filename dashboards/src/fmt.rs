//! Times, durations and values as people read them. Times are UTC, said so on every page.

use time::OffsetDateTime;

fn datetime(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

/// "2026-11-23 10:02:10".
pub(crate) fn time(ms: i64) -> String {
    match datetime(ms) {
        Some(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        None => "—".into(),
    }
}

/// "10:02:10".
pub(crate) fn clock(ms: i64) -> String {
    match datetime(ms) {
        Some(t) => format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second()),
        None => "—".into(),
    }
}

/// RFC 3339, for `<time datetime=…>` and the API.
pub(crate) fn iso(ms: i64) -> String {
    datetime(ms)
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// "45 s", "12 min", "3 h 5 min", "2 d 4 h".
pub(crate) fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => match (s % 3600) / 60 {
            0 => format!("{} h", s / 3600),
            m => format!("{} h {m} min", s / 3600),
        },
        _ => match (s % 86_400) / 3600 {
            0 => format!("{} d", s / 86_400),
            h => format!("{} d {h} h", s / 86_400),
        },
    }
}

/// A value with its unit ("2.4 s", "180 ms", "12.5 %", "3.2/s"), written the way the
/// detectors' explanations write it, so a chart's labels read like the sentence beside it.
pub(crate) fn value(v: f64, unit: &str) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    match unit {
        "s" => {
            if v.abs() >= 1.0 {
                format!("{} s", sig(v))
            } else {
                format!("{} ms", sig(v * 1000.0))
            }
        }
        "ratio" => format!("{} %", sig(v * 100.0)),
        "/s" => format!("{}/s", sig(v)),
        "/min" => format!("{}/min", sig(v)),
        "" | "1" => sig(v),
        other => format!("{} {other}", sig(v)),
    }
}

/// Three significant digits, no scientific notation for everyday magnitudes (the
/// detectors' rounding, so the same value reads the same on a chart and in a sentence).
fn sig(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (3 - 1 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// "1.2k", "3.4M": counts on axes and badges.
pub(crate) fn count(n: u64) -> String {
    match n {
        0..1000 => n.to_string(),
        1000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// Now, unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The time ranges the pickers offer, as (parameter, label, milliseconds).
pub(crate) const RANGES: &[(&str, &str, i64)] = &[
    ("15m", "last 15 minutes", 15 * 60_000),
    ("1h", "last hour", 3_600_000),
    ("6h", "last 6 hours", 6 * 3_600_000),
    ("24h", "last 24 hours", 24 * 3_600_000),
    ("7d", "last 7 days", 7 * 24 * 3_600_000),
];

/// The span of a range parameter; unknown values fall back to `default`.
pub(crate) fn range_ms(param: Option<&str>, default: &str) -> (String, i64) {
    let find = |p: &str| RANGES.iter().find(|r| r.0 == p).map(|r| (r.0.to_string(), r.2));
    param
        .and_then(find)
        .or_else(|| find(default))
        .unwrap_or_else(|| ("1h".into(), 3_600_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times_read_naturally() {
        assert_eq!(duration(45_000), "45 s");
        assert_eq!(duration(12 * 60_000 + 5_000), "12 min");
        assert_eq!(duration(3 * 3_600_000 + 5 * 60_000), "3 h 5 min");
        assert_eq!(duration(2 * 86_400_000), "2 d");
        assert_eq!(time(1_795_392_130_000), "2026-11-23 00:02:10");
        assert_eq!(clock(1_795_392_130_000), "00:02:10");
        assert_eq!(count(1234), "1.2k");
        assert_eq!(range_ms(Some("6h"), "1h").1, 6 * 3_600_000);
        assert_eq!(range_ms(Some("bogus"), "1h").0, "1h");
    }

    #[test]
    fn values_read_like_a_human_wrote_them() {
        assert_eq!(value(2.4, "s"), "2.4 s");
        assert_eq!(value(0.18, "s"), "180 ms");
        assert_eq!(value(0.0345, "ratio"), "3.45 %");
        assert_eq!(value(1234.6, "/s"), "1235/s");
        assert_eq!(value(0.5, ""), "0.5");
        assert_eq!(value(0.0, "By"), "0 By");
        assert_eq!(value(f64::NAN, ""), "—");
    }
}
