//! werf's `keepPolicies` over one image repository: which references each policy selects
//! (name, then `limit`), which policy gives each reference its `imagesPerReference` (the last
//! one selecting it), and the newest-first walks that number this repository's images along
//! each reference.

mod rule;
mod unreached;
mod walk;

use rule::Rule;

use crate::{
    config::{KeepPolicy, Limit, reference_pattern},
    policy::{
        HashMap,
        git_facts::{CommitIndex, GitFacts, ReferenceKind},
    },
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
    if images.is_empty() {
        return (0..members).map(|_| GitVerdicts::default()).collect();
    }
    let effective = effective_limits(policies, facts, now);
    let selected: Vec<bool> = effective.iter().map(Option::is_some).collect();
    let mut walked: Vec<String> = Vec::new();
    let mut walks = walk::Walks::new(facts, images, members, notes);
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
        walks.walk(&walk::Current {
            walk: walk as u32,
            rule,
            reference,
            label: &label,
        });
    }
    let mut verdicts = walks.verdicts;
    if let Some(notes) = notes {
        unreached::note_unreached(facts, &selected, images, notes.per_digest, &mut verdicts);
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

/// Reference → the `imagesPerReference` of the last policy selecting it (`None`: no policy
/// selects it). A policy selects by kind and name, then by its `references.limit`, newest
/// first.
fn effective_limits<'p>(
    policies: &'p [KeepPolicy],
    facts: &GitFacts,
    now: i64,
) -> Vec<Option<Option<&'p Limit>>> {
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
    effective
}
