//! The index as the plan reads it, kept in memory by `serve`: a [`Snapshot`] that is read from
//! the index once and then refreshed only where writes landed, so an evaluation over a million
//! tags starts from memory instead of re-reading millions of sled entries.
//!
//! [`Mirror`] is itself an [`Index`]: every write goes through it to the index underneath and
//! marks the repositories it touched. [`Mirror::snapshot`] re-reads the marked repositories
//! (with the same reads a full snapshot uses, so the index's semantics live in one place) and
//! hands out the repositories by `Arc`: a snapshot costs no copy, and later writes replace
//! repositories in the mirror without changing a snapshot already handed out.
//!
//! Owns: the mirror and its dirty marks, and reading snapshots from the index (`read`: the I/O
//! the policy's plain data needs; `whole`: the same in one unordered pass, where the engine offers it; `links`: the whole
//! index's commit links while it is read).
//! May call: `index`, `policy::snapshot`.

mod links;
pub mod read;
#[cfg(test)]
mod shared;
mod whole;

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use crate::{
    index::{
        AuditEntry, CommitLink, DigestRange, Index, IndexError, ManifestRecord, PullStats,
        RestoreRecord, SyncState, TagRecord, Write,
    },
    policy::{HashSet, Snapshot},
};

pub struct Mirror {
    index: Arc<dyn Index>,
    state: Mutex<State>,
    /// One refresh at a time (the state lock is not held while reading the index).
    refreshing: Mutex<()>,
    /// Repository → tag pushes applied (see [`Index::tag_pushes`]).
    pushes: Mutex<HashMap<String, u64>>,
}

#[derive(Default)]
struct State {
    /// `None` until the first snapshot is read.
    snapshot: Option<Snapshot>,
    /// Repositories written since their last read.
    dirty: BTreeSet<String>,
    /// Digests linked to commits since the last refresh.
    linked: HashSet<String>,
    /// Where the index's change log was read to (a shared index, which other processes
    /// write too).
    cursor: Option<u64>,
}

