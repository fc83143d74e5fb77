//! One batch's transaction on a pooled connection. The batch is built by synchronous code on
//! the caller's thread; the transaction lives in a task on the engine's runtime, which answers
//! the batch's reads and, under the writers' lock, writes and commits. Dropped without a
//! commit, the transaction rolls back.

use std::{cell::Cell, sync::mpsc};

use deadpool_postgres::Pool;
use tokio::sync::mpsc as async_mpsc;
use tokio_postgres::IsolationLevel;

use super::{PgError, commit, pool_error, reads::KeySet};
use crate::index::{
    IndexError,
    kv::{KvPair, KvWrite},
};

type Reply<T> = mpsc::SyncSender<Result<T, PgError>>;

/// What a transaction is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The read phase of a batch: a consistent snapshot, no lock, and where the change log
    /// ended in it. Never commits.
    Snapshot,
    /// Reads, writes and commits holding the writers' lock, taken before anything is read:
    /// no other writer commits in between, so what the batch reads stays true until it commits.
    Locked,
}

enum Request {
    Get(Vec<Vec<u8>>, Reply<Vec<Option<Vec<u8>>>>),
    Scan(Vec<u8>, Vec<u8>, Reply<Vec<KvPair>>),
    Empty(Vec<Vec<u8>>, Reply<bool>),
    Commit(Vec<KvWrite>, KeySet, Reply<Option<i64>>),
}

pub struct Transaction {
    requests: async_mpsc::UnboundedSender<Request>,
    /// Where the change log ended in the snapshot ([`Mode::Snapshot`]).
    head: i64,
    /// The commit failed because another writer's conflicted with it.
    conflicted: Cell<bool>,
    /// The connection broke during COMMIT: whether the batch landed is in `regkeeper_batches`.
    unknown: Cell<bool>,
    /// Written with the batch, so a lost COMMIT answer can be settled.
    id: Vec<u8>,
}

fn stopped() -> IndexError {
    IndexError::Engine("postgres: the transaction's task stopped".into())
}

/// A batch's id: random, so two processes never share one.
pub fn batch_id() -> Result<Vec<u8>, IndexError> {
    let mut id = vec![0u8; 16];
    getrandom::fill(&mut id)
        .map_err(|e| IndexError::Engine(format!("postgres: no random batch id: {e}")))?;
    Ok(id)
}

impl Transaction {
    pub fn begin(
        handle: &tokio::runtime::Handle,
        pool: Pool,
        mode: Mode,
    ) -> Result<Self, IndexError> {
        let id = batch_id()?;
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
            let opened = match mode {
                Mode::Snapshot => client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .await
                    .map_err(PgError::from),
                Mode::Locked => commit::begin_locked(&mut client).await,
            };
            let transaction = match opened {
                Ok(transaction) => transaction,
                Err(error) => {
                    let _ = ready.send(Err(error));
                    return;
                }
            };
            let head = match mode {
                // The first statement takes the snapshot the batch reads in.
                Mode::Snapshot => commit::head(&transaction).await,
                Mode::Locked => Ok(0),
            };
            let failed = head.is_err();
            let _ = ready.send(head);
            if failed {
                return;
            }
            while let Some(request) = incoming.recv().await {
                match request {
                    Request::Get(keys, reply) => {
                        let _ = reply.send(get(&transaction, keys).await);
                    }
                    Request::Scan(start, end, reply) => {
                        let _ = reply.send(scan(&transaction, start, end).await);
                    }
                    Request::Empty(except, reply) => {
                        let _ = reply.send(empty(&transaction, except).await);
                    }
                    Request::Commit(writes, absent, reply) => {
                        let written = commit::write(&transaction, &writes, &absent, &batch).await;
                        let _ = reply.send(match written {
                            Ok(seq) => commit::finish(transaction).await.map(|()| seq),
                            Err(error) => Err(error),
                        });
                        return;
                    }
                }
            }
        });
        let head = started.recv().map_err(|_| stopped())??;
        Ok(Self {
            requests,
            head,
            conflicted: Cell::new(false),
            unknown: Cell::new(false),
            id,
        })
    }

    pub fn head(&self) -> i64 {
        self.head
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

    pub fn get_many(&self, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Vec<u8>>>, IndexError> {
        self.ask(|reply| Request::Get(keys, reply))
    }

    pub fn scan(&self, start: Vec<u8>, end: Vec<u8>) -> Result<Vec<KvPair>, IndexError> {
        self.ask(|reply| Request::Scan(start, end, reply))
    }

    /// Whether no key but those in `except` is stored.
    pub fn empty_except(&self, except: Vec<Vec<u8>>) -> Result<bool, IndexError> {
        self.ask(|reply| Request::Empty(except, reply))
    }

    /// Writes the batch and commits ([`Mode::Locked`] only); `absent` are keys it read as
    /// absent. The change log's sequence number of the batch (`None`: it changed nothing).
    pub fn commit(&self, writes: Vec<KvWrite>, absent: KeySet) -> Result<Option<i64>, IndexError> {
        let writes = commit::in_key_order(writes);
        self.ask(|reply| Request::Commit(writes, absent, reply))
    }
}

async fn empty(
    transaction: &deadpool_postgres::Transaction<'_>,
    except: Vec<Vec<u8>>,
) -> Result<bool, PgError> {
    let row = transaction
        .query_one(
            "SELECT NOT EXISTS (SELECT 1 FROM regkeeper_kv WHERE key <> ALL($1))",
            &[&except],
        )
        .await?;
    Ok(row.get(0))
}

/// The value of each of `keys` (`None`: absent), in the order asked.
pub(super) async fn get(
    transaction: &deadpool_postgres::Transaction<'_>,
    keys: Vec<Vec<u8>>,
) -> Result<Vec<Option<Vec<u8>>>, PgError> {
    let rows = rows_of(transaction, &keys).await?;
    let mut found: std::collections::HashMap<Vec<u8>, Vec<u8>, foldhash::fast::RandomState> =
        rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    Ok(keys.iter().map(|k| found.remove(k)).collect())
}

/// The rows of `keys`, in no order.
///
/// One `= ANY($1)` of up to a batch's thousands of keys, planned without parallel workers: a
/// parallel plan copies the array into each worker as text and parses it there, which cost the
/// server more than the lookups it shares out (a third of its CPU while writing pushes). Reset
/// right after, because with the setting on whole batch transactions a replica's later cold
/// read of 1M tags measured 6.7-7.0 s instead of 5.1-5.3 s (`cargo bench --bench plan --
/// --postgres`); why it carried over is not established (cached plans are one suspect).
pub(super) async fn rows_of(
    transaction: &deadpool_postgres::Transaction<'_>,
    keys: &[Vec<u8>],
) -> Result<Vec<tokio_postgres::Row>, PgError> {
    transaction
        .batch_execute("SET LOCAL max_parallel_workers_per_gather = 0")
        .await?;
    let statement = transaction
        .prepare_cached("SELECT key, value FROM regkeeper_kv WHERE key = ANY($1)")
        .await?;
    let rows = transaction.query(&statement, &[&keys]).await?;
    transaction
        .batch_execute("RESET max_parallel_workers_per_gather")
        .await?;
    Ok(rows)
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
