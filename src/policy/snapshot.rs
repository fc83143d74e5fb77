//! A consistent read of the index for one evaluation: every repository's tags, manifests,
//! commit links and pulls, taken once, so pushes landing meanwhile do not change the plan (they
//! are younger than `pushedWithin` anyway, and the executor re-checks). Plain data: it is read
//! from the index by `mirror::read`, and built from records directly by tests.
//!
//! The shapes here hold only what the rules read, with each digest stored once per repository
//! and shared by the tags, manifests and links that name it: a million tags must fit in memory
//! next to the plan made from them. Repositories sit behind `Arc`s so a mirror of the index
//! (see `planning::Mirror`) can hand out snapshots without copying, and replace one repository
//! when its records change.

use std::{collections::BTreeMap, sync::Arc};

use super::HashMap;
use crate::index::{
    CommitLink, LinkSource, ManifestKind, ManifestRecord, PullStats, RestoreRecord, TagRecord,
    UnixMillis,
};
use crate::manifest::SOURCE;

mod builder;
pub use builder::RepositoryBuilder;

/// A digest, shared by everything in a repository snapshot that names it.
pub type Digest = Arc<str>;

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

/// A commit a digest is linked to, as the evidence applies in one repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkFact {
    pub commit: Box<str>,
    /// `None`: about the digest (every tag on it); a tag: about that tag only.
    pub tag: Option<Box<str>>,
}

impl LinkFact {
    /// Evidence about the digest itself.
    pub fn image(commit: &str) -> Self {
        Self {
            commit: commit.into(),
            tag: None,
        }
    }
}

/// A digest's commit links as the index holds them, before they are scoped to a repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    pub commit: Box<str>,
    pub scope: LinkScope,
}

/// What a stored link speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkScope {
    /// The image's own annotation or labels: the digest, in every repository.
    Image,
    /// The digest in this repository (the link API naming a digest).
    Repository(Box<str>),
    /// This tag of this repository (a tag pattern, the link API naming a tag).
    Tag(Box<str>, Box<str>),
    /// A tag-pattern link written before links were scoped: it speaks for the tags on the
    /// digest that this pattern matches with this commit.
    LegacyTagPattern(Box<str>),
    /// A link API call written before links were scoped: which tag or repository it spoke
    /// for is unknown, so it speaks for none.
    LegacyApi,
}

impl From<CommitLink> for Evidence {
    fn from(link: CommitLink) -> Self {
        let scope = match (link.repository, link.tag, link.source) {
            (Some(repository), Some(tag), _) => LinkScope::Tag(repository.into(), tag.into()),
            (Some(repository), None, _) => LinkScope::Repository(repository.into()),
            (None, _, LinkSource::Annotation | LinkSource::Label(_)) => LinkScope::Image,
            (None, _, LinkSource::TagPattern(pattern)) => {
                LinkScope::LegacyTagPattern(pattern.into())
            }
            (None, _, LinkSource::Api) => LinkScope::LegacyApi,
        };
        Self {
            commit: link.commit.into(),
            scope,
        }
    }
}

/// Evidence for one digest, as read from the index.
pub type Evidences = Box<[Evidence]>;

#[derive(Clone, Debug, Default)]
pub struct RepositorySnapshot {
    /// Ordered by tag name.
    pub tags: Vec<Tag>,
    pub manifests: HashMap<Digest, Manifest>,
    /// Digest → the commits it is linked to, scoped to this repository: evidence about the
    /// digest, or about one tag (which counts only while that tag points to the digest).
    pub links: HashMap<Digest, Box<[LinkFact]>>,
    /// Tag or digest → pulls.
    pub pulls: HashMap<Box<str>, PullStats>,
    /// Tag or digest → the latest time `restore` put it back.
    pub restored: HashMap<Box<str>, Restored>,
}

