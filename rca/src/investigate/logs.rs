//! Log evidence: warning and error patterns that are new or grew, counted where the
//! failure started.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::stats::{mad_sigma, median, per_minute};
use super::traces::TraceIndex;
use super::{Evidence, EvidenceKind, Input, MIN_STRENGTH, WindowLogLine};

/// OTLP severity numbers: WARN starts at 13, ERROR at 17.
const WARN: i32 = 13;
pub(crate) const ERROR: i32 = 17;

/// The minutes holding any log line, in the baseline and in the window (others, such as
/// the lead-in's, in neither).
fn log_minutes(input: &Input) -> (BTreeSet<i64>, BTreeSet<i64>) {
    let (mut baseline, mut window) = (BTreeSet::new(), BTreeSet::new());
    for c in &input.log_counts {
        if input.minute_in_window(c.minute) {
            window.insert(c.minute);
        } else if input.minute_in_baseline(c.minute) {
            baseline.insert(c.minute);
        }
    }
    (baseline, window)
}

/// Warning-or-worse patterns whose count in the window is far above what the baseline's
/// minutes had. A line whose span sits above a failure in another service (an error span,
/// or a span with an error line) is that failure propagating and is not counted.
pub(crate) fn patterns(input: &Input, index: &TraceIndex<'_>) -> Vec<Evidence> {
    let mut failing: Vec<usize> = (0..input.spans.len()).filter(|&i| input.spans[i].error).collect();
    let lines: Vec<&WindowLogLine> = input
        .window_lines
        .iter()
        .filter(|l| input.window.contains_ns(l.ts_ns))
        .collect();
    let located: Vec<Option<usize>> = lines.iter().map(|l| index.lookup(&l.trace_id, &l.span_id)).collect();
    for (line, at) in lines.iter().zip(&located) {
        if let (true, Some(i)) = (line.severity >= ERROR, at) {
            failing.push(*i);
        }
    }
    let propagating = index.above_failures(&failing);
    type Key = (String, u64, i32);
    let mut explained: HashMap<Key, u64> = HashMap::new();
    for (line, at) in lines.iter().zip(&located) {
        if at.is_some_and(|i| propagating.contains(&i)) {
            *explained
                .entry((line.service.clone(), line.pattern_id, line.severity))
                .or_default() += 1;
        }
    }

    let (baseline_minutes, window_minutes) = log_minutes(input);
    let mut baseline: HashMap<Key, BTreeMap<i64, u64>> = HashMap::new();
    let mut window: HashMap<Key, u64> = HashMap::new();
    let mut first_minute: HashMap<Key, i64> = HashMap::new();
    for c in input.log_counts.iter().filter(|c| c.severity >= WARN) {
        let key = (c.service.clone(), c.pattern_id, c.severity);
        if input.minute_in_window(c.minute) {
            let first = first_minute.entry(key.clone()).or_insert(c.minute);
            *first = (*first).min(c.minute);
            *window.entry(key).or_default() += c.count;
        } else if input.minute_in_baseline(c.minute) {
            *baseline.entry(key).or_default().entry(c.minute).or_default() += c.count;
        }
    }
    let n = window_minutes.len().max(1) as f64;
    let mut out = Vec::new();
    for (key, total) in window {
        let count = total.saturating_sub(explained.get(&key).copied().unwrap_or(0));
        if count < 3 {
            continue;
        }
        let minutes = baseline.get(&key);
        let seen_before: u64 = minutes.map_or(0, |b| b.values().sum());
        let counts = per_minute(minutes, &baseline_minutes);
        let per_minute = if counts.is_empty() { vec![0.0] } else { counts };
        let before = median(&per_minute);
        let sigma = mad_sigma(&per_minute, before);
        // A pattern the baseline never had is measured over the minutes since its first
        // line: the quiet minutes before it say nothing of it, and a window begun a minute
        // earlier (an incident's starts a minute before its first symptom) must not make
        // the same new error weaker.
        let n = match first_minute.get(&key) {
            Some(&first) if seen_before == 0 => window_minutes.range(first..).count().max(1) as f64,
            _ => n,
        };
        // Counts: at least Poisson noise, and a bursty baseline's own spread.
        let variance = (sigma * sigma).max(before).max(1.0);
        let strength = (count as f64 - n * before) / (n * variance).sqrt();
        if strength < MIN_STRENGTH {
            continue;
        }
        let level = if key.2 >= ERROR { "error" } else { "warning" };
        let sentence = if seen_before == 0 {
            format!(
                "{}: a new {level} pattern appeared, {count} lines in the window, never in the baseline",
                key.0
            )
        } else {
            format!(
                "{}: {level} pattern {} grew to {:.1} lines a minute, against {before:.1} before",
                key.0,
                key.1,
                count as f64 / n
            )
        };
        out.push(Evidence {
            pattern_id: Some(key.1),
            new: seen_before == 0,
            first_minute: first_minute.get(&key).copied(),
            ..Evidence::new(
                EvidenceKind::LogPattern,
                &key.0,
                format!("pattern {}", key.1),
                (before, count as f64 / n),
                "lines/min",
                strength,
                sentence,
            )
        });
    }
    out
}

