//! Host metrics from `/proc` and `statvfs`, named as the OpenTelemetry Collector's
//! `hostmetrics` receiver names them, so dashboards and rules written for it work.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric::Data,
    number_data_point::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::otlp::{kv, scope};

/// Clock ticks per second of `/proc/stat` (USER_HZ, 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;
const PSEUDO_FS: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "rpc_pipefs",
    "nsfs",
    "devtmpfs",
    "overlay",
    "squashfs",
    "ramfs",
    "efivarfs",
    "selinuxfs",
];

/// Keeps the previous CPU sample for utilization.
pub struct HostMetrics {
    proc: PathBuf,
    start_ns: u64,
    prev_cpu: HashMap<String, Vec<u64>>,
}

const CPU_STATES: &[&str] = &[
    "user",
    "nice",
    "system",
    "idle",
    "wait",
    "interrupt",
    "softirq",
    "steal",
];

struct Builder {
    now: u64,
    start: u64,
    metrics: Vec<Metric>,
}

impl Builder {
    fn point(&self, attrs: Vec<KeyValue>, value: Value) -> NumberDataPoint {
        NumberDataPoint {
            attributes: attrs,
            start_time_unix_nano: self.start,
            time_unix_nano: self.now,
            value: Some(value),
            ..NumberDataPoint::default()
        }
    }

    fn sum(&mut self, name: &str, unit: &str, monotonic: bool, points: Vec<(Vec<KeyValue>, Value)>) {
        self.push(name, unit, points, |data_points| {
            Data::Sum(Sum {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: monotonic,
            })
        });
    }

    fn gauge(&mut self, name: &str, unit: &str, points: Vec<(Vec<KeyValue>, Value)>) {
        self.push(name, unit, points, |data_points| Data::Gauge(Gauge { data_points }));
    }

