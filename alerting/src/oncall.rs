//! On-call schedules: who is on call, when — rotations (daily or weekly, a hand-off time and
//! day in the schedule's own time zone), layers (a later layer overrides an earlier one
//! wherever it has someone), and overrides (one person for a stretch of time, over every
//! layer). Pure and clock-free: every question names its instant. Hand-offs are civil
//! times in the schedule's zone, so a 09:00 hand-off stays at 09:00 across daylight saving
//! changes (a day of 23 or 25 hours), as Grafana OnCall and PagerDuty do.

use std::fmt::Write;

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use serde::{Deserialize, Serialize};

/// How often the turn passes to the next person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rotation {
    /// The turn passes at the hand-off time every day.
    Daily,
    /// The turn passes at the hand-off time on the hand-off day every week.
    Weekly,
}

impl Rotation {
    fn days(self) -> i64 {
        match self {
            Rotation::Daily => 1,
            Rotation::Weekly => 7,
        }
    }
}

/// One rotation of people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// Shown in shifts as their source; `layer` when empty.
    #[serde(default)]
    pub name: String,
    /// How often the turn passes.
    pub rotation: Rotation,
    /// Local time of the hand-off, `HH:MM`.
    pub handoff: String,
    /// Weekly rotations: the day of the hand-off (`monday` … `sunday`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_day: Option<String>,
    /// Local date from which the rotation runs: the first person's turn starts at the first
    /// hand-off on or after it.
    pub start: String,
    /// In turn order.
    pub users: Vec<String>,
}

/// One person on call for a stretch of time, over every layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Override {
    /// Its id: `o` and the 8-digit sequence number, assigned by
    /// [`Alerting::add_override`](crate::Alerting::add_override).
    pub id: String,
    /// Who covers.
    pub user: String,
    /// Start of the cover, unix ms.
    pub start_ms: i64,
    /// End of the cover, unix ms (exclusive). Overrides that ended over a week ago are
    /// dropped when the next one is added (the audit log keeps them).
    pub end_ms: i64,
    /// Who added it.
    #[serde(default)]
    pub created_by: String,
}

/// A schedule as stored and as the API takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Its name (unique; escalation steps refer to it).
    pub name: String,
    /// IANA time zone name (`Europe/Berlin`, `UTC`).
    pub time_zone: String,
    /// Later layers take precedence where they have someone on call.
    pub layers: Vec<Layer>,
    /// Stretches where one person covers, over every layer.
    #[serde(default)]
    pub overrides: Vec<Override>,
    /// Last change to its layers, unix ms: set by `put_schedule`, whatever the caller sent.
    #[serde(default)]
    pub updated_ms: i64,
    /// Who made the last change to its layers (set by `put_schedule`).
    #[serde(default)]
    pub updated_by: String,
}

/// Who is on call for a stretch, and why (`layer` names the layer, or "override").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shift {
    /// The person on call.
    pub user: String,
    /// Start, unix ms.
    pub start_ms: i64,
    /// End, unix ms (exclusive).
    pub end_ms: i64,
    /// The layer's name (`layer` for an unnamed one), or `override`.
    pub source: String,
}

/// A layer ready to answer: its hand-off parsed, its first hand-off found.
struct Rotor<'a> {
    layer: &'a Layer,
    period_days: i64,
    handoff: Time,
    /// The date of the first hand-off.
    first: Date,
}

/// A validated schedule with its time zone resolved.
pub struct Compiled<'a> {
    schedule: &'a Schedule,
    tz: TimeZone,
    rotors: Vec<Rotor<'a>>,
}

/// Shifts computed per question at most (two years of daily hand-offs).
const MAX_STEPS: usize = 750;

fn weekday(name: &str) -> Option<Weekday> {
    Some(match name.to_ascii_lowercase().as_str() {
        "monday" | "mon" => Weekday::Monday,
        "tuesday" | "tue" => Weekday::Tuesday,
        "wednesday" | "wed" => Weekday::Wednesday,
        "thursday" | "thu" => Weekday::Thursday,
        "friday" | "fri" => Weekday::Friday,
        "saturday" | "sat" => Weekday::Saturday,
        "sunday" | "sun" => Weekday::Sunday,
        _ => return None,
    })
}

fn add_days(d: Date, n: i64) -> Option<Date> {
    d.checked_add(Span::new().try_days(n).ok()?).ok()
}

/// A name people and receivers can be told by: 1–64 printable characters.
fn valid_name(s: &str) -> bool {
    let t = s.trim();
    !t.is_empty() && t == s && s.chars().count() <= 64 && !s.chars().any(char::is_control)
}

