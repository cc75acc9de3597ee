//! The detection pipeline: signals extracted from durable WAL entries flow from the indexer
//! to one detection thread that owns the [`Engine`], and the anomalies it finds land in the
//! [`AnomalyStore`] that the API serves. Human verdicts come back the same way.
//!
//! The channel is bounded and sends block: if detection falls behind, the indexer waits,
//! the WAL queue fills and ingest answers 503 — backpressure, never silent loss. Because the
//! indexer feeds replayed WAL entries too, detection after a restart sees what the indexes
//! had not yet committed. What the detectors have learned is saved at shutdown and every few
//! minutes with the last WAL entry it includes ([`saver`], [`state_file`]); at start it is restored, and
//! of the replayed entries the detectors take only those after that one (the service graph
//! and the joiner, which are not saved, take them all).

mod clock;
mod findings;
mod incidents;
mod input;
mod join;
mod messages;
mod saver;
mod state_file;
mod store;

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use vigil_detectors::DetectorKind;
use vigil_detectors::{Engine, EngineConfig, EngineStats};

use saver::{Saver, State, restore_state};

use crate::telemetry::{DetectorLabel, Metrics};

pub(crate) use findings::{Findings, IncidentReplica, Mode, SpanFact};
use findings::{Lead, Outbox};
pub(crate) use incidents::IncidentStore;
pub(crate) use input::DetectorInput;
use input::{feed, in_event_order};
use messages::Msg;
pub(crate) use messages::PipelineSender;
pub(crate) use store::{AnomalyStore, FeedbackError};
use vigil_rca::Topology;
use vigil_rca::{Correlator, Incident, IncidentConfig};

/// Queue length between the indexer and the detection thread, in WAL entries.
const QUEUE: usize = 64;
/// How often event time is advanced when no data arrives (see [`clock`]), so the last
/// interval of a quiet system still closes.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Called with every batch of incident updates, on the detection thread.
pub(crate) type OnIncidents = Box<dyn Fn(&[Incident]) + Send>;

/// What the detection thread shares with the API.
#[derive(Clone)]
pub(crate) struct Detection {
    pub anomalies: Arc<AnomalyStore>,
    pub incidents: Arc<IncidentStore>,
    pub topology: Arc<std::sync::Mutex<Topology>>,
    pub settled: Arc<std::sync::Mutex<Settled>>,
}

/// How far detection has got, read together: event time up to which every kind of signal is
/// final ([`Engine::settled_time`]) and the last WAL entry applied when it got there. The
/// data of a window that ends before `event_ms` came in entries up to `applied_lsn`, so once
/// the indexes hold those, a search of the window reads what detection counted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settled {
    pub event_ms: i64,
    pub applied_lsn: u64,
    /// Each kind of signal's progress (none on a cluster's correlator, whose detectors see
    /// no data: `event_ms` alone says how far the cluster has got).
    pub lanes: Vec<vigil_detectors::LaneProgress>,
}

impl Settled {
    /// Whether every kind of signal's data of `[start_ms, end_ms]` is in: each kind is final
    /// past the end, or went quiet before the window began. A kind that ended hours before
    /// the others (a replay, a backfill) holds nothing later and keeps nothing waiting.
    pub(crate) fn covers(&self, start_ms: i64, end_ms: i64) -> bool {
        if self.lanes.is_empty() {
            return end_ms <= self.event_ms;
        }
        self.lanes.iter().all(|l| l.settled_for(start_ms, end_ms))
    }
}

/// A running detection thread.
pub(crate) struct Started {
    pub sender: PipelineSender,
    pub detection: Detection,
    pub thread: std::thread::JoinHandle<()>,
    /// The last WAL entry the restored detector state has consumed (0 when cold): replay
    /// must feed the detectors only entries above it.
    pub applied_lsn: u64,
}

