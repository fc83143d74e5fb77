//! From verdicts to what the executor does to one repository: which digests go whole, which
//! tags go alone, and in which order.
//!
//! What stays protects what it references. A manifest is deleted only when every index in the
//! repository that lists it is deleted in the same plan, and every manifest whose `subject` it
//! is goes too: after the plan, every manifest that remains resolves whole. A manifest that a
//! staying index or referrer pins keeps its digest; its tags that no rule keeps are removed as
//! tags. Untagged children follow a deleted index only when every index listing them goes;
//! untagged referrers follow a deleted subject.
//!
//! Owns: the deletion closure and the action list. May call: the policy's own types.

use super::{Action, Digest, HashMap, HashSet, Manifest, RepositorySnapshot, TagPlan};

/// Why a digest is deleted, before it becomes an action.
#[derive(Clone, Debug)]
enum Cause {
    /// None of its tags is kept.
    Tags,
    /// The untagged-manifests rule.
    Untagged(String),
    /// It belongs to a deleted index or subject.
    Follows(String),
}

/// What references each digest in a repository: its tags, the indexes listing it and the
/// manifests naming it as their subject.
pub struct References<'a> {
    /// Digests some tag points to.
    pub tagged: HashSet<&'a str>,
    /// Child → indexes that list it.
    listers: HashMap<&'a str, Vec<&'a str>>,
    /// Subject → manifests that refer to it.
    referrers: HashMap<&'a str, Vec<&'a str>>,
    /// Manifests that list children or name a subject, by digest order.
    linked: Vec<&'a Manifest>,
}

impl<'a> References<'a> {
    pub fn new(repo: &'a RepositorySnapshot) -> Self {
        let mut linked: Vec<&Manifest> = repo
            .manifests
            .values()
            .filter(|m| !m.children.is_empty() || m.subject.is_some())
            .collect();
        linked.sort_by(|a, b| a.digest.cmp(&b.digest));
        let mut listers: HashMap<&str, Vec<&str>> = HashMap::default();
        let mut referrers: HashMap<&str, Vec<&str>> = HashMap::default();
        for manifest in &linked {
            for child in manifest.children.iter() {
                listers.entry(child).or_default().push(&manifest.digest);
            }
            if let Some(subject) = manifest.subject.as_deref() {
                referrers.entry(subject).or_default().push(&manifest.digest);
            }
        }
        Self {
            tagged: repo.tags.iter().map(|t| &*t.digest).collect(),
            listers,
            referrers,
            linked,
        }
    }

    /// The manifests that must not outlive `digest`'s deletion: its listers and referrers.
    fn dependants(&self, digest: &str) -> impl Iterator<Item = &'a str> + '_ {
        let none: &[&str] = &[];
        let listers = self.listers.get(digest).map_or(none, Vec::as_slice);
        let referrers = self.referrers.get(digest).map_or(none, Vec::as_slice);
        listers.iter().chain(referrers).copied()
    }
}

/// What the plan deletes in one repository, and what it had to leave because something that
/// stays references it.
pub struct Deletions<'a> {
    deleted: HashMap<&'a str, Cause>,
    /// Digest → what pins it (an index or referrer that stays).
    pub pinned: HashMap<&'a str, String>,
}

impl<'a> Deletions<'a> {
    pub fn contains(&self, digest: &str) -> bool {
        self.deleted.contains_key(digest)
    }

    pub fn digests(&self) -> impl Iterator<Item = &&'a str> {
        self.deleted.keys()
    }
}

/// The fixed point: start from what the rules delete (digests none of whose tags is kept and
/// that nothing keeps by digest, and the untagged-manifests rule's finds), add what follows a
/// deleted index or subject, then pin every deleted manifest that something staying still
/// references, and start again without it. Pins only grow, so this ends; it usually takes one
/// round.
pub fn deletions<'a>(
    repo: &'a RepositorySnapshot,
    tags: &[TagPlan],
    groups: &[&[usize]],
    kept: &HashMap<&str, String>,
    untagged: &[(&'a Digest, String)],
    followers: &[(usize, Digest)],
    references: &References<'a>,
) -> Deletions<'a> {
    let closure = Closure {
        repo,
        tags,
        groups,
        kept,
        untagged,
        references,
        following: followers.iter().map(|(i, _)| *i).collect(),
    };
    let mut pinned: HashMap<&'a str, String> = HashMap::default();
    // Tags that follow their subject: standing while it stays. None at first; each round adds
    // those whose subject stayed, which can only keep more, so this ends too.
    let mut standing: HashSet<usize> = HashSet::default();
    loop {
        let mut deleted = closure.by_rules(&pinned, &standing);
        closure.follow(&mut deleted, &pinned);
        // What stays must resolve whole.
        let mut pins: Vec<(&'a str, String)> = Vec::new();
        for digest in deleted.keys() {
            if let Some(holder) = references
                .dependants(digest)
                .find(|d| !deleted.contains_key(d))
            {
                pins.push((digest, holder.to_string()));
            }
        }
        let stand: Vec<usize> = followers
            .iter()
            .filter(|(i, subject)| !deleted.contains_key(&**subject) && !standing.contains(i))
            .map(|(i, _)| *i)
            .collect();
        if pins.is_empty() && stand.is_empty() {
            return Deletions { deleted, pinned };
        }
        standing.extend(stand);
        for (digest, holder) in pins {
            let why = if references
                .listers
                .get(digest)
                .is_some_and(|l| l.contains(&holder.as_str()))
            {
                format!("listed by index {holder}, which stays")
            } else {
                format!("subject of {holder}, which stays")
            };
            pinned.insert(digest, why);
        }
    }
}

/// One repository's inputs to the fixed point of [`deletions`].
struct Closure<'a, 'p> {
    repo: &'a RepositorySnapshot,
    /// The plan's tags: the snapshot's, in the same order. Digests are borrowed from the
    /// snapshot so the plan's tags stay free to change.
    tags: &'p [TagPlan],
    groups: &'p [&'p [usize]],
    kept: &'p HashMap<&'p str, String>,
    untagged: &'p [(&'a Digest, String)],
    references: &'p References<'a>,
    /// Tags that follow their subject instead of the rules.
    following: HashSet<usize>,
}

