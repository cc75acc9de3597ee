//! Synthetic series with known anomalies: each case asserts the anomaly is found near its
//! onset and that the normal stretch before it stays quiet.

use super::*;

const STEP: i64 = 60_000;

/// Deterministic Gaussian noise (LCG + Box–Muller), so failures reproduce.
struct Noise(u64);

impl Noise {
    fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn gauss(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn run(values: &[f64]) -> Vec<PointScore> {
    let cfg = SeriesConfig::default();
    let mut det = SeriesDetector::new();
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| det.observe(&cfg, i as i64 * STEP, v).expect("accepted"))
        .collect()
}

fn max_score(scores: &[PointScore], range: std::ops::Range<usize>) -> f64 {
    scores[range].iter().map(|p| p.score).fold(0.0, f64::max)
}

fn first_fire(scores: &[PointScore], from: usize) -> Option<usize> {
    (from..scores.len()).find(|&i| scores[i].score >= 0.5)
}

fn noisy(n: usize, seed: u64, f: impl Fn(usize) -> f64) -> Vec<f64> {
    let mut noise = Noise(seed);
    (0..n).map(|i| f(i) + noise.gauss()).collect()
}

/// Five-minute points in a day.
const DAY: usize = 288;

/// A daily cycle at five-minute resolution: 100 ± 40.
fn daily_cycle(i: usize) -> f64 {
    100.0 + 40.0 * ((i % DAY) as f64 / DAY as f64 * std::f64::consts::TAU).sin()
}

/// Five-minute scores of a daily cycle: the day is modelled by day 5, nothing fires from
/// day 3 on, and the expected values stay in phase with the data.
fn assert_day_learned(scores: &[PointScore]) {
    assert!(scores[5 * DAY].seasonal, "the daily season must be modelled by day 5");
    let worst = max_score(scores, 3 * DAY..scores.len());
    assert!(worst < 0.5, "the learned day scored {worst}");
    let off = scores[5 * DAY..]
        .iter()
        .map(|p| (p.value - p.expected).abs())
        .fold(0.0, f64::max);
    assert!(off < 8.0, "expected values out of phase by up to {off}");
}

#[test]
fn spike_is_found_at_its_point_and_noise_stays_quiet() {
    let mut y = noisy(700, 1, |_| 100.0);
    y[500] += 15.0;
    let s = run(&y);
    assert!(
        max_score(&s, 100..500) < 0.5,
        "false alarm before the spike: {}",
        max_score(&s, 100..500)
    );
    assert_eq!(first_fire(&s, 100), Some(500));
    assert!(matches!(s[500].signal, Signal::Spike | Signal::Breakout));
    assert!(s[500].value > s[500].upper, "the band must exclude the spike");
}

#[test]
fn level_shift_is_found_within_a_few_points() {
    let y = noisy(800, 2, |i| if i < 500 { 50.0 } else { 56.0 });
    let s = run(&y);
    assert!(max_score(&s, 100..500) < 0.5);
    let at = first_fire(&s, 100).expect("shift found");
    assert!((500..510).contains(&at), "found at {at}");
}

#[test]
fn trend_change_is_found() {
    let y = noisy(900, 3, |i| if i < 500 { 20.0 } else { 20.0 + 0.4 * (i - 500) as f64 });
    let s = run(&y);
    assert!(max_score(&s, 100..500) < 0.5);
    let at = first_fire(&s, 100).expect("trend change found");
    assert!((500..540).contains(&at), "found at {at}");
}

#[test]
fn seasonal_break_is_found_and_the_season_itself_is_learned() {
    // Daily cycle at 5-minute resolution: 288 points a day. Day 6 loses its afternoon peak.
    let day = 288;
    let shape = |i: usize| {
        let phase = (i % day) as f64 / day as f64;
        100.0 + 40.0 * (phase * std::f64::consts::TAU).sin()
    };
    let mut noise = Noise(4);
    let y: Vec<f64> = (0..7 * day)
        .map(|i| {
            let base = if (6 * day..6 * day + 100).contains(&i) {
                100.0
            } else {
                shape(i)
            };
            base + noise.gauss()
        })
        .collect();
    let cfg = SeriesConfig::default();
    let mut det = SeriesDetector::new();
    let s: Vec<PointScore> = y
        .iter()
        .enumerate()
        .map(|(i, &v)| det.observe(&cfg, i as i64 * 300_000, v).expect("accepted"))
        .collect();
    assert!(s[5 * day].seasonal, "the daily season must be modelled by day 5");
    assert!(max_score(&s, 3 * day..6 * day) < 0.5, "learned season must not alarm");
    let at = first_fire(&s, 6 * day).expect("seasonal break found");
    assert!(at < 6 * day + 60, "found at {}", at - 6 * day);
}

#[test]
fn flat_line_of_a_varying_series_is_found() {
    let mut y = noisy(800, 5, |_| 30.0);
    for v in &mut y[500..] {
        *v = 30.0;
    }
    let s = run(&y);
    assert!(max_score(&s, 100..500) < 0.5);
    let at = first_fire(&s, 100).expect("flat-line found");
    assert_eq!(s[at].signal, Signal::FlatLine);
    assert!((500..540).contains(&at), "found at {at}");
}

/// A batch host's disk writes: zero, with a burst of random size every 10–40 points.
/// Returns the values and the index just after the last burst.
fn bursty_writes(bursts: usize, seed: u64) -> (Vec<f64>, usize) {
    let mut noise = Noise(seed);
    let mut y = Vec::new();
    for _ in 0..bursts {
        y.push(2e6 + 3e6 * noise.uniform());
        let quiet = 9 + (noise.uniform() * 30.0) as usize;
        y.extend(std::iter::repeat_n(0.0, quiet));
    }
    let stopped = y.len();
    (y, stopped)
}

#[test]
fn bursts_that_stop_for_longer_than_ever_before_are_found() {
    let (mut y, _) = bursty_writes(120, 11);
    // The next burst does not come: 200 points of silence (the longest spell so far is
    // at most 39 points).
    y.push(3e6);
    let stopped = y.len();
    y.extend(std::iter::repeat_n(0.0, 200));
    let s = run(&y);
    assert!(
        s[..stopped].iter().all(|p| p.signal != Signal::Quiet),
        "usual quiet spells must not be findings"
    );
    let found: Vec<usize> = (stopped..y.len()).filter(|&i| s[i].signal == Signal::Quiet).collect();
    assert_eq!(found.len(), 1, "one finding per silence: {found:?}");
    let at = found[0];
    assert!(s[at].score >= 0.5, "scored {}", s[at].score);
    assert_eq!(
        s[at].since_ms,
        Some(stopped as i64 * STEP),
        "the finding begins with the silence"
    );
    // Past 1.2 × the longest earlier spell (≤ 38 points) and three times the mean one
    // (about 23), and well before the silence ends.
    assert!(
        (stopped + 46..stopped + 100).contains(&at),
        "found {} points in",
        at - stopped
    );
}

#[test]
fn a_series_that_varies_is_never_quiet() {
    // Same bursts on top of noise: there is no floor to sit at.
    let (bursts, _) = bursty_writes(120, 12);
    let mut noise = Noise(13);
    let mut y: Vec<f64> = bursts.iter().map(|v| v + 1e6 + 2e5 * noise.gauss()).collect();
    y.extend((0..200).map(|_| 1e6 + 2e5 * noise.gauss()));
    let s = run(&y);
    assert!(s.iter().all(|p| p.signal != Signal::Quiet));
}

#[test]
fn missing_data_does_not_alarm_and_keeps_the_phase() {
    let y = noisy(900, 6, |_| 70.0);
    let cfg = SeriesConfig::default();
    let mut det = SeriesDetector::new();
    let mut worst: f64 = 0.0;
    for (i, &v) in y.iter().enumerate() {
        if (400..460).contains(&i) {
            continue; // an hour of missing scrapes
        }
        let p = det.observe(&cfg, i as i64 * STEP, v).expect("accepted");
        if i > 100 {
            worst = worst.max(p.score);
        }
    }
    assert!(worst < 0.5, "gap caused an alarm: {worst}");
    // The gap was filled, so the point index matches the clock.
    assert_eq!(det.points(), 900);
}

#[test]
fn one_early_scrape_does_not_turn_every_later_spacing_into_a_gap() {
    // Real CloudWatch exports have it: five-minute points with, once, one a minute after
    // the last. Taking that minute as the step filled every later spacing with four
    // invented points, so the ring held a fifth of real data and the day was never learned.
    let mut noise = Noise(12);
    let cfg = SeriesConfig::default();
    let mut det = SeriesDetector::new();
    let mut fed = Vec::new();
    let mut scores = Vec::new();
    for i in 0..6 * DAY {
        let t = i as i64 * 300_000;
        let v = daily_cycle(i) + noise.gauss();
        scores.push(det.observe(&cfg, t, v).expect("accepted"));
        fed.push(v);
        if i == 50 {
            let extra = v + noise.gauss();
            det.observe(&cfg, t + 60_000, extra).expect("accepted");
        }
    }
    assert_eq!(det.step_ms(), Some(300_000));
    assert_eq!(det.points(), fed.len() as u64 + 1, "no invented points");
    let ring: Vec<f64> = det.recent(200).collect();
    let expected: Vec<f64> = fed[fed.len() - 200..].iter().map(|&v| f64::from(v as f32)).collect();
    assert_eq!(ring, expected, "the ring holds what was fed");
    assert_day_learned(&scores);
}

#[test]
fn scrape_jitter_does_not_put_the_learned_day_out_of_phase() {
    // Five-minute points, each up to half a minute off its slot. The median of a few
    // spacings then reads anywhere from about 290 to 310 s from one refit to the next, and a
    // day converted to points with it (298 instead of 288) applied the season hours off.
    let mut noise = Noise(31);
    let cfg = SeriesConfig::default();
    let mut det = SeriesDetector::new();
    let scores: Vec<PointScore> = (0..7 * DAY)
        .map(|i| {
            let jitter = ((noise.uniform() * 2.0 - 1.0) * 30_000.0) as i64;
            let v = daily_cycle(i) + noise.gauss();
            det.observe(&cfg, i as i64 * 300_000 + jitter, v).expect("accepted")
        })
        .collect();
    assert_day_learned(&scores);
}

#[test]
fn bad_points_are_rejected_without_touching_state() {
    let cfg = SeriesConfig::default();
    let mut det = SeriesDetector::new();
    for i in 0..50 {
        det.observe(&cfg, i * STEP, 10.0 + (i % 3) as f64).expect("accepted");
    }
    let before = det.points();
    assert_eq!(det.observe(&cfg, 50 * STEP, f64::NAN), Err(Rejected::NotFinite));
    assert_eq!(det.observe(&cfg, 50 * STEP, f64::INFINITY), Err(Rejected::NotFinite));
    assert_eq!(det.observe(&cfg, 49 * STEP, 10.0), Err(Rejected::NotNewer), "duplicate");
    assert_eq!(
        det.observe(&cfg, 10 * STEP, 10.0),
        Err(Rejected::NotNewer),
        "out of order"
    );
    assert_eq!(det.points(), before);
    assert!(det.observe(&cfg, 50 * STEP, 11.0).is_ok());
}

#[test]
fn extreme_values_never_panic_or_leave_the_unit_interval() {
    let cfg = SeriesConfig::default();
    let mut det = SeriesDetector::new();
    let values = [0.0, 1e300, -1e300, 1e-300, 0.0, f64::MAX, f64::MIN, 5.0];
    for i in 0..2000i64 {
        let v = values[(i as usize * 7) % values.len()];
        if let Ok(p) = det.observe(&cfg, i * STEP, v) {
            assert!((0.0..=1.0).contains(&p.score), "score {} at {i}", p.score);
        }
    }
}

#[test]
fn constant_series_is_quiet_until_it_moves() {
    let mut y = vec![5.0; 600];
    y[450] = 6.0;
    let s = run(&y);
    assert!(max_score(&s, 0..450) < 0.05);
    assert!(s[450].score >= 0.5);
}

#[test]
fn scores_do_not_look_ahead() {
    let mut y = noisy(1200, 7, |i| 10.0 + (i as f64 / 40.0).sin() * 3.0);
    y[900] += 20.0;
    let full = run(&y);
    let prefix = run(&y[..700]);
    assert_eq!(
        &full[..700],
        &prefix[..],
        "a point's score changed when later points were removed"
    );
}

#[test]
fn memory_is_bounded_by_the_history_ring() {
    let cfg = SeriesConfig::default();
    let mut det = SeriesDetector::new();
    for i in 0..5000i64 {
        det.observe(&cfg, i * STEP, (i % 17) as f64).expect("accepted");
    }
    assert_eq!(det.history.len(), cfg.history);
}

#[test]
fn a_nightly_job_spike_is_news_once_and_routine_after_but_a_bigger_one_is_news_again() {
    const FIVE_MIN: i64 = 300_000;
    const PER_DAY: usize = 288;
    let spike_at = |day: usize, jitter: usize| day * PER_DAY + 36 + jitter; // ~03:00
    let mut y = noisy(6 * PER_DAY, 7, |_| 10.0);
    let nights: Vec<usize> = (1..5).map(|d| spike_at(d, [0, 4, 1, 7][d - 1])).collect();
    for &i in &nights {
        y[i] += 20.0;
    }
    let bigger = spike_at(5, 2);
    y[bigger] += 60.0;
    let cfg = SeriesConfig::default();
    let mut det = SeriesDetector::new();
    let s: Vec<PointScore> = y
        .iter()
        .enumerate()
        .map(|(i, &v)| det.observe(&cfg, i as i64 * FIVE_MIN, v).expect("accepted"))
        .collect();
    assert!(s[nights[0]].score >= 0.5, "the first night is news: {:?}", s[nights[0]]);
    for &i in &nights[1..] {
        assert!(s[i].score < 0.5, "night at {i} should be routine: {:?}", s[i]);
        assert!(s[i].z > 10.0, "routine is a verdict, not a changed model: {:?}", s[i]);
    }
    assert!(
        s[bigger].score >= 0.5,
        "three times the usual spike is news: {:?}",
        s[bigger]
    );

    let off = SeriesConfig {
        routine_period_secs: 0,
        ..SeriesConfig::default()
    };
    let mut det = SeriesDetector::new();
    let fired = y
        .iter()
        .enumerate()
        .map(|(i, &v)| det.observe(&off, i as i64 * FIVE_MIN, v).expect("accepted"))
        .enumerate()
        .filter(|(i, p)| nights.contains(i) && p.score >= 0.5)
        .count();
    assert!(
        fired >= 3,
        "without the rule every night fires ({fired} of 4): the test must be able to fail"
    );
}

#[test]
fn traffic_stuck_at_its_night_level_is_found_on_ten_second_points_once_the_day_is_learned() {
    const TEN_S: i64 = 10_000;
    const DAY: i64 = 86_400_000;
    const HOUR: i64 = 3_600_000;
    let daily = |t: i64| 60.0 - 40.0 * (t.rem_euclid(DAY) as f64 * std::f64::consts::TAU / DAY as f64).cos();
    let stuck_from = 3 * DAY + 4 * HOUR;
    let mut noise = Noise(11);
    let cfg = SeriesConfig::default();
    let mut det = SeriesDetector::new();
    let mut quiet_until_stuck = 0.0_f64;
    let mut first_fire = None;
    let mut t = 0;
    while t < 3 * DAY + 10 * HOUR {
        // From 04:00 on day 4 the morning ramp does not come: the value stays where it was.
        let base = if t >= stuck_from { daily(stuck_from) } else { daily(t) };
        let p = det.observe(&cfg, t, base + 2.0 * noise.gauss()).expect("accepted");
        if (2 * DAY + 12 * HOUR..stuck_from).contains(&t) {
            quiet_until_stuck = quiet_until_stuck.max(p.score);
        }
        if t >= stuck_from && first_fire.is_none() && p.score >= 0.5 {
            first_fire = Some(p);
        }
        t += TEN_S;
    }
    assert!(
        quiet_until_stuck < 0.5,
        "false alarm on a normal day: {quiet_until_stuck}"
    );
    let p = first_fire.expect("the missing morning ramp is a finding");
    assert!(
        p.timestamp_ms < stuck_from + HOUR,
        "found at +{} min",
        (p.timestamp_ms - stuck_from) / 60_000
    );
    assert!(
        p.seasonal && p.value < p.lower,
        "the five-minute mean below its daily band: {p:?}"
    );
    assert_eq!(p.signal, Signal::TimeOfDay);
    assert_eq!(
        p.timestamp_ms % 300_000,
        0,
        "reported by the daily view, when its bucket closes: {p:?}"
    );
}

/// Feeds `y` at `step_ms` with the points in `outage` never sent; returns the detector and
/// the index and score of every point that was.
fn run_with_outage(
    y: &[f64],
    outage: std::ops::Range<usize>,
    step_ms: i64,
) -> (SeriesDetector, Vec<(usize, PointScore)>) {
    let cfg = SeriesConfig::default();
    let mut det = SeriesDetector::new();
    let scored = (0..y.len())
        .filter(|i| !outage.contains(i))
        .map(|i| (i, det.observe(&cfg, i as i64 * step_ms, y[i]).expect("accepted")))
        .collect();
    (det, scored)
}

#[test]
fn a_series_back_from_an_outage_longer_than_its_ring_is_judged_as_before() {
    // A host down for a day: 1,440 one-minute points missing, more than the 1,024-point ring.
    // The ring then held nothing but gap-filled points, which have no noise; a refit on them
    // measured a residual scale of almost zero, and the normal noise after the outage fired
    // two dozen times.
    let outage = 1_500..2_940;
    let y = noisy(4_500, 21, |_| 50.0);
    let cfg = SeriesConfig::default();
    let (mut det, scored) = run_with_outage(&y, outage.clone(), STEP);
    let after: Vec<PointScore> = scored
        .into_iter()
        .filter(|&(i, _)| i >= outage.end)
        .map(|(_, p)| p)
        .collect();
    assert_eq!(det.points(), y.len() as u64, "the index follows the clock");
    let worst = after.iter().map(|p| p.score).fold(0.0, f64::max);
    assert!(worst < 0.5, "normal noise after the outage scored {worst}");
    // And the detector still sees: a real spike afterwards fires.
    let p = det.observe(&cfg, y.len() as i64 * STEP, 50.0 + 12.0).expect("accepted");
    assert!(p.score >= 0.5, "spike after the outage scored {}", p.score);
}

#[test]
fn the_daily_phase_survives_an_outage_of_several_days() {
    // Five-minute points with a daily cycle; four days (1,152 points, more than the ring)
    // missing. Only 1,024 filled points fit the ring, but the index must still advance by all
    // 1,152, or the learned day is applied hours out of phase.
    let outage = 5 * DAY..9 * DAY;
    let y = noisy(12 * DAY, 22, daily_cycle);
    let (_, scored) = run_with_outage(&y, outage, 300_000);
    let scores: Vec<PointScore> = scored.into_iter().map(|(_, p)| p).collect();
    assert!(scores[5 * DAY..].iter().all(|p| p.seasonal), "the season is kept");
    assert_day_learned(&scores);
}

#[test]
fn recent_observed_values_leave_out_what_filled_the_gaps() {
    let cfg = SeriesConfig::default();
    let mut det = SeriesDetector::new();
    for i in 0..10 {
        det.observe(&cfg, i * STEP, 20.0).expect("accepted");
    }
    det.observe(&cfg, 10 * STEP, 0.0).expect("accepted");
    // Five steps missing: filled with what was expected there (20), not given.
    det.observe(&cfg, 16 * STEP, 7.0).expect("accepted");
    assert_eq!(det.points(), 17);
    assert_eq!(det.recent(3).collect::<Vec<_>>(), [20.0, 20.0, 7.0]);
    assert_eq!(det.recent_observed(3), [20.0, 0.0, 7.0]);
    assert_eq!(det.recent_observed(100).len(), 12);
}
