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
        let registry = Registry::start();
        let regkeeper = Regkeeper::start_with(&registry.url(), RULES);
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
        std::process::Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--raw"])
            .arg(format!("docker://{}/{reference}", self.registry.addr))
            .output()
            .unwrap()
            .status
            .success()
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
