//! The retention plan: a pure function from what is known — an index snapshot, git facts, the
//! images live systems use, the retention config, and `now` — to a [`Plan`] that says for every
//! tag whether it is kept (and by which rules) or deleted, and for every digest whether it is
//! deleted whole or only untagged. No I/O, no clock: the same inputs give the same plan.
//!
//! Owns: rule semantics (policies.md sections 1–3). May call: `config`, `index` (model types),
//! `manifest` (annotation names). Git history comes in as plain data ([`git_facts`]), built by
//! `sources::git` or by tests in memory.

mod actions;
pub mod git_facts;
mod rules;
pub mod snapshot;
pub mod usage;
pub mod werf;

/// The plan's maps hold a million keys: hashed with foldhash (seeded per map), not SipHash.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;
pub type HashSet<K> = std::collections::HashSet<K, foldhash::quality::RandomState>;

use std::{collections::BTreeSet, sync::Arc};

use serde::Serialize;

pub use snapshot::{
    Digest, Evidence, LinkFact, LinkScope, Manifest, RepositorySnapshot, Restored, Snapshot, Tag,
};
pub use usage::{ImageRef, InUse, Usage};

use crate::{
    config::{RetentionConfig, Scope, repository_pattern, werf_default_policies},
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

/// `sha256-<hex>.sig|.att|.sbom`: cosign's tags for a digest's signature, attestation, SBOM.
fn cosign_subject(tag: &str) -> Option<String> {
    let (hex, suffix) = tag.strip_prefix("sha256-")?.split_once('.')?;
    (hex.len() == 64
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && matches!(suffix, "sig" | "att" | "sbom"))
    .then(|| format!("sha256:{hex}"))
}

pub fn evaluate(inputs: &Inputs) -> Plan {
    evaluate_timed(inputs).0
}

/// Images live workloads (Kubernetes, not Helm history) reference in repositories this
/// registry serves, which the index does not have: deleted by someone, never pushed, or a typo.
/// A pod restart would fail to pull them.
pub fn missing_images<'a>(snapshot: &Snapshot, usage: &'a Usage) -> Vec<&'a InUse> {
    usage
        .kubernetes
        .iter()
        .filter(|used| match snapshot.repositories.get(&used.repository) {
            None => true,
            Some(repo) => match &used.image {
                ImageRef::Tag(tag) => repo
                    .tags
                    .binary_search_by(|t| (*t.tag).cmp(tag.as_str()))
                    .is_err(),
                ImageRef::Digest(digest) => !repo.manifests.contains_key(digest.as_str()),
            },
        })
        .collect()
}

/// Seconds spent in the two halves of an evaluation, for benchmarks and logs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// Resolving linked commits and walking the git references (werf's rules).
    pub git_walks: f64,
    /// Every other rule, and the plan's actions.
    pub rules_and_plan: f64,
}

