//! Collector configuration: a TOML file with documented defaults, overridden by
//! environment variables and command-line flags (flags > env > file > defaults),
//! validated once at start-up.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod cluster;
pub(crate) mod downsampling;

pub(crate) use cluster::{ClusterConfig, Role};
pub(crate) use downsampling::DownsamplingLevel;

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

/// The whole collector configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory holding the write-ahead log and the indexes.
    pub data_dir: PathBuf,
    pub otlp: OtlpConfig,
    pub api: ApiConfig,
    pub auth: AuthConfig,
    pub tls: Option<TlsConfig>,
    pub storage: StorageConfig,
    pub wal: WalConfig,
    pub detect: DetectConfig,
    /// Routing tree, receivers, inhibition rules and escalation policies.
    pub alerting: vigil_alerting::AlertingConfig,
    /// Scale-out on NATS JetStream (opt-in; the default is one process).
    pub cluster: ClusterConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("vigil-data"),
            otlp: OtlpConfig::default(),
            api: ApiConfig::default(),
            auth: AuthConfig::default(),
            tls: None,
            storage: StorageConfig::default(),
            wal: WalConfig::default(),
            detect: DetectConfig::default(),
            alerting: vigil_alerting::AlertingConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

/// OTLP receivers and the limits applied to what they accept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Largest request body accepted, as sent (compressed). Larger gets 413.
    pub max_request_bytes: usize,
    /// Largest request after decompression; protects against compression bombs.
    pub max_decompressed_bytes: usize,
    /// Attributes kept per record; the rest are dropped and counted in
    /// `dropped_attributes_count` and in `vigil_ingest_values_truncated_total`.
    pub max_attributes_per_record: usize,
    /// String attribute values are cut to this many bytes (at a UTF-8 boundary).
    pub max_attribute_value_bytes: usize,
    /// Log bodies are cut to this many bytes.
    pub max_body_bytes: usize,
    /// Bytes of decoded requests being processed at once; beyond it ingest answers
    /// 429 / RESOURCE_EXHAUSTED so clients back off.
    pub max_in_flight_bytes: usize,
    /// Records stamped further than this in the future are rejected.
    pub max_future_skew_secs: u64,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 4317)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 4318)),
            max_request_bytes: 4 * 1024 * 1024,
            max_decompressed_bytes: 32 * 1024 * 1024,
            max_attributes_per_record: 128,
            max_attribute_value_bytes: 4096,
            max_body_bytes: 64 * 1024,
            max_in_flight_bytes: 256 * 1024 * 1024,
            max_future_skew_secs: 3600,
        }
    }
}

/// The JSON query API (and, later, the UI).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub addr: SocketAddr,
    /// Upper bound on `limit` in search requests.
    pub max_results: usize,
    /// Base URL under which people reach the API (for links in notifications); defaults to
    /// `http://<api.addr>`.
    pub external_url: Option<String>,
    /// Lifetime of the one-click acknowledge/resolve links in notifications.
    pub link_ttl_secs: u64,
    /// PromQL queries and Prometheus listings evaluated at once (Prometheus'
    /// `--query.max-concurrency`); more wait for a slot, up to their timeout.
    pub max_concurrent_queries: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_results: 10_000,
            external_url: None,
            link_ttl_secs: 86_400,
            max_concurrent_queries: 8,
        }
    }
}

/// Bearer tokens. Prefer the environment (`VIGIL_INGEST_TOKEN`, `VIGIL_API_TOKEN`)
/// over writing them into the file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Required on OTLP requests (`authorization: Bearer ...`) when set.
    pub ingest_token: Option<Secret>,
    /// Required on API requests when set.
    pub api_token: Option<Secret>,
    /// Lets on-call responders acknowledge, resolve, comment and give feedback (and nothing
    /// else) when set; the API token can do all of it too.
    pub responder_token: Option<Secret>,
    /// Signs into the web UI read-only (role viewer). In the UI the API token is admin and
    /// the responder token is responder; without an API token the UI needs no sign-in
    /// (loopback only).
    pub viewer_token: Option<Secret>,
    /// People (and tools) with their own token: what they do is recorded under their name,
    /// whatever a request body claims. Needs `api_token` (the UI calls the API with it).
    pub users: Vec<UserConfig>,
    /// Token a cluster role presents to the NATS servers (`VIGIL_NATS_TOKEN`), when they ask
    /// for one.
    pub nats_token: Option<Secret>,
}

