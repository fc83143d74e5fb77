//! A repository's snapshot built from its records one at a time, in any order: a whole-index
//! read that streams records as the engine finds them keeps only the compact forms, never a
//! repository's records as read (several times larger).

use std::sync::Arc;

use super::{Digests, Manifest, RepositorySnapshot, Tag};
use crate::{
    index::{ManifestRecord, PullStats, RestoreRecord, TagRecord, UnixMillis},
    policy::HashMap,
};

/// A repository's snapshot while its records arrive.
#[derive(Default)]
pub struct RepositoryBuilder {
    repo: RepositorySnapshot,
    digests: Digests,
    /// When each earlier digest of a tag stopped being tagged by it (from tag histories),
    /// applied to the manifests once all are in.
    replaced: HashMap<Box<str>, UnixMillis>,
    restores: Vec<RestoreRecord>,
}

impl RepositoryBuilder {
    pub fn add_tag(&mut self, record: TagRecord) {
        for previous in &record.history {
            let at = self
                .replaced
                .entry(previous.digest.as_str().into())
                .or_default();
            *at = (*at).max(previous.replaced_at);
        }
        self.repo.tags.push(Tag {
            tag: Arc::from(record.tag),
            digest: self.digests.get(&record.digest),
            first_pushed: record.first_pushed,
            last_pushed: record.last_pushed,
        });
    }

    pub fn add_manifest(&mut self, record: &ManifestRecord) {
        let manifest = Manifest::from_record(record, &mut |d| self.digests.get(d));
        self.repo
            .manifests
            .insert(manifest.digest.clone(), manifest);
    }

    pub fn add_pull(&mut self, reference: String, stats: PullStats) {
        self.repo.pulls.insert(reference.into_boxed_str(), stats);
    }

    pub fn add_restore(&mut self, record: RestoreRecord) {
        self.restores.push(record);
    }

    /// The snapshot, its links not yet attached (see [`RepositorySnapshot::attach_with`]).
    pub fn finish(self) -> RepositorySnapshot {
        let Self {
            mut repo,
            replaced,
            restores,
            ..
        } = self;
        for (digest, at) in replaced {
            if let Some(manifest) = repo.manifests.get_mut(&*digest) {
                manifest.untagged_since = manifest.untagged_since.max(at);
            }
        }
        repo.tags.sort_by(|a, b| a.tag.cmp(&b.tag));
        repo.with_restores(restores)
    }
}
