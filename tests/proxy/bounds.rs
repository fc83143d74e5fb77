//! Memory and disk are bounded by regkeeper, not by what clients push: an image config with
//! tens of thousands of labels, referred to by hundreds of tiny manifests, costs its size once.

use http::{Method, StatusCode};
use regkeeper::{index, manifest::KEPT_KEYS};
use serde_json::{Map, Value, json};

use crate::support::{
    Registry, Regkeeper,
    http::{HttpClient, full},
    image::{OCI_MANIFEST, sha256},
};

/// The peak resident set of a process, from `/proc` (`VmHWM`), in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib * 1024
}

/// Bytes under `dir`, recursively.
pub fn disk_usage(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                disk_usage(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread")]
async fn a_config_with_90000_labels_under_300_manifests_costs_its_size_once() {
    let registry = Registry::start();
    let proxy = Regkeeper::start(&registry.url());
    let client = HttpClient::default();

    // 90,000 labels (~3.9 MB), among them a kept key with an oversized value and one that fits.
    let mut labels = Map::new();
    for n in 0..90_000 {
        labels.insert(format!("label-{n:05}"), json!(format!("value-{n:020}")));
    }
    labels.insert("vcs-ref".into(), json!("0123456789abcdef0123"));
    labels.insert(KEPT_KEYS[0].into(), json!("f".repeat(200_000)));
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Labels": labels },
    }))
    .unwrap();
    assert!(config.len() > 3_900_000 && config.len() < 4 << 20);
    let config_digest = client.push_blob(&proxy.url(), "attack/app", &config).await;

    // 300 tiny manifests referring to it, each with a few hundred annotations of its own.
    let annotations: Map<String, Value> = (0..300)
        .map(|n| (format!("note-{n}"), json!("x".repeat(40))))
        .collect();
    let mut digests = Vec::new();
    for n in 0..300 {
        let mut annotations = annotations.clone();
        annotations.insert("n".into(), json!(n.to_string()));
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [],
            "annotations": annotations,
        }))
        .unwrap();
        let put = client
            .send(
                Method::PUT,
                &format!("{}/v2/attack/app/manifests/t{n}", proxy.url()),
                &[("content-type", OCI_MANIFEST)],
                full(manifest.clone()),
            )
            .await;
        assert_eq!(put.status, StatusCode::CREATED);
        digests.push(sha256(&manifest));
    }
    // Every config read and recorded.
    for n in [0, 150, 299] {
        proxy
            .admin_until(&format!("/api/v1/inspect?reference=attack/app:t{n}"), |v| {
                v["manifest"]["config_read"] == true
            })
            .await;
    }
    let tags = proxy
        .admin_until("/api/v1/tags?repository=attack/app", |v| {
            v.as_array().is_some_and(|t| t.len() == 300)
        })
        .await;
    let rss = peak_rss(proxy.pid());
    eprintln!("peak RSS after 300 pushes: {} KiB", rss / 1024);
    assert!(rss < 100 * MIB, "peak RSS {} MiB", rss / MIB);
    drop(tags);

    proxy.terminate();
    let mut proxy = proxy;
    assert!(proxy.wait(), "{}", proxy.logs());
    let size = disk_usage(&proxy.index_path());
    eprintln!("index on disk: {} KiB", size / 1024);
    assert!(size < 20 * MIB, "index {} MiB", size / MIB);
    let index = index::open_sled(&proxy.index_path()).unwrap();
    use regkeeper::index::Index as _;
    for digest in [&digests[0], &digests[299]] {
        let record = index.manifest("attack/app", digest).unwrap().unwrap();
        assert!(record.config_read);
        assert_eq!(
            record.labels.keys().collect::<Vec<_>>(),
            ["vcs-ref"],
            "only the kept labels that fit"
        );
        assert!(record.annotations.is_empty(), "{:?}", record.annotations);
        let problem = record.problem.expect("the dropped label is said");
        assert!(problem.contains(KEPT_KEYS[0]), "{problem}");
    }
    // The label that fits still links the commit.
    let links = index.commit_links(&digests[42]).unwrap();
    assert!(
        links.iter().any(|l| l.commit == "0123456789abcdef0123"),
        "{links:?}"
    );
}
