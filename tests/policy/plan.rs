//! The plan's safety properties: what live systems use is never deleted, whatever the other
//! rules say; a failed source keeps everything; adding a keep rule never deletes more; the plan
//! is deterministic; digests, indexes, referrers and signatures are handled as a whole.

use std::{collections::BTreeSet, sync::Arc};

use regkeeper::{
    index::{ManifestRecord, PreviousDigest, PullStats, TagRecord, UnixMillis},
    policy::{Action, ImageRef, InUse, RepositorySnapshot, Snapshot, Usage},
};

use super::{
    DAY, NOW, REPOSITORY, digest_of, evaluate, git::GitRepo, kept_tags, manifest, retention,
    snapshot,
};

/// A tiny deterministic generator (no dependency, reproducible failures).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound.max(1)
    }
}

/// A random repository: a git line with branches, tags pushed at random times, some linked.
fn random_case(seed: u64) -> (GitRepo, Snapshot) {
    let mut rng = Lcg(seed);
    let git = GitRepo::new();
    let commits = git.line(None, NOW - 40 * DAY, DAY / 2, 60);
    git.remote_branch("main", commits[59]);
    git.remote_branch("feature", commits[20 + rng.next(30) as usize]);
    git.lightweight_tag("v1", commits[rng.next(60) as usize]);
    let ids: Vec<(String, Option<String>)> = (0..25)
        .map(|i| {
            let commit = (rng.next(4) > 0).then(|| commits[rng.next(60) as usize].to_string());
            (format!("t{i:02}"), commit)
        })
        .collect();
    let images: Vec<(&str, Option<&str>)> = ids
        .iter()
        .map(|(t, c)| (t.as_str(), c.as_deref()))
        .collect();
    let mut snapshot = snapshot(&images);
    let repo = Arc::make_mut(snapshot.repositories.get_mut(REPOSITORY).unwrap());
    for tag in &mut repo.tags {
        let pushed = (NOW - rng.next(20 * DAY as u64) as i64) as u64 * 1000;
        tag.first_pushed = UnixMillis(pushed);
        tag.last_pushed = UnixMillis(pushed);
    }
    (git, snapshot)
}

#[test]
fn adding_a_keep_rule_never_deletes_more() {
    let policies = "- references:\n    branch: main\n  imagesPerReference:\n    last: 3\n";
    let extra_rules = [
        "    tags: [\"^t0\"]\n",
        "    lastPerRepository: 5\n",
        "    pushedWithin: 5d\n",
        "    untracked: {}\n",
    ];
    for seed in 1..=12 {
        let (git, snapshot) = random_case(seed);
        let strict = retention(
            git.dir.path(),
            policies,
            "    untracked:\n      maxAge: 1d\n    pushedWithin: 1h\n",
        );
        let base = kept_tags(&evaluate(&snapshot, &git, &strict, &Usage::default(), NOW));
        for extra in extra_rules {
            let scope = format!("    untracked:\n      maxAge: 1d\n    pushedWithin: 1h\n{extra}");
            // A later key wins in YAML maps only when allowed; build the looser scope whole.
            let scope = if extra.contains("pushedWithin") {
                scope.replace("    pushedWithin: 1h\n", "")
            } else if extra.contains("untracked") {
                scope.replace("    untracked:\n      maxAge: 1d\n", "")
            } else {
                scope
            };
            let loose = retention(git.dir.path(), policies, &scope);
            let kept = kept_tags(&evaluate(&snapshot, &git, &loose, &Usage::default(), NOW));
            assert!(
                kept.is_superset(&base),
                "seed {seed}, adding {extra:?} deleted {:?}",
                base.difference(&kept).collect::<Vec<_>>()
            );
        }
        // Adding a keep policy never deletes more either.
        let more = format!("{policies}- references:\n    branch: feature\n");
        let loose = retention(
            git.dir.path(),
            &more,
            "    untracked:\n      maxAge: 1d\n    pushedWithin: 1h\n",
        );
        let kept = kept_tags(&evaluate(&snapshot, &git, &loose, &Usage::default(), NOW));
        assert!(
            kept.is_superset(&base),
            "seed {seed}: a policy deleted more"
        );
    }
}

