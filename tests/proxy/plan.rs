//! End to end: images pushed with skopeo through the proxy for commits of a real git
//! repository; `plan` and `explain` say what a cleanup would delete and why.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::{
    Registry, Regkeeper,
    git::GitRepo,
    image::{ImageSpec, Layout, skopeo_copy, tar_gz_layer},
};

const DAY: i64 = 86_400;

#[test]
fn plan_and_explain_follow_git_history_for_images_pushed_through_the_proxy() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let git = GitRepo::new();
    // main: four commits, one a day; each built into an image.
    let commits = git.line(None, now - 4 * DAY, DAY, 4);
    git.remote_branch("main", commits[3]);
    let registry = Registry::start();
    let retention = format!(
        "retention:\n  gitRepositories:\n    - name: app\n      path: {}\n      repositories: [\"team/*\"]\n  scopes:\n    - name: teams\n      include: [\"team/**\"]\n      tags: [\"^latest$\"]\n      keepPolicies:\n        - references:\n            branch: main\n          imagesPerReference:\n            last: 2\n",
        git.dir.path().display()
    );
    let mut proxy = Regkeeper::start_with(&registry.url(), &retention);

    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(work.path());
    let ids: Vec<String> = commits.iter().map(|c| c.to_string()).collect();
    let mut tags = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let content = format!("build {i}\n");
        let image = layout.add_image(&ImageSpec {
            layers: vec![tar_gz_layer("build.txt", content.as_bytes(), false)],
            annotations: &[("org.opencontainers.image.revision", id.as_str())],
            ..ImageSpec::default()
        });
        let tag = format!("main-{}", &id[..8]);
        layout.tag(&tag, &image);
        tags.push(tag);
    }
    let src = |tag: &str| format!("oci:{}:{tag}", layout.dir.display());
    for tag in &tags {
        skopeo_copy(
            &src(tag),
            &format!("docker://{}/team/app:{tag}", proxy.host()),
            &[],
        );
    }
    // `latest` on the oldest build: kept by the tag pattern, so that digest stays and its
    // other tag (main-<c0>, which no rule keeps) is removed as a tag only.
    skopeo_copy(
        &src(&tags[0]),
        &format!("docker://{}/team/app:latest", proxy.host()),
        &[],
    );
    // An image in no scope is never touched.
    skopeo_copy(
        &src(&tags[1]),
        &format!("docker://{}/other/app:old", proxy.host()),
        &[],
    );
    // While serve holds the index, plan and explain ask it through the admin listener.
    let live: Value = serde_json::from_str(
        &proxy
            .cli(&["plan", "--output", "json", "--at", "+3h"], &[])
            .expect_ok(),
    )
    .unwrap();
    let live_team = live["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["repository"] == "team/app")
        .unwrap();
    assert_eq!(live_team["deleted"]["tags"], 2, "{live_team:#}");
    let live_explain = proxy
        .cli(
            &["explain", &format!("team/app:{}", tags[1]), "--at", "+3h"],
            &[],
        )
        .expect_ok();
    assert!(live_explain.contains("verdict: DELETED"), "{live_explain}");
    let missing = proxy.cli(&["explain", "team/app:nope"], &[]);
    assert!(
        !missing.ok && missing.stderr.contains("no tag team/app:nope"),
        "{}",
        missing.stderr
    );

    proxy.terminate();
    assert!(proxy.wait(), "{}", proxy.logs());

    // Now everything was pushed moments ago (pushedWithin 2h keeps it); three hours on it is not.
    let now_plan: Value =
        serde_json::from_str(&proxy.cli(&["plan", "--output", "json"], &[]).expect_ok()).unwrap();
    let team = now_plan["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["repository"] == "team/app")
        .unwrap();
    assert_eq!(team["deleted"]["tags"], 0, "{team:#}");

    let later: Value = serde_json::from_str(
        &proxy
            .cli(&["plan", "--output", "json", "--at", "+3h"], &[])
            .expect_ok(),
    )
    .unwrap();
    let repos = later["repositories"].as_array().unwrap();
    let team = repos
        .iter()
        .find(|r| r["repository"] == "team/app")
        .unwrap();
    let other = repos
        .iter()
        .find(|r| r["repository"] == "other/app")
        .unwrap();
    assert_eq!(other["scope"], Value::Null);
    assert_eq!(other["deleted"]["tags"], 0);
    assert_eq!(team["scope"], "teams");
    // Kept: the two newest main builds and `latest`; deleted: build 1 whole, build 0's
    // branch tag only (its digest stays for `latest`).
    assert_eq!(team["kept"]["tags"], 3, "{team:#}");
    assert_eq!(team["deleted"]["tags"], 2, "{team:#}");
    let actions = team["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 2, "{actions:#?}");
    assert!(actions.iter().any(
        |a| a["action"] == "delete-digest" && a["tags"] == serde_json::json!([tags[1].clone()])
    ));
    assert!(
        actions
            .iter()
            .any(|a| a["action"] == "untag" && a["tag"] == tags[0].as_str())
    );

    let kept = proxy
        .cli(
            &["explain", &format!("team/app:{}", tags[3]), "--at", "+3h"],
            &[],
        )
        .expect_ok();
    assert!(kept.contains("git: branch main, image 1 of 2"), "{kept}");
    assert!(kept.contains("verdict: KEPT"), "{kept}");
    let deleted = proxy
        .cli(
            &["explain", &format!("team/app:{}", tags[1]), "--at", "+3h"],
            &[],
        )
        .expect_ok();
    assert!(
        deleted.contains("git: branch main: image 3, beyond the last 2"),
        "{deleted}"
    );
    assert!(deleted.contains("pushed 3h ago"), "{deleted}");
    assert!(deleted.contains("verdict: DELETED"), "{deleted}");
    let json: Value = serde_json::from_str(
        &proxy
            .cli(
                &[
                    "explain",
                    "team/app:latest",
                    "--output",
                    "json",
                    "--at",
                    "+3h",
                ],
                &[],
            )
            .expect_ok(),
    )
    .unwrap();
    assert_eq!(json["keep"], true);
    assert!(
        json["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule"] == "tags" && r["keeps"] == true)
    );
    let table = proxy
        .cli(&["plan", "--at", "+3h", "--show-kept"], &[])
        .expect_ok();
    assert!(table.contains("tag matches ^latest$"), "{table}");
    // The deletions of a repository: newest push first, tag first, short digest, date, size.
    let table = proxy
        .cli(&["plan", "--at", "+3h", "--repo", "team"], &[])
        .expect_ok();
    assert!(!table.contains("other/app"), "--repo team: {table}");
    let section: Vec<&str> = table
        .lines()
        .skip_while(|l| *l != "team/app:")
        .skip(1)
        .collect();
    assert!(
        section[0].split_whitespace().collect::<Vec<_>>()
            == ["TAG", "DIGEST", "PUSHED", "SIZE", "ACTION", "WHY"],
        "{table}"
    );
    let first = section[1].split_whitespace().collect::<Vec<_>>();
    let second = section[2].split_whitespace().collect::<Vec<_>>();
    assert_eq!(first[0], tags[1], "the newer push first: {table}");
    assert_eq!(second[0], tags[0], "{table}");
    assert!(
        first.contains(&"delete") && second.contains(&"untag"),
        "{table}"
    );
    assert_eq!(first[1].len(), 12, "a short digest: {table}");
    assert!(first[2].starts_with("20"), "the push date: {table}");
    let other = proxy
        .cli(
            &[
                "plan",
                "--at",
                "+3h",
                "--repo",
                "other/app",
                "--output",
                "json",
            ],
            &[],
        )
        .expect_ok();
    let other: Value = serde_json::from_str(&other).unwrap();
    assert_eq!(other["repositories"].as_array().unwrap().len(), 1);
    assert_eq!(other["repositories"][0]["repository"], "other/app");
    let unknown = proxy.cli(&["explain", "team/app:nope"], &[]);
    assert!(
        !unknown.ok && unknown.stderr.contains("no tag team/app:nope"),
        "{}",
        unknown.stderr
    );
}
