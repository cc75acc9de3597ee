//! Cost of the per-series detector at fleet scale, on one core: SERIES series (default
//! 50,000) at 10 s resolution, POINTS points each (default 600, 100 minutes, so every
//! series goes through its cold start and several refits). The baseline, measured in the
//! same run on the same points, is a windowed-Gaussian z-score (EWMA mean and variance),
//! the cheapest detector that exists; the ratio says what the real one costs on top.
//!
//! Prints points/s, how many times real time that is for 50,000 series at 10 s
//! (5,000 points/s), resident memory per series, and the size and cost of the state the
//! collector saves at shutdown.
//!
//! Run: `cargo bench -p vigil-detectors --bench series`. `SERIES=5000 POINTS=20000` (2.3 days
//! per series) shows the steady state, with every ring and the daily view full.

use std::time::Instant;

use vigil_detectors::{SeriesConfig, SeriesDetector};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Resident set size in bytes (Linux), 0 elsewhere.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// Three shapes: noisy constant, hourly cycle, random walk; deterministic.
fn value(series: usize, i: usize, state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    let noise = (*state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
    match series % 3 {
        0 => 50.0 + noise,
        1 => 100.0 + 20.0 * (i as f64 * std::f64::consts::TAU / 360.0).sin() + noise,
        _ => (series as f64) + (i as f64 * 0.01) + noise * 3.0,
    }
}

struct Ewma {
    mean: f64,
    var: f64,
}

fn main() {
    let n_series = env("SERIES", 50_000);
    let points = env("POINTS", 600);
    let cfg = SeriesConfig::default();
    let total = (n_series * points) as f64;

    // Baseline: EWMA z-score over the same generated values.
    let mut base: Vec<Ewma> = (0..n_series).map(|_| Ewma { mean: 0.0, var: 1.0 }).collect();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut sink = 0.0;
    let started = Instant::now();
    for i in 0..points {
        for (s, e) in base.iter_mut().enumerate() {
            let v = value(s, i, &mut state);
            let z = (v - e.mean) / e.var.sqrt().max(1e-9);
            let d = v - e.mean;
            e.mean += 0.01 * d;
            e.var = 0.99 * (e.var + 0.01 * d * d);
            sink += z.abs().min(10.0);
        }
    }
    let base_secs = started.elapsed().as_secs_f64();

    let rss_before = rss();
    let mut detectors: Vec<SeriesDetector> = (0..n_series).map(|_| SeriesDetector::new()).collect();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut fired = 0u64;
    let started = Instant::now();
    for i in 0..points {
        let ts = i as i64 * 10_000;
        for (s, d) in detectors.iter_mut().enumerate() {
            let v = value(s, i, &mut state);
            if let Ok(p) = d.observe(&cfg, ts, v) {
                fired += u64::from(p.score >= 0.5);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let rss_after = rss();
    let per_series = rss_after.saturating_sub(rss_before) as f64 / n_series as f64;
    let rate = total / secs;
    println!("series={n_series} points/series={points} total points={total:.0} (sink {sink:.0}, findings {fired})");
    println!("baseline ewma z-score: {:.0} points/s", total / base_secs);
    println!(
        "vigil series detector: {rate:.0} points/s ({:.1} µs/point)",
        secs * 1e6 / total
    );
    println!(
        "ratio detector/baseline throughput: {:.4}",
        (total / secs) / (total / base_secs)
    );
    println!(
        "real-time factor for 50,000 series at 10 s (5,000 points/s): {:.1}x on one core",
        rate / 5_000.0
    );
    println!("resident memory per series: {:.1} KiB", per_series / 1024.0);

    // What the collector's state file holds per series, and how long the JSON takes.
    let started = Instant::now();
    let json = serde_json::to_vec(&detectors).unwrap_or_default();
    let save_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let back: Vec<SeriesDetector> = serde_json::from_slice(&json).unwrap_or_default();
    let load_secs = started.elapsed().as_secs_f64();
    assert_eq!(back.len(), n_series, "the saved state reads back");
    println!(
        "detector state as JSON: {:.1} KiB per series, written in {save_secs:.2} s, read in {load_secs:.2} s for {n_series} series",
        json.len() as f64 / n_series as f64 / 1024.0
    );
}
