//! `REGKEEPER_*` environment overrides: one table, so the list in `check-config --env` and the
//! README cannot drift from what is applied.

use std::{path::PathBuf, str::FromStr};

use super::{Config, ConfigError, Credentials, IndexBackend, PostgresConfig, TlsConfig};

/// One overridable field: the variable, the config path it replaces, and how to apply it.
pub struct EnvOverride {
    pub var: &'static str,
    pub field: &'static str,
    apply: fn(&mut Config, &str) -> Result<(), String>,
}

fn parse<T: FromStr>(text: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e: T::Err| e.to_string())
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        other => Err(format!("{other:?} is not a boolean (true/false)")),
    }
}

fn tls(config: &mut Config) -> &mut TlsConfig {
    config.tls.get_or_insert_with(|| TlsConfig {
        cert: PathBuf::new(),
        key: PathBuf::new(),
    })
}

fn parse_backend(text: &str) -> Result<IndexBackend, String> {
    match text.to_ascii_lowercase().as_str() {
        "sled" => Ok(IndexBackend::Sled),
        "postgres" => Ok(IndexBackend::Postgres),
        other => Err(format!(
            "{other:?} is not an index backend (sled or postgres)"
        )),
    }
}

fn postgres(config: &mut Config) -> &mut PostgresConfig {
    config
        .index
        .postgres
        .get_or_insert_with(|| PostgresConfig::new(String::new()))
}

fn credentials(config: &mut Config) -> &mut Credentials {
    config
        .upstream
        .credentials
        .get_or_insert_with(Credentials::default)
}

macro_rules! over {
    ($var:literal, $field:literal, |$config:ident, $value:ident| $body:expr) => {
        EnvOverride {
            var: $var,
            field: $field,
            apply: |$config, $value| {
                $body;
                Ok(())
            },
        }
    };
}