/// One personal token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Who the audit log, acknowledgements and silences name.
    pub name: String,
    pub role: UserRole,
    /// SHA-256 of the token in hex (`printf %s "$TOKEN" | sha256sum`): the file never holds
    /// the token itself.
    pub token_sha256: String,
}

/// What a personal token may do: read (viewer); also acknowledge, resolve, comment, give
/// feedback and silence (responder); everything (admin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserRole {
    Viewer,
    Responder,
    Admin,
}

/// TLS for every listener (OTLP gRPC, OTLP HTTP, API).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain.
    pub cert_file: PathBuf,
    /// PEM file with the private key.
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// How often new data is committed to the indexes; bounds search freshness.
    pub commit_interval_ms: u64,
    /// Partitions (one per signal per UTC day) older than this are deleted.
    pub retention_hours: u64,
    /// When the indexes exceed this many bytes the oldest partitions are deleted;
    /// 0 means no size limit.
    pub max_disk_bytes: u64,
    /// Indexing memory budget per open partition writer, in MiB (tantivy needs >= 15).
    pub writer_memory_mb: usize,
    /// Old days of metric samples kept at a coarser step (`[[storage.downsampling]]`,
    /// `after = "2d"`, `step = "5m"`); none by default.
    pub downsampling: Vec<DownsamplingLevel>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            commit_interval_ms: 1000,
            retention_hours: 7 * 24,
            max_disk_bytes: 0,
            writer_memory_mb: 64,
            downsampling: Vec::new(),
        }
    }
}

/// The detectors.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// How late (in event time) a log line or span may arrive and still be counted in its
    /// one-minute interval, e.g. "2m": intervals are scored this long after they end.
    /// Later ones are counted in `vigil_detect_late_events_total` and left out.
    pub allowed_lateness: String,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            allowed_lateness: "2m".into(),
        }
    }
}

impl DetectConfig {
    /// `allowed_lateness` in milliseconds (validated by [`Config::validate`]).
    pub fn allowed_lateness_ms(&self) -> Result<i64, String> {
        let ns = crate::timeutil::parse_duration(&self.allowed_lateness)?;
        let ms = ns / 1_000_000;
        if ms > 3_600_000 {
            return Err(format!(
                "{:?} is more than an hour: every finding would wait that long",
                self.allowed_lateness
            ));
        }
        Ok(ms)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    pub segment_bytes: u64,
    /// Appends waiting for the WAL writer before ingest answers 503.
    pub queue_len: usize,
    /// How long an `x-vigil-batch-id` is remembered for deduplication.
    pub dedup_window_secs: u64,
    /// Upper bound on remembered batch ids (oldest forgotten first).
    pub dedup_max_ids: usize,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_bytes: 64 * 1024 * 1024,
            queue_len: 1024,
            dedup_window_secs: 24 * 3600,
            dedup_max_ids: 1_000_000,
        }
    }
}

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("invalid value for `alerting.{key}`: {message}")]
    Alerting { key: String, message: String },
}

