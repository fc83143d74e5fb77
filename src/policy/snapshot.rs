//! A consistent read of the index for one evaluation: every repository's tags, manifests,
//! commit links and pulls, taken once, so pushes landing meanwhile do not change the plan (they
//! are younger than `pushedWithin` anyway, and the executor re-checks).

use std::collections::{BTreeMap, HashMap};

use crate::index::{CommitLink, Index, IndexError, ManifestRecord, PullStats, TagRecord};

#[derive(Clone, Debug, Default)]
pub struct RepositorySnapshot {
    /// Ordered by tag name.
    pub tags: Vec<TagRecord>,
    pub manifests: HashMap<String, ManifestRecord>,
    /// Digest → its commit links.
    pub links: HashMap<String, Vec<CommitLink>>,
    /// Tag or digest → pulls.
    pub pulls: HashMap<String, PullStats>,
}

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub repositories: BTreeMap<String, RepositorySnapshot>,
}

impl Snapshot {
    /// Reads the index with whole-prefix scans (tags and manifests per repository, all commit
    /// links once, pulls per repository), not a lookup per tag.
    pub fn read(index: &dyn Index) -> Result<Self, IndexError> {
        let mut links: HashMap<String, Vec<CommitLink>> = HashMap::new();
        for link in index.all_commit_links()? {
            links.entry(link.digest.clone()).or_default().push(link);
        }
        let mut snapshot = Self::default();
        for repository in index.repositories()? {
            let mut repo = RepositorySnapshot {
                tags: index.tags(&repository)?,
                pulls: index.repository_pulls(&repository)?.into_iter().collect(),
                ..RepositorySnapshot::default()
            };
            for manifest in index.manifests(&repository)? {
                repo.manifests.insert(manifest.digest.clone(), manifest);
            }
            let digests = repo
                .tags
                .iter()
                .map(|t| &t.digest)
                .chain(repo.manifests.keys());
            for digest in digests {
                if let Some(found) = links.get(digest) {
                    repo.links
                        .entry(digest.clone())
                        .or_insert_with(|| found.clone());
                }
            }
            snapshot.repositories.insert(repository, repo);
        }
        Ok(snapshot)
    }
}