impl Schedule {
    /// Checks the schedule and resolves its time zone; the error names the field.
    pub fn compile(&self) -> Result<Compiled<'_>, String> {
        if !valid_name(&self.name) || self.name.contains('/') {
            return Err("name: 1 to 64 printable characters, no slash".into());
        }
        let tz = TimeZone::get(&self.time_zone)
            .map_err(|e| format!("time_zone: {:?} is not a known time zone ({e})", self.time_zone))?;
        if self.layers.is_empty() {
            return Err("layers: a schedule needs at least one layer".into());
        }
        let mut rotors = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let at = |field: &str| format!("layers[{i}].{field}");
            let handoff: Time = layer.handoff.parse().map_err(|e| {
                format!(
                    "{}: {:?} is not a time of day like 09:00 ({e})",
                    at("handoff"),
                    layer.handoff
                )
            })?;
            let start: Date = layer
                .start
                .parse()
                .map_err(|e| format!("{}: {:?} is not a date like 2026-12-01 ({e})", at("start"), layer.start))?;
            let first = match (layer.rotation, layer.handoff_day.as_deref()) {
                (Rotation::Daily, None) => start,
                (Rotation::Daily, Some(_)) => {
                    return Err(format!(
                        "{}: only weekly rotations have a hand-off day",
                        at("handoff_day")
                    ));
                }
                (Rotation::Weekly, None) => {
                    return Err(format!(
                        "{}: a weekly rotation needs one (monday … sunday)",
                        at("handoff_day")
                    ));
                }
                (Rotation::Weekly, Some(day)) => {
                    let wanted = weekday(day)
                        .ok_or_else(|| format!("{}: {day:?} is not a day of the week", at("handoff_day")))?;
                    let ahead = i64::from(wanted.to_monday_zero_offset() - start.weekday().to_monday_zero_offset())
                        .rem_euclid(7);
                    add_days(start, ahead).ok_or_else(|| format!("{}: out of range", at("start")))?
                }
            };
            if layer.users.is_empty() {
                return Err(format!("{}: a layer needs at least one person", at("users")));
            }
            if let Some(u) = layer.users.iter().find(|u| !valid_name(u)) {
                return Err(format!(
                    "{}: {u:?} is not a name (1 to 64 printable characters)",
                    at("users")
                ));
            }
            rotors.push(Rotor {
                layer,
                period_days: layer.rotation.days(),
                handoff,
                first,
            });
        }
        for (i, o) in self.overrides.iter().enumerate() {
            if o.end_ms <= o.start_ms {
                return Err(format!("overrides[{i}]: end must be after start"));
            }
        }
        Ok(Compiled {
            schedule: self,
            tz,
            rotors,
        })
    }
}

