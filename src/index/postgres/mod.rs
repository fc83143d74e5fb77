//! The shared engine: the index's ordered key-value layer in PostgreSQL, for several replicas
//! over one index. A batch is read in a snapshot and written under one lock all writers take,
//! after checking that nothing it read changed meanwhile (see [`pipeline`]), so batches from
//! many processes apply as if one at a time — the semantics the single-writer engines get
//! from their one writer.
//!
//! The index's callers are synchronous (sled is), and some run on async workers; the client is
//! async. So the engine owns a small runtime of its own: every call is a task there, and the
//! caller waits on a plain channel — from any thread, without entering a runtime.

mod commit;
mod copy_rows;
mod pipeline;
mod reads;
mod schema;
mod store;
mod transaction;
mod whole;

use std::{
    future::Future,
    sync::{Arc, mpsc},
    time::Duration,
};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;

use super::{
    IndexError,
    kv::{KvPair, prefix_end},
};
pub use schema::LATEST as SCHEMA;

/// How to reach the database.
#[derive(Clone)]
pub struct PgOptions {
    /// `postgres://user@host:port/db?sslmode=…` (libpq's URL or key=value form).
    pub url: String,
    /// Replaces the URL's password (read from a file, so it stays out of the config).
    pub password: Option<String>,
    /// Used when the server offers TLS (`sslmode=prefer`, the default) or the URL demands it.
    pub tls: Arc<rustls::ClientConfig>,
    /// Connections in the pool.
    pub connections: usize,
    /// How long a call waits for a connection (and for one to be made).
    pub connect_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{0}")]
    Sql(#[from] tokio_postgres::Error),
    #[error("no database connection: {0}")]
    Pool(String),
    #[error(
        "the index database was migrated by a newer regkeeper (schema {found}, this build knows up to {supported}); upgrade regkeeper"
    )]
    NewerSchema { found: i32, supported: i32 },
    /// The connection broke while COMMIT was under way: the batch may or may not have landed.
    #[error("the answer to COMMIT was lost: {0}")]
    CommitUnknown(tokio_postgres::Error),
}

impl PgError {
    /// Another writer's commit conflicted: the batch runs again. A unique violation counts:
    /// keys this batch read as absent are inserted without `ON CONFLICT`, so a writer that took
    /// no lock inserting one of them first is a conflict like any other.
    fn conflicted(&self) -> bool {
        matches!(self, PgError::Sql(error) if matches!(
            error.code(),
            Some(code) if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::UNIQUE_VIOLATION
        ))
    }
}

impl From<PgError> for IndexError {
    fn from(error: PgError) -> Self {
        match error {
            PgError::NewerSchema { found, supported } => IndexError::NewerSchema {
                found: found.max(0) as u32,
                supported: supported.max(0) as u32,
            },
            other => IndexError::Engine(format!("postgres: {}", chain(&other))),
        }
    }
}

/// The error and its causes on one line (tokio-postgres keeps the server's message in a
/// source).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// One batch in the change log: its sequence number and the keys it changed.
type ChangeRow = (i64, Vec<Vec<u8>>);

/// A batch that keeps conflicting is given up after this many runs (the caller retries later).
const MAX_RUNS: u32 = 20;
/// Rows per trip when a whole range is read.
const FETCH: i32 = 1024;

pub struct PgKv {
    /// `None` only while dropping (shut down without waiting on a possibly async caller).
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
}

impl PgKv {
    /// Connects and brings the schema up to date (or refuses a newer one).
    pub fn connect(options: &PgOptions) -> Result<Self, IndexError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("regkeeper-postgres")
            .enable_all()
            .build()
            .map_err(|e| IndexError::Io("starting the database client".into(), e))?;
        let mut config: tokio_postgres::Config =
            options.url.parse().map_err(|e: tokio_postgres::Error| {
                IndexError::Engine(format!("index.postgres.url: {e}"))
            })?;
        if let Some(password) = &options.password {
            config.password(password.as_bytes());
        }
        config.connect_timeout(options.connect_timeout);
        config.application_name("regkeeper");
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*options.tls).clone());
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| IndexError::Engine(format!("postgres pool: {e}")))?;
        let kv = Self {
            runtime: Some(runtime),
            pool,
        };
        let pool = kv.pool.clone();
        kv.run(async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            schema::migrate(&mut client).await
        })?;
        Ok(kv)
    }

    /// Runs `work` on the engine's runtime and waits for it, from any thread.
    fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, PgError>> + Send + 'static,
    ) -> Result<T, IndexError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.handle().spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv()
            .map_err(|_| IndexError::Engine("postgres: the database client stopped".into()))?
            .map_err(IndexError::from)
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        match &self.runtime {
            Some(runtime) => runtime.handle(),
            None => unreachable!("the runtime is taken only when dropping"),
        }
    }

    fn query_pairs(
        &self,
        sql: &'static str,
        params: Vec<Vec<u8>>,
        limit: Option<i64>,
    ) -> Result<Vec<KvPair>, IndexError> {
        let pool = self.pool.clone();
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let statement = client.prepare_cached(sql).await?;
            let rows = match limit {
                Some(limit) => {
                    let mut values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                        params.iter().map(|p| p as _).collect();
                    values.push(&limit);
                    client.query(&statement, &values).await?
                }
                None => {
                    let values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                        params.iter().map(|p| p as _).collect();
                    client.query(&statement, &values).await?
                }
            };
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })
    }
}

/// A read-only transaction that reads everything in one snapshot.
async fn read_snapshot(
    client: &mut tokio_postgres::Client,
) -> Result<tokio_postgres::Transaction<'_>, PgError> {
    Ok(client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

fn pool_error(error: deadpool_postgres::PoolError) -> PgError {
    match error {
        deadpool_postgres::PoolError::Backend(error) => PgError::Sql(error),
        other => PgError::Pool(other.to_string()),
    }
}

impl Drop for PgKv {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// `key >= $1 AND key < $2` for `prefix`, and the parameters: an open range when the prefix
/// has no end.
fn range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (prefix.to_vec(), bound(prefix_end(prefix)))
}

/// The upper bound of a range: an open one as a key past every stored key. An optional bound
/// (`OR $2 IS NULL`) would keep the index from bounding the scan; a btree entry cannot exceed a
/// third of an 8 KiB page, so no stored key reaches 8 KiB of 0xFF.
fn bound(end: Option<Vec<u8>>) -> Vec<u8> {
    end.unwrap_or_else(|| vec![u8::MAX; 8192])
}

#[cfg(test)]
pub mod testing;

/// The shared engine on `url`, plain TCP (the test server offers no TLS).
#[cfg(test)]
pub fn open_for_tests(url: &str) -> super::PgIndex {
    super::open_postgres(&test_options(url)).unwrap_or_else(|e| panic!("opening {url}: {e}"))
}

#[cfg(test)]
fn test_options(url: &str) -> PgOptions {
    PgOptions {
        url: url.to_string(),
        password: None,
        tls: Arc::new(testing_tls()),
        connections: 4,
        connect_timeout: Duration::from_secs(10),
    }
}

/// A client TLS config with no roots: for tests against a server that offers no TLS.
#[cfg(test)]
pub fn testing_tls() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| unreachable!("ring supports the default versions"))
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

#[cfg(test)]
mod tests;
