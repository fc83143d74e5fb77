//! One batch's transaction. The batch is built by synchronous code on the caller's thread; the
//! transaction lives in a task on the engine's runtime, which answers the batch's reads and
//! finally writes and commits. Dropped without a commit, the transaction rolls back.

use std::{
    cell::Cell,
    collections::{BTreeMap, HashSet},
    sync::mpsc,
};

use deadpool_postgres::Pool;
use tokio::sync::mpsc as async_mpsc;
use tokio_postgres::IsolationLevel;

use super::{PgError, pool_error, range};
use crate::index::{
    IndexError,
    kv::{KvPair, KvRead, KvWrite},
};

type Reply<T> = mpsc::SyncSender<Result<T, PgError>>;

enum Request {
    Get(Vec<Vec<u8>>, Reply<Vec<Option<Vec<u8>>>>),
    Scan(Vec<u8>, Vec<u8>, Reply<Vec<KvPair>>),
    Empty(Reply<bool>),
    Commit(Vec<KvWrite>, Reply<()>),
}

pub struct Transaction {
    requests: async_mpsc::UnboundedSender<Request>,
    /// A read or the commit failed because another writer's commit conflicted.
    conflicted: Cell<bool>,
    /// The connection broke during COMMIT: whether the batch landed is in `regkeeper_batches`.
    unknown: Cell<bool>,
    /// Written with the batch, so a lost COMMIT answer can be settled.
    id: Vec<u8>,
}

fn stopped() -> IndexError {
    IndexError::Engine("postgres: the transaction's task stopped".into())
}

impl Transaction {
    /// Opens a SERIALIZABLE transaction on a pooled connection.
    pub fn begin(handle: &tokio::runtime::Handle, pool: Pool) -> Result<Self, IndexError> {
        let mut id = vec![0u8; 16];
        getrandom::fill(&mut id)
            .map_err(|e| IndexError::Engine(format!("postgres: no random batch id: {e}")))?;
        let batch = id.clone();
        let (requests, mut incoming) = async_mpsc::unbounded_channel();
        let (ready, started) = mpsc::sync_channel(1);
        handle.spawn(async move {
            let mut client = match pool.get().await {
                Ok(client) => client,
                Err(error) => {
                    let _ = ready.send(Err(pool_error(error)));
                    return;
                }
            };
            let transaction = match client
                .build_transaction()
                .isolation_level(IsolationLevel::Serializable)
                .start()
                .await
            {
                Ok(transaction) => transaction,
                Err(error) => {
                    let _ = ready.send(Err(error.into()));
                    return;
                }
            };
            let _ = ready.send(Ok(()));
            // Keys read and not found: the commit inserts them without `ON CONFLICT`, which
            // costs PostgreSQL half as much per row as an upsert.
            let mut absent = HashSet::new();
            while let Some(request) = incoming.recv().await {
                match request {
                    Request::Get(keys, reply) => {
                        let _ = reply.send(get(&transaction, keys, &mut absent).await);
                    }
                    Request::Scan(start, end, reply) => {
                        let _ = reply.send(scan(&transaction, start, end).await);
                    }
                    Request::Empty(reply) => {
                        let _ = reply.send(empty(&transaction).await);
                    }
                    Request::Commit(writes, reply) => {
                        let _ = reply.send(commit(transaction, writes, absent, batch).await);
                        return;
                    }
                }
            }
        });
        started.recv().map_err(|_| stopped())??;
        Ok(Self {
            requests,
            conflicted: Cell::new(false),
            unknown: Cell::new(false),
            id,
        })
    }

    pub fn conflicted(&self) -> bool {
        self.conflicted.get()
    }

    /// Whether the commit's outcome is unknown (its answer was lost).
    pub fn outcome_unknown(&self) -> bool {
        self.unknown.get()
    }

    pub fn id(&self) -> &[u8] {
        &self.id
    }

