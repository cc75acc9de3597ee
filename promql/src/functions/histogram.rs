//! `histogram_quantile` over classic `le` buckets, as Prometheus computes it.

use crate::value::{Labels, VectorElement, drop_name};

/// `histogram_quantile(φ, buckets)` over classic `le` buckets.
pub(super) fn histogram_quantile(q: f64, v: Vec<VectorElement>) -> Vec<VectorElement> {
    let mut groups: std::collections::BTreeMap<Labels, Vec<(f64, f64)>> = std::collections::BTreeMap::new();
    for el in v {
        let Some(upper) = el.labels.get("le").and_then(|le| parse_bound(le)) else {
            continue;
        };
        // Buckets are grouped by every label but `le` — the metric name too, so two
        // histograms whose other labels agree are not merged into one (Prometheus then
        // refuses the result: both answers would carry the same labels).
        let mut key = el.labels;
        key.remove("le");
        groups.entry(key).or_default().push((upper, el.v));
    }
    groups
        .into_iter()
        .map(|(labels, buckets)| VectorElement {
            labels: drop_name(labels),
            v: bucket_quantile(q, buckets),
        })
        .collect()
}

fn parse_bound(le: &str) -> Option<f64> {
    match le.trim() {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

/// Prometheus' `bucketQuantile`: the bucket holding the rank, interpolated linearly.
fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Buckets with the same bound (series that differ only in a dropped label) add up.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for (bound, count) in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == bound => last.1 += count,
            _ => merged.push((bound, count)),
        }
    }
    // Counts must not fall with the bound (scrapes of buckets are not atomic).
    let mut max = f64::NEG_INFINITY;
    for b in &mut merged {
        if b.1 > max {
            max = b.1;
        } else {
            b.1 = max;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = merged[..merged.len() - 1]
        .iter()
        .position(|b| b.1 >= rank)
        .unwrap_or(merged.len() - 1);
    if b == merged.len() - 1 {
        return merged[merged.len() - 2].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let (mut start, end, mut count) = (0.0, merged[b].0, merged[b].1);
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    start + (end - start) * (rank / count)
}