#[test]
fn an_image_in_use_is_never_deleted_whatever_the_other_rules_say() {
    for seed in 1..=8 {
        let (git, snapshot) = random_case(seed);
        // Rules that keep almost nothing.
        let strict = retention(
            git.dir.path(),
            "- references:\n    branch: main\n  imagesPerReference:\n    last: 0\n",
            "    untracked:\n      maxAge: 0s\n    pushedWithin: 0s\n",
        );
        let repo = &snapshot.repositories[REPOSITORY];
        let by_tag = &repo.tags[seed as usize % repo.tags.len()];
        let by_digest = &repo.tags[(seed as usize * 7 + 3) % repo.tags.len()];
        let usage = Usage {
            kubernetes: vec![
                InUse {
                    repository: REPOSITORY.into(),
                    image: ImageRef::Tag(by_tag.tag.to_string()),
                    by: "prod/Deployment/api container app".into(),
                },
                InUse {
                    repository: REPOSITORY.into(),
                    image: ImageRef::Digest(by_digest.digest.to_string()),
                    by: "prod/Pod/worker-1 container worker".into(),
                },
            ],
            ..Usage::default()
        };
        let plan = evaluate(&snapshot, &git, &strict, &usage, NOW);
        let kept = kept_tags(&plan);
        assert!(kept.contains(&*by_tag.tag), "seed {seed}");
        let reasons = &plan.repositories[0]
            .tags
            .iter()
            .find(|t| *t.tag == *by_tag.tag)
            .unwrap()
            .reasons;
        assert!(
            reasons.contains(&"kubernetes: prod/Deployment/api container app".to_string()),
            "{reasons:?}"
        );
        // Run by digest: its digest is never deleted (its tag may go as a tag only).
        for action in &plan.repositories[0].actions {
            if let Action::DeleteDigest { digest, .. } = action {
                assert_ne!(**digest, *by_digest.digest, "seed {seed}");
                assert_ne!(**digest, *by_tag.digest, "seed {seed}");
            }
        }
    }
}

#[test]
fn a_cluster_that_cannot_be_listed_keeps_everything_in_scope() {
    let (git, snapshot) = random_case(3);
    let strict = retention(
        git.dir.path(),
        "- references:\n    branch: main\n  imagesPerReference:\n    last: 0\n",
        "    untracked:\n      maxAge: 0s\n    pushedWithin: 0s\n",
    );
    let usage = Usage {
        kubernetes_unavailable: vec!["prod: 403 Forbidden".into()],
        ..Usage::default()
    };
    let plan = evaluate(&snapshot, &git, &strict, &usage, NOW);
    assert!(plan.repositories[0].actions.is_empty());
    assert_eq!(
        kept_tags(&plan).len(),
        snapshot.repositories[REPOSITORY].tags.len()
    );
    assert!(
        plan.warnings.iter().any(|w| w.contains("prod: 403")),
        "{:?}",
        plan.warnings
    );
    let without = evaluate(&snapshot, &git, &strict, &Usage::default(), NOW);
    assert!(
        !without.repositories[0].actions.is_empty(),
        "the rules alone delete"
    );
}

#[test]
fn the_plan_is_deterministic() {
    for seed in 1..=5 {
        let (git, snapshot) = random_case(seed);
        let config = retention(git.dir.path(), "", "    untracked:\n      maxAge: 3d\n");
        let first =
            serde_json::to_string(&evaluate(&snapshot, &git, &config, &Usage::default(), NOW))
                .unwrap();
        for _ in 0..3 {
            let again =
                serde_json::to_string(&evaluate(&snapshot, &git, &config, &Usage::default(), NOW))
                    .unwrap();
            assert_eq!(first, again, "seed {seed}");
        }
    }
}

