//! What the index records: tags, manifests, commit links and pull statistics. The changes to
//! them are [`Write`]s (`write.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (UTC).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    pub fn now() -> Self {
        Self(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}

/// A digest the tag pointed to before it was pushed again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousDigest {
    pub digest: String,
    /// When the tag stopped pointing to it.
    pub replaced_at: UnixMillis,
}

/// Repository + tag → digest, with push times and the tag's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    pub repository: String,
    pub tag: String,
    pub digest: String,
    /// When the proxy (or `sync`) first saw this tag.
    pub first_pushed: UnixMillis,
    /// The latest push of this tag (to any digest).
    pub last_pushed: UnixMillis,
    /// Earlier digests, oldest first.
    #[serde(default)]
    pub history: Vec<PreviousDigest>,
}

/// What a manifest is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManifestKind {
    /// An image manifest (OCI or Docker v2 schema 2).
    Image,
    /// A multi-platform index (OCI index or Docker manifest list).
    Index,
    /// An OCI artifact (non-image `artifactType` or config media type).
    Artifact,
    /// A media type regkeeper does not parse: recorded, never interpreted.
    Opaque,
}

/// Repository + digest → what the manifest is and refers to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub repository: String,
    pub digest: String,
    pub media_type: String,
    pub kind: ManifestKind,
    /// Manifest + config + layers, in bytes (for an index: the index itself).
    pub total_size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
    /// Child manifests of an index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
    /// The manifest this one refers to (signatures, SBOMs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// `created` from the image config, as written there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub recorded_at: UnixMillis,
    /// The last moment a tag stopped pointing to it (moved to another digest, or deleted):
    /// how long it has been untagged, for the untagged-manifests rule. A push of the manifest
    /// itself writes a new record (and a newer `recorded_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untagged_at: Option<UnixMillis>,
    /// False when the body was over the capture cap or did not parse: `sync` fills it in.
    pub complete: bool,
    /// The image config was read (`created` and `labels` are what it says).
    #[serde(default)]
    pub config_read: bool,
    /// What is wrong with the manifest or its config as the upstream holds it (malformed JSON,
    /// config missing or too large). Recorded, never fatal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl ManifestRecord {
    /// A record of which only the name and media type are known: an opaque, incomplete record
    /// that `sync` fills in. Callers set what they know beyond that.
    pub fn bare(repository: &str, digest: &str, media_type: &str, at: UnixMillis) -> Self {
        Self {
            repository: repository.to_string(),
            digest: digest.to_string(),
            media_type: media_type.to_string(),
            kind: ManifestKind::Opaque,
            total_size: 0,
            config_digest: None,
            children: Vec::new(),
            subject: None,
            artifact_type: None,
            created: None,
            annotations: BTreeMap::new(),
            labels: BTreeMap::new(),
            recorded_at: at,
            untagged_at: None,
            complete: false,
            config_read: false,
            problem: None,
        }
    }

    /// A record `sync` should read again: incomplete, an image whose config was not read, or
    /// opaque although its media type is one regkeeper reads (written before media types
    /// were compared as registries compare them: `…+json; charset=utf-8`, upper case).
    pub fn needs_reading(&self, understood: impl Fn(&str) -> bool) -> bool {
        !self.complete
            || self.needs_config()
            || (self.kind == ManifestKind::Opaque && understood(&self.media_type))
    }

    /// An image whose config has not been read yet.
    pub fn needs_config(&self) -> bool {
        self.kind == ManifestKind::Image && self.config_digest.is_some() && !self.config_read
    }
}

/// What an image config says, for [`Write::SetConfig`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigFacts {
    pub created: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub problem: Option<String>,
}

/// Where `sync` is. Its progress is written through the same writer as what it found, so it
/// never claims more than is recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// When the current (or last) run started.
    pub started: UnixMillis,
    /// Every repository up to and including this one, in catalog order, is done in this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_through: Option<String>,
    /// When this run finished; `None` while it runs, or when it was interrupted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<UnixMillis>,
    /// When any run last finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_finished: Option<UnixMillis>,
}

