//! `regkeeper sync`: a registry filled directly (bypassing the proxy) yields the index the proxy
//! would have recorded; interrupted runs resume; `serve` syncs periodically and answers the
//! reading commands while it holds the index.

use std::collections::BTreeMap;

use http::{Method, StatusCode};
use regkeeper::index::{self, Index, SyncState, UnixMillis, Write};
use serde_json::{Value, json};

use crate::support::{
    Registry, Regkeeper,
    http::{HttpClient, full},
    image::{ImageSpec, Layout, OCI_MANIFEST, skopeo_copy, tar_gz_layer},
    regkeeper::{cli_config, run_cli},
};

const TAG_PATTERN: &str = "^main-(?P<commit>[0-9a-f]{8})$";

/// Pushes the same content to `host`: an OCI image with a revision annotation, one linked by
/// tag pattern, a Docker v2s2 image linked by a config label, and a multi-arch index.
fn push_fixture(layout_dir: &std::path::Path, host: &str) -> Vec<String> {
    let mut layout = Layout::new(layout_dir);
    let annotated = layout.add_image(&ImageSpec {
        annotations: &[("org.opencontainers.image.revision", "1111111aaaaaaa")],
        ..ImageSpec::default()
    });
    let by_tag = layout.add_image(&ImageSpec {
        layers: vec![tar_gz_layer("b.txt", b"by tag\n", false)],
        ..ImageSpec::default()
    });
    let labelled = layout.add_image(&ImageSpec {
        layers: vec![tar_gz_layer("c.txt", b"labelled\n", false)],
        labels: &[("org.label-schema.vcs-ref", "3333333ccccccc")],
        ..ImageSpec::default()
    });
    let amd64 = layout.add_image(&ImageSpec::default());
    let arm64 = layout.add_image(&ImageSpec {
        architecture: "arm64",
        layers: vec![tar_gz_layer("arm.txt", b"arm\n", false)],
        ..ImageSpec::default()
    });
    let multi = layout.add_index(&[(amd64.clone(), "amd64"), (arm64.clone(), "arm64")]);
    layout.tag("annotated", &annotated);
    layout.tag("by-tag", &by_tag);
    layout.tag("labelled", &labelled);
    layout.tag("multi", &multi);
    let src = |tag: &str| format!("oci:{}:{tag}", layout.dir.display());
    skopeo_copy(
        &src("annotated"),
        &format!("docker://{host}/team/app:v1"),
        &[],
    );
    skopeo_copy(
        &src("by-tag"),
        &format!("docker://{host}/team/app:main-0123abcd"),
        &[],
    );
    skopeo_copy(
        &src("labelled"),
        &format!("docker://{host}/team/legacy:1.0"),
        &["--format", "v2s2"],
    );
    skopeo_copy(
        &src("multi"),
        &format!("docker://{host}/team/multi:1.0"),
        &["--multi-arch", "all"],
    );
    vec![amd64.digest, arm64.digest]
}

/// What two indexes must agree on: tags → digests, manifests (without recording times) and
/// commit links (without learning times).
fn snapshot(index: &dyn Index) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for repository in index.repositories().unwrap() {
        let tags: Vec<(String, String)> = index
            .tags(&repository)
            .unwrap()
            .into_iter()
            .map(|t| (t.tag, t.digest))
            .collect();
        let mut manifests = Vec::new();
        for manifest in index.manifests(&repository).unwrap() {
            let mut links: Vec<(String, String)> = index
                .commit_links(&manifest.digest)
                .unwrap()
                .into_iter()
                .map(|l| (l.commit, format!("{:?}", l.source)))
                .collect();
            links.sort();
            let mut value = serde_json::to_value(&manifest).unwrap();
            value.as_object_mut().unwrap().remove("recorded_at");
            manifests.push(json!({ "manifest": value, "links": links }));
        }
        out.insert(repository, json!({ "tags": tags, "manifests": manifests }));
    }
    out
}

