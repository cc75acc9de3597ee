//! Online anomaly detection on one numeric series, point by point, in event time.
//!
//! Per point (cheap): expected = seasonal profile + smoothed level; residual scaled by a
//! robust running scale gives a raw surprise; a CUSUM on the scaled residuals catches level
//! shifts that no single point reveals; a break out of the range seen so far adds evidence;
//! [`normalize`] turns the surprise into a comparable score in [0, 1].
//! On a schedule (expensive, [`model`]): seasons, MSTL decomposition and the smoothing
//! constant are refitted on the bounded history ring.
//! Before the first refit the expected value and scale come from the median and MAD of the
//! recent points, so a new series is useful after a few dozen points.
//!
//! Nothing here looks ahead: a point's score depends only on the points before it.

mod model;
mod normalize;
mod packed;
pub(crate) mod peers;
mod quiet;
mod routine;
mod shadow;
mod step;

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Raw surprise a routine excursion is capped at: below the level that fires, above noise,
/// so the point still reads as unusual in the evidence chart.
const ROUTINE_MAX_RAW: f64 = 3.0;

/// Gap-filled runs remembered per series (16 bytes each).
const MAX_FILLED_RUNS: usize = 16;

/// Tunables of the per-series detector. The defaults are the product's defaults and the
/// ones `vigil-eval nab` is scored with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeriesConfig {
    /// Points kept per series for refits (memory: 4 bytes each).
    pub history: usize,
    /// Points between refits of the seasonal model.
    pub refit_every: usize,
    /// Points before the first refit.
    pub first_fit: usize,
    /// Points before any score is emitted.
    pub warmup: usize,
    /// Effective memory, in points, of the score normaliser.
    pub normalizer_memory: f64,
    /// CUSUM slack, in residual sigmas: the part of each scaled residual that does not
    /// accumulate, so ordinary noise never builds up to a shift.
    pub cusum_slack: f64,
    /// CUSUM decision threshold, in residual sigmas: an accumulated drift this large is a
    /// [`Signal::LevelShift`], and the level restarts from the recent points.
    pub cusum_threshold: f64,
    /// A value beyond the range the series has ever shown, by this share of that range,
    /// counts as a breakout (the range is all-time: a refit does not forget a past peak).
    pub breakout_margin: f64,
    /// Robust z a breakout must also reach.
    pub breakout_min_z: f64,
    /// Score given to a breakout.
    pub breakout_score: f64,
    /// After a score at or above `fire_score`, scores are damped for `cooldown` points so one
    /// incident reads as one finding.
    pub fire_score: f64,
    /// Points the damping lasts after a firing score (0 = no cooldown).
    pub cooldown: usize,
    /// Factor the score of each point in the cooldown is multiplied by (1 = no damping).
    pub cooldown_damping: f64,
    /// Consecutive identical values that make a flat-line, on a series whose history
    /// rarely repeats a value.
    pub flatline_points: usize,
    /// Score a flat-line gets at least, on the point that completes the run.
    pub flatline_score: f64,
    /// Score given when an intermittent series stays at its floor longer than ever before
    /// (0 = off). See `quiet`.
    pub quiet_score: f64,
    /// Smallest residual scale as a share of the expected value (0 = none). Set for signals
    /// quantised by histogram buckets, such as latency quantiles.
    pub relative_floor: f64,
    /// Smallest residual scale in the signal's units (0 = none), e.g. one point of a ratio.
    pub absolute_floor: f64,
    /// For counts: value × count_scale is an event count, and its Poisson noise
    /// (√count + 1) is the smallest scale (0 = not a count).
    pub count_scale: f64,
    /// An excursion like one that started a whole number of these periods earlier (up to
    /// `routine_lookback` of them), within `routine_tolerance_secs`, is routine — the
    /// nightly backup — and scores low (0 = off). See `routine`.
    pub routine_period_secs: u64,
    /// Seconds an excursion's start may be off a whole number of periods and still be
    /// routine (scheduled jobs drift by the run time of what ran before them).
    pub routine_tolerance_secs: u64,
    /// Periods looked back for a like excursion (2: yesterday or the day before).
    pub routine_lookback: u32,
}

impl Default for SeriesConfig {
    fn default() -> Self {
        SeriesConfig {
            history: 1024,
            refit_every: 256,
            first_fit: 96,
            warmup: 32,
            normalizer_memory: 1000.0,
            cusum_slack: 1.0,
            cusum_threshold: 12.0,
            breakout_margin: 0.02,
            breakout_score: 1.0,
            breakout_min_z: 3.75,
            fire_score: 0.5,
            cooldown: 100,
            cooldown_damping: 0.5,
            flatline_points: 30,
            flatline_score: 0.8,
            quiet_score: 0.8,
            relative_floor: 0.0,
            absolute_floor: 0.0,
            count_scale: 0.0,
            routine_period_secs: 86_400,
            routine_tolerance_secs: 3_600,
            routine_lookback: 2,
        }
    }
}

