//! The expensive half of the per-series detector: refitting the model on the history ring.
//!
//! A refit finds the series' seasons (augurs periodogram, snapped to natural periods),
//! decomposes the history with MSTL (augurs' `stlrs`), and fits the smoothing constant of
//! the exponentially smoothed level of the deseasonalised series. Between refits the
//! detector runs the cheap half: seasonal profile lookup plus a one-line level update.
//!
//! We keep the level ourselves instead of forecasting with augurs' ETS: its fitted model
//! does not expose its state update, and a multi-step forecast from the last refit goes
//! stale within minutes on a random-walk-like series such as CPU utilisation.

use augurs_mstl::stlrs;
use augurs_seasons::{Detector as _, PeriodogramDetector};
use serde::{Deserialize, Serialize};

/// Periods, in seconds, that operational metrics actually repeat at. A detected period is
/// kept only when it lies within [`SNAP_TOLERANCE`] of one of these; the periodogram finds
/// plenty of spurious peaks in noise and we would rather model no season than a wrong one.
const NATURAL_PERIODS_SECS: [u64; 11] = [60, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400, 604800];
const SNAP_TOLERANCE: f64 = 0.12;
/// A season must explain at least this share of the detrended variance (STL "strength").
const MIN_SEASONAL_STRENGTH: f64 = 0.35;
const MAX_SEASONS: usize = 2;
/// Autocorrelation a season's lag must show.
const MIN_ACF: f64 = 0.3;
const RANGE_FLOOR: f64 = 0.01;
const ALPHAS: [f64; 9] = [0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.85, 1.0];

/// One seasonal component, indexed by absolute point index modulo its period.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Season {
    pub(crate) period: usize,
    #[serde(with = "super::packed::vec")]
    pub(crate) profile: Vec<f32>,
}

/// The outcome of a refit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Fit {
    pub(crate) seasons: Vec<Season>,
    pub(crate) alpha: f64,
    /// Level of the deseasonalised series after the last history point.
    pub(crate) level: f64,
    /// Measured on the history's real points (flattened: the saved layout predates it).
    #[serde(flatten)]
    pub(crate) measures: Measures,
}

/// Seasonal contribution at absolute index `idx`.
pub(crate) fn seasonal_at(seasons: &[Season], idx: u64) -> f64 {
    seasons
        .iter()
        .map(|s| f64::from(s.profile[(idx % s.period as u64) as usize]))
        .sum()
}

/// Autocorrelation of `y` at `lag`.
fn acf(y: &[f64], lag: usize) -> f64 {
    let n = y.len();
    if lag >= n {
        return 0.0;
    }
    let mean = y.iter().sum::<f64>() / n as f64;
    let var: f64 = y.iter().map(|v| (v - mean) * (v - mean)).sum();
    if var <= 0.0 {
        return 0.0;
    }
    let cov: f64 = (lag..n).map(|i| (y[i] - mean) * (y[i - lag] - mean)).sum();
    cov / var
}

