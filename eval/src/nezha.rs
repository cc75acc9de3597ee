//! `vigil-eval nezha`: the Nezha Train-Ticket day, end to end, measured the same way every
//! time. Starts a fresh collector (the release binary beside this one, on a temporary data
//! directory and free loopback ports), replays the day into it over OTLP/HTTP with the
//! shared `nezha_replay.py`, waits until everything is indexed and the detectors' event
//! time has passed the end of the data plus the allowed lateness, then scores with the
//! shared `rca_incident_score.py`: the collector's own incidents, and an investigation of
//! each fault's first three minutes.
//!
//! Both scores are printed twice. The replay tool times each fault by the fault list's
//! `inject_timestamp`, but 24 of the day's 28 are eight hours early (a local-time
//! conversion; some also a minute off) — a window there holds no data at all — while the
//! list's `inject_time` follows the recording's own clock (the minute files around each
//! fault are named by it). So the faults are also scored at `inject_time`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const USAGE: &str = "vigil-eval nezha [--data DIR] [--tools DIR] [--collector PATH] [--as-recorded] [--window SECS] [--grid-phase SECS] [--keep DIR]";

/// Runs `nezha_replay.py` (argv: tool, phase, then the tool's own arguments) with the clock it
/// shifts the day by pinned to the latest second at or before now that puts the detectors'
/// minute grid `phase` seconds into the recording's minutes. The tool ends the day
/// `--end-offset` (60 s) before "now" by its last metric row; reading that row the same way
/// here is the only thing repeated. Runs at one phase find the same intervals, so two runs
/// of the same code give the same findings — what comparing two changes needs.
const PINNED_REPLAY: &str = r#"
import importlib.util, os, sys, time
tool, phase = sys.argv[1], int(sys.argv[2])
spec = importlib.util.spec_from_file_location("nezha_replay", tool)
replay = importlib.util.module_from_spec(spec)
spec.loader.exec_module(replay)
data = sys.argv[3]
day = sorted(os.listdir(os.path.join(data, "rca_data")))[0]
last = max(int(r["TimeStamp"]) for p in replay.files(data, "rca_data", day, "metric", "*_metric")
           for r in replay.rows(p))
now = int(time.time())
pinned = now - (now - (60 + last - phase)) % 60
replay.time.time = lambda: float(pinned)
sys.argv = [tool] + sys.argv[3:]
replay.main()
"#;

struct Options {
    data: PathBuf,
    tools: PathBuf,
    collector: PathBuf,
    as_recorded: bool,
    window_secs: u64,
    /// Where the detectors' minute grid is to fall in the recording's minutes (seconds,
    /// 0–59); `None`: wherever the replay's "now" puts it.
    grid_phase: Option<u32>,
    keep: Option<PathBuf>,
}

