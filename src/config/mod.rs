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
mod sections;
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
pub use sections::{
    AdminConfig, Credentials, IndexBackend, IndexConfig, Limits, LogConfig, LogFormat,
    PostgresConfig, SyncConfig, Timeouts, TlsConfig, UpstreamConfig,
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

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5050))
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
        self.validate_admin()?;
        if let Some(tls) = &self.tls {
            readable("tls.cert", &tls.cert)?;
            readable("tls.key", &tls.key)?;
        }
        if let Some(bundle) = &self.upstream.ca_bundle {
            readable("upstream.caBundle", bundle)?;
        }
        if let Some(credentials) = &self.upstream.credentials {
            credentials.password()?;
        }
        self.cleanup.validate()?;
        self.validate_index_backend()?;
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
        self.retention.validate()?;
        self.validate_limits()
    }

    /// `backend: postgres` names a database that can be reached as configured.
    fn validate_index_backend(&self) -> Result<(), ConfigError> {
        let postgres = match (self.index.backend, &self.index.postgres) {
            (IndexBackend::Sled, _) => return Ok(()),
            (IndexBackend::Postgres, Some(postgres)) if !postgres.url.is_empty() => postgres,
            (IndexBackend::Postgres, _) => {
                return Err(ConfigError::Invalid {
                    field: "index.postgres.url",
                    message: "`backend: postgres` needs the database's URL (or REGKEEPER_INDEX_POSTGRES_URL)".into(),
                });
            }
        };
        if let Err(error) = postgres.url.parse::<tokio_postgres::Config>() {
            return Err(ConfigError::Invalid {
                field: "index.postgres.url",
                message: error.to_string(),
            });
        }
        postgres.password()?;
        if let Some(bundle) = &postgres.ca_bundle {
            readable("index.postgres.caBundle", bundle)?;
        }
        if !(1..=256).contains(&postgres.connections) {
            return Err(ConfigError::Invalid {
                field: "index.postgres.connections",
                message: "must be between 1 and 256".into(),
            });
        }
        Ok(())
    }

    /// The admin listener apart from the proxy's, and tokens long enough and distinct.
    fn validate_admin(&self) -> Result<(), ConfigError> {
        if self.listen == self.admin.listen {
            return Err(ConfigError::Invalid {
                field: "admin.listen",
                message: format!("must differ from `listen` ({})", self.listen),
            });
        }
        for (field, token) in [
            ("admin.linkToken", &self.admin.link_token),
            ("admin.operatorToken", &self.admin.operator_token),
            ("admin.readToken", &self.admin.read_token),
            ("admin.notificationToken", &self.admin.notification_token),
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
        if self.admin.operator_token.is_some()
            && self.admin.operator_token == self.admin.notification_token
        {
            return Err(ConfigError::Invalid {
                field: "admin.operatorToken",
                message: "must differ from admin.notificationToken (the registry holds that one)"
                    .into(),
            });
        }
        Ok(())
    }

    /// Threads, buffers, pools and timeouts within what works.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        if self.sync.concurrency == 0 || self.sync.concurrency > 256 {
            return Err(ConfigError::Invalid {
                field: "sync.concurrency",
                message: "must be between 1 and 256".into(),
            });
        }
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
