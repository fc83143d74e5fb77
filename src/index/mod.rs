//! The index: what regkeeper knows about every tag and manifest it has seen — digests, push
//! times, tag history, what each manifest is and refers to, the commits images were built from,
//! and pull statistics.
//!
//! Owns: the [`Index`] trait, its sled implementation (the embedded default), its in-memory twin
//! and the shared PostgreSQL engine (several replicas), which share one implementation of the
//! semantics ([`store::Store`]) over a small ordered key-value layer ([`kv::KvStore`]); a
//! conformance suite runs against all three.
//! May call: nothing else in the crate. The proxy never calls it directly (see `events`).

pub mod copy;
mod kv;
mod model;
pub mod postgres;
mod sled_kv;
mod store;
mod write;

#[cfg(test)]
mod conformance;
#[cfg(test)]
pub mod faulty;

use std::path::Path;

pub use kv::{KvRead, KvStore, MemoryKv, on_threads};
pub use model::{
    AuditAction, AuditEntry, AuditState, CleanupLock, CleanupRun, CommitLink, ConfigFacts, Lease,
    LinkSource, ManifestKind, ManifestRecord, PreviousDigest, PullStats, RestoreRecord, SyncState,
    TagRecord, UnixMillis,
};
pub use sled_kv::SledKv;
pub use store::{SCHEMA_VERSION, Store};
pub use write::Write;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(
        "{path} is not a regkeeper index ({why}); refusing to use it. Point index.path at an empty or new directory"
    )]
    Foreign { path: String, why: String },
    #[error("the index at {path} is in use by another regkeeper process (it is single-writer)")]
    InUse { path: String },
    #[error("the index at {path} cannot be opened ({why}); it was left untouched")]
    Corrupt { path: String, why: String },
    #[error(
        "the index was written by a newer regkeeper (schema {found}, this build reads up to {supported}); upgrade regkeeper or use another index.path"
    )]
    NewerSchema { found: u32, supported: u32 },
    #[error("index record {0} is unreadable: {1}")]
    BadRecord(String, String),
    #[error("index storage: {0}")]
    Engine(String),
    /// A [`Write::Fence`] failed: the writer does not (or no longer) lead.
    #[error("not the leader: {0}")]
    Fenced(String),
    /// The engine cannot be set up as configured (a password file, a CA bundle).
    #[error("index settings: {0}")]
    Settings(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// What [`Index::repository_records`] reads.
#[derive(Debug, Default)]
pub struct RepositoryRecords {
    pub tags: Vec<TagRecord>,
    pub manifests: Vec<ManifestRecord>,
    pub pulls: Vec<(String, PullStats)>,
    pub restores: Vec<RestoreRecord>,
}

/// One record of a whole-index read ([`Index::each_record`]).
#[derive(Debug)]
pub enum Record {
    Tag(TagRecord),
    Manifest(ManifestRecord),
    Pull {
        repository: String,
        /// The tag or digest pulled.
        reference: String,
        stats: PullStats,
    },
    Restore(RestoreRecord),
    Link(CommitLink),
}

/// Digests from `from` (included) up to `until` (not included), compared as strings; `None`
/// leaves that end open. Every link of one digest falls in the same range.
#[derive(Clone, Copy, Debug, Default)]
pub struct DigestRange<'a> {
    pub from: Option<&'a str>,
    pub until: Option<&'a str>,
}

impl DigestRange<'_> {
    /// Every digest.
    pub const ALL: DigestRange<'static> = DigestRange {
        from: None,
        until: None,
    };

    pub fn contains(&self, digest: &str) -> bool {
        self.from.is_none_or(|from| digest >= from) && self.until.is_none_or(|until| digest < until)
    }
}

