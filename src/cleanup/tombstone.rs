//! The tombstone method, for registries that cannot delete a tag (Distribution 2): PUT a tiny
//! manifest that is unique to this step onto the tag, then DELETE that manifest by digest. The
//! tag goes with it; the digest the tag pointed to stays for the tags that keep it.

use bytes::Bytes;

/// The empty JSON object, the tombstone's config blob.
pub const EMPTY_CONFIG: &[u8] = b"{}";
pub const MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// A manifest no one else has: an OCI image manifest with the empty config, no layers, and
/// an annotation naming the run and step (so its digest is unique and its origin obvious).
pub fn manifest(run: &str, seq: u64) -> Bytes {
    let config = crate::manifest::sha256_digest(EMPTY_CONFIG);
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config,
            "size": EMPTY_CONFIG.len(),
        },
        "layers": [],
        "annotations": { ANNOTATION: format!("{run}/{seq}") },
    });
    Bytes::from(body.to_string())
}

/// The annotation that marks a tombstone (and names its run and step).
const ANNOTATION: &str = "io.regkeeper.tombstone";

/// Whether `body` is a tombstone regkeeper put onto a tag.
pub fn is_tombstone(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .is_some_and(|m| m["annotations"][ANNOTATION].is_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tombstones_are_unique_per_step_and_use_the_empty_config() {
        let a = super::manifest("r1", 1);
        assert_ne!(a, super::manifest("r1", 2));
        assert_ne!(a, super::manifest("r2", 1));
        let text = std::str::from_utf8(&a).unwrap();
        assert!(
            text.contains(
                "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
            )
        );
    }
}
