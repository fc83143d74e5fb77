//! What stays protects what it references, against Distribution 2.8 with skopeo: indexes and
//! signatures pushed through the proxy (some by digest only, as CI tools do), then
//! `regkeeper apply --mode enforce`, then every manifest that should still pull is pulled.

use serde_json::Value;

use super::cleanup::RULES;
use crate::support::{
    Registry, Regkeeper,
    image::{Blob, ImageSpec, Layout, skopeo_copy, tar_gz_layer},
    regkeeper::run_cli,
};

struct Setup {
    registry: Registry,
    regkeeper: Regkeeper,
    layout: Layout,
    _work: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        Self::with(RULES)
    }

    /// Regkeeper in front of a fresh registry with `config` appended to its own.
    fn with(config: &str) -> Self {
        let registry = Registry::start();
        let regkeeper = Regkeeper::start_with(&registry.url(), config);
        let work = tempfile::tempdir().unwrap();
        let layout = Layout::new(&work.path().join("layout"));
        Self {
            registry,
            regkeeper,
            layout,
            _work: work,
        }
    }

    fn image(&self, name: &str, arch: &'static str) -> Blob {
        self.layout.add_image(&ImageSpec {
            architecture: arch,
            layers: vec![tar_gz_layer("name.txt", name.as_bytes(), false)],
            ..ImageSpec::default()
        })
    }

    /// Pushes layout entry `name` through the proxy to `reference` (`repo:tag` or
    /// `repo@digest`), every platform of an index.
    fn push(&mut self, name: &str, blob: &Blob, reference: &str) {
        self.layout.tag(name, blob);
        skopeo_copy(
            &format!("oci:{}:{name}", self.layout.dir.display()),
            &format!("docker://{}/{reference}", self.regkeeper.host()),
            &["--multi-arch", "all"],
        );
    }

    /// Stops serve (its writer flushes what it recorded) and runs an enforce cleanup.
    fn enforce(&mut self) -> Value {
        self.regkeeper.terminate();
        assert!(self.regkeeper.wait(), "serve stops cleanly");
        let out = run_cli(
            &self.regkeeper.config_path(),
            &["apply", "--mode", "enforce", "--output", "json"],
            &[],
        )
        .expect_ok();
        serde_json::from_str(&out).unwrap()
    }

    /// Pulls `repository@digest` whole (every child of an index) straight from the registry.
    fn pulls(&self, repository: &str, digest: &str) -> bool {
        let out = tempfile::tempdir().unwrap();
        std::process::Command::new("skopeo")
            .args([
                "copy",
                "--src-tls-verify=false",
                "--multi-arch",
                "all",
                &format!("docker://{}/{repository}@{digest}", self.registry.addr),
                &format!("oci:{}:x", out.path().display()),
            ])
            .output()
            .unwrap()
            .status
            .success()
    }

    fn resolves(&self, reference: &str) -> bool {
        crate::support::image::resolves(&format!("docker://{}/{reference}", self.registry.addr))
    }
}

#[test]
fn a_child_listed_by_an_index_that_stays_is_not_deleted() {
    let mut setup = Setup::new();
    let shared = setup.image("shared", "amd64");
    let only_old = setup.image("only-old", "arm64");
    let only_new = setup.image("only-new", "arm64");
    let old = setup
        .layout
        .add_index(&[(shared.clone(), "amd64"), (only_old.clone(), "arm64")]);
    let by_digest = setup
        .layout
        .add_index(&[(shared.clone(), "amd64"), (only_new.clone(), "arm64")]);
    // A child with a deletable tag of its own, listed by another index pushed by digest.
    let tagged_child = setup.image("tagged-child", "amd64");
    let lists_it = setup.layout.add_index(&[(tagged_child.clone(), "amd64")]);
    setup.push("old", &old, "team/app:old");
    setup.push("new", &by_digest, &format!("team/app@{}", by_digest.digest));
    setup.push("child", &tagged_child, "team/app:old-child");
    setup.push("lists", &lists_it, &format!("team/app@{}", lists_it.digest));

    let report = setup.enforce();
    assert!(!setup.resolves("team/app:old"), "{report:#}");
    assert!(
        !setup.resolves(&format!("team/app@{}", only_old.digest)),
        "the old index's own child goes with it: {report:#}"
    );
    assert!(
        setup.pulls("team/app", &by_digest.digest),
        "the index pushed by digest still pulls whole: {report:#}"
    );
    assert!(
        !setup.resolves("team/app:old-child"),
        "the child's own tag goes: {report:#}"
    );
    assert!(
        setup.pulls("team/app", &lists_it.digest),
        "as a tag only: the index listing the child still pulls: {report:#}"
    );
}