/// Season lengths (in points) for a series sampled every `step_secs`.
///
/// Candidates are the augurs periodogram's peaks snapped to natural periods, plus every
/// natural period that fits twice in the history: on a ring of a thousand points Welch's
/// frequency bins sit at 512/k, too coarse to place a 288-point day by themselves. Each
/// candidate must then show a clear autocorrelation at its lag; the strongest are kept.
fn detect_periods(y: &[f64], step_secs: f64) -> Vec<usize> {
    if step_secs <= 0.0 || y.len() < 16 {
        return Vec::new();
    }
    let snap = |points: f64| -> Option<usize> {
        let secs = points * step_secs;
        NATURAL_PERIODS_SECS
            .iter()
            .map(|&n| n as f64)
            .find(|&n| ((secs - n) / n).abs() <= SNAP_TOLERANCE)
            .map(|n| (n / step_secs).round() as usize)
    };
    let detector = PeriodogramDetector::builder()
        .min_period(4)
        .max_period((y.len() / 2) as u32)
        .build();
    let mut candidates: Vec<usize> = detector
        .detect(y)
        .into_iter()
        .filter_map(|p| snap(f64::from(p)))
        .collect();
    candidates.extend(
        NATURAL_PERIODS_SECS
            .iter()
            .map(|&n| (n as f64 / step_secs).round() as usize),
    );
    candidates.retain(|&p| p >= 4 && p * 2 <= y.len());
    candidates.sort_unstable();
    candidates.dedup();
    // A ramp also correlates with itself at long lags; the seasonal-strength check after
    // the MSTL decomposition (which removes the trend first) throws such periods out.
    // A season is a peak of the autocorrelation, not just a high value: any smooth series
    // correlates with itself at short lags, falling steadily as the lag grows.
    let is_peak = |p: usize, r: f64| {
        let below = ((p as f64) * 0.8).round() as usize;
        let above = ((p as f64) * 1.2).round() as usize;
        r >= MIN_ACF && r > acf(y, below) + 0.05 && (above >= y.len() || r > acf(y, above) + 0.05)
    };
    let mut scored: Vec<(usize, f64)> = candidates
        .into_iter()
        .map(|p| (p, acf(y, p)))
        .filter(|&(p, r)| is_peak(p, r))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut out: Vec<usize> = Vec::new();
    for (p, _) in scored {
        out.push(p);
        if out.len() == MAX_SEASONS {
            break;
        }
    }
    out.sort_unstable();
    out
}

/// Median of a slice (copies; callers pass short slices).
pub(crate) fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    *m
}

/// Median absolute deviation scaled to a normal sigma.
pub(crate) fn mad_sigma(values: &[f64]) -> f64 {
    let m = median(values);
    let dev: Vec<f64> = values.iter().map(|v| (v - m).abs()).collect();
    1.4826 * median(&dev)
}

/// Real points a refit needs to measure the residual scale, range and repeats itself.
const MIN_REAL: usize = 32;

/// What a refit measures on the history's real points, and keeps from the previous fit
/// when the ring holds too few of them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Measures {
    /// Robust scale (sigma) of one-step-ahead residuals over the history.
    pub(crate) scale: f64,
    /// Smallest scale worth judging with: a small share of the history's 5–95 % range.
    pub(crate) range_floor: f64,
    /// Share of history points equal to their predecessor (quantised or idle series repeat).
    pub(crate) repeat_share: f64,
}

/// Fits seasons, smoothing constant, level and residual scale on `y`, whose first value sits
/// at absolute index `first_idx`. `real[k]` says whether `y[k]` was observed or filled into
/// a gap with the value expected there: filled points have no noise, so the scale, range and
/// repeats are measured on the real ones only — and taken from `previous` when fewer than
/// [`MIN_REAL`] are left (a ring that is mostly one long outage).
pub(crate) fn refit(y: &[f64], first_idx: u64, step_secs: f64, real: &[bool], previous: Option<Measures>) -> Fit {
    let mut seasons = Vec::new();
    let periods = detect_periods(y, step_secs);
    let mut deseasonalised: Vec<f64> = y.to_vec();
    if !periods.is_empty() {
        let y32: Vec<f32> = y.iter().map(|&v| v as f32).collect();
        if let Ok(fit) = stlrs::MstlParams::new().fit(&y32, &periods) {
            let strength = fit.seasonal_strength();
            for ((component, &period), strength) in fit.seasonal().iter().zip(&periods).zip(strength) {
                if strength < MIN_SEASONAL_STRENGTH {
                    continue;
                }
                let mut profile = vec![0f32; period];
                let n = component.len();
                for (k, &s) in component.iter().enumerate().skip(n - period) {
                    profile[((first_idx + k as u64) % period as u64) as usize] = s;
                }
                for (k, d) in deseasonalised.iter_mut().enumerate() {
                    *d -= f64::from(component[k]);
                }
                seasons.push(Season { period, profile });
            }
        }
    }
    let (alpha, level, residuals) = fit_level(&deseasonalised);
    let real_values: Vec<f64> = (0..y.len()).filter(|&k| is_real(real, k)).map(|k| y[k]).collect();
    // residuals[k] is the one-step error of y[k + 1].
    let real_residuals: Vec<f64> = residuals
        .iter()
        .enumerate()
        .filter(|&(k, _)| is_real(real, k + 1))
        .map(|(_, &r)| r)
        .collect();
    let measures = match previous {
        Some(previous) if real_values.len() < MIN_REAL => previous,
        _ if real_values.len() >= 2 && !real_residuals.is_empty() => measure(&real_residuals, real_values, y, real),
        _ => measure(&residuals, y.to_vec(), y, real),
    };
    Fit {
        seasons,
        alpha,
        level,
        measures,
    }
}

