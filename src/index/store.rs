//! The index semantics, once, over any [`KvStore`]: key layout, versioned values, the schema
//! version, and what each [`Write`] means (tag history, delete by digest, pull counters).

use std::{collections::HashMap, sync::Mutex};

use serde::{Serialize, de::DeserializeOwned};

mod lease;
mod whole;
mod writes;

use writes::{Pending, apply_one};

use super::{
    DigestRange, Index, IndexError, Record, RepositoryRecords, Write,
    kv::{Build, KvPair, KvRead, KvStore, KvWrite},
    model::{
        AuditEntry, CleanupLock, CleanupRun, CommitLink, Lease, LinkSource, ManifestRecord,
        PreviousDigest, PullStats, RestoreRecord, SyncState, TagRecord, UnixMillis,
    },
};

/// The layout this build writes and understands. Bump it with a migration when keys or value
/// shapes change incompatibly.
pub const SCHEMA_VERSION: u32 = 1;
/// Leading byte of every value: which encoding follows.
const VALUE_VERSION: u8 = 1;
/// A tag keeps at most this many earlier digests.
const MAX_TAG_HISTORY: usize = 100;

pub(super) const SCHEMA_KEY: &[u8] = b"\0schema";
const SYNC_KEY: &[u8] = b"\0sync";
const CLEANUP_LOCK_KEY: &[u8] = b"\0cleanup-lock";
const CLEANUP_RUN_KEY: &[u8] = b"\0cleanup-run";
const REPOSITORY: u8 = b'r';
const TAG: u8 = b't';
const MANIFEST: u8 = b'm';
const LINK: u8 = b'c';
const PULL: u8 = b'p';
const AUDIT: u8 = b'a';
const RESTORE: u8 = b'x';
const LEASE: u8 = b'l';

/// `kind` + parts joined by NUL (which no repository, tag, digest or commit contains).
fn key(kind: u8, parts: &[&str]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum::<usize>() + 1);
    key.push(kind);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part.as_bytes());
    }
    key
}

