//! Wiring: the buffer, the tailer thread, host metrics, the local receiver, the
//! shipper and the `/metrics` endpoint; signals for shutdown (SIGTERM, SIGINT) and
//! reload (SIGHUP).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use prost::Message;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::buffer::{BufferOptions, DiskBuffer, Kind};
use crate::config::Config;
use crate::hostmetrics::HostMetrics;
use crate::otlp::HostResource;
use crate::ship::Shipper;
use crate::tail::Tailer;
use crate::telemetry::AgentMetrics;

/// How long a graceful stop keeps shipping what is buffered.
const DRAIN: Duration = Duration::from_secs(5);

/// The agent's stable identity: the prefix of every batch id.
fn agent_id(state_dir: &Path) -> anyhow::Result<String> {
    let path = state_dir.join("agent-id");
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_string());
    }
    let id = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| format!("{:x}", std::process::id()));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &id).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// Runs the agent until SIGTERM/SIGINT. SIGHUP re-reads the config file and restarts
/// the sources and the shipper with it (the buffer and checkpoints carry over).
pub async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = Config::from_file(&config_path)?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let metrics = Arc::new(AgentMetrics::new());
    let metrics_server = match config.metrics_addr {
        Some(addr) => Some(serve_metrics(addr, Arc::clone(&metrics)).await?),
        None => None,
    };
    let mut announced = false;
    loop {
        let generation = Generation::start(&config, Arc::clone(&metrics)).await?;
        if !announced {
            // One machine-readable line for scripts and tests (ports may be 0 in config).
            let show = |a: Option<std::net::SocketAddr>| a.map_or("-".to_string(), |a| a.to_string());
            println!(
                "vigil-agent listening metrics={} otlp_grpc={} otlp_http={}",
                show(metrics_server.as_ref().map(|(_, a)| *a)),
                show(generation.receiver.map(|(g, _)| g)),
                show(generation.receiver.map(|(_, h)| h)),
            );
            announced = true;
        }
        tracing::info!(config = %config_path.display(), sources = config.logs.len(), "vigil-agent running");
        let reload = tokio::select! {
            _ = hup.recv() => true,
            _ = term.recv() => false,
            _ = tokio::signal::ctrl_c() => false,
        };
        if reload {
            match Config::from_file(&config_path) {
                Ok(new) => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    generation.stop().await;
                    config = new;
                    continue;
                }
                Err(e) => {
                    let e = anyhow::Error::from(e);
                    tracing::error!(error = %format!("{e:#}"), "SIGHUP: the new configuration is invalid; keeping the old one");
                    // Keep running the current generation: wait for the next signal.
                    let again = tokio::select! {
                        _ = hup.recv() => true,
                        _ = term.recv() => false,
                        _ = tokio::signal::ctrl_c() => false,
                    };
                    generation.stop().await;
                    if again && let Ok(new) = Config::from_file(&config_path) {
                        config = new;
                        continue;
                    }
                    if again {
                        continue;
                    }
                    break;
                }
            }
        }
        tracing::info!("stopping: flushing batches and checkpoints");
        generation.stop().await;
        break;
    }
    if let Some((server, _)) = metrics_server {
        server.abort();
    }
    tracing::info!("vigil-agent stopped");
    Ok(())
}

/// Everything that runs under one configuration.
struct Generation {
    stop_tailer: Arc<AtomicBool>,
    tailer: Option<std::thread::JoinHandle<()>>,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shipper: tokio::task::JoinHandle<()>,
    buffer: Arc<DiskBuffer>,
    /// Bound (gRPC, HTTP) addresses of the local receiver.
    receiver: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
}

