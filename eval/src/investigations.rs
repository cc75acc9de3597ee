//! `vigil-eval investigations DIR`: ranks investigation inputs saved as JSON (one file per
//! case: the rows `POST /api/v1/investigations/read` answers, with the window, baseline,
//! lead-in and the true root cause) and prints AC@1, AC@3 and Avg@5 — the ranking alone,
//! without a replay, so a change to it is measured in seconds. The per-case lines show
//! where the true service landed and what ranked above it.

use std::path::Path;

use serde_json::Value;
use vigil_rca::{Input, LogCount, MetricSeries, SpanRow, TimeRange, WindowLogLine, investigate};

fn range(v: &Value) -> Result<TimeRange, String> {
    serde_json::from_value(v.clone()).map_err(|e| format!("bad range: {e}"))
}

fn rows<T: serde::de::DeserializeOwned>(v: &Value, key: &str) -> Result<Vec<T>, String> {
    serde_json::from_value(v[key].clone()).map_err(|e| format!("bad {key}: {e}"))
}

/// One saved case: the input and the service at fault.
fn load(path: &Path) -> Result<(Input, String, String), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let input = Input {
        window: range(&v["window"])?,
        baseline: range(&v["baseline"])?,
        spans: rows::<SpanRow>(&v, "spans")?,
        log_counts: rows::<LogCount>(&v, "log_counts")?,
        window_lines: rows::<WindowLogLine>(&v, "window_lines")?,
        metrics: rows::<MetricSeries>(&v, "metrics")?,
        services: Vec::new(),
        lead_in: if v["lead_in"].is_null() {
            None
        } else {
            Some(range(&v["lead_in"])?)
        },
    };
    let truth = v["service"].as_str().unwrap_or_default().to_string();
    let kind = v["type"].as_str().unwrap_or_default().to_string();
    Ok((input, truth, kind))
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let dir = args.first().ok_or("usage: vigil-eval investigations DIR [--verbose]")?;
    let verbose = args.iter().any(|a| a == "--verbose");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{dir}: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let (mut top1, mut top3, mut avg5) = (0usize, 0usize, 0.0);
    for path in &paths {
        let (input, truth, kind) = load(path)?;
        let ranked = investigate(&input);
        let rank = ranked.iter().position(|c| c.service == truth);
        top1 += usize::from(rank == Some(0));
        top3 += usize::from(rank.is_some_and(|r| r < 3));
        avg5 += rank.filter(|r| *r < 5).map_or(0.0, |r| (5 - r) as f64 / 5.0);
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
        let shown = rank.map_or(3, |r| r.max(1)).min(ranked.len());
        let above: Vec<String> = ranked[..shown]
            .iter()
            .map(|c| format!("{} {:.3}", c.service.trim_start_matches("ts-"), c.score))
            .collect();
        println!(
            "{name} {kind:<15} {truth:<30} rank {:<5} | {}",
            rank.map_or("-".to_string(), |r| (r + 1).to_string()),
            above.join(", ")
        );
        if verbose {
            for c in ranked.iter().take(rank.map_or(4, |r| r + 2)) {
                println!("    {} {:.3}", c.service, c.score);
                for e in c.evidence.iter().take(4) {
                    println!(
                        "      {:?} {:.1} {}",
                        e.kind,
                        e.strength,
                        e.sentence.chars().take(200).collect::<String>()
                    );
                }
            }
        }
    }
    let n = paths.len().max(1) as f64;
    println!(
        "cases {}  AC@1 {:.3}  AC@3 {:.3}  Avg@5 {:.3}",
        paths.len(),
        top1 as f64 / n,
        top3 as f64 / n,
        avg5 / n
    );
    Ok(())
}