/// Why a point scored what it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Nothing unusual.
    Normal,
    /// The point is far outside its expected band.
    Spike,
    /// The residuals have drifted to one side for long enough to be a new level.
    LevelShift,
    /// The value left the range the series has shown over its whole history.
    Breakout,
    /// A series that normally varies has repeated one value for too long (stuck sensor,
    /// frozen exporter).
    FlatLine,
    /// A series that mostly sits at its floor between bursts has stayed there longer than
    /// ever before (the nightly job did not run, the instance stopped syncing).
    Quiet,
    /// The five-minute mean of a finely sampled series left its band for this time of day
    /// (found by the daily view, `timeseries/shadow.rs`).
    TimeOfDay,
}

/// The detector's verdict on one point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointScore {
    /// Event time of the point as given to [`SeriesDetector::observe`], unix milliseconds.
    pub timestamp_ms: i64,
    /// The value as given; for [`Signal::TimeOfDay`], the five-minute mean instead.
    pub value: f64,
    /// What the model expected: seasonal profile plus level (before the first fit, the
    /// median of the recent points; for [`Signal::TimeOfDay`], the daily view's).
    pub expected: f64,
    /// Expected band (about 99.7 % of normal points fall inside).
    pub lower: f64,
    /// Upper edge of the expected band; see `lower`.
    pub upper: f64,
    /// Residual in robust sigmas.
    pub z: f64,
    /// Comparable anomaly score in [0, 1].
    pub score: f64,
    /// The strongest reason behind `score`; [`Signal::Normal`] whenever the score is below
    /// 0.05.
    pub signal: Signal,
    /// Whether a seasonal profile shaped the expected value.
    pub seasonal: bool,
    /// When what this point reports began, if before the point: the first point of a quiet
    /// spell (found only once it has lasted).
    pub since_ms: Option<i64>,
}

/// Why a point was not scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// NaN or infinite.
    NotFinite,
    /// Older than or equal to the last accepted timestamp (late or duplicate).
    NotNewer,
}

/// Online state of one series. Memory is bounded by `history` plus the largest season, nine
/// spacings, 16 gap-filled runs, 32 remembered excursions and, for finely sampled series,
/// the daily view (a 640-point ring).
/// Serialisable, so the collector can keep what a series has learned across a restart.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SeriesDetector {
    #[serde(with = "packed::deque")]
    history: VecDeque<f32>,
    next_idx: u64,
    last_ts: Option<i64>,
    /// The sampling step and the mean spacing (a state saved before it existed starts over).
    #[serde(default)]
    spacing: step::StepEstimate,
    fit: Option<model::Fit>,
    since_refit: usize,
    level: f64,
    abs_resid: f64,
    cusum_pos: f64,
    cusum_neg: f64,
    normalizer: normalize::Normalizer,
    cooldown_left: usize,
    seen_min: f64,
    seen_max: f64,
    last_value: Option<f64>,
    flat_run: usize,
    routine: routine::Routine,
    #[serde(default)]
    quiet: quiet::QuietSpells,
    /// Runs of gap-filled points that may still be in the ring: (index of the first, count),
    /// oldest first, at most [`MAX_FILLED_RUNS`] (an older run then counts as real). The
    /// refit measures the residual scale without them.
    #[serde(default)]
    filled: VecDeque<(u64, u64)>,
    /// The five-minute view that learns the day, for finely sampled series.
    #[serde(default)]
    shadow: Option<Box<shadow::Shadow>>,
}

impl SeriesDetector {
    /// A detector that has seen nothing: it scores 0 for its first `warmup` points and
    /// uses a cold-start median and MAD until its first fit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the series has learned its band: its first fit (season, level, scale) is
    /// done. Before it, scores come from a cold-start median and MAD of a few points.
    pub fn has_learned(&self) -> bool {
        self.fit.is_some()
    }

    /// Number of points accepted so far.
    pub fn points(&self) -> u64 {
        self.next_idx
    }

