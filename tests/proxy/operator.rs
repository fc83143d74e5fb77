//! `apply` and `restore` while `serve` holds the index: the commands hand the work to `serve`
//! through the operator API (bearer token), which runs it over its own index. Also the
//! untagged-manifests rule end to end: a tag that moved on leaves its old manifest behind.

use serde_json::Value;

use crate::{
    cleanup::{RULES, has_manifest},
    support::{
        Registry, Regkeeper,
        image::{ImageSpec, Layout, remote_digest, skopeo_copy, tar_gz_layer},
    },
};

const TOKEN: &str = "operator-token-0123456789";

#[test]
fn apply_and_restore_run_inside_serve_and_an_untagged_manifest_goes() {
    let registry = Registry::start();
    let rules = RULES.replace(
        "      untracked:\n",
        "      untaggedManifests:\n        maxAge: 0s\n      untracked:\n",
    );
    let proxy = Regkeeper::start_full(
        &registry.url(),
        &rules,
        &[("REGKEEPER_ADMIN_OPERATOR_TOKEN", TOKEN)],
    );
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&work.path().join("layout"));
    for name in ["a", "b", "c"] {
        let image = layout.add_image(&ImageSpec {
            layers: vec![tar_gz_layer("name.txt", name.as_bytes(), false)],
            ..ImageSpec::default()
        });
        layout.tag(name, &image);
    }
    let push = |image: &str, reference: &str| {
        skopeo_copy(
            &format!("oci:{}:{image}", layout.dir.display()),
            &format!("docker://{}/{reference}", proxy.host()),
            &[],
        );
    };
    // `keep-latest` moves from a to b: a's manifest stays upstream, untagged.
    push("a", "team/app:keep-latest");
    let a = remote_digest(&format!("docker://{}/team/app:keep-latest", registry.addr));
    push("b", "team/app:keep-latest");
    push("c", "team/app:old-c");
    let b = remote_digest(&format!("docker://{}/team/app:keep-latest", registry.addr));
    assert!(has_manifest(&registry, "team/app", &a));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(
        proxy.admin_until("/api/v1/tags?repository=team/app", |tags| {
            let tags = tags.as_array().unwrap();
            tags.len() == 2
                && tags
                    .iter()
                    .any(|t| t["tag"] == "keep-latest" && t["digest"] == b)
        }),
    );

    // Without the token the command says what is missing and nothing happens.
    let refused = proxy.cli(&["apply", "--mode", "enforce"], &[]);
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("admin.operatorToken"),
        "{}",
        refused.stderr
    );
    let wrong = proxy.cli(
        &["apply", "--mode", "enforce"],
        &[("REGKEEPER_ADMIN_OPERATOR_TOKEN", "not-the-token-0123456789")],
    );
    assert!(!wrong.ok);
    assert!(wrong.stderr.contains("bearer token"), "{}", wrong.stderr);
    assert!(has_manifest(&registry, "team/app", &a));

    let with_token = [("REGKEEPER_ADMIN_OPERATOR_TOKEN", TOKEN)];
    let enforce = || -> Value {
        let out = proxy.cli(
            &["apply", "--mode", "enforce", "--output", "json"],
            &with_token,
        );
        serde_json::from_str(&out.expect_ok()).unwrap()
    };
    let report = enforce();
    let steps = report["steps"].as_array().unwrap();
    let untagged = steps
        .iter()
        .find(|s| s["digest"] == a)
        .unwrap_or_else(|| panic!("a's manifest not in the run: {report:#}"));
    assert_eq!(untagged["outcome"], "deleted", "{report:#}");
    assert_eq!(untagged["tags"], serde_json::json!([]));
    assert!(
        steps
            .iter()
            .any(|s| s["tags"] == serde_json::json!(["old-c"]) && s["outcome"] == "deleted"),
        "{report:#}"
    );
    assert_eq!(steps.len(), 2, "nothing else: {report:#}");
    assert!(
        !has_manifest(&registry, "team/app", &a),
        "the untagged manifest is gone"
    );
    assert_eq!(
        remote_digest(&format!("docker://{}/team/app:keep-latest", registry.addr)),
        b,
        "the moved tag still resolves"
    );
    // The audit log says why.
    let history: Value =
        serde_json::from_str(&proxy.cli(&["history", "--output", "json"], &[]).expect_ok())
            .unwrap();
    let entry = history
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["digest"] == a && e["state"] == "done")
        .unwrap_or_else(|| panic!("{history:#}"));
    assert!(
        entry["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("untagged for"),
        "{entry}"
    );

    // A second enforcing run finds nothing left to do.
    let again = enforce();
    assert_eq!(again["steps"], serde_json::json!([]), "{again:#}");

    // Restore through serve; skopeo pulls it again.
    let restored = proxy
        .cli(&["restore", "team/app:old-c"], &with_token)
        .expect_ok();
    assert!(restored.contains("restored team/app:old-c"), "{restored}");
    skopeo_copy(
        &format!("docker://{}/team/app:old-c", proxy.host()),
        &format!("oci:{}:pulled", work.path().join("pulled").display()),
        &[],
    );
    // The untagged manifest comes back by digest.
    let restored = proxy
        .cli(&["restore", &format!("team/app@{a}")], &with_token)
        .expect_ok();
    assert!(
        restored.contains(&format!("restored team/app@{a}")),
        "{restored}"
    );
    assert!(has_manifest(&registry, "team/app", &a));
    let unknown = proxy.cli(&["restore", "team/app:never-removed"], &with_token);
    assert!(!unknown.ok);
    assert!(
        unknown.stderr.contains("no completed removal"),
        "{}",
        unknown.stderr
    );
}
