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
    pub fn read(index: &dyn Index) -> Result<Self, IndexError> {
        let mut snapshot = Self::default();
        for repository in index.repositories()? {
            let mut repo = RepositorySnapshot {
                tags: index.tags(&repository)?,
                ..RepositorySnapshot::default()
            };
            for manifest in index.manifests(&repository)? {
                repo.manifests.insert(manifest.digest.clone(), manifest);
            }
            let mut digests: Vec<String> = repo.tags.iter().map(|t| t.digest.clone()).collect();
            digests.extend(repo.manifests.keys().cloned());
            digests.sort();
            digests.dedup();
            for digest in &digests {
                let links = index.commit_links(digest)?;
                if !links.is_empty() {
                    repo.links.insert(digest.clone(), links);
                }
                if let Some(pulls) = index.pulls(&repository, digest)? {
                    repo.pulls.insert(digest.clone(), pulls);
                }
            }
            for tag in &repo.tags {
                if let Some(pulls) = index.pulls(&repository, &tag.tag)? {
                    repo.pulls.insert(tag.tag.clone(), pulls);
                }
            }
            snapshot.repositories.insert(repository, repo);
        }
        Ok(snapshot)
    }
}
