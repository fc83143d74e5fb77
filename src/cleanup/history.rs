//! The audit log as people read it (`regkeeper history`): the cleanup steps and the restores,
//! oldest first, a page at a time; and its table. Restoring is `restore`'s.

use super::CleanupError;
use crate::index::{AuditEntry, Index, RestoreRecord, UnixMillis};

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
