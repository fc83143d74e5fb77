//! The whole table in one pass: the heap read in block ranges on several connections at once,
//! all in one snapshot (exported by the first, imported by the rest), each range streamed as
//! binary COPY and parsed on a reading thread of the caller's.
//!
//! Against a read range by range, the server reads the heap once, in order, through a small
//! ring of buffers instead of walking the key index, and the client builds no row objects:
//! a cold read of a million tags costs both sides a third less.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::{StreamExt, pin_mut};
use tokio::sync::mpsc;

use super::{PgError, PgKv, copy_rows::CopyRows, pool_error};
use crate::index::{
    IndexError,
    kv::{VisitShared, on_threads},
};

/// Rows handed from the runtime to a reading thread at a time.
const BATCH: usize = 1024;
/// Batches in flight per part: the reader never holds more, however large the table.
const IN_FLIGHT: usize = 2;
/// Connections a whole read leaves to everyone else (the batching writer).
const LEFT_TO_OTHERS: usize = 2;
/// The first release that scans a range of the heap by `ctid` (a TID range scan).
const TID_RANGE_SCAN: i32 = 140_000;

/// Rows as they came, or `None`: this part has no range of its own (its reader is done).
type Batch = Result<Option<Vec<Bytes>>, PgError>;

/// A part of the heap: blocks `from` (included) up to `until` (not included); `None`: open.
#[derive(Clone, Copy)]
struct Blocks {
    from: Option<u32>,
    until: Option<u32>,
}

impl Blocks {
    fn copy(self) -> String {
        let mut bounds = Vec::new();
        if let Some(from) = self.from {
            bounds.push(format!("ctid >= '({from},0)'::tid"));
        }
        if let Some(until) = self.until {
            bounds.push(format!("ctid < '({until},0)'::tid"));
        }
        let filter = match bounds.is_empty() {
            true => String::new(),
            false => format!(" WHERE {}", bounds.join(" AND ")),
        };
        format!("COPY (SELECT key, value FROM regkeeper_kv{filter}) TO STDOUT (FORMAT binary)")
    }
}

/// `blocks` split in `parts` ranges of (nearly) equal size, the first and last open.
fn split(blocks: u32, parts: usize) -> Vec<Blocks> {
    let parts = u64::try_from(parts.max(1)).unwrap_or(1);
    let at = |n: u64| u32::try_from(u64::from(blocks) * n / parts).unwrap_or(u32::MAX);
    (0..parts)
        .map(|n| Blocks {
            from: (n > 0).then(|| at(n)),
            until: (n + 1 < parts).then(|| at(n + 1)),
        })
        .collect()
}

impl PgKv {
    pub(super) fn each_unordered(
        &self,
        parts: usize,
        visit: &VisitShared<'_>,
    ) -> Result<bool, IndexError> {
        // One part at least, however small the pool: it needs no snapshot imported.
        let connections = self.pool.status().max_size;
        let parts = parts.min(connections.saturating_sub(LEFT_TO_OTHERS)).max(1);
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..parts)
            .map(|_| mpsc::channel::<Batch>(IN_FLIGHT))
            .unzip();
        self.handle().spawn(read(self.pool.clone(), senders));
        let failed = AtomicBool::new(false);
        on_threads(receivers, |receiver| drain(receiver, visit, &failed))?;
        Ok(true)
    }
}

/// Hands each row of one part's batches to `visit`; a part that fails tells the others, which
/// stop early (the error is what the read returns).
fn drain(
    receiver: mpsc::Receiver<Batch>,
    visit: &VisitShared<'_>,
    failed: &AtomicBool,
) -> Result<(), IndexError> {
    let drained = drain_part(receiver, visit, failed);
    if drained.is_err() {
        failed.store(true, Ordering::Relaxed);
    }
    drained
}

