//! The key-value contract on PostgreSQL: point and range reads, whole ranges streamed a page at
//! a time, batches as SERIALIZABLE transactions run again on conflict, and the change log.

use std::{sync::mpsc, time::Duration};

use super::{ChangeRow, FETCH, PgError, PgKv, bound, pool_error, range};
use crate::index::{
    IndexError,
    kv::{Build, KeyChanges, KvPair, KvRead, KvStore, KvWrite, Visit, VisitShared, VisitUnder},
};

impl KvRead for PgKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, IndexError> {
        Ok(self
            .query_pairs(
                "SELECT key, value FROM regkeeper_kv WHERE key = $1",
                vec![key.to_vec()],
                None,
            )?
            .pop()
            .map(|(_, v)| v))
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, IndexError> {
        let pool = self.pool.clone();
        let wanted = keys.to_vec();
        self.run(async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let transaction = client.build_transaction().read_only(true).start().await?;
            let found = super::transaction::get(&transaction, wanted).await?;
            transaction.commit().await?;
            Ok(found)
        })
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<KvPair>, IndexError> {
        let (start, end) = range(prefix);
        self.query_pairs(
            "SELECT key, value FROM regkeeper_kv WHERE key >= $1 AND key < $2 ORDER BY key",
            vec![start, end],
            None,
        )
    }

    fn each_under(
        &self,
        prefixes: &[Vec<u8>],
        visit: &mut VisitUnder<'_>,
    ) -> Result<(), IndexError> {
        // One branch per range, each an index range scan (a join against an array of ranges
        // is planned with a sort of a third of the table, and JIT-compiled).
        let sql = (0..prefixes.len())
            .map(|n| {
                format!(
                    "(SELECT {n}, key, value FROM regkeeper_kv WHERE key >= ${} AND key < ${} \
                     ORDER BY key)",
                    2 * n + 1,
                    2 * n + 2
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let bounds: Vec<Vec<u8>> = prefixes
            .iter()
            .flat_map(|prefix| {
                let (start, end) = range(prefix);
                [start, end]
            })
            .collect();
        let pool = self.pool.clone();
        // The rows come back whole to the calling thread, which reads keys and values where
        // they lie: the engine's two runtime threads serve every reader, copying on them
        // made them the bottleneck of a whole-index read.
        let rows = self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let statement = client.prepare_cached(&sql).await?;
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                bounds.iter().map(|b| b as _).collect();
            Ok(client.query(&statement, &params).await?)
        })?;
        let mut entries = rows
            .iter()
            .map(|row| scanned(row, prefixes.len()))
            .collect::<Result<Vec<_>, _>>()?;
        // Each branch comes sorted; how branches interleave is the server's choice.
        if !entries.is_sorted_by(|a, b| (a.0, a.1) <= (b.0, b.1)) {
            entries.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        }
        entries.into_iter().try_for_each(|(n, k, v)| visit(n, k, v))
    }

    fn is_empty(&self) -> Result<bool, IndexError> {
        Ok(self
            .query_pairs(
                "SELECT key, value FROM regkeeper_kv LIMIT 1",
                Vec::new(),
                None,
            )?
            .is_empty())
    }
}

/// One row of a scan of several ranges: which range, the key, the value.
fn scanned(row: &tokio_postgres::Row, ranges: usize) -> Result<(usize, &[u8], &[u8]), IndexError> {
    let n: i32 = row.try_get(0).map_err(PgError::from)?;
    let n = usize::try_from(n)
        .ok()
        .filter(|n| *n < ranges)
        .ok_or_else(|| IndexError::Engine(format!("a scan answered for range {n}")))?;
    Ok((
        n,
        row.try_get(1).map_err(PgError::from)?,
        row.try_get(2).map_err(PgError::from)?,
    ))
}

impl KvStore for PgKv {
    fn transact(&self, build: &mut Build<'_>) -> Result<(), IndexError> {
        self.pipelined(&mut [build]).1
    }

