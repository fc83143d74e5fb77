//! The configuration model: serde structs with defaults, environment overrides and validation.
//!
//! Owns: reading the YAML file, `REGKEEPER_*` overrides, and every check that can be made before
//! serving. May call: nothing else in the crate (other modules read the validated `Config`).

mod cleanup;
mod cron;
mod duration;
mod env;
mod error;
mod retention;
mod types;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

pub use cleanup::{CleanupConfig, CleanupMode};
pub use cron::Cron;
pub use duration::HumanDuration;
pub use env::{ENV_OVERRIDES, EnvOverride};
pub use error::ConfigError;
pub use retention::{
    Cluster, GitRepository, HelmConfig, KeepPolicy, KubernetesConfig, Limit, Operator, References,
    RetentionConfig, Scope, UntaggedManifests, Untracked, reference_pattern, repository_pattern,
    werf_default_policies,
};
pub use types::UpstreamUrl;

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Address clients push to and pull from.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Proxy worker threads, each a single-threaded runtime with its own upstream pool; 0 = one
    /// per CPU.
    #[serde(default)]
    pub workers: usize,
    /// Serve the proxy over TLS (HTTP/2 offered by ALPN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub index: IndexConfig,
    #[serde(default)]
    pub sync: SyncConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub cleanup: CleanupConfig,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub log: LogConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The registry regkeeper stands in front of, e.g. `https://registry.example.com`.
    pub url: UpstreamUrl,
    /// Extra PEM CA certificates trusted for the upstream, on top of the public web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
    /// Accept any upstream certificate. For labs only: it makes the upstream impersonable.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Other host names the upstream puts into absolute `Location`/`Link` URLs (e.g. Harbor's
    /// `externalURL`), rewritten to the proxy's address like the URL's own host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advertised_hosts: Vec<String>,
    /// Idle keep-alive connections kept per upstream host.
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle: usize,
    /// regkeeper's own account at the upstream, for what it asks itself (image configs, `sync`,
    /// cleanup). Clients' credentials are never reused. Unset: anonymous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Credentials {
    pub username: String,
    /// Prefer `passwordFile` or `REGKEEPER_UPSTREAM_PASSWORD` to writing it here.
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    /// A file holding the password (a mounted Kubernetes secret); trailing newlines are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

impl Credentials {
    /// The password: inline, or read from `passwordFile`.
    pub fn password(&self) -> Result<String, ConfigError> {
        match (&self.password, &self.password_file) {
            (Some(password), _) => Ok(password.clone()),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map(|p| p.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|e| ConfigError::Invalid {
                    field: "upstream.credentials.passwordFile",
                    message: format!("{}: {e}", file.display()),
                }),
            (None, None) => Err(ConfigError::Invalid {
                field: "upstream.credentials",
                message: "needs `password` or `passwordFile`".into(),
            }),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of `/healthz`, `/readyz` and `/metrics`. Keep it off the public network.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Bearer token for `POST /api/v1/links`; unset disables the endpoint. Prefer the
    /// `REGKEEPER_ADMIN_LINK_TOKEN` variable to writing it into the file.
    #[serde(default, skip_serializing)]
    pub link_token: Option<String>,
    /// Bearer token for the operator's calls that change the registry while `serve` holds the
    /// index (`POST /api/v1/apply`, `POST /api/v1/restore`, which `regkeeper apply`/`restore`
    /// use then); unset disables them. Kept apart from the link token, which pipelines hold.
    /// Prefer `REGKEEPER_ADMIN_OPERATOR_TOKEN`.
    #[serde(default, skip_serializing)]
    pub operator_token: Option<String>,
    /// Bearer token for the read views (`/api/v1/tags`, `inspect`, `history`, `plan`,
    /// `explain`; the operator token opens them too); unset leaves them open to whoever reaches
    /// the admin listener. Health, readiness and metrics stay open. Prefer
    /// `REGKEEPER_ADMIN_READ_TOKEN`.
    #[serde(default, skip_serializing)]
    pub read_token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            link_token: None,
            operator_token: None,
            read_token: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IndexConfig {
    /// Directory of the embedded index database.
    #[serde(default = "default_index_path")]
    pub path: PathBuf,
    /// Record pushes, deletes and pulls as traffic passes. Off: a plain proxy, no index opened.
    #[serde(default = "default_true")]
    pub record: bool,
    /// Regexes over tag names with a named group `commit`: a matching tag links its image to that
    /// commit, e.g. `^main-(?P<commit>[0-9a-f]{8})$`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tag_patterns: Vec<String>,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            path: default_index_path(),
            record: true,
            tag_patterns: Vec::new(),
        }
    }
}

/// `sync`: crawling the upstream to learn what bypassed the proxy.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncConfig {
    /// How often `serve` syncs; `0s` turns periodic sync off. An index that never finished a sync
    /// is synced right after start.
    #[serde(default = "SyncConfig::default_interval")]
    pub interval: HumanDuration,
    /// Requests to the upstream in flight at once.
    #[serde(default = "SyncConfig::default_concurrency")]
    pub concurrency: usize,
}

