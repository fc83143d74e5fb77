//! A consistent read of the index for one evaluation: every repository's tags, manifests,
//! commit links and pulls, taken once, so pushes landing meanwhile do not change the plan (they
//! are younger than `pushedWithin` anyway, and the executor re-checks).
//!
//! The shapes here hold only what the rules read, with each digest stored once per repository
//! and shared by the tags, manifests and links that name it: a million tags must fit in memory
//! next to the plan made from them. Repositories sit behind `Arc`s so a mirror of the index
//! (see `planning::Mirror`) can hand out snapshots without copying, and replace one repository
//! when its records change.

use std::{collections::BTreeMap, sync::Arc};

use super::{HashMap, HashSet};
use crate::index::{
    CommitLink, Index, IndexError, ManifestKind, ManifestRecord, PullStats, TagRecord, UnixMillis,
};

/// A digest, shared by everything in a repository snapshot that names it.
pub type Digest = Arc<str>;

const SOURCE: &str = "org.opencontainers.image.source";

/// A tag as the rules see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    /// Shared with the plan's entries for the tag.
    pub tag: Arc<str>,
    pub digest: Digest,
    pub first_pushed: UnixMillis,
    pub last_pushed: UnixMillis,
}

/// A manifest as the rules see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub digest: Digest,
    pub kind: ManifestKind,
    pub total_size: u64,
    /// Child manifests of an index.
    pub children: Box<[Digest]>,
    /// The manifest this one refers to (signatures, SBOMs).
    pub subject: Option<Digest>,
    /// `org.opencontainers.image.source`, from the annotation or else the config label.
    pub source: Option<Box<str>>,
    /// Since when no tag points to it as far as the index knows: the latest moment a tag moved
    /// away from it or was deleted (the record's `untagged_at`, or tag histories for records
    /// written before it existed), or when it was recorded. For a tagged manifest, a lower bound
    /// that the rules do not read.
    pub untagged_since: UnixMillis,
    /// What it refers to (children, subject) is known: a complete record of a kind regkeeper
    /// reads. An opaque or incomplete one may list manifests the index cannot see.
    pub references_known: bool,
}

#[derive(Clone, Debug, Default)]
pub struct RepositorySnapshot {
    /// Ordered by tag name.
    pub tags: Vec<Tag>,
    pub manifests: HashMap<Digest, Manifest>,
    /// Digest → the commits it is linked to.
    pub links: HashMap<Digest, Box<[Box<str>]>>,
    /// Tag or digest → pulls.
    pub pulls: HashMap<Box<str>, PullStats>,
}

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub repositories: BTreeMap<String, Arc<RepositorySnapshot>>,
}

/// One `Arc` per distinct digest string.
#[derive(Default)]
struct Digests(HashMap<Digest, ()>);

impl Digests {
    fn get(&mut self, digest: &str) -> Digest {
        if let Some((shared, ())) = self.0.get_key_value(digest) {
            return shared.clone();
        }
        let shared: Digest = Arc::from(digest);
        self.0.insert(shared.clone(), ());
        shared
    }
}

impl RepositorySnapshot {
    /// Builds a repository's snapshot from its records. `links` gives a digest's commits.
    pub fn from_records(
        tags: Vec<TagRecord>,
        manifests: Vec<ManifestRecord>,
        links: impl FnMut(&str) -> Option<Box<[Box<str>]>>,
        pulls: Vec<(String, PullStats)>,
    ) -> Self {
        let mut digests = Digests::default();
        let mut repo = Self {
            pulls: pulls
                .into_iter()
                .map(|(reference, stats)| (reference.into_boxed_str(), stats))
                .collect(),
            ..Self::default()
        };
        // When each earlier digest of a tag stopped being tagged by it.
        let mut replaced: HashMap<&str, UnixMillis> = HashMap::default();
        for previous in tags.iter().flat_map(|t| &t.history) {
            let at = replaced.entry(previous.digest.as_str()).or_default();
            *at = (*at).max(previous.replaced_at);
        }
        repo.manifests.reserve(manifests.len());
        for record in manifests {
            let mut manifest = Manifest::from_record(&record, &mut |d| digests.get(d));
            if let Some(at) = replaced.get(record.digest.as_str()) {
                manifest.untagged_since = manifest.untagged_since.max(*at);
            }
            repo.manifests.insert(manifest.digest.clone(), manifest);
        }
        repo.tags = tags
            .into_iter()
            .map(|t| Tag {
                tag: Arc::from(t.tag),
                digest: digests.get(&t.digest),
                first_pushed: t.first_pushed,
                last_pushed: t.last_pushed,
            })
            .collect();
        repo.tags.sort_by(|a, b| a.tag.cmp(&b.tag));
        repo.attach_links(links);
        repo
    }

