//! The checks right before a step's call: what changed since the plan (a pull, a push, a tag
//! moved, another tag on the digest, a workload that started using it). Nothing is deleted
//! that these do not confirm.

use std::{collections::HashMap, sync::Arc};

use futures_util::{StreamExt as _, stream};

use super::{CleanupError, Executor, Step};
use crate::{cleanup::upstream::Registry, index::AuditAction, registry::RegistryError};

/// Digest → the tags pointing to it.
pub(super) type TagsByDigest = HashMap<String, Vec<String>>;

/// A repository's tags as the index had them, and its push count then.
pub(super) struct IndexTags {
    pushes: Option<u64>,
    tags: HashMap<String, String>,
}

impl<R: Registry> Executor<'_, R> {
    /// Why the step must not run (something changed since the plan), or `None`. The first tag
    /// was already fetched (see `execute`).
    pub(super) async fn changed(&self, step: &Step) -> Result<Option<String>, CleanupError> {
        if let Some(why) = self
            .guard
            .and_then(|g| g.blocks(&step.repository, &step.tags, &step.digest))
        {
            return Ok(Some(why));
        }
        // A pull through the proxy since the plan: someone uses it right now.
        for reference in watched(step) {
            if let Some(pulls) = self.index.pulls(&step.repository, reference)?
                && pulls.last_pulled > self.planned_at
            {
                return Ok(Some(format!("{reference} was pulled after the plan")));
            }
        }
        for (i, tag) in step.tags.iter().enumerate() {
            // The upstream's word: where the tag points right now.
            if i > 0 {
                let now = self
                    .retry(|| self.client.manifest_digest(&step.repository, tag))
                    .await?;
                if let Some(why) = moved(tag, now.as_deref(), &step.digest) {
                    return Ok(Some(why));
                }
            }
            // The index's word: a push the upstream may not show yet under this name.
            if let Some(record) = self.index.tag(&step.repository, tag)?
                && record.last_pushed > self.planned_at
            {
                return Ok(Some(format!("tag {tag} was pushed again after the plan")));
            }
        }
        if step.action == AuditAction::DeleteDigest {
            // Pushed again by digest since the plan (a build reproducing an old image, an
            // index's child pushed before its index): a new push is about to use it.
            if let Some(record) = self.index.manifest(&step.repository, &step.digest)?
                && record.recorded_at > self.planned_at
            {
                return Ok(Some(format!(
                    "{} was pushed again after the plan",
                    step.digest
                )));
            }
            // Never delete a digest another tag now points to: DELETE by digest takes every
            // tag on it. The index knows the pushes through the proxy; the upstream's own
            // listing catches those that bypassed it.
            let upstream = self.upstream_tags(&step.repository).await?;
            let indexed = self.tags_on(&step.repository, &step.digest)?;
            if let Some(why) = others_on_digest(step, indexed, upstream.get(&step.digest)) {
                return Ok(Some(why));
            }
        }
        Ok(None)
    }

    /// Where every tag of `repository` points upstream, read once per run.
    async fn upstream_tags(&self, repository: &str) -> Result<Arc<TagsByDigest>, CleanupError> {
        let cell = self
            .upstream_tags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(repository.to_string())
            .or_default()
            .clone();
        let scanned = cell
            .get_or_try_init(|| async {
                let tags = self.retry(|| self.client.tags(repository)).await?;
                let heads: Vec<Result<(String, Option<String>), RegistryError>> =
                    stream::iter(tags)
                        .map(|tag| async move {
                            let digest = self
                                .retry(|| self.client.manifest_digest(repository, &tag))
                                .await?;
                            Ok((tag, digest))
                        })
                        .buffer_unordered(self.concurrency)
                        .collect()
                        .await;
                let mut by_digest = TagsByDigest::new();
                for head in heads {
                    if let (tag, Some(digest)) = head? {
                        by_digest.entry(digest).or_default().push(tag);
                    }
                }
                Ok::<_, CleanupError>(Arc::new(by_digest))
            })
            .await?;
        Ok(scanned.clone())
    }

    /// The index's tags of `repository` on `digest`. The repository's tags are read once, and
    /// again whenever the index counted a tag push to it since: a tag pushed through the proxy
    /// during the run onto a digest about to be deleted (a rollback re-tagging an old image)
    /// must stop that deletion, not share its fate.
    pub(super) fn tags_on(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<Vec<String>, CleanupError> {
        let mut cache = self.index_tags.lock().unwrap_or_else(|e| e.into_inner());
        // Counted before reading: a push landing in between is seen by the next look.
        let pushes = self.index.tag_pushes(repository);
        let stale = cache
            .get(repository)
            .is_none_or(|known| known.pushes != pushes);
        if stale {
            let tags = self
                .index
                .tags(repository)?
                .into_iter()
                .map(|t| (t.tag, t.digest))
                .collect();
            cache.insert(repository.to_string(), IndexTags { pushes, tags });
        }
        Ok(cache[repository]
            .tags
            .iter()
            .filter(|(_, d)| *d == digest)
            .map(|(t, _)| t.clone())
            .collect())
    }
}