pub const ENV_OVERRIDES: &[EnvOverride] = &[
    over!("REGKEEPER_LISTEN", "listen", |c, v| c.listen = parse(v)?),
    over!("REGKEEPER_WORKERS", "workers", |c, v| c.workers = parse(v)?),
    over!("REGKEEPER_TLS_CERT", "tls.cert", |c, v| tls(c).cert =
        v.into()),
    over!("REGKEEPER_TLS_KEY", "tls.key", |c, v| tls(c).key = v.into()),
    over!("REGKEEPER_UPSTREAM_URL", "upstream.url", |c, v| c
        .upstream
        .url =
        parse(v)?),
    over!(
        "REGKEEPER_UPSTREAM_CA_BUNDLE",
        "upstream.caBundle",
        |c, v| c.upstream.ca_bundle = Some(v.into())
    ),
    over!(
        "REGKEEPER_UPSTREAM_INSECURE_SKIP_VERIFY",
        "upstream.insecureSkipVerify",
        |c, v| c.upstream.insecure_skip_verify = parse_bool(v)?
    ),
    over!(
        "REGKEEPER_UPSTREAM_ADVERTISED_HOSTS",
        "upstream.advertisedHosts",
        |c, v| c.upstream.advertised_hosts = v
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(String::from)
            .collect()
    ),
    over!(
        "REGKEEPER_UPSTREAM_POOL_MAX_IDLE",
        "upstream.poolMaxIdle",
        |c, v| c.upstream.pool_max_idle = parse(v)?
    ),
    over!(
        "REGKEEPER_UPSTREAM_USERNAME",
        "upstream.credentials.username",
        |c, v| credentials(c).username = v.into()
    ),
    over!(
        "REGKEEPER_UPSTREAM_PASSWORD",
        "upstream.credentials.password",
        |c, v| credentials(c).password = Some(v.into())
    ),
    over!(
        "REGKEEPER_UPSTREAM_PASSWORD_FILE",
        "upstream.credentials.passwordFile",
        |c, v| credentials(c).password_file = Some(v.into())
    ),
    over!("REGKEEPER_ADMIN_LISTEN", "admin.listen", |c, v| c
        .admin
        .listen =
        parse(v)?),
    over!("REGKEEPER_ADMIN_LINK_TOKEN", "admin.linkToken", |c, v| c
        .admin
        .link_token =
        Some(v.into())),
    over!(
        "REGKEEPER_ADMIN_OPERATOR_TOKEN",
        "admin.operatorToken",
        |c, v| c.admin.operator_token = Some(v.into())
    ),
    over!("REGKEEPER_ADMIN_READ_TOKEN", "admin.readToken", |c, v| c
        .admin
        .read_token =
        Some(v.into())),
    over!(
        "REGKEEPER_ADMIN_NOTIFICATION_TOKEN",
        "admin.notificationToken",
        |c, v| c.admin.notification_token = Some(v.into())
    ),
    over!("REGKEEPER_INDEX_PATH", "index.path", |c, v| c.index.path =
        v.into()),
    over!(
        "REGKEEPER_INDEX_LEADER_LEASE",
        "index.leaderLease",
        |c, v| c.index.leader_lease = parse(v)?
    ),
    over!("REGKEEPER_INDEX_BACKEND", "index.backend", |c, v| c
        .index
        .backend =
        parse_backend(v)?),
    over!(
        "REGKEEPER_INDEX_POSTGRES_URL",
        "index.postgres.url",
        |c, v| postgres(c).url = v.into()
    ),
    over!(
        "REGKEEPER_INDEX_POSTGRES_PASSWORD_FILE",
        "index.postgres.passwordFile",
        |c, v| postgres(c).password_file = Some(v.into())
    ),
    over!("REGKEEPER_INDEX_RECORD", "index.record", |c, v| c
        .index
        .record =
        parse_bool(v)?),
    over!(
        "REGKEEPER_INDEX_TAG_PATTERNS",
        "index.tagPatterns",
        |c, v| c.index.tag_patterns = v.split_whitespace().map(String::from).collect()
    ),
    over!("REGKEEPER_SYNC_INTERVAL", "sync.interval", |c, v| c
        .sync
        .interval =
        parse(v)?),
    over!("REGKEEPER_SYNC_CONCURRENCY", "sync.concurrency", |c, v| c
        .sync
        .concurrency =
        parse(v)?),
    over!("REGKEEPER_CLEANUP_MODE", "cleanup.mode", |c, v| c
        .cleanup
        .mode =
        parse(v)?),
    over!("REGKEEPER_CLEANUP_INTERVAL", "cleanup.interval", |c, v| c
        .cleanup
        .interval =
        parse(v)?),
    over!("REGKEEPER_CLEANUP_SCHEDULE", "cleanup.schedule", |c, v| c
        .cleanup
        .schedule =
        if v.trim().is_empty() {
            None
        } else {
            Some(parse(v)?)
        }),
    over!(
        "REGKEEPER_CLEANUP_MAX_DELETIONS",
        "cleanup.maxDeletions",
        |c, v| c.cleanup.max_deletions = parse(v)?
    ),
    over!(
        "REGKEEPER_CLEANUP_MAX_FRACTION",
        "cleanup.maxFraction",
        |c, v| c.cleanup.max_fraction = parse(v)?
    ),
    over!(
        "REGKEEPER_CLEANUP_CONCURRENCY",
        "cleanup.concurrency",
        |c, v| c.cleanup.concurrency = parse(v)?
    ),
    over!("REGKEEPER_CLEANUP_DEADLINE", "cleanup.deadline", |c, v| c
        .cleanup
        .deadline =
        parse(v)?),
    over!(
        "REGKEEPER_CLEANUP_RESTORE_PROTECTION",
        "cleanup.restoreProtection",
        |c, v| c.cleanup.restore_protection = parse(v)?
    ),
    over!("REGKEEPER_TIMEOUTS_CONNECT", "timeouts.connect", |c, v| c
        .timeouts
        .connect =
        parse(v)?),
    over!(
        "REGKEEPER_TIMEOUTS_UPSTREAM_RESPONSE",
        "timeouts.upstreamResponse",
        |c, v| c.timeouts.upstream_response = parse(v)?
    ),
    over!(
        "REGKEEPER_TIMEOUTS_HEADER_READ",
        "timeouts.headerRead",
        |c, v| c.timeouts.header_read = parse(v)?
    ),
    over!(
        "REGKEEPER_TIMEOUTS_CLIENT_BODY_IDLE",
        "timeouts.clientBodyIdle",
        |c, v| c.timeouts.client_body_idle = parse(v)?
    ),
    over!(
        "REGKEEPER_TIMEOUTS_UPSTREAM_BODY_IDLE",
        "timeouts.upstreamBodyIdle",
        |c, v| c.timeouts.upstream_body_idle = parse(v)?
    ),
    over!(
        "REGKEEPER_TIMEOUTS_POOL_IDLE",
        "timeouts.poolIdle",
        |c, v| c.timeouts.pool_idle = parse(v)?
    ),
    over!(
        "REGKEEPER_TIMEOUTS_SHUTDOWN_GRACE",
        "timeouts.shutdownGrace",
        |c, v| c.timeouts.shutdown_grace = parse(v)?
    ),
    over!(
        "REGKEEPER_LIMITS_MAX_HEADER_BYTES",
        "limits.maxHeaderBytes",
        |c, v| c.limits.max_header_bytes = parse(v)?
    ),
    over!("REGKEEPER_LOG_LEVEL", "log.level", |c, v| c.log.level =
        v.into()),
    over!("REGKEEPER_LOG_FORMAT", "log.format", |c, v| c.log.format =
        parse(v)?),
    over!("REGKEEPER_LOG_REQUESTS", "log.requests", |c, v| c
        .log
        .requests =
        parse_bool(v)?),
];

/// Applies every override whose variable is set (and not empty).
pub(super) fn apply(
    config: &mut Config,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for over in ENV_OVERRIDES {
        let Some(value) = env(over.var).filter(|v| !v.is_empty()) else {
            continue;
        };
        (over.apply)(config, &value).map_err(|message| ConfigError::Env {
            var: over.var,
            field: over.field,
            message,
        })?;
    }
    Ok(())
}