impl SyncConfig {
    fn default_interval() -> HumanDuration {
        HumanDuration::from_secs(6 * 3600)
    }
    fn default_concurrency() -> usize {
        8
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            interval: Self::default_interval(),
            concurrency: Self::default_concurrency(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    /// Connecting to the upstream (TCP and TLS).
    #[serde(default = "Timeouts::default_connect")]
    pub connect: HumanDuration,
    /// Until the upstream's response headers arrive. Bodies stream without a deadline.
    #[serde(default = "Timeouts::default_upstream_response")]
    pub upstream_response: HumanDuration,
    /// A client must send its request headers (and finish TLS) within this time.
    #[serde(default = "Timeouts::default_header_read")]
    pub header_read: HumanDuration,
    /// Idle upstream connections are closed after this time.
    #[serde(default = "Timeouts::default_pool_idle")]
    pub pool_idle: HumanDuration,
    /// On SIGTERM/SIGINT, in-flight requests (uploads) get this long to finish.
    #[serde(default = "Timeouts::default_shutdown_grace")]
    pub shutdown_grace: HumanDuration,
    /// A client that sends nothing of its request body for this long is answered `408` and
    /// the upstream request abandoned (nginx's `client_body_timeout`).
    #[serde(default = "Timeouts::default_body_idle")]
    pub client_body_idle: HumanDuration,
    /// An upstream that sends nothing of its response body for this long has its connection
    /// closed, and the client's with it (nginx's `proxy_read_timeout`).
    #[serde(default = "Timeouts::default_body_idle")]
    pub upstream_body_idle: HumanDuration,
}

impl Timeouts {
    fn default_connect() -> HumanDuration {
        HumanDuration::from_secs(5)
    }
    fn default_upstream_response() -> HumanDuration {
        HumanDuration::from_secs(120)
    }
    fn default_header_read() -> HumanDuration {
        HumanDuration::from_secs(30)
    }
    fn default_pool_idle() -> HumanDuration {
        HumanDuration::from_secs(90)
    }
    fn default_shutdown_grace() -> HumanDuration {
        HumanDuration::from_secs(30)
    }
    fn default_body_idle() -> HumanDuration {
        HumanDuration::from_secs(60)
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Self::default_connect(),
            upstream_response: Self::default_upstream_response(),
            header_read: Self::default_header_read(),
            pool_idle: Self::default_pool_idle(),
            shutdown_grace: Self::default_shutdown_grace(),
            client_body_idle: Self::default_body_idle(),
            upstream_body_idle: Self::default_body_idle(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Largest request head (request line + headers) a client may send, in bytes.
    #[serde(default = "Limits::default_max_header_bytes")]
    pub max_header_bytes: usize,
}

impl Limits {
    fn default_max_header_bytes() -> usize {
        64 * 1024
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: Self::default_max_header_bytes(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogConfig {
    /// `info`, `debug`, … or a full `tracing` filter such as `regkeeper=debug,hyper=warn`.
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
    /// One log line per proxied request.
    #[serde(default = "default_true")]
    pub requests: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            format: LogFormat::default(),
            requests: true,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?} (text or json)")),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5050))
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}
fn default_index_path() -> PathBuf {
    PathBuf::from("regkeeper-index")
}
fn default_pool_max_idle() -> usize {
    256
}
fn default_log_level() -> String {
    "info".into()
}
fn default_true() -> bool {
    true
}

impl Config {
    /// Reads, overrides from the environment, and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::load_str(path, &text, |var| std::env::var(var).ok())
    }

    /// `load` without touching the file system or the process environment for the YAML itself.
    pub fn load_str(
        path: &Path,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut config: Config = serde_saphyr::from_str(text).map_err(|e| syntax_error(path, e))?;
        env::apply(&mut config, env)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that need more than one field, or the file system.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen == self.admin.listen {
            return Err(ConfigError::Invalid {
                field: "admin.listen",
                message: format!("must differ from `listen` ({})", self.listen),
            });
        }
        if let Some(tls) = &self.tls {
            readable("tls.cert", &tls.cert)?;
            readable("tls.key", &tls.key)?;
        }
        if let Some(bundle) = &self.upstream.ca_bundle {
            readable("upstream.caBundle", bundle)?;
        }
        for (field, token) in [
            ("admin.linkToken", &self.admin.link_token),
            ("admin.operatorToken", &self.admin.operator_token),
            ("admin.readToken", &self.admin.read_token),
        ] {
            if token.as_ref().is_some_and(|t| t.len() < 16) {
                return Err(ConfigError::Invalid {
                    field,
                    message: "must be at least 16 characters".into(),
                });
            }
        }
        if self.admin.operator_token.is_some() && self.admin.operator_token == self.admin.link_token
        {
            return Err(ConfigError::Invalid {
                field: "admin.operatorToken",
                message: "must differ from admin.linkToken (pipelines hold that one)".into(),
            });
        }
        if let Some(credentials) = &self.upstream.credentials {
            credentials.password()?;
        }
        self.cleanup.validate()?;
        for pattern in &self.index.tag_patterns {
            let named_commit = regex::Regex::new(pattern)
                .map_err(|e| e.to_string())
                .and_then(|re| {
                    re.capture_names()
                        .any(|n| n == Some("commit"))
                        .then_some(())
                        .ok_or_else(|| "has no named group `(?P<commit>...)`".to_string())
                });
            if let Err(message) = named_commit {
                return Err(ConfigError::Invalid {
                    field: "index.tagPatterns",
                    message: format!("{pattern:?}: {message}"),
                });
            }
        }
        if self.sync.concurrency == 0 || self.sync.concurrency > 256 {
            return Err(ConfigError::Invalid {
                field: "sync.concurrency",
                message: "must be between 1 and 256".into(),
            });
        }
        self.retention.validate()?;
        if self.workers > 1024 {
            return Err(ConfigError::Invalid {
                field: "workers",
                message: format!(
                    "{} is more threads than any machine needs (0 = one per CPU)",
                    self.workers
                ),
            });
        }
        if self.limits.max_header_bytes < 8192 {
            return Err(ConfigError::Invalid {
                field: "limits.maxHeaderBytes",
                message: "must be at least 8192".into(),
            });
        }
        if self.upstream.pool_max_idle == 0 {
            return Err(ConfigError::Invalid {
                field: "upstream.poolMaxIdle",
                message:
                    "must be at least 1 (keep-alive to the upstream is what keeps the proxy fast)"
                        .into(),
            });
        }
        if self.timeouts.upstream_response.0.is_zero() || self.timeouts.header_read.0.is_zero() {
            return Err(ConfigError::Invalid {
                field: "timeouts",
                message: "upstreamResponse and headerRead must be greater than 0".into(),
            });
        }
        Ok(())
    }

    /// Proxy worker threads to start: `workers`, or one per CPU when 0.
    pub fn worker_threads(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// What is valid but probably not meant (`check-config` prints them, `serve` logs them).
    pub fn warnings(&self) -> Vec<String> {
        self.retention.warnings()
    }

    /// The effective configuration as YAML, for `check-config`.
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

fn readable(field: &'static str, path: &Path) -> Result<(), ConfigError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| ConfigError::Invalid {
            field,
            message: format!("{}: {e}", path.display()),
        })
}

fn syntax_error(path: &Path, error: serde_saphyr::Error) -> ConfigError {
    match error.location() {
        Some(location) => ConfigError::Syntax {
            path: path.to_owned(),
            line: location.line(),
            column: location.column(),
            // One line: the file, line and column once, without the parser's snippet (which
            // names the file `<input>` and says the location again).
            message: without_location(&error.without_snippet().to_string()).to_string(),
        },
        None => ConfigError::SyntaxNoLocation {
            path: path.to_owned(),
            message: error.to_string(),
        },
    }
}

/// The parser's message without its own location (`error: line N column M: ` before it, or
/// ` at line N, column M` after it): the error names the file, line and column once.
fn without_location(message: &str) -> &str {
    let rest = message.strip_prefix("error: ").unwrap_or(message);
    let rest = match rest.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
        Some((position, after)) if position.contains(" column ") => after,
        _ => rest,
    };
    // … or as a suffix: `… at line 9, column 21`.
    match rest.rsplit_once(" at line ") {
        Some((before, position))
            if position
                .split_once(", column ")
                .is_some_and(|(l, c)| l.parse::<u64>().is_ok() && c.parse::<u64>().is_ok()) =>
        {
            before
        }
        _ => rest,
    }
}

#[cfg(test)]
mod tests;
