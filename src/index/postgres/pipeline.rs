//! How batches reach the database. Each batch is read and built in a snapshot, without any
//! lock; then, holding the writers' lock, the write phase checks in the change log that no
//! other writer changed what the batch read since, writes and commits. Several batches from
//! one caller overlap: the next one is read and built — on top of the writes of the one still
//! committing — while that one's write phase runs, so the database works on two batches at
//! once and the caller's building hides behind it. A batch that something changed under is
//! built again with the lock held from its first read, which cannot fail that way: the result
//! is as if every batch, from every process, ran alone in commit order.

use std::{sync::mpsc, time::Duration};

use super::{
    MAX_RUNS, PgError, PgKv, commit, pool_error,
    reads::{BatchReads, KeySet, Overlay, ReadSet},
    transaction::{Mode, Transaction, batch_id},
};
use crate::index::{
    IndexError,
    kv::{Build, KvWrite},
};

/// A batch read and built in a snapshot.
struct Built {
    /// In key order, one write per key.
    writes: std::sync::Arc<Vec<KvWrite>>,
    read: ReadSet,
    absent: KeySet,
    /// Where the change log ended in the snapshot.
    head: i64,
    /// Written with the batch, so a lost COMMIT answer can be settled.
    id: Vec<u8>,
}

/// A batch whose write phase runs.
struct Flight {
    index: usize,
    id: Vec<u8>,
    /// Its writes, which the next batch reads on top of its snapshot.
    overlay: Overlay,
    outcome: mpsc::Receiver<Written>,
}

enum Written {
    /// Committed as built, at this place in the change log (`None`: nothing to write).
    Committed(Option<i64>),
    /// Another writer changed something the batch read: it is built again.
    Stale,
    Failed(PgError),
}

/// How a batch in flight ended.
enum Landed {
    /// As built: the next batch's reads on top of it stand (given its place in the log).
    AsBuilt(Option<i64>),
    /// Built again under the lock: the next batch read on top of writes that never landed.
    Again,
}

