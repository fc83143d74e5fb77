//! werf parity: each `keepPolicies` rule on real git repositories built here (branches with
//! merges, annotated and lightweight tags, controlled committer dates, remote-tracking
//! branches), with the kept set written out by hand. Plus the plan's safety properties.

mod closure;
mod commit_graph;
mod evidence;
#[path = "../support/git.rs"]
mod git;
mod kube;
mod plan;
mod properties;
mod werf_limits;

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use git::GitRepo;
use git2::Oid;
use regkeeper::{
    config::RetentionConfig,
    index::{ManifestKind, ManifestRecord, TagRecord, UnixMillis},
    policy::{self, Evidence, Inputs, LinkScope, Plan, RepositorySnapshot, Snapshot, Usage},
    sources::git::GitFacts,
};

pub const NOW: i64 = 1_800_000_000;
pub const DAY: i64 = 86_400;
pub const REPOSITORY: &str = "team/app";

pub fn digest_of(tag: &str) -> String {
    format!("sha256:{:0>64}", hex(tag))
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect::<String>()[..text.len().min(32) * 2]
        .to_string()
}

pub fn manifest(digest: &str) -> ManifestRecord {
    ManifestRecord {
        kind: ManifestKind::Image,
        total_size: 1000,
        complete: true,
        config_read: true,
        ..ManifestRecord::bare(
            REPOSITORY,
            digest,
            "application/vnd.oci.image.manifest.v1+json",
            UnixMillis(0),
        )
    }
}

/// Evidence the image carries itself (an annotation or label): about its digest.
pub fn image_evidence(commit: &str) -> Evidence {
    Evidence {
        commit: commit.into(),
        scope: LinkScope::Image,
    }
}

/// A repository snapshot with one image (own digest) per `(tag, commit)`, pushed long ago.
pub fn snapshot(images: &[(&str, Option<&str>)]) -> Snapshot {
    let mut tags = Vec::new();
    let mut manifests = Vec::new();
    let mut links: HashMap<String, Box<[Evidence]>> = HashMap::new();
    for (tag, commit) in images {
        let digest = digest_of(tag);
        tags.push(tag_record(tag, &digest));
        manifests.push(manifest(&digest));
        if let Some(commit) = commit {
            links.insert(digest, Box::new([image_evidence(commit)]));
        }
    }
    let repo = RepositorySnapshot::from_records(
        REPOSITORY,
        tags,
        manifests,
        |d| links.get(d).cloned(),
        Vec::new(),
    );
    snapshot_of(repo)
}

/// `tag` of the test repository on `digest`, pushed long ago.
pub fn tag_record(tag: &str, digest: &str) -> TagRecord {
    TagRecord {
        repository: REPOSITORY.into(),
        tag: tag.into(),
        digest: digest.into(),
        first_pushed: UnixMillis(1000),
        last_pushed: UnixMillis(1000),
        history: Vec::new(),
    }
}

/// A snapshot holding `repo` as the test repository.
pub fn snapshot_of(repo: RepositorySnapshot) -> Snapshot {
    let mut snapshot = Snapshot::default();
    snapshot
        .repositories
        .insert(REPOSITORY.into(), Arc::new(repo));
    snapshot
}

/// A retention config: one scope over everything with `policies` (werf YAML, block style, as
/// pasted from a werf.yaml; empty = werf's defaults) and the test repository as git repo `app`.
pub fn retention(git_path: &std::path::Path, policies: &str, extra_scope: &str) -> RetentionConfig {
    let indented: String = policies.lines().map(|l| format!("      {l}\n")).collect();
    let keep = if policies.trim().is_empty() {
        String::new()
    } else {
        format!("    keepPolicies:\n{indented}")
    };
    let yaml = format!(
        "gitRepositories:\n  - name: app\n    path: {}\n    repositories: [\"{REPOSITORY}\"]\nscopes:\n  - name: all\n    include: [\"**\"]\n{keep}{extra_scope}",
        git_path.display()
    );
    let retention: RetentionConfig =
        serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    retention.validate().unwrap();
    retention
}

pub fn evaluate(
    snapshot: &Snapshot,
    git: &GitRepo,
    retention: &RetentionConfig,
    usage: &Usage,
    now: i64,
) -> Plan {
    evaluate_with(snapshot, git, retention, usage, now, policy::Details::All)
}

pub fn evaluate_with(
    snapshot: &Snapshot,
    git: &GitRepo,
    retention: &RetentionConfig,
    usage: &Usage,
    now: i64,
    details: policy::Details,
) -> Plan {
    let linked = snapshot
        .repositories
        .values()
        .flat_map(|r| r.links.values().flatten().map(|f| &*f.commit));
    let facts = GitFacts::load(git.dir.path(), "origin", linked).map_err(|e| e.to_string());
    evaluate_facts(snapshot, facts, retention, usage, now, details)
}