/// A restore, as the rules see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// What was put back (a tag restored onto this digest is protected only while it
    /// points there).
    pub digest: Box<str>,
    pub at: UnixMillis,
    /// The cleanup run it came back from.
    pub from_run: Box<str>,
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
    /// Builds the snapshot of `repository` from its records. `links` gives a digest's stored
    /// links, which are scoped to this repository here.
    pub fn from_records(
        repository: &str,
        tags: Vec<TagRecord>,
        manifests: Vec<ManifestRecord>,
        links: impl FnMut(&str) -> Option<Evidences>,
        pulls: Vec<(String, PullStats)>,
    ) -> Self {
        let mut builder = RepositoryBuilder::default();
        for record in &manifests {
            builder.add_manifest(record);
        }
        for record in tags {
            builder.add_tag(record);
        }
        for (reference, stats) in pulls {
            builder.add_pull(reference, stats);
        }
        let mut repo = builder.finish();
        repo.attach_links(repository, links);
        repo
    }

    /// Adds what `restore` put back in this repository.
    pub fn with_restores(mut self, records: Vec<RestoreRecord>) -> Self {
        self.restored = records
            .into_iter()
            .map(|r| {
                let restored = Restored {
                    digest: r.digest.as_str().into(),
                    at: r.at,
                    from_run: r.from_run.as_str().into(),
                };
                (r.reference().into(), restored)
            })
            .collect();
        self
    }

    /// The commits the evidence links to `tag`'s image, as it applies to that tag: about its
    /// digest, or about the tag itself while it points there.
    pub fn tag_commits<'s>(&'s self, tag: &'s Tag) -> impl Iterator<Item = &'s str> + 's {
        self.links
            .get(&tag.digest)
            .into_iter()
            .flatten()
            .filter(move |f| f.tag.as_deref().is_none_or(|t| t == &*tag.tag))
            .map(|f| &*f.commit)
    }

    /// Whether any evidence links `tag` to a commit.
    pub fn tag_linked(&self, tag: &Tag) -> bool {
        self.tag_commits(tag).next().is_some()
    }

    /// The commits `digest` is linked to through evidence about it, or about a tag that
    /// points to it now: what the walks place the image at.
    pub fn digest_commits<'s>(&'s self, digest: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.links
            .get(digest)
            .into_iter()
            .flatten()
            .filter(move |f| match &f.tag {
                None => true,
                Some(tag) => self
                    .tags
                    .binary_search_by(|t| (*t.tag).cmp(tag))
                    .is_ok_and(|at| &*self.tags[at].digest == digest),
            })
            .map(|f| &*f.commit)
    }

    /// Sets the commit links of every digest the snapshot names, scoped to `repository`.
    fn attach_links(&mut self, repository: &str, mut links: impl FnMut(&str) -> Option<Evidences>) {
        self.attach_with(repository, |digest, visit| {
            for evidence in links(digest).iter().flatten() {
                visit(&evidence.commit, &evidence.scope);
            }
        });
    }

    /// Sets the commit links of every digest the snapshot names, scoped to `repository`:
    /// `links` hands each stored (commit, scope) of a digest to the visitor it is given. Each
    /// digest's facts are moved into one exactly-sized allocation (a million digests must
    /// not leave a million freed scraps between the ones that stay).
    pub fn attach_with(
        &mut self,
        repository: &str,
        mut links: impl FnMut(&str, &mut dyn FnMut(&str, &LinkScope)),
    ) {
        let mut patterns: HashMap<Box<str>, Option<regex::Regex>> = HashMap::default();
        let named = self
            .manifests
            .keys()
            .chain(self.tags.iter().map(|t| &t.digest))
            .chain(self.manifests.values().flat_map(|m| m.children.iter()))
            .chain(self.manifests.values().filter_map(|m| m.subject.as_ref()));
        let mut found: HashMap<Digest, Box<[LinkFact]>> = HashMap::default();
        let mut facts: Vec<LinkFact> = Vec::new();
        for digest in named {
            if found.contains_key(digest) {
                continue;
            }
            facts.clear();
            links(digest, &mut |commit, scope| match scope {
                LinkScope::Image => facts.push(LinkFact::image(commit)),
                LinkScope::Repository(r) if **r == *repository => {
                    facts.push(LinkFact::image(commit))
                }
                LinkScope::Tag(r, tag) if **r == *repository => facts.push(LinkFact {
                    commit: commit.into(),
                    tag: Some(tag.clone()),
                }),
                LinkScope::LegacyTagPattern(pattern) => {
                    let re = patterns
                        .entry(pattern.clone())
                        .or_insert_with(|| regex::Regex::new(pattern).ok());
                    let Some(re) = re else { return };
                    for tag in self.tags.iter().filter(|t| t.digest == *digest) {
                        let captured = re
                            .captures(&tag.tag)
                            .and_then(|c| c.name("commit"))
                            .map(|m| m.as_str().to_ascii_lowercase());
                        if captured.as_deref() == Some(commit) {
                            facts.push(LinkFact {
                                commit: commit.into(),
                                tag: Some(tag.tag.as_ref().into()),
                            });
                        }
                    }
                }
                LinkScope::Repository(_) | LinkScope::Tag(..) | LinkScope::LegacyApi => {}
            });
            if facts.is_empty() {
                continue;
            }
            facts.sort_by(|a, b| (&a.tag, &a.commit).cmp(&(&b.tag, &b.commit)));
            facts.dedup();
            found.insert(digest.clone(), facts.drain(..).collect());
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

    /// Adds a commit link that applies to this repository as it stands.
    pub fn put_link(&mut self, fact: LinkFact, digest: &str) {
        let digest = self.digest(digest);
        let mut facts: Vec<LinkFact> = self
            .links
            .remove(&digest)
            .map(Vec::from)
            .unwrap_or_default();
        if !facts.contains(&fact) {
            facts.push(fact);
        }
        self.links.insert(digest, facts.into());
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