/// The references whose pulls since the plan stop the step: its tags, and for a digest
/// deletion the digest itself (an untag leaves the digest, so its pulls do not matter).
pub(super) fn watched(step: &Step) -> impl Iterator<Item = &str> {
    let count = match step.action {
        AuditAction::DeleteDigest => step.tags.len() + 1,
        AuditAction::Untag => step.tags.len(),
    };
    step.tags
        .iter()
        .map(String::as_str)
        .chain([step.digest.as_str()])
        .take(count)
}

/// Why a tag the step removes no longer may be: it points elsewhere upstream, or is gone.
pub(super) fn moved(tag: &str, now: Option<&str>, planned: &str) -> Option<String> {
    match now {
        Some(digest) if digest == planned => None,
        Some(digest) => Some(format!("tag {tag} now points to {digest}")),
        None => Some(format!("tag {tag} is gone")),
    }
}

/// Tags on the digest (in the index, or upstream) that the step does not remove: a digest
/// `DELETE` would take them too.
pub(super) fn others_on_digest(
    step: &Step,
    indexed: Vec<String>,
    upstream: Option<&Vec<String>>,
) -> Option<String> {
    let mut others: Vec<String> = indexed
        .into_iter()
        .chain(upstream.into_iter().flatten().cloned())
        .filter(|t| !step.tags.contains(t))
        .collect();
    others.sort();
    others.dedup();
    (!others.is_empty()).then(|| {
        format!(
            "tag {} points to it and is not in the plan",
            others.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(action: AuditAction, tags: &[&str]) -> Step {
        Step {
            seq: 1,
            repository: "app".into(),
            digest: "sha256:aa".into(),
            action,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            bytes: 0,
            reasons: Vec::new(),
            after: Vec::new(),
        }
    }

    #[test]
    fn a_digest_deletion_watches_its_digest_an_untag_does_not() {
        let delete = step(AuditAction::DeleteDigest, &["a", "b"]);
        assert_eq!(
            watched(&delete).collect::<Vec<_>>(),
            ["a", "b", "sha256:aa"]
        );
        let untag = step(AuditAction::Untag, &["a"]);
        assert_eq!(watched(&untag).collect::<Vec<_>>(), ["a"]);
        let untagged = step(AuditAction::DeleteDigest, &[]);
        assert_eq!(watched(&untagged).collect::<Vec<_>>(), ["sha256:aa"]);
    }

    #[test]
    fn a_tag_that_moved_or_went_stops_the_step() {
        assert_eq!(moved("a", Some("sha256:aa"), "sha256:aa"), None);
        assert_eq!(
            moved("a", Some("sha256:bb"), "sha256:aa").as_deref(),
            Some("tag a now points to sha256:bb")
        );
        assert_eq!(
            moved("a", None, "sha256:aa").as_deref(),
            Some("tag a is gone")
        );
    }

    #[test]
    fn a_tag_outside_the_step_on_its_digest_stops_the_deletion() {
        let delete = step(AuditAction::DeleteDigest, &["a"]);
        assert_eq!(others_on_digest(&delete, vec!["a".into()], None), None);
        let upstream = vec!["b".into(), "a".into()];
        assert_eq!(
            others_on_digest(&delete, vec!["c".into(), "b".into()], Some(&upstream)).as_deref(),
            Some("tag b, c points to it and is not in the plan")
        );
    }
}
