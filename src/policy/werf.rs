//! werf's `keepPolicies` over one image repository: which references each policy selects
//! (name, then `limit`), which policy gives each reference its `imagesPerReference` (the last
//! one selecting it), and the newest-first walks that number this repository's images along
//! each reference.

use std::collections::BinaryHeap;

use super::HashMap;

use crate::{
    config::{KeepPolicy, Limit, Operator, reference_pattern},
    policy::git_facts::{CommitIndex, GitFacts, ReferenceKind},
};

/// Commits are not perfectly time-ordered (clock skew between committers); a walk goes this
/// far past the cutoff before concluding no later image can be kept.
const CLOCK_SKEW_SECS: i64 = 24 * 3600;

/// How much a walk says about the images it does not keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notes {
    /// "Why not" notes kept per digest.
    pub per_digest: usize,
    /// Commits visited past the point where the walks stop, per evaluation, to say at which
    /// rank each image no reference keeps sits (`branch main: image 12, beyond the last
    /// 10`): enough for ordinary histories, bounded for huge ones.
    pub budget: usize,
}

impl Notes {
    /// `explain`: every reference that places the image (up to four).
    pub const ALL: Self = Self {
        per_digest: 4,
        budget: 2_000_000,
    };
    /// `plan` and a cleanup's audit, worded for every removal: the first reference that
    /// places each image.
    pub const REMOVED: Self = Self {
        per_digest: 1,
        budget: 500_000,
    };
}

/// Words shared by every image of one group (one sentence per reference and rank, not one
/// per image: a plan worded for a million removals holds a sentence per group).
pub type Words = std::sync::Arc<str>;

/// What the git policies decided for this repository's digests.
#[derive(Debug, Default)]
pub struct GitVerdicts<'a> {
    /// Digest → why it is kept (`branch main, image 3 of 10`).
    pub kept: HashMap<&'a str, Vec<Words>>,
    /// Digest → where it was seen but not kept (`branch main: image 12, beyond the last 10`).
    pub not_kept: HashMap<&'a str, Vec<Words>>,
    /// What each walked reference keeps (`branch main keeps the newest 10 images`), for
    /// explaining digests no walk reached.
    pub walked: Vec<String>,
}

impl GitVerdicts<'_> {
    /// Whether some walk kept `digest`, or said where it sits.
    fn placed(&self, digest: &str) -> bool {
        self.kept.contains_key(digest) || self.not_kept.contains_key(digest)
    }
}

/// `last` / `in` / `operator` resolved: `None` means no condition.
#[derive(Clone, Copy, Debug)]
struct Rule {
    last: Option<i64>,
    cutoff: Option<i64>,
    within_secs: Option<i64>,
    operator: Operator,
}

impl Rule {
    /// `last_default` is werf's: 1 for `imagesPerReference`, unlimited for `references.limit`.
    fn new(limit: Option<&Limit>, last_default: Option<i64>, now: i64) -> Self {
        let last = match limit.and_then(|l| l.last) {
            Some(n) if n < 0 => None,
            Some(n) => Some(n),
            None => last_default,
        };
        let within_secs = limit
            .and_then(|l| l.within)
            .map(|w| i64::try_from(w.0.as_secs()).unwrap_or(i64::MAX));
        Self {
            last,
            cutoff: within_secs.map(|w| now.saturating_sub(w)),
            within_secs,
            operator: limit.and_then(|l| l.operator).unwrap_or_default(),
        }
    }

    /// Whether the k-th (1-based) item dated `time` is kept. An unlimited `last` is a
    /// condition every item meets (werf: `filterReferencesByLast(-1)` returns them all, a scan
    /// with `last < 0` keeps every image it reaches): under `Or` it keeps everything.
    fn keeps(&self, k: i64, time: i64) -> bool {
        let by_last = self.last.is_none_or(|l| k <= l);
        match (self.operator, self.cutoff) {
            (_, None) => by_last,
            (Operator::And, Some(c)) => by_last && time > c,
            (Operator::Or, Some(c)) => by_last || time > c,
        }
    }

