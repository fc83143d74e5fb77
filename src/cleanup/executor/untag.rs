//! Removing one tag while its digest stays (other tags, or a workload by digest, keep it): a
//! tag `DELETE` where the upstream removes the tag alone, else the tombstone method.
//!
//! Whether the upstream removes a tag alone is learned once per upstream client by a probe on
//! throwaway manifests, never on a real image: some registries answer a tag `DELETE` by deleting
//! the manifest the tag points to, with every other tag on it — tried on a real untag, that
//! would take the kept tags along.

use bytes::Bytes;

use super::{CleanupError, Executor, Step};
use crate::{
    cleanup::{tombstone, upstream::Registry},
    registry::TagDeletion,
};

impl<R: Registry> Executor<'_, R> {
    /// Removes `tag` of `step` (its digest staying). Returns how.
    pub(super) async fn untag(&self, step: &Step, tag: &str) -> Result<String, CleanupError> {
        if self.removes_tags_alone(&step.repository).await? {
            match self
                .retry(|| self.client.delete_tag(&step.repository, tag))
                .await?
            {
                TagDeletion::Deleted | TagDeletion::Gone => return Ok("tag delete".into()),
                // Changed since the probe (a downgrade?): the tombstone works everywhere.
                TagDeletion::Unsupported => {}
            }
        }
        let body = tombstone::manifest(&self.run, step.seq);
        self.upload_empty_config(&step.repository).await?;
        // The last look before overwriting the tag: it must still point to the planned digest.
        let now = self
            .retry(|| self.client.manifest_digest(&step.repository, tag))
            .await?;
        if now.as_deref() != Some(step.digest.as_str()) {
            return Err(CleanupError::Unavailable(format!(
                "tag {tag} changed while it was being removed; left as it is"
            )));
        }
        let tombstone = self
            .retry(|| {
                self.client
                    .put_manifest(&step.repository, tag, tombstone::MEDIA_TYPE, body.clone())
            })
            .await?;
        self.retry(|| self.client.delete_manifest(&step.repository, &tombstone))
            .await?;
        Ok(format!("tombstone {tombstone}"))
    }

    async fn upload_empty_config(&self, repository: &str) -> Result<(), CleanupError> {
        self.retry(|| {
            self.client
                .upload_blob(repository, Bytes::from_static(tombstone::EMPTY_CONFIG))
        })
        .await?;
        Ok(())
    }

    /// Whether the upstream removes a tag alone, probed on the first untag (in `repository`,
    /// where cleanup may push) and remembered by the client.
    async fn removes_tags_alone(&self, repository: &str) -> Result<bool, CleanupError> {
        self.client
            .tag_deletion()
            .get_or_try_init(|| self.probe_tag_deletion(repository))
            .await
            .copied()
    }

    /// Puts one throwaway manifest under two probe tags, deletes the first tag, and looks: the
    /// upstream removes tags alone when the first tag is gone and the manifest still answers
    /// under the second. The probe manifest is deleted by digest afterwards, whatever happened.
    async fn probe_tag_deletion(&self, repository: &str) -> Result<bool, CleanupError> {
        let body = tombstone::manifest(&self.run, 0);
        self.upload_empty_config(repository).await?;
        let tag = |suffix: &str| format!("regkeeper-probe-{}-{suffix}", self.run);
        let (first, second) = (tag("a"), tag("b"));
        let mut digest = String::new();
        for probe in [&first, &second] {
            digest = self
                .retry(|| {
                    self.client
                        .put_manifest(repository, probe, tombstone::MEDIA_TYPE, body.clone())
                })
                .await?;
        }
        let alone = match self
            .retry(|| self.client.delete_tag(repository, &first))
            .await?
        {
            TagDeletion::Unsupported => false,
            TagDeletion::Deleted | TagDeletion::Gone => {
                let first_gone = self
                    .retry(|| self.client.manifest_digest(repository, &first))
                    .await?
                    .is_none();
                let second_stays = self
                    .retry(|| self.client.manifest_digest(repository, &second))
                    .await?
                    .as_deref()
                    == Some(digest.as_str());
                first_gone && second_stays
            }
        };
        self.retry(|| self.client.delete_manifest(repository, &digest))
            .await?;
        if alone {
            tracing::info!(
                repository,
                "the upstream deletes tags alone: untagging by tag DELETE"
            );
        } else {
            tracing::info!(
                repository,
                "the upstream does not delete a tag alone: untagging with the tombstone method"
            );
        }
        Ok(alone)
    }
}