impl Generation {
    async fn start(config: &Config, metrics: Arc<AgentMetrics>) -> anyhow::Result<Generation> {
        std::fs::create_dir_all(&config.state_dir)
            .with_context(|| format!("creating state_dir {}", config.state_dir.display()))?;
        let id = agent_id(&config.state_dir)?;
        let buffer_dir = config.state_dir.join("buffer");
        let opts = BufferOptions::new(config.buffer.max_bytes, config.buffer.when_full);
        let (buffer, recovered) = {
            let dir = buffer_dir.clone();
            tokio::task::spawn_blocking(move || DiskBuffer::open(&dir, opts)).await??
        };
        for cut in &recovered.truncated {
            tracing::warn!(detail = %cut, "disk buffer: cut a torn or corrupt tail left by a crash");
        }
        if recovered.pending_records > 0 {
            tracing::info!(
                batches = recovered.pending_records,
                bytes = recovered.pending_bytes,
                "disk buffer: resuming unsent batches"
            );
        }
        metrics.watch_buffer(&buffer);
        let host = HostResource::detect(&config.resource);
        let cancel = CancellationToken::new();
        let mut tasks = Vec::new();

        let stop_tailer = Arc::new(AtomicBool::new(false));
        let tailer = if config.logs.is_empty() {
            None
        } else {
            let tailer = Tailer::new(
                &config.logs,
                &host,
                recovered.checkpoints,
                Arc::clone(&buffer),
                config.batch.clone(),
                Arc::clone(&metrics),
            )?;
            let stop = Arc::clone(&stop_tailer);
            Some(std::thread::Builder::new().name("vigil-tail".into()).spawn(move || {
                if let Err(e) = tailer.run(&stop) {
                    tracing::error!(error = %e, "tailer stopped");
                }
            })?)
        };

        if config.host_metrics.enabled {
            let mut sampler = HostMetrics::new(&config.host_metrics.proc_path);
            let resource = host.resource(&[]);
            let buffer = Arc::clone(&buffer);
            let metrics = Arc::clone(&metrics);
            let cancel = cancel.clone();
            let every = Duration::from_secs(config.host_metrics.interval_secs);
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        () = cancel.cancelled() => return,
                    }
                    let request = sampler.collect(resource.clone(), &metrics.snapshot());
                    let payload = Bytes::from(request.encode_to_vec());
                    let buffer = Arc::clone(&buffer);
                    // Host metrics never block on a full buffer: a sample that does not
                    // fit is skipped (the next one carries the cumulative values).
                    let appended =
                        tokio::task::spawn_blocking(move || buffer.try_append(Kind::Metrics, vec![], payload)).await;
                    if let Ok(Err(e)) = appended {
                        tracing::debug!(error = %e, "host metrics sample not buffered");
                    }
                }
            }));
        }

        let mut receiver = None;
        if config.receiver.enabled {
            let (handles, grpc, http) = crate::receiver::start(
                &config.receiver,
                host.clone(),
                Arc::clone(&buffer),
                Arc::clone(&metrics),
                cancel.clone(),
            )
            .await?;
            tasks.extend(handles);
            receiver = Some((grpc, http));
        }

        let shipper = Shipper::new(&config.collector, Arc::clone(&buffer), Arc::clone(&metrics), id)?;
        let shipper = tokio::spawn(shipper.run(cancel.clone(), DRAIN));
        Ok(Generation {
            stop_tailer,
            tailer,
            cancel,
            tasks,
            shipper,
            buffer,
            receiver,
        })
    }

    /// Stops sources first (their last batches reach the buffer), then lets the shipper
    /// drain for a while, then closes the buffer.
    async fn stop(self) {
        self.stop_tailer.store(true, Ordering::Release);
        if let Some(t) = self.tailer {
            t.thread().unpark();
            let mut join = tokio::task::spawn_blocking(move || t.join());
            if tokio::time::timeout(Duration::from_secs(2), &mut join).await.is_err() {
                // Blocked on a full buffer with the collector away: closing the buffer
                // releases it. Its unbuffered lines were never checkpointed, so they
                // are read again at the next start.
                tracing::warn!("tailer blocked on a full buffer; closing the buffer");
                self.buffer.close();
                let _ = join.await;
            }
        }
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        let _ = self.shipper.await;
        self.buffer.close();
    }
}

async fn serve_metrics(
    addr: std::net::SocketAddr,
    metrics: Arc<AgentMetrics>,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, std::net::SocketAddr)> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                (
                    [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                    metrics.encode(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("metrics_addr {addr}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "agent /metrics listening");
    Ok((
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }),
        bound,
    ))
}