    /// The last `n` values of the history ring, oldest first (gaps hold the value that was
    /// expected there).
    pub fn recent(&self, n: usize) -> impl Iterator<Item = f64> + '_ {
        self.history
            .iter()
            .skip(self.history.len().saturating_sub(n))
            .map(|&v| f64::from(v))
    }

    /// The last `n` values the series was given, oldest first: as [`SeriesDetector::recent`]
    /// without the values that filled its gaps (the expected value stands there, and a run
    /// of it would hide what the series really did). Runs of filled points older than the
    /// last 16 are not known, and count as given.
    pub fn recent_observed(&self, n: usize) -> Vec<f64> {
        let first_idx = self.next_idx - self.history.len() as u64;
        let filled = |idx: u64| {
            self.filled
                .iter()
                .any(|&(start, len)| (start..start + len).contains(&idx))
        };
        let mut out: Vec<f64> = self
            .history
            .iter()
            .enumerate()
            .rev()
            .filter(|(i, _)| !filled(first_idx + *i as u64))
            .take(n)
            .map(|(_, &v)| f64::from(v))
            .collect();
        out.reverse();
        out
    }

    /// Drops the oldest history beyond `len` points (a restored state under a smaller
    /// configured `history`).
    pub(crate) fn trim_history(&mut self, len: usize) {
        while self.history.len() > len {
            self.history.pop_front();
        }
    }

    /// The caller raised nothing on the point just observed — e.g. it judged a firing score
    /// chance, a count too small to mean anything however far outside the band — so, if the
    /// point armed the cooldown, it does not damp the points after it. Without this a series
    /// of a quiet service, where a lone failed request is "beyond anything seen" every few
    /// minutes, spends all its time in the cooldown, and a real fault there scores half.
    pub fn dismiss_firing(&mut self, cfg: &SeriesConfig) {
        if cfg.cooldown > 0 && self.cooldown_left == cfg.cooldown {
            self.cooldown_left = 0;
        }
    }

    /// The caller's finding on this series is over: the cooldown that kept it one finding
    /// ends with it, so the series failing again later — a second fault — scores in full.
    pub fn end_cooldown(&mut self) {
        self.cooldown_left = 0;
    }

    /// The estimated sampling step, once known.
    pub fn step_ms(&self) -> Option<i64> {
        self.spacing.step()
    }

    /// Feeds one point. Late, duplicate and non-finite points are rejected and leave the
    /// state untouched. Gaps are filled with the expected value (not scored) so seasonal
    /// phase stays aligned.
    pub fn observe(&mut self, cfg: &SeriesConfig, timestamp_ms: i64, value: f64) -> Result<PointScore, Rejected> {
        if !value.is_finite() {
            return Err(Rejected::NotFinite);
        }
        if let Some(last) = self.last_ts {
            if timestamp_ms <= last {
                return Err(Rejected::NotNewer);
            }
            let missing = self.spacing.advance(last, timestamp_ms);
            if missing > 0 {
                self.fill_gap(cfg, missing);
            }
        }
        self.last_ts = Some(timestamp_ms);
        let mut verdict = self.score_point(cfg, timestamp_ms, value);
        if let Some(step) = self.spacing.step()
            && shadow::Shadow::needed(step, cfg.history)
        {
            let shadow = self.shadow.get_or_insert_with(Box::default);
            // A time-of-day problem the fine view cannot see: report the five-minute mean
            // against its daily band.
            if let Some(daily) = shadow.add(cfg, timestamp_ms, value)
                && daily.score > verdict.score
            {
                verdict = PointScore {
                    timestamp_ms,
                    seasonal: true,
                    signal: Signal::TimeOfDay,
                    since_ms: None,
                    ..daily
                };
            }
        }
        Ok(verdict)
    }

    /// Seconds per point, for converting natural periods to points (see
    /// [`step::StepEstimate::mean_ms`]).
    fn step_secs(&self) -> f64 {
        self.spacing.mean_ms().map_or(0.0, |mean| mean / 1000.0)
    }

    fn seasonal(&self, idx: u64) -> f64 {
        self.fit.as_ref().map_or(0.0, |f| model::seasonal_at(&f.seasons, idx))
    }

    /// Fills `missing` points with the value expected there. Beyond a whole ring they would
    /// only overwrite each other: those are skipped, but the index still advances by all of
    /// them, so the seasonal phase stays true to the clock after a long outage.
    fn fill_gap(&mut self, cfg: &SeriesConfig, missing: u64) {
        let fill = missing.min(cfg.history as u64);
        let skipped = missing - fill;
        self.next_idx = self.next_idx.saturating_add(skipped);
        self.since_refit = self
            .since_refit
            .saturating_add(usize::try_from(skipped).unwrap_or(usize::MAX));
        if fill == 0 {
            return;
        }
        match self.filled.back_mut() {
            Some((start, len)) if *start + *len == self.next_idx => *len += fill,
            _ => self.filled.push_back((self.next_idx, fill)),
        }
        if self.filled.len() > MAX_FILLED_RUNS {
            self.filled.pop_front();
        }
        for _ in 0..fill {
            let expected = self.expected_now();
            self.push_history(cfg, expected);
            self.next_idx += 1;
            self.since_refit += 1;
        }
    }

    /// Expected value of the next point and the sigma to judge it with.
    fn expected_now(&self) -> f64 {
        match &self.fit {
            Some(_) => self.level + self.seasonal(self.next_idx),
            None => self.recent_median(),
        }
    }

    fn recent_median(&self) -> f64 {
        let n = self.history.len().min(16);
        let recent: Vec<f64> = self.history.iter().rev().take(n).map(|&v| f64::from(v)).collect();
        model::median(&recent)
    }

    fn cold_scale(&self) -> f64 {
        let n = self.history.len().min(64);
        let recent: Vec<f64> = self.history.iter().rev().take(n).map(|&v| f64::from(v)).collect();
        let mad = model::mad_sigma(&recent);
        let m = model::median(&recent);
        let mean_abs = recent.iter().map(|v| (v - m).abs()).sum::<f64>() / n.max(1) as f64;
        mad.max(mean_abs)
    }

    fn push_history(&mut self, cfg: &SeriesConfig, value: f64) {
        if self.history.len() >= cfg.history {
            self.history.pop_front();
        } else if self.history.len() == self.history.capacity() {
            // Grow straight to the configured size: doubling would leave a 640-point ring
            // in a 1,024-point allocation.
            self.history.reserve_exact(cfg.history - self.history.len());
        }
        self.history.push_back(value as f32);
    }

    fn scale(&self, cfg: &SeriesConfig, expected: f64) -> f64 {
        // A noise-free series has no residual scale at all; judge it against a small share of
        // its range instead, so that rounding in the seasonal profile is not an incident.
        let range_floor = self.fit.as_ref().map_or(0.0, |f| f.measures.range_floor);
        let mut floor = 1e-9_f64.max(1e-6 * expected.abs()).max(range_floor);
        // Quantised signals (latency quantiles from histogram buckets) and counts (Poisson
        // noise: a few more lines in a quiet minute) need floors of their own.
        floor = floor.max(cfg.relative_floor * expected.abs()).max(cfg.absolute_floor);
        if cfg.count_scale > 0.0 {
            // √λ + 1: at small counts the Poisson tail is heavier than a normal one.
            floor = floor.max(((expected.abs() * cfg.count_scale).max(1.0).sqrt() + 1.0) / cfg.count_scale);
        }
        let s = if self.fit.is_some() {
            1.2533 * self.abs_resid
        } else {
            self.cold_scale()
        };
        s.max(floor)
    }

    fn score_point(&mut self, cfg: &SeriesConfig, timestamp_ms: i64, value: f64) -> PointScore {
        let idx = self.next_idx;
        let seasonal = self.seasonal(idx);
        let expected = self.expected_now();
        let scale = self.scale(cfg, expected);
        let resid = value - expected;
        let z = resid.abs() / scale;
        let warm = self.next_idx as usize >= cfg.warmup;

        // CUSUM on the scaled residual finds a sustained shift that no single point shows.
        let u = (resid / scale).clamp(-50.0, 50.0);
        self.cusum_pos = (self.cusum_pos + u - cfg.cusum_slack).max(0.0);
        self.cusum_neg = (self.cusum_neg - u - cfg.cusum_slack).max(0.0);
        let cusum = self.cusum_pos.max(self.cusum_neg);
        let mut signal = if z >= 3.0 { Signal::Spike } else { Signal::Normal };
        let mut raw = z.min(50.0);
        if cusum >= cfg.cusum_threshold {
            raw = raw.max(4.0 * cusum / cfg.cusum_threshold);
            signal = Signal::LevelShift;
        }
        // The same excursion at the same time yesterday is a scheduled job, not an incident.
        let ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let recurrence = routine::Recurrence {
            period_ms: ms(cfg.routine_period_secs),
            tolerance_ms: ms(cfg.routine_tolerance_secs),
            lookback: i64::from(cfg.routine_lookback),
        };
        let step_ms = self.spacing.step().unwrap_or(0);
        let routine = self
            .routine
            .observe(&recurrence, timestamp_ms, resid, z >= 3.0, step_ms);
        if routine {
            raw = raw.min(ROUTINE_MAX_RAW);
        }
        let range = self.seen_max - self.seen_min;
        // Leaving the all-time range only counts when the point is also surprising against
        // its expected value: a noisy stationary series sets small new records now and then.
        let breakout = warm
            && !routine
            && z >= cfg.breakout_min_z
            && self.history.len() >= cfg.warmup
            && (value > self.seen_max + cfg.breakout_margin * range
                || value < self.seen_min - cfg.breakout_margin * range);

        // A stuck series: the same value again and again where the history rarely repeats.
        self.flat_run = if self.last_value == Some(value) {
            self.flat_run + 1
        } else {
            0
        };
        self.last_value = Some(value);
        let varies = self
            .fit
            .as_ref()
            .is_some_and(|f| f.measures.repeat_share < 0.05 && f.measures.scale > f.measures.range_floor);
        let flatline = varies && self.flat_run == cfg.flatline_points;
        let mut score = self.normalizer.score(raw, cfg.normalizer_memory);
        if flatline {
            // A rule, not a measure of distance: it gets a fixed, confident score.
            score = score.max(cfg.flatline_score);
            signal = Signal::FlatLine;
        }
        let quiet_since = if self.history.is_empty() {
            None
        } else {
            self.quiet.observe(timestamp_ms, value, self.seen_min, self.seen_max)
        };
        if quiet_since.is_some() && warm && cfg.quiet_score > 0.0 {
            score = score.max(cfg.quiet_score);
            signal = Signal::Quiet;
        }
        if breakout && cfg.breakout_score > 0.0 {
            score = score.max(cfg.breakout_score);
            signal = Signal::Breakout;
        }
        if !warm {
            score = 0.0;
        }
        if self.cooldown_left > 0 {
            self.cooldown_left -= 1;
            score *= cfg.cooldown_damping;
        } else if score >= cfg.fire_score && cfg.cooldown > 0 {
            self.cooldown_left = cfg.cooldown;
        }
        if score < 0.05 {
            signal = Signal::Normal;
        }

        // Learn from the point.
        if self.history.is_empty() {
            self.seen_min = value;
            self.seen_max = value;
        } else {
            self.seen_min = self.seen_min.min(value);
            self.seen_max = self.seen_max.max(value);
        }
        if self.fit.is_some() {
            let clipped = resid.clamp(-4.0 * scale, 4.0 * scale);
            let alpha = self.fit.as_ref().map_or(0.5, |f| f.alpha);
            self.level += alpha * clipped;
            self.abs_resid += (clipped.abs() - self.abs_resid) / 128.0;
            if cusum >= cfg.cusum_threshold {
                // Accept the new level: restart from the recent deseasonalised median.
                let recent: Vec<f64> = self
                    .history
                    .iter()
                    .rev()
                    .take(4)
                    .enumerate()
                    .map(|(k, &v)| f64::from(v) - self.seasonal(idx - 1 - k as u64))
                    .chain(std::iter::once(value - seasonal))
                    .collect();
                self.level = model::median(&recent);
                self.cusum_pos = 0.0;
                self.cusum_neg = 0.0;
            }
        } else if cusum >= cfg.cusum_threshold {
            self.cusum_pos = 0.0;
            self.cusum_neg = 0.0;
        }
        self.push_history(cfg, value);
        self.next_idx += 1;
        self.since_refit += 1;
        let due = if self.fit.is_none() {
            self.history.len() >= cfg.first_fit
        } else {
            self.since_refit >= cfg.refit_every
        };
        if due {
            self.refit();
        }

        let band = 3.0 * scale;
        PointScore {
            timestamp_ms,
            value,
            expected,
            lower: expected - band,
            upper: expected + band,
            z,
            score,
            signal,
            seasonal: seasonal != 0.0,
            since_ms: quiet_since.filter(|_| signal == Signal::Quiet),
        }
    }

    fn refit(&mut self) {
        let y: Vec<f64> = self.history.iter().map(|&v| f64::from(v)).collect();
        let first_idx = self.next_idx - y.len() as u64;
        self.filled.retain(|&(start, len)| start + len > first_idx);
        let mut real = vec![true; y.len()];
        for &(start, len) in &self.filled {
            let from = start.saturating_sub(first_idx) as usize;
            let to = ((start + len - first_idx) as usize).min(y.len());
            real[from..to].fill(false);
        }
        let previous = self.fit.as_ref().map(|f| f.measures);
        let fit = model::refit(&y, first_idx, self.step_secs(), &real, previous);
        self.level = fit.level;
        self.abs_resid = fit.measures.scale / 1.2533;
        self.fit = Some(fit);
        self.since_refit = 0;
    }
}

#[cfg(test)]
mod tests;
