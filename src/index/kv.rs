//! The storage underneath the index: ordered byte keys, point reads, prefix scans and atomic
//! batches. Everything index-specific lives above this line, so both engines share it.

use std::{collections::BTreeMap, sync::RwLock};

use super::IndexError;

/// A stored key and its value.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// What [`KvStore::each`] hands each (key, value) to.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), IndexError> + 'a;

/// What [`KvRead::each_under`] hands each entry to: the position of its prefix, its key, its
/// value.
pub type VisitUnder<'a> = dyn FnMut(usize, &[u8], &[u8]) -> Result<(), IndexError> + 'a;

/// What [`KvStore::each_unordered`] hands each (key, value) to, from several threads.
pub type VisitShared<'a> = dyn Fn(&[u8], &[u8]) -> Result<(), IndexError> + Sync + 'a;

/// One key's new value (`None` deletes it).
pub type KvWrite = (Vec<u8>, Option<Vec<u8>>);

/// What a batch being built may read: the store itself, or the transaction a shared engine
/// builds the batch in.
pub trait KvRead {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, IndexError>;
    /// Several keys at once: one round trip on an engine behind a network.
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, IndexError> {
        keys.iter().map(|key| self.get(key)).collect()
    }
    /// Every (key, value) whose key starts with `prefix`, in key order.
    fn scan(&self, prefix: &[u8]) -> Result<Vec<KvPair>, IndexError>;
    /// Hands every (key, value) under each of `prefixes` to `visit` with the prefix's position,
    /// prefix after prefix, each in key order: one round trip on an engine behind a network, and
    /// nothing copied on the way (a whole-index read visits three million entries).
    fn each_under(
        &self,
        prefixes: &[Vec<u8>],
        visit: &mut VisitUnder<'_>,
    ) -> Result<(), IndexError> {
        for (n, prefix) in prefixes.iter().enumerate() {
            for (key, value) in self.scan(prefix)? {
                visit(n, &key, &value)?;
            }
        }
        Ok(())
    }
    /// Whether the store holds no key at all.
    fn is_empty(&self) -> Result<bool, IndexError>;
}

/// What [`KvStore::changes_after`] found.
pub struct KeyChanges {
    /// Where the next read goes on from.
    pub cursor: u64,
    pub keys: Vec<Vec<u8>>,
    /// The log no longer reaches back to the cursor asked for (it was pruned).
    pub lost: bool,
}

/// Builds one batch from what it reads.
pub type Build<'a> = dyn FnMut(&dyn KvRead) -> Result<Vec<KvWrite>, IndexError> + 'a;

