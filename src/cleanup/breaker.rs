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

/// Tags a plan removes (every tag of a deleted digest, and each untagged tag).
pub fn removed_tags(plan: &Plan) -> usize {
    plan.repositories
        .iter()
        .flat_map(|r| &r.actions)
        .map(|a| match a {
            Action::DeleteDigest { tags, .. } => tags.len(),
            Action::Untag { .. } => 1,
        })
        .sum()
}

/// Why the run must stop, or `None` when it may go on.
pub fn check(plan: &Plan, config: &CleanupConfig) -> Option<String> {
    let total = removed_tags(plan);
    if total > config.max_deletions {
        return Some(format!(
            "the plan removes {total} tags, more than cleanup.maxDeletions ({})",
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
