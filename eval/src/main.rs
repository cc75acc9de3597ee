//! `vigil-eval`: runs the product's default detectors on benchmark input.
//!
//! `vigil-eval patterns` reads message bodies on stdin, one per line, and prints one
//! line per input: `<pattern id>\t<template>` (the template as it stands after the
//! whole input, so every line of a group shows the same final template).
//!
//! `vigil-eval nab --data DIR --out RESULTS` scores every NAB csv online, row by row.
//!
//! `vigil-eval rca --case DIR` feeds `normal.csv` then `anomalous.csv` (wide, `time` in
//! unix seconds) through onset detection and ranking and prints the ranked services as JSON;
//! `--all ROOT` runs every `<service>-<fault>/<rep>/` case and prints AC@1, AC@3 and Avg@5.
//!
//! `vigil-eval nezha` replays the Nezha Train-Ticket day into a fresh collector and prints
//! the scores of its incidents and of its investigations (see `nezha.rs`).
//!
//! `vigil-eval investigations DIR` ranks saved investigation inputs and scores them (see
//! `investigations.rs`).

mod investigations;
mod loghub;
mod nezha;

use std::io::{self, BufRead, BufWriter, Write};
use std::process::ExitCode;

use vigil_detectors::PatternMiner;
use vigil_detectors::{SeriesConfig, SeriesDetector};
use vigil_rca::{BaroCandidate, BaroSignal, baro_rank, find_onset};

/// Column names, row times (unix ms) and one vector of values per column.
type WideCsv = (Vec<String>, Vec<i64>, Vec<Vec<f64>>);

/// Reads one wide CSV (`time` in unix seconds, then one column per signal).
fn read_wide(path: &std::path::Path) -> Result<WideCsv, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .ok_or_else(|| format!("{}: empty", path.display()))?
        .split(',')
        .map(|h| h.trim().to_string())
        .collect();
    if header.first().map(String::as_str) != Some("time") {
        return Err(format!("{}: the first column must be `time`", path.display()));
    }
    let mut times = Vec::new();
    let mut columns = vec![Vec::new(); header.len() - 1];
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut cells = line.split(',');
        let t: f64 = cells
            .next()
            .and_then(|c| c.trim().parse().ok())
            .ok_or_else(|| format!("{} line {}: bad time", path.display(), n + 2))?;
        times.push((t * 1000.0) as i64);
        for col in columns.iter_mut() {
            // Missing or unparsable cells are gaps, not errors: real exports have them.
            col.push(cells.next().and_then(|c| c.trim().parse().ok()).unwrap_or(f64::NAN));
        }
    }
    Ok((header[1..].to_vec(), times, columns))
}

/// `carts-db_cpu` belongs to service `carts-db`; the metric is after the first `_`.
fn service_of(column: &str) -> &str {
    column.split_once('_').map_or(column, |(s, _)| s)
}

/// Feeds normal then anomalous rows through onset detection and ranking.
fn rca_case(dir: &std::path::Path) -> Result<Vec<BaroCandidate>, String> {
    let (names, mut times, mut cols) = read_wide(&dir.join("normal.csv"))?;
    let (names2, times2, cols2) = read_wide(&dir.join("anomalous.csv"))?;
    if names != names2 {
        return Err(format!(
            "{}: normal.csv and anomalous.csv have different columns",
            dir.display()
        ));
    }
    times.extend(times2);
    for (c, more) in cols.iter_mut().zip(cols2) {
        c.extend(more);
    }
    let signals: Vec<BaroSignal> = names
        .iter()
        .zip(cols)
        .map(|(n, values)| BaroSignal {
            name: n.clone(),
            service: service_of(n).to_string(),
            values,
        })
        .collect();
    let onset = find_onset(&times, &signals).unwrap_or(times.len() / 2);
    Ok(baro_rank(&signals, onset))
}

