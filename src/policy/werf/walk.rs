//! The newest-first walks along each selected reference, numbering each member's images and
//! keeping those the reference's `imagesPerReference` keeps; with notes wanted, going on past
//! the last kept image (within a budget) to say where the others sit.

use std::{cmp::Reverse, collections::BinaryHeap};

use super::{GitVerdicts, Notes, Rule, Words, rule::beyond};
use crate::{
    config::Operator,
    policy::{
        HashMap, HashSet,
        git_facts::{CommitIndex, GitFacts, GitReference, ReferenceKind},
    },
};

/// The reference being walked.
pub(super) struct Current<'r> {
    /// Its number: marks which walk visited a commit, and which walk a member's count is of.
    pub walk: u32,
    pub rule: Rule,
    pub reference: &'r GitReference,
    /// `branch main`, `tag v1.2`.
    pub label: &'r str,
}

/// The state all walks of one group share: what each member's images were found to be.
pub(super) struct Walks<'a, 'i> {
    facts: &'i GitFacts,
    images: &'i HashMap<CommitIndex, Vec<(u32, &'a str)>>,
    members: usize,
    notes: Option<Notes>,
    /// Commits still to visit only to place images in words, over all walks.
    budget: usize,
    /// How many (member, image) pairs there are (with notes), and how many are placed.
    images_total: usize,
    placed: usize,
    /// Commit → the last walk that queued it.
    stamp: Vec<u32>,
    /// Per member: groups found on the current reference, and the walk that counted them.
    found: Vec<(u32, i64)>,
    /// (member, digest) already counted on the current reference.
    seen: HashSet<(u32, &'a str)>,
    /// Scratch: one member's digests at one commit not counted before.
    fresh: Vec<&'a str>,
    pub verdicts: Vec<GitVerdicts<'a>>,
}

impl<'a, 'i> Walks<'a, 'i> {
    pub fn new(
        facts: &'i GitFacts,
        images: &'i HashMap<CommitIndex, Vec<(u32, &'a str)>>,
        members: usize,
        notes: Option<Notes>,
    ) -> Self {
        let images_total = if notes.is_some() {
            images.values().flatten().collect::<HashSet<_>>().len()
        } else {
            0
        };
        Self {
            facts,
            images,
            members,
            notes,
            budget: notes.map_or(0, |n| n.budget),
            images_total,
            placed: 0,
            stamp: vec![u32::MAX; facts.commits()],
            found: vec![(u32::MAX, 0i64); members],
            seen: HashSet::default(),
            fresh: Vec::new(),
            verdicts: (0..members).map(|_| GitVerdicts::default()).collect(),
        }
    }

    /// One reference: a tag's own commit, or a branch newest-first through its ancestors.
    pub fn walk(&mut self, current: &Current) {
        self.seen.clear();
        let mut exhausted = 0usize;
        let start = current.reference.commit;
        match current.reference.kind {
            ReferenceKind::Tag => {
                self.visit(
                    current,
                    start,
                    self.facts.time(start),
                    false,
                    &mut exhausted,
                );
            }
            ReferenceKind::Branch => self.walk_branch(current, start, &mut exhausted),
        }
    }

    fn walk_branch(&mut self, current: &Current, start: CommitIndex, exhausted: &mut usize) {
        let facts = self.facts;
        let mut frontier = BinaryHeap::new();
        frontier.push((facts.time(start), Reverse(start)));
        self.stamp[start as usize] = current.walk;
        let mut noting = false;
        while let Some((time, Reverse(commit))) = frontier.pop() {
            if !noting && current.rule.walk_done(*exhausted == self.members, time) {
                // Words wanted: go on a while, to say where the rest sit.
                noting = self.notes.is_some();
            }
            if noting {
                // Every image placed (kept, or noted where it sits): nothing left to say.
                if self.budget == 0 || self.placed == self.images_total {
                    break;
                }
                self.budget -= 1;
            }
            self.visit(current, commit, time, noting, exhausted);
            for &parent in facts.parents(commit) {
                if self.stamp[parent as usize] != current.walk {
                    self.stamp[parent as usize] = current.walk;
                    frontier.push((facts.time(parent), Reverse(parent)));
                }
            }
        }
    }

    /// The images at `commit`, one group per member (images of one commit count as one).
    /// `noting`: past the point where the walk would stop, only to place images in words.
    fn visit(
        &mut self,
        current: &Current,
        commit: CommitIndex,
        time: i64,
        noting: bool,
        exhausted: &mut usize,
    ) {
        let Some(entries) = self.images.get(&commit) else {
            return;
        };
        let rule = &current.rule;
        let mut i = 0;
        while i < entries.len() {
            let member = entries[i].0;
            let mut j = i;
            // A member that has counted its `last` (And) keeps nothing further on this
            // reference: without notes to write, its later images need no look.
            let counted = self.found[member as usize];
            if self.notes.is_none()
                && rule.operator == Operator::And
                && counted.0 == current.walk
                && rule.last.is_some_and(|l| counted.1 >= l)
            {
                while j < entries.len() && entries[j].0 == member {
                    j += 1;
                }
                i = j;
                continue;
            }
            self.fresh.clear();
            while j < entries.len() && entries[j].0 == member {
                if self.seen.insert(entries[j]) {
                    self.fresh.push(entries[j].1);
                }
                j += 1;
            }
            i = j;
            if self.fresh.is_empty() {
                continue;
            }
            let slot = &mut self.found[member as usize];
            if slot.0 != current.walk {
                *slot = (current.walk, 0);
            }
            slot.1 += 1;
            let k = slot.1;
            let max_notes = self.notes.map_or(0, |n| n.per_digest);
            let verdicts = &mut self.verdicts[member as usize];
            let placing = Placing {
                current,
                k,
                time,
                max_notes,
            };
            placing.record(verdicts, &self.fresh, noting, &mut self.placed);
            if rule.last == Some(k) {
                *exhausted += 1;
            }
        }
    }
}