impl Compiled<'_> {
    /// The instant of the hand-off on local date `d`.
    fn handoff_ms(&self, r: &Rotor<'_>, d: Date) -> Option<i64> {
        let z = d.to_datetime(r.handoff).to_zoned(self.tz.clone()).ok()?;
        Some(z.timestamp().as_millisecond())
    }

    /// The shift of layer `r` holding instant `t`: (person, start, end); none before the
    /// layer's first hand-off.
    fn turn_at(&self, r: &Rotor<'_>, t: i64) -> Option<Shift> {
        let local = Timestamp::from_millisecond(t).ok()?.to_zoned(self.tz.clone());
        // The latest hand-off date whose hand-off is not after t.
        let mut day = local.date();
        if self.handoff_ms(r, day)? > t {
            day = day.yesterday().ok()?;
        }
        let since = i64::from(day.since(r.first).ok()?.get_days());
        if since < 0 {
            return None;
        }
        let k = since.div_euclid(r.period_days);
        let start_day = add_days(r.first, k * r.period_days)?;
        let end_day = add_days(start_day, r.period_days)?;
        let users = &r.layer.users;
        let n = i64::try_from(users.len()).ok()?;
        Some(Shift {
            user: users[usize::try_from(k.rem_euclid(n)).ok()?].clone(),
            start_ms: self.handoff_ms(r, start_day)?,
            end_ms: self.handoff_ms(r, end_day)?,
            source: if r.layer.name.is_empty() {
                "layer".into()
            } else {
                r.layer.name.clone()
            },
        })
    }

    /// Who is on call at `t`: the latest override covering it, else the last layer with
    /// someone on call.
    pub fn on_call_at(&self, t: i64) -> Option<Shift> {
        if let Some(o) = self
            .schedule
            .overrides
            .iter()
            .rev()
            .find(|o| o.start_ms <= t && t < o.end_ms)
        {
            return Some(Shift {
                user: o.user.clone(),
                start_ms: o.start_ms,
                end_ms: o.end_ms,
                source: "override".into(),
            });
        }
        self.rotors.iter().rev().find_map(|r| self.turn_at(r, t))
    }

    /// Who is on call from `from` to `to`, as consecutive shifts (a person's stretch split
    /// only where the reason changes).
    pub fn shifts(&self, from: i64, to: i64) -> Vec<Shift> {
        let mut edges = vec![from, to];
        for r in &self.rotors {
            let mut t = from;
            for _ in 0..MAX_STEPS {
                let next = match self.turn_at(r, t) {
                    Some(s) => s.end_ms,
                    // Before the layer starts: its first hand-off.
                    None => match self.handoff_ms(r, r.first) {
                        Some(first) if first > t => first,
                        _ => break,
                    },
                };
                if next >= to || next <= t {
                    break;
                }
                edges.push(next);
                t = next;
            }
        }
        for o in &self.schedule.overrides {
            edges.extend([o.start_ms, o.end_ms].into_iter().filter(|e| (from..to).contains(e)));
        }
        edges.sort_unstable();
        edges.dedup();
        let mut out: Vec<Shift> = Vec::new();
        for w in edges.windows(2) {
            let Some(who) = self.on_call_at(w[0]) else { continue };
            match out.last_mut() {
                Some(last) if last.end_ms == w[0] && last.user == who.user && last.source == who.source => {
                    last.end_ms = w[1];
                }
                _ => out.push(Shift {
                    start_ms: w[0],
                    end_ms: w[1],
                    ..who
                }),
            }
        }
        out
    }

    /// The shifts from `from` to `to` as an iCalendar feed (RFC 5545), optionally one
    /// person's only; `now` stamps it.
    pub fn ical(&self, from: i64, to: i64, user: Option<&str>, now: i64) -> String {
        let name = &self.schedule.name;
        let mut out = String::new();
        let mut line = |text: String| fold(&mut out, &text);
        line("BEGIN:VCALENDAR".into());
        line("VERSION:2.0".into());
        line("PRODID:-//Vigil//On call//EN".into());
        line("CALSCALE:GREGORIAN".into());
        line(format!("X-WR-CALNAME:{}", escape(&format!("On call: {name}"))));
        for s in self.shifts(from, to) {
            if user.is_some_and(|u| u != s.user) {
                continue;
            }
            line("BEGIN:VEVENT".into());
            line(format!("UID:{}-{}-{}@vigil", escape(name), s.start_ms, escape(&s.user)));
            line(format!("DTSTAMP:{}", utc(now)));
            line(format!("DTSTART:{}", utc(s.start_ms)));
            line(format!("DTEND:{}", utc(s.end_ms)));
            line(format!("SUMMARY:{}", escape(&format!("On call: {} ({name})", s.user))));
            line(format!(
                "DESCRIPTION:{}",
                escape(&format!("{} of schedule {name}", s.source))
            ));
            line("END:VEVENT".into());
        }
        line("END:VCALENDAR".into());
        out
    }
}

/// `20261204T090000Z`.
fn utc(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_default()
}

