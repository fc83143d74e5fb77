//! A store that fails as a full disk makes sled fail, for tests of the layers above: while
//! `full`, batches and flushes fail; a failure poisons the handle (every later write fails,
//! as sled keeps an I/O error) until it is reopened, and reopening starts over from what was
//! flushed — what was applied after the last flush is gone, as it would be on disk. It also
//! reads the whole store in one unordered pass, as a shared engine does, and that pass can be
//! made to fail (a database whose connections are all taken) while reads by ranges go on.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use super::{
    IndexError,
    kv::{Build, KvPair, KvRead, KvStore, KvWrite, MemoryKv, Visit, VisitShared, build_here},
};

#[derive(Default)]
pub struct FaultyKv {
    live: Mutex<MemoryKv>,
    durable: Mutex<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    unflushed: Mutex<Vec<KvWrite>>,
    full: AtomicBool,
    poisoned: AtomicBool,
    whole_reads_fail: AtomicBool,
}

impl FaultyKv {
    /// Fills (`true`) or frees the disk.
    pub fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::SeqCst);
    }

    /// Makes a read of the whole store in one pass fail (`true`) or work.
    pub fn set_whole_reads_fail(&self, fail: bool) {
        self.whole_reads_fail.store(fail, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), IndexError> {
        if self.full.load(Ordering::SeqCst) {
            self.poisoned.store(true, Ordering::SeqCst);
            return Err(IndexError::Engine(
                "No space left on device (os error 28)".into(),
            ));
        }
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(IndexError::Engine(
                "No space left on device (os error 28), earlier".into(),
            ));
        }
        Ok(())
    }

    fn live(&self) -> std::sync::MutexGuard<'_, MemoryKv> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl KvRead for FaultyKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, IndexError> {
        self.live().get(key)
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<KvPair>, IndexError> {
        self.live().scan(prefix)
    }

    fn is_empty(&self) -> Result<bool, IndexError> {
        self.live().is_empty()
    }
}

impl KvStore for FaultyKv {
    fn transact(&self, build: &mut Build<'_>) -> Result<(), IndexError> {
        build_here(self, build)
    }

    fn each_in(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), IndexError> {
        self.live().each_in(start, end, visit)
    }

    fn each_unordered(&self, parts: usize, visit: &VisitShared<'_>) -> Result<bool, IndexError> {
        if self.whole_reads_fail.load(Ordering::SeqCst) {
            return Err(IndexError::Engine(
                "no database connection: timed out waiting for one".into(),
            ));
        }
        self.live().each_unordered(parts, visit)
    }

    fn page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KvPair>, IndexError> {
        self.live().page(prefix, after, limit)
    }

    fn apply(&self, writes: Vec<KvWrite>) -> Result<(), IndexError> {
        self.check()?;
        self.unflushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(writes.iter().cloned());
        self.live().apply(writes)
    }

    fn flush(&self) -> Result<(), IndexError> {
        self.check()?;
        let mut durable = self.durable.lock().unwrap_or_else(|e| e.into_inner());
        for (key, value) in self
            .unflushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            durable.insert(key, value);
        }
        Ok(())
    }

    fn reopen(&self) -> Result<(), IndexError> {
        if self.full.load(Ordering::SeqCst) {
            return Err(IndexError::Engine(
                "No space left on device (os error 28)".into(),
            ));
        }
        let durable = self.durable.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = MemoryKv::default();
        fresh.apply(
            durable
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )?;
        *self.live() = fresh;
        self.unflushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.poisoned.store(false, Ordering::SeqCst);
        Ok(())
    }
}
