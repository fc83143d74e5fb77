//! `regkeeper history`'s table: one line per cleanup step or restore.

use std::fmt::Write as _;

use crate::{
    cleanup::history::HistoryEntry,
    index::{AuditAction, AuditState},
    planning::format_time,
};

/// The audit log, one line per step or restore.
pub fn history_table(entries: &[HistoryEntry]) -> String {
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