/// What the rest of regkeeper asks of the index. Reads see only whole batches.
pub trait Index: Send + Sync {
    /// Applies `writes` in order, atomically: after a crash either all of them are there or none.
    fn apply(&self, writes: &[Write]) -> Result<(), IndexError>;
    /// [`apply`](Self::apply) for each batch, in order; how many were applied before the first
    /// that failed, and its error. A shared engine overlaps them (the writer's throughput).
    fn apply_each(&self, batches: &[Vec<Write>]) -> (usize, Result<(), IndexError>) {
        for (done, writes) in batches.iter().enumerate() {
            if let Err(error) = self.apply(writes) {
                return (done, Err(error));
            }
        }
        (batches.len(), Ok(()))
    }
    fn repositories(&self) -> Result<Vec<String>, IndexError>;
    /// The repository's tags, ordered by tag name.
    fn tags(&self, repository: &str) -> Result<Vec<TagRecord>, IndexError>;
    /// Up to `limit` of the repository's tags named after `after`, ordered by tag name: for
    /// readers that must not hold a million tags at once (the views).
    fn tags_page(
        &self,
        repository: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TagRecord>, IndexError>;
    fn tag(&self, repository: &str, tag: &str) -> Result<Option<TagRecord>, IndexError>;
    /// The repository's manifests, ordered by digest.
    fn manifests(&self, repository: &str) -> Result<Vec<ManifestRecord>, IndexError>;
    /// Up to `limit` of the repository's manifests with digests after `after`, by digest.
    fn manifests_page(
        &self,
        repository: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ManifestRecord>, IndexError>;
    fn manifest(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<Option<ManifestRecord>, IndexError>;
    /// [`manifest`](Self::manifest) of each (repository, digest), in order: one round trip on a
    /// shared engine (the writer asks after every batch which pushed images still need their
    /// config read).
    fn manifests_of(
        &self,
        wanted: &[(&str, &str)],
    ) -> Result<Vec<Option<ManifestRecord>>, IndexError> {
        wanted
            .iter()
            .map(|(repository, digest)| self.manifest(repository, digest))
            .collect()
    }
    fn commit_links(&self, digest: &str) -> Result<Vec<CommitLink>, IndexError>;
    /// Pulls of a tag or digest in a repository.
    fn pulls(&self, repository: &str, reference: &str) -> Result<Option<PullStats>, IndexError>;
    /// Hands every commit link of the digests in `digests` to `visit`, in key order (digest,
    /// commit, source): one scan for whole-index readers like the plan, instead of a lookup per
    /// digest, and without holding them all at once. Disjoint ranges split the work between
    /// threads.
    fn each_commit_link(
        &self,
        digests: DigestRange<'_>,
        visit: &mut dyn FnMut(CommitLink) -> Result<(), IndexError>,
    ) -> Result<(), IndexError>;
    /// Pulls of every tag and digest of `repository` that was pulled: (reference, stats).
    fn repository_pulls(&self, repository: &str) -> Result<Vec<(String, PullStats)>, IndexError>;
    /// Everything a plan reads of `repository` (as `tags`, `manifests`, `repository_pulls` and
    /// `restores` answer), read together: one round trip on a shared engine.
    fn repository_records(&self, repository: &str) -> Result<RepositoryRecords, IndexError>;
    /// Hands every tag, manifest, pull counter, restore and commit link to `visit` once, in
    /// no particular order, from `parts` threads at once, all as of one moment. `Ok(false)`:
    /// the engine reads faster by `repository_records` and `each_commit_link` (sled), and
    /// nothing was visited.
    fn each_record(
        &self,
        _parts: usize,
        _visit: &(dyn Fn(Record) -> Result<(), IndexError> + Sync),
    ) -> Result<bool, IndexError> {
        Ok(false)
    }
    /// What `restore` put back in `repository` (in every repository when `None`), the latest
    /// restore per tag or digest.
    fn restores(&self, repository: Option<&str>) -> Result<Vec<RestoreRecord>, IndexError>;
    /// Where `sync` is (or was).
    fn sync_state(&self) -> Result<Option<SyncState>, IndexError>;
    /// Every audited cleanup step, by run then order.
    fn audit(&self) -> Result<Vec<AuditEntry>, IndexError>;
    /// Up to `limit` audited steps after step `after` (run, seq), by run then order.
    fn audit_page(
        &self,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, IndexError>;
    /// The run holding the cleanup lock, if any.
    fn cleanup_lock(&self) -> Result<Option<CleanupLock>, IndexError>;
    /// How the last cleanup run ended.
    fn last_cleanup(&self) -> Result<Option<CleanupRun>, IndexError>;
    /// Lease `name`, taken or expired.
    fn lease(&self, name: &str) -> Result<Option<Lease>, IndexError>;
    /// Where the log of changes by every writer ends now: `None` when only this process
    /// writes the index (it sees its own writes as it makes them).
    fn change_cursor(&self) -> Result<Option<u64>, IndexError> {
        Ok(None)
    }
    /// What any writer changed after `cursor`: the repositories and linked digests to read
    /// again, and where to go on from.
    fn changes_after(&self, cursor: u64) -> Result<Changes, IndexError> {
        Ok(Changes {
            cursor,
            ..Changes::default()
        })
    }
    /// Makes everything applied so far durable.
    fn flush(&self) -> Result<(), IndexError>;
    /// Starts over from what is durable after writes failed (see `events`, which replays
    /// what was applied since its last successful flush). Nothing to do by default.
    fn recover(&self) -> Result<(), IndexError> {
        Ok(())
    }
    /// How many tag pushes have been applied to `repository` through this handle, for readers
    /// that keep a repository's tags and must notice pushes landing meanwhile (a cleanup run
    /// in `serve`, while the proxy records). `None`: not counted — the store itself, which
    /// nothing else writes while a command holds it.
    fn tag_pushes(&self, _repository: &str) -> Option<u64> {
        None
    }
}

/// What [`Index::changes_after`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub cursor: u64,
    pub repositories: std::collections::BTreeSet<String>,
    /// Digests linked to commits (their repositories hold them).
    pub linked: std::collections::BTreeSet<String>,
    /// The log no longer reaches back that far: read everything again.
    pub lost: bool,
}

pub type SledIndex = Store<SledKv>;
pub type MemoryIndex = Store<MemoryKv>;
pub type PgIndex = Store<postgres::PgKv>;

/// Connects to the shared index in PostgreSQL, migrating its schema first.
pub fn open_postgres(options: &postgres::PgOptions) -> Result<PgIndex, IndexError> {
    Store::new(postgres::PgKv::connect(options)?)
}

/// Opens (or creates) the embedded index at `path`.
pub fn open_sled(path: &Path) -> Result<SledIndex, IndexError> {
    Store::new(SledKv::open(path)?).map_err(|e| match e {
        IndexError::Foreign { why, .. } => IndexError::Foreign {
            path: path.display().to_string(),
            why,
        },
        other => other,
    })
}

/// An empty index in memory (tests, dry runs).
pub fn in_memory() -> MemoryIndex {
    // An empty map always takes the schema version.
    Store::new(MemoryKv::default()).unwrap_or_else(|_| unreachable!("empty memory store"))
}