/// One evaluation with the git repository `app` given as facts (or as the reason it cannot be
/// read), at `now` (seconds).
pub fn evaluate_facts(
    snapshot: &Snapshot,
    facts: Result<GitFacts, String>,
    retention: &RetentionConfig,
    usage: &Usage,
    now: i64,
    details: policy::Details,
) -> Plan {
    let facts: HashMap<String, Result<GitFacts, String>> = [("app".to_string(), facts)].into();
    policy::evaluate(&Inputs {
        snapshot,
        git: &facts,
        usage,
        retention,
        now: UnixMillis(now as u64 * 1000),
        details,
        restore_protection: std::time::Duration::ZERO,
    })
}

pub fn kept_tags(plan: &Plan) -> BTreeSet<String> {
    plan.repositories[0]
        .tags
        .iter()
        .filter(|t| t.keep)
        .map(|t| t.tag.to_string())
        .collect()
}

/// The tags werf's rules keep for images tagged `tag` on `commit`.
fn werf_keeps(git: &GitRepo, images: &[(&str, Oid)], policies: &str) -> BTreeSet<String> {
    let ids: Vec<(String, String)> = images
        .iter()
        .map(|(t, c)| (t.to_string(), c.to_string()))
        .collect();
    let images: Vec<(&str, Option<&str>)> = ids
        .iter()
        .map(|(t, c)| (t.as_str(), Some(c.as_str())))
        .collect();
    let plan = evaluate(
        &snapshot(&images),
        git,
        &retention(git.dir.path(), policies, ""),
        &Usage::default(),
        NOW,
    );
    kept_tags(&plan)
}

fn set(tags: &[&str]) -> BTreeSet<String> {
    tags.iter().map(|t| t.to_string()).collect()
}

#[test]
fn tag_limit_last_keeps_the_newest_tags_by_tagger_or_commit_date() {
    let git = GitRepo::new();
    let c = git.line(None, NOW - 10 * DAY, DAY, 4);
    git.lightweight_tag("v1", c[0]);
    git.lightweight_tag("v2", c[1]);
    git.lightweight_tag("v3", c[2]);
    // Annotated tag on the oldest commit, tagged today: its date is the tagger date.
    git.annotated_tag("v0-hotfix", c[0], NOW - 3600);
    git.remote_branch("main", c[3]);
    let images = [("i1", c[0]), ("i2", c[1]), ("i3", c[2]), ("i4", c[3])];
    let kept = werf_keeps(
        &git,
        &images,
        "- references:\n    tag: /.*/\n    limit:\n      last: 2\n",
    );
    // Newest two tags: v0-hotfix (tagged now, on c0) and v3 (c2).
    assert_eq!(kept, set(&["i1", "i3"]));
}

#[test]
fn branch_limit_in_and_operators_select_references() {
    let git = GitRepo::new();
    let base = git.commit(&[], NOW - 30 * DAY);
    let a = git.commit(&[base], NOW - DAY);
    let b = git.commit(&[base], NOW - 2 * DAY);
    let c = git.commit(&[base], NOW - 10 * DAY);
    git.remote_branch("feature-a", a);
    git.remote_branch("feature-b", b);
    git.remote_branch("feature-c", c);
    let images = [("a", a), ("b", b), ("c", c)];
    let within = "- references:\n    branch: /feature-.*/\n    limit:\n      in: 168h\n";
    assert_eq!(werf_keeps(&git, &images, within), set(&["a", "b"]));
    let and =
        "- references:\n    branch: /feature-.*/\n    limit:\n      last: 1\n      in: 168h\n";
    assert_eq!(werf_keeps(&git, &images, and), set(&["a"]));
    let or = "- references:\n    branch: /feature-.*/\n    limit:\n      last: 1\n      in: 36h\n      operator: Or\n";
    // last 1 → a; within 36h → a; b (2 days) and c are out.
    assert_eq!(werf_keeps(&git, &images, or), set(&["a"]));
    let or_wide = "- references:\n    branch: /feature-.*/\n    limit:\n      last: 1\n      in: 72h\n      operator: Or\n";
    assert_eq!(werf_keeps(&git, &images, or_wide), set(&["a", "b"]));
    // Literal names are whole names, not regexes.
    let literal = "- references:\n    branch: feature-c\n";
    assert_eq!(werf_keeps(&git, &images, literal), set(&["c"]));
}