/// Starts the detection thread (detectors, topology, incident correlation), restoring what
/// the detectors had learned before a restart. It stops on [`PipelineSender::stop`] or when
/// every sender is dropped, after saving.
pub(crate) fn start(
    data_dir: &Path,
    allowed_lateness_ms: i64,
    metrics: Arc<Metrics>,
    on_incidents: OnIncidents,
    mode: Mode,
) -> std::io::Result<Started> {
    let store = Arc::new(AnomalyStore::open(data_dir)?);
    let incidents = Arc::new(IncidentStore::open(data_dir)?);
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    let mut engine = Engine::new(EngineConfig {
        lateness_ms: allowed_lateness_ms,
        ..EngineConfig::default()
    });
    let state_path = data_dir.join(state_file::FILE);
    let progress = restore_state(&mut engine, &state_path);
    engine.restore_feedback(store.feedback_state());
    let applied_lsn = progress.applied_lsn;
    let mut correlator = Correlator::new(IncidentConfig::default());
    correlator.restore(incidents.all());
    let shared = Detection {
        anomalies: Arc::clone(&store),
        incidents: Arc::clone(&incidents),
        topology: Arc::new(std::sync::Mutex::new(Topology::new())),
        settled: Arc::new(std::sync::Mutex::new(Settled::default())),
    };
    let thread_shared = shared.clone();
    let thread = std::thread::Builder::new().name("vigil-detect".into()).spawn(move || {
        let state = State {
            engine,
            progress,
            path: state_path,
        };
        run(state, correlator, rx, &thread_shared, &metrics, &on_incidents, mode);
    })?;
    Ok(Started {
        sender: PipelineSender(tx),
        detection: shared,
        thread,
        applied_lsn,
    })
}

