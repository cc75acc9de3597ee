//! Metric evidence: BARO's robust shift of each series, window against baseline.

use super::stats::{median, quantile};
use super::{Evidence, EvidenceKind, Input, MIN_STRENGTH};

/// A shift is capped here: past it, "far outside anything seen" is all it says, and one
/// series that never moved must not outweigh every other kind of evidence.
const MAX_STRENGTH: f64 = 50.0;

/// Series whose window median lies far from their baseline median, in units of the
/// baseline's spread: its interquartile range as a σ, as BARO does, but never below its mean
/// absolute deviation — a series that idles at one value between spikes has an IQR of zero,
/// and taken alone that made every idle service's next spike "infinitely" surprising — nor
/// below 1 % of the median. The window's median, not its extreme: one odd scrape is not a
/// change.
pub(crate) fn shifts(input: &Input) -> Vec<Evidence> {
    let mut out = Vec::new();
    for series in &input.metrics {
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for &(ms, v) in &series.points {
            if !v.is_finite() {
                continue;
            }
            if input.window.start_ms <= ms && ms < input.window.end_ms {
                after.push(v);
            } else if input.baseline.start_ms <= ms && ms < input.baseline.end_ms {
                before.push(v);
            }
        }
        if before.len() < 5 || after.is_empty() {
            continue;
        }
        let typical = median(&before);
        let iqr_sigma = (quantile(&before, 0.75) - quantile(&before, 0.25)) / 1.349;
        let mean_deviation = before.iter().map(|v| (v - typical).abs()).sum::<f64>() / before.len() as f64;
        let now = median(&after);
        let scale = iqr_sigma.max(mean_deviation).max(0.01 * typical.abs()).max(1e-9);
        let strength = ((now - typical).abs() / scale).min(MAX_STRENGTH);
        if strength < MIN_STRENGTH {
            continue;
        }
        let shown = if series.labels.is_empty() {
            series.name.clone()
        } else {
            format!("{}{{{}}}", series.name, series.labels)
        };
        let unit = if series.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", series.unit)
        };
        let sentence = format!(
            "{}: {shown} was {}{unit} in the window, against {}{unit} before ({} its usual spread)",
            series.service,
            fmt_value(now),
            fmt_value(typical),
            if strength >= MAX_STRENGTH {
                "far beyond".to_string()
            } else {
                format!("{strength:.0}×")
            }
        );
        out.push(Evidence {
            metric: Some(series.name.clone()),
            ..Evidence::new(
                EvidenceKind::Metric,
                &series.service,
                shown,
                (typical, now),
                &series.unit,
                strength,
                sentence,
            )
        });
    }
    out
}

fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}