#[tokio::test]
async fn sync_of_a_directly_filled_registry_equals_what_the_proxy_records() {
    let proxied_registry = Registry::start();
    let direct_registry = Registry::start();
    let mut proxy = Regkeeper::start_env(
        &proxied_registry.url(),
        &[("REGKEEPER_INDEX_TAG_PATTERNS", TAG_PATTERN)],
    );
    let work = tempfile::tempdir().unwrap();
    let children = push_fixture(&work.path().join("a"), &proxy.host());
    push_fixture(&work.path().join("b"), &direct_registry.addr.to_string());

    // Configs are read after the push, off the request path: wait until every image has its.
    proxy
        .admin_until("/api/v1/tags", |tags| {
            tags.as_array().unwrap().len() == 4
                && tags.as_array().unwrap().iter().all(|t| {
                    t["manifest"]["kind"] != "image" || t["manifest"]["config_read"] == true
                })
        })
        .await;
    for child in &children {
        proxy
            .admin_until(
                &format!("/api/v1/inspect?reference=team/multi@{child}"),
                |i| i["manifest"]["config_read"] == true,
            )
            .await;
    }
    let legacy = proxy
        .admin_until("/api/v1/inspect?reference=team/legacy:1.0", |_| true)
        .await;
    assert_eq!(
        legacy["commits"][0]["commit"], "3333333ccccccc",
        "{legacy:#}"
    );
    assert_eq!(
        legacy["commits"][0]["source"],
        json!({"source": "label", "detail": "org.label-schema.vcs-ref"})
    );
    // While serve holds the index, the reading commands ask it.
    let table = proxy.cli(&["tags", "team/app"], &[]).expect_ok();
    assert!(
        table.contains("main-0123abcd") && table.contains("0123abcd"),
        "{table}"
    );
    proxy.terminate();
    assert!(proxy.wait(), "{}", proxy.logs());

    let sync_dir = tempfile::tempdir().unwrap();
    let config = cli_config(sync_dir.path(), &direct_registry.url(), "");
    let report = run_cli(
        &config,
        &["sync", "--output", "json"],
        &[("REGKEEPER_INDEX_TAG_PATTERNS", TAG_PATTERN)],
    )
    .expect_ok();
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["repositories"], 3, "{report:#}");
    assert_eq!(report["tags"], 4);
    assert_eq!(report["tags_recorded"], 4);
    assert_eq!(report["errors"], 0);

    let recorded = index::open_sled(&proxy.index_path()).unwrap();
    let synced = index::open_sled(&sync_dir.path().join("index")).unwrap();
    let (recorded, synced) = (snapshot(&recorded), snapshot(&synced));
    assert_eq!(recorded.len(), 3);
    for (repository, value) in &recorded {
        assert_eq!(
            Some(value),
            synced.get(repository),
            "{repository}: proxy-recorded (left) and synced (right) differ"
        );
    }
    assert_eq!(recorded, synced);
    let app = &recorded["team/app"]["manifests"];
    let links: Vec<&Value> = app
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["links"].as_array().unwrap())
        .collect();
    assert!(
        links.contains(&&json!(["1111111aaaaaaa", "Annotation"])),
        "{app:#}"
    );
    assert!(
        links.contains(&&json!([
            "0123abcd",
            format!("TagPattern({TAG_PATTERN:?})")
        ])),
        "{app:#}"
    );
}

/// Pushes one tiny image (`config` as its config blob) as `repository:tag`, directly.
async fn push_raw(registry: &Registry, repository: &str, tag: &str, config: &[u8]) -> String {
    push_tags(registry, repository, &[tag], config, None).await
}

