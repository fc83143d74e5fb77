//! The retention plan: a pure function from what is known — an index snapshot, git facts, the
//! images live systems use, the retention config, and `now` — to a [`Plan`] that says for every
//! tag whether it is kept (and by which rules) or deleted, and for every digest whether it is
//! deleted whole or only untagged. No I/O, no clock: the same inputs give the same plan.
//!
//! Owns: rule semantics (policies.md sections 1–3). May call: `config`, `index` (model types),
//! `manifest` (annotation names). Git history comes in as plain data ([`git_facts`]), built by
//! `sources::git` or by tests in memory.

mod actions;
mod closure;
mod evaluation;
pub mod git_facts;
mod repository;
mod rules;
pub mod snapshot;
pub mod usage;
pub mod werf;

/// The plan's maps hold a million keys: hashed with foldhash (seeded per map), not SipHash.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;
pub type HashSet<K> = std::collections::HashSet<K, foldhash::quality::RandomState>;

use std::sync::Arc;

use serde::Serialize;

pub use evaluation::{Timings, evaluate_timed, missing_images};
pub use snapshot::{
    Digest, Evidence, LinkFact, LinkScope, Manifest, RepositorySnapshot, Restored, Snapshot, Tag,
};
pub use usage::{ImageRef, InUse, Usage};

use crate::{
    config::{RetentionConfig, Scope, werf_default_policies},
    index::UnixMillis,
};

/// Everything one evaluation looks at.
pub struct Inputs<'a> {
    pub snapshot: &'a Snapshot,
    /// Git repository name → its facts, or why they could not be read.
    pub git: &'a std::collections::HashMap<String, Result<git_facts::GitFacts, String>>,
    pub usage: &'a Usage,
    pub retention: &'a RetentionConfig,
    pub now: UnixMillis,
    pub details: Details,
    /// What `restore` put back is kept this long (`cleanup.restoreProtection`; zero: off).
    pub restore_protection: std::time::Duration,
}

/// How much a plan says about each tag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Details {
    /// Every rule's verdict in words (`explain`).
    #[default]
    All,
    /// Only the reasons kept tags are kept (`plan`): the non-keeping verdicts are left out of
    /// `TagPlan::outcomes`.
    Reasons,
    /// As `Reasons` for kept tags, every verdict in words for the tags that are not kept: what
    /// the cleanup's audit log records of each removal, without a sentence per kept tag.
    Removed,
}

impl Details {
    /// Whether the non-keeping verdicts are put in words for every tag.
    fn all(self) -> bool {
        self == Self::All
    }
}

/// One rule's verdict on one tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The rule's name: `git`, `git-unproven`, `kubernetes`, `kubernetes-unavailable`, `helm`,
    /// `helm-unavailable`, `restored`, `pushedWithin`, `pulledWithin`, `tags`,
    /// `lastPerRepository`, `untracked`, `follows` (signatures, children, referrers).
    pub rule: &'static str,
    pub keeps: bool,
    /// Human words: the keep reason when `keeps`, else why not.
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TagPlan {
    pub tag: Arc<str>,
    pub digest: Digest,
    /// The tag's latest push.
    pub pushed: UnixMillis,
    pub keep: bool,
    /// Why it is kept; for a tag no rule keeps, each rule's why not (empty in plans made
    /// without words).
    pub reasons: Vec<String>,
    /// Every rule's verdict, for `explain`.
    #[serde(skip)]
    pub outcomes: Vec<Outcome>,
}

/// What the executor does to one digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Nothing keeps the digest: `DELETE` it (its tags go with it).
    DeleteDigest {
        digest: Digest,
        tags: Vec<Arc<str>>,
        bytes: u64,
        /// Why an untagged manifest goes (the index or subject it belongs to).
        #[serde(skip_serializing_if = "Option::is_none")]
        follows: Option<String>,
        /// Manifests deleted in the same plan that list or refer to this one: the executor
        /// deletes them first, and keeps this one if any of them stays.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        after: Vec<Digest>,
    },
    /// The digest stays (something keeps it): remove only this tag.
    Untag { tag: Arc<str>, digest: Digest },
    /// A manifest no tag, index or kept subject references, untagged longer than the scope's
    /// `untaggedManifests.maxAge`: `DELETE` it.
    DeleteUntagged {
        digest: Digest,
        bytes: u64,
        why: String,
        /// As for `DeleteDigest`: referrers deleted first.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        after: Vec<Digest>,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub tags: usize,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RepositoryPlan {
    pub repository: String,
    /// The scope that governs it; `None`: outside every scope, never touched.
    pub scope: Option<String>,
    pub kept: Totals,
    pub deleted: Totals,
    pub tags: Vec<TagPlan>,
    pub actions: Vec<Action>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub at: UnixMillis,
    pub repositories: Vec<RepositoryPlan>,
    /// Sources that failed or proved nothing, and what that kept.
    pub warnings: Vec<String>,
}

pub fn evaluate(inputs: &Inputs) -> Plan {
    evaluate_timed(inputs).0
}

/// Threads for the parallel parts of reading and evaluating: the machine's cores, at most 8.
pub(crate) fn workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
}

/// werf's defaults when a scope gives no policies.
pub(crate) fn policies_of(scope: &Scope) -> std::borrow::Cow<'_, [crate::config::KeepPolicy]> {
    if scope.keep_policies.is_empty() {
        std::borrow::Cow::Owned(werf_default_policies())
    } else {
        std::borrow::Cow::Borrowed(&scope.keep_policies)
    }
}
