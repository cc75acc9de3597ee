//! Onset detection and BARO-style ranking.
//!
//! BARO (Pham et al., FSE'24) scores each signal by how far its values after the onset sit
//! from its values before, in robust units — `|x - median(before)| / IQR(before)`, the largest
//! over the after-window — and ranks services by their most shifted signal. RCAEval found this
//! simple score matching or beating causal-graph methods. BARO is handed the failure time;
//! we find it ourselves: every signal runs through the product's online detector
//! ([`vigil_detectors::SeriesDetector`]) and the onset is the first moment when
//! a good share of the signals that will ever alarm are alarming together.

use serde::Serialize;
use vigil_detectors::{SeriesConfig, SeriesDetector};

/// One aligned signal: `values[i]` belongs to row `i` (NaN when missing).
#[derive(Debug, Clone)]
pub struct Signal {
    /// Column name, e.g. `carts_cpu`; what [`Candidate::signal`] reports.
    pub name: String,
    /// The service it belongs to, e.g. `carts`; signals are grouped into candidates by it.
    pub service: String,
    /// One value per row of the aligned table, as long as the `times_ms` given to
    /// [`find_onset`]; NaN (any non-finite value) where the signal had none, skipped.
    pub values: Vec<f64>,
}

/// One ranked root-cause candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// The service, as its signals name it; one candidate per service.
    pub service: String,
    /// `robust_z` relative to the top candidate's, in [0, 1]: 1.0 for the first (0 for all
    /// when no signal moved at all).
    pub score: f64,
    /// Name of the service's signal that moved most after the onset.
    pub signal: String,
    /// How far that signal moved: the largest `|x − median(before)| / IQR(before)` over
    /// the rows from the onset on (the IQR floored at 1 % of the median, so a signal flat
    /// before the onset does not shift infinitely).
    pub robust_z: f64,
    /// Why it ranks where it does, in words a human can check.
    pub reason: String,
}

/// Rows (after this many) before an onset may be declared: the detectors need a baseline.
const MIN_BASELINE_ROWS: usize = 60;
/// A detector score at or above this counts as alarming.
const ALARM: f64 = 0.5;

