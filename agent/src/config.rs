//! Agent configuration: one TOML file with documented defaults. Unknown keys are
//! rejected with the key named, so a typo never silently disables a source.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A value that must never appear in logs or `Debug` output.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Holds the disk buffer, file checkpoints and the agent's identity.
    pub state_dir: PathBuf,
    pub collector: CollectorConfig,
    pub batch: BatchConfig,
    pub buffer: BufferConfig,
    pub host_metrics: HostMetricsConfig,
    pub receiver: ReceiverConfig,
    /// The agent's own Prometheus `/metrics`, on loopback. Empty string disables it.
    pub metrics_addr: Option<SocketAddr>,
    /// Resource attributes added to everything the agent ships (after `host.*`).
    pub resource: BTreeMap<String, String>,
    /// Log file sources.
    #[serde(rename = "logs")]
    pub logs: Vec<LogSource>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: PathBuf::from("/var/lib/vigil-agent"),
            collector: CollectorConfig::default(),
            batch: BatchConfig::default(),
            buffer: BufferConfig::default(),
            host_metrics: HostMetricsConfig::default(),
            receiver: ReceiverConfig::default(),
            metrics_addr: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            resource: BTreeMap::new(),
            logs: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Grpc,
    Http,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// `http://host:4317` for gRPC, `http://host:4318` for HTTP; `https://` for TLS.
    pub endpoint: String,
    pub protocol: Protocol,
    /// Sent as `authorization: Bearer <token>`. Prefer `VIGIL_AGENT_TOKEN` in the environment.
    pub token: Option<Secret>,
    /// PEM file of the CA that signed the collector's certificate (for `https://`).
    pub ca_file: Option<PathBuf>,
    pub gzip: bool,
    /// Per-request timeout.
    pub timeout_secs: u64,
    /// Retry backoff: starts here, doubles, capped at `max_backoff_secs`, with jitter.
    pub initial_backoff_ms: u64,
    pub max_backoff_secs: u64,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            endpoint: "http://127.0.0.1:4317".into(),
            protocol: Protocol::Grpc,
            token: None,
            ca_file: None,
            gzip: true,
            timeout_secs: 10,
            initial_backoff_ms: 200,
            max_backoff_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// A batch is cut at this many records…
    pub max_records: usize,
    /// …or this many bytes of encoded OTLP…
    pub max_bytes: usize,
    /// …or when its oldest record has waited this long.
    pub timeout_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_records: 8192,
            max_bytes: 1024 * 1024,
            timeout_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Sources wait (files are not read further) until the collector catches up.
    Block,
    /// The oldest unsent batches are deleted and counted in `vigil_agent_buffer_dropped_*`.
    DropOldest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    /// Upper bound on unsent data kept on disk.
    pub max_bytes: u64,
    pub when_full: WhenFull,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            max_bytes: 256 * 1024 * 1024,
            when_full: WhenFull::Block,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostMetricsConfig {
    pub enabled: bool,
    pub interval_secs: u64,
    /// Root of the proc filesystem (a container may mount the host's elsewhere).
    pub proc_path: PathBuf,
}

