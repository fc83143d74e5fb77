//! The config file's sections other than retention and cleanup: the listener's TLS, the
//! upstream and its credentials, the admin listener, the index, sync, timeouts, limits, logging —
//! each with its defaults.

use super::*;

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
            (None, Some(file)) => secret_file("upstream.credentials.passwordFile", file),
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
    /// Bearer token for `POST /api/v1/notifications`, where the registry sends its
    /// notifications (Distribution's `notifications.endpoints`, a Harbor webhook); unset
    /// disables the endpoint. Prefer `REGKEEPER_ADMIN_NOTIFICATION_TOKEN`.
    #[serde(default, skip_serializing)]
    pub notification_token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            link_token: None,
            operator_token: None,
            read_token: None,
            notification_token: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IndexConfig {
    /// Where the index lives: `sled` (embedded, one replica) or `postgres` (shared by several).
    #[serde(default)]
    pub backend: IndexBackend,
    /// Directory of the embedded index database (`backend: sled`).
    #[serde(default = "default_index_path")]
    pub path: PathBuf,
    /// The shared index (`backend: postgres`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresConfig>,
    /// How long the leader's lease (cleanup and sync run on one process) lasts unrenewed: a
    /// leader that died is replaced after this, at the next schedule.
    #[serde(default = "default_leader_lease")]
    pub leader_lease: HumanDuration,
    /// Record pushes, deletes and pulls as traffic passes. Off: a plain proxy, no index opened.
    #[serde(default = "default_true")]
    pub record: bool,
    /// Regexes over tag names with a named group `commit`: a matching tag links its image to that
    /// commit, e.g. `^main-(?P<commit>[0-9a-f]{8})$`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tag_patterns: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexBackend {
    #[default]
    Sled,
    Postgres,
}

/// The shared index's database.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user@host:5432/db?sslmode=require` (libpq's URL or `key=value` form). TLS is
    /// used when the server offers it (`sslmode=prefer`, the default) or the URL demands it.
    pub url: String,
    /// A file holding the password (a mounted secret), instead of one in the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Extra PEM CA certificates trusted for the database, on top of the public web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
    /// Accept any database certificate. For labs only.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Connections each process keeps to the database.
    #[serde(default = "PostgresConfig::default_connections")]
    pub connections: usize,
    /// How long a call waits for a connection before it fails (and the caller retries later).
    #[serde(default = "PostgresConfig::default_connect_timeout")]
    pub connect_timeout: HumanDuration,
}

impl PostgresConfig {
    /// `url` with every other setting at its default.
    pub fn new(url: String) -> Self {
        Self {
            url,
            password_file: None,
            ca_bundle: None,
            insecure_skip_verify: false,
            connections: Self::default_connections(),
            connect_timeout: Self::default_connect_timeout(),
        }
    }

    fn default_connections() -> usize {
        8
    }
    fn default_connect_timeout() -> HumanDuration {
        HumanDuration::from_secs(5)
    }

    /// The password from `passwordFile`, if one is set.
    pub fn password(&self) -> Result<Option<String>, ConfigError> {
        self.password_file
            .as_ref()
            .map(|file| secret_file("index.postgres.passwordFile", file))
            .transpose()
    }
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            backend: IndexBackend::Sled,
            postgres: None,
            leader_lease: default_leader_lease(),
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

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}
/// A secret from a file (a mounted Kubernetes secret); trailing newlines are not part of it.
fn secret_file(field: &'static str, file: &std::path::Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file)
        .map(|p| p.trim_end_matches(['\r', '\n']).to_string())
        .map_err(|e| ConfigError::Invalid {
            field,
            message: format!("{}: {e}", file.display()),
        })
}

fn default_leader_lease() -> HumanDuration {
    HumanDuration::from_secs(30)
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
