//! Agent throughput and footprint, against `cat FILES > /dev/null` as the floor, in
//! one run: the real agent binary tails files being written at full speed and ships
//! them over OTLP/HTTP to a minimal sink in this process (acknowledging without
//! storing, to isolate the agent's own cost). Prints MiB/s, lines/s, CPU seconds per
//! million lines, RSS idle and peak, and CPU at 1,000 lines/s with host metrics.
//!
//! `cargo bench -p vigil-e2e --bench agent` (AGENT_BENCH_MIB=N for the data size,
//! default 256; AGENT_BENCH_GZIP=false to ship uncompressed; AGENT_BENCH_PROTOCOL=grpc
//! to ship over OTLP/gRPC, the agent's default, instead of OTLP/HTTP).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use vigil_e2e::agent::{Agent, config};

const FILES: usize = 4;
const LINE_BYTES: usize = 120;

fn proc_field(pid: u32, file: &str, key: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}"))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .with_context(|| format!("{key} in /proc/{pid}/{file}"))
}

/// User + system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(ticks as f64 / 100.0)
}

/// A 120-byte line in the shape of a typical access/application log.
fn line(i: u64) -> String {
    let mut l = format!(
        "2026-11-23T10:02:{:02}.{:03}Z INFO request id={:016x} path=/api/v1/orders/{} status=200 ms={}",
        i % 60,
        i % 1000,
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        i % 10_000,
        i % 500
    );
    l.truncate(LINE_BYTES - 1);
    while l.len() < LINE_BYTES - 1 {
        l.push('.');
    }
    l.push('\n');
    l
}

fn write_files(dir: &Path, total_bytes: u64) -> Result<u64> {
    let per_file = total_bytes / FILES as u64;
    let mut lines = 0;
    let mut writers: Vec<_> = (0..FILES)
        .map(|f| std::fs::File::create(dir.join(format!("bench{f}.log"))).map(std::io::BufWriter::new))
        .collect::<Result<_, _>>()?;
    let mut written = 0;
    while written < per_file {
        for w in &mut writers {
            w.write_all(line(lines).as_bytes())?;
            lines += 1;
        }
        written += LINE_BYTES as u64;
    }
    for w in &mut writers {
        w.flush()?;
    }
    Ok(lines)
}

