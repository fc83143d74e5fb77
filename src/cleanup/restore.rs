//! Restoring what a run removed (`regkeeper restore`): the recorded manifest is PUT back under
//! its tag once every blob it names is confirmed upstream — after the registry's garbage
//! collection it is not, and then nothing is changed. What is put back is recorded (a fresh
//! push, and a restore the next runs keep for `cleanup.restoreProtection`).

use base64::Engine as _;
use bytes::Bytes;

use super::{CleanupError, history::entries};
use crate::{
    index::{AuditEntry, AuditState, Index, RestoreRecord, UnixMillis, Write},
    manifest,
    registry::RegistryClient,
};

/// What one restore did.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Restored {
    pub repository: String,
    /// `None`: put back by digest (it had no tag: an index's child, a referrer, an untagged
    /// manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub digest: String,
    pub run: String,
}

impl Restored {
    /// `team/app:v1` or `team/app@sha256:…`.
    pub fn reference(&self) -> String {
        match &self.tag {
            Some(tag) => format!("{}:{tag}", self.repository),
            None => format!("{}@{}", self.repository, self.digest),
        }
    }
}

/// What a `restore` command did: each manifest put back, and why others could not be.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RestoreReport {
    pub restored: Vec<Restored>,
    pub failed: Vec<String>,
}

/// Restores `REPOSITORY:TAG` (from its newest removal, or from `run`'s), `REPOSITORY@DIGEST`
/// (put back by digest), or, with `run` alone, everything that run removed: manifests without
/// tags first (an index's children before the index), then each tag. Each is checked and put
/// back on its own.
pub async fn restore_all(
    client: &RegistryClient,
    index: &dyn Index,
    reference: Option<&str>,
    run: Option<&str>,
) -> Result<RestoreReport, CleanupError> {
    let entries = entries(index, None, None)?;
    let targets: Vec<(&AuditEntry, Option<String>)> = match reference {
        Some(reference) => {
            let (repository, what, tag) = match reference.split_once('@') {
                Some((repository, digest)) => (repository, Removed::Digest(digest), None),
                None => {
                    let (repository, tag) = reference
                        .rsplit_once(':')
                        .filter(|(r, t)| !r.is_empty() && !t.contains('/'))
                        .ok_or_else(|| {
                            CleanupError::Request(format!(
                                "{reference:?}: give REPOSITORY:TAG or REPOSITORY@DIGEST"
                            ))
                        })?;
                    (repository, Removed::Tag(tag), Some(tag.to_string()))
                }
            };
            let entry = removal(&entries, repository, what, run).ok_or_else(|| {
                CleanupError::Request(format!(
                    "the audit log has no completed removal of {reference}{}",
                    run.map(|r| format!(" in run {r}")).unwrap_or_default()
                ))
            })?;
            vec![(entry, tag)]
        }
        None => {
            let run = run.ok_or_else(|| {
                CleanupError::Request("give REPOSITORY:TAG, REPOSITORY@DIGEST, or a run".into())
            })?;
            let mut done: Vec<&AuditEntry> = entries
                .iter()
                .filter(|e| e.run == run && e.state == AuditState::Done)
                .collect();
            // Untagged before tagged; among them, what lists no children before what does.
            done.sort_by_cached_key(|e| (!e.tags.is_empty(), lists_children(e)));
            let found: Vec<_> = done
                .into_iter()
                .flat_map(|e| {
                    let tags: Vec<Option<String>> = if e.tags.is_empty() {
                        vec![None]
                    } else {
                        e.tags.iter().cloned().map(Some).collect()
                    };
                    tags.into_iter().map(move |t| (e, t))
                })
                .collect();
            if found.is_empty() {
                return Err(CleanupError::Request(format!("run {run} removed nothing")));
            }
            found
        }
    };
    let mut report = RestoreReport::default();
    for (entry, tag) in targets {
        match restore(client, index, entry, tag.as_deref()).await {
            Ok(done) => report.restored.push(done),
            Err(error) => report.failed.push(error.to_string()),
        }
    }
    index.flush()?;
    Ok(report)
}