fn options(args: &[String]) -> Result<Options, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut o = Options {
        data: PathBuf::from("../shared/data/rca/nezha-trainticket-2023-01-29"),
        tools: PathBuf::from("../shared/tools"),
        collector: exe.with_file_name("vigil-collector"),
        as_recorded: false,
        window_secs: 180,
        grid_phase: None,
        keep: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{a} needs a value\n{USAGE}"));
        match a.as_str() {
            "--data" => o.data = value()?.into(),
            "--tools" => o.tools = value()?.into(),
            "--collector" => o.collector = value()?.into(),
            "--keep" => o.keep = Some(value()?.into()),
            "--window" => o.window_secs = value()?.parse().map_err(|_| "--window takes seconds".to_string())?,
            "--as-recorded" => o.as_recorded = true,
            "--grid-phase" => {
                let phase: u32 = value()?.parse().map_err(|_| "--grid-phase takes seconds".to_string())?;
                if phase >= 60 {
                    return Err("--grid-phase is a second of the minute: 0 to 59".into());
                }
                o.grid_phase = Some(phase);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if !o.collector.exists() {
        return Err(format!(
            "{} not found: build it first (cargo build --release -p vigil-collector) or pass --collector",
            o.collector.display()
        ));
    }
    Ok(o)
}

/// A collector process, stopped (SIGTERM, then waited for) when dropped.
struct Collector {
    child: Child,
    otlp_http: String,
    api: String,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn start_collector(binary: &Path, data_dir: &Path, log: &Path) -> Result<Collector, String> {
    let log = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = Command::new(binary)
        .args(["--data-dir"])
        .arg(data_dir)
        .args([
            "--otlp-grpc-addr",
            "127.0.0.1:0",
            "--otlp-http-addr",
            "127.0.0.1:0",
            "--api-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    // The collector prints one parseable line with the addresses it bound.
    let line = loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("vigil-collector listening") => break l,
            Some(Ok(_)) => continue,
            _ => return Err("the collector exited before listening (see collector.log)".into()),
        }
    };
    let addr = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(|a| format!("http://{a}"))
            .ok_or_else(|| format!("no {key} in {line:?}"))
    };
    Ok(Collector {
        otlp_http: addr("otlp_http=")?,
        api: addr("api=")?,
        child,
    })
}

/// The value of every sample of `name` in Prometheus text, summed.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn scrape(client: &reqwest::blocking::Client, api: &str) -> Result<String, String> {
    client
        .get(format!("{api}/metrics"))
        .send()
        .and_then(|r| r.text())
        .map_err(|e| format!("GET /metrics: {e}"))
}

/// Waits until every accepted record is indexed and the detectors' event time has passed
/// `event_time_s` (bounded: 15 minutes).
fn settle(api: &str, event_time_s: f64) -> Result<String, String> {
    poll_metrics(api, Duration::from_secs(900), |text| {
        let accepted = metric(text, "vigil_ingest_records_accepted_total");
        let indexed = metric(text, "vigil_index_docs_total");
        let event_time = metric(text, "vigil_detect_event_time_seconds");
        if indexed >= accepted && event_time >= event_time_s {
            Ok(())
        } else {
            Err(format!(
                "{indexed} of {accepted} indexed, detectors at {event_time} (waiting for {event_time_s})"
            ))
        }
    })
}

/// Waits until the incident investigations have finished a pass at a settled time past
/// `settled_s` with no incident left to investigate (bounded: 10 minutes).
fn investigated(api: &str, settled_s: f64) -> Result<String, String> {
    poll_metrics(api, Duration::from_secs(600), |text| {
        let at = metric(text, "vigil_investigations_settled_time_seconds");
        let due = metric(text, "vigil_investigations_due");
        if at >= settled_s && due == 0.0 {
            Ok(())
        } else {
            Err(format!(
                "{due} incidents to investigate, settled time {at} (waiting for {settled_s})"
            ))
        }
    })
}

/// Scrapes `/metrics` every 2 s until `done` accepts it (the text is returned), or `limit`
/// passes (`done`'s last complaint is the error).
fn poll_metrics(api: &str, limit: Duration, done: impl Fn(&str) -> Result<(), String>) -> Result<String, String> {
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + limit;
    loop {
        let text = scrape(&client, api)?;
        match done(&text) {
            Ok(()) => return Ok(text),
            Err(why) if Instant::now() > deadline => {
                return Err(format!("not settled after {} s: {why}", limit.as_secs()));
            }
            Err(_) => std::thread::sleep(Duration::from_secs(2)),
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS` read as UTC, in unix seconds.
fn utc_seconds(text: &str) -> Option<i64> {
    crate::parse_civil_ms(text).map(|ms| ms.div_euclid(1000))
}

/// The replay's faults re-timed at each fault's `inject_time` (see the module docs), and the
/// replay's shift in seconds.
fn recorded_times(data: &Path, shifted: &serde_json::Value) -> Result<(serde_json::Value, f64), String> {
    let days = std::fs::read_dir(data.join("rca_data")).map_err(|e| format!("{}: {e}", data.display()))?;
    let day = days
        .filter_map(Result::ok)
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .next()
        .ok_or("no day in rca_data")?;
    let path = data.join("rca_data").join(&day).join(format!("{day}-fault_list.json"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let list: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut hours: Vec<&String> = list.as_object().ok_or("fault list is not an object")?.keys().collect();
    hours.sort_by_key(|h| h.parse::<i64>().unwrap_or(0));
    let listed: Vec<&serde_json::Value> = hours
        .iter()
        .filter_map(|h| list[h.as_str()].as_array())
        .flatten()
        .collect();
    let shifted = shifted.as_array().ok_or("the replay's faults are not a list")?;
    if listed.len() != shifted.len() {
        return Err("the replay printed a different number of faults than the list holds".into());
    }
    let mut out = Vec::new();
    let mut replay_shift = 0.0;
    for (f, s) in listed.iter().zip(shifted) {
        let stamp: f64 = f["inject_timestamp"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .ok_or("bad inject_timestamp")?;
        let at = utc_seconds(f["inject_time"].as_str().ok_or("no inject_time")?).ok_or("bad inject_time")?;
        let shift = s["inject_unix"].as_f64().ok_or("bad inject_unix")? - stamp;
        replay_shift = shift;
        let mut s = s.clone();
        s["inject_unix"] = serde_json::json!(at as f64 + shift);
        out.push(s);
    }
    Ok((serde_json::Value::Array(out), replay_shift))
}

fn score(tools: &Path, faults: &Path, api: &str, extra: &[&str]) -> Result<String, String> {
    let out = Command::new("python3")
        .arg(tools.join("rca_incident_score.py"))
        .arg(faults)
        .arg(api)
        .args(extra)
        .output()
        .map_err(|e| format!("cannot run the scorer: {e}"))?;
    if !out.status.success() {
        return Err(format!("scorer failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let o = options(args)?;
    // The workspace builds reqwest without a default TLS provider (the collector picks ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let temp;
    let dir = match &o.keep {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            d.clone()
        }
        None => {
            temp = std::env::temp_dir().join(format!("vigil-nezha-{}", std::process::id()));
            std::fs::create_dir_all(&temp).map_err(|e| format!("{}: {e}", temp.display()))?;
            temp.clone()
        }
    };
    let collector = start_collector(&o.collector, &dir.join("data"), &dir.join("collector.log"))?;
    eprintln!(
        "collector: api {} otlp/http {} (log: {})",
        collector.api,
        collector.otlp_http,
        dir.join("collector.log").display()
    );
    let started = Instant::now();
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut replay = Command::new("python3");
    match o.grid_phase {
        // The shared tool, unchanged, with its clock pinned (see `PINNED_REPLAY`).
        Some(phase) => replay
            .arg("-c")
            .arg(PINNED_REPLAY)
            .arg(o.tools.join("nezha_replay.py"))
            .arg(phase.to_string()),
        None => replay.arg(o.tools.join("nezha_replay.py")),
    };
    replay.arg(&o.data).arg(&collector.otlp_http);
    if o.as_recorded {
        replay.arg("--as-recorded");
    }
    let out = replay.output().map_err(|e| format!("cannot run the replay: {e}"))?;
    if !out.status.success() {
        return Err(format!("replay failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    eprintln!(
        "replayed in {:.0} s: {}",
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let faults: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("the replay's fault list: {e}"))?;
    let tool_faults = dir.join("faults.json");
    let recorded_faults = dir.join("faults-at-inject-time.json");
    std::fs::write(&tool_faults, &out.stdout).map_err(|e| e.to_string())?;
    let (recorded, shift) = recorded_times(&o.data, &faults)?;
    std::fs::write(&recorded_faults, recorded.to_string()).map_err(|e| e.to_string())?;
    // The replay shifts the day by "now" to the nanosecond, so the detectors' minute grid
    // falls at a different second of the recording's minutes in every run, and the online
    // figures move with it (a 3-minute episode spans 3 or 4 intervals): say where it fell.
    eprintln!(
        "the replay shifted the day by {shift:.0} s: the minute grid falls {:.0} s into the recording's minutes",
        (-shift).rem_euclid(60.0)
    );

    // The replay shifts the data to end 60 s before it started, so its last interval ends
    // by the replay's start. Once data stops, the detection thread's time (the gauge) is the
    // event time it advances at the wall clock's pace minus the allowed lateness: reaching
    // the replay's start means every interval of the data has closed.
    eprintln!("waiting for indexing and for the detectors to close the last interval…");
    let text = settle(&collector.api, now_s + 1.0)?;
    // The settled time (the slowest kind of signal's event time, less the allowed lateness)
    // is behind the data's end here: the day's metrics run to midnight, hours past its last
    // log line and span. Once the replay stops, the logs' and spans' lanes move on at the
    // wall clock's pace from their last event, so their last intervals close, and the
    // incidents those open are investigated, minutes after the detectors' own clock has
    // passed the end (scored at that point the same data read AC@1 0.50, and 0.54 five
    // minutes later). So wait until the settled time is past where it was by the allowed
    // lateness (2 min) and an investigation's window after the symptom (3 min), and a pass
    // of the investigations has left nothing to investigate there. An incident on the last
    // hours' metrics alone (none is a fault's) is not investigated in the run.
    eprintln!("waiting for the last intervals of every kind of signal and their incidents' investigations…");
    investigated(
        &collector.api,
        metric(&text, "vigil_detect_settled_time_seconds") + 300.0,
    )?;
    let window = o.window_secs.to_string();
    println!(
        "late events {} (log lines and spans that arrived after their interval closed)",
        metric(&text, "vigil_detect_late_events_total")
    );
    for (label, path) in [
        (
            "faults timed by inject_timestamp (as nezha_replay.py prints them)",
            &tool_faults,
        ),
        ("faults timed by inject_time (the recording's clock)", &recorded_faults),
    ] {
        println!("== {label}");
        let incidents = score(&o.tools, path, &collector.api, &["--quiet"])?;
        println!("online incidents:  {}", incidents.trim());
        let investigations = score(&o.tools, path, &collector.api, &["--investigate", &window, "--quiet"])?;
        println!("investigations:    {}", investigations.trim());
    }
    drop(collector);
    if o.keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_become_unix_seconds() {
        assert_eq!(utc_seconds("1970-01-01 00:00:00"), Some(0));
        assert_eq!(utc_seconds("2023-01-29 08:43:04"), Some(1_674_981_784));
        assert_eq!(utc_seconds("2024-02-29 12:00:00"), Some(1_709_208_000));
        assert_eq!(utc_seconds("not a date"), None);
    }

    #[test]
    fn prometheus_samples_are_summed_by_name() {
        let text = "# HELP x\nvigil_a_total{s=\"1\"} 2\nvigil_a_total{s=\"2\"} 3\nvigil_ab 7\nvigil_a 1\n";
        assert_eq!(metric(text, "vigil_a_total"), 5.0);
        assert_eq!(metric(text, "vigil_a"), 1.0);
    }
}
