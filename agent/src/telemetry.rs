//! The agent observes itself: counters on a local `/metrics` (Prometheus text), and the
//! same values shipped with the host metrics as `vigil.agent.*` sums.

use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub struct AgentMetrics {
    registry: Mutex<Registry>,
    /// The current buffer, read for its gauges whenever metrics are taken.
    buffer: Mutex<Option<std::sync::Weak<crate::buffer::DiskBuffer>>>,
    pub lines_read: Counter,
    pub lines_truncated: Counter,
    pub files_tailed: Counter,
    pub files_unreadable: Counter,
    pub files_binary: Counter,
    /// Log sources whose patterns match no file right now.
    pub sources_empty: Gauge,
    pub batches_buffered: Counter,
    pub batches_sent: Counter,
    pub batches_rejected: Counter,
    pub send_retries: Counter,
    pub buffer_bytes: Gauge,
    pub buffer_records: Gauge,
    pub buffer_dropped_records: Gauge,
    pub buffer_dropped_bytes: Gauge,
    pub receiver_requests: Counter,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    pub fn new() -> AgentMetrics {
        let m = AgentMetrics {
            registry: Mutex::new(Registry::default()),
            buffer: Mutex::new(None),
            lines_read: Counter::default(),
            lines_truncated: Counter::default(),
            files_tailed: Counter::default(),
            files_unreadable: Counter::default(),
            files_binary: Counter::default(),
            sources_empty: Gauge::default(),
            batches_buffered: Counter::default(),
            batches_sent: Counter::default(),
            batches_rejected: Counter::default(),
            send_retries: Counter::default(),
            buffer_bytes: Gauge::default(),
            buffer_records: Gauge::default(),
            buffer_dropped_records: Gauge::default(),
            buffer_dropped_bytes: Gauge::default(),
            receiver_requests: Counter::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|p| p.into_inner());
            fn reg(r: &mut Registry, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
                r.register(name, help, metric);
            }
            let r = &mut *r;
            reg(
                r,
                "vigil_agent_lines_read",
                "Log lines (or multiline records) read",
                m.lines_read.clone(),
            );
            reg(
                r,
                "vigil_agent_lines_truncated",
                "Lines cut at max_line_bytes",
                m.lines_truncated.clone(),
            );
            reg(
                r,
                "vigil_agent_files_tailed",
                "Files opened for tailing",
                m.files_tailed.clone(),
            );
            reg(
                r,
                "vigil_agent_files_unreadable",
                "Files that could not be opened",
                m.files_unreadable.clone(),
            );
            reg(
                r,
                "vigil_agent_files_binary",
                "Files skipped as binary",
                m.files_binary.clone(),
            );
            reg(
                r,
                "vigil_agent_sources_empty",
                "Log sources whose include patterns match no file (a missing or unreadable directory, a typo)",
                m.sources_empty.clone(),
            );
            reg(
                r,
                "vigil_agent_batches_buffered",
                "Batches written to the disk buffer",
                m.batches_buffered.clone(),
            );
            reg(
                r,
                "vigil_agent_batches_sent",
                "Batches the collector acknowledged",
                m.batches_sent.clone(),
            );
            reg(
                r,
                "vigil_agent_batches_rejected",
                "Batches the collector refused as invalid (dropped)",
                m.batches_rejected.clone(),
            );
            reg(
                r,
                "vigil_agent_send_retries",
                "Send attempts that will be retried",
                m.send_retries.clone(),
            );
            reg(
                r,
                "vigil_agent_buffer_bytes",
                "Unsent bytes in the disk buffer",
                m.buffer_bytes.clone(),
            );
            reg(
                r,
                "vigil_agent_buffer_records",
                "Unsent batches in the disk buffer",
                m.buffer_records.clone(),
            );
            reg(
                r,
                "vigil_agent_buffer_dropped_records",
                "Batches dropped because the buffer was full (drop_oldest)",
                m.buffer_dropped_records.clone(),
            );
            reg(
                r,
                "vigil_agent_buffer_dropped_bytes",
                "Bytes dropped because the buffer was full (drop_oldest)",
                m.buffer_dropped_bytes.clone(),
            );
            reg(
                r,
                "vigil_agent_receiver_requests",
                "OTLP export requests received from local applications",
                m.receiver_requests.clone(),
            );
        }
        m
    }

    pub fn update_buffer(&self, stats: crate::buffer::BufferStats) {
        self.buffer_bytes.set(stats.pending_bytes as i64);
        self.buffer_records.set(stats.pending_records as i64);
        self.buffer_dropped_records.set(stats.dropped_records as i64);
        self.buffer_dropped_bytes.set(stats.dropped_bytes as i64);
    }

    /// Makes `buffer` the one whose gauges are reported.
    pub fn watch_buffer(&self, buffer: &std::sync::Arc<crate::buffer::DiskBuffer>) {
        *self.buffer.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::sync::Arc::downgrade(buffer));
    }

    fn refresh(&self) {
        let buffer = self
            .buffer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|w| w.upgrade());
        if let Some(b) = buffer {
            self.update_buffer(b.stats());
        }
    }

    pub fn encode(&self) -> String {
        self.refresh();
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }

    /// (name, value, monotonic) of every self-metric, for shipping as OTLP.
    pub fn snapshot(&self) -> Vec<(&'static str, i64, bool)> {
        self.refresh();
        vec![
            ("vigil.agent.lines_read", self.lines_read.get() as i64, true),
            ("vigil.agent.lines_truncated", self.lines_truncated.get() as i64, true),
            ("vigil.agent.files_unreadable", self.files_unreadable.get() as i64, true),
            ("vigil.agent.batches_sent", self.batches_sent.get() as i64, true),
            ("vigil.agent.batches_rejected", self.batches_rejected.get() as i64, true),
            ("vigil.agent.send_retries", self.send_retries.get() as i64, true),
            ("vigil.agent.buffer.bytes", self.buffer_bytes.get(), false),
            (
                "vigil.agent.buffer.dropped_records",
                self.buffer_dropped_records.get(),
                true,
            ),
        ]
    }
}