fn drain_part(
    mut receiver: mpsc::Receiver<Batch>,
    visit: &VisitShared<'_>,
    failed: &AtomicBool,
) -> Result<(), IndexError> {
    let mut rows = CopyRows::default();
    while let Some(batch) = receiver.blocking_recv() {
        if failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let Some(batch) = batch.map_err(IndexError::from)? else {
            return Ok(());
        };
        for chunk in batch {
            rows.feed(&chunk, &mut |k, v| visit(k, v))?;
        }
    }
    rows.finished()
}

/// The first part takes and exports the snapshot and learns the table's size, starts the
/// other parts, reads its own range, and ends its transaction only once every other part has
/// imported the snapshot (or given up).
async fn read(pool: deadpool_postgres::Pool, mut senders: Vec<mpsc::Sender<Batch>>) {
    let first = senders.remove(0);
    let others = senders;
    let exported = async {
        let mut client = pool.get().await.map_err(pool_error)?;
        let transaction = super::read_snapshot(&mut client).await?;
        let row = transaction
            .query_one(
                "SELECT pg_export_snapshot(), \
                 pg_relation_size('regkeeper_kv') / current_setting('block_size')::bigint, \
                 current_setting('server_version_num')::int",
                &[],
            )
            .await?;
        let (snapshot, blocks, version): (String, i64, i32) = (row.get(0), row.get(1), row.get(2));
        let parts = match version >= TID_RANGE_SCAN {
            true => 1 + others.len(),
            // Without TID range scans every part would read the whole heap: one part does.
            false => 1,
        };
        let ranges = split(u32::try_from(blocks).unwrap_or(u32::MAX), parts);
        // Each other part holds a token until it has imported the snapshot.
        let (imported, mut all_imported) = mpsc::channel::<()>(1);
        for (n, sender) in others.into_iter().enumerate() {
            match ranges.get(n + 1) {
                Some(&blocks) => {
                    let (pool, snapshot, imported) =
                        (pool.clone(), snapshot.clone(), imported.clone());
                    tokio::spawn(async move {
                        if let Err(error) =
                            imported_part(pool, snapshot, blocks, &sender, imported).await
                        {
                            let _ = sender.send(Err(error)).await;
                        }
                    });
                }
                None => {
                    let _ = sender.send(Ok(None)).await;
                }
            }
        }
        drop(imported);
        stream(&transaction, ranges[0], &first).await?;
        while all_imported.recv().await.is_some() {}
        transaction.commit().await?;
        Ok::<_, PgError>(())
    };
    if let Err(error) = exported.await {
        let _ = first.send(Err(error)).await;
    }
}

/// A part after the first: imports the snapshot, then reads its range.
async fn imported_part(
    pool: deadpool_postgres::Pool,
    snapshot: String,
    blocks: Blocks,
    sender: &mpsc::Sender<Batch>,
    imported: mpsc::Sender<()>,
) -> Result<(), PgError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let transaction = super::read_snapshot(&mut client).await?;
    // The identifier comes from the server; quoted as a literal all the same.
    let quoted = snapshot.replace('\'', "''");
    transaction
        .batch_execute(&format!("SET TRANSACTION SNAPSHOT '{quoted}'"))
        .await?;
    drop(imported);
    stream(&transaction, blocks, sender).await?;
    transaction.commit().await?;
    Ok(())
}

