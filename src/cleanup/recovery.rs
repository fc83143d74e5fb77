//! One enforcing cleanup at a time, and what a crashed run left behind. The lock lives in the
//! index with the audit log; a lock found there when no run of this process holds it was left
//! by a run that never finished (crash, panic, or `serve` stopping mid-run). Before taking it, every audit entry still `started` is settled
//! against the upstream: the call happened (the digest or tag is gone, or only the tombstone is
//! left, which is then deleted) → `done`; it did not → `failed`, and the new run's plan decides
//! again. So each deletion is recorded done exactly once, and nothing is half-recorded.

use super::{CleanupError, tombstone};
use crate::{
    index::{AuditAction, AuditEntry, AuditState, CleanupLock, Index, UnixMillis, Write},
    leader::{Leadership, Term},
    registry::RegistryClient,
};

/// Runs of this process: the index lock alone cannot tell a live run from a crashed one.
static RUNNING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The cleanup lock. [`Held::release`] clears it in the index when the run ends; a run that
/// never gets there (a crash, a panic, `serve` stopping mid-run) leaves it, and the next run
/// knows from it that there is something to settle.
pub struct Held<'a> {
    index: &'a dyn Index,
    /// The leadership term the run holds the lock in; its audit entries are fenced by it.
    pub term: Term,
    _running: tokio::sync::MutexGuard<'static, ()>,
}

impl Held<'_> {
    pub fn release(self) {
        let released = self
            .index
            .apply(&[Write::CleanupLock(None)])
            .and_then(|()| self.index.flush());
        if let Err(error) = released {
            tracing::warn!(%error, "releasing the cleanup lock failed; the next run treats it as stale");
        }
    }
}

/// Takes the lock for `run` — only as the leader of the processes sharing the index —
/// settling what an interrupted run left first.
pub async fn acquire<'a>(
    index: &'a dyn Index,
    client: &RegistryClient,
    run: &str,
    leadership: &std::sync::Arc<Leadership>,
) -> Result<Held<'a>, CleanupError> {
    let running = RUNNING.try_lock().map_err(|_| {
        CleanupError::Unavailable(
            "another cleanup run is in progress; this one did not start".into(),
        )
    })?;
    // A lock found below is then never a live run's: the leader that left it lost the lease.
    let term = leadership.claim()?.ok_or_else(|| {
        CleanupError::Unavailable(
            "another regkeeper process sharing the index leads cleanup; this run did not start"
                .into(),
        )
    })?;
    // Only an unfinished run leaves steps `started`; the audit log is read only then.
    if let Some(stale) = index.cleanup_lock()? {
        tracing::warn!(
            run = stale.run,
            pid = stale.pid,
            "the previous cleanup run did not finish: settling what it left"
        );
        let settled = settle(index, client, &leadership.fence(term)).await?;
        tracing::info!(settled, "interrupted cleanup steps settled");
    }
    index.apply(&[
        leadership.fence(term),
        Write::CleanupLock(Some(CleanupLock {
            run: run.to_string(),
            pid: std::process::id(),
            started: UnixMillis::now(),
        })),
    ])?;
    index.flush()?;
    Ok(Held {
        index,
        term,
        _running: running,
    })
}

/// Settles every `started` entry, each record behind `fence`; returns how many.
pub async fn settle(
    index: &dyn Index,
    client: &RegistryClient,
    fence: &Write,
) -> Result<usize, CleanupError> {
    let open: Vec<AuditEntry> = index
        .audit()?
        .into_iter()
        .filter(|e| e.state == AuditState::Started)
        .collect();
    for entry in &open {
        let (state, detail, write) = match entry.action {
            AuditAction::DeleteDigest => {
                match client
                    .manifest_digest(&entry.repository, &entry.digest)
                    .await?
                {
                    None => (
                        AuditState::Done,
                        "deleted; recorded after the run was interrupted".to_string(),
                        Some(Write::DeleteManifest {
                            repository: entry.repository.clone(),
                            digest: entry.digest.clone(),
                        }),
                    ),
                    Some(_) => (
                        AuditState::Failed,
                        "interrupted before the upstream deleted it".to_string(),
                        None,
                    ),
                }
            }
            AuditAction::Untag => settle_untag(client, entry).await?,
        };
        let mut writes: Vec<Write> = vec![fence.clone()];
        writes.extend(write);
        writes.push(Write::Audit(AuditEntry {
            state,
            detail,
            at: UnixMillis::now(),
            ..entry.clone()
        }));
        index.apply(&writes)?;
    }
    index.flush()?;
    Ok(open.len())
}

async fn settle_untag(
    client: &RegistryClient,
    entry: &AuditEntry,
) -> Result<(AuditState, String, Option<Write>), CleanupError> {
    let Some(tag) = entry.tags.first() else {
        return Ok((AuditState::Failed, "no tag recorded".into(), None));
    };
    let gone = Write::DeleteTag {
        repository: entry.repository.clone(),
        tag: tag.clone(),
        at: entry.at,
    };
    let Some(now) = client.manifest(&entry.repository, tag).await? else {
        return Ok((
            AuditState::Done,
            "tag removed; recorded after the run was interrupted".into(),
            Some(gone),
        ));
    };
    if now.digest == entry.digest {
        return Ok((
            AuditState::Failed,
            "interrupted before the tag was removed".into(),
            None,
        ));
    }
    if tombstone::is_tombstone(&now.body) {
        // Put in place, not yet deleted: finish the method.
        client
            .delete_manifest(&entry.repository, &now.digest)
            .await?;
        return Ok((
            AuditState::Done,
            format!(
                "tombstone {} deleted after the run was interrupted",
                now.digest
            ),
            Some(gone),
        ));
    }
    Ok((
        AuditState::Failed,
        format!(
            "interrupted; the tag now points to {}, left as it is",
            now.digest
        ),
        None,
    ))
}
