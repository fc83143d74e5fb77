//! The plan's safety properties over generated histories and registries, with git history
//! built in memory (`policy::git_facts::GraphBuilder`, no repository on disk) and proptest
//! shrinking any failure to its smallest case: adding a keep rule never deletes more; a tag in
//! use is never deleted; an unreadable source keeps everything it could keep; the plan is
//! deterministic; no action deletes a digest a kept tag points to.

use std::collections::BTreeSet;

use proptest::prelude::*;
use regkeeper::{
    config::RetentionConfig,
    index::UnixMillis,
    policy::{
        self, Action, ImageRef, InUse, Plan, Snapshot, Usage,
        git_facts::{CommitId, GitFacts, GraphBuilder, ReferenceKind},
    },
};

use super::{DAY, NOW, REPOSITORY, evaluate_facts, kept_tags, snapshot};

/// A generated case: a main line of commits (one a day), a feature branch head on it, tags on
/// images linked to a commit or untracked, pushed some hours ago, and which tags are in use.
#[derive(Clone, Debug)]
struct Case {
    commits: usize,
    feature_at: usize,
    /// Per tag: the commit its image was built from (`None`: no link) and its push age in hours.
    tags: Vec<(Option<usize>, u64)>,
    /// `imagesPerReference.last` for main.
    last: i64,
    /// Tags (by number) a live workload runs.
    used: BTreeSet<usize>,
}

fn cases() -> impl Strategy<Value = Case> {
    (2usize..30, 1usize..12).prop_flat_map(|(commits, tags)| {
        (
            0..commits,
            prop::collection::vec(
                (prop::option::weighted(0.8, 0..commits), 0u64..24 * 40),
                tags,
            ),
            0i64..5,
            prop::collection::btree_set(0..tags, 0..=tags.min(3)),
        )
            .prop_map(move |(feature_at, tags, last, used)| Case {
                commits,
                feature_at,
                tags,
                last,
                used,
            })
    })
}

fn commit_id(n: usize) -> CommitId {
    let mut id = [0x5a; 20];
    id[..8].copy_from_slice(&(n as u64 + 1).to_be_bytes());
    CommitId(id)
}

/// The history, built in memory: commit `i`'s parent is `i - 1`.
fn history(case: &Case) -> GitFacts {
    let mut graph = GraphBuilder::new(false);
    for i in (0..case.commits).rev() {
        let time = NOW - (case.commits - i) as i64 * DAY;
        let parents = i.checked_sub(1).map(commit_id);
        graph.add(commit_id(i), time, parents).for_each(drop);
    }
    graph.finish(vec![
        (
            ReferenceKind::Branch,
            "main".into(),
            commit_id(case.commits - 1),
            None,
        ),
        (
            ReferenceKind::Branch,
            "feature".into(),
            commit_id(case.feature_at),
            None,
        ),
    ])
}

fn registry(case: &Case) -> Snapshot {
    let names: Vec<(String, Option<String>)> = case
        .tags
        .iter()
        .enumerate()
        .map(|(n, (commit, _))| (format!("t{n}"), commit.map(|c| commit_id(c).to_string())))
        .collect();
    let images: Vec<(&str, Option<&str>)> = names
        .iter()
        .map(|(t, c)| (t.as_str(), c.as_deref()))
        .collect();
    let mut snapshot = snapshot(&images);
    let repo =
        std::sync::Arc::make_mut(snapshot.repositories.get_mut(REPOSITORY).expect("the repo"));
    for (tag, (_, hours)) in repo.tags.iter_mut().zip(&case.tags) {
        let pushed = UnixMillis((NOW as u64 - hours * 3600) * 1000);
        tag.first_pushed = pushed;
        tag.last_pushed = pushed;
    }
    snapshot
}

