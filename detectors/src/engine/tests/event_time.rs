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
fn a_kind_that_goes_silent_everywhere_is_one_finding_on_its_volume_once_idle() {
    // Logs stop everywhere at minute 180 while spans go on; the wall clock runs with the
    // data (a live system). The log lane is idle after the allowed lateness of wall time,
    // is brought up to the spans, and its silence becomes one finding on the lane's volume —
    // not one per pattern: nothing says which pattern, or service, stopped.
    let mut e = engine();
    for m in 0..240 {
        e.set_wall_clock(T0 + m * MIN);
        lane_traffic(&mut e, m, m < 180, true);
    }
    let all = findings(&mut e);
    let silence = all
        .values()
        .find(|a| a.signal.key == "lane:logs")
        .unwrap_or_else(|| panic!("the logs' silence: {all:#?}"));
    assert!(
        (T0 + 180 * MIN..T0 + 190 * MIN).contains(&silence.start_ms),
        "{silence:#?}"
    );
    assert_eq!(silence.observed, 0.0);
    assert_eq!(silence.signal.service, None);
    let per_pattern: Vec<_> = all.values().filter(|a| a.signal.key.starts_with("lograte:")).collect();
    assert!(per_pattern.is_empty(), "{per_pattern:#?}");
}

/// Logs in three-minute episodes every eight minutes, half a minute off the grid (a load
/// generator run in episodes, as on the recorded Nezha day), while a host metric arrives
/// every minute and so opens every interval in every lane: orders' line all along, travel's
/// until 90 s into episode `stop_episode`, batch's in every other episode. Returns when
/// travel's line stopped.
fn log_episodes(e: &mut Engine, episodes: i64, stop_episode: i64) -> i64 {
    let labels = BTreeMap::from([("host.name".to_string(), "node-1".to_string())]);
    for m in 0..episodes * 8 {
        e.observe_metric(&MetricPoint {
            key: "cpu|node-1",
            name: "system.cpu.utilization",
            service: None,
            labels: &labels,
            unit: "ratio",
            ts_ms: T0 + m * MIN,
            value: 0.3,
        });
        let (episode, minute) = (m / 8, m % 8);
        if minute >= 3 {
            continue;
        }
        for k in 0..20i64 {
            let ts = T0 + m * MIN + 30_000 + k * 3000;
            let stopped = episode > stop_episode || (episode == stop_episode && (minute, k) >= (1, 10));
            if !stopped {
                e.observe_log("travel", 27, m == 0 && k == 0, "route <*> queried", 9, ts);
            }
            e.observe_log("orders", 2, m == 0 && k == 0, "order <*> placed", 9, ts + 100);
            if episode % 2 == 0 {
                e.observe_log("batch", 3, m == 0 && k == 0, "batch <*> done", 9, ts + 200);
            }
        }
    }
    e.advance(T0 + episodes * 8 * MIN);
    T0 + (stop_episode * 8 + 2) * MIN
}

#[test]
fn a_routine_line_that_stops_is_news_though_its_lane_rests_between_episodes() {
    // The minutes between episodes, when no service logs anything, are a state of the
    // lane, not zeros of each pattern; and an episode's last interval holds half a minute.
    // So when travel's routine line stops in the middle of an episode while orders' goes
    // on, that is news — and nothing before it was.
    let mut e = engine();
    let stop_ms = log_episodes(&mut e, 50, 45);
    let all = findings(&mut e);
    let before: Vec<_> = all
        .values()
        .filter(|a| a.start_ms < stop_ms - MIN && !a.warming_up)
        .collect();
    assert!(before.is_empty(), "findings before the line stopped: {before:#?}");
    let stopped = all
        .values()
        .find(|a| a.signal.key == "lograte:travel:27")
        .unwrap_or_else(|| panic!("the stopped line: {all:#?}"));
    assert!(
        (stop_ms - MIN..=stop_ms + 8 * MIN).contains(&stopped.start_ms),
        "{stopped:#?}"
    );
    assert_eq!(stopped.observed, 0.0);
}

