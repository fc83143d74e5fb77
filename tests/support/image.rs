//! OCI image layouts written by hand (deterministic: same input, same digests), and skopeo.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::process::{require_tool, run_ok};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// Content-addressed bytes with their descriptor fields.
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: String,
    pub size: usize,
    pub media_type: String,
}

impl Blob {
    pub fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.size })
    }
}

/// Deterministic, incompressible bytes (xorshift), for layers whose size matters.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A gzip'd tar holding one file. `stored` skips compression (fast for big noise layers).
pub fn tar_gz_layer(file_name: &str, content: &[u8], stored: bool) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, file_name, content).unwrap();
    let tar = tar.into_inner().unwrap();
    let level = if stored {
        flate2::Compression::none()
    } else {
        flate2::Compression::fast()
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), level);
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// An OCI image layout directory (`oci:DIR:TAG` for skopeo).
pub struct Layout {
    pub dir: PathBuf,
    refs: Vec<Value>,
}

/// What goes into one image.
pub struct ImageSpec<'a> {
    pub layers: Vec<Vec<u8>>,
    pub labels: &'a [(&'a str, &'a str)],
    pub annotations: &'a [(&'a str, &'a str)],
    pub architecture: &'a str,
}

impl Default for ImageSpec<'_> {
    fn default() -> Self {
        Self {
            layers: vec![tar_gz_layer(
                "hello.txt",
                b"hello from regkeeper tests\n",
                false,
            )],
            labels: &[],
            annotations: &[],
            architecture: "amd64",
        }
    }
}

impl Layout {
    pub fn new(dir: &Path) -> Self {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let layout = Self {
            dir: dir.to_owned(),
            refs: Vec::new(),
        };
        layout.write_index();
        layout
    }

    pub fn add_blob(&self, bytes: &[u8], media_type: &str) -> Blob {
        let digest = sha256(bytes);
        let path = self
            .dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        fs::write(path, bytes).unwrap();
        Blob {
            digest,
            size: bytes.len(),
            media_type: media_type.into(),
        }
    }

    /// Writes config, layers and manifest; returns the manifest blob (not yet tagged).
    pub fn add_image(&self, spec: &ImageSpec) -> Blob {
        let layers: Vec<Blob> = spec
            .layers
            .iter()
            .map(|l| self.add_blob(l, OCI_LAYER_GZIP))
            .collect();
        let diff_ids: Vec<String> = spec
            .layers
            .iter()
            .map(|l| {
                let mut tar = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&l[..]), &mut tar)
                    .unwrap();
                sha256(&tar)
            })
            .collect();
        let labels: serde_json::Map<String, Value> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let config = json!({
            "architecture": spec.architecture,
            "os": "linux",
            "created": "2026-01-01T00:00:00Z",
            "config": { "Labels": labels },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        });
        let config = self.add_blob(config.to_string().as_bytes(), OCI_CONFIG);
        let annotations: serde_json::Map<String, Value> = spec
            .annotations
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        });
        if !annotations.is_empty() {
            manifest["annotations"] = Value::Object(annotations);
        }
        self.add_blob(manifest.to_string().as_bytes(), OCI_MANIFEST)
    }

    /// An index over `(manifest, architecture)` pairs.
    pub fn add_index(&self, manifests: &[(Blob, &str)]) -> Blob {
        let entries: Vec<Value> = manifests
            .iter()
            .map(|(m, arch)| {
                let mut d = m.descriptor();
                d["platform"] = json!({ "architecture": arch, "os": "linux" });
                d
            })
            .collect();
        let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries });
        self.add_blob(index.to_string().as_bytes(), OCI_INDEX)
    }

    /// Points `tag` at `blob` in `index.json`.
    /// One distinct single-layer image per name, tagged by its name.
    pub fn add_named(&mut self, names: &[&str]) {
        for name in names {
            let image = self.add_image(&ImageSpec {
                layers: vec![tar_gz_layer("name.txt", name.as_bytes(), false)],
                ..ImageSpec::default()
            });
            self.tag(name, &image);
        }
    }

    pub fn tag(&mut self, tag: &str, blob: &Blob) {
        let mut d = blob.descriptor();
        d["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
        self.refs.push(d);
        self.write_index();
    }

    fn write_index(&self) {
        let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs });
        fs::write(self.dir.join("index.json"), index.to_string()).unwrap();
    }

    /// The digest `index.json` gives for `tag` (after skopeo wrote the layout).
    pub fn digest_of(dir: &Path, tag: &str) -> String {
        let index: Value =
            serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap_or_else(|| panic!("{tag} not in {}", dir.display()))["digest"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// `skopeo ARGS…` with TLS verification off for plain-HTTP loopback registries.
pub fn skopeo(args: &[&str]) -> String {
    require_tool("skopeo");
    let output = run_ok(Command::new("skopeo").args(args));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `skopeo copy` between two references, plain HTTP on both sides.
pub fn skopeo_copy(from: &str, to: &str, extra: &[&str]) {
    let mut args = vec!["copy", "--src-tls-verify=false", "--dest-tls-verify=false"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[from, to]);
    skopeo(&args);
}

/// Whether `reference` (`docker://…`) resolves at its registry.
pub fn resolves(reference: &str) -> bool {
    Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw", reference])
        .output()
        .unwrap()
        .status
        .success()
}

/// The digest of what `reference` resolves to, per the registry (raw manifest bytes).
pub fn remote_digest(reference: &str) -> String {
    let raw = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw", reference])
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    sha256(&raw.stdout)
}
