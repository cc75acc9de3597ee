//! How the query root merges its workers' answers: log hits by time, newest first; totals,
//! histogram buckets and services' counts summed; log patterns by template; findings
//! newest first; metric series listed together.

use serde_json::{Value, json};

/// A nanosecond timestamp field of an answer (the API writes them as decimal strings).
pub(super) fn nanos(value: &Value, field: &str) -> i128 {
    value[field].as_str().and_then(|t| t.parse().ok()).unwrap_or(0)
}

/// Sums the totals and keeps the newest `limit` hits of all answers.
pub(super) fn merge_search(bodies: Vec<Value>, limit: usize) -> Value {
    let mut total = 0u64;
    let mut hits = Vec::new();
    for body in bodies {
        total += body["total"].as_u64().unwrap_or(0);
        if let Value::Array(h) = &body["hits"] {
            hits.extend(h.iter().cloned());
        }
    }
    hits.sort_by_key(|h| std::cmp::Reverse(nanos(h, "time_unix_nano")));
    hits.truncate(limit);
    json!({ "total": total, "hits": hits })
}

/// Adds the workers' counts bucket by bucket (the pinned range gives them one grid).
pub(super) fn merge_histograms(bodies: Vec<Value>) -> Value {
    let mut interval = Value::Null;
    let mut counts: std::collections::BTreeMap<i64, u64> = std::collections::BTreeMap::new();
    for body in bodies {
        interval = body["interval_ms"].clone();
        for b in body["buckets"].as_array().into_iter().flatten() {
            let start = b["start_ms"].as_i64().unwrap_or(0);
            *counts.entry(start).or_default() += b["count"].as_u64().unwrap_or(0);
        }
    }
    let buckets: Vec<Value> = counts
        .into_iter()
        .map(|(s, c)| json!({ "start_ms": s, "count": c }))
        .collect();
    json!({ "interval_ms": interval, "buckets": buckets })
}

/// Each worker mines its own patterns, so ids are its own: the same template from two workers
/// is one pattern here (counts summed, the earliest first sighting, new only if new on every
/// worker that has it, the busiest worker's id and sample).
pub(super) fn merge_patterns(bodies: Vec<Value>, limit: usize) -> Value {
    let mut by_template: Vec<(String, Value)> = Vec::new();
    for body in bodies {
        for p in body["patterns"].as_array().into_iter().flatten() {
            let key = match p["template"].as_str() {
                Some(t) => t.to_string(),
                None => format!("\u{0}{}", p["pattern_id"]),
            };
            match by_template.iter_mut().find(|(k, _)| *k == key) {
                None => by_template.push((key, p.clone())),
                Some((_, merged)) => {
                    let (a, b) = (merged["count"].as_u64().unwrap_or(0), p["count"].as_u64().unwrap_or(0));
                    if b > a {
                        merged["pattern_id"] = p["pattern_id"].clone();
                        merged["sample"] = p["sample"].clone();
                    }
                    merged["count"] = json!(a + b);
                    merged["is_new"] =
                        json!(merged["is_new"].as_bool().unwrap_or(false) && p["is_new"].as_bool().unwrap_or(false));
                    if let (Some(x), Some(y)) = (merged["first_seen"].as_str(), p["first_seen"].as_str())
                        && y < x
                    {
                        merged["first_seen"] = p["first_seen"].clone();
                    }
                }
            }
        }
    }
    let mut patterns: Vec<Value> = by_template.into_iter().map(|(_, p)| p).collect();
    patterns.sort_by_key(|p| std::cmp::Reverse(p["count"].as_u64().unwrap_or(0)));
    patterns.truncate(limit);
    json!({ "patterns": patterns })
}

/// A service's records live in one partition, so normally on one worker; summed all the same
/// (during a hand-over both may hold part of it).
pub(super) fn merge_services(bodies: Vec<Value>) -> Value {
    let mut by_name: std::collections::BTreeMap<String, (u64, u64)> = std::collections::BTreeMap::new();
    for body in bodies {
        for s in body["services"].as_array().into_iter().flatten() {
            let entry = by_name
                .entry(s["name"].as_str().unwrap_or_default().to_string())
                .or_default();
            entry.0 += s["spans"].as_u64().unwrap_or(0);
            entry.1 += s["logs"].as_u64().unwrap_or(0);
        }
    }
    let services: Vec<Value> = by_name
        .into_iter()
        .map(|(name, (spans, logs))| json!({ "name": name, "spans": spans, "logs": logs }))
        .collect();
    json!({ "services": services })
}

/// Every worker's `key` lists together, newest start first (as each worker orders its own),
/// cut to `limit`.
pub(super) fn merge_newest_first(bodies: Vec<Value>, key: &str, limit: usize) -> Value {
    let mut items: Vec<Value> = bodies
        .iter()
        .flat_map(|b| b[key].as_array().cloned().unwrap_or_default())
        .collect();
    items.sort_by(|a, b| {
        let start = |v: &Value| v["start_ms"].as_i64().unwrap_or(0);
        start(b)
            .cmp(&start(a))
            .then_with(|| a["id"].as_str().cmp(&b["id"].as_str()))
    });
    items.truncate(limit);
    json!({ key: items })
}

/// A metric's series live in the partition of their service, so on one worker: the
/// workers' lists together, ordered by labels as one collector orders them, cut to `limit`.
pub(super) fn merge_metric_series(bodies: Vec<Value>, limit: usize) -> Value {
    let mut series: Vec<Value> = bodies
        .iter()
        .flat_map(|b| b["series"].as_array().cloned().unwrap_or_default())
        .collect();
    series.sort_by_cached_key(|s| s["labels"].to_string());
    series.truncate(limit);
    json!({ "series": series })
}