/// One warning or error pattern that grew in several services at once is one trouble seen
/// several times — an exception logged again by every caller it passes through (Spring's
/// `dispatcherServlet` line, the same in every service), or one shared cause felt by all —
/// not independent evidence against each: its strength is shared among them, so that it
/// cannot put any one of them above a service with evidence of its own (shares that fall
/// below the minimum are dropped with the rest, by the caller). (Where traces show the
/// failure's path, the lines above it were already left out by [`patterns`].) A service
/// that printed it a minute or more before any other is where it started — an exception is
/// logged by the callee that threw it before its callers log it again — and keeps its
/// strength whole.
pub(crate) fn share_patterns_grown_in_several(evidence: &mut [Evidence]) {
    let mut services: HashMap<u64, BTreeMap<&str, Option<i64>>> = HashMap::new();
    for e in evidence.iter().filter(|e| e.kind == EvidenceKind::LogPattern) {
        if let Some(p) = e.pattern_id {
            services
                .entry(p)
                .or_default()
                .insert(e.service.as_str(), e.first_minute);
        }
    }
    // pattern -> (services sharing it, the one that printed it first alone).
    let shared: HashMap<u64, (usize, Option<String>)> = services
        .into_iter()
        .filter(|(_, s)| s.len() > 1)
        .map(|(p, s)| {
            let mut firsts: Vec<(i64, &str)> = s.iter().filter_map(|(svc, m)| m.map(|m| (m, *svc))).collect();
            firsts.sort_unstable();
            let first_alone = match firsts.as_slice() {
                [(m0, svc), (m1, _), ..] if m0 < m1 && firsts.len() == s.len() => Some(svc.to_string()),
                _ => None,
            };
            (p, (s.len(), first_alone))
        })
        .collect();
    if shared.is_empty() {
        return;
    }
    for e in evidence.iter_mut().filter(|e| e.kind == EvidenceKind::LogPattern) {
        let Some((k, first)) = e.pattern_id.and_then(|p| shared.get(&p)) else {
            continue;
        };
        if first.as_deref() == Some(e.service.as_str()) {
            e.sentence.push_str(&format!(
                " (the same pattern grew in {} other services, all after it had begun here)",
                k - 1
            ));
            continue;
        }
        e.strength /= *k as f64;
        e.sentence.push_str(&format!(
            " (the same pattern grew in {k} services at once: a share of it counts)"
        ));
    }
}