impl Default for HostMetricsConfig {
    fn default() -> Self {
        HostMetricsConfig {
            enabled: true,
            interval_secs: 10,
            proc_path: PathBuf::from("/proc"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverConfig {
    pub enabled: bool,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Required from applications (`authorization: Bearer …`) when set; mandatory when a
    /// receiver listens beyond loopback. Prefer `VIGIL_AGENT_RECEIVER_TOKEN`.
    pub token: Option<Secret>,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            enabled: true,
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 14317)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 14318)),
            token: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// Files present at the agent's first start are read from their end.
    End,
    Beginning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParseMode {
    /// JSON objects and logfmt are recognised; anything else stays plain text.
    Auto,
    Json,
    Logfmt,
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSource {
    /// Glob patterns of files to tail (`/var/log/app/*.log`).
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// `service.name` of these logs.
    pub service_name: Option<String>,
    #[serde(default = "default_start_at")]
    pub start_at: StartAt,
    /// Longer lines are cut to this many bytes (and marked `log.record.truncated`).
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    #[serde(default = "default_parse")]
    pub parse: ParseMode,
    pub multiline: Option<MultilineConfig>,
    /// Extra resource attributes for this source.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

fn default_start_at() -> StartAt {
    StartAt::End
}
fn default_max_line_bytes() -> usize {
    64 * 1024
}
fn default_parse() -> ParseMode {
    ParseMode::Auto
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    /// A line matching this regex starts a new record; other lines join the current one.
    pub start_pattern: String,
    /// A pending record is emitted after this long without a new line.
    #[serde(default = "default_multiline_timeout")]
    pub timeout_ms: u64,
}

fn default_multiline_timeout() -> u64 {
    1000
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The cause is the error's source, not part of its text: printed with its chain (as the
    // CLI does) it read "No such file or directory" twice.
    #[error("cannot read config {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        if config.collector.token.is_none()
            && let Ok(token) = std::env::var("VIGIL_AGENT_TOKEN")
            && !token.is_empty()
        {
            config.collector.token = Some(Secret::new(token));
        }
        if config.receiver.token.is_none()
            && let Ok(token) = std::env::var("VIGIL_AGENT_RECEIVER_TOKEN")
            && !token.is_empty()
        {
            config.receiver.token = Some(Secret::new(token));
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses without validation; the message names the offending key and line.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| Err(ConfigError::Invalid { key, message });
        let endpoint = &self.collector.endpoint;
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return invalid(
                "collector.endpoint".into(),
                format!("{endpoint:?} must start with http:// or https://"),
            );
        }
        let Ok(uri) = endpoint.parse::<http::Uri>() else {
            return invalid("collector.endpoint".into(), format!("{endpoint:?} is not a URL"));
        };
        if uri.host().is_none_or(str::is_empty) {
            return invalid("collector.endpoint".into(), format!("{endpoint:?} names no host"));
        }
        // `http::Uri` accepts a port of any size (and then reports none); a socket cannot
        // use one past 65535, nor port 0.
        let authority = uri.authority().map_or("", |a| a.as_str());
        if let Some((_, port)) = authority.rsplit_once(':')
            && !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().map_or(true, |p| p == 0)
        {
            return invalid(
                "collector.endpoint".into(),
                format!("port {port} of {endpoint:?} is not between 1 and 65535"),
            );
        }
        if self.collector.timeout_secs == 0 {
            return invalid("collector.timeout_secs".into(), "must be at least 1".into());
        }
        if self.batch.max_records == 0 || self.batch.max_bytes < 1024 {
            return invalid(
                "batch.max_records".into(),
                "batches need at least one record and 1024 bytes".into(),
            );
        }
        if self.buffer.max_bytes < 4 * self.batch.max_bytes as u64 {
            return invalid(
                "buffer.max_bytes".into(),
                format!(
                    "{} is too small: it must hold at least four batches (4 × batch.max_bytes = {})",
                    self.buffer.max_bytes,
                    4 * self.batch.max_bytes
                ),
            );
        }
        if self.receiver.enabled && self.receiver.token.is_none() {
            for (key, addr) in [
                ("receiver.grpc_addr", self.receiver.grpc_addr),
                ("receiver.http_addr", self.receiver.http_addr),
            ] {
                if !addr.ip().is_loopback() {
                    return invalid(
                        key.into(),
                        format!(
                            "{addr} is not loopback: set receiver.token (or VIGIL_AGENT_RECEIVER_TOKEN) before exposing the receiver"
                        ),
                    );
                }
            }
        }
        if self.host_metrics.interval_secs == 0 {
            return invalid("host_metrics.interval_secs".into(), "must be at least 1".into());
        }
        for (i, source) in self.logs.iter().enumerate() {
            if source.include.is_empty() {
                return invalid(format!("logs[{i}].include"), "needs at least one glob".into());
            }
            for (field, globs) in [("include", &source.include), ("exclude", &source.exclude)] {
                for g in globs {
                    if let Err(e) = glob::Pattern::new(g) {
                        return invalid(format!("logs[{i}].{field}"), format!("{g:?} is not a glob: {e}"));
                    }
                }
            }
            if source.max_line_bytes < 16 {
                return invalid(format!("logs[{i}].max_line_bytes"), "must be at least 16".into());
            }
            if let Some(m) = &source.multiline
                && let Err(e) = regex::Regex::new(&m.start_pattern)
            {
                return invalid(format!("logs[{i}].multiline.start_pattern"), e.to_string());
            }
        }
        Ok(())
    }
}

/// The commented default configuration that `install` writes.
pub const DEFAULT_CONFIG: &str = include_str!("../packaging/agent.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_default_config_parses_and_validates() {
        let config = Config::from_toml(DEFAULT_CONFIG).expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.logs.len(), 1);
    }

    #[test]
    fn a_typo_names_the_key() {
        let err = Config::from_toml("[collector]\nendpiont = \"http://x:4317\"\n").expect_err("must be refused");
        assert!(err.contains("endpiont"), "{err}");
        let err =
            Config::from_toml("[[logs]]\ninclude = [\"/x\"]\nservce_name = \"a\"\n").expect_err("must be refused");
        assert!(err.contains("servce_name"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let mut c = Config::from_toml("[[logs]]\ninclude = [\"/x/[\"]\n").expect("parses");
        let err = c.validate().expect_err("must be refused").to_string();
        assert!(err.contains("logs[0].include"), "{err}");
        c.logs.clear();
        c.collector.endpoint = "collector:4317".into();
        let err = c.validate().expect_err("must be refused").to_string();
        assert!(err.contains("collector.endpoint"), "{err}");
        for bad in ["http://127.0.0.1:99999", "http://127.0.0.1:0", "http://:4317"] {
            c.collector.endpoint = bad.into();
            let err = c.validate().expect_err(bad).to_string();
            assert!(err.contains("collector.endpoint"), "{bad}: {err}");
        }
        c.collector.endpoint = "http://127.0.0.1:4317".into();
        c.buffer.max_bytes = 1000;
        let err = c.validate().expect_err("must be refused").to_string();
        assert!(err.contains("buffer.max_bytes"), "{err}");
    }

    #[test]
    fn the_receiver_stays_on_loopback_unless_a_token_guards_it() {
        let mut c = Config::default();
        c.receiver.http_addr = "0.0.0.0:14318".parse().expect("addr");
        let err = c.validate().expect_err("must be refused").to_string();
        assert!(
            err.contains("receiver.http_addr") && err.contains("receiver.token"),
            "{err}"
        );
        c.receiver.token = Some(Secret::new("a-long-enough-token"));
        c.validate().expect("a token makes it acceptable");
    }

    #[test]
    fn the_token_is_never_printed() {
        let mut c = Config::default();
        c.collector.token = Some(Secret::new("s3cr3t"));
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
