//! One repository's plan: each tag's verdicts, the digests they keep, what follows a
//! signature's subject, and the actions.

use std::collections::BTreeSet;

use super::{
    Details, Digest, HashSet, InUse, Inputs, Outcome, RepositoryPlan, RepositorySnapshot, Tag,
    TagPlan, Totals, actions, closure, rules,
};
use crate::config::Scope;

/// `sha256-<hex>.sig|.att|.sbom`: cosign's tags for a digest's signature, attestation, SBOM.
fn cosign_subject(tag: &str) -> Option<String> {
    let (hex, suffix) = tag.strip_prefix("sha256-")?.split_once('.')?;
    (hex.len() == 64
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && matches!(suffix, "sig" | "att" | "sbom"))
    .then(|| format!("sha256:{hex}"))
}

fn size(repo: &RepositorySnapshot, digest: &str) -> u64 {
    repo.manifests.get(digest).map_or(0, |m| m.total_size)
}

/// A repository outside every scope: all kept, nothing to do.
pub fn untouched(name: &str, repo: &RepositorySnapshot) -> RepositoryPlan {
    let tags: Vec<TagPlan> = repo
        .tags
        .iter()
        .map(|t| TagPlan {
            tag: t.tag.clone(),
            digest: t.digest.clone(),
            pushed: t.last_pushed,
            keep: true,
            reasons: vec!["outside every retention scope".into()],
            outcomes: vec![Outcome {
                rule: "scope",
                keeps: true,
                detail: "outside every retention scope: never touched".into(),
            }],
        })
        .collect();
    let digests: BTreeSet<&str> = repo.tags.iter().map(|t| &*t.digest).collect();
    RepositoryPlan {
        repository: name.to_string(),
        scope: None,
        kept: Totals {
            tags: tags.len(),
            bytes: digests.iter().map(|d| size(repo, d)).sum(),
        },
        deleted: Totals::default(),
        tags,
        actions: Vec::new(),
    }
}