/// The sink: reads each request whole, counts its bytes and acknowledges it without
/// decoding (a decoding server would spend more CPU than the agent under test). For gRPC
/// the answer is a gRPC response by hand: an empty message frame and `grpc-status: 0`.
async fn sink(grpc: bool) -> Result<(std::net::SocketAddr, Arc<AtomicU64>)> {
    use axum::body::Body;
    use axum::response::Response;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(body.len() as u64, Ordering::Relaxed);
            let mut trailers = axum::http::HeaderMap::new();
            trailers.insert("grpc-status", axum::http::HeaderValue::from_static("0"));
            let frames: Vec<Result<Frame<axum::body::Bytes>, std::convert::Infallible>> = if grpc {
                vec![
                    Ok(Frame::data(axum::body::Bytes::from_static(&[0, 0, 0, 0, 0]))),
                    Ok(Frame::trailers(trailers)),
                ]
            } else {
                Vec::new()
            };
            let content_type = if grpc {
                "application/grpc"
            } else {
                "application/x-protobuf"
            };
            Response::builder()
                .header("content-type", content_type)
                .body(Body::new(StreamBody::new(futures::stream::iter(frames))))
                .unwrap_or_default()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, received))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<()> {
    vigil_e2e::init_tls();
    let mib: u64 = vigil_e2e::env_or("AGENT_BENCH_MIB", 256);
    let gzip = std::env::var("AGENT_BENCH_GZIP").map_or(true, |v| v != "false");
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data)?;

    // Floor: the same bytes through cat (page cache warm for both).
    let lines = write_files(&data, mib * 1024 * 1024)?;
    // Flush the generated files to disk first, so the kernel's writeback of them does
    // not compete with the agent's buffer fsyncs during the measurement.
    std::process::Command::new("sync").status()?;
    let bytes: u64 = (0..FILES)
        .map(|f| {
            std::fs::metadata(data.join(format!("bench{f}.log")))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();
    let started = Instant::now();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("cat {}/*.log > /dev/null", data.display()))
        .status()?;
    if !status.success() {
        bail!("cat failed");
    }
    let cat_secs = started.elapsed().as_secs_f64();
    let mb = bytes as f64 / (1024.0 * 1024.0);

    let grpc = std::env::var("AGENT_BENCH_PROTOCOL").is_ok_and(|p| p == "grpc");
    let (addr, received) = sink(grpc).await?;
    let client = reqwest::Client::new();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let source = format!(
        "[[logs]]\ninclude = [{:?}]\nstart_at = \"beginning\"\nservice_name = \"bench\"\n",
        logs.join("*.log").display().to_string()
    );
    let cfg = config(&tmp.path().join("state"), &format!("http://{addr}"), &source)
        .replace("max_records = 500", "max_records = 8192\nmax_bytes = 1048576")
        .replace("max_backoff_secs = 1", &format!("max_backoff_secs = 1\ngzip = {gzip}"))
        .replace(
            "protocol = \"http\"",
            if grpc {
                "protocol = \"grpc\""
            } else {
                "protocol = \"http\""
            },
        )
        .replace("[host_metrics]\nenabled = false", "[host_metrics]\nenabled = true");
    let agent = Agent::start(tmp.path(), &cfg)?;
    let pid = agent.pid();
    // Idle: running, nothing to read, host metrics on.
    let idle_cpu0 = cpu_seconds(pid)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rss = proc_field(pid, "status", "VmRSS:")?;
    let idle_cpu = cpu_seconds(pid)? - idle_cpu0;

    // Load: the files appear and grow at full speed (moved in whole, as fast as the
    // filesystem allows), the agent reads and ships them.
    let cpu0 = cpu_seconds(pid)?;
    let started = Instant::now();
    for f in 0..FILES {
        std::fs::rename(data.join(format!("bench{f}.log")), logs.join(format!("bench{f}.log")))?;
    }
    loop {
        let read = agent.metric(&client, "vigil_agent_lines_read").await?;
        let pending = agent.metric(&client, "vigil_agent_buffer_records").await?;
        if read >= lines as f64 && pending == 0.0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!(
                "agent did not finish in 600 s: read {read} of {lines}\n{}",
                agent.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu0;
    let peak_rss = proc_field(pid, "status", "VmHWM:")?;

    // Low rate: 1,000 lines/s for 20 s, host metrics every 10 s.
    let slow = logs.join("slow.log");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&slow)?;
    let cpu_slow0 = cpu_seconds(pid)?;
    let slow_started = Instant::now();
    let mut i = 0u64;
    while slow_started.elapsed() < Duration::from_secs(20) {
        for _ in 0..100 {
            f.write_all(line(i).as_bytes())?;
            i += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let slow_secs = slow_started.elapsed().as_secs_f64();
    let slow_cpu = cpu_seconds(pid)? - cpu_slow0;

    let agent_mib_s = mb / secs;
    let cat_mib_s = mb / cat_secs;
    let protocol = if grpc { "grpc" } else { "http" };
    println!(
        "agent bench: {mb:.0} MiB, {lines} lines of {LINE_BYTES} bytes in {FILES} files, OTLP/{protocol}, gzip={gzip}"
    );
    println!("  cat floor:       {cat_mib_s:>8.1} MiB/s  ({cat_secs:.2} s)");
    println!(
        "  vigil-agent:     {agent_mib_s:>8.1} MiB/s  {:.0} lines/s  ({secs:.2} s) = {:.3} of cat",
        lines as f64 / secs,
        agent_mib_s / cat_mib_s
    );
    println!(
        "  CPU:             {:.2} s per million lines",
        cpu / (lines as f64 / 1e6)
    );
    println!(
        "  RSS:             idle {} KiB, peak under load {} KiB",
        idle_rss, peak_rss
    );
    println!("  idle CPU:        {:.2} % of a core", 100.0 * idle_cpu / 3.0);
    println!(
        "  1,000 lines/s:   {:.2} % of a core ({i} lines in {slow_secs:.1} s, host metrics on)",
        100.0 * slow_cpu / slow_secs
    );
    println!(
        "  sink received:   {:.1} MiB on the wire",
        received.load(Ordering::Relaxed) as f64 / 1048576.0
    );
    agent.terminate()?;
    Ok(())
}
