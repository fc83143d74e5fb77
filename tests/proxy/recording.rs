//! Traffic through the proxy lands in the index: pushes (with the commit from the revision
//! annotation), re-pushes (tag history), pulls and deletes. The index is read after a graceful
//! stop, the way an operator's `regkeeper tags` would after a restart.

use http::{Method, StatusCode};
use regkeeper::index::{self, Index, LinkSource, ManifestKind};

use crate::support::{
    Registry, Regkeeper,
    http::{HttpClient, empty},
    image::{ImageSpec, Layout, OCI_MANIFEST, remote_digest, skopeo_copy, tar_gz_layer},
};

#[tokio::test]
async fn pushes_pulls_repushes_and_deletes_are_recorded() {
    let registry = Registry::start();
    let mut proxy = Regkeeper::start(&registry.url());
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(work.path());
    let first = layout.add_image(&ImageSpec {
        annotations: &[("org.opencontainers.image.revision", "1111111aaaaaaa")],
        ..ImageSpec::default()
    });
    let second = layout.add_image(&ImageSpec {
        layers: vec![tar_gz_layer("two.txt", b"second build\n", false)],
        annotations: &[("org.opencontainers.image.revision", "2222222bbbbbbb")],
        ..ImageSpec::default()
    });
    let other = layout.add_image(&ImageSpec {
        layers: vec![tar_gz_layer("other.txt", b"to be deleted\n", false)],
        ..ImageSpec::default()
    });
    layout.tag("first", &first);
    layout.tag("second", &second);
    layout.tag("other", &other);
    let src = |tag: &str| format!("oci:{}:{tag}", layout.dir.display());
    let dst = |tag: &str| format!("docker://{}/team/app:{tag}", proxy.host());

    skopeo_copy(&src("first"), &dst("main"), &[]);
    skopeo_copy(&src("other"), &dst("doomed"), &[]);
    // Pulls by tag, twice.
    assert_eq!(remote_digest(&dst("main")), first.digest);
    assert_eq!(remote_digest(&dst("main")), first.digest);
    // The tag moves to a new build.
    skopeo_copy(&src("second"), &dst("main"), &[]);
    // Delete by digest through the proxy.
    let delete = HttpClient::default()
        .send(
            Method::DELETE,
            &format!("{}/v2/team/app/manifests/{}", proxy.url(), other.digest),
            &[],
            empty(),
        )
        .await;
    assert_eq!(delete.status, StatusCode::ACCEPTED);

    proxy.terminate();
    assert!(proxy.wait(), "clean exit:\n{}", proxy.logs());
    let index = index::open_sled(&proxy.index_path()).unwrap();

    assert_eq!(index.repositories().unwrap(), ["team/app"]);
    let tags: Vec<String> = index
        .tags("team/app")
        .unwrap()
        .into_iter()
        .map(|t| t.tag)
        .collect();
    assert_eq!(tags, ["main"], "the deleted digest took its tag with it");
    let main = index.tag("team/app", "main").unwrap().unwrap();
    assert_eq!(main.digest, second.digest);
    assert_eq!(main.history.len(), 1);
    assert_eq!(main.history[0].digest, first.digest);
    assert!(main.first_pushed <= main.last_pushed);

    let record = index.manifest("team/app", &second.digest).unwrap().unwrap();
    assert!(record.complete);
    assert_eq!(record.kind, ManifestKind::Image);
    assert_eq!(record.media_type, OCI_MANIFEST);
    assert!(record.total_size > 100, "{record:?}");
    assert!(index.manifest("team/app", &other.digest).unwrap().is_none());

    let links = index.commit_links(&second.digest).unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].commit, "2222222bbbbbbb");
    assert_eq!(links[0].source, LinkSource::Annotation);
    assert_eq!(
        index.commit_links(&first.digest).unwrap()[0].commit,
        "1111111aaaaaaa"
    );

    // skopeo inspect --raw asks once per call (GET by tag).
    let pulls = index.pulls("team/app", "main").unwrap().unwrap();
    assert!(pulls.count >= 2, "{pulls:?}");
    drop(index);

    // The operator's view of the same index.
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_regkeeper"))
            .args(args)
            .arg("--config")
            .arg(proxy.config_path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let table = cli(&["tags", "team/app"]);
    assert!(table.lines().count() == 2, "{table}");
    assert!(
        table.contains("main") && table.contains("2222222bbbbb") && table.contains("image"),
        "{table}"
    );
    let inspected: serde_json::Value =
        serde_json::from_str(&cli(&["inspect", "team/app:main"])).unwrap();
    assert_eq!(inspected["digest"], second.digest.as_str());
    assert_eq!(inspected["commits"][0]["commit"], "2222222bbbbbbb");
    let json: serde_json::Value =
        serde_json::from_str(&cli(&["tags", "--output", "json"])).unwrap();
    assert_eq!(json[0]["history"][0]["digest"], first.digest.as_str());
}