#[test]
fn images_per_reference_last_in_and_operator() {
    let git = GitRepo::new();
    let c = git.line(None, NOW - 9 * DAY, DAY, 6); // commits 9d, 8d, … 4d ago
    git.remote_branch("main", c[5]);
    let images: Vec<(String, Oid)> = (0..6).map(|i| (format!("b{i}"), c[i])).collect();
    let images: Vec<(&str, Oid)> = images.iter().map(|(t, c)| (t.as_str(), *c)).collect();
    let policy =
        |ipr: &str| format!("- references:\n    branch: main\n  imagesPerReference:\n{ipr}");
    assert_eq!(
        werf_keeps(&git, &images, &policy("    last: 3\n")),
        set(&["b3", "b4", "b5"])
    );
    // `in` alone still means last 1 (werf's default).
    assert_eq!(
        werf_keeps(&git, &images, &policy("    in: 168h\n")),
        set(&["b5"])
    );
    assert!(werf_keeps(&git, &images, &policy("    in: 72h\n")).is_empty());
    // Or: the newest, or committed within 7 days (b3: 6d, b4: 5d, b5: 4d ago).
    assert_eq!(
        werf_keeps(
            &git,
            &images,
            &policy("    last: 1\n    in: 168h\n    operator: Or\n")
        ),
        set(&["b3", "b4", "b5"])
    );
    assert_eq!(
        werf_keeps(&git, &images, &policy("    last: 5\n    in: 168h\n")),
        set(&["b3", "b4", "b5"])
    );
    assert!(werf_keeps(&git, &images, &policy("    last: 0\n")).is_empty());
    assert_eq!(
        werf_keeps(&git, &images, &policy("    last: -1\n")).len(),
        6
    );
}

#[test]
fn walks_follow_merged_branches_and_count_one_group_per_commit() {
    let git = GitRepo::new();
    let root = git.commit(&[], NOW - 20 * DAY);
    let main1 = git.commit(&[root], NOW - 10 * DAY);
    let feature1 = git.commit(&[root], NOW - 9 * DAY);
    let feature2 = git.commit(&[feature1], NOW - 8 * DAY);
    let merge = git.commit(&[main1, feature2], NOW - 7 * DAY);
    let main2 = git.commit(&[merge], NOW - 6 * DAY);
    git.remote_branch("main", main2);
    // Two images (different digests) built from the same commit count as one.
    let images = [
        ("m2", main2),
        ("m2-debug", main2),
        ("f2", feature2),
        ("f1", feature1),
        ("m1", main1),
    ];
    let kept = werf_keeps(
        &git,
        &images,
        "- references:\n    branch: main\n  imagesPerReference:\n    last: 3\n",
    );
    // Newest first over all parents: main2 (2 images, one group), feature2, feature1.
    assert_eq!(kept, set(&["f1", "f2", "m2", "m2-debug"]));
}

#[test]
fn a_git_tag_keeps_only_images_of_its_own_commit() {
    let git = GitRepo::new();
    let c = git.line(None, NOW - 5 * DAY, DAY, 3);
    git.lightweight_tag("v1.0", c[2]);
    git.local_branch("main", c[2]);
    let images = [("parent", c[1]), ("old", c[0])];
    assert!(werf_keeps(&git, &images, "- references:\n    tag: /v.*/\n").is_empty());
    let images = [("release", c[2]), ("parent", c[1])];
    assert_eq!(
        werf_keeps(&git, &images, "- references:\n    tag: /v.*/\n"),
        set(&["release"])
    );
}

#[test]
fn the_last_policy_selecting_a_reference_gives_its_images_per_reference() {
    let git = GitRepo::new();
    let c = git.line(None, NOW - 5 * DAY, 3600, 4);
    git.remote_branch("main", c[3]);
    let images = [("a", c[0]), ("b", c[1]), ("c", c[2]), ("d", c[3])];
    let many_then_one = "- references:\n    branch: /.*/\n  imagesPerReference:\n    last: 4\n- references:\n    branch: main\n";
    assert_eq!(werf_keeps(&git, &images, many_then_one), set(&["d"]));
    let one_then_many = "- references:\n    branch: main\n- references:\n    branch: /.*/\n  imagesPerReference:\n    last: 4\n";
    assert_eq!(werf_keeps(&git, &images, one_then_many).len(), 4);
}

