//! Removing a tag whose digest stays, against registries that answer a tag `DELETE` in each of
//! the ways found in the wild (an in-process registry: Distribution 2.8 only shows one). The
//! kept tag must resolve afterwards whatever the registry does; the way is learned once, on
//! throwaway manifests.

use regkeeper::{
    cleanup::RunReport,
    config::{CleanupMode, Config},
    index::{Index, UnixMillis},
};

use crate::{
    cleanup::RULES,
    support::{
        memory_registry::{MemoryRegistry, TagDelete, recorded_push},
        regkeeper::{cli_config, run_cleanup},
    },
};

const REPOSITORY: &str = "team/app";

fn manifest(name: &str) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}},"layers":[],"annotations":{{"name":"{name}"}}}}"#
    )
    .into_bytes()
}

/// `x` under `keep-1`, `old-x1` and `old-x2` (two tags to remove while `x` stays), `y` under
/// `old-y`; one enforcing run.
fn run(tag_delete: TagDelete) -> (MemoryRegistry, RunReport, String) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let registry = runtime.block_on(MemoryRegistry::start(tag_delete));
    let work = tempfile::tempdir().unwrap();
    let config = Config::load(&cli_config(work.path(), &registry.url, RULES)).unwrap();
    let index = std::sync::Arc::new(regkeeper::index::in_memory());
    let long_ago = UnixMillis(UnixMillis::now().0 - 86_400_000);
    let mut x = String::new();
    for (tag, name) in [
        ("keep-1", "x"),
        ("old-x1", "x"),
        ("old-x2", "x"),
        ("old-y", "y"),
    ] {
        let digest = registry.put(REPOSITORY, tag, &manifest(name));
        if name == "x" {
            x = digest.clone();
        }
        index
            .apply(&recorded_push(REPOSITORY, tag, &digest, 500, long_ago))
            .unwrap();
    }
    let report = run_cleanup(&runtime, &config, &index, CleanupMode::Enforce);
    (registry, report, x)
}

fn details(report: &RunReport) -> Vec<(String, &'static str, String)> {
    report
        .steps
        .iter()
        .map(|s| (s.tags.join(","), s.outcome.as_str(), s.detail.clone()))
        .collect()
}

fn check_kept_and_removed(registry: &MemoryRegistry, report: &RunReport, x: &str) {
    assert!(report.succeeded(), "{:#?}", report.steps);
    assert_eq!(
        registry.tag(REPOSITORY, "keep-1").as_deref(),
        Some(x),
        "the kept tag resolves: {:#?}",
        report.steps
    );
    assert!(registry.has_manifest(REPOSITORY, x));
    assert_eq!(
        registry.tags(REPOSITORY),
        ["keep-1"],
        "removed tags and probes are gone"
    );
    // Learned once: one pair of probe tags for the two untags.
    let probes = registry
        .requests()
        .iter()
        .filter(|(m, p)| m == "PUT" && p.contains("/manifests/regkeeper-probe-"))
        .count();
    assert_eq!(probes, 2);
}

#[test]
fn a_registry_whose_tag_delete_deletes_the_manifest_gets_tombstones() {
    let (registry, report, x) = run(TagDelete::DeletesManifest);
    check_kept_and_removed(&registry, &report, &x);
    for (tags, outcome, detail) in details(&report) {
        if tags.starts_with("old-x") {
            assert_eq!(outcome, "untagged");
            assert!(detail.starts_with("tombstone sha256:"), "{detail}");
        }
    }
    // No real tag was ever deleted by tag: that would have taken keep-1 along.
    let by_tag: Vec<(String, String)> = registry
        .requests()
        .into_iter()
        .filter(|(m, p)| m == "DELETE" && p.contains("/manifests/old-"))
        .collect();
    assert_eq!(by_tag, Vec::<(String, String)>::new());
}

#[test]
fn a_registry_that_deletes_tags_alone_gets_tag_deletes() {
    let (registry, report, x) = run(TagDelete::RemovesTag);
    check_kept_and_removed(&registry, &report, &x);
    let untags: Vec<String> = details(&report)
        .into_iter()
        .filter(|(tags, _, _)| tags.starts_with("old-x"))
        .map(|(_, _, detail)| detail)
        .collect();
    assert_eq!(untags, ["tag delete", "tag delete"]);
}

#[test]
fn a_registry_without_tag_deletes_gets_tombstones() {
    let (registry, report, x) = run(TagDelete::Unsupported);
    check_kept_and_removed(&registry, &report, &x);
    assert!(
        details(&report)
            .iter()
            .filter(|(tags, _, _)| tags.starts_with("old-x"))
            .all(|(_, _, detail)| detail.starts_with("tombstone ")),
        "{:#?}",
        report.steps
    );
}