/// RFC 5545 TEXT escaping.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// One content line, CRLF-terminated and folded at 75 octets (never inside a character).
fn fold(out: &mut String, line: &str) {
    let mut width = 0;
    for c in line.chars() {
        if width + c.len_utf8() > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += c.len_utf8();
    }
    let _ = write!(out, "\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn ms(iso: &str) -> i64 {
        iso.parse::<Timestamp>().expect("instant").as_millisecond()
    }

    fn weekly(users: &[&str]) -> Schedule {
        Schedule {
            name: "primary".into(),
            time_zone: "Europe/Berlin".into(),
            layers: vec![Layer {
                name: "week".into(),
                rotation: Rotation::Weekly,
                handoff: "09:00".into(),
                handoff_day: Some("monday".into()),
                // A Thursday: the first turn starts the Monday after.
                start: "2026-10-22".into(),
                users: users.iter().map(|u| u.to_string()).collect(),
            }],
            overrides: Vec::new(),
            updated_ms: 0,
            updated_by: String::new(),
        }
    }

    fn who(c: &Compiled<'_>, iso: &str) -> Option<String> {
        c.on_call_at(ms(iso)).map(|s| s.user)
    }

    #[test]
    fn a_weekly_rotation_hands_off_at_local_time_across_daylight_saving() {
        let s = weekly(&["ana", "bo", "cy"]);
        let c = s.compile().expect("valid");
        assert_eq!(who(&c, "2026-10-26T07:59:00Z"), None, "before the first hand-off");
        // Monday 2026-10-26 09:00 in Berlin is 08:00 UTC (CET, after the October change).
        assert_eq!(who(&c, "2026-10-26T08:00:00Z").as_deref(), Some("ana"));
        assert_eq!(who(&c, "2026-11-02T07:59:59Z").as_deref(), Some("ana"));
        assert_eq!(who(&c, "2026-11-02T08:00:00Z").as_deref(), Some("bo"));
        assert_eq!(who(&c, "2026-11-09T08:00:00Z").as_deref(), Some("cy"));
        assert_eq!(who(&c, "2026-11-16T08:00:00Z").as_deref(), Some("ana"));
        // In summer 09:00 Berlin is 07:00 UTC: the hand-off follows the clock on the wall.
        // 2027-03-29 is a Monday, 22 weeks after the first turn (22 mod 3 = 1: bo).
        assert_eq!(who(&c, "2027-03-29T06:59:00Z").as_deref(), Some("ana"));
        assert_eq!(who(&c, "2027-03-29T07:00:00Z").as_deref(), Some("bo"));
        let shift = c.on_call_at(ms("2027-03-25T12:00:00Z")).expect("on call");
        // The week holding the March change is an hour short.
        assert_eq!(shift.end_ms - shift.start_ms, 7 * 24 * HOUR - HOUR);
    }

    #[test]
    fn later_layers_and_overrides_take_precedence() {
        let mut s = weekly(&["ana", "bo"]);
        s.layers.push(Layer {
            name: "weekend".into(),
            rotation: Rotation::Daily,
            handoff: "00:00".into(),
            handoff_day: None,
            start: "2026-12-05".into(),
            users: vec!["dee".into()],
        });
        s.overrides.push(Override {
            id: "o1".into(),
            user: "eve".into(),
            start_ms: ms("2026-11-03T12:00:00Z"),
            end_ms: ms("2026-11-03T18:00:00Z"),
            created_by: "ana".into(),
        });
        let c = s.compile().expect("valid");
        assert_eq!(who(&c, "2026-11-03T11:59:00Z").as_deref(), Some("bo"));
        let o = c.on_call_at(ms("2026-11-03T12:00:00Z")).expect("override");
        assert_eq!((o.user.as_str(), o.source.as_str()), ("eve", "override"));
        assert_eq!(who(&c, "2026-11-03T18:00:00Z").as_deref(), Some("bo"));
        assert_eq!(
            who(&c, "2026-12-05T10:00:00Z").as_deref(),
            Some("dee"),
            "the later layer"
        );
        // Shifts over a day around the override: bo, eve, bo again.
        let shifts = c.shifts(ms("2026-11-03T00:00:00Z"), ms("2026-11-04T00:00:00Z"));
        let seen: Vec<(&str, &str)> = shifts.iter().map(|s| (s.user.as_str(), s.source.as_str())).collect();
        assert_eq!(seen, [("bo", "week"), ("eve", "override"), ("bo", "week")]);
        assert!(shifts.windows(2).all(|w| w[0].end_ms == w[1].start_ms), "no gaps");
    }

    #[test]
    fn schedules_are_checked_with_the_field_named() {
        let mut s = weekly(&["ana"]);
        s.time_zone = "Mars/Olympus".into();
        assert!(s.compile().err().is_some_and(|e| e.starts_with("time_zone")));
        let mut s = weekly(&["ana"]);
        s.layers[0].handoff = "25:00".into();
        assert!(s.compile().err().is_some_and(|e| e.starts_with("layers[0].handoff")));
        let mut s = weekly(&["ana"]);
        s.layers[0].handoff_day = None;
        assert!(
            s.compile()
                .err()
                .is_some_and(|e| e.starts_with("layers[0].handoff_day"))
        );
        let mut s = weekly(&[]);
        assert!(s.compile().err().is_some_and(|e| e.starts_with("layers[0].users")));
        s = weekly(&["ana"]);
        s.layers[0].start = "next week".into();
        assert!(s.compile().err().is_some_and(|e| e.starts_with("layers[0].start")));
    }

    #[test]
    fn the_ical_feed_lists_each_shift_in_utc_with_crlf_lines() {
        let s = weekly(&["ana", "bo"]);
        let c = s.compile().expect("valid");
        let feed = c.ical(
            ms("2026-10-26T00:00:00Z"),
            ms("2026-11-09T00:00:00Z"),
            None,
            ms("2026-10-01T00:00:00Z"),
        );
        assert!(feed.starts_with("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n"), "{feed}");
        assert!(feed.ends_with("END:VCALENDAR\r\n"));
        assert_eq!(feed.matches("BEGIN:VEVENT").count(), 2, "{feed}");
        assert!(feed.contains("DTSTART:20261026T080000Z\r\nDTEND:20261102T080000Z\r\nSUMMARY:On call: ana (primary)"));
        assert!(feed.lines().all(|l| l.len() <= 76), "folded");
        let bo = c.ical(ms("2026-10-26T00:00:00Z"), ms("2026-11-09T00:00:00Z"), Some("bo"), 0);
        assert_eq!(bo.matches("BEGIN:VEVENT").count(), 1);
        assert_eq!(escape("a,b;c\\d\ne"), "a\\,b\\;c\\\\d\\ne");
    }
}