#[test]
fn remote_tracking_branches_count_and_local_ones_only_without_a_remote() {
    let git = GitRepo::new();
    let c = git.line(None, NOW - 3 * DAY, 3600, 2);
    git.remote_branch("main", c[0]);
    git.local_branch("local-only", c[1]);
    let images = [("remote", c[0]), ("local", c[1])];
    let any = "- references:\n    branch: /.*/\n";
    assert_eq!(werf_keeps(&git, &images, any), set(&["remote"]));

    let mirror = GitRepo::new();
    let c = mirror.line(None, NOW - 3 * DAY, 3600, 2);
    mirror.local_branch("main", c[1]);
    let images = [("head", c[1]), ("older", c[0])];
    assert_eq!(werf_keeps(&mirror, &images, any), set(&["head"]));
}

#[test]
fn werfs_default_policies_apply_when_none_are_given() {
    let git = GitRepo::new();
    let root = git.commit(&[], NOW - 60 * DAY);
    // main: 12 images over the last 12 days → the last 10 are kept.
    let main = git.line(Some(root), NOW - 12 * DAY, DAY, 12);
    git.remote_branch("main", main[11]);
    // A fresh feature branch: its 2 newest images within 7 days are kept, not the third.
    let feature = git.line(Some(root), NOW - 3 * DAY, 3600, 3);
    git.remote_branch("feature-x", feature[2]);
    // A stale feature branch (head 30 days old): nothing.
    let stale = git.line(Some(root), NOW - 30 * DAY, 3600, 1);
    git.remote_branch("feature-old", stale[0]);
    // Tags: the last 10 tags keep their commit's images.
    git.lightweight_tag("v1", root);
    let mut images: Vec<(String, Oid)> = main
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("main-{i:02}"), *c))
        .collect();
    images.extend(
        feature
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("feat-{i}"), *c)),
    );
    images.push(("stale".into(), stale[0]));
    images.push(("root".into(), root));
    let images: Vec<(&str, Oid)> = images.iter().map(|(t, c)| (t.as_str(), *c)).collect();
    let mut expected: Vec<String> = (2..12).map(|i| format!("main-{i:02}")).collect();
    expected.extend([
        "feat-1".to_string(),
        "feat-2".to_string(),
        "root".to_string(),
    ]);
    assert_eq!(
        werf_keeps(&git, &images, ""),
        expected
            .iter()
            .map(String::as_str)
            .map(String::from)
            .collect::<BTreeSet<_>>()
    );
}

#[test]
fn each_repository_numbers_its_own_images_on_a_shared_walk() {
    let git = GitRepo::new();
    let c = git.line(None, NOW - 10 * DAY, DAY, 5);
    git.remote_branch("main", c[4]);
    let ids: Vec<String> = c.iter().map(|c| c.to_string()).collect();
    // team/app has images at every commit; team/worker only at the two oldest.
    let app: Vec<(String, Option<&str>)> = (0..5)
        .map(|i| (format!("app-{i}"), Some(ids[i].as_str())))
        .collect();
    let app: Vec<(&str, Option<&str>)> = app.iter().map(|(t, c)| (t.as_str(), *c)).collect();
    let mut snapshot = snapshot(&app);
    let worker = super_snapshot_repo(&[("worker-0", &ids[0]), ("worker-1", &ids[1])]);
    snapshot.repositories.insert("team/worker".into(), worker);
    let mut config = retention(
        git.dir.path(),
        "- references:\n    branch: main\n  imagesPerReference:\n    last: 2\n",
        "",
    );
    config.git_repositories[0].repositories = vec!["team/*".into()];
    let plan = evaluate(&snapshot, &git, &config, &Usage::default(), NOW);
    let kept = |repository: &str| -> BTreeSet<String> {
        plan.repositories
            .iter()
            .find(|r| r.repository == repository)
            .unwrap()
            .tags
            .iter()
            .filter(|t| t.keep)
            .map(|t| t.tag.to_string())
            .collect()
    };
    assert_eq!(kept("team/app"), set(&["app-3", "app-4"]));
    // The worker's own two newest images, although older than the app's.
    assert_eq!(kept("team/worker"), set(&["worker-0", "worker-1"]));
}

/// A second repository (`team/worker`) with images linked to the given commits.
fn super_snapshot_repo(images: &[(&str, &String)]) -> Arc<RepositorySnapshot> {
    let images: Vec<(&str, Option<&str>)> =
        images.iter().map(|(t, c)| (*t, Some(c.as_str()))).collect();
    let mut snapshot = snapshot(&images);
    snapshot.repositories.remove(REPOSITORY).unwrap()
}

