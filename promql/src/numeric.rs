//! Float arithmetic the way Prometheus' engine does it (checked against Prometheus 2.42 with
//! `promtool test rules`), so that answers agree to the last digit, not just within a
//! tolerance: compensated (Kahan–Neumaier) sums where Prometheus uses them (`sum_over_time`,
//! `stddev`/`stdvar` and their `_over_time` forms, the regressions of `deriv`/`predict_linear`),
//! a compensated running mean for `avg` and `avg_over_time` (the sum of two values near
//! `f64::MAX` overflows, their mean does not), and a plain sum where Prometheus keeps it plain
//! (`sum`).

/// One step of Kahan summation with Neumaier's improvement: `sum + inc`, the lost low-order
/// part added to `c`.
pub(crate) fn kahan_sum_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// The compensated sum of `values` (`sum_over_time`); an infinite sum stays as it is (the
/// compensation would turn it into NaN).
pub(crate) fn kahan_sum(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, c) = values
        .into_iter()
        .fold((0.0, 0.0), |(sum, c), v| kahan_sum_inc(v, sum, c));
    if sum.is_infinite() { sum } else { sum + c }
}

/// The mean as a compensated running mean (`avg`, `avg_over_time`): each value moves it by
/// its share, so values near `f64::MAX` do not overflow. Once the mean is infinite it stays
/// so, unless a NaN or an infinity of the other sign comes (`Inf - Inf` would otherwise make
/// every later mean NaN). NaN for no values.
pub(crate) fn running_mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut mean = RunningMean::default();
    for v in values {
        mean.push(v);
    }
    mean.value()
}

/// [`running_mean`] one value at a time (`avg` evaluated series by series).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RunningMean {
    mean: f64,
    c: f64,
    count: f64,
}

impl RunningMean {
    pub(crate) fn push(&mut self, v: f64) {
        self.count += 1.0;
        if self.mean.is_infinite() {
            if v.is_infinite() && (self.mean > 0.0) == (v > 0.0) {
                return;
            }
            if !v.is_infinite() && !v.is_nan() {
                return;
            }
        }
        (self.mean, self.c) = kahan_sum_inc(v / self.count - self.mean / self.count, self.mean, self.c);
    }

    /// The mean so far; NaN before the first value.
    pub(crate) fn value(&self) -> f64 {
        if self.count == 0.0 {
            f64::NAN
        } else if self.mean.is_infinite() {
            self.mean
        } else {
            self.mean + self.c
        }
    }
}

/// Population variance by Welford's method with both running sums compensated (`stdvar`,
/// `stddev` and their `_over_time` forms).
pub(crate) fn compensated_variance(values: impl IntoIterator<Item = f64>) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for v in values {
        count += 1.0;
        let delta = v - (mean + c_mean);
        (mean, c_mean) = kahan_sum_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_sum_inc(delta * (v - (mean + c_mean)), aux, c_aux);
    }
    if count == 0.0 { f64::NAN } else { (aux + c_aux) / count }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every expected value below is what Prometheus 2.42 answers for the same samples
    // (`promtool test rules`), where the plain formula answers otherwise.

    #[test]
    fn sums_over_time_are_compensated() {
        // sum_over_time over 1e100, 1, -1e100, 0: Prometheus 1, a plain sum 0.
        assert_eq!(kahan_sum([1e100, 1.0, -1e100, 0.0]), 1.0);
        assert_eq!(kahan_sum([f64::INFINITY, 1.0]), f64::INFINITY);
        assert!(kahan_sum([f64::INFINITY, f64::NEG_INFINITY]).is_nan());
    }

    #[test]
    fn means_run_and_do_not_overflow() {
        // avg of two series at 1e308: Prometheus 1e308, a sum then a division +Inf.
        assert_eq!(running_mean([1e308, 1e308]), 1e308);
        assert_eq!(running_mean([1e100, 1.0, -1e100, 0.0]), 0.0);
        // The mean of 0.1, 0.2, …, 1.0: Prometheus 0.55, uncompensated 0.5499999999999999.
        assert_eq!(running_mean((1..=10).map(|i| f64::from(i) / 10.0)), 0.55);
        assert_eq!(running_mean([f64::INFINITY, 3.0]), f64::INFINITY);
        assert!(running_mean([f64::INFINITY, f64::NEG_INFINITY]).is_nan());
        assert!(running_mean([]).is_nan());
    }

    #[test]
    fn variance_over_time_is_compensated() {
        // stddev over 0.1, 0.2, …, 1.0: Prometheus 0.2872281323269014, plain Welford
        // 0.2872281323269015.
        let z = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
        assert_eq!(compensated_variance(z).sqrt(), 0.287_228_132_326_901_4);
        assert_eq!(compensated_variance([1e100, 1.0, -1e100, 0.0]), 5e199);
    }
}