impl Mirror {
    pub fn new(index: Arc<dyn Index>) -> Self {
        Self {
            index,
            state: Mutex::new(State::default()),
            refreshing: Mutex::new(()),
            pushes: Mutex::new(HashMap::new()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the first full read is done.
    pub fn is_warm(&self) -> bool {
        self.state().snapshot.is_some()
    }

    /// The index as of now: the first call reads it whole, later calls re-read only the
    /// repositories written since.
    pub fn snapshot(&self) -> Result<Snapshot, IndexError> {
        let _turn = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        let cursor = self.state().cursor;
        if !self.is_warm() {
            // Marks made during the read stay: the next refresh reads those repositories again.
            {
                let mut state = self.state();
                state.dirty.clear();
                state.linked.clear();
            }
            let started = std::time::Instant::now();
            // Taken first: what others write during the read is read again next time.
            let cursor = self.index.change_cursor()?;
            let whole = read::snapshot(self.index.as_ref())?;
            tracing::info!(
                repositories = whole.repositories.len(),
                seconds = started.elapsed().as_secs_f64(),
                "index mirror read"
            );
            let mut state = self.state();
            state.snapshot = Some(whole);
            state.cursor = cursor;
        } else if let Some(cursor) = cursor {
            let changes = self.index.changes_after(cursor)?;
            let mut state = self.state();
            if changes.lost {
                tracing::warn!(
                    "the index's change log was pruned past this replica's copy; reading it whole again"
                );
                state.snapshot = None;
                drop(state);
                drop(_turn);
                return self.snapshot();
            }
            state.dirty.extend(changes.repositories);
            state.linked.extend(changes.linked);
            state.cursor = Some(changes.cursor);
        }
        let (mut dirty, linked, current) = {
            let mut state = self.state();
            let dirty = std::mem::take(&mut state.dirty);
            let linked = std::mem::take(&mut state.linked);
            (dirty, linked, state.snapshot.clone().unwrap_or_default())
        };
        if !linked.is_empty() {
            // A link names only a digest: refresh every repository that holds it.
            for (name, repo) in &current.repositories {
                if linked
                    .iter()
                    .any(|d| repo.manifests.contains_key(d.as_str()))
                {
                    dirty.insert(name.clone());
                }
            }
        }
        let mut fresh = Vec::with_capacity(dirty.len());
        for repository in &dirty {
            let known = current.repositories.get(repository).map(Arc::as_ref);
            match read::repository(self.index.as_ref(), repository, known, &linked) {
                Ok(repo) => fresh.push((repository, repo)),
                Err(e) => {
                    // Not read: stays marked, so the next snapshot tries again.
                    let mut state = self.state();
                    state.dirty.extend(dirty.iter().cloned());
                    state.linked.extend(linked);
                    return Err(e);
                }
            }
        }
        let mut state = self.state();
        let snapshot = state.snapshot.get_or_insert_with(Snapshot::default);
        for (repository, repo) in fresh {
            if repo.tags.is_empty() && repo.manifests.is_empty() && repo.pulls.is_empty() {
                snapshot.repositories.remove(repository);
            } else {
                snapshot
                    .repositories
                    .insert(repository.clone(), Arc::new(repo));
            }
        }
        Ok(snapshot.clone())
    }

    /// What a batch applied through the mirror changes in it.
    fn applied(&self, writes: &[Write]) {
        self.mark(writes);
        let mut pushes = self.pushes.lock().unwrap_or_else(|e| e.into_inner());
        for write in writes {
            if let Write::PushTag { repository, .. } = write {
                match pushes.get_mut(repository) {
                    Some(count) => *count += 1,
                    None => {
                        pushes.insert(repository.clone(), 1);
                    }
                }
            }
        }
    }

    fn mark(&self, writes: &[Write]) {
        let mut state = self.state();
        if state.snapshot.is_none() && self.refreshing.try_lock().is_ok() {
            // Nothing read yet and no read under way: the first read will see these writes.
            return;
        }
        // Links name only a digest; most arrive with the manifest (or config) they describe.
        let named: HashMap<&str, &String> = writes
            .iter()
            .filter_map(|w| match w {
                Write::PutManifest(record) => Some((record.digest.as_str(), &record.repository)),
                Write::PushTag {
                    repository, digest, ..
                }
                | Write::SetConfig {
                    repository, digest, ..
                } => Some((digest.as_str(), repository)),
                _ => None,
            })
            .collect();
        for write in writes {
            let repository = match write {
                Write::PushTag { repository, .. }
                | Write::DeleteManifest { repository, .. }
                | Write::DeleteTag { repository, .. }
                | Write::DeleteChecked { repository, .. }
                | Write::SetConfig { repository, .. }
                | Write::ForgetTag { repository, .. }
                | Write::RecordPulls { repository, .. } => repository,
                Write::PutManifest(record) => &record.repository,
                Write::Restored(record) => &record.repository,
                Write::LinkCommit(link) => {
                    // The digest's links are re-read at the next refresh (others are reused).
                    state.linked.insert(link.digest.clone());
                    match link
                        .repository
                        .as_ref()
                        .or(named.get(link.digest.as_str()).copied())
                    {
                        Some(repository) => repository,
                        None => continue,
                    }
                }
                Write::SyncProgress(_)
                | Write::Audit(_)
                | Write::CleanupLock(_)
                | Write::CleanupRan(_)
                | Write::TakeLease { .. }
                | Write::DropLease { .. }
                | Write::Fence { .. } => continue,
            };
            if !state.dirty.contains(repository) {
                state.dirty.insert(repository.clone());
            }
        }
    }
}

impl Index for Mirror {
    fn apply(&self, writes: &[Write]) -> Result<(), IndexError> {
        self.index.apply(writes)?;
        self.applied(writes);
        Ok(())
    }

    fn apply_each(&self, batches: &[Vec<Write>]) -> (usize, Result<(), IndexError>) {
        let (done, result) = self.index.apply_each(batches);
        batches[..done]
            .iter()
            .for_each(|writes| self.applied(writes));
        (done, result)
    }

    fn tag_pushes(&self, repository: &str) -> Option<u64> {
        let pushes = self.pushes.lock().unwrap_or_else(|e| e.into_inner());
        Some(pushes.get(repository).copied().unwrap_or(0))
    }

    fn repositories(&self) -> Result<Vec<String>, IndexError> {
        self.index.repositories()
    }

    fn tags(&self, repository: &str) -> Result<Vec<TagRecord>, IndexError> {
        self.index.tags(repository)
    }

    fn tags_page(
        &self,
        repository: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TagRecord>, IndexError> {
        self.index.tags_page(repository, after, limit)
    }

    fn tag(&self, repository: &str, tag: &str) -> Result<Option<TagRecord>, IndexError> {
        self.index.tag(repository, tag)
    }

    fn manifests(&self, repository: &str) -> Result<Vec<ManifestRecord>, IndexError> {
        self.index.manifests(repository)
    }

    fn manifests_page(
        &self,
        repository: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ManifestRecord>, IndexError> {
        self.index.manifests_page(repository, after, limit)
    }

    fn manifest(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<Option<ManifestRecord>, IndexError> {
        self.index.manifest(repository, digest)
    }

    fn manifests_of(
        &self,
        wanted: &[(&str, &str)],
    ) -> Result<Vec<Option<ManifestRecord>>, IndexError> {
        self.index.manifests_of(wanted)
    }

    fn commit_links(&self, digest: &str) -> Result<Vec<CommitLink>, IndexError> {
        self.index.commit_links(digest)
    }

    fn pulls(&self, repository: &str, reference: &str) -> Result<Option<PullStats>, IndexError> {
        self.index.pulls(repository, reference)
    }

    fn each_commit_link(
        &self,
        digests: DigestRange<'_>,
        visit: &mut dyn FnMut(CommitLink) -> Result<(), IndexError>,
    ) -> Result<(), IndexError> {
        self.index.each_commit_link(digests, visit)
    }

    fn repository_records(
        &self,
        repository: &str,
    ) -> Result<crate::index::RepositoryRecords, IndexError> {
        self.index.repository_records(repository)
    }

    fn repository_pulls(&self, repository: &str) -> Result<Vec<(String, PullStats)>, IndexError> {
        self.index.repository_pulls(repository)
    }

    fn sync_state(&self) -> Result<Option<SyncState>, IndexError> {
        self.index.sync_state()
    }

    fn restores(&self, repository: Option<&str>) -> Result<Vec<RestoreRecord>, IndexError> {
        self.index.restores(repository)
    }

    fn audit(&self) -> Result<Vec<AuditEntry>, IndexError> {
        self.index.audit()
    }

    fn audit_page(
        &self,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, IndexError> {
        self.index.audit_page(after, limit)
    }

    fn cleanup_lock(&self) -> Result<Option<crate::index::CleanupLock>, IndexError> {
        self.index.cleanup_lock()
    }

    fn last_cleanup(&self) -> Result<Option<crate::index::CleanupRun>, IndexError> {
        self.index.last_cleanup()
    }

    fn lease(&self, name: &str) -> Result<Option<crate::index::Lease>, IndexError> {
        self.index.lease(name)
    }

    fn change_cursor(&self) -> Result<Option<u64>, IndexError> {
        self.index.change_cursor()
    }

    fn changes_after(&self, cursor: u64) -> Result<crate::index::Changes, IndexError> {
        self.index.changes_after(cursor)
    }

    fn flush(&self) -> Result<(), IndexError> {
        self.index.flush()
    }

    fn recover(&self) -> Result<(), IndexError> {
        self.index.recover()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{LinkSource, ManifestKind, UnixMillis, in_memory};

    fn push(repository: &str, tag: &str, digest: &str) -> Vec<Write> {
        vec![
            Write::PutManifest(ManifestRecord {
                kind: ManifestKind::Image,
                ..ManifestRecord::bare(repository, digest, "x", UnixMillis(1))
            }),
            Write::push(repository, tag, digest, UnixMillis(1)),
        ]
    }

    fn link(digest: &str, commit: &str) -> Write {
        Write::LinkCommit(CommitLink {
            digest: digest.into(),
            commit: commit.into(),
            source: LinkSource::Label("vcs-ref".into()),
            learned_at: UnixMillis(1),
            repository: None,
            tag: None,
        })
    }

    fn tags(snapshot: &Snapshot, repository: &str) -> Vec<String> {
        snapshot
            .repositories
            .get(repository)
            .map_or(Vec::new(), |r| {
                r.tags
                    .iter()
                    .map(|t| format!("{}={}", t.tag, t.digest))
                    .collect()
            })
    }

    #[test]
    fn snapshots_follow_writes_and_stay_as_they_were_handed_out() {
        let mirror = Mirror::new(Arc::new(in_memory()));
        mirror.apply(&push("a", "v1", "sha256:1")).unwrap();
        let first = mirror.snapshot().unwrap();
        assert_eq!(tags(&first, "a"), ["v1=sha256:1"]);

        mirror.apply(&push("a", "v1", "sha256:2")).unwrap();
        mirror.apply(&push("b", "latest", "sha256:3")).unwrap();
        let second = mirror.snapshot().unwrap();
        assert_eq!(tags(&second, "a"), ["v1=sha256:2"]);
        assert_eq!(tags(&second, "b"), ["latest=sha256:3"]);
        // What was handed out earlier is unchanged.
        assert_eq!(tags(&first, "a"), ["v1=sha256:1"]);
        assert!(!first.repositories.contains_key("b"));
        // An untouched repository is shared, not copied.
        mirror.apply(&push("b", "next", "sha256:4")).unwrap();
        let third = mirror.snapshot().unwrap();
        assert!(Arc::ptr_eq(
            &second.repositories["a"],
            &third.repositories["a"]
        ));

        // A link that arrives alone (a label read later, the link API) still reaches the
        // repository holding the digest.
        mirror.apply(&[link("sha256:4", "abcdef0")]).unwrap();
        let fourth = mirror.snapshot().unwrap();
        assert_eq!(
            &*fourth.repositories["b"].links["sha256:4"][0].commit,
            "abcdef0"
        );

        // Deleting the last manifests removes the repository.
        let delete = |digest: &str| Write::DeleteManifest {
            repository: "a".into(),
            digest: digest.into(),
        };
        mirror
            .apply(&[delete("sha256:1"), delete("sha256:2")])
            .unwrap();
        let fifth = mirror.snapshot().unwrap();
        assert!(
            !fifth.repositories.contains_key("a"),
            "{:?}",
            tags(&fifth, "a")
        );
    }

    #[test]
    fn the_mirror_equals_a_fresh_read_of_the_index() {
        let index: Arc<dyn Index> = Arc::new(in_memory());
        let mirror = Mirror::new(index.clone());
        mirror.snapshot().unwrap();
        for i in 0..50 {
            let repository = format!("r{}", i % 7);
            // Short digests sit on the readers' range bounds; long ones spread over them.
            let digest = match i % 2 {
                0 => format!("sha256:{}", i % 13),
                _ => format!("sha256:{:x}{:063x}", i % 16, i % 5),
            };
            let mut writes = push(&repository, &format!("t{}", i % 11), &digest);
            writes.push(link(&digest, &format!("{:07x}", i)));
            mirror.apply(&writes).unwrap();
            if i % 9 == 0 {
                mirror
                    .apply(&[Write::DeleteTag {
                        repository,
                        tag: format!("t{}", i % 5),
                        at: UnixMillis(i as u64),
                    }])
                    .unwrap();
            }
        }
        let mirrored = mirror.snapshot().unwrap();
        let fresh = super::read::snapshot(index.as_ref()).unwrap();
        let shape = |s: &Snapshot| {
            s.repositories
                .iter()
                .map(|(name, r)| {
                    let mut links: Vec<String> =
                        r.links.iter().map(|(d, c)| format!("{d}:{c:?}")).collect();
                    links.sort();
                    let mut manifests: Vec<String> =
                        r.manifests.keys().map(|d| d.to_string()).collect();
                    manifests.sort();
                    (name.clone(), tags(s, name), manifests, links)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(shape(&mirrored), shape(&fresh));
    }

    #[test]
    fn a_whole_read_with_an_unreadable_link_fails_instead_of_waiting() {
        use crate::index::{MemoryKv, Store};
        // In one unordered pass (the in-memory twin offers it) and by ranges (sled).
        unreadable_link_fails(Store::new(MemoryKv::default()).unwrap());
        let dir = tempfile::tempdir().unwrap();
        unreadable_link_fails(crate::index::open_sled(&dir.path().join("index")).unwrap());
    }

    fn unreadable_link_fails<K: crate::index::KvStore + 'static>(index: crate::index::Store<K>) {
        let digest = format!("sha256:7{:063x}", 1);
        let mut writes = push("a", "t", &digest);
        writes.push(link(&digest, "abcdef0"));
        index.apply(&writes).unwrap();
        // One link range cannot be read; every other reader would wait for it.
        let mut key = b"c".to_vec();
        key.extend_from_slice(digest.as_bytes());
        key.extend_from_slice(b"\0garbage");
        index
            .kv_for_tests()
            .apply(vec![(key, Some(b"\x01{not json".to_vec()))])
            .unwrap();
        // A reader that waits forever is the failure: give up on it long before CI would.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(super::read::snapshot(&index).err().map(|e| e.to_string()));
        });
        let error = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the whole read returns instead of waiting for the link it failed to read")
            .expect("an unreadable link is an error");
        assert!(error.contains("unreadable"), "{error}");
    }

    /// A whole read in one pass that fails (every connection taken) is done again by ranges:
    /// the same snapshot.
    #[test]
    fn a_whole_read_that_fails_in_one_pass_is_read_by_ranges() {
        use crate::index::{Store, faulty::FaultyKv};
        let index = Store::new(FaultyKv::default()).unwrap();
        for (n, repository) in ["a", "b/c"].into_iter().enumerate() {
            let digest = format!("sha256:{n}{:063x}", 1);
            let mut writes = push(repository, "t", &digest);
            writes.push(link(&digest, "abcdef0"));
            index.apply(&writes).unwrap();
        }
        let in_one_pass = super::read::snapshot(&index).unwrap();
        index.kv_for_tests().set_whole_reads_fail(true);
        let by_ranges = super::read::snapshot(&index).unwrap();
        assert_eq!(
            in_one_pass.repositories.keys().collect::<Vec<_>>(),
            by_ranges.repositories.keys().collect::<Vec<_>>()
        );
        for (name, a) in &in_one_pass.repositories {
            let b = &by_ranges.repositories[name];
            assert_eq!(a.tags, b.tags);
            assert_eq!(a.manifests, b.manifests);
            assert_eq!(a.links, b.links);
            assert_eq!(a.pulls, b.pulls);
            assert_eq!(a.restored, b.restored);
        }
        let repo = &by_ranges.repositories["b/c"];
        assert_eq!(repo.tags.len(), 1);
        assert_eq!(repo.links.len(), 1);
    }
}
