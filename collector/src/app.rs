//! Wiring and lifecycle: open storage, replay the WAL, start the threads and
//! listeners, and shut down in order (stop accepting, drain, flush WAL, commit).

use std::fs::File;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::auth::TokenCheck;
use crate::config::{Config, Role};
use crate::ingest::{self, Durability, Ingest};
use crate::process::PatternCatalog;
use crate::server::{serve, tls_acceptor};
use crate::storage::{Indexer, IndexerOptions, Store};
use crate::telemetry::Metrics;
use crate::wal::BatchDedup;
use crate::wal::{Wal, WalOptions};

/// The addresses actually bound (port 0 resolved).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub api: SocketAddr,
}

impl BoundAddrs {
    /// The stable, parseable start-up line printed on stdout.
    pub fn announcement(&self) -> String {
        format!(
            "vigil-collector listening otlp_grpc={} otlp_http={} api={}",
            self.otlp_grpc, self.otlp_http, self.api
        )
    }
}

/// Runs the collector until `shutdown` is cancelled. `on_bound` is called once the
/// listeners are bound and the collector is ready.
pub async fn run(config: Config, shutdown: CancellationToken, on_bound: impl FnOnce(BoundAddrs)) -> anyhow::Result<()> {
    config.validate()?;
    // rustls needs one process-wide provider for outgoing requests (receivers, the NATS
    // client, the query root's calls to workers).
    let _ = rustls::crypto::ring::default_provider().install_default();
    if config.cluster.role == Role::Ingest {
        return Box::pin(run_ingest(config, shutdown, on_bound)).await;
    }
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let lock = File::create(data_dir.join("LOCK"))
        .with_context(|| format!("cannot write in data_dir {}", data_dir.display()))?;
    lock.try_lock()
        .map_err(|_| anyhow::anyhow!("data_dir {} is in use by another vigil-collector", data_dir.display()))?;

    let metrics = Arc::new(Metrics::default());
    let store = Arc::new(Store::open(&data_dir.join("index"), Arc::clone(&metrics))?);
    let patterns = Arc::new(PatternCatalog::open(data_dir.join("index").join("patterns.json")));
    let metric_help = Arc::new(crate::process::MetricHelp::default());
    let dedup = BatchDedup::new(config.wal.dedup_window_secs, config.wal.dedup_max_ids);
    let dedup_path = data_dir.join("batch-ids");
    let loaded = dedup
        .load(&dedup_path)
        .with_context(|| format!("cannot read {}", dedup_path.display()))?;
    let indexer = Indexer::new(
        Arc::clone(&store),
        IndexerOptions {
            commit_interval: Duration::from_millis(config.storage.commit_interval_ms),
            writer_memory_bytes: config.storage.writer_memory_mb * 1024 * 1024,
            retention_ns: i64::try_from(config.storage.retention_hours)
                .unwrap_or(i64::MAX / 4)
                .saturating_mul(3_600_000_000_000),
            max_disk_bytes: config.storage.max_disk_bytes,
            downsampling: crate::config::downsampling::levels(&config.storage.downsampling)
                .map_err(|(key, message)| anyhow::anyhow!("{key}: {message}"))?,
            dedup_path,
        },
        Arc::clone(&dedup),
    );

    // A worker and a correlator talk to the cluster from the start: the detection thread's
    // findings leave through it (worker) or arrive through it (correlator).
    let cluster = match config.cluster.role {
        Role::Worker => Some(crate::cluster::join(&config, "vigil-worker").await?),
        Role::Rca => Some(crate::cluster::join(&config, "vigil-rca").await?),
        Role::Single | Role::Ingest => None,
    };
    // A worker's partitions being rebuilt: their history's spans stay here.
    let rebuilding = Arc::new(crate::cluster::Rebuilding::new(config.cluster.partitions));
    let findings_stop = CancellationToken::new();
    let mut findings_task = None;
    let mut replicator = None;
    let mode = match (&cluster, config.cluster.role) {
        (Some((client, js, _)), Role::Worker) => {
            crate::cluster::open_findings(js, &config.cluster).await?;
            let node = crate::cluster::node_id(&config.cluster, &data_dir, "worker")?;
            let (sink, rx) = tokio::sync::mpsc::channel(FINDINGS_QUEUE);
            findings_task = Some(tokio::spawn(crate::cluster::publish_findings(
                js.clone(),
                crate::cluster::findings_subject(&config.cluster, &node),
                client.server_info().max_payload,
                rx,
                Arc::clone(&metrics),
                findings_stop.clone(),
            )));
            crate::pipeline::Mode::Publish {
                sink,
                node,
                rebuilding: Arc::clone(&rebuilding),
            }
        }
        (Some((client, js, _)), Role::Rca) => {
            // Every correlator signs webhooks and one-click links with the same secrets, or a
            // failover would break the receivers' signature checks and every link sent before.
            for var in ["VIGIL_LINK_SECRET", "VIGIL_WEBHOOK_SECRET"] {
                if !std::env::var(var).is_ok_and(|v| !v.is_empty()) {
                    anyhow::bail!(
                        "--role rca needs {var} set, the same on every correlator (a secret generated per node would change at each failover)"
                    );
                }
            }
            let r = crate::cluster::Replicator::open(client, js, &config.cluster, Arc::clone(&metrics)).await?;
            replicator = Some(Arc::clone(&r));
            crate::pipeline::Mode::Correlate(r)
        }
        _ => crate::pipeline::Mode::Single,
    };

    let external_url = config
        .api
        .external_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.api.addr));
    let alerts = crate::alerts::AlertService::open(
        config.alerting.clone(),
        &data_dir.join("alerting"),
        external_url,
        config.api.link_ttl_secs,
    )
    .with_context(|| format!("cannot open alerting state in {}", data_dir.join("alerting").display()))?;
    if let Some(r) = &replicator {
        alerts.set_replica(Arc::clone(r) as Arc<dyn crate::alerts::Replica>);
        r.set_alerts(&alerts);
    }
    let bridge = Arc::clone(&alerts);
    let crate::pipeline::Started {
        sender: pipeline,
        detection,
        thread: detect_thread,
        applied_lsn: detected_lsn,
    } = crate::pipeline::start(
        &data_dir.join("detect"),
        config
            .detect
            .allowed_lateness_ms()
            .map_err(|m| anyhow::anyhow!("detect.allowed_lateness: {m}"))?,
        Arc::clone(&metrics),
        Box::new(move |updates| bridge.on_incidents(updates)),
        mode,
    )
    .with_context(|| format!("cannot open anomaly store in {}", data_dir.join("detect").display()))?;
    let mut stage = crate::process::Stage::new(
        store.schemas.clone(),
        Arc::clone(&patterns),
        Arc::clone(&metric_help),
        indexer,
    );
    stage.set_pipeline(pipeline.clone());
    let pipeline_stop = pipeline.clone();

    // Replay: everything in the WAL above each partition's checkpoint is re-added.
    let started = std::time::Instant::now();
    let mut replayed = 0u64;
    let wal = Wal::open(
        &data_dir.join("wal"),
        WalOptions {
            segment_bytes: config.wal.segment_bytes,
            queue_len: config.wal.queue_len,
            ..WalOptions::default()
        },
        // New LSNs must stay above everything the indexes, the time-series store and the
        // detector state hold, or fresh entries would be taken for ones already seen.
        store
            .partitions
            .max_committed_lsn()
            .max(store.tsdb.max_lsn())
            .max(detected_lsn)
            + 1,
        |record| {
            replayed += 1;
            stage.apply(record.lsn, &Bytes::from(record.payload));
        },
    )?;
    tracing::info!(
        replayed,
        batch_ids = loaded,
        next_lsn = wal.next_lsn(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "write-ahead log replayed"
    );

    let (index_tx, index_rx) = std::sync::mpsc::sync_channel(256);
    let (appender, truncator, wal_thread) = wal.start(Arc::clone(&metrics), move |entry| {
        // Only fails once the indexer is gone, i.e. during a failed shutdown; the
        // entry is durable in the WAL and will be replayed.
        let _ = index_tx.send(entry);
    })?;
    stage.indexer().set_truncator(truncator);
    stage.indexer().commit();
    stage.indexer().enforce_retention();
    let indexer_thread = std::thread::Builder::new()
        .name("vigil-indexer".into())
        .spawn(move || stage.run(index_rx))?;

    // A worker takes OTLP too, but publishes it to the stream like an ingest node: every
    // record reaches the worker that owns its service's partition, and only through the
    // stream. Its own log is fed by the partitions it consumes.
    let worker_stop = CancellationToken::new();
    let rca_js = cluster.as_ref().map(|(_, js, _)| js.clone());
    let (durability, worker_task) = match cluster {
        Some((client, js, stream)) => {
            let worker = match config.cluster.role {
                Role::Worker => Some(
                    crate::cluster::Worker::start(
                        &js,
                        stream,
                        &config.cluster,
                        &data_dir,
                        appender.clone(),
                        Arc::clone(&dedup),
                        Arc::clone(&metrics),
                        Arc::clone(&rebuilding),
                    )
                    .await?,
                ),
                _ => None,
            };
            let publisher = crate::cluster::StreamPublisher::new(&client, js, &config, Arc::clone(&metrics));
            (Durability::Stream(Arc::new(publisher)), worker)
        }
        None => (Durability::Wal(appender.clone()), None),
    };
    let ingest_dedup = match config.cluster.role {
        Role::Worker | Role::Rca => BatchDedup::new(config.wal.dedup_window_secs, config.wal.dedup_max_ids),
        Role::Single | Role::Ingest => dedup,
    };
    let rca_pipeline = pipeline.clone();
    let ingest = Arc::new(Ingest::new(
        config.otlp.clone(),
        config.storage.retention_hours,
        durability,
        ingest_dedup,
        Arc::clone(&metrics),
        TokenCheck::new(config.auth.ingest_token.as_ref()),
    ));
    let ready = Arc::new(AtomicBool::new(false));
    let users = Arc::new(crate::auth::Users::new(&config.auth.users));
    let (investigation_reader, index_delay) =
        Box::pin(investigation_reader(&config, rca_js.as_ref(), &store, &patterns)).await?;
    let api_state = ApiState {
        store: Arc::clone(&store),
        metrics: Arc::clone(&metrics),
        ready: Arc::clone(&ready),
        token: TokenCheck::new(config.auth.api_token.as_ref()),
        max_results: config.api.max_results,
        retention_hours: config.storage.retention_hours,
        anomalies: Arc::clone(&detection.anomalies),
        incidents: Arc::clone(&detection.incidents),
        topology: Arc::clone(&detection.topology),
        pipeline,
        alerts: Arc::clone(&alerts),
        responder: TokenCheck::new(config.auth.responder_token.as_ref()),
        users: Arc::clone(&users),
        investigations: Arc::new(
            crate::investigations::InvestigationStore::open(&data_dir.join("investigations"))
                .context("cannot open the investigations store")?,
        ),
        investigation_reader: Arc::clone(&investigation_reader),
        patterns: Arc::clone(&patterns),
        metric_help,
        prom_queries: Arc::new(tokio::sync::Semaphore::new(config.api.max_concurrent_queries)),
    };
    let alerting_stop = CancellationToken::new();
    let alerting_task = tokio::spawn(Arc::clone(&alerts).run(alerting_stop.clone()));
    let investigator_task = tokio::spawn(crate::investigations::incidents::run(
        investigation_reader,
        index_delay,
        Arc::clone(&detection.incidents),
        Arc::clone(&detection.settled),
        Arc::clone(&api_state.investigations),
        Arc::clone(&alerts),
        Arc::clone(&metrics),
        alerting_stop.clone(),
    ));

    let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
    let (listeners, bound) = bind_listeners(&config).await?;
    if config.api.external_url.is_none() {
        alerts.set_external_url(&format!("http://{}", bound.api));
    }
    // A worker starts consuming once it can say where its API answers (the query root
    // asks it there).
    let worker_task = worker_task.map(|mut worker| {
        let api = config
            .api
            .external_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", bound.api));
        worker.advertise(api.trim_end_matches('/').to_string());
        tokio::spawn(worker.run(worker_stop.clone()))
    });
    // A correlator follows the active one (or leads) once its API answers.
    let rca_stop = CancellationToken::new();
    let rca_task = match (replicator, rca_js) {
        (Some(replicator), Some(js)) => {
            let node = crate::cluster::node_id(&config.cluster, &data_dir, "rca")?;
            let api = config
                .api
                .external_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", bound.api));
            let rca = Arc::new(crate::cluster::RcaNode {
                replicator,
                js,
                config: config.cluster.clone(),
                node,
                alerts: Arc::clone(&alerts),
                incidents: Arc::clone(&detection.incidents),
                pipeline: rca_pipeline,
                metrics: Arc::clone(&metrics),
            });
            Some(tokio::spawn(
                rca.run(api.trim_end_matches('/').to_string(), rca_stop.clone()),
            ))
        }
        _ => None,
    };

    // The UI calls the same API router in-process for its data.
    let api = api::router(api_state);
    let stop_accepting = CancellationToken::new();
    let servers = spawn_servers(
        listeners,
        &ingest,
        api.clone().merge(vigil_dashboards::router(api, ui_config(&config))),
        tls,
        &stop_accepting,
    );
    drop(ingest);
    ready.store(true, Ordering::Release);
    tracing::info!(
        otlp_grpc = %bound.otlp_grpc,
        otlp_http = %bound.otlp_http,
        api = %bound.api,
        tls = config.tls.is_some(),
        "collector ready"
    );
    on_bound(bound);

    shutdown.cancelled().await;
    tracing::info!("shutting down: draining requests");
    ready.store(false, Ordering::Release);
    stop_accepting.cancel();
    for server in servers {
        let _ = server.await;
    }
    // A worker's consumers finish the appends they started and save their checkpoints.
    worker_stop.cancel();
    if let Some(task) = worker_task {
        let _ = task.await;
    }
    // A leading correlator gives its lease up, so a standby takes over at once.
    rca_stop.cancel();
    if let Some(task) = rca_task
        && let Ok(Err(e)) = task.await
    {
        tracing::warn!(error = %e, "the correlator stopped with an error");
    }
    // Everything acknowledged is in the WAL; flush what is queued, then let the
    // indexer commit and exit.
    appender.close().await;
    drop(appender);
    alerting_stop.cancel();
    let _ = alerting_task.await;
    let _ = investigator_task.await;
    // Findings still queued are published unless the stream is out of reach.
    findings_stop.cancel();
    tokio::task::spawn_blocking(move || {
        let _ = wal_thread.join();
        let _ = indexer_thread.join();
        pipeline_stop.stop();
        let _ = detect_thread.join();
    })
    .await?;
    if let Some(task) = findings_task {
        let _ = task.await;
    }
    drop(lock);
    tracing::info!("shutdown complete");
    Ok(())
}

