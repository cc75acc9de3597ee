//! The detection pipeline: signals extracted from durable WAL entries flow from the indexer
//! to one detection thread that owns the [`Engine`], and the anomalies it finds land in the
//! [`AnomalyStore`] that the API serves. Human verdicts come back the same way.
//!
//! The channel is bounded and sends block: if detection falls behind, the indexer waits,
//! the WAL queue fills and ingest answers 503 — backpressure, never silent loss. Because the
//! indexer feeds replayed WAL entries too, detection after a restart sees what the indexes
//! had not yet committed (detector state itself is not persisted yet; see ARCHITECTURE.md).

mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;

use vigil_detectors::anomaly::DetectorKind;
use vigil_detectors::engine::{Engine, EngineConfig, EngineStats, MetricPoint, Verdict};

use crate::telemetry::{DetectorLabel, Metrics};

pub use store::{AnomalyStore, FeedbackError};

/// One signal for the detectors, as extracted from an OTLP request.
#[derive(Debug, Clone)]
pub enum DetectorInput {
    Log {
        service: String,
        pattern_id: u64,
        is_new: bool,
        template: String,
        severity: i32,
        ts_ms: i64,
    },
    Span {
        service: String,
        operation: String,
        end_ms: i64,
        duration_s: f64,
        error: bool,
    },
    Metric {
        series_id: u64,
        name: String,
        service: Option<String>,
        labels: BTreeMap<String, String>,
        unit: String,
        ts_ms: i64,
        value: f64,
        /// A cumulative monotonic counter: the detector sees its rate.
        cumulative: bool,
    },
}

pub(crate) enum Msg {
    Inputs(Vec<DetectorInput>),
    Feedback {
        signal_key: String,
        verdict: Verdict,
    },
    /// Sent at shutdown after the indexer has applied everything.
    Stop,
}

/// The indexer's end of the channel.
#[derive(Clone)]
pub struct PipelineSender(SyncSender<Msg>);

impl PipelineSender {
    /// Blocks while the detection thread is behind (bounded queue).
    pub fn send(&self, inputs: Vec<DetectorInput>) {
        if !inputs.is_empty() {
            // Fails only when the detection thread has stopped (shutdown).
            let _ = self.0.send(Msg::Inputs(inputs));
        }
    }

    pub(crate) fn feedback(&self, signal_key: String, verdict: Verdict) {
        let _ = self.0.send(Msg::Feedback { signal_key, verdict });
    }

    /// Asks the detection thread to save and stop once it has drained its queue.
    pub fn stop(&self) {
        let _ = self.0.send(Msg::Stop);
    }
}

/// Queue length between the indexer and the detection thread, in WAL entries.
const QUEUE: usize = 64;
/// How often event time is advanced from the wall clock when no data arrives, so the last
/// interval of a quiet system still closes.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Starts the detection thread. It stops when every sender is dropped, after saving.
/// Called with every batch of anomaly updates, on the detection thread.
pub type OnAnomalies = Box<dyn Fn(&[vigil_detectors::anomaly::Anomaly]) + Send>;

pub fn start(
    data_dir: &Path,
    metrics: Arc<Metrics>,
    on_anomalies: OnAnomalies,
) -> std::io::Result<(PipelineSender, Arc<AnomalyStore>, std::thread::JoinHandle<()>)> {
    let store = Arc::new(AnomalyStore::open(data_dir)?);
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    let mut engine = Engine::new(EngineConfig::default());
    engine.restore_feedback(store.feedback_state());
    let thread_store = Arc::clone(&store);
    let handle = std::thread::Builder::new()
        .name("vigil-detect".into())
        .spawn(move || run(engine, rx, &thread_store, &metrics, &on_anomalies))?;
    Ok((PipelineSender(tx), store, handle))
}

fn run(mut engine: Engine, rx: Receiver<Msg>, store: &AnomalyStore, metrics: &Metrics, on_anomalies: &OnAnomalies) {
    let mut counters: HashMap<u64, (i64, f64)> = HashMap::new();
    let mut reported = EngineStats::default();
    loop {
        match rx.recv_timeout(IDLE_TICK) {
            Ok(Msg::Inputs(inputs)) => {
                for input in inputs {
                    feed(&mut engine, &mut counters, input);
                }
            }
            Ok(Msg::Feedback { signal_key, verdict }) => {
                engine.feedback(&signal_key, verdict);
            }
            Err(RecvTimeoutError::Timeout) => {
                engine.advance(i64::try_from(crate::timeutil::now_ns() / 1_000_000).unwrap_or(i64::MAX));
            }
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
        }
        let updates = engine.drain();
        if !updates.is_empty() {
            for a in &updates {
                metrics
                    .anomaly_updates
                    .get_or_create(&DetectorLabel {
                        detector: detector_name(a.detector),
                    })
                    .inc();
            }
            on_anomalies(&updates);
            store.upsert(updates);
        }
        let stats = engine.stats();
        metrics
            .detect_series
            .set(i64::try_from(stats.series).unwrap_or(i64::MAX));
        metrics
            .detect_points
            .inc_by(stats.points_scored - reported.points_scored);
        metrics
            .detect_points_rejected
            .inc_by(stats.points_rejected - reported.points_rejected);
        metrics
            .detect_late_events
            .inc_by(stats.late_events - reported.late_events);
        metrics
            .detect_series_evicted
            .inc_by(stats.series_evicted - reported.series_evicted);
        reported = stats;
    }
    if let Err(e) = store.flush() {
        tracing::error!(error = %e, "could not save anomalies at shutdown");
    }
    tracing::info!(series = engine.stats().series, "detection stopped");
}

fn detector_name(kind: DetectorKind) -> &'static str {
    match kind {
        DetectorKind::Metric => "metric",
        DetectorKind::MetricPeer => "metric_peer",
        DetectorKind::LogNewPattern => "log_new_pattern",
        DetectorKind::LogPatternRate => "log_pattern_rate",
        DetectorKind::LogErrorRate => "log_error_rate",
        DetectorKind::TraceRed => "trace_red",
    }
}

fn feed(engine: &mut Engine, counters: &mut HashMap<u64, (i64, f64)>, input: DetectorInput) {
    match input {
        DetectorInput::Log {
            service,
            pattern_id,
            is_new,
            template,
            severity,
            ts_ms,
        } => {
            engine.observe_log(&service, pattern_id, is_new, &template, severity, ts_ms);
        }
        DetectorInput::Span {
            service,
            operation,
            end_ms,
            duration_s,
            error,
        } => {
            engine.observe_span(&service, &operation, end_ms, duration_s, error);
        }
        DetectorInput::Metric {
            series_id,
            name,
            service,
            labels,
            unit,
            ts_ms,
            value,
            cumulative,
        } => {
            let (value, unit) = if cumulative {
                // Counters: the rate since the previous point; a reset (drop) starts over.
                let prev = counters.insert(series_id, (ts_ms, value));
                match prev {
                    Some((pts, pv)) if ts_ms > pts && value >= pv => {
                        ((value - pv) / ((ts_ms - pts) as f64 / 1000.0), "/s".to_string())
                    }
                    _ => return,
                }
            } else {
                (value, unit)
            };
            let key = format!("{name}|{series_id:016x}");
            engine.observe_metric(&MetricPoint {
                key: &key,
                name: &name,
                service: service.as_deref(),
                labels: &labels,
                unit: &unit,
                ts_ms,
                value,
            });
        }
    }
}