impl PgKv {
    /// Applies the batches in order, each atomically; how many landed before the first that
    /// failed, and its error.
    pub(super) fn pipelined(
        &self,
        builds: &mut [&mut Build<'_>],
    ) -> (usize, Result<(), IndexError>) {
        let mut flight: Option<Flight> = None;
        let mut next = 0;
        loop {
            let overlay = flight.as_ref().map(|f| &f.overlay);
            let built = builds
                .get_mut(next)
                .map(|build| self.read_phase(build, overlay));
            let mut own = None;
            if let Some(previous) = flight.take() {
                let index = previous.index;
                match self.land(previous, builds) {
                    Ok(Landed::AsBuilt(seq)) => own = seq,
                    // Read `next` again, on top of what the database now holds.
                    Ok(Landed::Again) if built.is_some() => continue,
                    Ok(Landed::Again) => {}
                    Err(error) => return (index, Err(error)),
                }
            }
            let Some(built) = built else {
                return (builds.len(), Ok(()));
            };
            match built {
                Ok(built) => flight = Some(self.start_write(next, built, own)),
                Err(error) => return (next, Err(error)),
            }
            next += 1;
        }
    }

    /// Reads and builds a batch in a fresh snapshot, on top of `overlay`.
    fn read_phase(
        &self,
        build: &mut Build<'_>,
        overlay: Option<&Overlay>,
    ) -> Result<Built, IndexError> {
        let transaction = Transaction::begin(self.handle(), self.pool.clone(), Mode::Snapshot)?;
        let reads = BatchReads::new(&transaction, overlay);
        let writes = commit::in_key_order(build(&reads)?);
        let (read, absent) = reads.into_parts();
        Ok(Built {
            writes: std::sync::Arc::new(writes),
            read,
            absent,
            head: transaction.head(),
            id: batch_id()?,
        })
    }

    /// Starts a batch's write phase on the engine's runtime. `own`: the change log entry of
    /// this caller's previous batch, which this one read on top of its snapshot.
    fn start_write(&self, index: usize, built: Built, own: Option<i64>) -> Flight {
        let (tx, outcome) = mpsc::sync_channel(1);
        let overlay = Overlay::new(built.writes.clone());
        let id = built.id.clone();
        if built.writes.is_empty() {
            // It changes nothing, so it takes its place at its snapshot: nothing to check.
            let _ = tx.send(Written::Committed(None));
        } else {
            let pool = self.pool.clone();
            self.handle().spawn(async move {
                let written = match write_phase(&pool, built, own).await {
                    Ok(Some(seq)) => Written::Committed(seq),
                    Ok(None) => Written::Stale,
                    Err(error) => Written::Failed(error),
                };
                let _ = tx.send(written);
            });
        }
        Flight {
            index,
            id,
            overlay,
            outcome,
        }
    }

    /// Waits for a batch's write phase and settles it: a stale or conflicting batch is built
    /// again under the lock, a lost COMMIT answer is looked up.
    fn land(&self, flight: Flight, builds: &mut [&mut Build<'_>]) -> Result<Landed, IndexError> {
        let stopped = || IndexError::Engine("postgres: the database client stopped".into());
        let written = flight.outcome.recv().map_err(|_| stopped())?;
        let build = builds.get_mut(flight.index).ok_or_else(stopped)?;
        match written {
            Written::Committed(seq) => Ok(Landed::AsBuilt(seq)),
            Written::Stale => self.locked(build).map(|()| Landed::Again),
            Written::Failed(error) => match error {
                PgError::CommitUnknown(_) => match self.settle(&flight.id) {
                    // Where it sits in the log is unknown: the next batch's check will
                    // count it as another writer's.
                    Some(true) => Ok(Landed::AsBuilt(None)),
                    Some(false) => self.locked(build).map(|()| Landed::Again),
                    None => Err(error.into()),
                },
                error if error.conflicted() => self.locked(build).map(|()| Landed::Again),
                error => Err(error.into()),
            },
        }
    }

    /// One batch read, built, written and committed holding the writers' lock throughout;
    /// run again when it conflicts anyway (a writer that takes no lock: a unique violation).
    pub(super) fn locked(&self, build: &mut Build<'_>) -> Result<(), IndexError> {
        for run in 1..=MAX_RUNS {
            let transaction = Transaction::begin(self.handle(), self.pool.clone(), Mode::Locked)?;
            let outcome = (|| {
                let reads = BatchReads::new(&transaction, None);
                let writes = build(&reads)?;
                let (_, absent) = reads.into_parts();
                transaction.commit(writes, absent)
            })();
            match outcome {
                Ok(_) => return Ok(()),
                Err(error) if transaction.outcome_unknown() => {
                    match self.settle(transaction.id()) {
                        Some(true) => return Ok(()),
                        // It did not land and now never will: running it again is safe.
                        Some(false) if run < MAX_RUNS => continue,
                        _ => return Err(error),
                    }
                }
                Err(_) if transaction.conflicted() && run < MAX_RUNS => {
                    // Back off a little, more each time and by a varying amount, so the
                    // writers stop colliding.
                    let jitter = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |t| u64::from(t.subsec_nanos()) % 1000);
                    let millis = (u64::from(run) * 2).min(50);
                    std::thread::sleep(Duration::from_micros(millis * 1000 + jitter * millis));
                }
                Err(error) => return Err(error),
            }
        }
        Err(IndexError::Engine(format!(
            "postgres: a batch conflicted with other writers {MAX_RUNS} times; given up"
        )))
    }
}

/// Takes the writers' lock, checks the batch still holds, writes and commits: `None` when it
/// no longer holds (nothing written).
async fn write_phase(
    pool: &deadpool_postgres::Pool,
    built: Built,
    own: Option<i64>,
) -> Result<Option<Option<i64>>, PgError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let transaction = commit::begin_locked(&mut client).await?;
    let read = &built.read;
    if !commit::still_holds(&transaction, built.head, own, |key| read.covers(key)).await? {
        return Ok(None);
    }
    let seq = commit::write(&transaction, &built.writes, &built.absent, &built.id).await?;
    commit::finish(transaction).await?;
    Ok(Some(seq))
}