/// Findings messages queued between a worker's detection thread and their publisher.
const FINDINGS_QUEUE: usize = 64;

/// The three bound listeners.
struct Listeners {
    grpc: TcpListener,
    http: TcpListener,
    api: TcpListener,
}

/// Binds the OTLP and API addresses; an error names the key of the address that failed.
async fn bind_listeners(config: &Config) -> anyhow::Result<(Listeners, BoundAddrs)> {
    let bind = |addr: SocketAddr, key: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} ({key})"))
    };
    let listeners = Listeners {
        grpc: bind(config.otlp.grpc_addr, "otlp.grpc_addr").await?,
        http: bind(config.otlp.http_addr, "otlp.http_addr").await?,
        api: bind(config.api.addr, "api.addr").await?,
    };
    let bound = BoundAddrs {
        otlp_grpc: listeners.grpc.local_addr()?,
        otlp_http: listeners.http.local_addr()?,
        api: listeners.api.local_addr()?,
    };
    Ok((listeners, bound))
}

/// Serves OTLP/gRPC and OTLP/HTTP (through `ingest`) and the API until `stop` is cancelled.
fn spawn_servers(
    listeners: Listeners,
    ingest: &Arc<Ingest>,
    api: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: &CancellationToken,
) -> [tokio::task::JoinHandle<()>; 3] {
    [
        tokio::spawn(serve(
            "otlp_grpc",
            listeners.grpc,
            ingest::grpc::routes(Arc::clone(ingest)).into_axum_router(),
            tls.clone(),
            stop.clone(),
        )),
        tokio::spawn(serve(
            "otlp_http",
            listeners.http,
            ingest::http::router(Arc::clone(ingest)),
            tls.clone(),
            stop.clone(),
        )),
        tokio::spawn(serve("api", listeners.api, api, tls, stop.clone())),
    ]
}