#[test]
fn a_signature_of_an_image_pushed_by_digest_stays_with_it() {
    let mut setup = Setup::new();
    let image = setup.image("app", "amd64");
    let signature = setup.image("signature", "amd64");
    let sig_tag = format!("sha256-{}.sig", image.digest.trim_start_matches("sha256:"));
    setup.push("app", &image, &format!("team/app@{}", image.digest));
    setup.push("sig", &signature, &format!("team/app:{sig_tag}"));
    // And one whose image is deleted: its signature goes with it.
    let old = setup.image("old", "amd64");
    let old_signature = setup.image("old-signature", "amd64");
    let old_sig_tag = format!("sha256-{}.sig", old.digest.trim_start_matches("sha256:"));
    setup.push("old", &old, "team/app:old");
    setup.push(
        "old-sig",
        &old_signature,
        &format!("team/app:{old_sig_tag}"),
    );

    let report = setup.enforce();
    assert!(
        setup.resolves(&format!("team/app:{sig_tag}")),
        "the signature of an image that stays: {report:#}"
    );
    assert!(setup.resolves(&format!("team/app@{}", image.digest)));
    assert!(!setup.resolves("team/app:old"), "{report:#}");
    assert!(
        !setup.resolves(&format!("team/app:{old_sig_tag}")),
        "the signature of a deleted image goes: {report:#}"
    );
}