fn rca(args: &[String]) -> Result<(), String> {
    match args {
        [flag, dir] if flag == "--case" => {
            let ranked = rca_case(std::path::Path::new(dir))?;
            let out: Vec<serde_json::Value> = ranked
                .iter()
                .map(|c| serde_json::json!({"service": c.service, "score": (c.score * 1000.0).round() / 1000.0, "signal": c.signal, "reason": c.reason}))
                .collect();
            println!("{}", serde_json::Value::Array(out));
            Ok(())
        }
        [flag, root] if flag == "--all" => {
            // Every <service>-<fault>/<rep>/ under root; the truth is the directory's service.
            let mut cases = Vec::new();
            let mut faults: Vec<_> = std::fs::read_dir(root)
                .map_err(|e| format!("{root}: {e}"))?
                .flatten()
                .collect();
            faults.sort_by_key(|e| e.file_name());
            for f in faults {
                let name = f.file_name().to_string_lossy().to_string();
                let Some((truth, _fault)) = name.rsplit_once('-') else {
                    continue;
                };
                let mut reps: Vec<_> = std::fs::read_dir(f.path())
                    .map_err(|e| e.to_string())?
                    .flatten()
                    .collect();
                reps.sort_by_key(|e| e.file_name());
                for r in reps {
                    if r.path().join("anomalous.csv").exists() {
                        cases.push((truth.to_string(), r.path()));
                    }
                }
            }
            let mut hits = [0usize; 5];
            for (truth, path) in &cases {
                let ranked = rca_case(path)?;
                let pos = ranked.iter().position(|c| &c.service == truth);
                for (k, h) in hits.iter_mut().enumerate() {
                    if pos.is_some_and(|p| p <= k) {
                        *h += 1;
                    }
                }
                let top: Vec<&str> = ranked.iter().take(3).map(|c| c.service.as_str()).collect();
                println!(
                    "{}\ttruth={truth}\trank={}\ttop3={top:?}",
                    path.display(),
                    pos.map_or("-".to_string(), |p| (p + 1).to_string())
                );
            }
            let n = cases.len().max(1) as f64;
            let ac: Vec<f64> = hits.iter().map(|&h| h as f64 / n).collect();
            println!(
                "cases={} AC@1={:.3} AC@3={:.3} Avg@5={:.3}",
                cases.len(),
                ac[0],
                ac[2],
                ac.iter().sum::<f64>() / 5.0
            );
            Ok(())
        }
        _ => Err("usage: vigil-eval rca --case DIR | vigil-eval rca --all ROOT".into()),
    }
}

/// Parses `YYYY-MM-DD HH:MM[:SS[.fff]]` (NAB's timestamps, the Nezha fault list's
/// `inject_time`) as UTC, in unix milliseconds.
pub(crate) fn parse_civil_ms(s: &str) -> Option<i64> {
    let (date, time) = s.trim().split_once([' ', 'T'])?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (hh, mm) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?);
    let ss: f64 = t.next().unwrap_or("0").parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(((days * 86400 + hh * 3600 + mm * 60) as f64 * 1000.0 + ss * 1000.0) as i64)
}

/// Scores one NAB csv online; returns the output csv text.
fn nab_file(text: &str, cfg: &SeriesConfig) -> Result<String, String> {
    // Beyond the three columns NAB reads, each row carries the detector's reasoning so a
    // human can check a finding: expected value, band, robust z and the signal kind.
    let mut out = String::from("timestamp,value,anomaly_score,expected,lower,upper,z,signal\n");
    let mut det = SeriesDetector::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let (ts, value) = line
            .split_once(',')
            .ok_or_else(|| format!("line {}: expected timestamp,value", n + 1))?;
        let ms = parse_civil_ms(ts).ok_or_else(|| format!("line {}: bad timestamp {ts:?}", n + 1))?;
        let v: f64 = value
            .trim()
            .parse()
            .map_err(|_| format!("line {}: bad value {value:?}", n + 1))?;
        // A rejected point (late, duplicate, NaN) still needs its output row: score 0.
        match det.observe(cfg, ms, v) {
            Ok(p) => out.push_str(&format!(
                "{ts},{value},{:.6},{:.6},{:.6},{:.6},{:.3},{:?}\n",
                p.score, p.expected, p.lower, p.upper, p.z, p.signal
            )),
            Err(reason) => out.push_str(&format!("{ts},{value},0,,,,,{reason:?}\n")),
        }
    }
    Ok(out)
}

fn nab(args: &[String]) -> Result<(), String> {
    let mut data = None;
    let mut out = None;
    // Overrides of the detector's constants (`--set cusum_threshold=16`), for
    // cross-validation: the defaults are what the product runs with.
    let mut overrides = serde_json::Map::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--data" => data = it.next().cloned(),
            "--out" => out = it.next().cloned(),
            "--set" => {
                let kv = it.next().ok_or("--set takes key=value")?;
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("--set {kv:?}: expected key=value"))?;
                let value: serde_json::Value =
                    serde_json::from_str(v).map_err(|e| format!("--set {k}: {v:?} is not a number ({e})"))?;
                overrides.insert(k.to_string(), value);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let (Some(data), Some(out)) = (data, out) else {
        return Err("usage: vigil-eval nab --data DIR --out RESULTS [--set constant=value]...".into());
    };
    let mut cfg_json = serde_json::to_value(SeriesConfig::default()).map_err(|e| e.to_string())?;
    if let Some(obj) = cfg_json.as_object_mut() {
        for (k, v) in overrides {
            if !obj.contains_key(&k) {
                return Err(format!("--set {k}: the detector has no such constant"));
            }
            obj.insert(k, v);
        }
    }
    let cfg: SeriesConfig = serde_json::from_value(cfg_json).map_err(|e| format!("--set: {e}"))?;
    let mut files = 0;
    let mut categories: Vec<_> = std::fs::read_dir(&data)
        .map_err(|e| format!("{data}: {e}"))?
        .flatten()
        .collect();
    categories.sort_by_key(|e| e.file_name());
    for cat in categories {
        if !cat.path().is_dir() {
            continue;
        }
        let out_dir = std::path::Path::new(&out).join(cat.file_name());
        std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
        let mut entries: Vec<_> = std::fs::read_dir(cat.path())
            .map_err(|e| e.to_string())?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for f in entries {
            let path = f.path();
            if path.extension().is_none_or(|e| e != "csv") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let scored = nab_file(&text, &cfg).map_err(|e| format!("{}: {e}", path.display()))?;
            let target = out_dir.join(f.file_name());
            std::fs::write(&target, scored).map_err(|e| format!("{}: {e}", target.display()))?;
            files += 1;
        }
    }
    eprintln!("vigil-eval nab: scored {files} files into {out}");
    Ok(())
}