/// The scan prefix for everything under `parts` (a trailing NUL keeps `a` from matching `ab`).
fn prefix(kind: u8, parts: &[&str]) -> Vec<u8> {
    let mut key = key(kind, parts);
    key.push(0);
    key
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Most records are a few hundred bytes: grown from one byte, each would be copied 8 times.
    let mut bytes = Vec::with_capacity(512);
    bytes.push(VALUE_VERSION);
    // Serializing these plain structs to JSON cannot fail.
    serde_json::to_writer(&mut bytes, value).unwrap_or_default();
    bytes
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, IndexError> {
    let shown = || String::from_utf8_lossy(key).replace('\0', "/");
    match bytes.split_first() {
        Some((&VALUE_VERSION, json)) => {
            // Checked as UTF-8 once, not string by string: a whole-index read decodes three
            // million records of a dozen strings each.
            let json = std::str::from_utf8(json)
                .map_err(|e| IndexError::BadRecord(shown(), e.to_string()))?;
            serde_json::from_str(json).map_err(|e| IndexError::BadRecord(shown(), e.to_string()))
        }
        Some((version, _)) => Err(IndexError::BadRecord(
            shown(),
            format!("value version {version}, this build reads {VALUE_VERSION}"),
        )),
        None => Err(IndexError::BadRecord(shown(), "empty value".into())),
    }
}

/// Audit entries sort by run, then by their order in the run.
fn audit_key(run: &str, seq: u64) -> Vec<u8> {
    key(AUDIT, &[run, &format!("{seq:012}")])
}

fn link_source_key(source: &LinkSource) -> String {
    match source {
        LinkSource::Annotation => "annotation".into(),
        LinkSource::Label(name) => format!("label:{name}"),
        LinkSource::TagPattern(name) => format!("tag-pattern:{name}"),
        LinkSource::Api => "api".into(),
    }
}

/// Batches read from the change log per trip.
const CHANGE_PAGE: usize = 10_000;

/// Notes what a changed key means to a reader of the index: its repository, or the digest a
/// commit link is about.
fn changed(key: &[u8], changes: &mut super::Changes) {
    let Some((&kind, rest)) = key.split_first() else {
        return;
    };
    let mut parts = rest.split(|b| *b == 0).map(|p| String::from_utf8_lossy(p));
    match kind {
        REPOSITORY | TAG | MANIFEST | PULL | RESTORE => {
            if let Some(repository) = parts.next() {
                changes.repositories.insert(repository.into_owned());
            }
        }
        LINK => {
            if let Some(digest) = parts.next() {
                changes.linked.insert(digest.into_owned());
            }
            // A scoped link names its repository too (digest, commit, source, repository, tag).
            if let Some(repository) = parts.nth(2) {
                changes.repositories.insert(repository.into_owned());
            }
        }
        _ => {}
    }
}

pub struct Store<K> {
    kv: K,
    /// Batches are read-modify-write: one at a time.
    writer: Mutex<()>,
}

impl<K: KvStore> Store<K> {
    /// Checks (or, for an empty store, writes) the schema version; in one batch, so processes
    /// opening a shared store together agree on what they found.
    pub fn new(kv: K) -> Result<Self, IndexError> {
        kv.transact(&mut |read| match read.get(SCHEMA_KEY)? {
            Some(bytes) => {
                let version = <[u8; 4]>::try_from(bytes.as_slice())
                    .map(u32::from_be_bytes)
                    .map_err(|_| IndexError::BadRecord("schema".into(), "not a version".into()))?;
                if version > SCHEMA_VERSION {
                    return Err(IndexError::NewerSchema {
                        found: version,
                        supported: SCHEMA_VERSION,
                    });
                }
                Ok(Vec::new())
            }
            None if !read.is_empty()? => Err(IndexError::Foreign {
                path: "the database".into(),
                why: "it holds data but no regkeeper schema version".into(),
            }),
            None => Ok(vec![(
                SCHEMA_KEY.to_vec(),
                Some(SCHEMA_VERSION.to_be_bytes().to_vec()),
            )]),
        })?;
        kv.flush()?;
        Ok(Self {
            kv,
            writer: Mutex::new(()),
        })
    }

    #[cfg(test)]
    pub(crate) fn kv_for_tests(&self) -> &K {
        &self.kv
    }

    fn read<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, IndexError> {
        self.kv.get(key)?.map(|v| decode(key, &v)).transpose()
    }

    fn read_page<T: DeserializeOwned>(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<T>, IndexError> {
        self.kv
            .page(prefix, after, limit)?
            .iter()
            .map(|(k, v)| decode(k, v))
            .collect()
    }

    fn read_all<T: DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<T>, IndexError> {
        decode_all(&self.kv.scan(prefix)?)
    }
}

fn decode_all<T: DeserializeOwned>(pairs: &[KvPair]) -> Result<Vec<T>, IndexError> {
    pairs.iter().map(|(k, v)| decode(k, v)).collect()
}

/// Pull counters under `prefix`: (the reference after the prefix, stats).
fn decode_pulls(prefix: &[u8], pairs: &[KvPair]) -> Result<Vec<(String, PullStats)>, IndexError> {
    pairs
        .iter()
        .map(|(k, v)| decode_pull(prefix, k, v))
        .collect()
}

/// One pull counter under `prefix`: (the reference after the prefix, stats).
fn decode_pull(prefix: &[u8], key: &[u8], value: &[u8]) -> Result<(String, PullStats), IndexError> {
    let reference =
        String::from_utf8_lossy(key.get(prefix.len()..).unwrap_or_default()).into_owned();
    decode(key, value).map(|stats| (reference, stats))
}

/// The key-value writes of one batch, from what it reads.
fn build(read: &dyn KvRead, writes: &[Write]) -> Result<Vec<KvWrite>, IndexError> {
    let mut pending = Pending::new(read);
    pending.prefetch(writes)?;
    for write in writes {
        apply_one(&mut pending, write)?;
    }
    Ok(pending.into_writes())
}

impl<K: KvStore> Index for Store<K> {
    fn apply(&self, writes: &[Write]) -> Result<(), IndexError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.kv.transact(&mut |read| build(read, writes))
    }

    fn apply_each(&self, batches: &[Vec<Write>]) -> (usize, Result<(), IndexError>) {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut builds: Vec<_> = batches
            .iter()
            .map(|writes| move |read: &dyn KvRead| build(read, writes))
            .collect();
        let mut builds: Vec<&mut Build<'_>> =
            builds.iter_mut().map(|b| b as &mut Build<'_>).collect();
        self.kv.transact_each(&mut builds)
    }

    fn repositories(&self) -> Result<Vec<String>, IndexError> {
        Ok(self
            .kv
            .scan(&[REPOSITORY])?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k[1..]).into_owned())
            .collect())
    }

    fn tags(&self, repository: &str) -> Result<Vec<TagRecord>, IndexError> {
        self.read_all(&prefix(TAG, &[repository]))
    }

    fn tags_page(
        &self,
        repository: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TagRecord>, IndexError> {
        let after = after.map(|tag| key(TAG, &[repository, tag]));
        self.read_page(&prefix(TAG, &[repository]), after.as_deref(), limit)
    }

    fn tag(&self, repository: &str, tag: &str) -> Result<Option<TagRecord>, IndexError> {
        self.read(&key(TAG, &[repository, tag]))
    }

    fn manifests(&self, repository: &str) -> Result<Vec<ManifestRecord>, IndexError> {
        self.read_all(&prefix(MANIFEST, &[repository]))
    }

    fn manifests_page(
        &self,
        repository: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ManifestRecord>, IndexError> {
        let after = after.map(|digest| key(MANIFEST, &[repository, digest]));
        self.read_page(&prefix(MANIFEST, &[repository]), after.as_deref(), limit)
    }

    fn manifest(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<Option<ManifestRecord>, IndexError> {
        self.read(&key(MANIFEST, &[repository, digest]))
    }

    fn manifests_of(
        &self,
        wanted: &[(&str, &str)],
    ) -> Result<Vec<Option<ManifestRecord>>, IndexError> {
        let keys: Vec<Vec<u8>> = wanted
            .iter()
            .map(|(repository, digest)| key(MANIFEST, &[repository, digest]))
            .collect();
        let values = self.kv.get_many(&keys)?;
        keys.iter()
            .zip(values)
            .map(|(key, value)| value.map(|bytes| decode(key, &bytes)).transpose())
            .collect()
    }

    fn commit_links(&self, digest: &str) -> Result<Vec<CommitLink>, IndexError> {
        self.read_all(&prefix(LINK, &[digest]))
    }

    fn pulls(&self, repository: &str, reference: &str) -> Result<Option<PullStats>, IndexError> {
        self.read(&key(PULL, &[repository, reference]))
    }

    fn each_commit_link(
        &self,
        digests: DigestRange<'_>,
        visit: &mut dyn FnMut(CommitLink) -> Result<(), IndexError>,
    ) -> Result<(), IndexError> {
        // A link's key is its digest then NUL (below any byte of a digest), so keys order as
        // their digests do against a bound that has no NUL.
        let start = digests.from.map_or_else(|| vec![LINK], |d| key(LINK, &[d]));
        let end = digests
            .until
            .map_or_else(|| vec![LINK + 1], |d| key(LINK, &[d]));
        self.kv
            .each_in(&start, Some(&end), &mut |k, v| visit(decode(k, v)?))
    }

    fn repository_pulls(&self, repository: &str) -> Result<Vec<(String, PullStats)>, IndexError> {
        let prefix = prefix(PULL, &[repository]);
        decode_pulls(&prefix, &self.kv.scan(&prefix)?)
    }

    fn each_record(
        &self,
        parts: usize,
        visit: &(dyn Fn(Record) -> Result<(), IndexError> + Sync),
    ) -> Result<bool, IndexError> {
        self.kv
            .each_unordered(parts, &|k, v| whole::record(k, v)?.map_or(Ok(()), visit))
    }

    fn repository_records(&self, repository: &str) -> Result<RepositoryRecords, IndexError> {
        let pulls_prefix = prefix(PULL, &[repository]);
        let prefixes = [
            prefix(TAG, &[repository]),
            prefix(MANIFEST, &[repository]),
            pulls_prefix.clone(),
            prefix(RESTORE, &[repository]),
        ];
        let mut records = RepositoryRecords::default();
        self.kv.each_under(&prefixes, &mut |n, k, v| {
            match n {
                0 => records.tags.push(decode(k, v)?),
                1 => records.manifests.push(decode(k, v)?),
                2 => records.pulls.push(decode_pull(&pulls_prefix, k, v)?),
                _ => records.restores.push(decode(k, v)?),
            }
            Ok(())
        })?;
        Ok(records)
    }

    fn sync_state(&self) -> Result<Option<SyncState>, IndexError> {
        self.read(SYNC_KEY)
    }

    fn restores(&self, repository: Option<&str>) -> Result<Vec<RestoreRecord>, IndexError> {
        match repository {
            Some(repository) => self.read_all(&prefix(RESTORE, &[repository])),
            None => self.read_all(&[RESTORE]),
        }
    }

    fn audit(&self) -> Result<Vec<AuditEntry>, IndexError> {
        self.read_all(&[AUDIT])
    }

    fn audit_page(
        &self,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, IndexError> {
        let after = after.map(|(run, seq)| audit_key(run, seq));
        self.read_page(&[AUDIT], after.as_deref(), limit)
    }

    fn cleanup_lock(&self) -> Result<Option<CleanupLock>, IndexError> {
        self.read(CLEANUP_LOCK_KEY)
    }

    fn last_cleanup(&self) -> Result<Option<CleanupRun>, IndexError> {
        self.read(CLEANUP_RUN_KEY)
    }

    fn lease(&self, name: &str) -> Result<Option<Lease>, IndexError> {
        self.read(&key(LEASE, &[name]))
    }

    fn change_cursor(&self) -> Result<Option<u64>, IndexError> {
        self.kv.change_cursor()
    }

    fn changes_after(&self, cursor: u64) -> Result<super::Changes, IndexError> {
        let mut changes = super::Changes {
            cursor,
            ..Default::default()
        };
        loop {
            let page = self.kv.changes_after(changes.cursor, CHANGE_PAGE)?;
            changes.lost |= page.lost;
            for key in &page.keys {
                changed(key, &mut changes);
            }
            let done = page.cursor == changes.cursor;
            changes.cursor = page.cursor;
            if done {
                return Ok(changes);
            }
        }
    }

    fn flush(&self) -> Result<(), IndexError> {
        self.kv.flush()
    }

    fn recover(&self) -> Result<(), IndexError> {
        self.kv.reopen()
    }
}
