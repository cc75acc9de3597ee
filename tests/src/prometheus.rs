//! The Prometheus side of the tests and benchmarks: Debian's daemons as children killed on
//! drop, and the remote-write 1.0 messages (`prometheus.WriteRequest`, declared with prost:
//! four messages of `prompb` need no crate).

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use prost::Message;

/// Debian's Prometheus server (package `prometheus`, which ships `promtool` too).
pub const PROMETHEUS: &str = "/usr/bin/prometheus";
/// Debian's `prometheus-node-exporter`.
pub const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
/// `promtool`, from the `prometheus` package.
pub const PROMTOOL: &str = "/usr/bin/promtool";

/// A child process killed on drop.
pub struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on (for a daemon that takes its address as a flag).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts `program` with `args`, its standard error into `log`.
pub fn spawn(program: &str, args: &[String], log: &Path) -> Result<Daemon> {
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .with_context(|| format!("cannot start {program} (Debian package; .ci/run installs it)"))?;
    Ok(Daemon(child))
}

/// `prometheus.WriteRequest` (remote write 1.0), series only.
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`: a value at unix milliseconds.
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}