#[tokio::test]
async fn an_interrupted_sync_resumes_malformed_configs_are_recorded_and_deleted_tags_forgotten() {
    let registry = Registry::start();
    let one = push_raw(&registry, "a/one", "v1", br#"{"architecture":"amd64"}"#).await;
    push_raw(&registry, "b/two", "v1", br#"{"architecture":"amd64"}"#).await;
    let broken = push_raw(&registry, "c/three", "v1", b"this is not json").await;

    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(dir.path(), &registry.url(), "");
    // An earlier run got through `b/two` and was killed.
    {
        let index = index::open_sled(&dir.path().join("index")).unwrap();
        index
            .apply(&[Write::SyncProgress(SyncState {
                started: UnixMillis(1),
                done_through: Some("b/two".into()),
                finished: None,
                last_finished: None,
            })])
            .unwrap();
        index.flush().unwrap();
    }
    let report: Value =
        serde_json::from_str(&run_cli(&config, &["sync", "--output", "json"], &[]).expect_ok())
            .unwrap();
    assert_eq!(report["resumed_after"], "b/two", "{report:#}");
    assert_eq!(report["repositories"], 1);
    {
        let index = index::open_sled(&dir.path().join("index")).unwrap();
        assert_eq!(index.repositories().unwrap(), ["c/three"]);
        let record = index.manifest("c/three", &broken).unwrap().unwrap();
        assert!(record.config_read);
        let problem = record.problem.expect("the bad config is on record");
        assert!(problem.contains("not valid JSON"), "{problem}");
        let state = index.sync_state().unwrap().unwrap();
        assert!(state.finished.is_some() && state.last_finished.is_some());
    }
    // The next run starts over and covers everything; what is known is left alone.
    let report: Value =
        serde_json::from_str(&run_cli(&config, &["sync", "--output", "json"], &[]).expect_ok())
            .unwrap();
    assert_eq!(report["resumed_after"], Value::Null);
    assert_eq!(report["repositories"], 3);
    assert_eq!(report["tags_recorded"], 2, "c/three was known: {report:#}");
    {
        let index = index::open_sled(&dir.path().join("index")).unwrap();
        assert_eq!(index.repositories().unwrap(), ["a/one", "b/two", "c/three"]);
        assert!(index.tag("a/one", "v1").unwrap().is_some());
    }

    // Deleted directly in the registry: the next sync forgets the tag.
    let deleted = HttpClient::default()
        .send(
            Method::DELETE,
            &format!("{}/v2/a/one/manifests/{one}", registry.url()),
            &[],
            crate::support::http::empty(),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED);
    let report: Value =
        serde_json::from_str(&run_cli(&config, &["sync", "--output", "json"], &[]).expect_ok())
            .unwrap();
    assert_eq!(report["tags_gone"], 1, "{report:#}");
    let index = index::open_sled(&dir.path().join("index")).unwrap();
    assert!(index.tag("a/one", "v1").unwrap().is_none());
    assert!(index.tag("b/two", "v1").unwrap().is_some());
}

#[tokio::test]
async fn serve_syncs_what_bypassed_it_and_answers_reads_while_running() {
    let registry = Registry::start();
    let proxy = Regkeeper::start_with(&registry.url(), "sync:\n  interval: 1h\n");
    let direct = push_raw(
        &registry,
        "team/direct",
        "v1",
        br#"{"architecture":"amd64"}"#,
    )
    .await;
    // Never synced: the first run comes shortly after start.
    let tags = proxy
        .admin_until("/api/v1/tags?repository=team/direct", |t| {
            t.as_array().is_some_and(|t| !t.is_empty())
        })
        .await;
    assert_eq!(tags[0]["digest"], direct.as_str());
    assert_eq!(tags[0]["tag"], "v1");

    // The reading commands work while serve holds the index (through the admin listener).
    let json: Value =
        serde_json::from_str(&proxy.cli(&["inspect", "team/direct:v1"], &[]).expect_ok()).unwrap();
    assert_eq!(json["digest"], direct.as_str());
    let table = proxy.cli(&["tags"], &[]).expect_ok();
    assert!(table.contains("team/direct"), "{table}");
}

#[test]
fn sync_reads_again_a_record_written_opaque_for_a_media_type_spelling() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&work.path().join("layout"));
    let image = layout.add_image(&ImageSpec {
        annotations: &[("org.opencontainers.image.revision", "1111111aaaaaaa")],
        ..ImageSpec::default()
    });
    layout.tag("v1", &image);
    skopeo_copy(
        &format!("oci:{}:v1", layout.dir.display()),
        &format!("docker://{}/team/app:v1", registry.addr),
        &[],
    );
    let config = cli_config(work.path(), &registry.url(), "");
    // What an earlier build recorded for a push with `…+json; charset=utf-8` and no
    // `mediaType` in the body: opaque, its annotation never read.
    {
        let index = index::open_sled(&work.path().join("index")).unwrap();
        let at = UnixMillis::now();
        index
            .apply(&[
                Write::PutManifest(regkeeper::index::ManifestRecord {
                    complete: true,
                    ..regkeeper::index::ManifestRecord::bare(
                        "team/app",
                        &image.digest,
                        &format!("{OCI_MANIFEST}; charset=utf-8"),
                        at,
                    )
                }),
                Write::push("team/app", "v1", image.digest.clone(), at),
            ])
            .unwrap();
        index.flush().unwrap();
    }
    run_cli(&config, &["sync"], &[]).expect_ok();
    let index = index::open_sled(&work.path().join("index")).unwrap();
    let record = index.manifest("team/app", &image.digest).unwrap().unwrap();
    assert_eq!(
        record.kind,
        regkeeper::index::ManifestKind::Image,
        "{record:?}"
    );
    assert_eq!(record.media_type, OCI_MANIFEST);
    let links = index.commit_links(&image.digest).unwrap();
    assert_eq!(links.len(), 1, "the annotation is read now: {links:?}");
}

