//! Command line: flags > environment > config file > defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Secret};

#[derive(Debug, Parser)]
#[command(
    name = "vigil-collector",
    version,
    about = "Vigil collector: OTLP ingest, storage, search"
)]
pub(crate) struct Cli {
    /// TOML config file (see collector.example.toml).
    #[arg(long, env = "VIGIL_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Directory for the write-ahead log and indexes.
    #[arg(long, env = "VIGIL_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// OTLP/gRPC listen address (port 0 picks a free port).
    #[arg(long, env = "VIGIL_OTLP_GRPC_ADDR", global = true)]
    pub otlp_grpc_addr: Option<SocketAddr>,
    /// OTLP/HTTP listen address.
    #[arg(long, env = "VIGIL_OTLP_HTTP_ADDR", global = true)]
    pub otlp_http_addr: Option<SocketAddr>,
    /// Query API listen address.
    #[arg(long, env = "VIGIL_API_ADDR", global = true)]
    pub api_addr: Option<SocketAddr>,
    /// Part of a cluster this process plays (single: everything in one process).
    #[arg(long, env = "VIGIL_ROLE", value_enum, global = true)]
    pub role: Option<crate::config::Role>,
    /// NATS servers of a cluster role, comma-separated (`nats://127.0.0.1:4222,...`).
    #[arg(long, env = "VIGIL_NATS", value_delimiter = ',', global = true)]
    pub nats: Vec<String>,
    /// Log format on stderr.
    #[arg(long, env = "VIGIL_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"], global = true)]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the collector (the default).
    Run,
    /// Load and validate the configuration, print it (secrets redacted), and exit.
    CheckConfig,
    /// Print the default configuration as TOML.
    DefaultConfig,
    /// Run the collector with a simulated fleet of seven services sending it real OTLP, and
    /// inject a fault after a warm-up; prints where to watch the incident appear.
    Demo {
        /// Simulated time runs this many times faster than the wall clock (until it
        /// catches up with now).
        #[arg(long, default_value_t = 60.0)]
        speed: f64,
        /// Fault to inject (random when absent).
        #[arg(long, value_enum)]
        fault: Option<crate::demo::FaultKind>,
        /// Service to break (random when absent).
        #[arg(long)]
        service: Option<String>,
        /// Simulated minutes of normal traffic before the fault.
        #[arg(long, default_value_t = 120)]
        warmup_minutes: u64,
        /// Seed of the simulation (and of the random choices).
        #[arg(long)]
        seed: Option<u64>,
    },
}

impl Cli {
    /// Resolves the effective configuration.
    pub(crate) fn resolve_config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(a) = self.otlp_grpc_addr {
            config.otlp.grpc_addr = a;
        }
        if let Some(a) = self.otlp_http_addr {
            config.otlp.http_addr = a;
        }
        if let Some(a) = self.api_addr {
            config.api.addr = a;
        }
        if let Some(role) = self.role {
            config.cluster.role = role;
        }
        if !self.nats.is_empty() {
            config.cluster.nats_urls = self.nats.clone();
        }
        // Tokens come from the environment only: flags would show in `ps`.
        for (var, slot) in [
            ("VIGIL_INGEST_TOKEN", &mut config.auth.ingest_token),
            ("VIGIL_API_TOKEN", &mut config.auth.api_token),
            ("VIGIL_RESPONDER_TOKEN", &mut config.auth.responder_token),
            ("VIGIL_VIEWER_TOKEN", &mut config.auth.viewer_token),
            ("VIGIL_NATS_TOKEN", &mut config.auth.nats_token),
        ] {
            if let Ok(value) = std::env::var(var)
                && !value.is_empty()
            {
                *slot = Some(Secret::new(value));
            }
        }
        config.validate()?;
        Ok(config)
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tantivy=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Entry point of the binary.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::DefaultConfig) => {
            print!("{}", Config::default_toml());
            return Ok(());
        }
        Some(Command::CheckConfig) => {
            let config = cli.resolve_config()?;
            println!("configuration is valid\n{config:#?}");
            return Ok(());
        }
        Some(Command::Run) | None => {}
        Some(Command::Demo { .. }) => {}
    }
    init_logging(&cli.log_format);
    let mut config = cli.resolve_config()?;
    let demo = match &cli.command {
        Some(Command::Demo {
            speed,
            fault,
            service,
            warmup_minutes,
            seed,
        }) => {
            if cli.data_dir.is_none() && std::env::var_os("VIGIL_DATA_DIR").is_none() && cli.config.is_none() {
                config.data_dir = std::path::PathBuf::from(DEMO_DIR);
                fresh_demo_dir(&config.data_dir)?;
            } else if has_data(&config.data_dir) {
                tracing::warn!(
                    data_dir = %config.data_dir.display(),
                    "the demo adds its fleet and fault to data already here; earlier incidents stay (start from an empty directory for a clean run)"
                );
            }
            Some(demo_options(*speed, *fault, service.clone(), *warmup_minutes, *seed)?)
        }
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        let fleet_stop = shutdown.clone();
        // Boxed: the collector's whole state machine is too large to live on this stack.
        Box::pin(crate::app::run(config, shutdown, move |bound| {
            // Tests and scripts read this line to learn the ports actually bound.
            println!("{}", bound.announcement());
            if let Some(opts) = demo {
                println!(
                    "demo: 7 services sending to {}; {:?} fault on {} after {} simulated minutes at {}x \
                     (about {} s from now); incidents: http://{}/api/v1/incidents  graph: http://{}/api/v1/services/graph",
                    bound.otlp_http,
                    opts.fault,
                    opts.service,
                    opts.warmup_minutes,
                    opts.speed,
                    (opts.warmup_minutes as f64 * 60.0 / opts.speed.max(1.0)).round(),
                    bound.api,
                    bound.api
                );
                let addr = bound.otlp_http;
                tokio::spawn(async move {
                    if let Err(e) = crate::demo::run_fleet(addr, opts, fleet_stop).await {
                        tracing::error!(error = %e, "demo fleet stopped");
                    }
                });
            }
        }))
        .await
    })
}