/// Whether `y[k]` was observed (`real` shorter than the history, e.g. empty, means all were).
fn is_real(real: &[bool], k: usize) -> bool {
    real.get(k).copied().unwrap_or(true)
}

/// Residual scale, range floor and repeat share from the residuals and values of real points
/// (`y` and `real` for the repeats: only two neighbouring real points count as a repeat).
fn measure(residuals: &[f64], mut values: Vec<f64>, y: &[f64], real: &[bool]) -> Measures {
    // MAD alone is zero on a series that idles at a constant between bursts; the mean
    // absolute residual keeps such a series' bursts from reading as infinitely surprising.
    let mean_abs = residuals.iter().map(|r| r.abs()).sum::<f64>() / residuals.len().max(1) as f64;
    let scale = mad_sigma(residuals).max(0.6 * mean_abs);
    values.sort_by(f64::total_cmp);
    let q = |f: f64| values[((values.len() - 1) as f64 * f) as usize];
    let range_floor = RANGE_FLOOR * (q(0.95) - q(0.05));
    let pairs = (1..y.len()).filter(|&k| is_real(real, k) && is_real(real, k - 1));
    let (mut repeats, mut total) = (0usize, 0usize);
    for k in pairs {
        total += 1;
        repeats += usize::from(y[k] == y[k - 1]);
    }
    Measures {
        scale,
        range_floor,
        repeat_share: repeats as f64 / total.max(1) as f64,
    }
}

/// Picks the smoothing constant with the smallest sum of absolute one-step errors (absolute,
/// so that one past incident does not decide the fit) and returns it with the final level
/// and that run's residuals.
fn fit_level(y: &[f64]) -> (f64, f64, Vec<f64>) {
    let run = |alpha: f64, residuals: Option<&mut Vec<f64>>| -> (f64, f64) {
        let mut level = y[0];
        let mut sae = 0.0;
        let mut sink = residuals;
        for &v in &y[1..] {
            let r = v - level;
            sae += r.abs();
            if let Some(out) = sink.as_deref_mut() {
                out.push(r);
            }
            level += alpha * r;
        }
        (sae, level)
    };
    let best = ALPHAS
        .iter()
        .copied()
        .map(|a| (a, run(a, None).0))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(0.5, |(a, _)| a);
    let mut residuals = Vec::with_capacity(y.len());
    let (_, level) = run(best, Some(&mut residuals));
    (best, level, residuals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_season_at_five_minutes_is_found_and_snapped() {
        // 4 days at 5 min: period 288 points; add a little deterministic noise.
        let y: Vec<f64> = (0..1152)
            .map(|i| 10.0 * (i as f64 * std::f64::consts::TAU / 288.0).sin() + ((i * 7919) % 13) as f64 * 0.05)
            .collect();
        let fit = refit(&y, 0, 300.0, &[], None);
        assert_eq!(fit.seasons.iter().map(|s| s.period).collect::<Vec<_>>(), vec![288]);
        // The profile reproduces the sine at the next point within a fraction of amplitude.
        let expected = 10.0 * (1152.0 * std::f64::consts::TAU / 288.0).sin();
        let predicted = seasonal_at(&fit.seasons, 1152) + fit.level;
        assert!((predicted - expected).abs() < 1.5, "{predicted} vs {expected}");
    }

    #[test]
    fn noise_has_no_season() {
        let mut x: u64 = 42;
        let y: Vec<f64> = (0..1024)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 33) as f64 / (1u64 << 31) as f64
            })
            .collect();
        assert!(refit(&y, 0, 300.0, &[], None).seasons.is_empty());
    }
}