#[test]
fn a_tag_pushed_again_to_a_new_digest_is_as_fresh_as_a_new_one() {
    let git = GitRepo::new();
    let c = git.line(None, NOW - 10 * DAY, DAY, 2);
    git.remote_branch("main", c[1]);
    let (old, new) = (c[0].to_string(), c[1].to_string());
    let mut snapshot = snapshot(&[("moving", Some(old.as_str())), ("head", Some(new.as_str()))]);
    let repo = Arc::make_mut(snapshot.repositories.get_mut(REPOSITORY).unwrap());
    // First pushed 30 days ago, pushed again (to this digest) ten minutes ago.
    let moving = repo.tags.iter_mut().find(|t| &*t.tag == "moving").unwrap();
    moving.first_pushed = UnixMillis(((NOW - 30 * DAY) * 1000) as u64);
    moving.last_pushed = UnixMillis(((NOW - 600) * 1000) as u64);
    let config = retention(git.dir.path(), "- references:\n    branch: main\n", "");
    let plan = evaluate(&snapshot, &git, &config, &Usage::default(), NOW);
    let tag = plan.repositories[0]
        .tags
        .iter()
        .find(|t| &*t.tag == "moving")
        .unwrap();
    assert!(tag.keep, "{:?}", tag.outcomes);
    assert!(
        tag.reasons.iter().any(|r| r.starts_with("pushed 10m ago")),
        "{:?}",
        tag.reasons
    );
}

#[test]
fn a_plan_without_the_words_decides_exactly_the_same() {
    for seed in 1..=6 {
        let (git, snapshot) = random_case(seed);
        let config = retention(git.dir.path(), "", "    untracked:\n      maxAge: 3d\n");
        let all = evaluate(&snapshot, &git, &config, &Usage::default(), NOW);
        let lean = super::evaluate_with(
            &snapshot,
            &git,
            &config,
            &Usage::default(),
            NOW,
            regkeeper::policy::Details::Reasons,
        );
        // The same decisions and keep reasons; only the words of why a tag goes are left out.
        let mut unworded = all.clone();
        for tag in unworded.repositories.iter_mut().flat_map(|r| &mut r.tags) {
            if !tag.keep {
                tag.reasons.clear();
            }
        }
        assert_eq!(
            serde_json::to_value(&unworded).unwrap(),
            serde_json::to_value(&lean).unwrap()
        );
        assert!(
            lean.repositories[0]
                .tags
                .iter()
                .all(|t| t.outcomes.iter().all(|o| o.keeps))
        );
        // What cleanup asks: the same decisions, every verdict in words for removed tags only.
        let removed = super::evaluate_with(
            &snapshot,
            &git,
            &config,
            &Usage::default(),
            NOW,
            regkeeper::policy::Details::Removed,
        );
        assert_eq!(
            serde_json::to_value(&all).unwrap(),
            serde_json::to_value(&removed).unwrap()
        );
        let mut removed_tags = 0;
        for (full, lean) in all.repositories[0]
            .tags
            .iter()
            .zip(&removed.repositories[0].tags)
        {
            if lean.keep {
                assert!(lean.outcomes.iter().all(|o| o.keeps), "{lean:?}");
            } else {
                removed_tags += 1;
                let rules = |t: &regkeeper::policy::TagPlan| {
                    t.outcomes.iter().map(|o| o.rule).collect::<Vec<_>>()
                };
                assert_eq!(rules(full), rules(lean));
                assert!(
                    lean.outcomes.iter().all(|o| !o.detail.is_empty()),
                    "{lean:?}"
                );
            }
        }
        assert!(
            removed_tags > 0,
            "seed {seed} removes nothing: the case proves nothing"
        );
    }
}

#[test]
fn commits_git_cannot_prove_keep_their_images() {
    let git = GitRepo::new();
    let c = git.line(None, NOW - 10 * DAY, DAY, 3);
    git.remote_branch("main", c[2]);
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let (c0, c2) = (c[0].to_string(), c[2].to_string());
    let snapshot = snapshot(&[
        ("gone", Some(missing)),
        ("old", Some(c0.as_str())),
        ("new", Some(c2.as_str())),
    ]);
    let config = retention(
        git.dir.path(),
        "- references:\n    branch: main\n",
        "    pushedWithin: 0s\n",
    );
    let plan = evaluate(&snapshot, &git, &config, &Usage::default(), NOW);
    assert_eq!(
        kept_tags(&plan),
        ["gone".to_string(), "new".to_string()].into()
    );
    let gone = &plan.repositories[0].tags[0];
    assert!(
        gone.reasons[0].starts_with("git-unproven: commit 0123456"),
        "{:?}",
        gone.reasons
    );
    assert!(plan.warnings.iter().any(|w| w.contains(missing)));

    // A shallow clone proves nothing at all.
    std::fs::write(git.dir.path().join(".git/shallow"), format!("{}\n", c[1])).unwrap();
    let plan = evaluate(&snapshot, &git, &config, &Usage::default(), NOW);
    assert_eq!(kept_tags(&plan).len(), 3);
    assert!(plan.warnings.iter().any(|w| w.contains("shallow")));
}

