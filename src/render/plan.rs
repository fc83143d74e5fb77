//! The plan and an explanation as text tables (`--output table`, `format=table`).

use std::{fmt::Write as _, sync::Arc};

use super::{columns, human_bytes};
use crate::{
    index::UnixMillis,
    planning::{Explanation, format_time},
    policy::{Action, Plan, RepositoryPlan},
};

/// The plan as text: a summary line per repository, then per repository what would be deleted
/// — newest push first, the tag first, a short digest, push date and size — and, with
/// `show_kept`, every kept tag with its reasons. A source that failed is said once, at the
/// top; the tags it kept only name the rule.
pub fn plan_table(plan: &Plan, show_kept: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "plan as of {}", format_time(plan.at));
    for warning in &plan.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    let mut rows = vec![[
        "REPOSITORY".to_string(),
        "SCOPE".into(),
        "KEPT".into(),
        "KEPT SIZE".into(),
        "DELETED".into(),
        "DELETED SIZE".into(),
    ]];
    for repo in &plan.repositories {
        rows.push([
            repo.repository.clone(),
            repo.scope.clone().unwrap_or_else(|| "-".into()),
            repo.kept.tags.to_string(),
            human_bytes(repo.kept.bytes),
            repo.deleted.tags.to_string(),
            human_bytes(repo.deleted.bytes),
        ]);
    }
    out.push_str(&columns(&rows));
    for repo in &plan.repositories {
        if repo.actions.is_empty() && !show_kept {
            continue;
        }
        let _ = writeln!(out, "\n{}:", repo.repository);
        if !repo.actions.is_empty() {
            out.push_str(&indent(&columns(&deletion_rows(repo))));
        }
        if show_kept {
            for tag in repo.tags.iter().filter(|t| t.keep) {
                let reasons: Vec<&str> = tag.reasons.iter().map(|r| said_once(r)).collect();
                let _ = writeln!(out, "  keep    {}  {}", tag.tag, reasons.join("; "));
            }
        }
    }
    out
}

/// A failed source's reason as a kept tag shows it: the rule only (the warning says the rest).
fn said_once(reason: &str) -> &str {
    ["kubernetes-unavailable", "helm-unavailable", "git-unproven"]
        .into_iter()
        .find(|rule| reason.starts_with(&format!("{rule}:")))
        .map_or(reason, |rule| rule)
}

fn indent(table: &str) -> String {
    table.lines().map(|l| format!("  {l}\n")).collect()
}

/// One row per action, newest push first (untagged manifests, which have no push of a tag,
/// last).
fn deletion_rows(repo: &RepositoryPlan) -> Vec<[String; 6]> {
    let mut rows: Vec<(Option<UnixMillis>, [String; 6])> = repo
        .actions
        .iter()
        .map(|action| action_row(repo, action))
        .collect();
    // Newest first; equal times by tag, so the table is stable.
    rows.sort_by(|(a, ra), (b, rb)| b.cmp(a).then_with(|| ra[0].cmp(&rb[0])));
    let header = [
        "TAG".to_string(),
        "DIGEST".into(),
        "PUSHED".into(),
        "SIZE".into(),
        "ACTION".into(),
        "WHY".into(),
    ];
    std::iter::once(header)
        .chain(rows.into_iter().map(|(_, row)| row))
        .collect()
}

/// The latest push of any of `tags`.
fn pushed_of(repo: &RepositoryPlan, tags: &[Arc<str>]) -> Option<UnixMillis> {
    repo.tags
        .iter()
        .filter(|t| tags.iter().any(|name| **name == *t.tag))
        .map(|t| t.pushed)
        .max()
}

/// One action's row, with the push time it sorts by.
fn action_row(repo: &RepositoryPlan, action: &Action) -> (Option<UnixMillis>, [String; 6]) {
    match action {
        Action::DeleteDigest {
            digest,
            tags,
            bytes,
            follows,
            ..
        } => {
            let pushed = pushed_of(repo, tags);
            let tag = match tags.split_first() {
                Some((first, [])) => first.to_string(),
                Some((first, rest)) => format!("{first} (+{})", rest.len()),
                None => "-".into(),
            };
            let why = match (follows, tags.len()) {
                (Some(why), _) => why.clone(),
                (None, 0 | 1) => "no rule keeps it".into(),
                (None, _) => format!("with its tags {}", tags.join(", ")),
            };
            let row = [
                tag,
                short(digest),
                date(pushed),
                human_bytes(*bytes),
                "delete".into(),
                why,
            ];
            (pushed, row)
        }
        Action::Untag { tag, digest } => {
            let pushed = pushed_of(repo, std::slice::from_ref(tag));
            let row = [
                tag.to_string(),
                short(digest),
                date(pushed),
                "-".into(),
                "untag".into(),
                "the digest stays for other tags or uses".into(),
            ];
            (pushed, row)
        }
        Action::DeleteUntagged {
            digest, bytes, why, ..
        } => {
            let row = [
                "-".into(),
                short(digest),
                "-".into(),
                human_bytes(*bytes),
                "delete".into(),
                why.clone(),
            ];
            (None, row)
        }
    }
}

fn short(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    hex[..hex.len().min(12)].to_string()
}

fn date(at: Option<UnixMillis>) -> String {
    at.map_or("-".into(), |at| {
        format_time(at)
            .replacen('T', " ", 1)
            .trim_end_matches('Z')
            .to_string()
    })
}

pub fn explain_table(explanation: &Explanation) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}:{} ({}) as of {}",
        explanation.repository,
        explanation.tag,
        explanation.digest,
        format_time(explanation.at)
    );
    let _ = writeln!(
        out,
        "scope: {}",
        explanation.scope.unwrap_or("none (never touched)")
    );
    for outcome in explanation.rules {
        let mark = if outcome.keeps { "keeps" } else { "  -  " };
        let _ = writeln!(out, "  {mark}  {:<24} {}", outcome.rule, outcome.detail);
    }
    let verdict = match explanation.action {
        "keep" => "KEPT",
        "untag" => "UNTAGGED (the tag goes; its digest stays for other tags or uses)",
        _ => "DELETED (no rule keeps it)",
    };
    let _ = writeln!(out, "verdict: {verdict}");
    out
}