#[test]
fn a_revision_naming_an_annotated_tag_object_is_judged_as_its_commit() {
    let git = GitRepo::new();
    let c = git.line(None, NOW - 5 * DAY, DAY, 3);
    git.remote_branch("main", c[2]);
    git.annotated_tag("v1.0.0", c[1], NOW - DAY);
    // `git rev-parse v1.0.0`: the tag object's id, not the commit's.
    let tag_object = git.tag_object("v1.0.0");
    assert_ne!(tag_object, c[1].to_string());
    let plan = evaluate(
        &snapshot(&[("release", Some(tag_object.as_str()))]),
        &git,
        &retention(
            git.dir.path(),
            "- references:\n    branch: main\n  imagesPerReference:\n    last: 5\n",
            "    pushedWithin: 0s\n",
        ),
        &Usage::default(),
        NOW,
    );
    assert_eq!(kept_tags(&plan), set(&["release"]), "{plan:#?}");
    // A blob's id is no commit: it proves nothing, so the image is kept as git-unproven.
    let blob = git2::Repository::open(git.dir.path())
        .unwrap()
        .blob(b"not a commit")
        .unwrap()
        .to_string();
    let plan = evaluate(
        &snapshot(&[("odd", Some(blob.as_str()))]),
        &git,
        &retention(
            git.dir.path(),
            "- references:\n    branch: main\n",
            "    pushedWithin: 0s\n",
        ),
        &Usage::default(),
        NOW,
    );
    let odd = &plan.repositories[0].tags[0];
    assert!(
        odd.keep && odd.reasons[0].starts_with("git-unproven"),
        "{odd:?}"
    );
}

#[test]
fn a_deleted_image_is_explained_in_werfs_terms() {
    let git = GitRepo::new();
    let root = git.commit(&[], NOW - 60 * DAY);
    // main: 12 images, one a day; feature-x: one image 9 days old; one on a branch no policy
    // selects; an orphan commit no branch or tag reaches (a deleted branch's).
    let main = git.line(Some(root), NOW - 12 * DAY, DAY, 12);
    git.remote_branch("main", main[11]);
    let feature = git.commit(&[root], NOW - 9 * DAY);
    git.remote_branch("feature-x", feature);
    let orphan = git.commit(&[], NOW - 2 * DAY);
    let release = git.commit(&[root], NOW - 3 * DAY);
    git.remote_branch("release", release);
    let ids: Vec<String> = main.iter().map(|c| c.to_string()).collect();
    let mut images: Vec<(String, Option<&str>)> = ids
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("main-{i:02}"), Some(c.as_str())))
        .collect();
    let (feature_id, orphan_id) = (feature.to_string(), orphan.to_string());
    let release_id = release.to_string();
    images.push(("feature".into(), Some(feature_id.as_str())));
    images.push(("orphan".into(), Some(orphan_id.as_str())));
    images.push(("release".into(), Some(release_id.as_str())));
    let images: Vec<(&str, Option<&str>)> = images.iter().map(|(t, c)| (t.as_str(), *c)).collect();
    let policies = "- references:\n    branch: main\n  imagesPerReference:\n    last: 10\n- references:\n    branch: /feature-.*/\n  imagesPerReference:\n    in: 168h\n";
    let config = retention(
        git.dir.path(),
        policies,
        "    pushedWithin: 0s\n    untracked:\n      maxAge: 0s\n",
    );
    for details in [policy::Details::All, policy::Details::Removed] {
        let plan = evaluate_with(
            &snapshot(&images),
            &git,
            &config,
            &Usage::default(),
            NOW,
            details,
        );
        let why = |tag: &str| -> String {
            let tag = plan.repositories[0]
                .tags
                .iter()
                .find(|t| &*t.tag == tag)
                .unwrap();
            assert!(!tag.keep, "{tag:?}");
            // Plan JSON carries the why for deleted tags too.
            tag.reasons.join("; ")
        };
        // The oldest main image sits at rank 12, beyond where the walk of main stops.
        assert!(
            why("main-00").contains("git: branch main: image 12, beyond the last 10"),
            "{}",
            why("main-00")
        );
        assert!(
            why("main-01").contains("branch main: image 11, beyond the last 10"),
            "{}",
            why("main-01")
        );
        assert!(
            why("feature").contains("branch feature-x: image 1, committed 9d ago, outside 7d"),
            "{}",
            why("feature")
        );
        let release_why = why("release");
        assert!(
            release_why.contains("no selected branch or tag reaches"),
            "{release_why}"
        );
        if details == policy::Details::All {
            assert!(release_why.contains(&release_id[..12]), "{release_why}");
        }
        let orphan_why = why("orphan");
        assert!(
            orphan_why.contains("no branch or tag of app reaches commit"),
            "{orphan_why}"
        );
        assert!(orphan_why.contains(&orphan_id[..12]), "{orphan_why}");
    }
}