#[test]
fn digests_indexes_referrers_and_signatures_are_handled_whole() {
    let git = GitRepo::new();
    let c = git.line(None, NOW - 10 * DAY, DAY, 2);
    git.remote_branch("main", c[1]);
    let (new, old) = (c[1].to_string(), c[0].to_string());
    let mut snapshot = snapshot(&[
        ("release", Some(new.as_str())),
        ("old", Some(old.as_str())),
        ("multi", Some(old.as_str())),
    ]);
    let repo = Arc::make_mut(snapshot.repositories.get_mut(REPOSITORY).unwrap());
    // `also-release` shares the release digest; `old-alias` shares `old`'s.
    let release = digest_of("release");
    let old_digest = digest_of("old");
    let tag_record = super::tag_record;
    for (tag, digest) in [("also-release", &release), ("old-alias", &old_digest)] {
        repo.put_tag(&tag_record(tag, digest));
    }
    // `multi` is an index with two untagged children; `sbom` refers to `old`; a cosign
    // signature tag signs `release`.
    let multi = digest_of("multi");
    let children = [digest_of("child-a"), digest_of("child-b")];
    let mut multi_record = manifest(&multi);
    multi_record.children = children.to_vec();
    repo.put_manifest(&multi_record);
    for child in &children {
        repo.put_manifest(&manifest(child));
    }
    let sbom = digest_of("sbom");
    let mut sbom_record = manifest(&sbom);
    sbom_record.subject = Some(old_digest.clone());
    repo.put_manifest(&sbom_record);
    let signature_tag = format!("sha256-{}.sig", release.trim_start_matches("sha256:"));
    let signature = digest_of("signature");
    repo.put_tag(&tag_record(&signature_tag, &signature));
    repo.put_manifest(&manifest(&signature));

    // Keep only the newest main image, plus tags named `also-*`… no: keep `old-alias` by pattern.
    let config = retention(
        git.dir.path(),
        "- references:\n    branch: main\n",
        "    pushedWithin: 0s\n    tags: [\"^old-alias$\"]\n",
    );
    let plan = evaluate(&snapshot, &git, &config, &Usage::default(), NOW);
    let actions = &plan.repositories[0].actions;
    let kept = kept_tags(&plan);
    // The release digest (and its second tag, and its signature) stay.
    assert!(
        kept.contains("release") && kept.contains("also-release"),
        "{kept:?}"
    );
    assert!(kept.contains(&signature_tag), "{kept:?}");
    // `old` is not kept, but its digest is (old-alias): only the tag goes.
    assert!(actions.contains(&Action::Untag {
        tag: "old".into(),
        digest: old_digest.as_str().into()
    }));
    // The index goes whole, its untagged children with it; the SBOM of the kept `old` stays.
    let deleted: Vec<(&str, Option<&str>)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::DeleteDigest {
                digest, follows, ..
            } => Some((&**digest, follows.as_deref())),
            Action::Untag { .. } | Action::DeleteUntagged { .. } => None,
        })
        .collect();
    assert!(deleted.iter().any(|(d, _)| *d == multi), "{deleted:?}");
    for child in &children {
        assert!(
            deleted.iter().any(|(d, f)| d == child && f.is_some_and(|f| f.contains("child of deleted index"))),
            "{deleted:?}"
        );
    }
    assert!(
        !deleted.iter().any(|(d, _)| *d == sbom),
        "the SBOM's subject is kept"
    );
    assert!(!deleted.iter().any(|(d, _)| *d == release));
    assert_eq!(deleted.len(), 3, "{deleted:?}");
}

