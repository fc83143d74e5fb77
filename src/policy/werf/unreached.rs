//! Words for the images no walk placed: is their commit on a selected reference at all?

use super::{GitVerdicts, Words};
use crate::policy::{
    HashMap,
    git_facts::{CommitIndex, GitFacts, ReferenceKind},
};

/// For each image no walk kept or placed: whether any selected reference reaches its commit
/// at all — one flood over all parents from every selected branch, plus each selected tag's own
/// commit.
pub(super) fn note_unreached<'a>(
    facts: &GitFacts,
    selected: &[bool],
    images: &HashMap<CommitIndex, Vec<(u32, &'a str)>>,
    max_notes: usize,
    verdicts: &mut [GitVerdicts<'a>],
) {
    let mut pending: Vec<(CommitIndex, u32, &'a str)> = images
        .iter()
        .flat_map(|(commit, entries)| entries.iter().map(|(m, d)| (*commit, *m, *d)))
        .filter(|(_, member, digest)| !verdicts[*member as usize].placed(digest))
        .collect();
    if pending.is_empty() {
        return;
    }
    pending.sort_unstable();
    let mut reached = vec![false; facts.commits()];
    let mut flooded = vec![false; facts.commits()];
    let mut stack: Vec<CommitIndex> = Vec::new();
    for (reference, _) in facts.references.iter().zip(selected).filter(|(_, s)| **s) {
        reached[reference.commit as usize] = true;
        if reference.kind == ReferenceKind::Branch {
            stack.push(reference.commit);
        }
    }
    while let Some(commit) = stack.pop() {
        if std::mem::replace(&mut flooded[commit as usize], true) {
            continue;
        }
        reached[commit as usize] = true;
        stack.extend(
            facts
                .parents(commit)
                .iter()
                .filter(|p| !flooded[**p as usize]),
        );
    }
    // Worded per commit only when few images need it (`explain`); shared otherwise: a cleanup
    // worded for a million removals holds two sentences, not a million.
    let per_commit = max_notes > 1;
    let reached_words: Words =
        "its commit is on a selected reference, further back than the images placed".into();
    let unreached_words: Words = "no selected branch or tag reaches its commit".into();
    for (commit, member, digest) in pending {
        let why: Words = if per_commit {
            let id = facts.id(commit).to_string();
            let short = &id[..id.len().min(12)];
            if reached[commit as usize] {
                format!(
                    "commit {short} is on a selected reference, further back than the images placed"
                )
                .into()
            } else {
                format!("no selected branch or tag reaches commit {short}").into()
            }
        } else if reached[commit as usize] {
            reached_words.clone()
        } else {
            unreached_words.clone()
        };
        let notes = verdicts[member as usize]
            .not_kept
            .entry(digest)
            .or_default();
        if notes.len() < max_notes {
            notes.push(why);
        }
    }
}