/// [`evaluate`], also saying where the time went (the plan itself does not depend on it).
pub fn evaluate_timed(inputs: &Inputs) -> (Plan, Timings) {
    let started = std::time::Instant::now();
    let mut warnings = Vec::new();
    for cluster in &inputs.usage.kubernetes_unavailable {
        warnings.push(format!(
            "kubernetes cluster {cluster} could not be listed: everything in scope is kept"
        ));
    }
    for cluster in &inputs.usage.helm_unavailable {
        warnings.push(format!(
            "helm releases in {cluster} could not be read: everything in scope is kept"
        ));
    }
    for (name, facts) in inputs.git {
        match facts {
            Err(why) => warnings.push(format!(
                "git repository {name} cannot be read ({why}): its images are kept (git-unproven)"
            )),
            Ok(facts) if facts.shallow => warnings.push(format!(
                "git repository {name} is a shallow clone: its images are kept (git-unproven)"
            )),
            Ok(_) => {}
        }
    }
    let scopes: Vec<(&Scope, Vec<regex::Regex>, Vec<regex::Regex>)> = inputs
        .retention
        .scopes
        .iter()
        .map(|s| (s, compile(&s.include), compile(&s.exclude)))
        .collect();
    let missing = missing_images(inputs.snapshot, inputs.usage);
    if !missing.is_empty() {
        let shown: Vec<String> = missing
            .iter()
            .take(5)
            .map(|m| {
                let reference = match &m.image {
                    ImageRef::Tag(tag) => format!("{}:{tag}", m.repository),
                    ImageRef::Digest(digest) => format!("{}@{digest}", m.repository),
                };
                format!("{reference} ({})", m.by)
            })
            .collect();
        warnings.push(format!(
            "{} image reference(s) of live workloads are not in the registry (a restart would fail to pull): {}{}",
            missing.len(),
            shown.join(", "),
            if missing.len() > shown.len() { ", …" } else { "" }
        ));
    }
    let git_map = rules::GitMap::new(inputs.retention);
    let mut in_scope = Vec::new();
    let mut governed: Vec<Option<usize>> = Vec::new();
    for (name, repo) in &inputs.snapshot.repositories {
        let scope = scopes.iter().position(|(_, include, exclude)| {
            include.iter().any(|p| p.is_match(name)) && !exclude.iter().any(|p| p.is_match(name))
        });
        governed.push(scope.map(|scope_index| {
            in_scope.push(rules::InScope {
                name,
                repo,
                scope: scopes[scope_index].0,
                scope_index,
            });
            in_scope.len() - 1
        }));
    }
    let git = rules::git_verdicts(&in_scope, &git_map, inputs, &mut warnings);
    let walked = std::time::Instant::now();
    let usage = rules::usage_by_repository(inputs);
    let jobs: Vec<_> = inputs.snapshot.repositories.iter().zip(governed).collect();
    // Repositories are independent once the git walks are done: spread them over the cores,
    // in contiguous runs so the plan keeps the snapshot's order.
    let run = jobs.len().div_ceil(workers()).max(1);
    let repositories: Vec<RepositoryPlan> = std::thread::scope(|threads| {
        let handles: Vec<_> = jobs
            .chunks(run)
            .map(|chunk| {
                let (git, usage, in_scope) = (&git, &usage, &in_scope);
                threads.spawn(move || {
                    chunk
                        .iter()
                        .map(|((name, repo), slot)| match slot {
                            Some(slot) => evaluate_repository(
                                name,
                                repo,
                                in_scope[*slot].scope,
                                &git[*slot],
                                usage.get(name.as_str()).map_or(&[][..], Vec::as_slice),
                                inputs,
                            ),
                            None => untouched(name, repo),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            // A panic in the pure core is a bug; surface it rather than plan with a hole.
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    warnings.sort();
    warnings.dedup();
    let timings = Timings {
        git_walks: walked.duration_since(started).as_secs_f64(),
        rules_and_plan: walked.elapsed().as_secs_f64(),
    };
    let plan = Plan {
        at: inputs.now,
        repositories,
        warnings,
    };
    (plan, timings)
}

fn compile(patterns: &[String]) -> Vec<regex::Regex> {
    // Validated with the config; an invalid pattern matches nothing.
    patterns
        .iter()
        .filter_map(|p| repository_pattern(p).ok())
        .collect()
}

fn size(repo: &RepositorySnapshot, digest: &str) -> u64 {
    repo.manifests.get(digest).map_or(0, |m| m.total_size)
}

/// A repository outside every scope: all kept, nothing to do.
fn untouched(name: &str, repo: &RepositorySnapshot) -> RepositoryPlan {
    let tags: Vec<TagPlan> = repo
        .tags
        .iter()
        .map(|t| TagPlan {
            tag: t.tag.clone(),
            digest: t.digest.clone(),
            pushed: t.last_pushed,
            keep: true,
            reasons: vec!["outside every retention scope".into()],
            outcomes: vec![Outcome {
                rule: "scope",
                keeps: true,
                detail: "outside every retention scope: never touched".into(),
            }],
        })
        .collect();
    let digests: BTreeSet<&str> = repo.tags.iter().map(|t| &*t.digest).collect();
    RepositoryPlan {
        repository: name.to_string(),
        scope: None,
        kept: Totals {
            tags: tags.len(),
            bytes: digests.iter().map(|d| size(repo, d)).sum(),
        },
        deleted: Totals::default(),
        tags,
        actions: Vec::new(),
    }
}

fn evaluate_repository(
    name: &str,
    repo: &RepositorySnapshot,
    scope: &Scope,
    git: &rules::GitOutcomes,
    uses: &[(&'static str, &InUse)],
    inputs: &Inputs,
) -> RepositoryPlan {
    let context = rules::TagContext::new(name, repo, scope, inputs, uses);
    // cosign's `sha256-<hex>.sig|.att|.sbom` tags whose subject is in this repository follow
    // it: they stay while it stays, and go when it is deleted. Those whose subject is not here
    // (cosign's COSIGN_REPOSITORY) are judged by the rules like any tag.
    let present: HashSet<&str> = if repo.tags.iter().any(|t| cosign_subject(&t.tag).is_some()) {
        repo.manifests
            .keys()
            .map(|d| &**d)
            .chain(repo.tags.iter().map(|t| &*t.digest))
            .collect()
    } else {
        HashSet::default()
    };
    let mut followers: Vec<(usize, Digest)> = Vec::new();
    let mut tags: Vec<TagPlan> = repo
        .tags
        .iter()
        .enumerate()
        .map(|(i, tag)| {
            let subject = cosign_subject(&tag.tag);
            let outcomes = match subject {
                Some(subject) if present.contains(subject.as_str()) => {
                    followers.push((i, Digest::from(subject)));
                    Vec::new()
                }
                _ => rule_outcomes(&context, tag, git, inputs.details),
            };
            TagPlan {
                tag: tag.tag.clone(),
                digest: tag.digest.clone(),
                pushed: tag.last_pushed,
                keep: outcomes.iter().any(|o| o.keeps),
                reasons: Vec::new(),
                outcomes,
            }
        })
        .collect();
    let fail_closed = !inputs.usage.kubernetes_unavailable.is_empty()
        || !inputs.usage.helm_unavailable.is_empty();
    let kept = kept_digests(repo, &tags, &context);
    let references = actions::References::new(repo);
    let untagged = match &scope.untagged_manifests {
        Some(rule) if !fail_closed => {
            untagged_deletable(repo, scope, rule, &references.tagged, &kept, inputs.now)
        }
        _ => Vec::new(),
    };
    // Tags sorted by (digest, name) group each digest's tags without a map of lists.
    let mut order: Vec<usize> = (0..tags.len()).collect();
    order.sort_unstable_by(|a, b| {
        (&tags[*a].digest, &tags[*a].tag).cmp(&(&tags[*b].digest, &tags[*b].tag))
    });
    let groups = groups(&tags, &order);
    let deletions = actions::deletions(
        repo,
        &tags,
        &groups,
        &kept,
        &untagged,
        &followers,
        &references,
    );
    for (i, subject) in &followers {
        let stays = !deletions.contains(subject);
        let tag = &mut tags[*i];
        tag.keep = stays;
        tag.outcomes.push(Outcome {
            rule: "follows",
            keeps: stays,
            detail: if stays {
                format!("signature/attestation of {subject}, which stays")
            } else {
                format!("signature/attestation of {subject}, which is deleted")
            },
        });
    }
    for tag in &mut tags {
        // Why it is kept; or, for a tag no rule keeps, each rule's why not (in the plans that
        // word them: `explain`, `plan`, a cleanup's audit).
        let keep = tag.keep;
        tag.reasons = tag
            .outcomes
            .iter()
            .filter(|o| o.keeps == keep && !o.detail.is_empty())
            .map(|o| o.detail.clone())
            .collect();
        let keep_words = match inputs.details {
            Details::All => false,
            Details::Reasons => true,
            Details::Removed => tag.keep,
        };
        if keep_words {
            tag.outcomes.retain(|o| o.keeps);
        }
        if inputs.details != Details::Reasons
            && !tag.keep
            && let Some(why) = deletions.pinned.get(&*tag.digest)
        {
            tag.outcomes.push(Outcome {
                rule: "follows",
                keeps: false,
                detail: format!("removed as a tag only: its digest is {why}"),
            });
        }
    }
    let actions = actions::actions(repo, &tags, &groups, &deletions, &references);
    let kept_digests: HashSet<&str> = tags
        .iter()
        .map(|t| &*t.digest)
        .filter(|d| !deletions.contains(d))
        .collect();
    let kept_tags = tags.iter().filter(|t| t.keep).count();
    RepositoryPlan {
        repository: name.to_string(),
        scope: Some(scope.name.clone()),
        kept: Totals {
            tags: kept_tags,
            bytes: kept_digests.iter().map(|d| size(repo, d)).sum(),
        },
        deleted: Totals {
            tags: tags.len() - kept_tags,
            bytes: deletions.digests().map(|d| size(repo, d)).sum(),
        },
        tags,
        actions,
    }
}

/// Every rule's verdict on one tag, in as many words as `details` asks for.
fn rule_outcomes(
    context: &rules::TagContext,
    tag: &Tag,
    git: &rules::GitOutcomes,
    details: Details,
) -> Vec<Outcome> {
    let first = if details.all() {
        Details::All
    } else {
        Details::Reasons
    };
    let outcomes = context.outcomes(tag, git, first);
    if details == Details::Removed && !outcomes.iter().any(|o| o.keeps) {
        // Removed: the words of every verdict, for the audit log.
        context.outcomes(tag, git, Details::All)
    } else {
        outcomes
    }
}

/// The tags of each digest: runs of `order` (tag indexes sorted by digest, then name).
fn groups<'o>(tags: &[TagPlan], order: &'o [usize]) -> Vec<&'o [usize]> {
    order
        .chunk_by(|a, b| tags[*a].digest == tags[*b].digest)
        .collect()
}

/// Digests kept: by a kept tag, or by digest (workloads, Helm), then what follows from them:
/// children of kept indexes, referrers of kept subjects. Each with its first reason.
fn kept_digests<'a>(
    repo: &'a RepositorySnapshot,
    tags: &[TagPlan],
    context: &rules::TagContext<'a>,
) -> HashMap<&'a str, String> {
    let mut kept: HashMap<&str, String> = HashMap::default();
    // Keyed by the snapshot's strings.
    for (tag, _) in repo.tags.iter().zip(tags).filter(|(_, t)| t.keep) {
        kept.entry(&*tag.digest)
            .or_insert_with(|| format!("tag {} is kept", tag.tag));
    }
    for (digest, why) in context.kept_by_digest() {
        kept.entry(digest).or_insert(why);
    }
    loop {
        let mut added = Vec::new();
        for manifest in repo.manifests.values() {
            if kept.contains_key(&*manifest.digest) {
                for child in &manifest.children {
                    if !kept.contains_key(&**child) {
                        added.push((
                            &**child,
                            format!("listed by kept index {}", manifest.digest),
                        ));
                    }
                }
            } else if let Some(subject) =
                manifest.subject.as_deref().filter(|s| kept.contains_key(s))
            {
                added.push((&*manifest.digest, format!("refers to kept {subject}")));
            }
        }
        if added.is_empty() {
            return kept;
        }
        for (digest, why) in added {
            kept.entry(digest).or_insert(why);
        }
    }
}

/// Manifests deletable on their own by the `untaggedManifests` rule, by digest order, with why:
/// no tag points to them, nothing keeps them, no index in the repository lists them (the index
/// decides for its children), they refer to no subject (a referrer goes only with its subject),
/// not pulled within `pulledWithin`, and untagged longer than both `maxAge` and `pushedWithin`
/// (an index's children, pushed before it, are untagged for a moment). None at all in a
/// repository holding a manifest whose references are unknown (opaque, or not read whole): it
/// may list any of them.
fn untagged_deletable<'a>(
    repo: &'a RepositorySnapshot,
    scope: &Scope,
    rule: &crate::config::UntaggedManifests,
    tagged: &HashSet<&str>,
    kept: &HashMap<&str, String>,
    now: UnixMillis,
) -> Vec<(&'a Digest, String)> {
    if repo.manifests.values().any(|m| !m.references_known) {
        return Vec::new();
    }
    let listed: HashSet<&str> = repo
        .manifests
        .values()
        .flat_map(|m| m.children.iter().map(|c| &**c))
        .collect();
    let window = rule.max_age.0.max(scope.pushed_within.0).as_millis() as u64;
    let pulled_recently = |digest: &str| {
        scope.pulled_within.is_some_and(|within| {
            repo.pulls.get(digest).is_some_and(|p| {
                now.0.saturating_sub(p.last_pulled.0) < within.0.as_millis() as u64
            })
        })
    };
    let mut found: Vec<(&Digest, String)> = repo
        .manifests
        .values()
        .filter(|m| {
            let digest = &*m.digest;
            !tagged.contains(digest)
                && !kept.contains_key(digest)
                && !listed.contains(digest)
                && m.subject.is_none()
                && now.0.saturating_sub(m.untagged_since.0) >= window
                && !pulled_recently(digest)
        })
        .map(|m| {
            let age = now.0.saturating_sub(m.untagged_since.0);
            (
                &m.digest,
                format!(
                    "untagged for {} (≥ untaggedManifests.maxAge {}); no index refers to it",
                    rules::ago(age),
                    rule.max_age
                ),
            )
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(b.0));
    found
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