#[test]
fn a_routine_line_that_stops_is_news_before_its_band_is_learned() {
    // Eight episodes: one or two scored minutes each, far from the points a band needs.
    // Travel's line came twenty times in each of them; none at all is no chance — a finding,
    // marked as still learning. Batch's line, absent from every other episode, stopping is
    // nothing.
    let mut e = engine();
    let stop_ms = log_episodes(&mut e, 10, 8);
    let all = findings(&mut e);
    let stopped = all
        .values()
        .find(|a| a.signal.key == "lograte:travel:27")
        .unwrap_or_else(|| panic!("the stopped line: {all:#?}"));
    assert_eq!(stopped.start_ms, stop_ms, "{stopped:#?}");
    assert!(stopped.warming_up);
    assert!(stopped.score > 0.99 && stopped.observed == 0.0, "{stopped:#?}");
    assert_eq!(stopped.lower, 20.0, "the band its last intervals drew: {stopped:#?}");
    assert!(all.values().all(|a| a.signal.key != "lograte:batch:3"), "{all:#?}");
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
    // …and a long quiet spell closes every lane's last intervals (the very last one, before
    // the silence, is not scored).
    e.set_wall_clock(wall + 10 * MIN);
    for key in ["lograte:cart:1", "red:checkout:POST /pay:rate"] {
        let last = e.tracked.get(key).map(|t| t.last_seen_ms);
        assert_eq!(last, Some(T0 + 58 * MIN), "{key}");
    }
}

#[test]
fn a_kind_that_ended_hours_early_holds_no_later_window_back() {
    // A replay: logs for the first hour only, spans for five. Once the logs have been quiet
    // for the lateness, a window after their end is settled by the spans alone, though the
    // logs' clock (which follows the wall clock from their own last event) stays hours
    // behind; a window the logs had data in still waits for their clock.
    let wall = T0 + 10_000 * MIN;
    let mut e = engine();
    e.set_wall_clock(wall);
    for m in 0..300 {
        lane_traffic(&mut e, m, m < 60, true);
    }
    let settled = |e: &Engine, start: i64, end: i64| e.lane_progress().iter().all(|l| l.settled_for(start, end));
    let late_window = (T0 + 200 * MIN, T0 + 204 * MIN);
    let early_window = (T0 + 58 * MIN, T0 + 62 * MIN);
    assert_eq!(e.lane_progress().len(), 2, "{:?}", e.lane_progress());
    assert!(e.settled_time() < T0 + 60 * MIN, "the logs hold the settled time back");
    // Within the lateness nothing is known to be quiet: the logs may only be delayed.
    e.set_wall_clock(wall + 60_000);
    assert!(!settled(&e, late_window.0, late_window.1));
    e.set_wall_clock(wall + 3 * MIN);
    assert!(settled(&e, late_window.0, late_window.1), "{:?}", e.lane_progress());
    assert!(!settled(&e, early_window.0, early_window.1), "{:?}", e.lane_progress());
    assert!(e.settled_time() < T0 + 64 * MIN);
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
    // Quiet for longer than the lateness: the lanes are idle and their intervals close (the
    // last one before the silence holds part of a minute as far as anyone can tell, and is
    // not scored).
    e.set_wall_clock(wall + 10 * MIN);
    assert_eq!(last(&e), [Some(T0 + 8 * MIN); 2]);
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
    // Graced: the first minute back, and the last interval before each silence (minute 219,
    // and 270, the data's end).
    assert_eq!(p99_starts(true), (vec![261], 3), "after a silence");
    let (starts, graced) = p99_starts(false);
    assert_eq!(graced, 1, "only the data's last interval");
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
    // Two intervals overlap each first minute, and each episode's last interval (and the
    // steady traffic's) is followed by a silence.
    assert_eq!(e.stats().intervals_graced, 4 + 3);
}