impl<'a> Closure<'a, '_> {
    /// What the rules delete this round: digests none of whose tags stands and that nothing
    /// keeps or pins, and the untagged manifests the rule finds that are not pinned.
    fn by_rules(
        &self,
        pinned: &HashMap<&'a str, String>,
        standing: &HashSet<usize>,
    ) -> HashMap<&'a str, Cause> {
        let mut deleted: HashMap<&'a str, Cause> = HashMap::default();
        for group in self.groups {
            let digest: &'a str = &self.repo.tags[group[0]].digest;
            let any_kept = group.iter().any(|i| {
                if self.following.contains(i) {
                    standing.contains(i)
                } else {
                    self.tags[*i].keep
                }
            });
            if !any_kept && !self.kept.contains_key(digest) && !pinned.contains_key(digest) {
                deleted.insert(digest, Cause::Tags);
            }
        }
        for (digest, why) in self.untagged {
            if !pinned.contains_key(&***digest) {
                deleted.insert(digest, Cause::Untagged(why.clone()));
            }
        }
        deleted
    }

    /// Untagged children (once every index listing them goes) and referrers follow what they
    /// belong to, until nothing more follows.
    fn follow(&self, deleted: &mut HashMap<&'a str, Cause>, pinned: &HashMap<&'a str, String>) {
        let references = self.references;
        loop {
            let mut follow: Vec<(&'a str, String)> = Vec::new();
            for manifest in &references.linked {
                let digest: &'a str = &manifest.digest;
                let free = |d: &str| {
                    !references.tagged.contains(d)
                        && !self.kept.contains_key(d)
                        && !pinned.contains_key(d)
                        && !deleted.contains_key(d)
                };
                if deleted.contains_key(digest) {
                    for child in manifest.children.iter() {
                        let listers_go = references
                            .listers
                            .get(&**child)
                            .is_none_or(|l| l.iter().all(|i| deleted.contains_key(i)));
                        if free(child) && listers_go {
                            follow.push((child, format!("child of deleted index {digest}")));
                        }
                    }
                }
                if let Some(subject) = manifest.subject.as_deref()
                    && deleted.contains_key(subject)
                    && free(digest)
                {
                    follow.push((digest, format!("referrer of deleted {subject}")));
                }
            }
            if follow.is_empty() {
                return;
            }
            for (digest, why) in follow {
                deleted.entry(digest).or_insert(Cause::Follows(why));
            }
        }
    }
}

/// The actions for one repository: for each digest (by digest order) either the digest whole
/// or its unkept tags alone, then the untagged manifests the rule deletes, then what follows.
/// A manifest's deletion names (`after`) the deleted manifests that reference it, which the
/// executor deletes first: a run cut short never leaves an index without a child.
pub fn actions(
    repo: &RepositorySnapshot,
    tags: &[TagPlan],
    groups: &[&[usize]],
    deletions: &Deletions,
    references: &References,
) -> Vec<Action> {
    let size = |digest: &str| repo.manifests.get(digest).map_or(0, |m| m.total_size);
    let after = |digest: &str| -> Vec<Digest> {
        let mut after: Vec<Digest> = references
            .dependants(digest)
            .filter(|d| deletions.contains(d))
            .map(|d| shared(repo, d))
            .collect();
        after.sort();
        after.dedup();
        after
    };
    let mut actions = Vec::new();
    for group in groups {
        let digest = &tags[group[0]].digest;
        if deletions.contains(digest) {
            actions.push(Action::DeleteDigest {
                digest: digest.clone(),
                tags: group.iter().map(|i| tags[*i].tag.clone()).collect(),
                bytes: size(digest),
                follows: None,
                after: after(digest),
            });
        } else {
            for i in group.iter().filter(|i| !tags[**i].keep) {
                actions.push(Action::Untag {
                    tag: tags[*i].tag.clone(),
                    digest: digest.clone(),
                });
            }
        }
    }
    // The rule's finds first, then followers; each by digest.
    let mut rest: Vec<(bool, &str, &String)> = deletions
        .deleted
        .iter()
        .filter_map(|(digest, cause)| match cause {
            Cause::Tags => None,
            Cause::Untagged(why) => Some((false, *digest, why)),
            Cause::Follows(why) => Some((true, *digest, why)),
        })
        .collect();
    rest.sort();
    for (follows, digest, why) in rest {
        let (bytes, after, digest) = (size(digest), after(digest), shared(repo, digest));
        actions.push(if follows {
            Action::DeleteDigest {
                digest,
                tags: Vec::new(),
                bytes,
                follows: Some(why.clone()),
                after,
            }
        } else {
            Action::DeleteUntagged {
                digest,
                bytes,
                why: why.clone(),
                after,
            }
        });
    }
    actions
}

/// The snapshot's shared `Arc` for a digest it names.
fn shared(repo: &RepositorySnapshot, digest: &str) -> Digest {
    repo.manifests
        .get_key_value(digest)
        .map(|(d, _)| d.clone())
        .unwrap_or_else(|| Digest::from(digest))
}