/// Where investigations read, and how long the incident investigator gives the indexes past
/// a window's settling: a correlator reads the workers' indexes, whose commits it cannot
/// see (it gives them a few commit intervals); anyone else reads its own.
async fn investigation_reader(
    config: &Config,
    js: Option<&async_nats::jetstream::Context>,
    store: &Arc<Store>,
    patterns: &Arc<PatternCatalog>,
) -> anyhow::Result<(Arc<dyn crate::investigations::Reader>, Duration)> {
    match js {
        Some(js) if config.cluster.role == Role::Rca => {
            let root = crate::cluster::Root::new(
                crate::cluster::open_bucket(js, &config.cluster).await?,
                config.api.max_concurrent_queries,
            )?;
            let token = config.auth.api_token.as_ref().map(|t| t.expose());
            let delay =
                Duration::from_millis(config.storage.commit_interval_ms.saturating_mul(3)) + Duration::from_secs(2);
            Ok((Arc::new(crate::cluster::WorkerRows::new(Arc::new(root), token)?), delay))
        }
        _ => Ok((
            Arc::new(crate::investigations::Local {
                store: Arc::clone(store),
                patterns: Arc::clone(patterns),
            }),
            Duration::ZERO,
        )),
    }
}

/// An ingest node: OTLP (and remote write) in, the stream out; no storage, no detection.
/// Its API port answers `/healthz`, `/readyz`, and — behind the API token, as on a single
/// collector — `/metrics` and the cluster's queries by asking the workers and the
/// correlator (`cluster::root`); the web UI on top of them.
async fn run_ingest(
    config: Config,
    shutdown: CancellationToken,
    on_bound: impl FnOnce(BoundAddrs),
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let (client, js, _) = crate::cluster::join(&config, "vigil-ingest").await?;
    let root = Arc::new(crate::cluster::Root::new(
        crate::cluster::open_bucket(&js, &config.cluster).await?,
        config.api.max_concurrent_queries,
    )?);
    let publisher = crate::cluster::StreamPublisher::new(&client, js, &config, Arc::clone(&metrics));
    let ingest = Arc::new(Ingest::new(
        config.otlp.clone(),
        config.storage.retention_hours,
        Durability::Stream(Arc::new(publisher)),
        BatchDedup::new(config.wal.dedup_window_secs, config.wal.dedup_max_ids),
        Arc::clone(&metrics),
        TokenCheck::new(config.auth.ingest_token.as_ref()),
    ));
    let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
    let (listeners, bound) = bind_listeners(&config).await?;
    let ready = Arc::new(AtomicBool::new(true));
    let api = api::node_router(
        api::NodeState {
            metrics: Arc::clone(&metrics),
            ready: Arc::clone(&ready),
            token: TokenCheck::new(config.auth.api_token.as_ref()),
            users: Arc::new(crate::auth::Users::new(&config.auth.users)),
        },
        crate::cluster::root_router(root),
    );
    // The web UI asks the root in-process, so it shows the whole cluster.
    let api = api.clone().merge(vigil_dashboards::router(api, ui_config(&config)));
    let stop_accepting = CancellationToken::new();
    let servers = spawn_servers(listeners, &ingest, api, tls, &stop_accepting);
    drop(ingest);
    tracing::info!(otlp_grpc = %bound.otlp_grpc, otlp_http = %bound.otlp_http, api = %bound.api, "ingest node ready");
    on_bound(bound);
    shutdown.cancelled().await;
    ready.store(false, Ordering::Release);
    stop_accepting.cancel();
    for server in servers {
        let _ = server.await;
    }
    // Every acknowledged batch is in the stream already; only unacknowledged ones end here.
    client.flush().await.ok();
    tracing::info!("shutdown complete");
    Ok(())
}

