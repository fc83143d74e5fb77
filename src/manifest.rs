//! Reading pushed manifests: what a manifest is (image, index, artifact, or opaque), what it
//! refers to, and the commit it names. Tolerant by design: unknown fields and media types are
//! recorded, never errors; only a body that is not JSON at all is "unparsed". Known manifest
//! and index types go through oci-spec's typed parse; a document that does not conform is
//! still read tolerantly and the deviation recorded.
//!
//! May call: `index` (model types).

use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::index::{ConfigFacts, ManifestKind, ManifestRecord, UnixMillis};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const IMAGE_CONFIGS: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
/// The annotation (and label) that names the commit an image was built from.
pub const REVISION: &str = "org.opencontainers.image.revision";
/// The annotation (and label) that names the source repository an image was built from.
pub const SOURCE: &str = "org.opencontainers.image.source";

mod kept;
pub use kept::{KEPT_KEYS, Kept, MAX_VALUE_BYTES};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    size: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(default)]
    subject: Option<Descriptor>,
    #[serde(default)]
    artifact_type: Option<String>,
    /// Only what regkeeper reads of them (see [`Kept`]).
    #[serde(default)]
    annotations: Kept,
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// What a manifest needs the registry to still hold: its config and layer blobs, and (an index)
/// its child manifests.
#[derive(Debug, Default)]
pub struct References {
    pub blobs: Vec<String>,
    pub children: Vec<String>,
}

/// The references of `body`; `None` when it is not a JSON manifest.
pub fn references(body: &[u8]) -> Option<References> {
    let parsed: Body = serde_json::from_slice(body).ok()?;
    Some(References {
        blobs: parsed
            .config
            .into_iter()
            .chain(parsed.layers)
            .map(|d| d.digest)
            .collect(),
        children: parsed.manifests.into_iter().map(|m| m.digest).collect(),
    })
}

/// The record for a manifest pushed as `body` with `content_type`. `None` when the body is not a
/// JSON manifest at all (the push still passed; `sync` looks again).
pub fn parse(
    repository: &str,
    digest: &str,
    content_type: &str,
    body: &[u8],
    at: UnixMillis,
) -> Option<ManifestRecord> {
    let tolerant: Body = serde_json::from_slice(body).ok()?;
    // As the registry reads it: the body's `mediaType` wins when present, else the
    // Content-Type, either compared without parameters and case.
    let media_type = tolerant
        .media_type
        .as_deref()
        .map(media_type_essence)
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| media_type_essence(content_type));
    // The typed oci-spec parse where the media type says what the document is; what does not
    // conform is still read tolerantly, and the deviation is kept on record.
    let (parsed, deviation) = match strict(&media_type, body) {
        Some(Ok(parsed)) => (parsed, None),
        Some(Err(why)) => (
            tolerant,
            Some(format!("does not conform to the OCI image spec: {why}")),
        ),
        None => (tolerant, None),
    };
    let problem = join_problems(deviation, parsed.annotations.problem("annotations"));
    let config_type = parsed.config.as_ref().and_then(|c| c.media_type.as_deref());
    let kind = match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => ManifestKind::Index,
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let image_config = config_type.is_none_or(|t| IMAGE_CONFIGS.contains(&t));
            if parsed.artifact_type.is_some() || !image_config {
                ManifestKind::Artifact
            } else {
                ManifestKind::Image
            }
        }
        _ => ManifestKind::Opaque,
    };
    let referenced: u64 = parsed.config.iter().map(|c| c.size).sum::<u64>()
        + parsed.layers.iter().map(|l| l.size).sum::<u64>();
    Some(ManifestRecord {
        repository: repository.to_string(),
        digest: digest.to_string(),
        media_type,
        kind,
        total_size: body.len() as u64 + referenced,
        config_digest: parsed.config.map(|c| c.digest),
        children: parsed.manifests.into_iter().map(|m| m.digest).collect(),
        subject: parsed.subject.map(|s| s.digest),
        artifact_type: parsed.artifact_type,
        created: None,
        annotations: parsed.annotations.entries,
        labels: BTreeMap::new(),
        recorded_at: at,
        untagged_at: None,
        complete: true,
        config_read: false,
        problem,
    })
}

/// Whether regkeeper reads manifests of this media type (any spelling of it).
pub fn understood(media_type: &str) -> bool {
    matches!(
        media_type_essence(media_type).as_str(),
        OCI_MANIFEST | DOCKER_MANIFEST | OCI_INDEX | DOCKER_LIST
    )
}

