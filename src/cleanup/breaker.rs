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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::policy::{RepositoryPlan, TagPlan, Totals};

    /// A repository of `tags` tags of which the first `removed` are deleted (one digest each).
    fn repository(name: &str, tags: usize, removed: usize) -> RepositoryPlan {
        let tag = |n: usize| TagPlan {
            tag: format!("t{n}").into(),
            digest: format!("sha256:{n:064}").into(),
            pushed: crate::index::UnixMillis(1),
            keep: n >= removed,
            reasons: Vec::new(),
            outcomes: Vec::new(),
        };
        let tags: Vec<TagPlan> = (0..tags).map(tag).collect();
        RepositoryPlan {
            repository: name.into(),
            scope: Some("all".into()),
            kept: Totals::default(),
            deleted: Totals {
                tags: removed,
                bytes: 0,
            },
            actions: tags
                .iter()
                .filter(|t| !t.keep)
                .map(|t| Action::DeleteDigest {
                    digest: t.digest.clone(),
                    tags: vec![Arc::clone(&t.tag)],
                    bytes: 0,
                    follows: None,
                    after: Vec::new(),
                })
                .collect(),
            tags,
        }
    }

    fn plan(repositories: Vec<RepositoryPlan>) -> Plan {
        Plan {
            at: crate::index::UnixMillis(1),
            repositories,
            warnings: Vec::new(),
        }
    }

    fn limits(max_deletions: usize, max_fraction: f64) -> CleanupConfig {
        CleanupConfig {
            max_deletions,
            max_fraction,
            ..CleanupConfig::default()
        }
    }

    #[test]
    fn the_count_limit_trips_above_max_deletions() {
        let plan = plan(vec![repository("a", 100, 30), repository("b", 100, 30)]);
        assert_eq!(removals(&plan), (60, 0));
        let why = check(&plan, &limits(59, 1.0)).expect("60 > 59 trips");
        assert!(
            why.contains("removes 60 tags") && why.contains("maxDeletions (59)"),
            "{why}"
        );
        assert_eq!(check(&plan, &limits(60, 1.0)), None, "60 is allowed");
    }

    #[test]
    fn the_fraction_limit_trips_per_repository_above_the_floor() {
        let mixed = plan(vec![repository("small", 4, 4), repository("big", 20, 15)]);
        let why = check(&mixed, &limits(1000, 0.5)).expect("15 of 20 > 50% trips");
        assert!(
            why.contains("15 of 20 tags in big (75%)") && why.contains("maxFraction (50%)"),
            "{why}"
        );
        assert_eq!(
            check(&mixed, &limits(1000, 0.75)),
            None,
            "exactly 75% is allowed"
        );
        // Below the floor only the count decides: 4 of 4 is ordinary.
        let small = plan(vec![repository(
            "small",
            FRACTION_FLOOR - 1,
            FRACTION_FLOOR - 1,
        )]);
        assert_eq!(check(&small, &limits(1000, 0.1)), None);
    }
}