/// The plan of one repository `scope` governs: verdicts per tag, the closure of what they
/// keep, then the actions that delete the rest.
pub fn evaluate_repository(
    name: &str,
    repo: &RepositorySnapshot,
    scope: &Scope,
    git: &rules::GitOutcomes,
    uses: &[(&'static str, &InUse)],
    inputs: &Inputs,
) -> RepositoryPlan {
    let context = rules::TagContext::new(name, repo, scope, inputs, uses);
    let (mut tags, followers) = verdicts(repo, &context, git, inputs.details);
    let fail_closed = !inputs.usage.kubernetes_unavailable.is_empty()
        || !inputs.usage.helm_unavailable.is_empty();
    let kept = closure::kept_digests(repo, &tags, &context);
    let references = actions::References::new(repo);
    let untagged = match &scope.untagged_manifests {
        Some(rule) if !fail_closed => {
            closure::untagged_deletable(repo, scope, rule, &references.tagged, &kept, inputs.now)
        }
        _ => Vec::new(),
    };
    // Tags sorted by (digest, name) group each digest's tags without a map of lists.
    let mut order: Vec<usize> = (0..tags.len()).collect();
    order.sort_unstable_by(|a, b| {
        (&tags[*a].digest, &tags[*a].tag).cmp(&(&tags[*b].digest, &tags[*b].tag))
    });
    let groups = groups(&tags, &order);
    let deletions = actions::deletions(
        repo,
        &tags,
        &groups,
        &kept,
        &untagged,
        &followers,
        &references,
    );
    follow_subjects(&mut tags, &followers, &deletions);
    for tag in &mut tags {
        give_reasons(tag, inputs.details, &deletions);
    }
    let actions = actions::actions(repo, &tags, &groups, &deletions, &references);
    let kept_digests: HashSet<&str> = tags
        .iter()
        .map(|t| &*t.digest)
        .filter(|d| !deletions.contains(d))
        .collect();
    let kept_tags = tags.iter().filter(|t| t.keep).count();
    RepositoryPlan {
        repository: name.to_string(),
        scope: Some(scope.name.clone()),
        kept: Totals {
            tags: kept_tags,
            bytes: kept_digests.iter().map(|d| size(repo, d)).sum(),
        },
        deleted: Totals {
            tags: tags.len() - kept_tags,
            bytes: deletions.digests().map(|d| size(repo, d)).sum(),
        },
        tags,
        actions,
    }
}

/// Every tag's verdicts, and the cosign tags that follow their subject instead. cosign's
/// `sha256-<hex>.sig|.att|.sbom` tags whose subject is in this repository stay while it
/// stays, and go when it is deleted. Those whose subject is not here (cosign's
/// COSIGN_REPOSITORY) are judged by the rules like any tag.
fn verdicts(
    repo: &RepositorySnapshot,
    context: &rules::TagContext,
    git: &rules::GitOutcomes,
    details: Details,
) -> (Vec<TagPlan>, Vec<(usize, Digest)>) {
    let present: HashSet<&str> = if repo.tags.iter().any(|t| cosign_subject(&t.tag).is_some()) {
        repo.manifests
            .keys()
            .map(|d| &**d)
            .chain(repo.tags.iter().map(|t| &*t.digest))
            .collect()
    } else {
        HashSet::default()
    };
    let mut followers: Vec<(usize, Digest)> = Vec::new();
    let tags = repo
        .tags
        .iter()
        .enumerate()
        .map(|(i, tag)| {
            let subject = cosign_subject(&tag.tag);
            let outcomes = match subject {
                Some(subject) if present.contains(subject.as_str()) => {
                    followers.push((i, Digest::from(subject)));
                    Vec::new()
                }
                _ => rule_outcomes(context, tag, git, details),
            };
            TagPlan {
                tag: tag.tag.clone(),
                digest: tag.digest.clone(),
                pushed: tag.last_pushed,
                keep: outcomes.iter().any(|o| o.keeps),
                reasons: Vec::new(),
                outcomes,
            }
        })
        .collect();
    (tags, followers)
}

/// A signature or attestation stays exactly while its subject stays.
fn follow_subjects(
    tags: &mut [TagPlan],
    followers: &[(usize, Digest)],
    deletions: &actions::Deletions,
) {
    for (i, subject) in followers {
        let stays = !deletions.contains(subject);
        let tag = &mut tags[*i];
        tag.keep = stays;
        tag.outcomes.push(Outcome {
            rule: "follows",
            keeps: stays,
            detail: if stays {
                format!("signature/attestation of {subject}, which stays")
            } else {
                format!("signature/attestation of {subject}, which is deleted")
            },
        });
    }
}

/// Why it is kept; or, for a tag no rule keeps, each rule's why not (in the plans that word
/// them: `explain`, `plan`, a cleanup's audit).
fn give_reasons(tag: &mut TagPlan, details: Details, deletions: &actions::Deletions) {
    let keep = tag.keep;
    tag.reasons = tag
        .outcomes
        .iter()
        .filter(|o| o.keeps == keep && !o.detail.is_empty())
        .map(|o| o.detail.clone())
        .collect();
    let keep_words = match details {
        Details::All => false,
        Details::Reasons => true,
        Details::Removed => tag.keep,
    };
    if keep_words {
        tag.outcomes.retain(|o| o.keeps);
    }
    if details != Details::Reasons
        && !tag.keep
        && let Some(why) = deletions.pinned.get(&*tag.digest)
    {
        tag.outcomes.push(Outcome {
            rule: "follows",
            keeps: false,
            detail: format!("removed as a tag only: its digest is {why}"),
        });
    }
}

/// Every rule's verdict on one tag, in as many words as `details` asks for.
fn rule_outcomes(
    context: &rules::TagContext,
    tag: &Tag,
    git: &rules::GitOutcomes,
    details: Details,
) -> Vec<Outcome> {
    let first = if details.all() {
        Details::All
    } else {
        Details::Reasons
    };
    let outcomes = context.outcomes(tag, git, first);
    if details == Details::Removed && !outcomes.iter().any(|o| o.keeps) {
        // Removed: the words of every verdict, for the audit log.
        context.outcomes(tag, git, Details::All)
    } else {
        outcomes
    }
}

/// The tags of each digest: runs of `order` (tag indexes sorted by digest, then name).
fn groups<'o>(tags: &[TagPlan], order: &'o [usize]) -> Vec<&'o [usize]> {
    order
        .chunk_by(|a, b| tags[*a].digest == tags[*b].digest)
        .collect()
}