fn retention(policies: &str) -> RetentionConfig {
    let yaml = format!(
        "gitRepositories:\n  - name: app\n    path: /nonexistent\n    repositories: [\"{REPOSITORY}\"]\nscopes:\n  - name: all\n    include: [\"**\"]\n    pushedWithin: 2h\n    untracked:\n      maxAge: 10d\n    keepPolicies:\n{policies}"
    );
    serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

fn main_policy(last: i64) -> String {
    format!(
        "      - references:\n          branch: main\n        imagesPerReference:\n          last: {last}\n"
    )
}

fn plan(
    snapshot: &Snapshot,
    git: Result<GitFacts, String>,
    retention: &RetentionConfig,
    usage: &Usage,
) -> Plan {
    evaluate_facts(
        snapshot,
        git,
        retention,
        usage,
        NOW,
        policy::Details::Reasons,
    )
}

fn usage_of(case: &Case, snapshot: &Snapshot) -> Usage {
    let repo = &snapshot.repositories[REPOSITORY];
    Usage {
        kubernetes: case
            .used
            .iter()
            .map(|n| {
                let tag = &repo
                    .tags
                    .iter()
                    .find(|t| *t.tag == *format!("t{n}"))
                    .unwrap();
                InUse {
                    repository: REPOSITORY.into(),
                    image: if n % 2 == 0 {
                        ImageRef::Tag(tag.tag.to_string())
                    } else {
                        ImageRef::Digest(tag.digest.to_string())
                    },
                    by: format!("prod/Deployment/d{n} container app"),
                }
            })
            .collect(),
        ..Usage::default()
    }
}

/// Digests the plan deletes whole.
fn deleted_digests(plan: &Plan) -> BTreeSet<String> {
    plan.repositories
        .iter()
        .flat_map(|r| &r.actions)
        .filter_map(|a| match a {
            Action::DeleteDigest { digest, .. } | Action::DeleteUntagged { digest, .. } => {
                Some(digest.to_string())
            }
            Action::Untag { .. } => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn adding_a_keep_rule_never_deletes_more(case in cases()) {
        let snapshot = registry(&case);
        let base = retention(&main_policy(case.last));
        let looser = retention(&format!(
            "{}      - references:\n          branch: feature\n        imagesPerReference:\n          last: 2\n",
            main_policy(case.last)
        ));
        let usage = Usage::default();
        let kept = kept_tags(&plan(&snapshot, Ok(history(&case)), &base, &usage));
        let kept_looser = kept_tags(&plan(&snapshot, Ok(history(&case)), &looser, &usage));
        prop_assert!(kept_looser.is_superset(&kept), "{kept:?} then {kept_looser:?}");
    }

    #[test]
    fn a_tag_in_use_is_never_deleted_nor_its_digest(case in cases()) {
        let snapshot = registry(&case);
        let usage = usage_of(&case, &snapshot);
        let plan = plan(&snapshot, Ok(history(&case)), &retention(&main_policy(0)), &usage);
        let kept = kept_tags(&plan);
        let deleted = deleted_digests(&plan);
        let repo = &snapshot.repositories[REPOSITORY];
        for n in &case.used {
            let tag = repo.tags.iter().find(|t| *t.tag == *format!("t{n}")).unwrap();
            prop_assert!(!deleted.contains(&*tag.digest), "t{n}'s digest deleted");
            if n % 2 == 0 {
                prop_assert!(kept.contains(&*tag.tag), "t{n} in use by tag, deleted");
            }
        }
    }

    #[test]
    fn an_unreadable_source_keeps_everything_it_could_keep(case in cases()) {
        let snapshot = registry(&case);
        let strict = retention(&main_policy(0));
        // Git unreadable: no linked tag goes.
        let plan_without_git =
            plan(&snapshot, Err("cannot open".into()), &strict, &Usage::default());
        let kept = kept_tags(&plan_without_git);
        for (n, (commit, _)) in case.tags.iter().enumerate() {
            if commit.is_some() {
                prop_assert!(kept.contains(&format!("t{n}")), "linked t{n} deleted without git");
            }
        }
        // A cluster unreadable: nothing goes.
        let blind = Usage {
            kubernetes_unavailable: vec!["prod: no answer".into()],
            ..Usage::default()
        };
        let plan_blind = plan(&snapshot, Ok(history(&case)), &strict, &blind);
        prop_assert_eq!(kept_tags(&plan_blind).len(), case.tags.len());
        prop_assert!(deleted_digests(&plan_blind).is_empty());
    }

    #[test]
    fn the_plan_is_deterministic_and_never_deletes_a_kept_tags_digest(case in cases()) {
        let snapshot = registry(&case);
        let usage = usage_of(&case, &snapshot);
        let retention = retention(&main_policy(case.last));
        let first = plan(&snapshot, Ok(history(&case)), &retention, &usage);
        let second = plan(&snapshot, Ok(history(&case)), &retention, &usage);
        prop_assert_eq!(&first, &second);
        let deleted = deleted_digests(&first);
        for tag in first.repositories.iter().flat_map(|r| &r.tags).filter(|t| t.keep) {
            prop_assert!(!deleted.contains(&*tag.digest), "kept {} loses its digest", tag.tag);
        }
    }
}

#[test]
fn the_in_memory_history_is_what_the_rules_walk() {
    // main keeps its newest 2 images: the builds of the last two commits; the rest goes.
    let case = Case {
        commits: 5,
        feature_at: 0,
        tags: (0..5).map(|c| (Some(c), 24 * 30)).collect(),
        last: 2,
        used: BTreeSet::new(),
    };
    let plan = plan(
        &registry(&case),
        Ok(history(&case)),
        &retention(&main_policy(2)),
        &Usage::default(),
    );
    assert_eq!(
        kept_tags(&plan),
        BTreeSet::from(["t3".to_string(), "t4".to_string()]),
        "{plan:#?}"
    );
}
