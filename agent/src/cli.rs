//! Command line: `run`, `check-config`, `install`, `uninstall`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "vigil-agent",
    version,
    about = "Ships this node's logs, host metrics and local OTLP to a Vigil collector"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent in the foreground (what the systemd unit does).
    Run {
        #[arg(long, short, default_value = "/etc/vigil/agent.toml", env = "VIGIL_AGENT_CONFIG")]
        config: PathBuf,
    },
    /// Load and validate a config; exit 0 if it is good, print what is wrong otherwise.
    CheckConfig {
        #[arg(long, short, default_value = "/etc/vigil/agent.toml")]
        config: PathBuf,
    },
    /// Write the systemd unit, a commented default config and the state directory.
    Install {
        /// Collector endpoint to write into the config (http(s)://host:4317 or :4318).
        #[arg(long)]
        collector: Option<String>,
        /// Install under this root instead of / (for packaging).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Overwrite an existing config.
        #[arg(long)]
        force: bool,
    },
    /// Remove the systemd unit (and, with --purge, the config and state).
    Uninstall {
        #[arg(long, default_value = "/")]
        root: PathBuf,
        #[arg(long)]
        purge: bool,
    },
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Run { config } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("vigil-agent")
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(crate::app::run(config))),
        Command::CheckConfig { config } => crate::config::Config::from_file(&config)
            .map(|c| println!("{}: ok ({} log sources)", config.display(), c.logs.len()))
            .map_err(anyhow::Error::from),
        Command::Install { collector, root, force } => {
            let layout = crate::install::Layout::under(&root);
            std::env::current_exe()
                .map_err(|e| anyhow::anyhow!("cannot find the running binary to install: {e}"))
                .and_then(|binary| crate::install::install(&layout, &binary, collector.as_deref(), force))
                .map(|done| {
                    for d in done {
                        println!("{d}");
                    }
                    println!("next: systemctl daemon-reload && systemctl enable --now vigil-agent");
                })
        }
        Command::Uninstall { root, purge } => {
            let layout = crate::install::Layout::under(&root);
            crate::install::uninstall(&layout, purge).map(|done| {
                for d in done {
                    println!("{d}");
                }
            })
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("VIGIL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("VIGIL_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