/// The demo's own data directory, recreated at every `demo` run.
const DEMO_DIR: &str = "vigil-demo-data";
/// Marks a directory as the demo's, so that only the demo's data is ever removed.
const DEMO_MARKER: &str = ".vigil-demo";

fn has_data(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// Every demo run starts from fresh data: a second run on the first one's data would file
/// the new fault under the old, acknowledged incidents and learn from two fleets at once.
/// Only a directory the demo made (it holds the marker) is removed.
fn fresh_demo_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    if has_data(dir) {
        if !dir.join(DEMO_MARKER).exists() {
            anyhow::bail!(
                "{} holds data the demo did not write; move it away, or pass --data-dir to run the demo elsewhere",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot remove the previous demo's data in {}: {e}", dir.display()))?;
        println!(
            "demo: starting from fresh data (removed the previous demo's {})",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(DEMO_MARKER),
        "written by `vigil-collector demo`; removed at the next demo run\n",
    )?;
    Ok(())
}

fn demo_options(
    speed: f64,
    fault: Option<crate::demo::FaultKind>,
    service: Option<String>,
    warmup_minutes: u64,
    seed: Option<u64>,
) -> anyhow::Result<crate::demo::DemoOptions> {
    use crate::demo::{FaultKind, SERVICES};
    if !(speed.is_finite() && speed >= 1.0) {
        anyhow::bail!("--speed must be at least 1, got {speed}");
    }
    let seed = seed.unwrap_or_else(crate::timeutil::now_ns);
    let fault = fault.unwrap_or(
        [
            FaultKind::Cpu,
            FaultKind::Latency,
            FaultKind::Errors,
            FaultKind::Memory,
            FaultKind::Down,
        ][(seed % 5) as usize],
    );
    // The entry point and the shared stores are breakable too, but a random pick goes for a
    // service in the middle of the graph, where root-causing is interesting.
    let service = match service {
        Some(s) if SERVICES.contains(&s.as_str()) => s,
        Some(s) => anyhow::bail!("--service must be one of {}, got {s:?}", SERVICES.join(", ")),
        None => ["catalogue", "checkout", "payment", "inventory"][((seed / 5) % 4) as usize].to_string(),
    };
    if warmup_minutes < 100 {
        anyhow::bail!("--warmup-minutes must be at least 100: the detectors learn each series first");
    }
    Ok(crate::demo::DemoOptions {
        speed,
        fault,
        service,
        warmup_minutes,
        seed,
    })
}

async fn wait_for_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("termination signal received");
    shutdown.cancel();
}

#[cfg(test)]
mod demo_option_tests {
    use super::demo_options;
    use crate::demo::FaultKind;

    #[test]
    fn demo_options_are_checked_and_random_choices_are_seeded() {
        let e = demo_options(0.5, None, None, 120, Some(1)).expect_err("speed");
        assert_eq!(e.to_string(), "--speed must be at least 1, got 0.5");
        let e = demo_options(60.0, None, Some("billing".into()), 120, Some(1)).expect_err("service");
        assert!(
            e.to_string()
                .starts_with("--service must be one of frontend, catalogue"),
            "{e}"
        );
        assert!(
            demo_options(60.0, None, None, 10, Some(1)).is_err(),
            "warm-up too short"
        );
        let a = demo_options(60.0, None, None, 120, Some(42)).expect("valid");
        let b = demo_options(60.0, None, None, 120, Some(42)).expect("valid");
        assert_eq!((a.fault, a.service.clone()), (b.fault, b.service));
        let c = demo_options(60.0, Some(FaultKind::Down), Some("cache".into()), 120, Some(42)).expect("valid");
        assert_eq!((c.fault, c.service.as_str()), (FaultKind::Down, "cache"));
    }
}
