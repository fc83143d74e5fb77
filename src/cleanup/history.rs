//! The audit log as people read it (`regkeeper history`), and restoring what a run removed
//! (`regkeeper restore`): the recorded manifest is PUT back under its tag once every blob it
//! names is confirmed upstream — after the registry's garbage collection it is not, and then
//! nothing is changed.

use std::fmt::Write as _;

use base64::Engine as _;
use bytes::Bytes;

use super::CleanupError;
use crate::{
    index::{AuditAction, AuditEntry, AuditState, Index, UnixMillis, Write},
    manifest,
    planning::format_time,
    registry::RegistryClient,
};

/// Entries for `repository` (all when `None`) recorded at or after `since`, oldest first.
pub fn entries(
    index: &dyn Index,
    repository: Option<&str>,
    since: Option<UnixMillis>,
) -> Result<Vec<AuditEntry>, CleanupError> {
    let mut entries: Vec<AuditEntry> = index
        .audit()?
        .into_iter()
        .filter(|e| repository.is_none_or(|r| e.repository == r))
        .filter(|e| since.is_none_or(|s| e.at >= s))
        .collect();
    entries.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.seq.cmp(&b.seq)));
    Ok(entries)
}

pub fn table(entries: &[AuditEntry]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<22} {:<8} {:<13} {:<40} DETAIL",
        "TIME", "RUN", "STATE", "ACTION", "IMAGE"
    );
    for entry in entries {
        let image = if entry.tags.is_empty() {
            format!("{}@{}", entry.repository, short(&entry.digest))
        } else {
            format!("{}:{}", entry.repository, entry.tags.join(","))
        };
        let action = match entry.action {
            AuditAction::DeleteDigest => "delete-digest",
            AuditAction::Untag => "untag",
        };
        let state = match entry.state {
            AuditState::Started => "started",
            AuditState::Done => "done",
            AuditState::Skipped => "skipped",
            AuditState::Failed => "failed",
        };
        let mut detail = entry.detail.clone();
        if entry.state == AuditState::Done && !entry.reasons.is_empty() {
            if !detail.is_empty() {
                detail.push_str("; ");
            }
            detail.push_str(&entry.reasons.join("; "));
        }
        let _ = writeln!(
            out,
            "{:<20} {:<22} {state:<8} {action:<13} {image:<40} {detail}",
            format_time(entry.at),
            entry.run
        );
    }
    out
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

/// What one restore did.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Restored {
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub run: String,
}

/// What a `restore` command did: each tag put back, and why others could not be.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RestoreReport {
    pub restored: Vec<Restored>,
    pub failed: Vec<String>,
}

/// Restores `REPOSITORY:TAG` (from its newest removal, or from `run`'s), or, with `run`
/// alone, every tag that run removed. Each tag is checked and put back on its own.
pub async fn restore_all(
    client: &RegistryClient,
    index: &dyn Index,
    reference: Option<&str>,
    run: Option<&str>,
) -> Result<RestoreReport, CleanupError> {
    let entries = entries(index, None, None)?;
    let targets: Vec<(&AuditEntry, String)> = match reference {
        Some(reference) => {
            let (repository, tag) = reference
                .rsplit_once(':')
                .filter(|(r, t)| !r.is_empty() && !t.contains('/'))
                .ok_or_else(|| {
                    CleanupError::Request(format!("{reference:?}: give REPOSITORY:TAG"))
                })?;
            let entry = removal(&entries, repository, tag, run).ok_or_else(|| {
                CleanupError::Request(format!(
                    "the audit log has no completed removal of {repository}:{tag}{}",
                    run.map(|r| format!(" in run {r}")).unwrap_or_default()
                ))
            })?;
            vec![(entry, tag.to_string())]
        }
        None => {
            let run =
                run.ok_or_else(|| CleanupError::Request("give REPOSITORY:TAG, or a run".into()))?;
            let found: Vec<_> = entries
                .iter()
                .filter(|e| e.run == run && e.state == AuditState::Done)
                .flat_map(|e| e.tags.iter().map(move |t| (e, t.clone())))
                .collect();
            if found.is_empty() {
                return Err(CleanupError::Request(format!("run {run} removed no tag")));
            }
            found
        }
    };
    let mut report = RestoreReport::default();
    for (entry, tag) in targets {
        match restore(client, index, entry, &tag).await {
            Ok(done) => report.restored.push(done),
            Err(error) => report.failed.push(error.to_string()),
        }
    }
    index.flush()?;
    Ok(report)
}

/// The audit entry that removed `repository:tag` — the newest completed one, or the one of
/// `run`.
pub fn removal<'a>(
    entries: &'a [AuditEntry],
    repository: &str,
    tag: &str,
    run: Option<&str>,
) -> Option<&'a AuditEntry> {
    entries
        .iter()
        .filter(|e| e.state == AuditState::Done && e.repository == repository)
        .filter(|e| e.tags.iter().any(|t| t == tag))
        .filter(|e| run.is_none_or(|r| e.run == r))
        .max_by(|a, b| a.at.cmp(&b.at))
}

/// Puts `entry`'s manifest back under `tag`, after checking that everything it names is still
/// upstream. Changes nothing when something is missing.
pub async fn restore(
    client: &RegistryClient,
    index: &dyn Index,
    entry: &AuditEntry,
    tag: &str,
) -> Result<Restored, CleanupError> {
    let body = base64::engine::general_purpose::STANDARD
        .decode(&entry.manifest_base64)
        .map_err(|e| {
            CleanupError::Unavailable(format!(
                "the audit entry of {}:{tag} holds no readable manifest ({e})",
                entry.repository
            ))
        })?;
    let parsed = manifest::references(&body).unwrap_or_default();
    let mut missing = Vec::new();
    for blob in parsed.blobs {
        if !client.blob_exists(&entry.repository, &blob).await? {
            missing.push(blob);
        }
    }
    for child in &parsed.children {
        if client
            .manifest_digest(&entry.repository, child)
            .await?
            .is_none()
        {
            missing.push(child.clone());
        }
    }
    if !missing.is_empty() {
        return Err(CleanupError::Unavailable(format!(
            "cannot restore {}:{tag}: the upstream no longer has {} (the registry's garbage collection ran since run {}); nothing was changed",
            entry.repository,
            missing.join(", "),
            entry.run
        )));
    }
    let digest = client
        .put_manifest(&entry.repository, tag, &entry.media_type, Bytes::from(body))
        .await?;
    index.apply(&[Write::PushTag {
        repository: entry.repository.clone(),
        tag: tag.to_string(),
        digest: digest.clone(),
        at: UnixMillis::now(),
        only_if_unknown: false,
    }])?;
    tracing::info!(
        repository = entry.repository,
        tag,
        digest,
        run = entry.run,
        "restored"
    );
    Ok(Restored {
        repository: entry.repository.clone(),
        tag: tag.to_string(),
        digest,
        run: entry.run.clone(),
    })
}