/// The workers' series of one metric query, on the one step grid the pinned range gives
/// them, ordered by labels; cut short if any worker's scan was.
pub(super) fn merge_metric_query(bodies: Vec<Value>) -> Value {
    let (mut name, mut step_ms, mut truncated) = (Value::Null, Value::Null, false);
    let mut series = Vec::new();
    for body in bodies {
        name = body["name"].clone();
        let result = &body["result"];
        step_ms = result["step_ms"].clone();
        truncated |= result["truncated"].as_bool().unwrap_or(false);
        series.extend(result["series"].as_array().cloned().unwrap_or_default());
    }
    series.sort_by_cached_key(|s| s["labels"].to_string());
    json!({ "name": name, "result": { "step_ms": step_ms, "series": series, "truncated": truncated } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_answers_merge_newest_first_and_totals_add_up() {
        let a = json!({ "total": 3, "hits": [{"time_unix_nano": "30"}, {"time_unix_nano": "10"}] });
        let b = json!({ "total": 5, "hits": [{"time_unix_nano": "20"}, {"time_unix_nano": "5"}] });
        let merged = merge_search(vec![a, b], 3);
        assert_eq!(merged["total"], 8);
        let times: Vec<i128> = merged["hits"]
            .as_array()
            .expect("hits")
            .iter()
            .map(|h| nanos(h, "time_unix_nano"))
            .collect();
        assert_eq!(times, vec![30, 20, 10]);
    }

    #[test]
    fn patterns_merge_by_template_across_workers() {
        let a = json!({ "patterns": [
            {"pattern_id": 1, "template": "user <*> logged in", "count": 5, "is_new": false, "first_seen": "2026-01-02", "sample": "a"},
            {"pattern_id": 2, "template": "disk full", "count": 1, "is_new": true, "first_seen": "2026-01-03", "sample": "d"},
        ]});
        let b = json!({ "patterns": [
            {"pattern_id": 7, "template": "user <*> logged in", "count": 9, "is_new": true, "first_seen": "2026-01-01", "sample": "b"},
        ]});
        let merged = merge_patterns(vec![a, b], 10);
        let first = &merged["patterns"][0];
        assert_eq!(first["count"], 14);
        assert_eq!(first["pattern_id"], 7, "the busiest worker's id and sample");
        assert_eq!(first["sample"], "b");
        assert_eq!(first["first_seen"], "2026-01-01");
        assert_eq!(first["is_new"], false, "new only where new everywhere");
        assert_eq!(merged["patterns"][1]["template"], "disk full");
        assert_eq!(
            merge_patterns(vec![merged.clone()], 1)["patterns"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn findings_from_every_worker_come_newest_first() {
        let a = json!({ "incidents": [{"id": "a2", "start_ms": 20}, {"id": "a1", "start_ms": 5}] });
        let b = json!({ "incidents": [{"id": "b1", "start_ms": 10}] });
        let merged = merge_newest_first(vec![a, b], "incidents", 2);
        assert_eq!(
            merged,
            json!({ "incidents": [{"id": "a2", "start_ms": 20}, {"id": "b1", "start_ms": 10}] })
        );
    }

    #[test]
    fn services_add_up_by_name() {
        let a = json!({ "services": [{"name": "cart", "spans": 3, "logs": 1}] });
        let b =
            json!({ "services": [{"name": "cart", "spans": 1, "logs": 0}, {"name": "api", "spans": 2, "logs": 2}] });
        assert_eq!(
            merge_services(vec![a, b]),
            json!({ "services": [{"name": "api", "spans": 2, "logs": 2}, {"name": "cart", "spans": 4, "logs": 1}] })
        );
    }

    #[test]
    fn histogram_counts_add_bucket_by_bucket() {
        let a =
            json!({ "interval_ms": 1000, "buckets": [{"start_ms": 0, "count": 2}, {"start_ms": 1000, "count": 1}] });
        let b = json!({ "interval_ms": 1000, "buckets": [{"start_ms": 1000, "count": 4}] });
        let merged = merge_histograms(vec![a, b]);
        assert_eq!(
            merged["buckets"],
            json!([{"start_ms": 0, "count": 2}, {"start_ms": 1000, "count": 5}])
        );
    }

    #[test]
    fn metric_query_answers_join_on_one_grid_and_say_when_cut() {
        let a = json!({ "name": "m", "result": { "step_ms": 60000, "truncated": false,
            "series": [{"labels": {"service.name": "b"}, "values": [[0, 1.0]]}] } });
        let b = json!({ "name": "m", "result": { "step_ms": 60000, "truncated": true,
            "series": [{"labels": {"service.name": "a"}, "values": [[0, 2.0]]}] } });
        let merged = merge_metric_query(vec![a, b]);
        assert_eq!(merged["result"]["truncated"], true);
        assert_eq!(merged["result"]["step_ms"], 60000);
        assert_eq!(merged["result"]["series"][0]["labels"]["service.name"], "a");
        assert_eq!(merged["result"]["series"][1]["labels"]["service.name"], "b");
        let listed = merge_metric_series(
            vec![
                json!({"series": [{"labels": {"x": "2"}}]}),
                json!({"series": [{"labels": {"x": "1"}}]}),
            ],
            1,
        );
        assert_eq!(listed, json!({"series": [{"labels": {"x": "1"}}]}));
    }
}
