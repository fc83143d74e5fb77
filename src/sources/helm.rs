//! Helm usage: the images of the last N revisions of every release, so a `helm rollback`
//! always finds its images. Releases are Helm 3's secrets (`type: helm.sh/release.v1`, label
//! `owner=helm`); `data.release` is base64 of gzip of the release JSON, whose `manifest` holds
//! the rendered YAML documents.
//!
//! Owns: decoding releases. Finding images in their rendered manifests is `rendered`'s.

use std::{collections::BTreeMap, io::Read};

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::{Client, ResourceExt, api::ListParams};

use super::kube::{WorkloadImage, list_all};

/// Largest release JSON regkeeper inflates.
const MAX_RELEASE_BYTES: u64 = 64 << 20;

#[derive(serde::Deserialize)]
struct Release {
    name: String,
    #[serde(default)]
    namespace: String,
    version: u64,
    #[serde(default)]
    manifest: String,
}

/// Release JSON out of a secret's `data.release` (already base64-decoded once by the API
/// types): base64 → gzip → JSON.
fn decode(secret: &Secret) -> Result<Release, String> {
    let name = secret.name_any();
    let encoded = secret
        .data
        .as_ref()
        .and_then(|d| d.get("release"))
        .ok_or_else(|| format!("release secret {name} has no data.release"))?;
    let gzipped = base64::engine::general_purpose::STANDARD
        .decode(encoded.0.trim_ascii())
        .map_err(|e| format!("release secret {name}: not base64: {e}"))?;
    let mut json = Vec::new();
    // A secret is at most 1 MiB; what it inflates to is bounded too (no gzip bomb).
    flate2::read::GzDecoder::new(gzipped.as_slice())
        .take(MAX_RELEASE_BYTES + 1)
        .read_to_end(&mut json)
        .map_err(|e| format!("release secret {name}: not gzip: {e}"))?;
    if json.len() as u64 > MAX_RELEASE_BYTES {
        return Err(format!(
            "release secret {name}: inflates beyond {MAX_RELEASE_BYTES} bytes"
        ));
    }
    serde_json::from_slice(&json).map_err(|e| format!("release secret {name}: not a release: {e}"))
}

/// Every image the rendered documents name (see `rendered`).
pub fn manifest_images(manifest: &str) -> Result<Vec<String>, String> {
    super::rendered::images(manifest)
}

/// Images of the newest `revisions` revisions of each release. A release that cannot be read
/// fails the whole listing: its images are unknown, so nothing may be deleted on its account.
pub async fn release_images(
    client: &Client,
    namespaces: &[String],
    revisions: usize,
) -> Result<Vec<WorkloadImage>, String> {
    let params = ListParams::default()
        .labels("owner=helm")
        .fields("type=helm.sh/release.v1");
    let secrets: Vec<Secret> = list_all(client, namespaces, &params).await?;
    let mut releases: BTreeMap<(String, String), Vec<Release>> = BTreeMap::new();
    for secret in &secrets {
        if secret
            .type_
            .as_deref()
            .is_some_and(|t| t != "helm.sh/release.v1")
        {
            continue;
        }
        let mut release = decode(secret)?;
        if release.namespace.is_empty() {
            release.namespace = secret.namespace().unwrap_or_default();
        }
        releases
            .entry((release.namespace.clone(), release.name.clone()))
            .or_default()
            .push(release);
    }
    let mut images = Vec::new();
    for ((namespace, name), mut history) in releases {
        history.sort_by_key(|r| std::cmp::Reverse(r.version));
        for release in history.iter().take(revisions) {
            let found = manifest_images(&release.manifest).map_err(|e| {
                format!(
                    "release {namespace}/{name} revision {}: manifest: {e}",
                    release.version
                )
            })?;
            for image in found {
                images.push(WorkloadImage {
                    image,
                    by: format!("release {namespace}/{name} revision {}", release.version),
                });
            }
        }
    }
    Ok(images)
}