/// A real git clone whose `main` holds one commit, plus a commit no branch reaches (a deleted
/// branch's head): evidence pointing there says "on no branch", the strongest "delete" git gives.
fn clone_with_a_dead_commit() -> (crate::support::git::GitRepo, String) {
    let git = crate::support::git::GitRepo::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let live = git.commit(&[], now - 3600);
    git.remote_branch("main", live);
    let dead = git.commit(&[live], now - 1800);
    (git, dead.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn evidence_from_a_tag_speaks_for_that_tag_only() {
    const TOKEN: &str = "link-token-0123456789";
    let work = tempfile::tempdir().unwrap();
    let (git, dead) = clone_with_a_dead_commit();
    // Untracked tags are kept (the default); git judges what evidence speaks for.
    let config = format!(
        "retention:\n  gitRepositories:\n    - name: app\n      path: {}\n      repositories: [\"team/**\"]\n  scopes:\n    - name: all\n      include: [\"**\"]\n      pushedWithin: 0s\n      keepPolicies:\n        - references: {{branch: main}}\ncleanup:\n  maxFraction: 1.0\n",
        git.dir.path().display()
    );
    let registry = Registry::start();
    let mut regkeeper = Regkeeper::start_full(
        &registry.url(),
        &config,
        &[
            ("REGKEEPER_ADMIN_LINK_TOKEN", TOKEN),
            (
                "REGKEEPER_INDEX_TAG_PATTERNS",
                "^main-(?P<commit>[0-9a-f]{7,40})$",
            ),
        ],
    );
    let layout_dir = work.path().join("layout");
    let mut layout = Layout::new(&layout_dir);
    let image = layout.add_image(&ImageSpec {
        layers: vec![tar_gz_layer("name.txt", b"prod", false)],
        ..ImageSpec::default()
    });
    layout.tag("x", &image);
    let push = |reference: &str| {
        skopeo_copy(
            &format!("oci:{}:x", layout_dir.display()),
            &format!("docker://{}/{reference}", regkeeper.host()),
            &[],
        )
    };
    push("team/app:prod");
    push("team/app:alias");
    // (b) a push-only client tags the same image with a pattern naming a dead commit.
    push(&format!("team/app:main-{}", &dead[..12]));
    push("team/other:kept");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let client = crate::support::http::HttpClient::default();
    let url = format!("http://{}/api/v1/links", regkeeper.admin);
    let post = |body: String| {
        let (client, url) = (&client, url.clone());
        async move {
            let bearer = format!("Bearer {TOKEN}");
            client
                .send(
                    http::Method::POST,
                    &url,
                    &[("authorization", bearer.as_str())],
                    crate::support::http::full(body),
                )
                .await
        }
    };
    // (a) a link naming a tag.
    let by_tag = post(format!(
        r#"{{"repository":"team/app","tag":"alias","commit":"{dead}"}}"#
    ))
    .await;
    assert_eq!(by_tag.status, 201, "{:?}", by_tag.body);
    // (c) a digest link is about that digest in that repository only…
    let elsewhere = post(format!(
        r#"{{"repository":"team/other","digest":"{}","commit":"{dead}"}}"#,
        image.digest
    ))
    .await;
    assert_eq!(elsewhere.status, 201, "{:?}", elsewhere.body);
    // …refused where the index does not hold the digest, and malformed digests are refused.
    let absent = post(format!(
        r#"{{"repository":"team/absent","digest":"{}","commit":"{dead}"}}"#,
        image.digest
    ))
    .await;
    assert_eq!(absent.status, 404, "{:?}", absent.body);
    let zeros = post(format!(
        r#"{{"repository":"team/app","digest":"sha256:0000","commit":"{dead}"}}"#
    ))
    .await;
    assert_eq!(zeros.status, 400, "{:?}", zeros.body);

    regkeeper.terminate();
    assert!(regkeeper.wait());
    let out = run_cli(
        &regkeeper.config_path(),
        &["apply", "--mode", "enforce", "--output", "json"],
        &[(
            "REGKEEPER_INDEX_TAG_PATTERNS",
            "^main-(?P<commit>[0-9a-f]{7,40})$",
        )],
    )
    .expect_ok();
    let report: Value = serde_json::from_str(&out).unwrap();
    let resolves = |reference: &str| {
        crate::support::image::resolves(&format!("docker://{}/{reference}", registry.addr))
    };
    assert!(
        resolves("team/app:prod"),
        "untracked prod stays: {report:#}"
    );
    assert!(
        !resolves("team/app:alias"),
        "the linked tag goes, as a tag: {report:#}"
    );
    assert!(
        !resolves(&format!("team/app:main-{}", &dead[..12])),
        "{report:#}"
    );
    assert!(
        !resolves("team/other:kept"),
        "team/other's digest link judged its own tag: {report:#}"
    );
    // In team/app the digest stays (prod): its other tags went as tags.
    for step in report["steps"].as_array().unwrap() {
        if step["repository"] == "team/app" {
            assert_eq!(step["action"], "untag", "{report:#}");
        }
    }
}

#[test]
fn an_image_whose_revision_names_an_annotated_tag_on_main_stays() {
    let git = crate::support::git::GitRepo::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let release = git.commit(&[], now - 7200);
    git.remote_branch("main", release);
    git.annotated_tag("v1.0.0", release, now - 3600);
    let dead = git.commit(&[release], now - 1800).to_string();
    // `git rev-parse v1.0.0`: the tag object's id, which is what CI often stamps.
    let tag_object = git.tag_object("v1.0.0");
    let config = format!(
        "retention:\n  gitRepositories:\n    - name: app\n      path: {}\n      repositories: [\"team/**\"]\n  scopes:\n    - name: all\n      include: [\"**\"]\n      pushedWithin: 0s\n      keepPolicies:\n        - references: {{branch: main}}\ncleanup:\n  maxFraction: 1.0\n",
        git.dir.path().display()
    );
    let mut setup = Setup::with(&config);
    let revision = "org.opencontainers.image.revision";
    let annotations = [(revision, tag_object.as_str())];
    let kept = setup.layout.add_image(&ImageSpec {
        layers: vec![tar_gz_layer("name.txt", b"release", false)],
        annotations: &annotations,
        ..ImageSpec::default()
    });
    let dead_annotations = [(revision, dead.as_str())];
    let gone = setup.layout.add_image(&ImageSpec {
        layers: vec![tar_gz_layer("name.txt", b"dead branch", false)],
        annotations: &dead_annotations,
        ..ImageSpec::default()
    });
    setup.push("release", &kept, "team/app:release");
    setup.push("dead", &gone, "team/app:dead");

    let report = setup.enforce();
    assert!(
        setup.resolves("team/app:release"),
        "its tag object is on main: {report:#}"
    );
    assert!(
        !setup.resolves("team/app:dead"),
        "the rules ran: {report:#}"
    );
}
