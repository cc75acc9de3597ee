//! The series-major evaluation ([`crate::stream`]) against the step-by-step one: the same
//! answers to the bit, the same errors, and a query over more samples than the limit
//! answered when what it holds at once is within it.

use std::cell::Cell;

use super::*;
use crate::eval::range_query_with;

const T0: i64 = 1_700_000_000_000;
const STEP: i64 = 15_000;

/// Series made one at a time when selected one at a time, as a store reading its chunks does;
/// counts the samples handed out by `select` (all at once) and the largest series by
/// `select_each`.
struct Generated {
    series: Vec<Series>,
    largest_handed: Cell<usize>,
}

fn matching<'a>(all: &'a [Series], matchers: &'a [Matcher]) -> impl Iterator<Item = &'a Series> + 'a {
    all.iter().filter(|s| {
        matchers
            .iter()
            .all(|m| m.is_match(s.labels.get(&m.name).map_or("", String::as_str)))
    })
}

fn within(s: &Series, start: i64, end: i64) -> Series {
    Series {
        labels: s.labels.clone(),
        samples: s
            .samples
            .iter()
            .copied()
            .filter(|p| p.t >= start && p.t <= end)
            .collect(),
    }
}

impl Storage for Generated {
    fn select(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Result<Vec<Series>, Error> {
        Ok(matching(&self.series, matchers)
            .map(|s| within(s, start_ms, end_ms))
            .collect())
    }

    fn select_each(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        f: &mut dyn FnMut(Series) -> Result<(), Error>,
    ) -> Result<(), Error> {
        for s in matching(&self.series, matchers) {
            let s = within(s, start_ms, end_ms);
            self.largest_handed.set(self.largest_handed.get().max(s.samples.len()));
            f(s)?;
        }
        Ok(())
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A deterministic mess: counters with resets and gaps, a gauge with NaN and infinities, a
/// series ended by a staleness marker and resumed, two metric names whose series collide
/// once the name is dropped (one before, one after the middle), jittered timestamps.
fn data() -> Generated {
    let mut series = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for host in 0..6 {
        for route in ["a", "b", "c"] {
            let mut samples = Vec::new();
            let mut total = 0.0;
            for i in 0..240 {
                let r = next();
                if r % 17 == 0 {
                    continue; // a missed scrape
                }
                total = if r % 97 == 0 { 0.0 } else { total + (r % 50) as f64 };
                samples.push(Sample {
                    t: T0 + i * STEP + (r % 3) as i64 * 500,
                    v: total,
                });
            }
            let name = format!("host-{host}");
            series.push(Series {
                labels: labels(&[("__name__", "req_total"), ("instance", &name), ("route", route)]),
                samples,
            });
        }
    }
    let mut gauge = Vec::new();
    for i in 0..240 {
        let v = match i % 41 {
            7 => f64::NAN,
            19 => f64::INFINITY,
            _ => (next() % 1000) as f64 / 10.0,
        };
        gauge.push(Sample { t: T0 + i * STEP, v });
    }
    // Ended by a staleness marker at 100, resumed at 130.
    gauge.retain(|p| !(101..130).contains(&((p.t - T0) / STEP)));
    let marker = Sample {
        t: T0 + 100 * STEP + 1,
        v: f64::from_bits(STALE_MARKER_BITS),
    };
    let at = gauge.partition_point(|p| p.t < marker.t);
    gauge.insert(at, marker);
    series.push(Series {
        labels: labels(&[("__name__", "temp"), ("instance", "host-0")]),
        samples: gauge,
    });
    for (name, range) in [("old_total", 0..100), ("new_total", 140..240)] {
        series.push(Series {
            labels: labels(&[("__name__", name), ("instance", "host-9")]),
            samples: range
                .map(|i| Sample {
                    t: T0 + i * STEP,
                    v: i as f64,
                })
                .collect(),
        });
    }
    Generated {
        series,
        largest_handed: Cell::new(0),
    }
}

/// Where two answers differ, or `None` when they are equal to the bit.
fn difference(a: &Result<Vec<Series>, Error>, b: &Result<Vec<Series>, Error>) -> Option<String> {
    match (a, b) {
        (Ok(a), Ok(b)) => {
            if a.len() != b.len() {
                return Some(format!("{} series against {}", a.len(), b.len()));
            }
            for (x, y) in a.iter().zip(b) {
                if x.labels != y.labels || x.samples.len() != y.samples.len() {
                    return Some(format!(
                        "{:?} ({} samples) against {:?} ({})",
                        x.labels,
                        x.samples.len(),
                        y.labels,
                        y.samples.len()
                    ));
                }
                if let Some((p, q)) = x
                    .samples
                    .iter()
                    .zip(&y.samples)
                    .find(|(p, q)| p.t != q.t || p.v.to_bits() != q.v.to_bits())
                {
                    return Some(format!("{:?}: {p:?} against {q:?}", x.labels));
                }
            }
            None
        }
        (Err(a), Err(b)) if a == b => None,
        (a, b) => Some(format!("{:?} against {:?}", a.as_ref().err(), b.as_ref().err())),
    }
}

/// Queries over [`data`]: every range function, each aggregation taken series by series, and
/// shapes that are not (topk, a subquery, `@`, a comparison), errors included.
const QUERIES: &[&str] = &[
    "rate(req_total[5m])",
    "increase(req_total[1m])",
    "sum by (instance) (rate(req_total[5m]))",
    "sum without (route) (irate(req_total[2m]))",
    "avg(delta(temp[3m]))",
    "max by (route) (resets(req_total[10m] offset 2m))",
    "min(changes(temp[5m]))",
    "count(deriv(req_total[5m]))",
    "group by (instance) (idelta(req_total[1m]))",
    "predict_linear(req_total[5m], 300)",
    "holt_winters(temp[10m], 0.3, 0.6)",
    "quantile_over_time(0.9, temp[10m])",
    "avg_over_time(temp[4m])",
    "sum_over_time(temp[4m]) / count_over_time(temp[4m])",
    "stddev_over_time(temp[5m]) + stdvar_over_time(temp[5m])",
    "min_over_time(temp[2m]) - max_over_time(temp[2m])",
    "present_over_time(temp[1m])",
    "last_over_time(temp[1m])",
    "sum(rate({__name__=~\"old_total|new_total\"}[5m]))",
    "rate({__name__=~\"old_total|new_total\"}[5m])",
    "rate({__name__=~\"old_total|new_total\"}[1h])",
    "topk(3, rate(req_total[5m]))",
    "sum(rate(req_total[5m])) by (route) > 1",
    "rate(nothing_here[5m])",
    "sum by (instance) (req_total)",
    "avg(temp offset 1m)",
    "count without (route) (req_total)",
    "max(temp)",
    "min by (route) (req_total)",
    "group({__name__=~\"old_total|new_total\"})",
    "sum({__name__=~\"old_total|new_total\"}) by (instance)",
    "sum(temp @ start())",
    "sum(temp) / count(temp)",
    "temp",
    "req_total offset 1m / 10",
    "temp > 50",
    "timestamp(temp)",
    "{__name__=~\"old_total|new_total\"}",
    "-temp",
    "sum(rate(req_total[5m] @ end()))",
    "max_over_time(rate(req_total[1m])[5m:30s])",
    "holt_winters(temp[10m], 1.5, 0.6)",
];

#[test]
fn series_major_answers_equal_step_by_step_ones_to_the_bit() {
    let store = data();
    let opts = Options::default();
    let (start, end) = (T0 + 10 * 60_000, T0 + 239 * STEP);
    let mut taken = 0;
    for query in QUERIES {
        for step in [15_000, 60_000, 7_000] {
            let fast = range_query_with(&store, query, start, end, step, &opts, true);
            let slow = range_query_with(&store, query, start, end, step, &opts, false);
            if let Some(d) = difference(&fast, &slow) {
                panic!("{query} step {step}: series-major against step by step: {d}");
            }
            taken += usize::from(fast.is_ok());
        }
    }
    // The comparison means something only if most queries answer.
    assert!(taken >= 80, "only {taken} answers");
}

#[test]
fn instant_answers_equal_a_one_step_range_evaluated_step_by_step() {
    let store = data();
    let opts = Options::default();
    let mut answered = 0;
    for query in QUERIES {
        for t in [T0 + 10 * 60_000, T0 + 100 * STEP + 30_000, T0 + 239 * STEP] {
            let instant = instant_query(&store, query, t, &opts).map(|v| match v {
                Value::Vector(elements) => {
                    let mut series: Vec<Series> = elements
                        .into_iter()
                        .map(|el| Series {
                            labels: el.labels,
                            samples: vec![Sample { t, v: el.v }],
                        })
                        .collect();
                    series.sort_by(|a, b| a.labels.cmp(&b.labels));
                    series
                }
                other => panic!("{query}: {other:?}"),
            });
            let slow = range_query_with(&store, query, t, t, 1, &opts, false);
            if let Some(d) = difference(&instant, &slow) {
                panic!("{query} at {t}: instant against step by step: {d}");
            }
            answered += usize::from(instant.is_ok_and(|s| !s.is_empty()));
        }
    }
    assert!(answered >= 70, "only {answered} non-empty answers");
}

#[test]
fn a_selection_past_the_limit_is_answered_when_what_is_held_is_within_it() {
    let store = data();
    let total: usize = store
        .series
        .iter()
        .filter(|s| s.labels["__name__"] == "req_total")
        .map(|s| s.samples.len())
        .sum();
    // Below the 18 series' samples, above one series and the answer.
    let opts = Options {
        max_samples: total / 3,
        ..Options::default()
    };
    let (start, end) = (T0 + 10 * 60_000, T0 + 239 * STEP);
    let query = "sum(rate(req_total[5m]))";
    let slow = range_query_with(&store, query, start, end, STEP, &opts, false);
    assert!(
        matches!(&slow, Err(Error::Execution(m)) if m.contains("too many samples")),
        "{slow:?}"
    );
    let fast = range_query(&store, query, start, end, STEP, &opts).expect("held within the limit");
    assert_eq!(fast.len(), 1);
    assert!(fast[0].samples.len() > 150);
    assert!(store.largest_handed.get() > 0 && store.largest_handed.get() < 240);
    // Without the aggregation every series' answer is held: past the limit it is refused.
    let tight = Options {
        max_samples: 1_000,
        ..Options::default()
    };
    let bare = range_query(&store, "rate(req_total[5m])", start, end, STEP, &tight);
    assert!(
        matches!(&bare, Err(Error::Execution(m)) if m.contains("too many samples")),
        "{bare:?}"
    );
}
