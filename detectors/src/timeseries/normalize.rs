//! Turns a series' raw surprise (robust z of the residual) into a score in [0, 1] that means
//! the same thing on every series, so that one global threshold works across thousands.
//!
//! The idea is Numenta's "anomaly likelihood": a short average of recent raw surprise is
//! compared with the long-run distribution of that same average on this series, and the
//! Gaussian tail probability becomes the score on a log scale (tail 1e-5 → 0.5, 1e-10 → 1).
//! A series whose residuals are routinely heavy-tailed therefore needs a bigger excursion
//! to score high than a quiet one.

/// Number of recent raw values averaged.
pub(crate) const SHORT: usize = 2;
const CAP_SIGMAS: f64 = 10.0;
const MIN_SD: f64 = 0.1;

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Normalizer {
    recent: [f32; SHORT],
    n: u64,
    mean: f64,
    var: f64,
}

/// Upper-tail probability of the standard normal, Q(x) = erfc(x / sqrt 2) / 2.
pub(crate) fn normal_tail(x: f64) -> f64 {
    0.5 * erfc(x / std::f64::consts::SQRT_2)
}

/// Complementary error function (Numerical Recipes' Chebyshev fit, |rel err| < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

impl Normalizer {
    /// Scores `raw` (≥ 0) against this series' history, then learns from it.
    /// `long` is the effective memory, in points, of the long-run distribution.
    pub(crate) fn score(&mut self, raw: f64, long: f64) -> f64 {
        // Log-compress: raw surprise is heavy-tailed, and a Gaussian tail on it would call
        // every fifth-sigma wobble of a spiky series an incident.
        let raw = raw.max(0.0).ln_1p();
        let slot = (self.n % SHORT as u64) as usize;
        self.recent[slot] = raw as f32;
        self.n += 1;
        let filled = self.n.min(SHORT as u64) as usize;
        let avg = self.recent[..filled].iter().map(|&v| f64::from(v)).sum::<f64>() / filled as f64;
        let sd = self.var.sqrt().max(MIN_SD);
        let score = if self.n > 8 {
            let tail = normal_tail((avg - self.mean) / sd).max(1e-12);
            (-tail.log10() / 10.0).clamp(0.0, 1.0)
        } else {
            0.0
        };
        // Learn with the excursion capped, so that one incident does not teach the series
        // that incidents are normal; repeated ones still widen the distribution.
        let capped = avg.min(self.mean + CAP_SIGMAS * sd);
        let lambda = (1.0 / self.n as f64).max(1.0 / long);
        let delta = capped - self.mean;
        self.mean += lambda * delta;
        self.var = (1.0 - lambda) * (self.var + lambda * delta * delta);
        score
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_matches_known_values() {
        assert!((normal_tail(0.0) - 0.5).abs() < 1e-6);
        assert!((normal_tail(1.959964) - 0.025).abs() < 1e-5);
        assert!((normal_tail(-1.959964) - 0.975).abs() < 1e-5);
        assert!((normal_tail(4.264891) - 1e-5).abs() < 1e-7);
    }

    #[test]
    fn routine_noise_scores_low_and_an_excursion_scores_high() {
        let mut n = Normalizer::default();
        let mut worst: f64 = 0.0;
        for i in 0..2000 {
            let raw = [0.2, 1.1, 0.7, 1.6, 0.4][i % 5];
            let s = n.score(raw, 1000.0);
            if i > 20 {
                worst = worst.max(s);
            }
        }
        assert!(worst < 0.3, "routine noise scored {worst}");
        n.score(40.0, 1000.0);
        assert!(n.score(40.0, 1000.0) > 0.9);
    }
}