impl Config {
    /// Reads a TOML file; unknown keys are errors that name the key.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// Checks the cross-field rules. Run once at start-up and by `check-config`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| {
            Err(ConfigError::Invalid {
                key: key.to_string(),
                message,
            })
        };
        let o = &self.otlp;
        if o.max_request_bytes == 0 {
            return invalid("otlp.max_request_bytes", "must be greater than 0".into());
        }
        if o.max_decompressed_bytes < o.max_request_bytes {
            return invalid(
                "otlp.max_decompressed_bytes",
                format!(
                    "{} is smaller than otlp.max_request_bytes ({})",
                    o.max_decompressed_bytes, o.max_request_bytes
                ),
            );
        }
        if o.max_in_flight_bytes < o.max_decompressed_bytes {
            return invalid(
                "otlp.max_in_flight_bytes",
                format!(
                    "{} is smaller than otlp.max_decompressed_bytes ({}); no request could ever be admitted",
                    o.max_in_flight_bytes, o.max_decompressed_bytes
                ),
            );
        }
        if o.max_attribute_value_bytes < 16 {
            return invalid("otlp.max_attribute_value_bytes", "must be at least 16".into());
        }
        if o.max_body_bytes < 16 {
            return invalid("otlp.max_body_bytes", "must be at least 16".into());
        }
        if self.storage.commit_interval_ms == 0 || self.storage.commit_interval_ms > 60_000 {
            return invalid(
                "storage.commit_interval_ms",
                format!("{} is outside 1..=60000", self.storage.commit_interval_ms),
            );
        }
        if self.storage.retention_hours == 0 {
            return invalid("storage.retention_hours", "must be at least 1".into());
        }
        if let Err((key, message)) = downsampling::levels(&self.storage.downsampling) {
            return invalid(&key, message);
        }
        if self.storage.writer_memory_mb < 15 {
            return invalid(
                "storage.writer_memory_mb",
                format!("{} is below tantivy's minimum of 15", self.storage.writer_memory_mb),
            );
        }
        self.alerting.validate().map_err(|e| ConfigError::Alerting {
            key: e.key,
            message: e.message,
        })?;
        if self.api.link_ttl_secs == 0 {
            return invalid("api.link_ttl_secs", "must be greater than 0".into());
        }
        if self.api.max_concurrent_queries == 0 {
            return invalid("api.max_concurrent_queries", "must be greater than 0".into());
        }
        if let Err(message) = self.detect.allowed_lateness_ms() {
            return invalid("detect.allowed_lateness", message);
        }
        if let Err((key, message)) = self.cluster.validate() {
            return invalid(key, message);
        }
        if self.wal.queue_len == 0 {
            return invalid("wal.queue_len", "must be greater than 0".into());
        }
        if self.wal.segment_bytes < 4096 {
            return invalid("wal.segment_bytes", "must be at least 4096".into());
        }
        for (key, token) in [
            ("auth.ingest_token", &self.auth.ingest_token),
            ("auth.api_token", &self.auth.api_token),
            ("auth.responder_token", &self.auth.responder_token),
            ("auth.viewer_token", &self.auth.viewer_token),
        ] {
            if let Some(t) = token
                && t.expose().len() < 16
            {
                return invalid(key, "must be at least 16 characters".into());
            }
        }
        let mut names = std::collections::BTreeSet::new();
        let mut hashes = std::collections::BTreeSet::new();
        for (i, u) in self.auth.users.iter().enumerate() {
            let name = u.name.trim();
            if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
                return invalid(
                    &format!("auth.users[{i}].name"),
                    "must be 1 to 64 printable characters".into(),
                );
            }
            if !names.insert(name.to_string()) {
                return invalid(&format!("auth.users[{i}].name"), format!("{name:?} is named twice"));
            }
            let hash = u.token_sha256.to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return invalid(
                    &format!("auth.users[{i}].token_sha256"),
                    "must be the token's SHA-256 as 64 hex digits (printf %s \"$TOKEN\" | sha256sum)".into(),
                );
            }
            if !hashes.insert(hash) {
                return invalid(
                    &format!("auth.users[{i}].token_sha256"),
                    "another user has the same token".into(),
                );
            }
        }
        if !self.auth.users.is_empty() && self.auth.api_token.is_none() {
            return invalid(
                "auth.users",
                "personal tokens need auth.api_token (VIGIL_API_TOKEN) as well: without it the API asks for no token at all, and the UI calls the API with it".into(),
            );
        }
        // Secure by default: nothing listens beyond loopback without a token.
        let ingest_token = self.auth.ingest_token.is_some();
        for (key, addr, has_token, token_key) in [
            (
                "otlp.grpc_addr",
                self.otlp.grpc_addr,
                ingest_token,
                "auth.ingest_token / VIGIL_INGEST_TOKEN",
            ),
            (
                "otlp.http_addr",
                self.otlp.http_addr,
                ingest_token,
                "auth.ingest_token / VIGIL_INGEST_TOKEN",
            ),
            (
                "api.addr",
                self.api.addr,
                self.auth.api_token.is_some(),
                "auth.api_token / VIGIL_API_TOKEN",
            ),
        ] {
            if !addr.ip().is_loopback() && !has_token {
                return invalid(
                    key,
                    format!(
                        "{addr} is not a loopback address; refusing to expose it without a token (set {token_key})"
                    ),
                );
            }
        }
        if let Some(tls) = &self.tls {
            for (key, path) in [("tls.cert_file", &tls.cert_file), ("tls.key_file", &tls.key_file)] {
                if !path.is_file() {
                    return invalid(key, format!("{} is not a readable file", path.display()));
                }
            }
        }
        Ok(())
    }

    /// The documented default configuration, as TOML.
    pub fn default_toml() -> String {
        toml::to_string_pretty(&Config::default()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let config = Config::default();
        config.validate().expect("defaults must be valid");
        let text = Config::default_toml();
        let back = Config::from_toml(&text).expect("default toml parses");
        assert_eq!(back.otlp.grpc_addr, config.otlp.grpc_addr);
        assert_eq!(back.storage.retention_hours, config.storage.retention_hours);
    }

    #[test]
    fn shipped_example_config_parses_and_validates() {
        let text = include_str!("../collector.example.toml");
        let config = Config::from_toml(text).expect("example parses");
        config.validate().expect("example is valid");
    }

    #[test]
    fn cluster_errors_name_the_key() {
        let config = Config::from_toml("[cluster]\nrole = \"worker\"\n").expect("parses");
        let err = config.validate().expect_err("no servers").to_string();
        assert!(err.contains("`cluster.nats_urls`"), "{err}");
        let config =
            Config::from_toml("[cluster]\nrole = \"ingest\"\nnats_urls = [\"nats://127.0.0.1:4222\"]\nreplicas = 7\n")
                .expect("parses");
        let err = config.validate().expect_err("too many replicas").to_string();
        assert!(err.contains("`cluster.replicas`"), "{err}");
        let err = Config::from_toml("[cluster]\nrole = \"leader\"\n").expect_err("unknown role");
        assert!(err.contains("leader"), "{err}");
    }

    #[test]
    fn alerting_errors_name_the_key() {
        let config = Config::from_toml("[alerting.route]\nreceiver = \"nobody\"\n").expect("parses");
        let err = config.validate().expect_err("unknown receiver").to_string();
        assert_eq!(
            err,
            "invalid value for `alerting.route.receiver`: unknown receiver \"nobody\""
        );
        let config = Config::from_toml(
            "[alerting.route]\nreceiver = \"default\"\n[[alerting.route.routes]]\nmatchers = ['x=~\"(\"']\n",
        )
        .expect("parses");
        let err = config.validate().expect_err("bad regex").to_string();
        assert!(
            err.starts_with("invalid value for `alerting.route.routes[0].matchers[0]`: bad regular expression"),
            "{err}"
        );
    }

    #[test]
    fn allowed_lateness_is_a_duration_and_errors_name_the_key() {
        assert_eq!(Config::default().detect.allowed_lateness_ms(), Ok(120_000));
        let config = Config::from_toml("[detect]\nallowed_lateness = \"90s\"\n").expect("parses");
        assert_eq!(config.detect.allowed_lateness_ms(), Ok(90_000));
        for bad in ["soon", "2h", "0s"] {
            let config = Config::from_toml(&format!("[detect]\nallowed_lateness = {bad:?}\n")).expect("parses");
            let err = config.validate().expect_err(bad).to_string();
            assert!(err.contains("detect.allowed_lateness"), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[otlp]\nmax_request_byte = 5\n").expect_err("unknown key");
        assert!(err.contains("max_request_byte"), "{err}");
    }

    #[test]
    fn public_bind_without_token_is_refused_with_the_key() {
        let mut config = Config::default();
        config.otlp.http_addr = "0.0.0.0:4318".parse().expect("addr");
        let err = config.validate().expect_err("must refuse").to_string();
        assert!(err.contains("otlp.http_addr"), "{err}");
        assert!(err.contains("VIGIL_INGEST_TOKEN"), "{err}");
        config.auth.ingest_token = Some(Secret::new("0123456789abcdef0123"));
        config.validate().expect("allowed with a token");
    }

    #[test]
    fn personal_tokens_are_checked_with_the_key_named() {
        let user = |name: &str, hash: &str| UserConfig {
            name: name.into(),
            role: UserRole::Responder,
            token_sha256: hash.into(),
        };
        let good = "a".repeat(64);
        let mut config = Config::default();
        config.auth.users = vec![user("ana", &good)];
        let err = config.validate().expect_err("needs the API token").to_string();
        assert!(err.contains("auth.users") && err.contains("api_token"), "{err}");
        config.auth.api_token = Some(Secret::new("0123456789abcdef0123"));
        config.validate().expect("valid");
        for (users, key) in [
            (vec![user("ana", "abc")], "auth.users[0].token_sha256"),
            (vec![user(" ", &good)], "auth.users[0].name"),
            (
                vec![user("ana", &good), user("ana", &"b".repeat(64))],
                "auth.users[1].name",
            ),
            (
                vec![user("ana", &good), user("bo", &good.to_uppercase())],
                "auth.users[1].token_sha256",
            ),
        ] {
            config.auth.users = users;
            let err = config.validate().expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let mut config = Config::default();
        config.auth.api_token = Some(Secret::new("super-secret-token-value"));
        let debug = format!("{config:?}");
        assert!(!debug.contains("super-secret-token-value"));
        assert!(debug.contains("redacted"));
    }
}
