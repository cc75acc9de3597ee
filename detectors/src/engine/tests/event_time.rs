//! Event time per kind of signal: clocks, held-back kinds, idleness, bounded intervals.

use super::*;

#[test]
fn one_host_with_a_fast_clock_does_not_make_everyone_else_late() {
    let mut e = engine();
    // checkout and payment report on time; the batch host's clock runs ten minutes fast.
    for m in 0..30i64 {
        for k in 0..20i64 {
            let ts = T0 + m * MIN + k * 3000;
            e.observe_span("checkout", "POST /pay", ts, 0.2, false);
            e.observe_span("payment", "charge", ts + 100, 0.1, false);
            e.observe_span("batch", "run", ts + 10 * MIN, 0.5, false);
        }
    }
    assert_eq!(e.stats().late_events, 0, "on-time spans dropped as late");
    // Nothing was silent: the fast host being ahead is not traffic coming back.
    assert_eq!(e.stats().intervals_graced, 0);
    // Intervals still close as the on-time sources move on.
    assert!(e.event_time() >= T0 + 29 * MIN, "{}", e.event_time());
    assert!(e.stats().points_scored > 0);
}

/// Spans of checkout and payment, and a heartbeat log line of cart, for minute `m`.
fn lane_traffic(e: &mut Engine, m: i64, logs: bool, spans: bool) {
    for k in 0..10i64 {
        let ts = T0 + m * MIN + k * 6000;
        if spans {
            e.observe_span("checkout", "POST /pay", ts, 0.2, false);
            e.observe_span("payment", "charge", ts + 100, 0.1, false);
        }
        if logs {
            e.observe_log("cart", 1, m == 0 && k == 0, "heartbeat ok", 9, ts + 200);
            e.observe_log("orders", 2, m == 0 && k == 0, "order <*> placed", 9, ts + 300);
        }
    }
}

#[test]
fn logs_held_back_behind_spans_are_counted_not_dropped() {
    // A log pipeline that batches for half an hour while spans flow on time: each kind has
    // its own clock, so the logs arrive behind the spans but not late.
    let mut e = engine();
    for m in 0..30 {
        lane_traffic(&mut e, m, true, true);
    }
    for block in 1..4i64 {
        for m in block * 30..block * 30 + 30 {
            lane_traffic(&mut e, m, false, true);
        }
        for m in block * 30..block * 30 + 30 {
            lane_traffic(&mut e, m, true, false);
        }
    }
    assert_eq!(e.stats().late_events, 0, "held-back logs dropped as late");
    let log_rates = e.tracked.get("lograte:cart:1").map(|t| t.last_seen_ms);
    assert_eq!(
        log_rates,
        Some(T0 + 116 * MIN),
        "log intervals closed by the logs' own clock (lateness: 2 min)"
    );
}

#[test]
fn a_kind_that_goes_silent_everywhere_is_scored_as_zeros_once_idle() {
    // Logs stop everywhere at minute 180 while spans go on; the wall clock runs with the
    // data (a live system). The log lane is idle after the allowed lateness of wall time,
    // is brought up to the spans, and the heartbeat's silence becomes a finding.
    let mut e = engine();
    for m in 0..240 {
        e.set_wall_clock(T0 + m * MIN);
        lane_traffic(&mut e, m, m < 180, true);
    }
    let all = findings(&mut e);
    let silence = all
        .values()
        .find(|a| a.signal.key == "lograte:cart:1")
        .unwrap_or_else(|| panic!("the heartbeat's silence: {all:#?}"));
    assert!(
        (T0 + 180 * MIN..T0 + 190 * MIN).contains(&silence.start_ms),
        "{silence:#?}"
    );
}

#[test]
fn a_lane_far_behind_keeps_a_bounded_number_of_intervals_open() {
    // No wall clock (a replay): a lane that stopped is never idle, but its open intervals
    // are bounded.
    let mut e = engine();
    for m in 0..10 {
        lane_traffic(&mut e, m, true, true);
    }
    for m in 10..(lanes::MAX_OPEN_INTERVALS as i64 + 200) {
        lane_traffic(&mut e, m, false, true);
    }
    let logs = &e.lanes[lanes::Lane::Logs as usize];
    assert_eq!(logs.buckets.len(), lanes::MAX_OPEN_INTERVALS);
    assert_eq!(e.stats().late_events, 0);
}