/// Routine lines (below WARN) that a service printed every minute of the baseline and
/// stopped printing although it kept working: the code path that prints them is no longer
/// reached — something now fails or returns early before it. A failure injected into a
/// method shows exactly this way when nothing logs the exception: the line after the call
/// disappears. The expected count follows the service's own activity (its lines and spans),
/// so a service that simply got less traffic does not qualify.
pub(crate) fn patterns_stopped(input: &Input) -> Vec<Evidence> {
    let (baseline_minutes, window_minutes) = log_minutes(input);
    // per service: minute -> activity (lines + spans)
    let mut activity: HashMap<&str, BTreeMap<i64, u64>> = HashMap::new();
    for c in &input.log_counts {
        *activity
            .entry(c.service.as_str())
            .or_default()
            .entry(c.minute)
            .or_default() += c.count;
    }
    for s in &input.spans {
        let minute = Input::minute_of(input.window, s.start_ns);
        if input.window.contains_ns(s.start_ns) || input.baseline.contains_ns(s.start_ns) {
            *activity
                .entry(s.service.as_str())
                .or_default()
                .entry(minute)
                .or_default() += 1;
        }
    }
    if window_minutes.is_empty() || baseline_minutes.len() < 3 {
        return Vec::new();
    }
    let n = window_minutes.len() as f64;
    // Each service's typical baseline minute, and how busy it was in the window relative to it.
    let typical: HashMap<&str, f64> = activity
        .iter()
        .map(|(service, minutes)| (*service, median(&per_minute(Some(minutes), &baseline_minutes))))
        .collect();
    let busy: HashMap<&str, f64> = activity
        .iter()
        .map(|(service, minutes)| {
            let now: u64 = window_minutes
                .iter()
                .map(|m| minutes.get(m).copied().unwrap_or(0))
                .sum();
            let typical = typical[service];
            (*service, if typical > 0.0 { now as f64 / n / typical } else { 0.0 })
        })
        .collect();
    let mut out = Vec::new();
    for (key, (minutes, now)) in &routine_lines(input) {
        let before = median(&per_minute(Some(minutes), &baseline_minutes));
        // Printed in most baseline minutes, at least one a minute: a routine line.
        if before < 1.0 {
            continue;
        }
        let still = busy.get(key.0).copied().unwrap_or(0.0);
        let now_total: u64 = now.values().sum();
        let expected = n * before * still.min(1.0);
        let seen = now_total as f64;
        // Unless the service went quiet itself (that is other evidence) or the line did not
        // stop over the window as a whole — it may have stopped partway through.
        if still >= 0.5 && seen <= 0.2 * expected {
            let strength = (expected - seen) / expected.sqrt();
            if strength >= MIN_STRENGTH {
                let sentence = format!(
                    "{}: a routine line it printed {before:.1} times a minute stopped ({seen:.0} in the window) while the service kept working: the code that prints it is no longer reached",
                    key.0
                );
                out.push(stopped_evidence(key, (before, seen / n), strength, sentence));
                continue;
            }
        }
        let activity = activity.get(key.0);
        let typical = typical.get(key.0).copied().unwrap_or(0.0);
        if let Some(e) = stopped_partway(key, before, now, &window_minutes, activity, typical) {
            out.push(e);
        }
    }
    out
}

/// A routine line that stopped partway through the window: printed in its first minutes,
/// then in none of the minutes after its last line although the service kept working in
/// them. An incident's window starts a little before its first symptom, and a fault
/// injected a minute into it leaves the line's count over the whole window at a half — no
/// stop. The lines due after it are what its baseline rate gives for each of those minutes,
/// scaled down to how busy the service was in it (a minute the traffic ended in owes few),
/// and no line at all where many were due is no chance.
fn stopped_partway(
    key: &(&str, u64),
    before: f64,
    now: &BTreeMap<i64, u64>,
    window_minutes: &BTreeSet<i64>,
    activity: Option<&BTreeMap<i64, u64>>,
    typical: f64,
) -> Option<Evidence> {
    let last = now.iter().filter(|(_, c)| **c > 0).map(|(m, _)| *m).max()?;
    if typical <= 0.0 {
        return None;
    }
    let after: Vec<f64> = window_minutes
        .range(last + 1..)
        .map(|m| activity.and_then(|a| a.get(m)).copied().unwrap_or(0) as f64 / typical)
        .collect();
    if after.is_empty() || after.iter().sum::<f64>() < 0.5 * after.len() as f64 {
        return None; // the service itself went quiet after the line did
    }
    let due: f64 = after.iter().map(|busy| before * busy.min(1.0)).sum();
    let strength = due.sqrt();
    if strength < MIN_STRENGTH {
        return None;
    }
    let k = after.len();
    let sentence = format!(
        "{}: a routine line it printed {before:.1} times a minute stopped partway through the window: none in its last {k} minute{} while the service kept working ({due:.0} were due): the code that prints it is no longer reached",
        key.0,
        if k == 1 { "" } else { "s" }
    );
    Some(stopped_evidence(key, (before, 0.0), strength, sentence))
}

/// Evidence that a routine line of `key` (service, pattern) stopped or fell behind:
/// `values` is (before, after) in lines a minute.
fn stopped_evidence(key: &(&str, u64), values: (f64, f64), strength: f64, sentence: String) -> Evidence {
    Evidence {
        pattern_id: Some(key.1),
        ..Evidence::new(
            EvidenceKind::LogPatternStopped,
            key.0,
            format!("pattern {}", key.1),
            values,
            "lines/min",
            strength,
            sentence,
        )
    }
}