/// How a commit link was learned.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "source", content = "detail")]
pub enum LinkSource {
    /// Manifest annotation `org.opencontainers.image.revision`.
    Annotation,
    /// The named image config label.
    Label(String),
    /// The named configured tag pattern.
    TagPattern(String),
    /// `POST /api/v1/links`.
    Api,
}

/// Digest → a git commit it was built from, and what the evidence speaks for.
///
/// Evidence carried by the image itself (annotation, config labels) is about the digest, in
/// every repository. Evidence from a tag (a tag pattern, the link API naming a tag) is about
/// that tag of that repository only: the other tags on the digest keep their own status. A
/// link API call naming a digest is about that digest in that repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitLink {
    pub digest: String,
    pub commit: String,
    pub source: LinkSource,
    pub learned_at: UnixMillis,
    /// The repository the evidence speaks for; `None`: the image's own (every repository).
    /// Links written before scoping existed have none whatever their source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The tag the evidence speaks for (with `repository`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// Pulls of one reference (tag or digest) in one repository.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullStats {
    pub last_pulled: UnixMillis,
    pub count: u64,
}

/// What cleanup does to one digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditAction {
    /// `DELETE` by digest (every tag on it goes).
    DeleteDigest,
    /// Only the tag goes (tag deletion, or the tombstone method).
    Untag,
}

/// Where one audited step is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditState {
    /// Written before the call: a crash leaves it here, and the next run settles it.
    Started,
    /// The upstream did it.
    Done,
    /// Not done: the tag changed since the plan (`skipped-changed`), or a dry run.
    Skipped,
    /// The call failed (the detail says how).
    Failed,
}

/// One audited cleanup step: written before the call is made, completed after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The run (sortable: starts with its start time).
    pub run: String,
    /// Order within the run.
    pub seq: u64,
    pub at: UnixMillis,
    pub repository: String,
    /// The tags this step removes (none for an untagged child or referrer).
    pub tags: Vec<String>,
    pub digest: String,
    pub action: AuditAction,
    pub state: AuditState,
    /// Why skipped or failed; how a tag was removed (`tag delete`, `tombstone sha256:…`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Why no rule kept it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// The manifest as the upstream held it, for restore (base64).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub manifest_base64: String,
}

/// A manifest `restore` put back: kept for `cleanup.restoreProtection` from `at`, so the next
/// run does not delete again what an operator just brought back. Listed in `history`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename = "restore")]
pub struct RestoreRecord {
    pub repository: String,
    /// The tag put back; `None`: put back by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub digest: String,
    /// The cleanup run that had removed it.
    pub from_run: String,
    pub at: UnixMillis,
}

impl RestoreRecord {
    /// The tag, or the digest when put back by digest.
    pub fn reference(&self) -> &str {
        self.tag.as_deref().unwrap_or(&self.digest)
    }
}

/// The cleanup run holding the index's cleanup lock. One left behind by a run that never
/// finished (a crash) is stale: the next run settles what it left `started`, then takes over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupLock {
    pub run: String,
    pub pid: u32,
    pub started: UnixMillis,
}

/// Who leads the replicas sharing an index (runs cleanup and sync), until when. A takeover
/// bumps the epoch, so a leader that lost the lease can tell — and is told, by [`Write::Fence`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: String,
    pub epoch: u64,
    pub expires: UnixMillis,
}

/// The last cleanup run's outcome (for the schedule and metrics).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupRun {
    pub run: String,
    /// `dry-run` or `enforce`.
    pub mode: String,
    pub started: UnixMillis,
    pub finished: UnixMillis,
    pub succeeded: bool,
    /// Why it stopped before deleting anything, if the breaker tripped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tripped: Option<String>,
}