/// A media type as registries compare it: `type/subtype` in lower case, parameters dropped
/// (`application/vnd.oci.image.manifest.v1+json; charset=utf-8` is an OCI manifest).
pub fn media_type_essence(media_type: &str) -> String {
    media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The oci-spec parse of an image manifest (OCI or Docker v2 schema 2, which share the shape)
/// or index (OCI index or Docker manifest list); `None` for other media types.
fn strict(media_type: &str, body: &[u8]) -> Option<Result<Body, String>> {
    use oci_spec::image::{Descriptor as Typed, ImageIndex, ImageManifest};
    let descriptor = |d: &Typed| Descriptor {
        media_type: Some(d.media_type().to_string()),
        digest: d.digest().to_string(),
        size: d.size(),
    };
    let annotations = |a: &Option<std::collections::HashMap<String, String>>| {
        Kept::from_pairs(a.iter().flatten().map(|(k, v)| (k.as_str(), v.as_str())))
    };
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(
            serde_json::from_slice::<ImageManifest>(body)
                .map(|m| Body {
                    media_type: m.media_type().as_ref().map(ToString::to_string),
                    config: Some(descriptor(m.config())),
                    layers: m.layers().iter().map(descriptor).collect(),
                    manifests: Vec::new(),
                    subject: m.subject().as_ref().map(descriptor),
                    artifact_type: m.artifact_type().as_ref().map(ToString::to_string),
                    annotations: annotations(m.annotations()),
                })
                .map_err(|e| e.to_string()),
        ),
        OCI_INDEX | DOCKER_LIST => Some(
            serde_json::from_slice::<ImageIndex>(body)
                .map(|i| Body {
                    media_type: i.media_type().as_ref().map(ToString::to_string),
                    config: None,
                    layers: Vec::new(),
                    manifests: i.manifests().iter().map(descriptor).collect(),
                    subject: i.subject().as_ref().map(descriptor),
                    artifact_type: i.artifact_type().as_ref().map(ToString::to_string),
                    annotations: annotations(i.annotations()),
                })
                .map_err(|e| e.to_string()),
        ),
        _ => None,
    }
}

/// A manifest regkeeper could not read (malformed, or too large to fetch), kept on record as an
/// opaque artifact with the reason, so it is visible and never interpreted.
pub fn unreadable(
    repository: &str,
    digest: &str,
    media_type: &str,
    size: u64,
    problem: String,
    at: UnixMillis,
) -> ManifestRecord {
    ManifestRecord {
        total_size: size,
        complete: true,
        problem: Some(problem),
        ..ManifestRecord::bare(repository, digest, media_type, at)
    }
}

fn join_problems(first: Option<String>, second: Option<String>) -> Option<String> {
    match (first, second) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
}