/// Pushes, directly, an image whose config is `config` (and whose manifest differs by
/// `variant`, when given) under each of `tags`; returns its digest.
async fn push_tags(
    registry: &Registry,
    repository: &str,
    tags: &[&str],
    config: &[u8],
    variant: Option<&str>,
) -> String {
    let client = HttpClient::default();
    let config_digest = client.push_blob(&registry.url(), repository, config).await;
    let annotations = variant
        .map(|v| format!(r#","annotations":{{"variant":"{v}"}}"#))
        .unwrap_or_default();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[]{annotations}}}"#,
        config.len()
    );
    for tag in tags {
        let put = client
            .send(
                Method::PUT,
                &format!("{}/v2/{repository}/manifests/{tag}", registry.url()),
                &[("content-type", OCI_MANIFEST)],
                full(manifest.clone()),
            )
            .await;
        assert_eq!(put.status, StatusCode::CREATED);
    }
    crate::support::image::sha256(manifest.as_bytes())
}

#[tokio::test]
async fn sync_fetches_each_manifest_and_each_config_once_however_many_tags_share_them() {
    let registry = Registry::start_logging();
    let shared = br#"{"architecture":"amd64","config":{"Labels":{"vcs-ref":"0123456789abcdef"}}}"#;
    let own = br#"{"architecture":"arm64"}"#;
    // Two images on one config, four tags each; a third image with its own config, four tags.
    let a = push_tags(
        &registry,
        "team/app",
        &["a1", "a2", "a3", "a4"],
        shared,
        Some("a"),
    )
    .await;
    let b = push_tags(
        &registry,
        "team/app",
        &["b1", "b2", "b3", "b4"],
        shared,
        Some("b"),
    )
    .await;
    let c = push_tags(
        &registry,
        "team/app",
        &["c1", "c2", "c3", "c4"],
        own,
        Some("c"),
    )
    .await;
    let before = registry.requests().len();

    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(dir.path(), &registry.url(), "");
    let report: Value =
        serde_json::from_str(&run_cli(&config, &["sync", "--output", "json"], &[]).expect_ok())
            .unwrap();
    let requests = registry.requests()[before..].to_vec();
    let count = |method: &str, part: &str| {
        requests
            .iter()
            .filter(|(m, path)| m == method && path.contains(part))
            .count()
    };
    assert_eq!(count("HEAD", "/manifests/"), 12, "{requests:#?}");
    assert_eq!(count("GET", "/manifests/"), 3, "{requests:#?}");
    assert_eq!(count("GET", "/blobs/"), 2, "{requests:#?}");
    assert_eq!(
        (
            &report["manifest_heads"],
            &report["manifests_fetched"],
            &report["configs_read"],
            &report["tags_recorded"]
        ),
        (&json!(12), &json!(3), &json!(2), &json!(12)),
        "{report:#}"
    );
    let index = index::open_sled(&dir.path().join("index")).unwrap();
    for (digest, tags) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        for n in 1..=4 {
            let tag = index
                .tag("team/app", &format!("{tags}{n}"))
                .unwrap()
                .unwrap();
            assert_eq!(&tag.digest, digest);
        }
        let record = index.manifest("team/app", digest).unwrap().unwrap();
        assert!(record.config_read && record.complete, "{record:?}");
    }
    let links = index.commit_links(&a).unwrap();
    assert!(
        links.iter().any(|l| l.commit == "0123456789abcdef"),
        "{links:?}"
    );
    assert!(
        index
            .commit_links(&b)
            .unwrap()
            .iter()
            .any(|l| l.commit == "0123456789abcdef")
    );
}
