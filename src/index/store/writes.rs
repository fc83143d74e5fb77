//! What each [`Write`] means to the stored records (tag history, delete by digest, untagged
//! times, pull counters), applied to a batch being built.

use super::*;

/// Keys of one batch, hashed fast: they are the index's own (tens of thousands per batch).
type KeyMap = HashMap<Vec<u8>, Option<Vec<u8>>, foldhash::fast::RandomState>;

/// A batch being built: later writes see earlier ones.
pub(super) struct Pending<'a> {
    kv: &'a dyn KvRead,
    changes: KeyMap,
    order: Vec<Vec<u8>>,
    /// What this batch read of the store: writes that would leave a key as read are dropped,
    /// so concurrent writers of a shared engine conflict only where something changes.
    read: KeyMap,
}

impl<'a> Pending<'a> {
    pub(super) fn new(kv: &'a dyn KvRead) -> Self {
        Self {
            kv,
            changes: KeyMap::default(),
            order: Vec::new(),
            read: KeyMap::default(),
        }
    }

    /// Reads in one go the keys `writes` will look at first (a hint: any other read still
    /// goes to the store).
    pub(super) fn prefetch(&mut self, writes: &[Write]) -> Result<(), IndexError> {
        let mut keys: Vec<Vec<u8>> = writes.iter().flat_map(first_reads).collect();
        keys.sort();
        keys.dedup();
        keys.retain(|k| !self.read.contains_key(k));
        if keys.is_empty() {
            return Ok(());
        }
        let values = self.kv.get_many(&keys)?;
        self.read.extend(keys.into_iter().zip(values));
        Ok(())
    }

    pub(super) fn get<T: DeserializeOwned>(&mut self, key: &[u8]) -> Result<Option<T>, IndexError> {
        let bytes = match self.changes.get(key) {
            Some(value) => value.as_deref(),
            None => {
                if !self.read.contains_key(key) {
                    let value = self.kv.get(key)?;
                    self.read.insert(key.to_vec(), value);
                }
                self.read.get(key).and_then(|v| v.as_deref())
            }
        };
        bytes.map(|v| decode(key, v)).transpose()
    }

    pub(super) fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
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

    /// Keys under `prefix` as the batch would leave them; what the scan read is remembered, so
    /// reading those keys next costs no further trip to the store.
    fn keys_under(&mut self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, IndexError> {
        let mut keys = Vec::new();
        for (k, v) in self.kv.scan(prefix)? {
            if !matches!(self.changes.get(&k), Some(None)) {
                keys.push(k.clone());
            }
            self.read.entry(k).or_insert(Some(v));
        }
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
        let read = self.read;
        self.order
            .into_iter()
            .filter_map(|k| {
                let v = self.changes.remove(&k).flatten();
                let unchanged = read.get(&k).is_some_and(|known| *known == v);
                (!unchanged).then_some((k, v))
            })
            .collect()
    }
}

/// The keys a write reads before anything else.
fn first_reads(write: &Write) -> Vec<Vec<u8>> {
    match write {
        Write::PushTag {
            repository, tag, ..
        } => vec![key(TAG, &[repository, tag]), key(REPOSITORY, &[repository])],
        Write::PutManifest(record) => vec![
            key(MANIFEST, &[&record.repository, &record.digest]),
            key(REPOSITORY, &[&record.repository]),
        ],
        Write::SetConfig {
            repository, digest, ..
        } => vec![key(MANIFEST, &[repository, digest])],
        Write::ForgetTag {
            repository, tag, ..
        }
        | Write::DeleteTag {
            repository, tag, ..
        } => vec![key(TAG, &[repository, tag])],
        Write::LinkCommit(link) => vec![link_key(link)],
        Write::RecordPulls {
            repository,
            reference,
            ..
        } => vec![key(PULL, &[repository, reference])],
        Write::TakeLease { name, .. }
        | Write::DropLease { name, .. }
        | Write::Fence { name, .. } => vec![key(LEASE, &[name])],
        _ => Vec::new(),
    }
}

fn note_repository(pending: &mut Pending<'_>, repository: &str) {
    pending.set(key(REPOSITORY, &[repository]), Some(encode(&())));
}

/// A tag stopped pointing to `digest` at `at`: the manifest (if recorded) remembers when.
fn note_untagged(
    pending: &mut Pending<'_>,
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
pub(super) fn apply_one(pending: &mut Pending<'_>, write: &Write) -> Result<(), IndexError> {
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
        Write::TakeLease {
            name,
            holder,
            at,
            until,
            exclusive,
        } => super::lease::take_lease(pending, name, holder, (*at, *until), *exclusive)?,
        Write::DropLease { name, holder } => {
            // Kept, expired: the next holder's epoch still counts up.
            let key = key(LEASE, &[name]);
            if let Some(mut lease) = pending.get::<Lease>(&key)?.filter(|l| l.holder == *holder) {
                lease.expires = UnixMillis(0);
                pending.put(key, &lease);
            }
        }
        Write::Fence {
            name,
            holder,
            epoch,
            at,
        } => super::lease::fence(pending, name, holder, *epoch, *at)?,
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
fn push_tag(
    pending: &mut Pending<'_>,
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
fn put_manifest(pending: &mut Pending<'_>, record: &ManifestRecord) -> Result<(), IndexError> {
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
fn link_commit(pending: &mut Pending<'_>, link: &CommitLink) -> Result<(), IndexError> {
    let key = link_key(link);
    if pending.get::<CommitLink>(&key)?.is_none() {
        pending.put(key, link);
    }
    Ok(())
}

/// Where a commit link is stored: per digest, commit and source; a scoped link also per
/// repository and tag.
fn link_key(link: &CommitLink) -> Vec<u8> {
    let source = link_source_key(&link.source);
    match (&link.repository, &link.tag) {
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
    }
}