/// What an image config (OCI or Docker) says about where it came from. A config that is not
/// JSON gives a `problem`, not an error.
pub fn parse_config(body: &[u8]) -> ConfigFacts {
    #[derive(Deserialize)]
    struct Config {
        #[serde(default)]
        created: Option<String>,
        #[serde(default)]
        config: Option<Inner>,
    }
    // Only `created` and the kept labels are parsed into memory: the rest of a config (history,
    // rootfs, thousands of labels) is skipped as it is read.
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default, rename = "Labels")]
        labels: Kept,
    }
    match serde_json::from_slice::<Config>(body) {
        Ok(config) => {
            let labels = config.config.map(|c| c.labels).unwrap_or_default();
            let mut problem = labels.problem("labels");
            let created = config.created.filter(|c| {
                let fits = c.len() <= MAX_VALUE_BYTES;
                if !fits {
                    problem = join_problems(
                        problem.take(),
                        Some(format!("created over {MAX_VALUE_BYTES} bytes not recorded")),
                    );
                }
                fits
            });
            ConfigFacts {
                created,
                labels: labels.entries,
                problem,
            }
        }
        Err(error) => ConfigFacts {
            problem: Some(format!("the image config is not valid JSON: {error}")),
            ..ConfigFacts::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    #[test]
    fn image_manifest_with_annotation() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D}","size":100}},"layers":[{{"mediaType":"x","digest":"{D}","size":1000}}],"annotations":{{"{REVISION}":"abc123"}}}}"#
        );
        let record = parse("a", "sha256:x", "", body.as_bytes(), UnixMillis(1)).unwrap();
        assert_eq!(record.kind, ManifestKind::Image);
        assert_eq!(record.total_size, body.len() as u64 + 1100);
        assert_eq!(record.config_digest.as_deref(), Some(D));
        assert_eq!(record.annotations[REVISION], "abc123");
    }

    #[test]
    fn media_types_are_read_as_the_registry_reads_them() {
        // No `mediaType` in the body: the Content-Type decides, in any spelling.
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D}","size":100}},"layers":[],"annotations":{{"{REVISION}":"abc123"}}}}"#
        );
        let plain = parse(
            "a",
            "sha256:x",
            OCI_MANIFEST,
            body.as_bytes(),
            UnixMillis(1),
        )
        .unwrap();
        for spelling in [
            "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
            "Application/VND.OCI.Image.Manifest.v1+JSON",
            " application/vnd.oci.image.manifest.v1+json ;charset=UTF-8",
        ] {
            let record = parse("a", "sha256:x", spelling, body.as_bytes(), UnixMillis(1)).unwrap();
            assert_eq!(record, plain, "{spelling}");
            assert_eq!(record.kind, ManifestKind::Image);
            assert_eq!(record.media_type, OCI_MANIFEST);
        }
        // The body's `mediaType` wins over the header.
        let index = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        let record = parse(
            "a",
            "sha256:y",
            OCI_MANIFEST,
            index.as_bytes(),
            UnixMillis(1),
        )
        .unwrap();
        assert_eq!(record.kind, ManifestKind::Index);
        assert!(understood(
            "application/vnd.docker.distribution.manifest.v2+json; x=y"
        ));
        assert!(!understood(
            "application/vnd.docker.distribution.manifest.v1+prettyjws"
        ));
    }

    #[test]
    fn index_referrer_artifact_and_opaque() {
        let index =
            format!(r#"{{"mediaType":"{OCI_INDEX}","manifests":[{{"digest":"{D}","size":5}}]}}"#);
        let record = parse("a", "d", "", index.as_bytes(), UnixMillis(1)).unwrap();
        assert_eq!(
            (record.kind, record.children.as_slice()),
            (ManifestKind::Index, &[D.to_string()][..])
        );

        let referrer = format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","artifactType":"application/spdx+json","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{D}","size":2}},"layers":[],"subject":{{"digest":"sha256:subject","size":9}}}}"#
        );
        let record = parse("a", "d", "", referrer.as_bytes(), UnixMillis(1)).unwrap();
        assert_eq!(record.kind, ManifestKind::Artifact);
        assert_eq!(record.subject.as_deref(), Some("sha256:subject"));

        let opaque = parse("a", "d", "application/x-custom", b"{}", UnixMillis(1)).unwrap();
        assert_eq!(
            (opaque.kind, opaque.media_type.as_str()),
            (ManifestKind::Opaque, "application/x-custom")
        );
        assert!(parse("a", "d", "", b"not json", UnixMillis(1)).is_none());
    }

    #[test]
    fn conforming_documents_have_no_problem_and_deviations_are_recorded() {
        let good = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{D}","size":7}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{D}","size":9}}]}}"#
        );
        let record = parse("a", "d", "", good.as_bytes(), UnixMillis(1)).unwrap();
        assert_eq!((record.kind, record.problem), (ManifestKind::Image, None));
        assert_eq!(record.total_size, good.len() as u64 + 16);
        // No schemaVersion and a digest that is not one: read anyway, deviation on record.
        let odd = format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"not-a-digest","size":7}},"layers":[]}}"#
        );
        let record = parse("a", "d", "", odd.as_bytes(), UnixMillis(1)).unwrap();
        assert_eq!(record.config_digest.as_deref(), Some("not-a-digest"));
        assert!(record.problem.unwrap().contains("OCI image spec"));
    }

    #[test]
    fn config_labels_and_created_tolerate_nulls_and_garbage() {
        let facts = parse_config(
            br#"{"created":"2026-11-01T10:00:00Z","architecture":"amd64","config":{"Labels":{"vcs-ref":"abc1234"},"Env":null}}"#,
        );
        assert_eq!(facts.created.as_deref(), Some("2026-11-01T10:00:00Z"));
        assert_eq!(facts.labels["vcs-ref"], "abc1234");
        assert_eq!(facts.problem, None);
        let facts = parse_config(br#"{"config":{"Labels":null}}"#);
        assert!(facts.labels.is_empty() && facts.problem.is_none());
        assert!(parse_config(b"\x00garbage").problem.is_some());
    }
}
