//! The daily view of a finely sampled series: a second detector on its five-minute means.
//!
//! At 10 s a day is 8,640 points and the 1,024-point ring holds under three hours, so the
//! fine detector can never learn the daily cycle; its smoothed level follows the cycle
//! instead, which is harmless for false alarms but blind to time-of-day problems: traffic
//! that stays at its night level when the morning ramp should come drifts too slowly for
//! any single 10 s point to look wrong. The shadow detector sees one point per five
//! minutes, where a day is 288 points and two fit in its ring, so it learns the daily
//! profile with the same machinery, and there a missing ramp is several sigmas per point.
//!
//! It speaks only once it has found a season of half a day or longer: before that it
//! would merely repeat, late and blurred, what the fine detector already says.

use serde::{Deserialize, Serialize};

use super::{PointScore, SeriesConfig, SeriesDetector};

/// Width of one shadow point.
pub(crate) const BUCKET_MS: i64 = 300_000;
/// Shadow points kept: 2.2 days, the least that shows a day twice.
const HISTORY: usize = 640;
/// The shortest season the shadow reports on (half a day, in buckets).
const MIN_PERIOD: usize = (43_200_000 / BUCKET_MS) as usize;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Shadow {
    detector: SeriesDetector,
    /// The bucket being filled: index, sum, count.
    open: Option<(i64, f64, u32)>,
}

impl Shadow {
    /// Whether a series sampled every `step_ms`, with `history` points in its ring, needs a
    /// shadow to see a day.
    pub(crate) fn needed(step_ms: i64, history: usize) -> bool {
        step_ms > 0 && step_ms * 2 <= BUCKET_MS && step_ms.saturating_mul(history as i64) < 2 * 86_400_000
    }

    /// Adds a fine point. When it closes a bucket, the bucket's mean is scored; the verdict
    /// comes back once the shadow has a daily season.
    pub(crate) fn add(&mut self, cfg: &SeriesConfig, ts_ms: i64, value: f64) -> Option<PointScore> {
        let bucket = ts_ms.div_euclid(BUCKET_MS);
        if let Some((b, sum, n)) = &mut self.open
            && *b == bucket
        {
            *sum += value;
            *n += 1;
            return None;
        }
        let (b, sum, n) = self.open.replace((bucket, value, 1))?;
        let shadow_cfg = SeriesConfig {
            history: HISTORY,
            ..cfg.clone()
        };
        let mean = sum / f64::from(n.max(1));
        let verdict = self.detector.observe(&shadow_cfg, b * BUCKET_MS, mean).ok()?;
        self.daily().then_some(verdict)
    }

    /// Whether the shadow has found a season of half a day or longer.
    pub(crate) fn daily(&self) -> bool {
        self.detector
            .fit
            .as_ref()
            .is_some_and(|f| f.seasons.iter().any(|s| s.period >= MIN_PERIOD))
    }
}