    /// No member can keep a later image: each has counted its `last` (`counted_all`; an
    /// unlimited `last` never is), and/or the walk is past the cutoff (allowing for skew), as
    /// the operator combines them.
    fn walk_done(&self, counted_all: bool, time: i64) -> bool {
        let counted = self.last.is_some() && counted_all;
        let too_old = self
            .cutoff
            .map(|c| time < c.saturating_sub(CLOCK_SKEW_SECS));
        match (self.operator, too_old) {
            (_, None) => counted,
            (Operator::And, Some(old)) => counted || old,
            (Operator::Or, Some(old)) => counted && old,
        }
    }

    fn summary(&self) -> String {
        let within = self
            .within_secs
            .map(|w| format!("committed within {}", human_secs(w)));
        match (self.last, within, self.operator) {
            (Some(l), None, _) => format!("the newest {l} images"),
            (Some(l), Some(w), Operator::And) => format!("the newest {l} images {w}"),
            (Some(l), Some(w), Operator::Or) => format!("the newest {l} images and all {w}"),
            (None, Some(w), Operator::And) => format!("all images {w}"),
            (None, _, _) => "all its images".into(),
        }
    }

    fn describe(&self, k: i64) -> String {
        match (self.last, self.within_secs) {
            (Some(l), _) => format!("image {k} of {l}"),
            (None, Some(w)) => format!("image {k} within {}", human_secs(w)),
            (None, None) => format!("image {k}"),
        }
    }
}

