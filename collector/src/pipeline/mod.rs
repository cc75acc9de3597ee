//! The detection pipeline: signals extracted from durable WAL entries flow from the indexer
//! to one detection thread that owns the [`Engine`], and the anomalies it finds land in the
//! [`AnomalyStore`] that the API serves. Human verdicts come back the same way.
//!
//! The channel is bounded and sends block: if detection falls behind, the indexer waits,
//! the WAL queue fills and ingest answers 503 — backpressure, never silent loss. Because the
//! indexer feeds replayed WAL entries too, detection after a restart sees what the indexes
//! had not yet committed (detector state itself is not persisted yet; see ARCHITECTURE.md).

mod clock;
mod incidents;
mod join;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;

use vigil_detectors::anomaly::DetectorKind;
use vigil_detectors::engine::{Engine, EngineConfig, EngineStats, MetricPoint, Verdict};

use crate::telemetry::{DetectorLabel, Metrics};

pub use incidents::IncidentStore;
pub use store::{AnomalyStore, FeedbackError};
use vigil_rca::incident::{Correlator, Incident, IncidentConfig};
use vigil_rca::topology::{SpanRef, Topology};

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
        /// For joining a line without `service.name`.
        host: Option<String>,
        pod: Option<String>,
        trace_id: Option<String>,
    },
    Span {
        service: String,
        operation: String,
        end_ms: i64,
        duration_s: f64,
        error: bool,
        /// A server, consumer or root span: counts for RED.
        entry: bool,
        span_id: u64,
        parent_span_id: Option<u64>,
        /// Hex trace id, kept as an exemplar for slow or failing requests.
        trace_id: String,
        host: Option<String>,
        pod: Option<String>,
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
/// How often event time is advanced when no data arrives (see [`clock`]), so the last
/// interval of a quiet system still closes.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Called with every batch of incident updates, on the detection thread.
pub type OnIncidents = Box<dyn Fn(&[Incident]) + Send>;

/// What the detection thread shares with the API.
#[derive(Clone)]
pub struct Detection {
    pub anomalies: Arc<AnomalyStore>,
    pub incidents: Arc<IncidentStore>,
    pub topology: Arc<std::sync::Mutex<Topology>>,
}

/// Starts the detection thread (detectors, topology, incident correlation). It stops on
/// [`PipelineSender::stop`] or when every sender is dropped, after saving.
pub fn start(
    data_dir: &Path,
    metrics: Arc<Metrics>,
    on_incidents: OnIncidents,
) -> std::io::Result<(PipelineSender, Detection, std::thread::JoinHandle<()>)> {
    let store = Arc::new(AnomalyStore::open(data_dir)?);
    let incidents = Arc::new(IncidentStore::open(data_dir)?);
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    let mut engine = Engine::new(EngineConfig::default());
    engine.restore_feedback(store.feedback_state());
    let mut correlator = Correlator::new(IncidentConfig::default());
    correlator.restore(incidents.all());
    let shared = Detection {
        anomalies: Arc::clone(&store),
        incidents: Arc::clone(&incidents),
        topology: Arc::new(std::sync::Mutex::new(Topology::new())),
    };
    let thread_shared = shared.clone();
    let handle = std::thread::Builder::new()
        .name("vigil-detect".into())
        .spawn(move || run(engine, correlator, rx, &thread_shared, &metrics, &on_incidents))?;
    Ok((PipelineSender(tx), shared, handle))
}

fn run(
    mut engine: Engine,
    mut correlator: Correlator,
    rx: Receiver<Msg>,
    shared: &Detection,
    metrics: &Metrics,
    on_incidents: &OnIncidents,
) {
    let store = &shared.anomalies;
    let mut counters: HashMap<u64, (i64, f64)> = HashMap::new();
    let mut reported = EngineStats::default();
    let mut latest_event_ms = i64::MIN;
    let mut clock = clock::EventClock::new();
    let mut joiner = join::Joiner::default();
    loop {
        match rx.recv_timeout(IDLE_TICK) {
            Ok(Msg::Inputs(inputs)) => {
                let mut topo = shared.topology.lock().unwrap_or_else(|e| e.into_inner());
                for input in inputs {
                    feed(
                        &mut engine,
                        &mut topo,
                        &mut joiner,
                        &mut counters,
                        &mut latest_event_ms,
                        input,
                    );
                }
                clock.saw(latest_event_ms, crate::timeutil::now_ms());
            }
            Ok(Msg::Feedback { signal_key, verdict }) => {
                engine.feedback(&signal_key, verdict);
            }
            Err(RecvTimeoutError::Timeout) => {
                if let Some(event_now) = clock.idle(crate::timeutil::now_ms()) {
                    engine.advance(event_now);
                    latest_event_ms = latest_event_ms.max(event_now.saturating_sub(engine.config().lateness_ms));
                }
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
            {
                let topo = shared.topology.lock().unwrap_or_else(|e| e.into_inner());
                for a in &updates {
                    correlator.observe(a, &topo);
                }
            }
            store.upsert(updates);
        }
        correlator.advance(latest_event_ms);
        let incidents = correlator.drain();
        if !incidents.is_empty() {
            shared.incidents.upsert(&incidents);
            on_incidents(&incidents);
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
    if let Err(e) = store.flush().and_then(|()| shared.incidents.flush()) {
        tracing::error!(error = %e, "could not save anomalies and incidents at shutdown");
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

fn feed(
    engine: &mut Engine,
    topo: &mut Topology,
    joiner: &mut join::Joiner,
    counters: &mut HashMap<u64, (i64, f64)>,
    latest_event_ms: &mut i64,
    input: DetectorInput,
) {
    match input {
        DetectorInput::Log {
            service,
            pattern_id,
            is_new,
            template,
            severity,
            ts_ms,
            host,
            pod,
            trace_id,
        } => {
            *latest_event_ms = (*latest_event_ms).max(ts_ms);
            let service = if service == "unknown_service" {
                joiner
                    .resolve(host.as_deref(), pod.as_deref(), trace_id.as_deref())
                    .unwrap_or(service)
            } else {
                joiner.learn(&service, host.as_deref(), pod.as_deref(), None);
                service
            };
            engine.observe_log(&service, pattern_id, is_new, &template, severity, ts_ms);
        }
        DetectorInput::Span {
            service,
            operation,
            end_ms,
            duration_s,
            error,
            entry,
            span_id,
            parent_span_id,
            trace_id,
            host,
            pod,
        } => {
            *latest_event_ms = (*latest_event_ms).max(end_ms);
            joiner.learn(&service, host.as_deref(), pod.as_deref(), Some(&trace_id));
            topo.observe(&SpanRef {
                service: &service,
                span_id,
                parent_span_id,
                end_ms,
                duration_s,
                error,
            });
            if entry {
                engine.observe_traced_span(&service, &operation, end_ms, duration_s, error, &trace_id);
            }
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
            *latest_event_ms = (*latest_event_ms).max(ts_ms);
            let host = labels.get("host.name").map(String::as_str);
            let pod = labels.get("k8s.pod.name").map(String::as_str);
            let service = match service {
                Some(s) => {
                    joiner.learn(&s, host, pod, None);
                    Some(s)
                }
                None => joiner.resolve(host, pod, None),
            };
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