/// The row at which the system started to misbehave, found online: every signal's detector
/// score is summed per row, and the onset is the first row (after a baseline) whose sum
/// reaches half the largest sum seen. A lone false alarm scores on one signal; a fault moves
/// several signals, and its own signal to a confident score. None when nothing alarms, or
/// with 60 rows or fewer (no baseline).
///
/// `times_ms` holds each row's time (unix ms, increasing); every signal's `values` are read
/// alongside it, row for row.
pub fn find_onset(times_ms: &[i64], signals: &[Signal]) -> Option<usize> {
    let rows = times_ms.len();
    if rows <= MIN_BASELINE_ROWS || signals.is_empty() {
        return None;
    }
    let cfg = SeriesConfig::default();
    let mut total = vec![0f64; rows];
    for s in signals {
        let mut det = SeriesDetector::new();
        for (i, (&t, &v)) in times_ms.iter().zip(&s.values).enumerate() {
            if let Ok(p) = det.observe(&cfg, t, v)
                && p.score >= ALARM
            {
                total[i] += p.score;
            }
        }
    }
    let peak = total[MIN_BASELINE_ROWS..].iter().copied().fold(0.0, f64::max);
    if peak <= 0.0 {
        return None;
    }
    (MIN_BASELINE_ROWS..rows).find(|&i| total[i] >= 0.5 * peak)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = (sorted.len() - 1) as f64 * q;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Robust shift of one signal after `onset` against before it, and the value that showed it.
fn robust_shift(values: &[f64], onset: usize) -> Option<(f64, f64, f64)> {
    let mut before: Vec<f64> = values[..onset].iter().copied().filter(|v| v.is_finite()).collect();
    if before.len() < 8 {
        return None;
    }
    before.sort_by(f64::total_cmp);
    let median = quantile(&before, 0.5);
    let iqr = quantile(&before, 0.75) - quantile(&before, 0.25);
    // A signal constant before the onset has no IQR; judge it against a sliver of its level
    // so a tiny wobble does not become an infinite shift.
    let scale = iqr.max(0.01 * median.abs()).max(1e-9);
    let (peak, z) = values[onset..]
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .map(|v| (v, (v - median).abs() / scale))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    Some((z, peak, median))
}

/// Ranks services by their most shifted signal after row `onset` (as [`find_onset`] returns
/// it), strongest first. A signal with fewer than 8 finite values before the onset, or none
/// from it on, is skipped; a service with no usable signal is not listed.
pub fn rank(signals: &[Signal], onset: usize) -> Vec<Candidate> {
    let mut best: Vec<(String, f64, String, f64, f64)> = Vec::new();
    for s in signals {
        if onset >= s.values.len() {
            continue;
        }
        let Some((z, peak, median)) = robust_shift(&s.values, onset) else {
            continue;
        };
        match best.iter_mut().find(|b| b.0 == s.service) {
            Some(b) if b.1 >= z => {}
            Some(b) => *b = (s.service.clone(), z, s.name.clone(), peak, median),
            None => best.push((s.service.clone(), z, s.name.clone(), peak, median)),
        }
    }
    best.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let top = best.first().map_or(1.0, |b| b.1.max(1e-12));
    best.into_iter()
        .map(|(service, z, signal, peak, median)| Candidate {
            reason: format!(
                "{signal} reached {} after the onset against a median of {} before ({z:.1} robust units)",
                short(peak),
                short(median)
            ),
            score: z / top,
            service,
            signal,
            robust_z: z,
        })
        .collect()
}

fn short(v: f64) -> String {
    if v.abs() >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic white noise in [-0.5, 0.5) (splitmix64 of row and stream).
    fn noise(i: usize, k: usize) -> f64 {
        let mut z = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (k as u64).wrapping_mul(0xd1b5_4a32_d192_ed03);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    /// Five services at 1 s; from row 300 `db` CPU saturates and, 5 s later, `api` latency
    /// (its caller) rises a little.
    fn case() -> (Vec<i64>, Vec<Signal>) {
        let rows = 500;
        let times = (0..rows as i64).map(|i| 1_700_000_000_000 + i * 1000).collect();
        let mut signals = Vec::new();
        for (k, svc) in ["web", "api", "db", "cache", "queue"].iter().enumerate() {
            let cpu = (0..rows)
                .map(|i| 20.0 + 2.0 * noise(i, k) + if *svc == "db" && i >= 300 { 70.0 } else { 0.0 })
                .collect();
            let lat = (0..rows)
                .map(|i| 0.1 + 0.01 * noise(i, k + 9) + if *svc == "api" && i >= 305 { 0.05 } else { 0.0 })
                .collect();
            signals.push(Signal {
                name: format!("{svc}_cpu"),
                service: svc.to_string(),
                values: cpu,
            });
            signals.push(Signal {
                name: format!("{svc}_lat"),
                service: svc.to_string(),
                values: lat,
            });
        }
        (times, signals)
    }

    #[test]
    fn onset_is_found_near_the_fault_and_the_cause_ranks_first() {
        let (times, signals) = case();
        let onset = find_onset(&times, &signals).expect("onset");
        assert!((300..=310).contains(&onset), "onset {onset}");
        let ranked = rank(&signals, onset);
        assert_eq!(ranked[0].service, "db");
        assert_eq!(ranked[0].signal, "db_cpu");
        assert_eq!(ranked[0].score, 1.0);
        assert_eq!(ranked[1].service, "api");
        assert!(ranked[0].reason.starts_with("db_cpu reached"), "{}", ranked[0].reason);
    }

    #[test]
    fn a_signal_constant_before_the_onset_does_not_dominate_with_a_tiny_change() {
        let (times, mut signals) = case();
        signals.push(Signal {
            name: "queue_mem".into(),
            service: "queue".into(),
            values: (0..500).map(|i| if i < 300 { 1000.0 } else { 1001.0 }).collect(),
        });
        let ranked = rank(&signals, find_onset(&times, &signals).expect("onset"));
        assert_eq!(ranked[0].service, "db");
    }

    #[test]
    fn quiet_data_has_no_onset() {
        let times: Vec<i64> = (0..300).map(|i| i * 1000).collect();
        let signals = vec![Signal {
            name: "a_cpu".into(),
            service: "a".into(),
            values: vec![5.0; 300],
        }];
        assert_eq!(find_onset(&times, &signals), None);
        assert_eq!(find_onset(&times[..10], &signals), None);
    }
}
