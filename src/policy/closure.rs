//! What the kept tags keep beyond themselves: the digests they point to, the children of kept
//! indexes and the referrers of kept subjects; and the untagged manifests nothing keeps.

use super::{Digest, HashMap, HashSet, RepositorySnapshot, TagPlan, rules};
use crate::{config::Scope, index::UnixMillis};

/// Digests kept: by a kept tag, or by digest (workloads, Helm), then what follows from them:
/// children of kept indexes, referrers of kept subjects. Each with its first reason.
pub fn kept_digests<'a>(
    repo: &'a RepositorySnapshot,
    tags: &[TagPlan],
    context: &rules::TagContext<'a>,
) -> HashMap<&'a str, String> {
    let mut kept: HashMap<&str, String> = HashMap::default();
    // Keyed by the snapshot's strings.
    for (tag, _) in repo.tags.iter().zip(tags).filter(|(_, t)| t.keep) {
        kept.entry(&*tag.digest)
            .or_insert_with(|| format!("tag {} is kept", tag.tag));
    }
    for (digest, why) in context.kept_by_digest() {
        kept.entry(digest).or_insert(why);
    }
    loop {
        let mut added = Vec::new();
        for manifest in repo.manifests.values() {
            if kept.contains_key(&*manifest.digest) {
                for child in &manifest.children {
                    if !kept.contains_key(&**child) {
                        added.push((
                            &**child,
                            format!("listed by kept index {}", manifest.digest),
                        ));
                    }
                }
            } else if let Some(subject) =
                manifest.subject.as_deref().filter(|s| kept.contains_key(s))
            {
                added.push((&*manifest.digest, format!("refers to kept {subject}")));
            }
        }
        if added.is_empty() {
            return kept;
        }
        for (digest, why) in added {
            kept.entry(digest).or_insert(why);
        }
    }
}

/// Manifests deletable on their own by the `untaggedManifests` rule, by digest order, with why:
/// no tag points to them, nothing keeps them, no index in the repository lists them (the index
/// decides for its children), they refer to no subject (a referrer goes only with its subject),
/// not pulled within `pulledWithin`, and untagged longer than both `maxAge` and `pushedWithin`
/// (an index's children, pushed before it, are untagged for a moment). None at all in a
/// repository holding a manifest whose references are unknown (opaque, or not read whole): it
/// may list any of them.
pub fn untagged_deletable<'a>(
    repo: &'a RepositorySnapshot,
    scope: &Scope,
    rule: &crate::config::UntaggedManifests,
    tagged: &HashSet<&str>,
    kept: &HashMap<&str, String>,
    now: UnixMillis,
) -> Vec<(&'a Digest, String)> {
    if repo.manifests.values().any(|m| !m.references_known) {
        return Vec::new();
    }
    let listed: HashSet<&str> = repo
        .manifests
        .values()
        .flat_map(|m| m.children.iter().map(|c| &**c))
        .collect();
    let window = rule.max_age.0.max(scope.pushed_within.0).as_millis() as u64;
    let pulled_recently = |digest: &str| {
        scope.pulled_within.is_some_and(|within| {
            repo.pulls.get(digest).is_some_and(|p| {
                now.0.saturating_sub(p.last_pulled.0) < within.0.as_millis() as u64
            })
        })
    };
    let mut found: Vec<(&Digest, String)> = repo
        .manifests
        .values()
        .filter(|m| {
            let digest = &*m.digest;
            !tagged.contains(digest)
                && !kept.contains_key(digest)
                && !listed.contains(digest)
                && m.subject.is_none()
                && now.0.saturating_sub(m.untagged_since.0) >= window
                && !pulled_recently(digest)
        })
        .map(|m| {
            let age = now.0.saturating_sub(m.untagged_since.0);
            (
                &m.digest,
                format!(
                    "untagged for {} (≥ untaggedManifests.maxAge {}); no index refers to it",
                    rules::ago(age),
                    rule.max_age
                ),
            )
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(b.0));
    found
}
