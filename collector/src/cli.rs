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
pub struct Cli {
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
    /// Log format on stderr.
    #[arg(long, env = "VIGIL_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"], global = true)]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector (the default).
    Run,
    /// Load and validate the configuration, print it (secrets redacted), and exit.
    CheckConfig,
    /// Print the default configuration as TOML.
    DefaultConfig,
}

impl Cli {
    /// Resolves the effective configuration.
    pub fn resolve_config(&self) -> anyhow::Result<Config> {
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
        // Tokens come from the environment only: flags would show in `ps`.
        for (var, slot) in [
            ("VIGIL_INGEST_TOKEN", &mut config.auth.ingest_token),
            ("VIGIL_API_TOKEN", &mut config.auth.api_token),
            ("VIGIL_RESPONDER_TOKEN", &mut config.auth.responder_token),
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
    }
    init_logging(&cli.log_format);
    let config = cli.resolve_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        crate::app::run(config, shutdown, |bound| {
            // Tests and scripts read this line to learn the ports actually bound.
            println!("{}", bound.announcement());
        })
        .await
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