#[tokio::test]
async fn kill_9_during_a_push_loop_leaves_a_consistent_index() {
    let registry = Registry::start();
    let mut proxy = Regkeeper::start(&registry.url());
    let client = HttpClient::default();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = client.push_blob(&proxy.url(), "crash/app", config).await;

    // Push distinct manifests as fast as possible, and kill -9 in the middle of it.
    let base = proxy.url();
    let pusher = tokio::spawn(async move {
        let client = HttpClient::default();
        let mut pushed = 0u32;
        loop {
            let manifest = format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[],"annotations":{{"org.opencontainers.image.revision":"{pushed:040x}"}}}}"#,
                config.len()
            );
            let answer = client
                .try_send(
                    Method::PUT,
                    &format!("{base}/v2/crash/app/manifests/build-{pushed}"),
                    &[("content-type", OCI_MANIFEST)],
                    crate::support::http::full(manifest),
                )
                .await;
            match answer {
                Some(answer) if answer.status == StatusCode::CREATED => pushed += 1,
                _ => return pushed,
            }
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    proxy.kill_hard();
    let pushed = pusher.await.unwrap();
    assert!(pushed > 10, "the loop should have been pushing: {pushed}");

    let index = index::open_sled(&proxy.index_path()).expect("the index opens after kill -9");
    let tags = index.tags("crash/app").unwrap();
    for tag in &tags {
        let manifest = index.manifest("crash/app", &tag.digest).unwrap();
        assert!(
            manifest.is_some(),
            "tag {} recorded without its manifest",
            tag.tag
        );
        assert_eq!(index.commit_links(&tag.digest).unwrap().len(), 1);
    }
    assert!(tags.len() <= pushed as usize);
    drop(index);

    // sync completes the index from the registry: every tag it has, each with its manifest,
    // config and commit link.
    let listed = HttpClient::default()
        .get(&format!("{}/v2/crash/app/tags/list", registry.url()), &[])
        .await
        .json();
    let upstream_tags = listed["tags"].as_array().unwrap().len();
    assert!(upstream_tags >= pushed as usize);
    let report: serde_json::Value =
        serde_json::from_str(&proxy.cli(&["sync", "--output", "json"], &[]).expect_ok()).unwrap();
    assert_eq!(report["errors"], 0, "{report:#}");
    let index = index::open_sled(&proxy.index_path()).unwrap();
    let tags = index.tags("crash/app").unwrap();
    assert_eq!(tags.len(), upstream_tags);
    for tag in &tags {
        let manifest = index.manifest("crash/app", &tag.digest).unwrap().unwrap();
        assert!(manifest.complete && manifest.config_read, "{manifest:?}");
        assert_eq!(index.commit_links(&tag.digest).unwrap().len(), 1);
    }
}

#[tokio::test]
async fn multi_arch_children_and_referrers_are_recorded() {
    let registry = Registry::start();
    let mut proxy = Regkeeper::start(&registry.url());
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(work.path());
    let amd64 = layout.add_image(&ImageSpec::default());
    let arm64 = layout.add_image(&ImageSpec {
        architecture: "arm64",
        layers: vec![tar_gz_layer("arm.txt", b"arm\n", false)],
        ..ImageSpec::default()
    });
    let index_blob = layout.add_index(&[(amd64.clone(), "amd64"), (arm64.clone(), "arm64")]);
    layout.tag("multi", &index_blob);
    skopeo_copy(
        &format!("oci:{}:multi", layout.dir.display()),
        &format!("docker://{}/team/multi:1.0", proxy.host()),
        &["--multi-arch", "all"],
    );

    // A referrer (an SBOM-like artifact) whose subject is the amd64 image, pushed by digest.
    let client = HttpClient::default();
    let empty_config = b"{}";
    let config_digest = client
        .push_blob(&proxy.url(), "team/multi", empty_config)
        .await;
    let referrer = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/spdx+json","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{config_digest}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{}}}}}"#,
        amd64.digest, amd64.size
    );
    let referrer_digest = crate::support::image::sha256(referrer.as_bytes());
    let put = client
        .send(
            Method::PUT,
            &format!("{}/v2/team/multi/manifests/{referrer_digest}", proxy.url()),
            &[("content-type", OCI_MANIFEST)],
            crate::support::http::full(referrer),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);

    proxy.terminate();
    assert!(proxy.wait());
    let index = index::open_sled(&proxy.index_path()).unwrap();
    let tag = index.tag("team/multi", "1.0").unwrap().unwrap();
    assert_eq!(tag.digest, index_blob.digest);
    let record = index
        .manifest("team/multi", &index_blob.digest)
        .unwrap()
        .unwrap();
    assert_eq!(record.kind, ManifestKind::Index);
    assert_eq!(
        record.children,
        [amd64.digest.clone(), arm64.digest.clone()]
    );
    for child in [&amd64, &arm64] {
        let child = index.manifest("team/multi", &child.digest).unwrap();
        assert_eq!(
            child.expect("children are recorded by digest").kind,
            ManifestKind::Image
        );
    }
    let referrer = index
        .manifest("team/multi", &referrer_digest)
        .unwrap()
        .unwrap();
    assert_eq!(referrer.kind, ManifestKind::Artifact);
    assert_eq!(referrer.subject.as_deref(), Some(amd64.digest.as_str()));
    assert_eq!(
        referrer.artifact_type.as_deref(),
        Some("application/spdx+json")
    );
    assert_eq!(
        index.tags("team/multi").unwrap().len(),
        1,
        "by-digest pushes add no tags"
    );
}