#[test]
fn a_quiet_spell_moves_each_lane_from_its_own_latest_event() {
    let wall = T0 + 1000 * MIN;
    let mut e = engine();
    e.set_wall_clock(wall);
    for m in 0..60 {
        lane_traffic(&mut e, m, m < 30, true);
    }
    // A second with no data at all: the logs, half an hour behind, stay behind…
    e.set_wall_clock(wall + 1000);
    for m in 30..60 {
        lane_traffic(&mut e, m, true, false);
    }
    assert_eq!(e.stats().late_events, 0, "the quiet spell made the held-back logs late");
    // …and a long quiet spell closes every lane's last intervals.
    e.set_wall_clock(wall + 10 * MIN);
    for key in ["lograte:cart:1", "red:checkout:POST /pay:rate"] {
        let last = e.tracked.get(key).map(|t| t.last_seen_ms);
        assert_eq!(last, Some(T0 + 59 * MIN), "{key}");
    }
}

#[test]
fn a_pause_shorter_than_the_lateness_closes_nothing() {
    // The pipeline stalls for 90 s (an index commit, a slow disk) with no batch reaching the
    // detectors: no kind went quiet, so no interval may close early — where intervals close
    // must not depend on how fast the data came (a replay at any speed, the same answers).
    let wall = T0 + 1000 * MIN;
    let mut e = engine();
    e.set_wall_clock(wall);
    for m in 0..10 {
        lane_traffic(&mut e, m, true, true);
    }
    let last = |e: &Engine| {
        ["lograte:cart:1", "red:checkout:POST /pay:rate"].map(|k| e.tracked.get(k).map(|t| t.last_seen_ms))
    };
    let before = last(&e);
    e.set_wall_clock(wall + 90_000);
    assert_eq!(last(&e), before, "a 90 s stall closed intervals");
    // Quiet for longer than the lateness: the lanes are idle and their intervals close.
    e.set_wall_clock(wall + 10 * MIN);
    assert_eq!(last(&e), [Some(T0 + 9 * MIN); 2]);
}

#[test]
fn a_kind_coming_back_after_a_silence_is_not_scored_for_its_first_minute() {
    // Checkout's spans, then its first minute back ten times slower (a load test starting,
    // cold caches), then steady again, and from minute 261 one request in four slow by 2.2 s.
    // With twenty minutes of silence before the cold minute, that minute is not scored and the
    // fault still is; without the silence, the same slow minute is a finding of its own.
    let p99_starts = |silent_before: bool| {
        let mut e = engine();
        let steady = |_: i64, k: u64| 0.2 + 0.1 * jitter(k);
        pay_traffic(&mut e, 0, if silent_before { 220 } else { 240 }, steady);
        pay_traffic(&mut e, 240, 1, |_, k| 2.5 + 0.1 * jitter(k));
        pay_traffic(&mut e, 241, 20, steady);
        pay_traffic(&mut e, 261, 10, |m, k| {
            steady(m, k) + if k % 4 == 0 { 2.2 } else { 0.0 }
        });
        e.advance(T0 + 273 * MIN);
        let stats = e.stats();
        let mut starts: Vec<i64> = findings(&mut e)
            .values()
            .filter(|a| a.signal.key == "red:checkout:POST /pay:p99")
            .map(|a| (a.start_ms - T0) / MIN)
            .collect();
        starts.sort_unstable();
        (starts, stats.intervals_graced)
    };
    assert_eq!(p99_starts(true), (vec![261], 1), "after a silence");
    let (starts, graced) = p99_starts(false);
    assert_eq!(graced, 0);
    assert_eq!(
        starts.first(),
        Some(&240),
        "without a silence the slow minute is a finding"
    );
}

#[test]
fn short_episodes_are_not_scored_for_their_first_minute_either() {
    // Traffic in three-minute episodes half a minute off the interval grid (a load generator
    // run in episodes, as on the recorded Nezha day), each episode's first minute ten times
    // slower. An episode ends within the lateness of its first minute, so that minute's
    // second interval is still open when the next episode comes back — it must be judged
    // against the resumption it belongs to, not the next one (it was scored: a finding at
    // every episode's start, before any fault).
    let mut e = engine();
    let steady = |_: i64, k: u64| 0.2 + 0.1 * jitter(k);
    pay_traffic(&mut e, 0, 200, steady);
    for episode_start in [220, 230] {
        for m in episode_start..episode_start + 3 {
            for k in 0..20u64 {
                let ts = T0 + m * MIN + 30_000 + (k as i64) * 3000;
                let cold = m == episode_start;
                let latency = if cold { 2.5 + 0.1 * jitter(k) } else { steady(m, k) };
                e.observe_span("checkout", "POST /pay", ts, latency, false);
            }
        }
    }
    e.advance(T0 + 240 * MIN);
    let slow: Vec<i64> = findings(&mut e)
        .values()
        .filter(|a| a.signal.key.starts_with("red:checkout:POST /pay:p"))
        .map(|a| (a.start_ms - T0) / MIN)
        .collect();
    assert_eq!(slow, Vec::<i64>::new(), "an episode's cold first minute was scored");
    assert_eq!(e.stats().intervals_graced, 4, "two intervals overlap each first minute");
}