/// `vigil-eval patterns`: one line of stdin in, one `id<TAB>template` line out, as
/// `../shared/tools/loghub_ga.py --cmd` reads them.
fn patterns() -> io::Result<()> {
    let mut miner = PatternMiner::default();
    let mut ids = Vec::new();
    let mut stdin = io::stdin().lock();
    let mut buf = Vec::new();
    let mut i: i64 = 0;
    loop {
        buf.clear();
        if stdin.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        // Lossy: a stray byte still gives one output line per input line.
        let line = String::from_utf8_lossy(&buf);
        ids.push(miner.add(line.trim_end_matches(['\n', '\r']), i).pattern_id);
        i += 1;
    }
    let mut out = BufWriter::new(io::stdout().lock());
    write_patterns(&miner, &ids, &mut out)?;
    out.flush()
}

/// Each line's pattern as the miner knows it at the end: one merged since the line was read
/// (a position that turned out to vary, such as a host name of words) counts as the pattern
/// it was merged into, as the collector's catalogue shows it and as `vigil-eval loghub`
/// scores it. Printing the id a line got when it was read scored such a set as if every
/// merge had failed (the word-host rewrite of OpenStack: 0.28 instead of 0.96).
fn write_patterns(miner: &PatternMiner, ids: &[u64], out: &mut impl Write) -> io::Result<()> {
    for &id in ids {
        let id = miner.resolve(id);
        let template = miner.get(id).map(|p| p.template()).unwrap_or_default();
        writeln!(out, "{id}\t{template}")?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("patterns") => patterns(),
        Some("nab") => nab(&args[1..]).map_err(io::Error::other),
        Some("rca") => rca(&args[1..]).map_err(io::Error::other),
        Some("nezha") => nezha::run(&args[1..]).map_err(io::Error::other),
        Some("loghub") => loghub::run(&args[1..]).map_err(io::Error::other),
        Some("investigations") => investigations::run(&args[1..]).map_err(io::Error::other),
        _ => {
            eprintln!(
                "usage: vigil-eval patterns < messages.txt\n       vigil-eval nab --data DIR --out RESULTS\n       vigil-eval rca --case DIR | --all ROOT\n       {}\n       {}",
                nezha::USAGE,
                loghub::USAGE
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-eval: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_prints_the_pattern_a_line_was_merged_into() {
        // A host name of words before each line: every host starts its own pattern, until
        // the position is seen to vary (a host before three kinds of line, exchanged for
        // others) and they merge. Each event must print one id.
        let hosts: Vec<String> = ["web", "api", "db", "cache"]
            .iter()
            .flat_map(|r| ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"].map(|n| format!("{r}-{n}")))
            .collect();
        let mut miner = PatternMiner::default();
        let mut ids = Vec::new();
        let events = [
            "connection accepted from peer",
            "session closed by client",
            "cache warmed in background",
            "request queue drained fully",
        ];
        for i in 0..200 {
            let line = format!("{} {}", hosts[(i * 7 / 4) % hosts.len()], events[i % 4]);
            ids.push(miner.add(&line, i as i64).pattern_id);
        }
        let mut out = Vec::new();
        write_patterns(&miner, &ids, &mut out).expect("write");
        let printed: Vec<String> = String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(|l| l.split('\t').next().unwrap_or_default().to_string())
            .collect();
        assert_eq!(printed.len(), 200);
        for e in 0..4 {
            assert!(
                printed.iter().skip(e).step_by(4).all(|id| *id == printed[e]),
                "event {e}: {printed:?}"
            );
        }
        let distinct: std::collections::BTreeSet<&String> = printed[..4].iter().collect();
        assert_eq!(distinct.len(), 4, "four events, four patterns: {printed:?}");
    }
}