/// A routine pattern's lines: per baseline minute, and per window minute.
type RoutineCounts = (BTreeMap<i64, u64>, BTreeMap<i64, u64>);

/// Lines below WARN per (service, pattern), counted in the baseline's minutes and in the
/// window — what [`patterns_stopped`] and [`patterns_fell_behind`] both judge.
fn routine_lines(input: &Input) -> HashMap<(&str, u64), RoutineCounts> {
    let mut lines: HashMap<(&str, u64), RoutineCounts> = HashMap::new();
    for c in input.log_counts.iter().filter(|c| c.severity < WARN) {
        let in_window = input.minute_in_window(c.minute);
        if !in_window && !input.minute_in_baseline(c.minute) {
            continue;
        }
        let counts = lines.entry((c.service.as_str(), c.pattern_id)).or_default();
        if in_window {
            *counts.1.entry(c.minute).or_default() += c.count;
        } else {
            *counts.0.entry(c.minute).or_default() += c.count;
        }
    }
    lines
}

/// How closely a line must have kept step with its twin in the baseline: the summed
/// per-minute difference from the fixed ratio, as a share of its lines.
const TWIN_RESIDUAL: f64 = 0.1;
/// A line that fell behind its twin to at most this share of what the twin implies.
const FELL_TO: f64 = 0.5;
/// Routine patterns of one service compared pairwise, at most (the busiest).
const MAX_TWINS: usize = 200;

/// Routine lines that fell behind their *twin*: the line of the same service that kept
/// step with it every minute of the baseline (two statements of one code path — "route
/// found", then "price computed"), so that the twin's count in the window says how many
/// this one should have printed. A method that now throws part of the time shows exactly
/// so: the statement before it goes on, the one after it is printed for only some
/// requests. Where a line stopped outright, [`patterns_stopped`] says it already; where
/// the service simply got less traffic, both twins fall together and nothing is said.
pub(crate) fn patterns_fell_behind(input: &Input) -> Vec<Evidence> {
    let (baseline_minutes, window_minutes) = log_minutes(input);
    if window_minutes.is_empty() || baseline_minutes.len() < 3 {
        return Vec::new();
    }
    let mut services: HashMap<&str, Vec<(u64, RoutineCounts)>> = HashMap::new();
    for ((service, pattern), lines) in routine_lines(input) {
        services.entry(service).or_default().push((pattern, lines));
    }
    let n = window_minutes.len() as f64;
    let mut out = Vec::new();
    for (service, patterns) in services {
        // Routine: at least a line a minute in the typical baseline minute.
        let mut routine: Vec<(u64, Vec<f64>, f64, u64)> = patterns
            .into_iter()
            .filter_map(|(id, (minutes, now))| {
                let counts = per_minute(Some(&minutes), &baseline_minutes);
                let total: f64 = counts.iter().sum();
                (median(&counts) >= 1.0).then_some((id, counts, total, now.values().sum()))
            })
            .collect();
        routine.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
        routine.truncate(MAX_TWINS);
        for (id, counts, total, now) in &routine {
            let twin = routine
                .iter()
                .filter(|(other, ..)| other != id)
                .map(|(other, twin_counts, twin_total, twin_now)| {
                    let ratio = total / twin_total;
                    let residual: f64 = counts
                        .iter()
                        .zip(twin_counts)
                        .map(|(c, t)| (c - ratio * t).abs())
                        .sum::<f64>()
                        / total;
                    (residual, *other, ratio, *twin_now)
                })
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let Some((residual, other, ratio, twin_now)) = twin else {
                continue;
            };
            if residual > TWIN_RESIDUAL {
                continue;
            }
            let expected = ratio * twin_now as f64;
            let seen = *now as f64;
            if seen == 0.0 || seen > FELL_TO * expected {
                continue; // stopped outright is patterns_stopped's to say
            }
            let strength = (expected - seen) / expected.sqrt();
            if strength < MIN_STRENGTH {
                continue;
            }
            let sentence = format!(
                "{service}: a routine line printed {ratio:.2} times for each line of pattern {other} in the baseline, minute by minute, fell behind it: {seen:.0} in the window where its twin implies {expected:.0} — the code between them fails part of the time"
            );
            out.push(stopped_evidence(
                &(service, *id),
                (total / baseline_minutes.len() as f64, seen / n),
                strength,
                sentence,
            ));
        }
    }
    out
}