/// Streams one range's COPY to its reader in batches. A reader that stopped ends it.
async fn stream(
    transaction: &tokio_postgres::Transaction<'_>,
    blocks: Blocks,
    sender: &mpsc::Sender<Batch>,
) -> Result<(), PgError> {
    let copy = transaction.copy_out(&blocks.copy()).await?;
    pin_mut!(copy);
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(chunk) = copy.next().await {
        batch.push(chunk?);
        if batch.len() == BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if sender.send(Ok(Some(full))).await.is_err() {
                return Ok(());
            }
        }
    }
    if !batch.is_empty() {
        let _ = sender.send(Ok(Some(batch))).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, sync::Mutex};

    use super::*;
    use crate::index::{
        KvStore,
        postgres::{PgOptions, test_options, testing::TestPostgres},
    };

    /// Thousands of keys over many blocks, a third of them rewritten (their rows move to the
    /// heap's end), read in four parts. Every key is rewritten again by another replica once
    /// the first part has begun and before the others can start (the pool is held until
    /// then): each key still comes once, as it was when the read began.
    #[test]
    fn every_key_comes_once_as_of_the_reads_start() {
        let server = TestPostgres::start();
        let options = PgOptions {
            connections: 8,
            ..test_options(&server.fresh_database())
        };
        let kv = PgKv::connect(&options).unwrap();
        let other = PgKv::connect(&options).unwrap();
        let key = |n: usize| format!("k{n:05}").into_bytes();
        let write_all = |kv: &PgKv, keys: &mut dyn Iterator<Item = usize>, value: u8| {
            let writes: Vec<_> = keys.map(|n| (key(n), Some(vec![value; 300]))).collect();
            for batch in writes.chunks(1000) {
                kv.apply(batch.to_vec()).unwrap();
            }
        };
        write_all(&kv, &mut (0..6000), 1);
        write_all(&kv, &mut (0..6000).step_by(3), 2);
        let expected = |n: usize| if n.is_multiple_of(3) { 2 } else { 1 };
        // All but one connection: the first part takes it, the other three wait.
        let held: Vec<_> = (0..7)
            .map(|_| {
                let pool = kv.pool.clone();
                kv.run(async move { pool.get().await.map_err(pool_error) })
                    .unwrap()
            })
            .collect();
        let held = Mutex::new(held);

        let seen = Mutex::new(HashMap::<Vec<u8>, Vec<u8>>::new());
        let duplicates = Mutex::new(Vec::new());
        let rewritten = std::sync::Once::new();
        let offered = kv
            .each_unordered(4, &|k, v| {
                rewritten.call_once(|| {
                    write_all(&other, &mut (0..6000), 3);
                    held.lock().unwrap().clear();
                });
                if seen
                    .lock()
                    .unwrap()
                    .insert(k.to_vec(), v.to_vec())
                    .is_some()
                {
                    duplicates.lock().unwrap().push(k.to_vec());
                }
                Ok(())
            })
            .unwrap();
        assert!(offered);
        assert!(duplicates.into_inner().unwrap().is_empty());
        let seen = seen.into_inner().unwrap();
        // The schema's own version key is in the table too.
        let keys: Vec<_> = seen.keys().filter(|k| k.starts_with(b"k")).collect();
        assert_eq!(keys.len(), 6000);
        for n in 0..6000 {
            assert_eq!(seen[&key(n)], vec![expected(n); 300], "key {n}");
        }
        let blocks: i64 = server
            .sql(
                &server_database(&options.url),
                "SELECT pg_relation_size('regkeeper_kv') / 8192",
            )
            .trim()
            .parse()
            .unwrap();
        assert!(blocks > 100, "the table spans {blocks} blocks");
    }

    fn server_database(url: &str) -> String {
        url.rsplit('/').next().unwrap_or_default().to_string()
    }

    #[test]
    fn ranges_cover_every_block_once() {
        for (blocks, parts) in [(0, 4), (1, 4), (10, 3), (141_221, 4), (u32::MAX, 7)] {
            let ranges = split(blocks, parts);
            assert_eq!(ranges.len(), parts);
            assert_eq!(ranges[0].from, None);
            assert_eq!(ranges[parts - 1].until, None);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].until, pair[1].from);
            }
        }
        assert_eq!(
            split(10, 1)[0].copy(),
            "COPY (SELECT key, value FROM regkeeper_kv) TO STDOUT (FORMAT binary)"
        );
        assert!(
            split(10, 2)[1]
                .copy()
                .contains("WHERE ctid >= '(5,0)'::tid)")
        );
    }
}
