//! Whole images through the proxy with skopeo: what goes in comes back out byte-identical.

use crate::support::{
    Registry, Regkeeper,
    image::{ImageSpec, Layout, noise, remote_digest, skopeo_copy, tar_gz_layer},
};

struct Setup {
    _registry: Registry,
    proxy: Regkeeper,
    work: tempfile::TempDir,
}

fn setup() -> Setup {
    let registry = Registry::start();
    let proxy = Regkeeper::start(&registry.url());
    Setup {
        proxy,
        _registry: registry,
        work: tempfile::tempdir().unwrap(),
    }
}

#[test]
fn oci_image_round_trips_with_identical_digest() {
    let s = setup();
    let mut layout = Layout::new(&s.work.path().join("in"));
    let manifest = layout.add_image(&ImageSpec {
        annotations: &[("org.opencontainers.image.revision", "0123abc")],
        ..ImageSpec::default()
    });
    layout.tag("v1", &manifest);

    let remote = format!("docker://{}/team/app:v1", s.proxy.host());
    skopeo_copy(&format!("oci:{}:v1", layout.dir.display()), &remote, &[]);
    assert_eq!(remote_digest(&remote), manifest.digest);

    let out = s.work.path().join("out");
    skopeo_copy(&remote, &format!("oci:{}:v1", out.display()), &[]);
    assert_eq!(Layout::digest_of(&out, "v1"), manifest.digest);
}

#[test]
fn docker_v2s2_image_round_trips_with_identical_digest() {
    let s = setup();
    let mut layout = Layout::new(&s.work.path().join("in"));
    let manifest = layout.add_image(&ImageSpec {
        labels: &[("org.opencontainers.image.revision", "0123abc")],
        ..ImageSpec::default()
    });
    layout.tag("v1", &manifest);

    let remote = format!("docker://{}/team/legacy:v1", s.proxy.host());
    skopeo_copy(
        &format!("oci:{}:v1", layout.dir.display()),
        &remote,
        &["--format", "v2s2"],
    );
    let pushed = remote_digest(&remote);
    assert_ne!(
        pushed, manifest.digest,
        "converted to Docker v2s2, so a new digest"
    );

    // Pull back as v2s2 into a docker-archive-free form: a second registry push keeps bytes.
    let out = s.work.path().join("out");
    skopeo_copy(&remote, &format!("dir:{}", out.display()), &[]);
    let pulled = std::fs::read(out.join("manifest.json")).unwrap();
    assert_eq!(crate::support::image::sha256(&pulled), pushed);
    let manifest: serde_json::Value = serde_json::from_slice(&pulled).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
}

#[test]
fn multi_arch_index_round_trips_with_all_children() {
    let s = setup();
    let mut layout = Layout::new(&s.work.path().join("in"));
    let amd64 = layout.add_image(&ImageSpec::default());
    let arm64 = layout.add_image(&ImageSpec {
        architecture: "arm64",
        layers: vec![tar_gz_layer("arm.txt", b"arm64 layer\n", false)],
        ..ImageSpec::default()
    });
    let index = layout.add_index(&[(amd64.clone(), "amd64"), (arm64.clone(), "arm64")]);
    layout.tag("multi", &index);

    let remote = format!("docker://{}/team/multi:1", s.proxy.host());
    skopeo_copy(
        &format!("oci:{}:multi", layout.dir.display()),
        &remote,
        &["--multi-arch", "all"],
    );
    assert_eq!(remote_digest(&remote), index.digest);
    for child in [&amd64, &arm64] {
        let by_digest = format!("docker://{}/team/multi@{}", s.proxy.host(), child.digest);
        assert_eq!(remote_digest(&by_digest), child.digest);
    }

    let out = s.work.path().join("out");
    skopeo_copy(
        &remote,
        &format!("oci:{}:multi", out.display()),
        &["--multi-arch", "all"],
    );
    assert_eq!(Layout::digest_of(&out, "multi"), index.digest);
}

#[test]
fn layer_larger_than_64_mib_streams_both_ways() {
    let s = setup();
    let mut layout = Layout::new(&s.work.path().join("in"));
    let big = tar_gz_layer("big.bin", &noise(70 << 20, 7), true);
    assert!(big.len() > 64 << 20);
    let manifest = layout.add_image(&ImageSpec {
        layers: vec![big.clone()],
        ..ImageSpec::default()
    });
    layout.tag("big", &manifest);

    let remote = format!("docker://{}/team/big:1", s.proxy.host());
    skopeo_copy(&format!("oci:{}:big", layout.dir.display()), &remote, &[]);
    let out = s.work.path().join("out");
    skopeo_copy(&remote, &format!("oci:{}:big", out.display()), &[]);
    assert_eq!(Layout::digest_of(&out, "big"), manifest.digest);
    let layer_digest = crate::support::image::sha256(&big);
    let pulled = std::fs::read(
        out.join("blobs/sha256")
            .join(layer_digest.trim_start_matches("sha256:")),
    )
    .unwrap();
    assert_eq!(pulled.len(), big.len());
    assert_eq!(crate::support::image::sha256(&pulled), layer_digest);
}
