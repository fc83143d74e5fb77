//! The audit log as people read it (`regkeeper history`), and restoring what a run removed
//! (`regkeeper restore`): the recorded manifest is PUT back under its tag once every blob it
//! names is confirmed upstream — after the registry's garbage collection it is not, and then
//! nothing is changed.

use std::fmt::Write as _;

use base64::Engine as _;
use bytes::Bytes;

use super::CleanupError;
use crate::{
    index::{AuditAction, AuditEntry, AuditState, Index, RestoreRecord, UnixMillis, Write},
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

/// One line of `history`: a cleanup step, or a restore.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum HistoryEntry {
    Step(AuditEntry),
    Restore(RestoreRecord),
}

/// The cleanup steps and the restores of `repository` (all when `None`) at or after `since`,
/// oldest first, without the recorded manifests (`restore` reads those from the index).
pub fn timeline(
    index: &dyn Index,
    repository: Option<&str>,
    since: Option<UnixMillis>,
) -> Result<Vec<HistoryEntry>, CleanupError> {
    let mut pages = HistoryPages::new(index, repository, since)?;
    let mut all = Vec::new();
    while let Some(page) = pages.next(index)? {
        all.extend(page);
    }
    Ok(all)
}

/// Audit entries read this many at a time.
const PAGE: usize = 256;

/// The timeline a page at a time: the audit log is read in pages (in run order, which is time
/// order: runs hold the cleanup lock one after the other), and the restores — few, an
/// operator's doing — are merged in by time. A history of a million steps is streamed holding
/// one page.
pub struct HistoryPages {
    repository: Option<String>,
    since: Option<UnixMillis>,
    restores: std::collections::VecDeque<RestoreRecord>,
    after: Option<(String, u64)>,
    steps_done: bool,
}

impl HistoryPages {
    pub fn new(
        index: &dyn Index,
        repository: Option<&str>,
        since: Option<UnixMillis>,
    ) -> Result<Self, CleanupError> {
        let mut restores: Vec<RestoreRecord> = index
            .restores(repository)?
            .into_iter()
            .filter(|r| since.is_none_or(|s| r.at >= s))
            .collect();
        restores.sort_by_key(|r| r.at);
        Ok(Self {
            repository: repository.map(str::to_string),
            since,
            restores: restores.into(),
            after: None,
            steps_done: false,
        })
    }

    /// The next page; `None` when everything was given.
    pub fn next(&mut self, index: &dyn Index) -> Result<Option<Vec<HistoryEntry>>, CleanupError> {
        loop {
            if self.steps_done {
                if self.restores.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(
                    self.restores.drain(..).map(HistoryEntry::Restore).collect(),
                ));
            }
            let after = self.after.as_ref().map(|(run, seq)| (run.as_str(), *seq));
            let page = index.audit_page(after, PAGE)?;
            let Some(last) = page.last() else {
                self.steps_done = true;
                continue;
            };
            self.after = Some((last.run.clone(), last.seq));
            let mut out = Vec::new();
            for mut entry in page {
                if self
                    .repository
                    .as_deref()
                    .is_some_and(|r| entry.repository != r)
                    || self.since.is_some_and(|s| entry.at < s)
                {
                    continue;
                }
                // Stable: a restore of the same moment comes after the steps.
                while self.restores.front().is_some_and(|r| r.at < entry.at) {
                    out.extend(self.restores.pop_front().map(HistoryEntry::Restore));
                }
                entry.manifest_base64.clear();
                out.push(HistoryEntry::Step(entry));
            }
            if !out.is_empty() {
                return Ok(Some(out));
            }
        }
    }
}

pub fn table(entries: &[HistoryEntry]) -> String {
    let mut out = String::new();
    let mut row = |at: &str, run: &str, state: &str, action: &str, image: &str, detail: &str| {
        let _ = writeln!(
            out,
            "{at:<20} {run:<22} {state:<8} {action:<13} {image:<40} {detail}"
        );
    };
    row("TIME", "RUN", "STATE", "ACTION", "IMAGE", "DETAIL");
    for entry in entries {
        match entry {
            HistoryEntry::Restore(record) => {
                let image = image(&record.repository, record.tag.iter(), &record.digest);
                let detail = format!("put back what run {} removed", record.from_run);
                let at = format_time(record.at);
                row(&at, &record.from_run, "done", "restore", &image, &detail);
            }
            HistoryEntry::Step(entry) => {
                let image = image(&entry.repository, entry.tags.iter(), &entry.digest);
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
                let at = format_time(entry.at);
                row(&at, &entry.run, state, action, &image, &detail);
            }
        }
    }
    out
}

/// `team/app:a,b`, or `team/app@sha256:…` for what had no tag.
fn image<'t>(repository: &str, tags: impl Iterator<Item = &'t String>, digest: &str) -> String {
    let tags: Vec<&str> = tags.map(String::as_str).collect();
    if tags.is_empty() {
        format!("{repository}@{}", short(digest))
    } else {
        format!("{repository}:{}", tags.join(","))
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

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
        writes.push(Write::PushTag {
            repository: entry.repository.clone(),
            tag: tag.to_string(),
            digest: digest.clone(),
            at,
            only_if_unknown: false,
        });
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