    /// Sets the commit links of every digest the snapshot names.
    fn attach_links(&mut self, mut links: impl FnMut(&str) -> Option<Box<[Box<str>]>>) {
        let named = self
            .manifests
            .keys()
            .chain(self.tags.iter().map(|t| &t.digest))
            .chain(self.manifests.values().flat_map(|m| m.children.iter()))
            .chain(self.manifests.values().filter_map(|m| m.subject.as_ref()));
        let mut found = HashMap::default();
        for digest in named {
            if !found.contains_key(digest)
                && let Some(commits) = links(digest)
            {
                found.insert(digest.clone(), commits);
            }
        }
        self.links = found;
    }

    /// Adds (or replaces) a tag, keeping tags ordered by name.
    pub fn put_tag(&mut self, record: &TagRecord) {
        let tag = Tag {
            tag: Arc::from(record.tag.as_str()),
            digest: self.digest(&record.digest),
            first_pushed: record.first_pushed,
            last_pushed: record.last_pushed,
        };
        match self.tags.binary_search_by(|t| t.tag.cmp(&tag.tag)) {
            Ok(at) => self.tags[at] = tag,
            Err(at) => self.tags.insert(at, tag),
        }
    }

    /// Adds (or replaces) a manifest.
    pub fn put_manifest(&mut self, record: &ManifestRecord) {
        let manifest = Manifest::from_record(record, &mut |d| self.digest(d));
        self.manifests.insert(manifest.digest.clone(), manifest);
    }

    /// Adds a commit link.
    pub fn put_link(&mut self, link: &CommitLink) {
        let digest = self.digest(&link.digest);
        let mut commits: Vec<Box<str>> = self
            .links
            .remove(&digest)
            .map(Vec::from)
            .unwrap_or_default();
        commits.push(link.commit.as_str().into());
        self.links.insert(digest, commits.into());
    }

    /// The shared `Arc` for `digest` when the snapshot already names it.
    fn digest(&self, digest: &str) -> Digest {
        self.manifests
            .get_key_value(digest)
            .map(|(d, _)| d.clone())
            .or_else(|| {
                self.tags
                    .iter()
                    .find(|t| &*t.digest == digest)
                    .map(|t| t.digest.clone())
            })
            .unwrap_or_else(|| Arc::from(digest))
    }
}

impl Manifest {
    fn from_record(record: &ManifestRecord, digest: &mut impl FnMut(&str) -> Digest) -> Self {
        Self {
            digest: digest(&record.digest),
            kind: record.kind,
            total_size: record.total_size,
            children: record.children.iter().map(|c| digest(c)).collect(),
            subject: record.subject.as_deref().map(&mut *digest),
            source: record
                .annotations
                .get(SOURCE)
                .or_else(|| record.labels.get(SOURCE))
                .map(|s| s.as_str().into()),
            untagged_since: record
                .recorded_at
                .max(record.untagged_at.unwrap_or_default()),
            references_known: record.complete && record.kind != ManifestKind::Opaque,
        }
    }
}