    fn ask<T>(&self, request: impl FnOnce(Reply<T>) -> Request) -> Result<T, IndexError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.requests.send(request(reply)).map_err(|_| stopped())?;
        match answer.recv().map_err(|_| stopped())? {
            Ok(value) => Ok(value),
            Err(error) => {
                if error.conflicted() {
                    self.conflicted.set(true);
                }
                if matches!(error, PgError::CommitUnknown(_)) {
                    self.unknown.set(true);
                }
                Err(error.into())
            }
        }
    }

    /// Writes the batch and commits.
    pub fn commit(&self, writes: Vec<KvWrite>) -> Result<(), IndexError> {
        self.ask(|reply| Request::Commit(writes, reply))
    }
}

impl KvRead for Transaction {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, IndexError> {
        Ok(self.get_many(&[key.to_vec()])?.pop().flatten())
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, IndexError> {
        self.ask(|reply| Request::Get(keys.to_vec(), reply))
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<KvPair>, IndexError> {
        let (start, end) = range(prefix);
        self.ask(|reply| Request::Scan(start, end, reply))
    }

    fn is_empty(&self) -> Result<bool, IndexError> {
        self.ask(Request::Empty)
    }
}

async fn empty(transaction: &deadpool_postgres::Transaction<'_>) -> Result<bool, PgError> {
    let row = transaction
        .query_one("SELECT NOT EXISTS (SELECT 1 FROM regkeeper_kv)", &[])
        .await?;
    Ok(row.get(0))
}

async fn get(
    transaction: &deadpool_postgres::Transaction<'_>,
    keys: Vec<Vec<u8>>,
    absent: &mut HashSet<Vec<u8>>,
) -> Result<Vec<Option<Vec<u8>>>, PgError> {
    let statement = transaction
        .prepare_cached("SELECT key, value FROM regkeeper_kv WHERE key = ANY($1)")
        .await?;
    let rows = transaction.query(&statement, &[&keys]).await?;
    let mut found: std::collections::HashMap<Vec<u8>, Vec<u8>> =
        rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    let values: Vec<Option<Vec<u8>>> = keys.iter().map(|k| found.remove(k)).collect();
    absent.extend(
        keys.into_iter()
            .zip(&values)
            .filter(|(_, value)| value.is_none())
            .map(|(key, _)| key),
    );
    Ok(values)
}

async fn scan(
    transaction: &deadpool_postgres::Transaction<'_>,
    start: Vec<u8>,
    end: Vec<u8>,
) -> Result<Vec<KvPair>, PgError> {
    let statement = transaction
        .prepare_cached(
            "SELECT key, value FROM regkeeper_kv WHERE key >= $1 AND key < $2 ORDER BY key",
        )
        .await?;
    let rows = transaction.query(&statement, &[&start, &end]).await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

async fn commit(
    transaction: deadpool_postgres::Transaction<'_>,
    writes: Vec<KvWrite>,
    absent: HashSet<Vec<u8>>,
    id: Vec<u8>,
) -> Result<(), PgError> {
    // One value per key (the last), in key order: concurrent batches lock rows in the same
    // order, and one statement never touches a row twice.
    let writes: BTreeMap<Vec<u8>, Option<Vec<u8>>> = writes.into_iter().collect();
    if writes.is_empty() {
        transaction.commit().await?;
        return Ok(());
    }
    let (mut new, mut changed, mut gone) = (Rows::default(), Rows::default(), Vec::new());
    for (key, value) in writes {
        match value {
            Some(value) if absent.contains(&key) => new.push(key, value),
            Some(value) => changed.push(key, value),
            None => gone.push(key),
        }
    }
    if !gone.is_empty() {
        let statement = transaction
            .prepare_cached("DELETE FROM regkeeper_kv WHERE key = ANY($1)")
            .await?;
        transaction.execute(&statement, &[&gone]).await?;
    }
    if !new.keys.is_empty() {
        insert(&transaction, &new).await?;
    }
    if !changed.keys.is_empty() {
        let statement = transaction
            .prepare_cached(
                "INSERT INTO regkeeper_kv (key, value) \
                    SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                    ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .await?;
        transaction
            .execute(&statement, &[&changed.keys, &changed.values])
            .await?;
    }
    // Last, under one lock held to the commit: the log's order is the commits' order, so a
    // reader going on from a sequence number misses nothing committed later.
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&CHANGES_LOCK])
        .await?;
    let statement = transaction
        .prepare_cached(
            "INSERT INTO regkeeper_changes (keys) \
             VALUES (array_cat(array_cat($1::bytea[], $2::bytea[]), $3::bytea[])) RETURNING seq",
        )
        .await?;
    let seq: i64 = transaction
        .query_one(&statement, &[&new.keys, &changed.keys, &gone])
        .await?
        .get(0);
    if seq % PRUNE_EVERY == 0 {
        prune(&transaction).await?;
    }
    let statement = transaction
        .prepare_cached("INSERT INTO regkeeper_batches (id) VALUES ($1)")
        .await?;
    transaction.execute(&statement, &[&id]).await?;
    finish(transaction).await
}

/// Keys the batch read as absent, with binary COPY: PostgreSQL inserts them in multi-row
/// steps. Another writer having inserted one first is a unique violation, which counts as a
/// conflict (the batch runs again).
async fn insert(
    transaction: &deadpool_postgres::Transaction<'_>,
    rows: &Rows,
) -> Result<(), PgError> {
    use tokio_postgres::{binary_copy::BinaryCopyInWriter, types::Type};
    let sink = transaction
        .copy_in("COPY regkeeper_kv (key, value) FROM STDIN (FORMAT binary)")
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &[Type::BYTEA, Type::BYTEA]);
    let mut writer = std::pin::pin!(writer);
    for (key, value) in rows.keys.iter().zip(&rows.values) {
        writer.as_mut().write(&[key, value]).await?;
    }
    writer.finish().await?;
    Ok(())
}

/// COMMIT; an answer that never came (no SQL state: the connection broke) leaves the outcome
/// unknown, which the caller settles through the batch's id.
async fn finish(transaction: deadpool_postgres::Transaction<'_>) -> Result<(), PgError> {
    match transaction.commit().await {
        Ok(()) => Ok(()),
        Err(error) if error.code().is_none() => Err(PgError::CommitUnknown(error)),
        Err(error) => Err(error.into()),
    }
}

/// Whether the batch `id` landed, asked on a fresh connection once its transaction is over: the
/// insert waits for a transaction still holding the id, and once it is in, that batch can never
/// land later. A batch is written exactly once either way.
pub async fn landed(pool: &Pool, id: &[u8]) -> Result<bool, PgError> {
    let client = pool.get().await.map_err(super::pool_error)?;
    let inserted = client
        .execute(
            "INSERT INTO regkeeper_batches (id) VALUES ($1) ON CONFLICT (id) DO NOTHING",
            &[&id],
        )
        .await?;
    Ok(inserted == 0)
}

/// Keys and values side by side, as the `unnest` statements take them.
#[derive(Default)]
struct Rows {
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
}

impl Rows {
    fn push(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.keys.push(key);
        self.values.push(value);
    }
}

/// Serializes the appends to the change log (any fixed number).
const CHANGES_LOCK: i64 = 0x0072_6b63_6861_6e67;
/// Every this many batches, the log drops what is older than [`KEEP_CHANGES`].
const PRUNE_EVERY: i64 = 1024;
/// How far back the change log reaches: a replica further behind reads everything again.
const KEEP_CHANGES: &str = "1 hour";

async fn prune(transaction: &deadpool_postgres::Transaction<'_>) -> Result<(), PgError> {
    let sql = format!(
        "WITH gone AS (DELETE FROM regkeeper_changes WHERE at < now() - interval '{KEEP_CHANGES}' \
         RETURNING seq) \
         UPDATE regkeeper_changes_pruned SET upto = greatest(upto, (SELECT max(seq) FROM gone)) \
         WHERE EXISTS (SELECT 1 FROM gone)"
    );
    transaction.execute(&sql, &[]).await?;
    let sql = format!("DELETE FROM regkeeper_batches WHERE at < now() - interval '{KEEP_CHANGES}'");
    transaction.execute(&sql, &[]).await?;
    Ok(())
}