/// The web UI's sign-in: the API token is admin, the responder token responder, the viewer
/// token viewer. No API token (loopback only, see `Config::validate`) means no sign-in.
fn ui_config(config: &Config) -> vigil_dashboards::UiConfig {
    use vigil_dashboards::Role;
    let auth = &config.auth;
    let logins = match &auth.api_token {
        None => Vec::new(),
        Some(api) => [
            (Some(api), Role::Admin),
            (auth.responder_token.as_ref(), Role::Responder),
            (auth.viewer_token.as_ref(), Role::Viewer),
        ]
        .into_iter()
        .filter_map(|(t, role)| Some((t?.expose().to_string(), role)))
        .collect(),
    };
    // Personal tokens sign in as their owner (hashes checked here, in one place).
    let users = crate::auth::Users::new(&auth.users);
    let named_login: vigil_dashboards::NamedLogin = std::sync::Arc::new(move |token: &str| {
        let who = users.by_token(token)?;
        let role = match who.role {
            crate::config::UserRole::Viewer => Role::Viewer,
            crate::config::UserRole::Responder => Role::Responder,
            crate::config::UserRole::Admin => Role::Admin,
        };
        Some((who.name, role))
    });
    vigil_dashboards::UiConfig {
        api_token: auth.api_token.as_ref().map(|t| t.expose().to_string()),
        logins,
        named_login: Some(named_login),
        secure_cookie: config.tls.is_some(),
        ..vigil_dashboards::UiConfig::default()
    }
}