impl Snapshot {
    /// Reads the index with whole-prefix scans (tags, manifests and pulls per repository; all
    /// commit links once), spread over the machine's cores: sled's iteration costs per entry,
    /// and a million tags are three million entries.
    pub fn read(index: &dyn Index) -> Result<Self, IndexError> {
        let repositories = index.repositories()?;
        let workers = super::workers();
        let (read, links) = std::thread::scope(|scope| {
            let shares: Vec<_> = (0..workers)
                .map(|worker| {
                    let mine: Vec<&String> =
                        repositories.iter().skip(worker).step_by(workers).collect();
                    // Each repository is made compact as soon as it is read (links come after):
                    // the records as read are several times larger.
                    scope.spawn(move || {
                        mine.into_iter()
                            .map(|repository| {
                                let repo = RepositorySnapshot::from_records(
                                    index.tags(repository)?,
                                    index.manifests(repository)?,
                                    |_| None,
                                    index.repository_pulls(repository)?,
                                );
                                Ok((repository, repo))
                            })
                            .collect::<Result<Vec<_>, IndexError>>()
                    })
                })
                .collect();
            let links = all_links(index);
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
        let links = links?;
        let mut snapshot = Self::default();
        for share in read {
            for (repository, mut repo) in share? {
                repo.attach_links(|digest| links.get(digest).cloned());
                snapshot
                    .repositories
                    .insert(repository.clone(), Arc::new(repo));
            }
        }
        Ok(snapshot)
    }

    /// One repository, read afresh (a mirror's refresh after writes to it). Links of digests
    /// `known` already held are taken from it unless `relinked` names them: links are only
    /// ever added, and each addition is named there.
    pub fn read_repository(
        index: &dyn Index,
        repository: &str,
        known: Option<&RepositorySnapshot>,
        relinked: &HashSet<String>,
    ) -> Result<RepositorySnapshot, IndexError> {
        let tags = index.tags(repository)?;
        let manifests = index.manifests(repository)?;
        let pulls = index.repository_pulls(repository)?;
        let mut failed = None;
        let repo = RepositorySnapshot::from_records(
            tags,
            manifests,
            |digest| {
                if let Some(known) = known.filter(|_| !relinked.contains(digest))
                    && (known.manifests.contains_key(digest) || known.links.contains_key(digest))
                {
                    return known.links.get(digest).cloned();
                }
                match index.commit_links(digest) {
                    Ok(links) if links.is_empty() => None,
                    Ok(links) => Some(commits(links.into_iter().map(|l| l.commit))),
                    Err(e) => {
                        failed.get_or_insert(e);
                        None
                    }
                }
            },
            pulls,
        );
        match failed {
            Some(e) => Err(e),
            None => Ok(repo),
        }
    }
}

/// Each linked commit once, in the order given.
fn commits(found: impl Iterator<Item = String>) -> Box<[Box<str>]> {
    let mut commits: Vec<Box<str>> = Vec::new();
    for commit in found {
        if !commits.iter().any(|c| **c == *commit) {
            commits.push(commit.into_boxed_str());
        }
    }
    commits.into()
}

/// A digest's linked commits.
type Commits = Box<[Box<str>]>;

/// Digest → commits, for every link in the index.
fn all_links(index: &dyn Index) -> Result<HashMap<Box<str>, Commits>, IndexError> {
    let mut by_digest: HashMap<Box<str>, Box<[Box<str>]>> = HashMap::default();
    index.each_commit_link(&mut |link| {
        match by_digest.get_mut(link.digest.as_str()) {
            // Links come in key order, so a digest's commits arrive together; repeats (one
            // commit learned from several sources) are stored once.
            Some(commits) if !commits.iter().any(|c| **c == *link.commit) => {
                let mut grown = std::mem::take(commits).into_vec();
                grown.push(link.commit.into_boxed_str());
                *commits = grown.into_boxed_slice();
            }
            Some(_) => {}
            None => {
                by_digest.insert(
                    link.digest.into_boxed_str(),
                    Box::new([link.commit.into_boxed_str()]),
                );
            }
        }
        Ok(())
    })?;
    Ok(by_digest)
}