    fn transact_each(&self, builds: &mut [&mut Build<'_>]) -> (usize, Result<(), IndexError>) {
        self.pipelined(builds)
    }

    fn each_in(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), IndexError> {
        let (start, end) = (start.to_vec(), bound(end.map(<[u8]>::to_vec)));
        let pool = self.pool.clone();
        // A few pages in flight: the reader never holds more, however large the range.
        // Pages go over as the rows arrived; the reader takes keys and values where they lie.
        let (tx, rx) = mpsc::sync_channel::<Result<Vec<tokio_postgres::Row>, PgError>>(2);
        self.handle().spawn(async move {
            let streamed = async {
                let mut client = pool.get().await.map_err(pool_error)?;
                let transaction = super::read_snapshot(&mut client).await?;
                let portal = transaction
                    .bind(
                        "SELECT key, value FROM regkeeper_kv WHERE key >= $1 AND key < $2 ORDER BY key",
                        &[&start, &end],
                    )
                    .await?;
                loop {
                    let rows = transaction.query_portal(&portal, FETCH).await?;
                    let done = rows.len() < FETCH as usize;
                    if tx.send(Ok(rows)).is_err() {
                        return Ok(());
                    }
                    if done {
                        return Ok(());
                    }
                }
            };
            if let Err(error) = streamed.await {
                let _ = tx.send(Err(error));
            }
        });
        for page in rx {
            for row in page.map_err(IndexError::from)? {
                let key: &[u8] = row.try_get(0).map_err(PgError::from)?;
                let value: &[u8] = row.try_get(1).map_err(PgError::from)?;
                visit(key, value)?;
            }
        }
        Ok(())
    }

    fn each_unordered(&self, parts: usize, visit: &VisitShared<'_>) -> Result<bool, IndexError> {
        PgKv::each_unordered(self, parts, visit)
    }

    fn page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KvPair>, IndexError> {
        let (start, end) = range(prefix);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match after {
            Some(after) if after >= prefix => self.query_pairs(
                "SELECT key, value FROM regkeeper_kv WHERE key > $1 AND key < $2 ORDER BY key LIMIT $3",
                vec![after.to_vec(), end],
                Some(limit),
            ),
            _ => self.query_pairs(
                "SELECT key, value FROM regkeeper_kv WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3",
                vec![start, end],
                Some(limit),
            ),
        }
    }

    fn apply(&self, writes: Vec<KvWrite>) -> Result<(), IndexError> {
        self.transact(&mut |_| Ok(writes.clone()))
    }

    fn settle_after_bulk_load(&self) -> Result<(), IndexError> {
        // What autovacuum would do in a while, and what PostgreSQL's documentation asks for
        // after populating a table: rows just written make their first reader set their hint
        // bits (writing pages back), and the planner has no statistics for them yet.
        let pool = self.pool.clone();
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            client
                .batch_execute("VACUUM (ANALYZE) regkeeper_kv")
                .await?;
            Ok(())
        })
    }

    fn flush(&self) -> Result<(), IndexError> {
        // A committed transaction is durable.
        Ok(())
    }

    fn change_cursor(&self) -> Result<Option<u64>, IndexError> {
        let pool = self.pool.clone();
        let seq: i64 = self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let row = client
                .query_one("SELECT coalesce(max(seq), 0) FROM regkeeper_changes", &[])
                .await?;
            Ok(row.get(0))
        })?;
        Ok(Some(seq.max(0) as u64))
    }

    fn changes_after(&self, cursor: u64, limit: usize) -> Result<KeyChanges, IndexError> {
        let pool = self.pool.clone();
        let after = i64::try_from(cursor).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (rows, pruned): (Vec<ChangeRow>, i64) = self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let pruned: i64 = client
                .query_one("SELECT upto FROM regkeeper_changes_pruned", &[])
                .await?
                .get(0);
            let rows = client
                .query(
                    "SELECT seq, keys FROM regkeeper_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&after, &limit],
                )
                .await?;
            Ok((rows.iter().map(|r| (r.get(0), r.get(1))).collect(), pruned))
        })?;
        let next = rows.last().map_or(cursor, |(seq, _)| *seq as u64);
        Ok(KeyChanges {
            cursor: next,
            keys: rows.into_iter().flat_map(|(_, keys)| keys).collect(),
            lost: after < pruned,
        })
    }
}

/// Tries to settle a lost COMMIT answer this many times, a second apart, while the database
/// comes back.
const SETTLE_TRIES: u32 = 10;

impl PgKv {
    /// Whether the batch `id` landed (`None`: the database could not be asked). A batch whose
    /// COMMIT answer was lost must not be applied again if it landed: pull counts would double.
    pub(super) fn settle(&self, id: &[u8]) -> Option<bool> {
        for attempt in 1..=SETTLE_TRIES {
            let pool = self.pool.clone();
            let id = id.to_vec();
            match self.run(async move { super::commit::landed(&pool, &id).await }) {
                Ok(landed) => {
                    tracing::warn!(landed, "the answer to a batch's COMMIT was lost; settled");
                    return Some(landed);
                }
                Err(error) if attempt < SETTLE_TRIES => {
                    tracing::warn!(%error, attempt, "settling a lost COMMIT answer");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(error) => {
                    tracing::error!(%error, "a lost COMMIT answer could not be settled");
                }
            }
        }
        None
    }
}