fn run(
    mut state: State,
    mut correlator: Correlator,
    rx: Receiver<Msg>,
    shared: &Detection,
    metrics: &Metrics,
    on_incidents: &OnIncidents,
    mode: Mode,
) {
    let (mut outbox, mut lead) = match mode {
        Mode::Single => (None, None),
        Mode::Publish { sink, node, rebuilding } => (
            Some(Outbox {
                sink,
                pending: Findings {
                    node,
                    ..Findings::default()
                },
                sent: std::time::Instant::now(),
                rebuilding,
            }),
            None,
        ),
        Mode::Correlate(replica) => (
            None,
            Some(Lead {
                replica,
                leading: false,
            }),
        ),
    };
    let store = &shared.anomalies;
    let mut reported = EngineStats::default();
    let mut saver = Saver::new();
    let mut clock = clock::EventClock::new();
    if state.progress.latest_event_ms > i64::MIN {
        // Restored: event time carries on from where it was, so intervals left open at
        // shutdown still close if no new data comes.
        clock.saw(state.progress.latest_event_ms, crate::timeutil::now_ms());
    }
    let mut joiner = join::Joiner::default();
    // Entries up to here are in the restored state already (replay sends them again).
    let restored_lsn = state.progress.applied_lsn;
    // A correlator: how far the slowest live worker has got (see `cluster/rca/clocks.rs`).
    let mut cluster_settled_ms = i64::MIN;
    loop {
        match rx.recv_timeout(IDLE_TICK) {
            Ok(Msg::Inputs { lsn, mut inputs }) => {
                in_event_order(&mut inputs);
                let mut topo = shared.topology.lock().unwrap_or_else(|e| e.into_inner());
                let p = &mut state.progress;
                let context_only = lsn <= restored_lsn;
                // Wall time only tells a kind of signal that went quiet from one running
                // behind (the detectors' lanes); event time still comes from the data.
                state.engine.set_wall_clock(crate::timeutil::now_ms());
                let spans_before = outbox.as_ref().map_or(0, |o| o.pending.spans.len());
                let mut spans_out = outbox.as_mut().map(|o| &mut o.pending.spans);
                for input in inputs {
                    feed(
                        &mut state.engine,
                        &mut topo,
                        &mut joiner,
                        &mut p.counters,
                        input,
                        context_only,
                        spans_out.as_deref_mut(),
                    );
                }
                if let Some(o) = outbox.as_mut() {
                    metrics.findings_history_spans.inc_by(o.hold_history(spans_before, lsn));
                }
                p.applied_lsn = p.applied_lsn.max(lsn);
                // Event time as the sources agree on it: one host's fast clock must not
                // carry the quiet-spell clock (and the correlator) ahead of everyone else.
                p.latest_event_ms = p.latest_event_ms.max(state.engine.event_time());
                // Calls silent for a day no longer relate their services.
                topo.forget_idle(p.latest_event_ms);
                clock.saw(p.latest_event_ms, crate::timeutil::now_ms());
            }
            Ok(Msg::Forget {
                lsn,
                partition,
                partitions,
            }) => {
                // A restored state that holds the entry has forgotten them already.
                if lsn > restored_lsn {
                    let forgotten = state
                        .engine
                        .forget_services(&|service| crate::cluster::partition_of(service, partitions) == partition);
                    tracing::info!(
                        partition,
                        signals = forgotten,
                        "detectors forgot a partition's services"
                    );
                }
                state.progress.applied_lsn = state.progress.applied_lsn.max(lsn);
            }
            Ok(Msg::Feedback { signal_key, verdict }) => {
                state.engine.feedback(&signal_key, verdict);
            }
            Ok(Msg::Seal { incident }) => {
                correlator.seal(&incident);
            }
            Ok(Msg::Findings(findings)) => {
                let leading = lead.as_ref().is_some_and(|l| l.leading);
                let mut topo = shared.topology.lock().unwrap_or_else(|e| e.into_inner());
                for span in &findings.spans {
                    topo.observe(&span.as_ref());
                }
                if leading {
                    for a in &findings.anomalies {
                        correlator.observe(a, &topo);
                    }
                }
                cluster_settled_ms = cluster_settled_ms.max(findings.settled_ms);
                let p = &mut state.progress;
                p.latest_event_ms = p.latest_event_ms.max(findings.event_ms);
                topo.forget_idle(p.latest_event_ms);
                drop(topo);
                if !findings.anomalies.is_empty() {
                    store.upsert(findings.anomalies);
                }
            }
            Ok(Msg::Lead) => {
                if let Some(l) = lead.as_mut() {
                    l.leading = true;
                    correlator = take_lead(shared, state.progress.latest_event_ms);
                    // Alerts for incidents whose alert the last leader may not have raised
                    // before it died (raising is idempotent: one alert per incident).
                    let open: Vec<Incident> = shared
                        .incidents
                        .all()
                        .into_iter()
                        .filter(|i| i.status == vigil_rca::IncidentStatus::Open)
                        .collect();
                    if !open.is_empty() {
                        on_incidents(&open);
                    }
                }
            }
            Ok(Msg::Follow) => {
                if let Some(l) = lead.as_mut() {
                    l.leading = false;
                    correlator = Correlator::new(IncidentConfig::default());
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let wall_ms = crate::timeutil::now_ms();
                // A kind of signal quiet for the allowed lateness moves on from its own
                // latest event (the detectors' lanes); a shorter pause — the indexer
                // committing while the queue drained — moves nothing. The clock here only
                // dates the detection's progress.
                state.engine.set_wall_clock(wall_ms);
                if let Some(event_now) = clock.idle(wall_ms) {
                    let settled = event_now.saturating_sub(state.engine.config().lateness_ms);
                    state.progress.latest_event_ms = state.progress.latest_event_ms.max(settled);
                }
            }
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
        }
        if state.progress.latest_event_ms > 0 {
            metrics.detect_event_time.set(state.progress.latest_event_ms / 1000);
        }
        let settled = Settled {
            // A correlator's own detectors see no data: the slowest live worker's event
            // time, less the allowed lateness (what a worker holds final), is how far the
            // cluster has got.
            event_ms: if lead.is_some() {
                cluster_settled_ms.saturating_sub(state.engine.config().lateness_ms)
            } else {
                state.engine.settled_time()
            },
            applied_lsn: state.progress.applied_lsn,
            lanes: if lead.is_some() {
                Vec::new()
            } else {
                state.engine.lane_progress()
            },
        };
        metrics
            .detect_applied_lsn
            .set(i64::try_from(settled.applied_lsn).unwrap_or(i64::MAX));
        if settled.event_ms > 0 {
            metrics.detect_settled_time.set(settled.event_ms / 1000);
        }
        *shared.settled.lock().unwrap_or_else(|e| e.into_inner()) = settled;
        let updates = state.engine.drain();
        if !updates.is_empty() {
            for a in &updates {
                metrics
                    .anomaly_updates
                    .get_or_create(&DetectorLabel {
                        detector: detector_name(a.detector),
                    })
                    .inc();
            }
            if let Some(o) = outbox.as_mut() {
                // A worker does not correlate: the cluster's correlator does, with every
                // worker's findings.
                o.pending.anomalies.extend(updates.iter().cloned());
            } else {
                let topo = shared.topology.lock().unwrap_or_else(|e| e.into_inner());
                for a in &updates {
                    correlator.observe(a, &topo);
                }
            }
            store.upsert(updates);
        }
        if let Some(o) = outbox.as_mut() {
            o.flush(state.progress.latest_event_ms);
        }
        let correlating = match &lead {
            None => outbox.is_none(),
            Some(l) => l.leading,
        };
        if correlating {
            correlator.advance(state.progress.latest_event_ms);
            let incidents = correlator.drain();
            if !incidents.is_empty() {
                match lead.as_mut().map(|l| l.replica.append_incidents(&incidents)) {
                    None | Some(Ok(())) => {
                        shared.incidents.upsert(&incidents);
                        on_incidents(&incidents);
                    }
                    Some(Err((landed, e))) => {
                        tracing::warn!(error = %e, "incident changes not replicated; stepping down as correlator");
                        // What reached the log is kept here too (the log's followers skip
                        // what this process wrote); the rest was never logged.
                        shared.incidents.upsert(&incidents[..landed]);
                        if let Some(l) = lead.as_mut() {
                            l.leading = false;
                        }
                        correlator = Correlator::new(IncidentConfig::default());
                    }
                }
            }
            // Here, between incident changes, the snapshot holds a consistent set.
            if let Some(l) = lead.as_ref().filter(|l| l.leading)
                && l.replica.snapshot_due()
            {
                l.replica.snapshot(shared.incidents.all());
            }
        }
        let stats = state.engine.stats();
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
            .detect_intervals_graced
            .inc_by(stats.intervals_graced - reported.intervals_graced);
        metrics
            .detect_series_evicted
            .inc_by(stats.series_evicted - reported.series_evicted);
        reported = stats;
        saver.tick(&state);
    }
    // The indexer has sent everything it applied before Stop: the state is complete.
    saver.at_shutdown(&state);
    if let Err(e) = store.flush().and_then(|()| shared.incidents.flush()) {
        tracing::error!(error = %e, "could not save anomalies and incidents at shutdown");
    }
    tracing::info!(series = state.engine.stats().series, "detection stopped");
}

/// A correlator for a process taking the cluster's lead: the replicated incidents, then the
/// findings of the last pending period again (those waiting for corroboration when the
/// last leader stopped; the ones already in an incident change nothing).
fn take_lead(shared: &Detection, event_ms: i64) -> Correlator {
    let cfg = IncidentConfig::default();
    let from = event_ms.saturating_sub(cfg.pending_ttl_ms);
    let mut correlator = Correlator::new(cfg);
    correlator.restore(shared.incidents.all());
    let mut recent = shared.anomalies.query(from, i64::MAX, None, usize::MAX);
    recent.sort_by(|a, b| (a.start_ms, &a.id).cmp(&(b.start_ms, &b.id)));
    let topo = shared.topology.lock().unwrap_or_else(|e| e.into_inner());
    for a in &recent {
        correlator.observe(a, &topo);
    }
    tracing::info!(
        incidents = shared.incidents.all().len(),
        findings = recent.len(),
        "took the lead as the cluster's correlator"
    );
    correlator
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