/// Evaluates `policies` for the `members` repositories of one scope built from one git
/// repository. `images` maps each commit to the members' tagged digests linked to it (sorted,
/// for determinism). Each reference is walked once for all members; each member's images are
/// numbered separately, as werf numbers each image name's. `now` is in seconds. `notes`: also
/// say where images were seen but not kept (for `explain`).
pub fn evaluate<'a>(
    policies: &[KeepPolicy],
    facts: &GitFacts,
    images: &HashMap<CommitIndex, Vec<(u32, &'a str)>>,
    members: usize,
    now: i64,
    notes: Option<Notes>,
) -> Vec<GitVerdicts<'a>> {
    let max_notes = notes.map_or(0, |n| n.per_digest);
    let mut verdicts: Vec<GitVerdicts<'a>> = (0..members).map(|_| GitVerdicts::default()).collect();
    if images.is_empty() {
        return verdicts;
    }
    // Reference → the imagesPerReference of the last policy selecting it.
    let mut effective: Vec<Option<Option<&Limit>>> = vec![None; facts.references.len()];
    for policy in policies {
        let (kind, pattern) = match (&policy.references.tag, &policy.references.branch) {
            (Some(tag), _) => (ReferenceKind::Tag, tag),
            (None, Some(branch)) => (ReferenceKind::Branch, branch),
            (None, None) => continue,
        };
        // Validated with the config; an invalid one selects nothing.
        let Ok(pattern) = reference_pattern(pattern) else {
            continue;
        };
        let mut selected: Vec<usize> = facts
            .references
            .iter()
            .enumerate()
            .filter(|(_, r)| r.kind == kind && pattern.is_match(&r.name))
            .map(|(i, _)| i)
            .collect();
        // Newest first; the name breaks ties so the choice is deterministic.
        selected.sort_by(|&a, &b| {
            let (ra, rb) = (&facts.references[a], &facts.references[b]);
            rb.date.cmp(&ra.date).then_with(|| ra.name.cmp(&rb.name))
        });
        let limit = Rule::new(policy.references.limit.as_ref(), None, now);
        for (rank, i) in selected.into_iter().enumerate() {
            if limit.keeps(rank as i64 + 1, facts.references[i].date) {
                effective[i] = Some(policy.images_per_reference.as_ref());
            }
        }
    }
    let selected: Vec<bool> = effective.iter().map(Option::is_some).collect();
    let mut walked: Vec<String> = Vec::new();
    let mut budget = notes.map_or(0, |n| n.budget);
    // How many (member, image) pairs there are, and how many the walks placed so far.
    let images_total = if notes.is_some() {
        images
            .values()
            .flatten()
            .collect::<super::HashSet<_>>()
            .len()
    } else {
        0
    };
    let mut placed = 0usize;
    let mut stamp = vec![u32::MAX; facts.commits()];
    // Per member: groups found on the current reference, and the walk that counted them.
    let mut found = vec![(u32::MAX, 0i64); members];
    let mut seen: super::HashSet<(u32, &'a str)> = std::collections::HashSet::default();
    let mut fresh: Vec<&'a str> = Vec::new();
    for (walk, (reference, images_per_reference)) in
        facts.references.iter().zip(effective).enumerate()
    {
        let Some(images_per_reference) = images_per_reference else {
            continue;
        };
        let rule = Rule::new(images_per_reference, Some(1), now);
        if rule.last == Some(0) {
            continue;
        }
        let walk = walk as u32;
        let label = match reference.kind {
            ReferenceKind::Branch => format!("branch {}", reference.name),
            ReferenceKind::Tag => format!("tag {}", reference.name),
        };
        if walked.len() < 16 {
            walked.push(match reference.kind {
                ReferenceKind::Tag => format!("{label} keeps its commit's images"),
                ReferenceKind::Branch => format!("{label} keeps {}", rule.summary()),
            });
        }
        // `noting`: past the point where the walk would stop, only to place images in words;
        // nothing found there is kept (the decisions are the same with or without words).
        let record = |member: u32,
                      digests: &[&'a str],
                      k: i64,
                      time: i64,
                      noting: bool,
                      placed: &mut usize,
                      verdicts: &mut [GitVerdicts<'a>]| {
            let verdicts = &mut verdicts[member as usize];
            if !noting && rule.keeps(k, time) {
                let why: Words = match reference.kind {
                    ReferenceKind::Tag => label.as_str().into(),
                    ReferenceKind::Branch => format!("{label}, {}", rule.describe(k)).into(),
                };
                for digest in digests {
                    if !verdicts.placed(digest) {
                        *placed += 1;
                    }
                    verdicts.kept.entry(digest).or_default().push(why.clone());
                }
            } else if max_notes > 0 {
                let mut why: Option<Words> = None;
                for digest in digests {
                    if !verdicts.placed(digest) {
                        *placed += 1;
                    }
                    let notes = verdicts.not_kept.entry(digest).or_default();
                    if notes.len() < max_notes {
                        // Worded once per group, and only when some image still needs it.
                        let why = why.get_or_insert_with(|| {
                            match reference.kind {
                                ReferenceKind::Tag => format!(
                                    "{label}: its commit's image, {}",
                                    beyond(&rule, k, time)
                                ),
                                ReferenceKind::Branch => {
                                    format!("{label}: image {k}, {}", beyond(&rule, k, time))
                                }
                            }
                            .into()
                        });
                        notes.push(why.clone());
                    }
                }
            }
        };
        // The images at `commit`, one group per member (images of one commit count as one).
        let mut visit = |commit: CommitIndex,
                         time: i64,
                         noting: bool,
                         exhausted: &mut usize,
                         seen: &mut super::HashSet<(u32, &'a str)>,
                         fresh: &mut Vec<&'a str>,
                         placed: &mut usize,
                         verdicts: &mut [GitVerdicts<'a>]| {
            let Some(entries) = images.get(&commit) else {
                return;
            };
            let mut i = 0;
            while i < entries.len() {
                let member = entries[i].0;
                let mut j = i;
                // A member that has counted its `last` (And) keeps nothing further on this
                // reference: without notes to write, its later images need no look.
                let counted = found[member as usize];
                if notes.is_none()
                    && rule.operator == Operator::And
                    && counted.0 == walk
                    && rule.last.is_some_and(|l| counted.1 >= l)
                {
                    while j < entries.len() && entries[j].0 == member {
                        j += 1;
                    }
                    i = j;
                    continue;
                }
                fresh.clear();
                while j < entries.len() && entries[j].0 == member {
                    if seen.insert(entries[j]) {
                        fresh.push(entries[j].1);
                    }
                    j += 1;
                }
                i = j;
                if fresh.is_empty() {
                    continue;
                }
                let slot = &mut found[member as usize];
                if slot.0 != walk {
                    *slot = (walk, 0);
                }
                slot.1 += 1;
                let k = slot.1;
                record(member, fresh, k, time, noting, placed, verdicts);
                if rule.last == Some(k) {
                    *exhausted += 1;
                }
            }
        };
        seen.clear();
        let mut exhausted = 0usize;
        match reference.kind {
            ReferenceKind::Tag => {
                let commit = reference.commit;
                visit(
                    commit,
                    facts.time(commit),
                    false,
                    &mut exhausted,
                    &mut seen,
                    &mut fresh,
                    &mut placed,
                    &mut verdicts,
                );
            }
            ReferenceKind::Branch => {
                let mut frontier = BinaryHeap::new();
                frontier.push((
                    facts.time(reference.commit),
                    std::cmp::Reverse(reference.commit),
                ));
                stamp[reference.commit as usize] = walk;
                let mut noting = false;
                while let Some((time, std::cmp::Reverse(commit))) = frontier.pop() {
                    if !noting && rule.walk_done(exhausted == members, time) {
                        // Words wanted: go on a while, to say where the rest sit.
                        noting = notes.is_some();
                    }
                    if noting {
                        // Every image placed (kept, or noted where it sits): nothing left to say.
                        if budget == 0 || placed == images_total {
                            break;
                        }
                        budget -= 1;
                    }
                    visit(
                        commit,
                        time,
                        noting,
                        &mut exhausted,
                        &mut seen,
                        &mut fresh,
                        &mut placed,
                        &mut verdicts,
                    );
                    for &parent in facts.parents(commit) {
                        if stamp[parent as usize] != walk {
                            stamp[parent as usize] = walk;
                            frontier.push((facts.time(parent), std::cmp::Reverse(parent)));
                        }
                    }
                }
            }
        }
    }
    if notes.is_some() {
        note_unreached(facts, &selected, images, max_notes, &mut verdicts);
    }
    for member in &mut verdicts {
        member.walked = walked.clone();
        for reasons in member.kept.values_mut() {
            reasons.sort();
            reasons.dedup();
        }
    }
    verdicts
}

/// For each image no walk kept or placed: whether any selected reference reaches its commit
/// at all — one flood over all parents from every selected branch, plus each selected tag's own
/// commit.
fn note_unreached<'a>(
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

fn beyond(rule: &Rule, k: i64, time: i64) -> String {
    let mut why = Vec::new();
    if let Some(last) = rule.last.filter(|&l| k > l) {
        why.push(format!("beyond the last {last}"));
    }
    if let (Some(cutoff), Some(w)) = (rule.cutoff, rule.within_secs)
        && time <= cutoff
    {
        let ago = cutoff.saturating_add(w).saturating_sub(time).max(0);
        let ago = match ago {
            s if s >= 86_400 => format!("{}d", s / 86_400),
            s if s >= 3_600 => format!("{}h", s / 3_600),
            s => format!("{}m", s / 60),
        };
        why.push(format!("committed {ago} ago, outside {}", human_secs(w)));
    }
    if why.is_empty() {
        "the policy's operator combines its conditions this way".into()
    } else {
        why.join(", ")
    }
}

/// `168h`, `2d`, `90m`: the largest unit that divides evenly.
pub fn human_secs(secs: i64) -> String {
    match secs {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3_600 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