    /// A metric of `points` (none: no metric), shaped by `data`.
    fn push(
        &mut self,
        name: &str,
        unit: &str,
        points: Vec<(Vec<KeyValue>, Value)>,
        data: impl FnOnce(Vec<NumberDataPoint>) -> Data,
    ) {
        if points.is_empty() {
            return;
        }
        let data_points = points.into_iter().map(|(a, v)| self.point(a, v)).collect();
        self.metrics.push(Metric {
            name: name.into(),
            unit: unit.into(),
            data: Some(data(data_points)),
            ..Metric::default()
        });
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl HostMetrics {
    pub fn new(proc: &Path) -> HostMetrics {
        HostMetrics {
            proc: proc.to_path_buf(),
            start_ns: now_ns(),
            prev_cpu: HashMap::new(),
        }
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.proc.join(name)).unwrap_or_default()
    }

    /// One sample of everything, plus the agent's own counters, as one export request.
    pub fn collect(&mut self, resource: Resource, own: &[(&'static str, i64, bool)]) -> ExportMetricsServiceRequest {
        let mut b = Builder {
            now: now_ns(),
            start: self.start_ns,
            metrics: Vec::new(),
        };
        self.cpu(&mut b);
        self.memory(&mut b);
        self.load(&mut b);
        self.disk(&mut b);
        self.network(&mut b);
        self.filesystems(&mut b);
        for (name, value, monotonic) in own {
            b.sum(name, "1", *monotonic, vec![(vec![], Value::AsInt(*value))]);
        }
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(resource),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope()),
                    metrics: b.metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn cpu(&mut self, b: &mut Builder) {
        let stat = self.read("stat");
        let mut time = Vec::new();
        let mut util = Vec::new();
        let mut procs = Vec::new();
        for line in stat.lines() {
            let mut fields = line.split_whitespace();
            let Some(name) = fields.next() else { continue };
            if name.starts_with("cpu") && name != "cpu" {
                // user nice system idle iowait irq softirq steal
                let ticks: Vec<u64> = fields.take(8).filter_map(|f| f.parse().ok()).collect();
                if ticks.len() < 8 {
                    continue;
                }
                // Reorder to CPU_STATES: iowait is "wait", irq is "interrupt".
                let ordered = [
                    ticks[0], ticks[1], ticks[2], ticks[3], ticks[4], ticks[5], ticks[6], ticks[7],
                ];
                for (state, t) in CPU_STATES.iter().zip(ordered) {
                    time.push((
                        vec![kv("cpu", name), kv("state", *state)],
                        Value::AsDouble(t as f64 / USER_HZ),
                    ));
                }
                if let Some(prev) = self.prev_cpu.get(name) {
                    let deltas: Vec<u64> = ordered.iter().zip(prev).map(|(n, p)| n.saturating_sub(*p)).collect();
                    let total: u64 = deltas.iter().sum();
                    if total > 0 {
                        for (state, d) in CPU_STATES.iter().zip(&deltas) {
                            util.push((
                                vec![kv("cpu", name), kv("state", *state)],
                                Value::AsDouble(*d as f64 / total as f64),
                            ));
                        }
                    }
                }
                self.prev_cpu.insert(name.to_string(), ordered.to_vec());
            } else if name == "procs_running" || name == "procs_blocked" {
                if let Some(v) = fields.next().and_then(|f| f.parse::<i64>().ok()) {
                    let status = if name == "procs_running" { "running" } else { "blocked" };
                    procs.push((vec![kv("status", status)], Value::AsInt(v)));
                }
            } else if name == "processes"
                && let Some(v) = fields.next().and_then(|f| f.parse::<i64>().ok())
            {
                b.sum(
                    "system.processes.created",
                    "{processes}",
                    true,
                    vec![(vec![], Value::AsInt(v))],
                );
            }
        }
        b.sum("system.cpu.time", "s", true, time);
        b.gauge("system.cpu.utilization", "1", util);
        b.sum("system.processes.count", "{processes}", false, procs);
    }

    fn memory(&self, b: &mut Builder) {
        let info: HashMap<String, i64> = self
            .read("meminfo")
            .lines()
            .filter_map(|l| {
                let (k, rest) = l.split_once(':')?;
                let kib: i64 = rest.split_whitespace().next()?.parse().ok()?;
                Some((k.to_string(), kib * 1024))
            })
            .collect();
        let get = |k: &str| info.get(k).copied().unwrap_or(0);
        let total = get("MemTotal");
        if total > 0 {
            let free = get("MemFree");
            let buffered = get("Buffers");
            let cached = get("Cached");
            let reclaimable = get("SReclaimable");
            let unreclaimable = get("SUnreclaim");
            let used = (total - free - buffered - cached - reclaimable).max(0);
            let states = [
                ("used", used),
                ("free", free),
                ("buffered", buffered),
                ("cached", cached),
                ("slab_reclaimable", reclaimable),
                ("slab_unreclaimable", unreclaimable),
            ];
            b.sum(
                "system.memory.usage",
                "By",
                false,
                states
                    .iter()
                    .map(|(s, v)| (vec![kv("state", *s)], Value::AsInt(*v)))
                    .collect(),
            );
            b.gauge(
                "system.memory.utilization",
                "1",
                states
                    .iter()
                    .map(|(s, v)| (vec![kv("state", *s)], Value::AsDouble(*v as f64 / total as f64)))
                    .collect(),
            );
        }
        let swap_total = get("SwapTotal");
        let swap_free = get("SwapFree");
        b.sum(
            "system.paging.usage",
            "By",
            false,
            vec![
                (vec![kv("state", "used")], Value::AsInt(swap_total - swap_free)),
                (vec![kv("state", "free")], Value::AsInt(swap_free)),
            ],
        );
    }

    fn load(&self, b: &mut Builder) {
        let text = self.read("loadavg");
        let fields: Vec<f64> = text.split_whitespace().take(3).filter_map(|f| f.parse().ok()).collect();
        if fields.len() == 3 {
            for (name, v) in ["1m", "5m", "15m"].iter().zip(fields) {
                b.gauge(
                    &format!("system.cpu.load_average.{name}"),
                    "{thread}",
                    vec![(vec![], Value::AsDouble(v))],
                );
            }
        }
    }

    fn disk(&self, b: &mut Builder) {
        let mut io = Vec::new();
        let mut ops = Vec::new();
        for line in self.read("diskstats").lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 14 {
                continue;
            }
            let dev = f[2];
            if dev.starts_with("loop") || dev.starts_with("ram") {
                continue;
            }
            let n = |i: usize| f[i].parse::<i64>().unwrap_or(0);
            io.push((
                vec![kv("device", dev), kv("direction", "read")],
                Value::AsInt(n(5) * 512),
            ));
            io.push((
                vec![kv("device", dev), kv("direction", "write")],
                Value::AsInt(n(9) * 512),
            ));
            ops.push((vec![kv("device", dev), kv("direction", "read")], Value::AsInt(n(3))));
            ops.push((vec![kv("device", dev), kv("direction", "write")], Value::AsInt(n(7))));
        }
        b.sum("system.disk.io", "By", true, io);
        b.sum("system.disk.operations", "{operations}", true, ops);
    }

    fn network(&self, b: &mut Builder) {
        let mut io = Vec::new();
        let mut packets = Vec::new();
        let mut errors = Vec::new();
        let mut dropped = Vec::new();
        for line in self.read("net/dev").lines().skip(2) {
            let Some((dev, rest)) = line.split_once(':') else {
                continue;
            };
            let dev = dev.trim();
            let n: Vec<i64> = rest.split_whitespace().filter_map(|f| f.parse().ok()).collect();
            if n.len() < 16 {
                continue;
            }
            for (direction, base) in [("receive", 0), ("transmit", 8)] {
                let attrs = || vec![kv("device", dev), kv("direction", direction)];
                io.push((attrs(), Value::AsInt(n[base])));
                packets.push((attrs(), Value::AsInt(n[base + 1])));
                errors.push((attrs(), Value::AsInt(n[base + 2])));
                dropped.push((attrs(), Value::AsInt(n[base + 3])));
            }
        }
        b.sum("system.network.io", "By", true, io);
        b.sum("system.network.packets", "{packets}", true, packets);
        b.sum("system.network.errors", "{errors}", true, errors);
        b.sum("system.network.dropped", "{packets}", true, dropped);
    }

    fn filesystems(&self, b: &mut Builder) {
        let mut usage = Vec::new();
        let mut util = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for line in self.read("mounts").lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 3 || PSEUDO_FS.contains(&f[2]) || !seen.insert(f[1].to_string()) {
                continue;
            }
            let (device, mountpoint, fstype) = (f[0], f[1].replace("\\040", " "), f[2]);
            let Ok(st) = rustix::fs::statvfs(mountpoint.as_str()) else {
                continue;
            };
            let block = st.f_frsize.max(1);
            let total = st.f_blocks * block;
            if total == 0 {
                continue;
            }
            let free = st.f_bavail * block;
            let reserved = (st.f_bfree - st.f_bavail.min(st.f_bfree)) * block;
            let used = total.saturating_sub(st.f_bfree * block);
            let attrs = |state: &str| {
                vec![
                    kv("device", device),
                    kv("mountpoint", mountpoint.clone()),
                    kv("type", fstype),
                    kv(
                        "mode",
                        if f.get(3).is_some_and(|o| o.starts_with("ro")) {
                            "ro"
                        } else {
                            "rw"
                        },
                    ),
                    kv("state", state),
                ]
            };
            usage.push((attrs("used"), Value::AsInt(used as i64)));
            usage.push((attrs("free"), Value::AsInt(free as i64)));
            usage.push((attrs("reserved"), Value::AsInt(reserved as i64)));
            let mut u = attrs("used");
            u.pop();
            util.push((u, Value::AsDouble(used as f64 / (used + free).max(1) as f64)));
        }
        b.sum("system.filesystem.usage", "By", false, usage);
        b.gauge("system.filesystem.utilization", "1", util);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(req: &ExportMetricsServiceRequest) -> Vec<String> {
        req.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .map(|m| m.name.clone())
            .collect()
    }

    #[test]
    fn reads_this_hosts_proc_with_hostmetrics_names() {
        let mut h = HostMetrics::new(Path::new("/proc"));
        let first = h.collect(Resource::default(), &[("vigil.agent.lines_read", 5, true)]);
        let n = names(&first);
        for want in [
            "system.cpu.time",
            "system.memory.usage",
            "system.memory.utilization",
            "system.paging.usage",
            "system.cpu.load_average.1m",
            "system.network.io",
            "system.filesystem.usage",
            "system.processes.count",
            "vigil.agent.lines_read",
        ] {
            assert!(n.iter().any(|x| x == want), "{want} missing from {n:?}");
        }
        assert!(
            !n.iter().any(|x| x == "system.cpu.utilization"),
            "utilization needs two samples"
        );
    }

    #[test]
    fn parses_a_fixture_proc() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("stat"), "cpu  1 1 1 1 1 1 1 1 0 0\ncpu0 100 0 50 800 50 0 0 0 0 0\nprocs_running 3\nprocs_blocked 1\nprocesses 999\n").expect("write");
        std::fs::write(dir.path().join("meminfo"), "MemTotal: 1000 kB\nMemFree: 400 kB\nBuffers: 100 kB\nCached: 200 kB\nSReclaimable: 50 kB\nSUnreclaim: 10 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n").expect("write");
        let mut h = HostMetrics::new(dir.path());
        let req = h.collect(Resource::default(), &[]);
        let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
        let usage = metrics.iter().find(|m| m.name == "system.memory.usage").expect("usage");
        let Some(Data::Sum(sum)) = &usage.data else {
            panic!("a sum")
        };
        let used = sum
            .data_points
            .iter()
            .find(|p| {
                p.attributes
                    .iter()
                    .any(|a| a.key == "state" && format!("{:?}", a.value).contains("\"used\""))
            })
            .expect("used");
        assert_eq!(used.value, Some(Value::AsInt(250 * 1024)));
        let cpu = metrics.iter().find(|m| m.name == "system.cpu.time").expect("cpu");
        let Some(Data::Sum(sum)) = &cpu.data else {
            panic!("a sum")
        };
        assert_eq!(
            sum.data_points.len(),
            8,
            "eight states of cpu0; the aggregate line is skipped"
        );
        assert_eq!(sum.data_points[0].value, Some(Value::AsDouble(1.0)));
        // 100 more ticks: 30 user, 70 idle.
        std::fs::write(dir.path().join("stat"), "cpu0 130 0 50 870 50 0 0 0 0 0\n").expect("write");
        let req = h.collect(Resource::default(), &[]);
        let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
        let util = metrics
            .iter()
            .find(|m| m.name == "system.cpu.utilization")
            .expect("utilization");
        let Some(Data::Gauge(g)) = &util.data else {
            panic!("a gauge")
        };
        let values: Vec<_> = g.data_points.iter().map(|p| p.value).collect();
        assert_eq!(values[0], Some(Value::AsDouble(0.3)), "user");
        assert_eq!(values[3], Some(Value::AsDouble(0.7)), "idle");
    }
}