#[tokio::test]
async fn the_link_api_records_commits_for_reused_images() {
    const TOKEN: &str = "link-token-0123456789";
    let registry = Registry::start();
    let mut proxy = Regkeeper::start_env(&registry.url(), &[("REGKEEPER_ADMIN_LINK_TOKEN", TOKEN)]);
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(work.path());
    let image = layout.add_image(&ImageSpec::default());
    layout.tag("v1", &image);
    skopeo_copy(
        &format!("oci:{}:v1", layout.dir.display()),
        &format!("docker://{}/team/reuse:build-1", proxy.host()),
        &[],
    );
    // The push is recorded asynchronously; the link API resolves tags through the index.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let client = HttpClient::default();
    let url = format!("http://{}/api/v1/links", proxy.admin);
    let post = |token: &'static str, body: String| {
        let client = &client;
        let url = url.clone();
        async move {
            let bearer = format!("Bearer {token}");
            client
                .send(
                    Method::POST,
                    &url,
                    &[("authorization", bearer.as_str())],
                    crate::support::http::full(body),
                )
                .await
        }
    };
    let link = |tag: &str, commit: &str| {
        format!(r#"{{"repository":"team/reuse","tag":"{tag}","commit":"{commit}"}}"#)
    };
    let commit = "89abcdef0123456789abcdef0123456789abcdef";
    assert_eq!(
        post("wrong-token-00000000", link("build-1", commit))
            .await
            .status,
        401
    );
    assert_eq!(post(TOKEN, link("build-9", commit)).await.status, 404);
    assert_eq!(post(TOKEN, link("build-1", "not-hex")).await.status, 400);
    assert_eq!(post(TOKEN, "{".into()).await.status, 400);
    let created = post(TOKEN, link("build-1", commit)).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.json()["digest"], image.digest.as_str());

    proxy.terminate();
    assert!(proxy.wait());
    let index = index::open_sled(&proxy.index_path()).unwrap();
    let links = index.commit_links(&image.digest).unwrap();
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(
        (links[0].commit.as_str(), &links[0].source),
        (commit, &LinkSource::Api)
    );

    // Without a token the endpoint does not exist.
    let plain = Regkeeper::start(&registry.url());
    let disabled = client
        .send(
            Method::POST,
            &format!("http://{}/api/v1/links", plain.admin),
            &[],
            crate::support::http::full(link("build-1", commit)),
        )
        .await;
    assert_eq!(disabled.status, 404);
}

#[tokio::test]
async fn a_manifest_pushed_with_any_spelling_of_its_media_type_is_read_the_same() {
    let registry = Registry::start();
    let mut proxy = Regkeeper::start(&registry.url());
    let http = HttpClient::default();
    let base = format!("http://{}", proxy.addr);
    let config = http
        .push_blob(
            &base,
            "team/app",
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .await;
    // No `mediaType` in the body: the Content-Type says what it is, as Distribution reads it.
    let manifest = |revision: &str| {
        format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":79}},"layers":[],"annotations":{{"org.opencontainers.image.revision":"{revision}"}}}}"#
        )
    };
    let spellings = [
        ("plain", OCI_MANIFEST.to_string(), "1111111aaaaaaa"),
        (
            "charset",
            format!("{OCI_MANIFEST}; charset=utf-8"),
            "2222222bbbbbbb",
        ),
        ("upper", OCI_MANIFEST.to_uppercase(), "3333333ccccccc"),
    ];
    let mut digests = Vec::new();
    for (tag, content_type, revision) in &spellings {
        let body = manifest(revision);
        let put = http
            .send(
                Method::PUT,
                &format!("{base}/v2/team/app/manifests/{tag}"),
                &[("content-type", content_type.as_str())],
                crate::support::http::full(body.clone().into_bytes()),
            )
            .await;
        assert_eq!(
            put.status,
            StatusCode::CREATED,
            "{content_type}: {:?}",
            put.body
        );
        digests.push(crate::support::image::sha256(body.as_bytes()));
    }
    proxy.terminate();
    assert!(proxy.wait());
    let index = index::open_sled(&proxy.index_path()).unwrap();
    for ((tag, content_type, revision), digest) in spellings.iter().zip(&digests) {
        let record = index.manifest("team/app", digest).unwrap().unwrap();
        assert_eq!(record.kind, ManifestKind::Image, "{tag} ({content_type})");
        assert_eq!(record.media_type, OCI_MANIFEST, "{tag}");
        assert!(record.complete, "{tag}");
        let links = index.commit_links(digest).unwrap();
        assert_eq!(
            links.iter().map(|l| l.commit.as_str()).collect::<Vec<_>>(),
            [*revision],
            "{tag}: its commit is learned"
        );
    }
}
