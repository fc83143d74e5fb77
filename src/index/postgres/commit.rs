//! The SQL of a batch's write phase: the writers' lock, the check that nothing the batch read
//! changed since its snapshot, the writes, the change log and COMMIT — and settling a COMMIT
//! whose answer was lost.

use deadpool_postgres::{Object, Pool, Transaction};
use tokio_postgres::IsolationLevel;

use super::{PgError, reads::KeySet};
use crate::index::kv::KvWrite;

/// What the batch record says about its writer: one that takes the writers' lock. Writers from
/// before the lock set no such column, so the schema keeps them from writing at all.
const LOCKING_WRITER: i16 = 5;

/// Every this many batches, the log drops what is older than [`KEEP_CHANGES`].
const PRUNE_EVERY: i64 = 1024;
/// How far back the change log reaches: a replica further behind reads everything again.
const KEEP_CHANGES: &str = "1 hour";

/// Opens a transaction holding the writers' lock: one writer at a time, in every process. The
/// lock is the first statement, so whatever is read after it includes every earlier commit. A
/// writer stopped while holding it (SIGSTOP, a long pause) is cut off by the server after 30 s
/// — idle between statements, or in one (a COPY waiting for rows) — so the others go on; the
/// wait for the lock itself is not limited.
pub async fn begin_locked(client: &mut Object) -> Result<Transaction<'_>, PgError> {
    let transaction = client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await?;
    transaction
        .batch_execute(
            "LOCK TABLE regkeeper_write_lock IN EXCLUSIVE MODE; \
             SET LOCAL idle_in_transaction_session_timeout = '30s'; \
             SET LOCAL statement_timeout = '30s'",
        )
        .await?;
    Ok(transaction)
}

/// Where the change log ends in the transaction's snapshot.
pub async fn head(transaction: &Transaction<'_>) -> Result<i64, PgError> {
    let row = transaction
        .query_one("SELECT coalesce(max(seq), 0) FROM regkeeper_changes", &[])
        .await?;
    Ok(row.get(0))
}

/// Whether a batch that read in a snapshot ending at `head` still holds: no batch committed
/// since (other than `own`, this process's previous batch, whose writes it read on top of its
/// snapshot) changed a key it read. Under the writers' lock, so it stays so until COMMIT.
pub async fn still_holds(
    transaction: &Transaction<'_>,
    head: i64,
    own: Option<i64>,
    read: impl Fn(&[u8]) -> bool,
) -> Result<bool, PgError> {
    // A log pruned past the snapshot cannot tell: a NULL row says so.
    let rows = transaction
        .query(
            "SELECT keys FROM regkeeper_changes WHERE seq > $1 AND seq IS DISTINCT FROM $2 \
             UNION ALL SELECT NULL FROM regkeeper_changes_pruned WHERE upto > $1",
            &[&head, &own],
        )
        .await?;
    for row in &rows {
        let keys: Option<Vec<Vec<u8>>> = row.get(0);
        match keys {
            None => return Ok(false),
            Some(keys) if keys.iter().any(|key| read(key)) => return Ok(false),
            Some(_) => {}
        }
    }
    Ok(true)
}

/// A batch's writes as [`write`] takes them: in key order, one per key, the last write of a key
/// winning (one statement never touches a row twice; the next batch binary-searches them).
pub fn in_key_order(mut writes: Vec<KvWrite>) -> Vec<KvWrite> {
    writes.reverse();
    // Stable: of equal keys, the last written comes first and is the one kept.
    writes.sort_by(|a, b| a.0.cmp(&b.0));
    writes.dedup_by(|later, first| later.0 == first.0);
    writes
}

/// Writes the batch and appends its keys to the change log: the log's sequence number (`None`
/// when the batch changed nothing). `absent` are keys the batch read as absent: inserted with
/// binary COPY, which PostgreSQL does in multi-row steps; a writer that inserted one first
/// makes it a unique violation, a conflict like any other (the batch runs again). `writes` are
/// [`in_key_order`].
pub async fn write(
    transaction: &Transaction<'_>,
    writes: &[KvWrite],
    absent: &KeySet,
    id: &[u8],
) -> Result<Option<i64>, PgError> {
    debug_assert!(writes.windows(2).all(|w| w[0].0 < w[1].0));
    if writes.is_empty() {
        return Ok(None);
    }
    let (mut new, mut changed, mut gone) = (Rows::default(), Rows::default(), Vec::new());
    for (key, value) in writes {
        match value {
            Some(value) if absent.contains(key) => new.push(key, value),
            Some(value) => changed.push(key, value),
            None => gone.push(key.as_slice()),
        }
    }
    if !gone.is_empty() {
        let statement = transaction
            .prepare_cached("DELETE FROM regkeeper_kv WHERE key = ANY($1)")
            .await?;
        transaction.execute(&statement, &[&gone]).await?;
    }
    if !new.keys.is_empty() {
        insert(transaction, &new).await?;
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
    // Appended under the writers' lock: the log's order is the commits' order, so a reader
    // going on from a sequence number misses nothing committed later.
    let statement = transaction
        .prepare_cached("INSERT INTO regkeeper_changes (keys) VALUES ($1) RETURNING seq")
        .await?;
    let keys: Vec<&[u8]> = (new.keys.iter().chain(&changed.keys).chain(&gone))
        .copied()
        .collect();
    let seq: i64 = transaction.query_one(&statement, &[&keys]).await?.get(0);
    if seq % PRUNE_EVERY == 0 {
        prune(transaction).await?;
    }
    let statement = transaction
        .prepare_cached("INSERT INTO regkeeper_batches (id, writer) VALUES ($1, $2)")
        .await?;
    transaction
        .execute(&statement, &[&id, &LOCKING_WRITER])
        .await?;
    Ok(Some(seq))
}

async fn insert(transaction: &Transaction<'_>, rows: &Rows<'_>) -> Result<(), PgError> {
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
pub async fn finish(transaction: Transaction<'_>) -> Result<(), PgError> {
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
            "INSERT INTO regkeeper_batches (id, writer) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            &[&id, &LOCKING_WRITER],
        )
        .await?;
    Ok(inserted == 0)
}

/// Keys and values side by side, as the `unnest` statements take them.
#[derive(Default)]
struct Rows<'a> {
    keys: Vec<&'a [u8]>,
    values: Vec<&'a [u8]>,
}

impl<'a> Rows<'a> {
    fn push(&mut self, key: &'a [u8], value: &'a [u8]) {
        self.keys.push(key);
        self.values.push(value);
    }
}

async fn prune(transaction: &Transaction<'_>) -> Result<(), PgError> {
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