/// The k-th group of one member's images on the current reference, dated `time`.
struct Placing<'c, 'r> {
    current: &'c Current<'r>,
    k: i64,
    time: i64,
    max_notes: usize,
}

impl Placing<'_, '_> {
    /// Kept by the reference's rule, or (with notes wanted) where it sits. Nothing found while
    /// `noting` is kept: the decisions are the same with or without words.
    fn record<'a>(
        &self,
        verdicts: &mut GitVerdicts<'a>,
        digests: &[&'a str],
        noting: bool,
        placed: &mut usize,
    ) {
        let Self {
            current, k, time, ..
        } = *self;
        let (rule, label) = (&current.rule, current.label);
        if !noting && rule.keeps(k, time) {
            let why: Words = match current.reference.kind {
                ReferenceKind::Tag => label.into(),
                ReferenceKind::Branch => format!("{label}, {}", rule.describe(k)).into(),
            };
            for digest in digests {
                if !verdicts.placed(digest) {
                    *placed += 1;
                }
                verdicts.kept.entry(digest).or_default().push(why.clone());
            }
        } else if self.max_notes > 0 {
            let mut why: Option<Words> = None;
            for digest in digests {
                if !verdicts.placed(digest) {
                    *placed += 1;
                }
                let notes = verdicts.not_kept.entry(digest).or_default();
                if notes.len() < self.max_notes {
                    // Worded once per group, and only when some image still needs it.
                    let why = why.get_or_insert_with(|| {
                        match current.reference.kind {
                            ReferenceKind::Tag => {
                                format!("{label}: its commit's image, {}", beyond(rule, k, time))
                            }
                            ReferenceKind::Branch => {
                                format!("{label}: image {k}, {}", beyond(rule, k, time))
                            }
                        }
                        .into()
                    });
                    notes.push(why.clone());
                }
            }
        }
    }
}
