//! Opens the index the config names: the embedded sled database at `index.path` (one replica),
//! or the shared PostgreSQL database (`index.backend: postgres`, several replicas and commands
//! from any machine).
//!
//! Owns: choosing and opening the engine. May call: `config`, `index`, `tls`, `leader`.

use std::sync::Arc;

use crate::{
    config::{Config, IndexBackend, PostgresConfig},
    index::{self, Index, IndexError, postgres::PgOptions},
};

/// Whether several processes may hold the index at once (no need to ask a running `serve`).
pub fn is_shared(config: &Config) -> bool {
    config.index.backend == IndexBackend::Postgres
}

/// This process's claim to lead cleanup and sync over `index`: shared with the other
/// replicas on PostgreSQL; alone (always the leader) on the embedded engine.
pub fn leadership(config: &Config, index: Arc<dyn Index>) -> Arc<crate::leader::Leadership> {
    crate::leader::Leadership::new(index, config.index.leader_lease.0, !is_shared(config))
}

/// Opens (or creates) the configured index.
pub fn open(config: &Config) -> Result<Arc<dyn Index>, IndexError> {
    match (config.index.backend, &config.index.postgres) {
        (IndexBackend::Sled, _) => Ok(Arc::new(index::open_sled(&config.index.path)?)),
        (IndexBackend::Postgres, Some(postgres)) => {
            Ok(Arc::new(index::open_postgres(&options(postgres)?)?))
        }
        (IndexBackend::Postgres, None) => Err(IndexError::Settings(
            "`index.backend: postgres` needs `index.postgres.url`".into(),
        )),
    }
}

/// How to reach the database: its URL, the password from its file, TLS trusting the public
/// roots plus `caBundle` (the upstream's options, for the database).
pub fn options(postgres: &PostgresConfig) -> Result<PgOptions, IndexError> {
    let password = postgres
        .password()
        .map_err(|e| IndexError::Settings(e.to_string()))?;
    if postgres.insecure_skip_verify {
        tracing::warn!(
            "index.postgres.insecureSkipVerify is on: the database's certificate is not checked"
        );
    }
    let tls =
        crate::tls::client_config(postgres.ca_bundle.as_deref(), postgres.insecure_skip_verify)
            .map_err(|e| IndexError::Settings(format!("index.postgres TLS: {e}")))?;
    Ok(PgOptions {
        url: postgres.url.clone(),
        password,
        tls: Arc::new(tls),
        connections: postgres.connections,
        connect_timeout: postgres.connect_timeout.0,
    })
}
