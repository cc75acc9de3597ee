//! The engine against series held in memory; expected figures worked out by hand from
//! Prometheus' definitions (the end-to-end test compares with a real Prometheus).

use super::*;

/// Series in memory, selected as a storage would.
struct Memory(Vec<Series>);

impl Storage for Memory {
    fn select(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Result<Vec<Series>, Error> {
        Ok(self
            .0
            .iter()
            .filter(|s| {
                matchers
                    .iter()
                    .all(|m| m.is_match(s.labels.get(&m.name).map_or("", String::as_str)))
            })
            .map(|s| Series {
                labels: s.labels.clone(),
                samples: s
                    .samples
                    .iter()
                    .copied()
                    .filter(|p| p.t >= start_ms && p.t <= end_ms)
                    .collect(),
            })
            .collect())
    }
}

const T0: i64 = 1_700_000_000_000;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A series with a sample every `every_s` seconds from T0 for `n` samples, valued `f(i)`.
fn series(pairs: &[(&str, &str)], every_s: i64, n: i64, f: impl Fn(i64) -> f64) -> Series {
    Series {
        labels: labels(pairs),
        samples: (0..n)
            .map(|i| Sample {
                t: T0 + i * every_s * 1000,
                v: f(i),
            })
            .collect(),
    }
}

fn store() -> Memory {
    Memory(vec![
        // A counter rising 10 per 15 s scrape on two instances, the second reset once.
        series(
            &[("__name__", "http_requests_total"), ("job", "api"), ("instance", "a")],
            15,
            41,
            |i| 10.0 * i as f64,
        ),
        series(
            &[("__name__", "http_requests_total"), ("job", "api"), ("instance", "b")],
            15,
            41,
            |i| if i < 20 { 5.0 * i as f64 } else { 5.0 * (i - 20) as f64 },
        ),
        series(&[("__name__", "up"), ("job", "api"), ("instance", "a")], 15, 41, |_| {
            1.0
        }),
        series(&[("__name__", "up"), ("job", "api"), ("instance", "b")], 15, 41, |_| {
            0.0
        }),
        series(&[("__name__", "limit"), ("job", "api")], 15, 41, |_| 100.0),
        // Cumulative histogram buckets: 10 observations ≤ 0.1, 30 ≤ 0.5, 40 in all.
        series(&[("__name__", "lat_bucket"), ("le", "0.1")], 15, 41, |_| 10.0),
        series(&[("__name__", "lat_bucket"), ("le", "0.5")], 15, 41, |_| 30.0),
        series(&[("__name__", "lat_bucket"), ("le", "+Inf")], 15, 41, |_| 40.0),
    ])
}

fn at(query: &str, t_ms: i64) -> Result<Value, Error> {
    instant_query(&store(), query, t_ms, &Options::default())
}

fn vector(query: &str, t_ms: i64) -> Vec<VectorElement> {
    match at(query, t_ms) {
        Ok(Value::Vector(v)) => v,
        other => panic!("{query}: {other:?}"),
    }
}

fn one(query: &str, t_ms: i64) -> f64 {
    let v = vector(query, t_ms);
    assert_eq!(v.len(), 1, "{query}: {v:?}");
    v[0].v
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[test]
fn instant_selectors_look_back_five_minutes_and_no_further() {
    // The last sample is at T0 + 600 s.
    assert_eq!(one(r#"http_requests_total{instance="a"}"#, T0 + 600_000), 400.0);
    assert_eq!(one(r#"http_requests_total{instance="a"}"#, T0 + 607_000), 400.0);
    assert_eq!(
        one(r#"http_requests_total{instance="a"}"#, T0 + 900_000),
        400.0,
        "5 min: still there"
    );
    assert!(vector(r#"http_requests_total{instance="a"}"#, T0 + 900_001).is_empty());
    assert!(vector(r#"http_requests_total{instance="a"}"#, T0 - 1).is_empty());
    // offset moves the selector back.
    assert_eq!(
        one(r#"http_requests_total{instance="a"} offset 1m"#, T0 + 600_000),
        360.0
    );
    // @ pins it.
    assert_eq!(
        one(r#"http_requests_total{instance="a"} @ 1700000030"#, T0 + 600_000),
        20.0
    );
    // Regex and negative matchers, and no series at all.
    assert_eq!(vector(r#"http_requests_total{instance=~"a|b"}"#, T0 + 600_000).len(), 2);
    assert_eq!(vector(r#"http_requests_total{instance!="a"}"#, T0 + 600_000).len(), 1);
    assert!(vector("no_such_metric", T0).is_empty());
}

#[test]
fn rate_and_increase_extrapolate_like_prometheus() {
    // Window [T0+240 s, T0+300 s] holds samples at 240..300 s (5 samples, 40 apart each).
    // Both edges sit on samples: no extrapolation; 40 over 60 s.
    let r = one(r#"rate(http_requests_total{instance="a"}[1m])"#, T0 + 300_000);
    assert!(close(r, 40.0 / 60.0), "{r}");
    // 10 s into the next scrape: the window [250, 310] holds 255..300 (4 samples, 30 over
    // 45 s); 5 s to the start and 10 s to the end, both under 1.1 × 15 s: extrapolated to
    // 60 s, 40 in all.
    let inc = one(r#"increase(http_requests_total{instance="a"}[1m])"#, T0 + 310_000);
    assert!(close(inc, 30.0 * 60.0 / 45.0), "{inc}");
    // A counter reset in the window (instance b: 95 → 0 at sample 20) adds the value lost.
    let b = one(r#"increase(http_requests_total{instance="b"}[1m])"#, T0 + 330_000);
    // Samples 18..22: 90, 95, 0, 5, 10 → 10 − 90 + 95 = 15, edges on samples.
    assert!(close(b, 15.0), "{b}");
    // The name is dropped; one sample is not enough.
    let v = vector("rate(http_requests_total[1m])", T0 + 300_000);
    assert!(v.iter().all(|el| !el.labels.contains_key(METRIC_NAME)));
    assert!(vector(r#"rate(http_requests_total{instance="a"}[10s])"#, T0 + 300_000).is_empty());
    // irate: the last two samples.
    assert!(close(
        one(r#"irate(http_requests_total{instance="a"}[1m])"#, T0 + 300_000),
        10.0 / 15.0
    ));
}

#[test]
fn counters_extrapolate_no_further_back_than_zero() {
    // From its first sample (0 at T0) the counter cannot be extrapolated below zero: the
    // window [T0-30 s, T0+30 s] holds 0, 10, 20 — 20 over 30 s, extended to the end (0 s)
    // but not past zero at the start.
    let inc = one(r#"increase(http_requests_total{instance="a"}[1m])"#, T0 + 30_000);
    assert!(close(inc, 20.0), "{inc}");
}

#[test]
fn aggregations_group_by_and_without() {
    let t = T0 + 300_000;
    assert_eq!(one("sum(up)", t), 1.0);
    assert_eq!(one("count(up)", t), 2.0);
    let by = vector("sum by (instance) (http_requests_total)", t);
    assert_eq!(by.len(), 2);
    assert_eq!(by[0].labels, labels(&[("instance", "a")]));
    let without = vector("max without (instance) (http_requests_total)", t);
    assert_eq!(without.len(), 1);
    assert_eq!(without[0].labels, labels(&[("job", "api")]));
    assert_eq!(without[0].v, 200.0);
    let top = vector("topk(1, http_requests_total)", t);
    assert_eq!(top.len(), 1);
    assert_eq!(top[0].labels["instance"], "a", "topk keeps the series' own labels");
    assert_eq!(one("quantile(0.5, http_requests_total)", t), (200.0 + 0.0) / 2.0);
    assert_eq!(one("stddev(up)", t), 0.5);
    let values = vector("count_values(\"v\", up)", t);
    assert_eq!(values.len(), 2);
    assert!(values.iter().any(|el| el.labels["v"] == "1" && el.v == 1.0));
}

#[test]
fn topk_with_a_k_beyond_int64_is_an_error_as_in_prometheus() {
    // Prometheus 2.42's answers (run against it): 422 "Scalar value NaN overflows int64",
    // also for an empty input; a k below one keeps nothing.
    let t = T0 + 300_000;
    for (k, shown) in [("NaN", "NaN"), ("Inf", "+Inf"), ("-Inf", "-Inf"), ("1e20", "1e+20")] {
        for query in [format!("topk({k}, up)"), format!("bottomk({k}, nonexistent)")] {
            let e = at(&query, t).expect_err(&query);
            assert_eq!(
                (e.http_status(), e.message()),
                (422, format!("Scalar value {shown} overflows int64").as_str()),
                "{query}"
            );
        }
    }
    assert!(vector("topk(0.5, up)", t).is_empty());
    assert_eq!(vector("topk(2.7, up)", t).len(), 2);
}

#[test]
fn binary_operators_match_vectors_like_prometheus() {
    let t = T0 + 300_000;
    // One-to-one on all labels but the name.
    let ratio = vector("http_requests_total / http_requests_total", t);
    assert_eq!(ratio.len(), 2);
    assert!(ratio.iter().all(|el| !el.labels.contains_key(METRIC_NAME)));
    // Filtering comparison keeps the left side's value and name; `bool` gives 0/1.
    let up = vector("up == 1", t);
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].labels[METRIC_NAME], "up");
    let b = vector("up == bool 1", t);
    assert_eq!(b.len(), 2);
    assert!(b.iter().all(|el| !el.labels.contains_key(METRIC_NAME)));
    // Scalar on the left of a comparison: still the vector's value.
    assert_eq!(one("1 < http_requests_total", t), 200.0);
    // Many-to-one with group_left takes in the one side's labels.
    let share = vector("http_requests_total / on (job) group_left limit", t);
    assert_eq!(share.len(), 2);
    assert!(share.iter().any(|el| el.labels["instance"] == "a" && el.v == 2.0));
    // Without group_left, duplicates on the many side are an error that says so.
    match at("http_requests_total / on (job) limit", t) {
        Err(Error::Execution(m)) => assert!(m.contains("many-to-one matching must be explicit"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Set operators.
    assert_eq!(vector("http_requests_total and up == 1", t).len(), 1);
    assert_eq!(vector("http_requests_total unless up == 1", t).len(), 1);
    assert_eq!(vector("up or http_requests_total", t).len(), 2);
    assert_eq!(vector("up or on (job) limit", t).len(), 2);
    // Scalars.
    assert_eq!(at("2 * 3 + 1", t), Ok(Value::Scalar(7.0)));
    assert_eq!(at("1 > bool 2", t), Ok(Value::Scalar(0.0)));
}

#[test]
fn histogram_quantile_interpolates_inside_the_bucket() {
    // Rank 20 of 40 falls in (0.1, 0.5], 10 of its 20 observations in: 0.1 + 0.4 × 0.5.
    let q = one("histogram_quantile(0.5, lat_bucket)", T0 + 60_000);
    assert!(close(q, 0.3), "{q}");
    // Past the last finite bucket: its bound.
    assert!(close(one("histogram_quantile(0.99, lat_bucket)", T0 + 60_000), 0.5));
    assert!(one("histogram_quantile(2, lat_bucket)", T0 + 60_000).is_infinite());
    // Two histograms whose labels agree but for the name are not merged: as in Prometheus
    // 2.42 (run against it), both answers carry the same labels, which is an error.
    let bucket = |v: u32, le: &str, name: &str| {
        format!(
            "label_replace(label_replace(vector({v}), \"le\", \"{le}\", \"\", \"\"), \"__name__\", \"{name}\", \"\", \"\")"
        )
    };
    let a = format!("{} or {}", bucket(1, "1", "a_bucket"), bucket(2, "+Inf", "a_bucket"));
    let b = format!("{} or {}", bucket(5, "1", "b_bucket"), bucket(5, "+Inf", "b_bucket"));
    assert_eq!(one(&format!("histogram_quantile(0.5, {a})"), T0), 1.0);
    let both = format!("histogram_quantile(0.5, ({a}) or on(__name__, le) ({b}))");
    let e = at(&both, T0).expect_err("same labelset twice");
    assert_eq!(
        (e.http_status(), e.message()),
        (422, "vector cannot contain metrics with the same labelset"),
        "{both}"
    );
}

#[test]
fn range_queries_step_and_subqueries_align() {
    let m = range_query(&store(), "up", T0, T0 + 60_000, 30_000, &Options::default()).expect("range");
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].samples.len(), 3);
    assert_eq!(m[0].samples[2].t, T0 + 60_000);
    // A subquery: max over 1 min of the counter at 15 s steps. The steps are multiples of
    // 15 s since the epoch — T0 + 10 s + 15 k here (T0 is 5 s past one) — so the latest,
    // T0 + 295 s, sees the sample of T0 + 285 s.
    let v = one(
        r#"max_over_time(http_requests_total{instance="a"}[1m:15s])"#,
        T0 + 300_000,
    );
    assert_eq!(v, 190.0);
    let rate_max = one(
        r#"max_over_time(rate(http_requests_total{instance="a"}[1m])[2m:30s])"#,
        T0 + 300_000,
    );
    assert!(close(rate_max, 40.0 / 60.0), "{rate_max}");
    // A range selector is no answer to a range query.
    assert!(matches!(
        range_query(&store(), "up[1m]", T0, T0 + 60_000, 30_000, &Options::default()),
        Err(Error::BadData(_))
    ));
}

#[test]
fn functions_over_time_labels_and_dates() {
    let t = T0 + 300_000;
    assert_eq!(one(r#"count_over_time(up{instance="a"}[1m])"#, t), 5.0);
    assert_eq!(one(r#"sum_over_time(up{instance="a"}[1m])"#, t), 5.0);
    assert_eq!(
        vector(r#"last_over_time(up{instance="a"}[1m])"#, t)[0].labels[METRIC_NAME],
        "up",
        "last_over_time keeps the name"
    );
    let deriv = one(r#"deriv(http_requests_total{instance="a"}[1m])"#, t);
    assert!(close(deriv, 10.0 / 15.0), "{deriv}");
    let predicted = one(r#"predict_linear(http_requests_total{instance="a"}[1m], 60)"#, t);
    assert!(close(predicted, 240.0), "{predicted}");
    let replaced = vector(r#"label_replace(up, "host", "$1-x", "instance", "(.*)")"#, t);
    assert!(
        replaced
            .iter()
            .any(|el| el.labels.get("host").map(String::as_str) == Some("a-x"))
    );
    let joined = vector(r#"label_join(up, "both", "/", "job", "instance")"#, t);
    assert!(joined.iter().any(|el| el.labels["both"] == "api/a"));
    assert_eq!(one("absent(nope{job=\"x\"})", t), 1.0);
    assert_eq!(vector("absent(nope{job=\"x\"})", t)[0].labels, labels(&[("job", "x")]));
    assert!(vector("absent(up)", t).is_empty());
    // 2023-11-14T22:13:20Z.
    assert_eq!(one("year()", T0), 2023.0);
    assert_eq!(one("month()", T0), 11.0);
    assert_eq!(one("day_of_month()", T0), 14.0);
    assert_eq!(one("day_of_week()", T0), 2.0);
    assert_eq!(one("hour()", T0), 22.0);
    assert_eq!(one("days_in_month()", T0), 30.0);
    assert_eq!(one("day_of_year()", T0), 318.0);
    assert_eq!(at("time()", T0), Ok(Value::Scalar(1_700_000_000.0)));
    let ts = one(r#"timestamp(up{instance="a"})"#, T0 + 20_000);
    assert_eq!(ts, (T0 + 15_000) as f64 / 1000.0, "the sample's own time");
}

#[test]
fn bad_queries_and_limits_say_what_is_wrong() {
    match at("sum(", T0) {
        Err(Error::BadData(m)) => assert!(m.contains("query"), "{m}"),
        other => panic!("{other:?}"),
    }
    let tight = Options {
        max_samples: 10,
        ..Options::default()
    };
    match instant_query(&store(), "http_requests_total[10m]", T0 + 600_000, &tight) {
        Err(Error::Execution(m)) => assert!(m.contains("too many samples"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        range_query(&store(), "up", T0, T0 + 86_400_000, 1, &Options::default()),
        Err(Error::BadData(_))
    ));
    // Times and durations far out of range are refused or held in range, never overflow.
    assert!(matches!(at("up", i64::MAX), Err(Error::BadData(_))));
    assert!(matches!(
        range_query(&store(), "up", i64::MIN, i64::MAX, i64::MAX, &Options::default()),
        Err(Error::BadData(_))
    ));
    assert_eq!(at("up offset 100000000y", T0), Ok(Value::Vector(Vec::new())));
    assert_eq!(at("up @ 1e15", T0), Ok(Value::Vector(Vec::new())));
    assert!(at("max_over_time(up[100000000y:1d])", T0).is_ok());
    let tight = Options {
        max_samples: 1_000,
        ..Options::default()
    };
    match instant_query(&store(), "max_over_time(nothing[1000y:1ms])", T0, &tight) {
        Err(Error::Execution(m)) => assert!(m.contains("too many samples"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn answers_are_written_as_the_prometheus_api_writes_them() {
    assert_eq!(json::format_value(0.1), "0.1");
    assert_eq!(json::format_value(1e21), "1000000000000000000000");
    assert_eq!(json::format_value(f64::NAN), "NaN");
    assert_eq!(json::format_value(f64::NEG_INFINITY), "-Inf");
    let data = json::instant_data(&at("up == 1", T0 + 1_500).expect("query"), T0 + 1_500);
    assert_eq!(
        data,
        serde_json::json!({"resultType": "vector", "result": [{
            "metric": {"__name__": "up", "instance": "a", "job": "api"},
            "value": [1_700_000_001.5, "1"],
        }]})
    );
    let e = json::failure(&Error::BadData("x".into()));
    assert_eq!(e["errorType"], "bad_data");
}

#[test]
fn a_staleness_marker_ends_the_series() {
    let stale = f64::from_bits(STALE_MARKER_BITS);
    let store = Memory(vec![Series {
        labels: labels(&[("__name__", "up"), ("job", "gone")]),
        samples: vec![
            Sample { t: T0, v: 1.0 },
            Sample { t: T0 + 15_000, v: 1.0 },
            Sample {
                t: T0 + 30_000,
                v: stale,
            },
        ],
    }]);
    let opts = Options::default();
    let at = |q: &str, t: i64| instant_query(&store, q, t, &opts).expect("query");
    assert_eq!(
        at("up", T0 + 20_000),
        Value::Vector(vec![VectorElement {
            labels: labels(&[("__name__", "up"), ("job", "gone")]),
            v: 1.0
        }])
    );
    // Gone from the marker on, not five minutes later.
    assert_eq!(at("up", T0 + 31_000), Value::Vector(Vec::new()));
    // Range windows leave the marker out.
    assert_eq!(
        at("count_over_time(up[1m])", T0 + 40_000),
        Value::Vector(vec![VectorElement {
            labels: labels(&[("job", "gone")]),
            v: 2.0
        }])
    );
}

/// Findings of a review against Prometheus 2.42's engine, each a regression test.
#[test]
fn review_findings_answer_as_prometheus_does() {
    let t = T0 + 300_000;
    // Dropping the name may make two elements alike: an error, not two equal label sets.
    match at(r#"{__name__=~"up|http_requests_total"} * 2"#, t) {
        Err(Error::Execution(m)) => assert!(m.contains("same labelset"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        at(r#"-{__name__=~"up|http_requests_total"}"#, t),
        Err(Error::Execution(_))
    ));
    // A comparison filters before one-to-one matching counts a match: no element survives
    // here, so no "multiple matches" error.
    assert_eq!(at("up > on (job) limit", t), Ok(Value::Vector(Vec::new())));
    // A number the parser cannot hold is bad input, not a crash.
    assert!(matches!(at("up[1e400]", t), Err(Error::BadData(_))));
    // NaN: clamp propagates it (Go's math.Max), sort puts it last.
    assert!(one("clamp_min(vector(NaN), 0)", t).is_nan());
    let sorted = vector(
        "sort_desc(vector(NaN) or label_replace(vector(1), \"a\", \"b\", \"\", \"\"))",
        t,
    );
    assert!(sorted[1].v.is_nan(), "{sorted:?}");
    // timestamp() sees through parentheses.
    assert_eq!(
        one(r#"timestamp((up{instance="a"}))"#, T0 + 20_000),
        (T0 + 15_000) as f64 / 1000.0
    );
    // absent(): a label with another matcher, or an empty value, names nothing.
    assert_eq!(
        vector(r#"absent(nope{job="a", job!="b", env=""})"#, t)[0].labels,
        Labels::new()
    );
    // Exactly 11,000 steps is allowed.
    assert!(range_query(&store(), "up", T0, T0 + 11_000, 1, &Options::default()).is_ok());
}

/// Answers to the last digit, as Prometheus 2.42 gives them for the same samples (`promtool
/// test rules`): compensated sums in `sum_over_time`, `stddev`, `stddev_over_time` and `deriv`,
/// compensated running means in `avg` and `avg_over_time`, a plain sum in `sum`.
#[test]
fn float_arithmetic_agrees_with_prometheus_to_the_last_digit() {
    let s = Memory(
        vec![
            series(&[("__name__", "x")], 60, 4, |i| [1e100, 1.0, -1e100, 0.0][i as usize]),
            series(&[("__name__", "z")], 60, 10, |i| (i + 1) as f64 / 10.0),
            series(&[("__name__", "r")], 60, 11, |i| 1e15 + i as f64 * 0.37),
            series(&[("__name__", "big"), ("a", "1")], 60, 1, |_| 1e308),
            series(&[("__name__", "big"), ("a", "2")], 60, 1, |_| 1e308),
            series(&[("__name__", "s"), ("a", "1")], 60, 1, |_| 1e100),
            series(&[("__name__", "s"), ("a", "2")], 60, 1, |_| 1.0),
            series(&[("__name__", "s"), ("a", "3")], 60, 1, |_| -1e100),
        ]
        .into_iter()
        .chain((1..=10).map(|i| {
            let name = format!("{i:02}");
            series(&[("__name__", "tenth"), ("a", &name)], 60, 1, move |_| {
                f64::from(i) / 10.0
            })
        }))
        .collect(),
    );
    let one = |q: &str, t_ms: i64| match instant_query(&s, q, t_ms, &Options::default()) {
        Ok(Value::Vector(v)) if v.len() == 1 => v[0].v,
        other => panic!("{q}: {other:?}"),
    };
    assert_eq!(one("sum_over_time(x[3m])", T0 + 180_000), 1.0);
    assert_eq!(one("avg_over_time(x[3m])", T0 + 180_000), 0.0);
    assert_eq!(one("stdvar_over_time(x[3m])", T0 + 180_000), 5e199);
    assert_eq!(one("stddev_over_time(z[10m])", T0 + 540_000), 0.287_228_132_326_901_4);
    assert_eq!(one("avg_over_time(z[10m])", T0 + 540_000), 0.55);
    assert_eq!(one("deriv(r[10m])", T0 + 600_000), 0.006_464_646_464_646_465);
    assert_eq!(
        one("predict_linear(r[10m], 0)", T0 + 600_000),
        1.000_000_000_000_003_9e15
    );
    assert_eq!(one("avg(big)", T0), 1e308);
    assert_eq!(one("sum(big)", T0), f64::INFINITY);
    assert_eq!(one("sum(s)", T0), 0.0);
    assert_eq!(one("avg(s)", T0), 0.0);
    assert_eq!(one("stddev(s)", T0), 8.164_965_809_277_261e99);
    assert_eq!(one("avg(tenth)", T0), 0.55);
    assert_eq!(one("stddev(tenth)", T0), 0.287_228_132_326_901_4);
}