/// Whether the entry's manifest is an index (it needs its children back first).
fn lists_children(entry: &AuditEntry) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(&entry.manifest_base64)
        .ok()
        .and_then(|body| manifest::references(&body))
        .is_some_and(|r| !r.children.is_empty())
}

/// What a restore names in a repository.
#[derive(Clone, Copy)]
pub enum Removed<'a> {
    Tag(&'a str),
    Digest(&'a str),
}

/// The audit entry that removed `what` of `repository` — the newest completed one, or the one
/// of `run`.
pub fn removal<'a>(
    entries: &'a [AuditEntry],
    repository: &str,
    what: Removed<'_>,
    run: Option<&str>,
) -> Option<&'a AuditEntry> {
    entries
        .iter()
        .filter(|e| e.state == AuditState::Done && e.repository == repository)
        .filter(|e| match what {
            Removed::Tag(tag) => e.tags.iter().any(|t| t == tag),
            Removed::Digest(digest) => e.digest == digest,
        })
        .filter(|e| run.is_none_or(|r| e.run == r))
        .max_by(|a, b| a.at.cmp(&b.at))
}

/// The blobs and child manifests `body` names that the upstream no longer has.
async fn missing_parts(
    client: &RegistryClient,
    repository: &str,
    body: &[u8],
) -> Result<Vec<String>, CleanupError> {
    let parsed = manifest::references(body).unwrap_or_default();
    let mut missing = Vec::new();
    for blob in parsed.blobs {
        if !client.blob_exists(repository, &blob).await? {
            missing.push(blob);
        }
    }
    for child in &parsed.children {
        if client.manifest_digest(repository, child).await?.is_none() {
            missing.push(child.clone());
        }
    }
    Ok(missing)
}

/// Puts `entry`'s manifest back under `tag`, after checking that everything it names is still
/// upstream. Changes nothing when something is missing.
pub async fn restore(
    client: &RegistryClient,
    index: &dyn Index,
    entry: &AuditEntry,
    tag: Option<&str>,
) -> Result<Restored, CleanupError> {
    let what = match tag {
        Some(tag) => format!("{}:{tag}", entry.repository),
        None => format!("{}@{}", entry.repository, entry.digest),
    };
    let body = base64::engine::general_purpose::STANDARD
        .decode(&entry.manifest_base64)
        .map_err(|e| {
            CleanupError::Unavailable(format!(
                "the audit entry of {what} holds no readable manifest ({e})"
            ))
        })?;
    let missing = missing_parts(client, &entry.repository, &body).await?;
    if !missing.is_empty() {
        return Err(CleanupError::Unavailable(format!(
            "cannot restore {what}: the upstream no longer has {} (the registry's garbage collection ran since run {}, or it was not restored first); nothing was changed",
            missing.join(", "),
            entry.run
        )));
    }
    let reference = tag.unwrap_or(&entry.digest);
    let at = UnixMillis::now();
    let record = manifest::parse(
        &entry.repository,
        &entry.digest,
        &entry.media_type,
        &body,
        at,
    );
    let digest = client
        .put_manifest(
            &entry.repository,
            reference,
            &entry.media_type,
            Bytes::from(body),
        )
        .await?;
    // What was put back is a push like any other (and as fresh): the index knows it again,
    // and keeps it for `cleanup.restoreProtection`.
    let mut writes: Vec<Write> = record.map(Write::PutManifest).into_iter().collect();
    writes.push(Write::Restored(RestoreRecord {
        repository: entry.repository.clone(),
        tag: tag.map(str::to_string),
        digest: digest.clone(),
        from_run: entry.run.clone(),
        at,
    }));
    if let Some(tag) = tag {
        writes.push(Write::push(
            entry.repository.as_str(),
            tag,
            digest.as_str(),
            at,
        ));
    }
    index.apply(&writes)?;
    tracing::info!(
        repository = entry.repository,
        tag,
        digest,
        run = entry.run,
        "restored"
    );
    Ok(Restored {
        repository: entry.repository.clone(),
        tag: tag.map(str::to_string),
        digest,
        run: entry.run.clone(),
    })
}