pub trait KvStore: KvRead + Send + Sync {
    /// One read-modify-write batch: `build` reads through what it is handed and returns the
    /// writes, applied atomically. A single-writer engine hands itself ([`build_here`]); a
    /// shared engine reads inside a transaction and runs `build` again when another writer's
    /// commit conflicted with it, so batches from several processes apply as if one at a time.
    fn transact(&self, build: &mut Build<'_>) -> Result<(), IndexError>;
    /// [`transact`](Self::transact) for each batch, in order; how many were applied before the
    /// first that failed, and its error. A shared engine overlaps them: the next batch is read
    /// and built while the one before commits.
    fn transact_each(&self, builds: &mut [&mut Build<'_>]) -> (usize, Result<(), IndexError>) {
        for (done, build) in builds.iter_mut().enumerate() {
            if let Err(error) = self.transact(build) {
                return (done, Err(error));
            }
        }
        (builds.len(), Ok(()))
    }
    /// Hands every (key, value) under `prefix` to `visit`, in key order, without collecting
    /// them: whole-index readers would otherwise hold every raw entry at once.
    fn each(&self, prefix: &[u8], visit: &mut Visit<'_>) -> Result<(), IndexError> {
        self.each_in(prefix, prefix_end(prefix).as_deref(), visit)
    }
    /// As [`each`](Self::each), for the keys from `start` up to (not including) `end` (`None`:
    /// to the last key): whole-index readers split a range between threads.
    fn each_in(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), IndexError>;
    /// Hands every (key, value) of the store to `visit` once, in no particular order, from
    /// `parts` threads at once, all as of one moment: an engine behind a network reads its
    /// whole table in one pass faster than range by range. `Ok(false)`: this engine reads
    /// faster by ranges (sled's are local and ordered), and nothing was visited.
    fn each_unordered(&self, _parts: usize, _visit: &VisitShared<'_>) -> Result<bool, IndexError> {
        Ok(false)
    }
    /// Up to `limit` (key, value) under `prefix` whose key is greater than `after`, in key
    /// order: readers that page through a large range hold one page, and no lock between pages.
    fn page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KvPair>, IndexError>;
    /// All writes become visible together, or none (also across a crash).
    fn apply(&self, writes: Vec<KvWrite>) -> Result<(), IndexError>;
    /// Makes applied batches durable.
    fn flush(&self) -> Result<(), IndexError>;
    /// Where the log of changes made by any writer ends now; `None` for an engine only this
    /// process writes (it sees every change it makes).
    fn change_cursor(&self) -> Result<Option<u64>, IndexError> {
        Ok(None)
    }

    /// The keys changed after `cursor` (by any writer, in commit order), up to `limit` batches.
    fn changes_after(&self, cursor: u64, _limit: usize) -> Result<KeyChanges, IndexError> {
        Ok(KeyChanges {
            cursor,
            keys: Vec::new(),
            lost: false,
        })
    }

    /// Starts over from what is durable, after writes failed (an engine that keeps an I/O
    /// error for good is replaced by a fresh handle). Nothing to do by default.
    fn reopen(&self) -> Result<(), IndexError> {
        Ok(())
    }

    /// Brings the store to the state it settles in by itself after a bulk load (a whole
    /// index copied in), so the first readers do not pay for it. Nothing to do by default.
    fn settle_after_bulk_load(&self) -> Result<(), IndexError> {
        Ok(())
    }
}

/// [`KvStore::transact`] for an engine only this process writes (its callers serialize batches).
pub fn build_here<K: KvStore>(kv: &K, build: &mut Build<'_>) -> Result<(), IndexError> {
    let writes = build(kv)?;
    kv.apply(writes)
}

/// Where a page of `prefix` after `after` starts: past `after`, or at the prefix.
pub fn page_start(prefix: &[u8], after: Option<&[u8]>) -> std::ops::Bound<Vec<u8>> {
    match after {
        Some(after) if after >= prefix => std::ops::Bound::Excluded(after.to_vec()),
        _ => std::ops::Bound::Included(prefix.to_vec()),
    }
}

/// Runs `job` on each item, a thread each, and collects what each returned: the first error,
/// if any (a thread that panicked is one). Whole-index readers split their work this way.
pub fn on_threads<I: Send, T: Send>(
    items: Vec<I>,
    job: impl Fn(I) -> Result<T, IndexError> + Sync,
) -> Result<Vec<T>, IndexError> {
    std::thread::scope(|scope| {
        let job = &job;
        let running: Vec<_> = items
            .into_iter()
            .map(|item| scope.spawn(move || job(item)))
            .collect();
        running
            .into_iter()
            .map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|_| Err(IndexError::Engine("a reading thread panicked".into())))
            })
            .collect()
    })
}

/// The in-memory twin: a `BTreeMap` behind a lock.
#[derive(Default)]
pub struct MemoryKv {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl KvRead for MemoryKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, IndexError> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        Ok(map.get(key).cloned())
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<KvPair>, IndexError> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        Ok(map
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn is_empty(&self) -> Result<bool, IndexError> {
        Ok(self
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty())
    }
}

impl KvStore for MemoryKv {
    fn transact(&self, build: &mut Build<'_>) -> Result<(), IndexError> {
        build_here(self, build)
    }

    fn each_in(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), IndexError> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        for (k, v) in map
            .range(start.to_vec()..)
            .take_while(|(k, _)| end.is_none_or(|end| k.as_slice() < end))
        {
            visit(k, v)?;
        }
        Ok(())
    }

    /// Read from a copy taken under the lock, each part on a thread of its own and backwards:
    /// the in-memory twin holds the callers to "no particular order".
    fn each_unordered(&self, parts: usize, visit: &VisitShared<'_>) -> Result<bool, IndexError> {
        let pairs: Vec<KvPair> = {
            let map = self.map.read().unwrap_or_else(|e| e.into_inner());
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let parts = parts.max(1);
        on_threads((0..parts).collect(), |part| {
            pairs
                .iter()
                .rev()
                .skip(part)
                .step_by(parts)
                .try_for_each(|(k, v)| visit(k, v))
        })?;
        Ok(true)
    }

    fn page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KvPair>, IndexError> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        Ok(map
            .range((page_start(prefix, after), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn apply(&self, writes: Vec<KvWrite>) -> Result<(), IndexError> {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        for (key, value) in writes {
            match value {
                Some(value) => map.insert(key, value),
                None => map.remove(&key),
            };
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), IndexError> {
        Ok(())
    }
}

/// The first key after every key that starts with `prefix` (none: the range is open).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
