//! The embedded default: a sled database in a directory. sled 0.34 is old; nothing outside this
//! file knows it is there.

use std::{
    path::{Path, PathBuf},
    sync::RwLock,
    time::Duration,
};

use super::{
    IndexError,
    kv::{Build, KvPair, KvRead, KvStore, KvWrite, build_here},
};

pub struct SledKv {
    /// Replaced by [`KvStore::reopen`]: sled 0.34 keeps an I/O error (a full disk) for good,
    /// so a handle that saw one is swapped for a fresh one once the cause is gone. `None`
    /// between dropping the old handle and opening the new one.
    db: RwLock<Option<sled::Db>>,
    path: PathBuf,
}

/// sled's page cache ceiling (its default is 1 GiB): the proxy's memory budget is small.
const CACHE_BYTES: u64 = 16 << 20;

/// Files sled 0.34 keeps in its directory.
const SLED_FILES: [&str; 2] = ["conf", "db"];

impl SledKv {
    /// Opens (or creates) the database at `path`. A directory that holds anything but a sled
    /// database is refused untouched.
    pub fn open(path: &Path) -> Result<Self, IndexError> {
        let foreign = |why: String| IndexError::Foreign {
            path: path.display().to_string(),
            why,
        };
        if path.exists() {
            if !path.is_dir() {
                return Err(foreign("it is not a directory".into()));
            }
            let entries: Vec<String> = std::fs::read_dir(path)
                .map_err(|e| IndexError::Io(path.display().to_string(), e))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            let is_sled = SLED_FILES.iter().all(|f| entries.iter().any(|e| e == f));
            if !entries.is_empty() && !is_sled {
                return Err(foreign(format!(
                    "it holds other files ({}) and no index",
                    entries.join(", ")
                )));
            }
        }
        Ok(Self {
            db: RwLock::new(Some(Self::open_db(path)?)),
            path: path.to_owned(),
        })
    }

    fn open_db(path: &Path) -> Result<sled::Db, IndexError> {
        sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| {
                let why = e.to_string();
                if why.contains("could not acquire lock") {
                    IndexError::InUse {
                        path: path.display().to_string(),
                    }
                } else {
                    IndexError::Corrupt {
                        path: path.display().to_string(),
                        why,
                    }
                }
            })
    }

    /// The current handle (a cheap clone), or an error while it is being replaced.
    fn db(&self) -> Result<sled::Db, IndexError> {
        self.db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| IndexError::Engine(format!("{}: being reopened", self.path.display())))
    }

    fn err(&self, error: sled::Error) -> IndexError {
        IndexError::Engine(format!("{}: {error}", self.path.display()))
    }
}

impl KvRead for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, IndexError> {
        Ok(self
            .db()?
            .get(key)
            .map_err(|e| self.err(e))?
            .map(|v| v.to_vec()))
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<KvPair>, IndexError> {
        self.db()?
            .scan_prefix(prefix)
            .map(|item| {
                item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(|e| self.err(e))
            })
            .collect()
    }

    fn each_under(
        &self,
        prefixes: &[Vec<u8>],
        visit: &mut super::kv::VisitUnder<'_>,
    ) -> Result<(), IndexError> {
        let db = self.db()?;
        for (n, prefix) in prefixes.iter().enumerate() {
            for item in db.scan_prefix(prefix) {
                let (k, v) = item.map_err(|e| self.err(e))?;
                visit(n, &k, &v)?;
            }
        }
        Ok(())
    }

    fn is_empty(&self) -> Result<bool, IndexError> {
        Ok(self.db()?.is_empty())
    }
}

impl KvStore for SledKv {
    fn transact(&self, build: &mut Build<'_>) -> Result<(), IndexError> {
        build_here(self, build)
    }

    fn each_in(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut super::kv::Visit<'_>,
    ) -> Result<(), IndexError> {
        use std::ops::Bound;
        let end = end.map_or(Bound::Unbounded, Bound::Excluded);
        for item in self.db()?.range::<&[u8], _>((Bound::Included(start), end)) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            visit(&k, &v)?;
        }
        Ok(())
    }

    fn page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KvPair>, IndexError> {
        let start = super::kv::page_start(prefix, after);
        self.db()?
            .range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded))
            .take_while(|item| item.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
            .take(limit)
            .map(|item| {
                item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(|e| self.err(e))
            })
            .collect()
    }

    fn apply(&self, writes: Vec<KvWrite>) -> Result<(), IndexError> {
        let mut batch = sled::Batch::default();
        for (key, value) in writes {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        // sled applies a batch atomically, also across a crash.
        self.db()?.apply_batch(batch).map_err(|e| self.err(e))
    }

    fn flush(&self) -> Result<(), IndexError> {
        self.db()?.flush().map(drop).map_err(|e| self.err(e))
    }

    fn reopen(&self) -> Result<(), IndexError> {
        let mut slot = self.db.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = slot.take() {
            // What it still holds in memory goes now, if the disk takes it.
            let _ = old.flush();
        }
        // sled's flusher thread lets go of the directory lock a moment after the last handle.
        let mut last = None;
        for _ in 0..50 {
            match Self::open_db(&self.path) {
                Ok(db) => {
                    *slot = Some(db);
                    return Ok(());
                }
                Err(error @ IndexError::InUse { .. }) => {
                    last = Some(error);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(error) => return Err(error),
            }
        }
        Err(last.unwrap_or_else(|| IndexError::Engine("reopen failed".into())))
    }
}
