//! The changes a batch is made of: what the proxy, `sync`, cleanup and restore write.

use super::model::{
    AuditEntry, CleanupLock, CleanupRun, CommitLink, ConfigFacts, ManifestRecord, RestoreRecord,
    SyncState, UnixMillis,
};

/// One change to the index. A batch of them is applied atomically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// A tag was pushed (or first seen by `sync`, with `only_if_unknown`).
    PushTag {
        repository: String,
        tag: String,
        digest: String,
        at: UnixMillis,
        /// `sync`: leave a tag the index already knows exactly as it is.
        only_if_unknown: bool,
    },
    /// A manifest's facts, replacing what was known.
    PutManifest(ManifestRecord),
    /// Adds a commit link (the same digest + commit + source is stored once).
    LinkCommit(CommitLink),
    /// The registry deleted this digest from the repository: the manifest and every tag on it.
    DeleteManifest { repository: String, digest: String },
    /// The tag no longer exists (its digest may stay) as of `at`.
    DeleteTag {
        repository: String,
        tag: String,
        at: UnixMillis,
    },
    /// Cleanup deleted this digest and these, its only tags (it checked): the manifest and the
    /// named tags go, without scanning the repository's other tags as `DeleteManifest` does.
    DeleteChecked {
        repository: String,
        digest: String,
        tags: Vec<String>,
    },
    /// The image config of a recorded manifest was read. Ignored when the manifest is unknown.
    SetConfig {
        repository: String,
        digest: String,
        facts: ConfigFacts,
    },
    /// `sync` found the tag gone upstream: forget it, unless it was pushed at or after `listed`
    /// (the moment sync listed the repository's tags) — a push sync could not have seen.
    ForgetTag {
        repository: String,
        tag: String,
        listed: UnixMillis,
    },
    /// `sync`'s progress.
    SyncProgress(SyncState),
    /// Records (or completes) an audited cleanup step.
    Audit(AuditEntry),
    /// Takes (`Some`) or releases (`None`) the cleanup lock.
    CleanupLock(Option<CleanupLock>),
    /// A cleanup run ended.
    CleanupRan(CleanupRun),
    /// `restore` put a manifest back (the latest restore of a reference replaces earlier ones).
    Restored(RestoreRecord),
    /// Takes lease `name` for `holder` until `until`, when it is free, expired at `at`, or
    /// already `holder`'s (then renewed) — or whoever holds it, when `exclusive` (the writer
    /// holds the whole index, so any other holder is a process that is gone). A takeover bumps
    /// the epoch. Otherwise nothing changes.
    TakeLease {
        name: String,
        holder: String,
        at: UnixMillis,
        until: UnixMillis,
        exclusive: bool,
    },
    /// Gives lease `name` up, if `holder` holds it.
    DropLease { name: String, holder: String },
    /// Fails the whole batch unless `holder` holds lease `name` at `epoch`, unexpired at `at`:
    /// written with an audit entry, it proves leadership in the same batch as the record of a
    /// deletion about to happen, so a leader that lost the lease (paused past it, cut off)
    /// cannot record — and so cannot make — another deletion.
    Fence {
        name: String,
        holder: String,
        epoch: u64,
        at: UnixMillis,
    },
    /// Pulls seen since the last batch.
    RecordPulls {
        repository: String,
        reference: String,
        count: u64,
        last: UnixMillis,
    },
}

impl Write {
    /// A tag pushed to `digest` at `at` (through the proxy, a restore, a test): what a push
    /// records, overriding what the index knew of the tag.
    pub fn push(
        repository: impl Into<String>,
        tag: impl Into<String>,
        digest: impl Into<String>,
        at: UnixMillis,
    ) -> Self {
        Write::PushTag {
            repository: repository.into(),
            tag: tag.into(),
            digest: digest.into(),
            at,
            only_if_unknown: false,
        }
    }
}
