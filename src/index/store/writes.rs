//! What each [`Write`] means to the stored records (tag history, delete by digest, untagged
//! times, pull counters), applied to a batch being built.

use super::*;

/// A batch being built: later writes see earlier ones.
pub(super) struct Pending<'a, K> {
    kv: &'a K,
    changes: HashMap<Vec<u8>, Option<Vec<u8>>>,
    order: Vec<Vec<u8>>,
}

impl<'a, K: KvStore> Pending<'a, K> {
    pub(super) fn new(kv: &'a K) -> Self {
        Self {
            kv,
            changes: HashMap::new(),
            order: Vec::new(),
        }
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, IndexError> {
        match self.changes.get(key) {
            Some(Some(bytes)) => decode(key, bytes).map(Some),
            Some(None) => Ok(None),
            None => self.kv.get(key)?.map(|v| decode(key, &v)).transpose(),
        }
    }

    fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.set(key, Some(encode(value)));
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.set(key, None);
    }

    fn set(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        if self.changes.insert(key.clone(), value).is_none() {
            self.order.push(key);
        }
    }

    /// Keys under `prefix` as the batch would leave them.
    fn keys_under(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, IndexError> {
        let mut keys: Vec<Vec<u8>> = self
            .kv
            .scan(prefix)?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !matches!(self.changes.get(k), Some(None)))
            .collect();
        keys.extend(
            self.changes
                .iter()
                .filter(|(k, v)| k.starts_with(prefix) && v.is_some())
                .map(|(k, _)| k.clone()),
        );
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    pub(super) fn into_writes(mut self) -> Vec<KvWrite> {
        self.order
            .into_iter()
            .map(|k| {
                let v = self.changes.remove(&k).flatten();
                (k, v)
            })
            .collect()
    }
}

fn note_repository<K: KvStore>(pending: &mut Pending<'_, K>, repository: &str) {
    pending.set(key(REPOSITORY, &[repository]), Some(encode(&())));
}

/// A tag stopped pointing to `digest` at `at`: the manifest (if recorded) remembers when.
fn note_untagged<K: KvStore>(
    pending: &mut Pending<'_, K>,
    repository: &str,
    digest: &str,
    at: UnixMillis,
) -> Result<(), IndexError> {
    let key = key(MANIFEST, &[repository, digest]);
    if let Some(mut record) = pending.get::<ManifestRecord>(&key)? {
        record.untagged_at = Some(record.untagged_at.map_or(at, |known| known.max(at)));
        pending.put(key, &record);
    }
    Ok(())
}

/// Long by design: one arm per [`Write`] variant; the arms with more than a few lines are
/// functions of their own.
pub(super) fn apply_one<K: KvStore>(
    pending: &mut Pending<'_, K>,
    write: &Write,
) -> Result<(), IndexError> {
    match write {
        Write::PushTag {
            repository,
            tag,
            digest,
            at,
            only_if_unknown,
        } => push_tag(pending, repository, tag, digest, *at, *only_if_unknown)?,
        Write::PutManifest(record) => put_manifest(pending, record)?,
        Write::SetConfig {
            repository,
            digest,
            facts,
        } => {
            let key = key(MANIFEST, &[repository, digest]);
            if let Some(mut record) = pending.get::<ManifestRecord>(&key)? {
                record.config_read = true;
                record.created = facts.created.clone();
                record.labels = facts.labels.clone();
                if facts.problem.is_some() {
                    record.problem = facts.problem.clone();
                }
                pending.put(key, &record);
            }
        }
        Write::ForgetTag {
            repository,
            tag,
            listed,
        } => {
            let key = key(TAG, &[repository, tag]);
            let stale = pending
                .get::<TagRecord>(&key)?
                .filter(|t| t.last_pushed < *listed);
            if let Some(gone) = stale {
                // Gone some time before the listing: the latest it can have been untagged.
                note_untagged(pending, repository, &gone.digest, *listed)?;
                pending.remove(key);
            }
        }
        Write::SyncProgress(state) => pending.put(SYNC_KEY.to_vec(), state),
        Write::Restored(record) => pending.put(
            key(RESTORE, &[&record.repository, record.reference()]),
            record,
        ),
        Write::Audit(entry) => pending.put(audit_key(&entry.run, entry.seq), entry),
        Write::CleanupLock(Some(lock)) => pending.put(CLEANUP_LOCK_KEY.to_vec(), lock),
        Write::CleanupLock(None) => pending.remove(CLEANUP_LOCK_KEY.to_vec()),
        Write::CleanupRan(run) => pending.put(CLEANUP_RUN_KEY.to_vec(), run),
        Write::LinkCommit(link) => link_commit(pending, link)?,
        Write::DeleteManifest { repository, digest } => {
            pending.remove(key(MANIFEST, &[repository, digest]));
            for tag_key in pending.keys_under(&prefix(TAG, &[repository]))? {
                let points_here = pending
                    .get::<TagRecord>(&tag_key)?
                    .is_some_and(|t| t.digest == *digest);
                if points_here {
                    pending.remove(tag_key);
                }
            }
        }
        Write::DeleteTag {
            repository,
            tag,
            at,
        } => {
            let key = key(TAG, &[repository, tag]);
            if let Some(gone) = pending.get::<TagRecord>(&key)? {
                note_untagged(pending, repository, &gone.digest, *at)?;
            }
            pending.remove(key);
        }
        Write::DeleteChecked {
            repository,
            digest,
            tags,
        } => {
            pending.remove(key(MANIFEST, &[repository, digest]));
            for tag in tags {
                pending.remove(key(TAG, &[repository, tag]));
            }
        }
        Write::RecordPulls {
            repository,
            reference,
            count,
            last,
        } => {
            let key = key(PULL, &[repository, reference]);
            let mut stats = pending.get::<PullStats>(&key)?.unwrap_or_default();
            stats.count = stats.count.saturating_add(*count);
            stats.last_pulled = stats.last_pulled.max(*last);
            pending.put(key, &stats);
        }
    }
    Ok(())
}

/// A tag pushed (again): a new digest moves the old one into the tag's history and marks it
/// untagged; `only_if_unknown` (sync) never overrides what a push recorded.
fn push_tag<K: KvStore>(
    pending: &mut Pending<'_, K>,
    repository: &str,
    tag: &str,
    digest: &str,
    at: UnixMillis,
    only_if_unknown: bool,
) -> Result<(), IndexError> {
    let key = key(TAG, &[repository, tag]);
    let record = match pending.get::<TagRecord>(&key)? {
        Some(_) if only_if_unknown => return Ok(()),
        Some(mut record) => {
            if record.digest != digest {
                note_untagged(pending, repository, &record.digest, at)?;
                record.history.push(PreviousDigest {
                    digest: std::mem::replace(&mut record.digest, digest.to_string()),
                    replaced_at: at,
                });
                let excess = record.history.len().saturating_sub(MAX_TAG_HISTORY);
                record.history.drain(..excess);
            }
            record.last_pushed = record.last_pushed.max(at);
            record
        }
        None => TagRecord {
            repository: repository.to_string(),
            tag: tag.to_string(),
            digest: digest.to_string(),
            first_pushed: at,
            last_pushed: at,
            history: Vec::new(),
        },
    };
    pending.put(key, &record);
    note_repository(pending, repository);
    Ok(())
}

/// A manifest (re)recorded. A digest names immutable content: what was read of its config
/// still holds when the new record has not read it.
fn put_manifest<K: KvStore>(
    pending: &mut Pending<'_, K>,
    record: &ManifestRecord,
) -> Result<(), IndexError> {
    let key = key(MANIFEST, &[&record.repository, &record.digest]);
    let known = pending.get::<ManifestRecord>(&key)?.filter(|known| {
        known.config_read && !record.config_read && known.config_digest == record.config_digest
    });
    match known {
        Some(known) => {
            let mut record = record.clone();
            record.config_read = true;
            record.created = known.created;
            record.labels = known.labels;
            record.problem = record.problem.or(known.problem);
            pending.put(key, &record);
        }
        None => pending.put(key, record),
    }
    note_repository(pending, &record.repository);
    Ok(())
}

/// A commit link, kept as first written. Scoped links are stored per repository and tag: one
/// digest's tags each keep their own evidence.
fn link_commit<K: KvStore>(
    pending: &mut Pending<'_, K>,
    link: &CommitLink,
) -> Result<(), IndexError> {
    let source = link_source_key(&link.source);
    let key = match (&link.repository, &link.tag) {
        (None, _) => key(LINK, &[&link.digest, &link.commit, &source]),
        (Some(repository), tag) => key(
            LINK,
            &[
                &link.digest,
                &link.commit,
                &source,
                repository,
                tag.as_deref().unwrap_or(""),
            ],
        ),
    };
    if pending.get::<CommitLink>(&key)?.is_none() {
        pending.put(key, link);
    }
    Ok(())
}
