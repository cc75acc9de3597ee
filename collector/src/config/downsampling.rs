//! `[[storage.downsampling]]`: old days of the time-series store rewritten at a coarser
//! step, like VictoriaMetrics' `-downsampling.period=30d:5m,180d:1h` or Thanos' 5 m and
//! 1 h resolutions. Off unless configured: downsampling throws samples away, and a query
//! over a downsampled day needs ranges of a few steps (`rate(x[1m])` finds nothing on a
//! five-minute day).

use serde::{Deserialize, Serialize};

use crate::timeutil::parse_duration;

/// One level: days whose end is older than `after` keep one sample per `step`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownsamplingLevel {
    /// Age of a day's end past which the level applies, e.g. "2d".
    pub after: String,
    /// One sample (the last) is kept per step, e.g. "5m".
    pub step: String,
}

/// A level as the indexer applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Level {
    pub after_ns: i64,
    pub step_ms: i64,
}

const MIN_STEP_MS: i64 = 1_000;
const MAX_STEP_MS: i64 = 86_400_000;
const MIN_AFTER_NS: i64 = 3_600_000_000_000;

/// The levels, checked: each duration parses, a step is 1 s to 1 d, `after` is at least
/// an hour, and each level is later and coarser than the one before. An error names the
/// key (`storage.downsampling[1].step`).
pub(crate) fn levels(configured: &[DownsamplingLevel]) -> Result<Vec<Level>, (String, String)> {
    let mut out: Vec<Level> = Vec::with_capacity(configured.len());
    for (i, level) in configured.iter().enumerate() {
        let key = |field: &str| format!("storage.downsampling[{i}].{field}");
        let after_ns = parse_duration(&level.after).map_err(|e| (key("after"), e))?;
        let step_ms = parse_duration(&level.step).map_err(|e| (key("step"), e))? / 1_000_000;
        if after_ns < MIN_AFTER_NS {
            return Err((key("after"), format!("{:?} is under an hour", level.after)));
        }
        if !(MIN_STEP_MS..=MAX_STEP_MS).contains(&step_ms) {
            return Err((key("step"), format!("{:?} is outside 1s..=1d", level.step)));
        }
        if let Some(before) = out.last() {
            if after_ns <= before.after_ns {
                return Err((key("after"), "must be later than the level before it".into()));
            }
            if step_ms <= before.step_ms {
                return Err((key("step"), "must be coarser than the level before it".into()));
            }
        }
        out.push(Level { after_ns, step_ms });
    }
    Ok(out)
}

/// The step day `day` (its end at `day_end_ns`) should be at by `now_ns`: the coarsest
/// level whose `after` has passed for all of it.
pub(crate) fn step_for(levels: &[Level], day_end_ns: i64, now_ns: i64) -> Option<i64> {
    levels
        .iter()
        .rev()
        .find(|l| day_end_ns.saturating_add(l.after_ns) <= now_ns)
        .map(|l| l.step_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(after: &str, step: &str) -> DownsamplingLevel {
        DownsamplingLevel {
            after: after.into(),
            step: step.into(),
        }
    }

    #[test]
    fn levels_parse_and_bad_ones_name_their_key() {
        let ok = levels(&[level("2d", "5m"), level("10d", "1h")]).expect("valid");
        assert_eq!(
            ok[1],
            Level {
                after_ns: 10 * 86_400_000_000_000,
                step_ms: 3_600_000
            }
        );
        let key = |l: &[DownsamplingLevel]| levels(l).expect_err("invalid").0;
        assert_eq!(key(&[level("2x", "5m")]), "storage.downsampling[0].after");
        assert_eq!(key(&[level("2d", "500ms")]), "storage.downsampling[0].step");
        assert_eq!(key(&[level("30m", "5m")]), "storage.downsampling[0].after");
        assert_eq!(
            key(&[level("2d", "5m"), level("1d", "1h")]),
            "storage.downsampling[1].after"
        );
        assert_eq!(
            key(&[level("2d", "1h"), level("10d", "5m")]),
            "storage.downsampling[1].step"
        );
    }

    #[test]
    fn the_config_file_takes_levels_and_refuses_a_bad_one_by_its_key() {
        let text = "[[storage.downsampling]]\nafter = \"2d\"\nstep = \"5m\"\n\
                    [[storage.downsampling]]\nafter = \"30d\"\nstep = \"1h\"\n";
        let config = crate::Config::from_toml(text).expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.storage.downsampling[1], level("30d", "1h"));
        let bad =
            crate::Config::from_toml("[[storage.downsampling]]\nafter = \"2d\"\nstep = \"0s\"\n").expect("parses");
        let err = bad.validate().expect_err("a zero step").to_string();
        assert!(err.contains("storage.downsampling[0].step"), "{err}");
    }

    #[test]
    fn a_day_takes_the_coarsest_level_it_is_old_enough_for() {
        let l = levels(&[level("1d", "5m"), level("3d", "1h")]).expect("valid");
        let day = 86_400_000_000_000;
        assert_eq!(step_for(&l, 10 * day, 10 * day + day - 1), None);
        assert_eq!(step_for(&l, 10 * day, 11 * day), Some(300_000));
        assert_eq!(step_for(&l, 10 * day, 13 * day), Some(3_600_000));
        assert_eq!(step_for(&[], 0, i64::MAX), None);
    }
}
