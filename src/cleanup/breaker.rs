//! The circuit breaker: a plan that would remove more than `cleanup.maxDeletions` tags, or more
//! than `cleanup.maxFraction` of a repository's tags, stops the run before anything is deleted.
//! A mass deletion is far more often a broken input (an empty git clone, a renamed branch, a
//! cluster answering with nothing) than an intended cleanup.

use crate::{
    config::CleanupConfig,
    policy::{Action, Plan},
};

/// Repositories with fewer tags are judged by `maxDeletions` alone: removing 2 of 2 tags is
/// ordinary, not a sign of broken input.
pub const FRACTION_FLOOR: usize = 10;

/// What a plan removes: tags (every tag of a deleted digest, and each untagged tag), and
/// manifests deleted for being untagged (those that follow an index or subject are not counted:
/// what they follow is).
pub fn removals(plan: &Plan) -> (usize, usize) {
    plan.repositories
        .iter()
        .flat_map(|r| &r.actions)
        .fold((0, 0), |(tags, untagged), a| match a {
            Action::DeleteDigest { tags: t, .. } => (tags + t.len(), untagged),
            Action::Untag { .. } => (tags + 1, untagged),
            Action::DeleteUntagged { .. } => (tags, untagged + 1),
        })
}

/// Why the run must stop, or `None` when it may go on.
pub fn check(plan: &Plan, config: &CleanupConfig) -> Option<String> {
    let (tags, untagged) = removals(plan);
    if tags + untagged > config.max_deletions {
        let untagged = if untagged > 0 {
            format!(" and {untagged} untagged manifests")
        } else {
            String::new()
        };
        return Some(format!(
            "the plan removes {tags} tags{untagged}, more than cleanup.maxDeletions ({})",
            config.max_deletions
        ));
    }
    for repository in &plan.repositories {
        let tags = repository.tags.len();
        let removed = repository.deleted.tags;
        if tags >= FRACTION_FLOOR && removed as f64 > config.max_fraction * tags as f64 {
            return Some(format!(
                "the plan removes {removed} of {tags} tags in {} ({:.0}%), more than cleanup.maxFraction ({:.0}%)",
                repository.repository,
                100.0 * removed as f64 / tags as f64,
                100.0 * config.max_fraction
            ));
        }
    }
    None
}