/// A repository where `main-latest` moved on twice, plus manifests no tag names: pushed by
/// digest, an untagged index, referrers with and without their subject, one pulled, one run.
fn untagged_case() -> (Snapshot, Vec<(&'static str, String)>) {
    let at = |seconds_ago: i64| UnixMillis(((NOW - seconds_ago) * 1000) as u64);
    let d = |name: &'static str| (name, digest_of(name));
    let named = [
        d("moved-30d"),
        d("moved-2d"),
        d("latest"),
        d("by-digest"),
        d("young"),
        d("index"),
        d("child-untagged"),
        d("child-tagged"),
        d("sbom-of-latest"),
        d("sbom-of-nothing"),
        d("pulled"),
        d("running"),
        d("tag-deleted-1d"),
    ];
    let digest = |name: &str| named.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    let recorded = |name: &str, seconds_ago: i64| ManifestRecord {
        recorded_at: at(seconds_ago),
        ..manifest(&digest(name))
    };
    let mut manifests = vec![
        recorded("moved-30d", 40 * DAY),
        recorded("moved-2d", 10 * DAY),
        recorded("latest", 2 * DAY),
        recorded("by-digest", 20 * DAY),
        recorded("young", 3600),
        recorded("child-untagged", 20 * DAY),
        recorded("child-tagged", 20 * DAY),
        recorded("pulled", 20 * DAY),
        recorded("running", 20 * DAY),
        // Pushed 20 days ago, its tag deleted yesterday: untagged for a day only.
        ManifestRecord {
            untagged_at: Some(at(DAY)),
            ..recorded("tag-deleted-1d", 20 * DAY)
        },
    ];
    let mut index = recorded("index", 20 * DAY);
    index.children = vec![digest("child-untagged"), digest("child-tagged")];
    manifests.push(index);
    let mut sbom = recorded("sbom-of-latest", 20 * DAY);
    sbom.subject = Some(digest("latest"));
    manifests.push(sbom);
    let mut dangling = recorded("sbom-of-nothing", 20 * DAY);
    dangling.subject = Some(digest_of("deleted-long-ago"));
    manifests.push(dangling);
    let tag = |tag: &str, name: &str, history: Vec<PreviousDigest>| TagRecord {
        repository: REPOSITORY.into(),
        tag: tag.into(),
        digest: digest(name),
        first_pushed: at(40 * DAY),
        last_pushed: at(2 * DAY),
        history,
    };
    let tags = vec![
        tag(
            "main-latest",
            "latest",
            vec![
                PreviousDigest {
                    digest: digest("moved-30d"),
                    replaced_at: at(30 * DAY),
                },
                PreviousDigest {
                    digest: digest("moved-2d"),
                    replaced_at: at(2 * DAY),
                },
            ],
        ),
        tag("arm64", "child-tagged", Vec::new()),
    ];
    let pulls = vec![(
        digest("pulled"),
        PullStats {
            last_pulled: at(3600),
            count: 1,
        },
    )];
    let repo = RepositorySnapshot::from_records(REPOSITORY, tags, manifests, |_| None, pulls);
    let mut snapshot = Snapshot::default();
    snapshot
        .repositories
        .insert(REPOSITORY.into(), Arc::new(repo));
    (snapshot, named.to_vec())
}

fn untagged_deletions(plan: &regkeeper::policy::Plan) -> Vec<(String, String)> {
    plan.repositories[0]
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::DeleteUntagged { digest, why, .. } => Some((digest.to_string(), why.clone())),
            Action::DeleteDigest {
                digest,
                tags,
                follows: Some(why),
                ..
            } if tags.is_empty() => Some((digest.to_string(), why.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn untagged_manifests_go_only_when_nothing_refers_to_them_and_they_are_old_enough() {
    let git = GitRepo::new();
    let (snapshot, named) = untagged_case();
    let name_of = |digest: &str| named.iter().find(|(_, d)| d == digest).unwrap().0;
    let running = InUse {
        repository: REPOSITORY.into(),
        image: ImageRef::Digest(digest_of("running")),
        by: "prod/Pod/api-1 container app".into(),
    };
    let usage = Usage {
        kubernetes: vec![running],
        ..Usage::default()
    };
    let rule =
        "    pushedWithin: 2h\n    pulledWithin: 1d\n    untaggedManifests:\n      maxAge: 7d\n";
    let config = retention(git.dir.path(), "", rule);
    let plan = evaluate(&snapshot, &git, &config, &usage, NOW);
    let deleted: BTreeSet<&str> = untagged_deletions(&plan)
        .iter()
        .map(|(d, _)| name_of(d))
        .collect();
    assert_eq!(
        deleted,
        [
            "moved-30d",      // the tag moved away 30 days ago
            "by-digest",      // never tagged, pushed 20 days ago
            "index",          // an untagged index nothing refers to…
            "child-untagged", // …takes its untagged child
        ]
        .into(),
        "{:#?}",
        plan.repositories[0].actions
    );
    // Not: moved-2d (untagged 2 days, though pushed 10 days ago), tag-deleted-1d (likewise,
    // its tag deleted rather than moved), young, the tagged child, the
    // SBOMs (a referrer goes only with its subject, even one the index does not know), the one
    // pulled an hour ago, the one a pod runs by digest.
    let why = untagged_deletions(&plan);
    assert!(
        why.iter()
            .any(|(d, w)| name_of(d) == "moved-30d" && w.starts_with("untagged for 30d")),
        "{why:?}"
    );
    // Nothing in the tags changes: every tag is kept (untracked, no maxAge).
    assert_eq!(kept_tags(&plan).len(), 2);
    // The breaker counts them as deletions.
    let (tags, untagged) = regkeeper::cleanup::breaker::removals(&plan);
    assert_eq!((tags, untagged), (0, 3));

    // A manifest whose references regkeeper could not read (too large to capture, an unknown
    // media type) might list any of them: then none goes.
    let mut blind_spot = snapshot.clone();
    Arc::make_mut(blind_spot.repositories.get_mut(REPOSITORY).unwrap()).put_manifest(
        &ManifestRecord::bare(
            REPOSITORY,
            &digest_of("huge-index"),
            "application/vnd.oci.image.index.v1+json",
            UnixMillis(0),
        ),
    );
    let plan = evaluate(&blind_spot, &git, &config, &usage, NOW);
    assert_eq!(untagged_deletions(&plan), Vec::new());

    // Without the rule, nothing untagged goes; with a cluster unreadable, neither.
    let without = retention(git.dir.path(), "", "    pushedWithin: 2h\n");
    let plan = evaluate(&snapshot, &git, &without, &usage, NOW);
    assert_eq!(untagged_deletions(&plan), Vec::new());
    let blind = Usage {
        kubernetes_unavailable: vec!["prod: 500".into()],
        ..Usage::default()
    };
    let plan = evaluate(&snapshot, &git, &config, &blind, NOW);
    assert_eq!(untagged_deletions(&plan), Vec::new());
}

#[test]
fn a_deletion_judged_on_narrowed_namespaces_says_which_were_read() {
    let (git, snapshot) = random_case(3);
    let mut strict = retention(
        git.dir.path(),
        "- references:\n    branch: main\n  imagesPerReference:\n    last: 0\n",
        "    untracked:\n      maxAge: 0s\n    pushedWithin: 0s\n",
    );
    strict.kubernetes.clusters = vec![
        serde_saphyr::from_str("name: prod\nnamespaces: [team-a, team-b]\n").unwrap(),
        serde_saphyr::from_str("name: staging\n").unwrap(),
    ];
    let plan = evaluate(&snapshot, &git, &strict, &Usage::default(), NOW);
    let deleted = plan.repositories[0]
        .tags
        .iter()
        .find(|t| !t.keep)
        .expect("something is deleted");
    let kubernetes = deleted
        .outcomes
        .iter()
        .find(|o| o.rule == "kubernetes")
        .expect("the kubernetes verdict");
    assert!(
        kubernetes
            .detail
            .contains("only these namespaces were read — prod: team-a, team-b"),
        "{}",
        kubernetes.detail
    );
    assert!(
        !kubernetes.detail.contains("staging:"),
        "{}",
        kubernetes.detail
    );
}
