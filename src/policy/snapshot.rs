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
    /// Reads the index with whole-prefix scans (tags, manifests and pulls per repository; all
    /// commit links once), spread over the machine's cores: sled's iteration costs per entry,
    /// and a million tags are three million entries.
    pub fn read(index: &dyn Index) -> Result<Self, IndexError> {
        let repositories = index.repositories()?;
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8);
        let (read, links) = std::thread::scope(|scope| {
            let shares: Vec<_> = (0..workers)
                .map(|worker| {
                    let mine: Vec<&String> =
                        repositories.iter().skip(worker).step_by(workers).collect();
                    scope.spawn(move || {
                        mine.into_iter()
                            .map(|repository| {
                                let mut repo = RepositorySnapshot {
                                    tags: index.tags(repository)?,
                                    pulls: index
                                        .repository_pulls(repository)?
                                        .into_iter()
                                        .collect(),
                                    ..RepositorySnapshot::default()
                                };
                                for manifest in index.manifests(repository)? {
                                    repo.manifests.insert(manifest.digest.clone(), manifest);
                                }
                                Ok((repository.clone(), repo))
                            })
                            .collect::<Result<Vec<_>, IndexError>>()
                    })
                })
                .collect();
            let links = index.all_commit_links();
            let read: Vec<_> = shares
                .into_iter()
                .map(|share| {
                    share.join().unwrap_or_else(|_| {
                        Err(IndexError::Engine(
                            "a snapshot reader thread panicked".into(),
                        ))
                    })
                })
                .collect();
            (read, links)
        });
        let mut by_digest: HashMap<String, Vec<CommitLink>> = HashMap::new();
        for link in links? {
            by_digest.entry(link.digest.clone()).or_default().push(link);
        }
        let mut snapshot = Self::default();
        for share in read {
            for (repository, mut repo) in share? {
                let digests = repo
                    .tags
                    .iter()
                    .map(|t| &t.digest)
                    .chain(repo.manifests.keys());
                let mut links = HashMap::new();
                for digest in digests {
                    if let Some(found) = by_digest.get(digest) {
                        links.entry(digest.clone()).or_insert_with(|| found.clone());
                    }
                }
                repo.links = links;
                snapshot.repositories.insert(repository, repo);
            }
        }
        Ok(snapshot)
    }
}
