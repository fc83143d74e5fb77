//! Turns a plan's actions into calls to the upstream, one audited step per digest: re-check,
//! write the audit entry, call, complete the audit entry and the index. Nothing is deleted that
//! the checks right before the call do not confirm.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Instant,
};

use futures_util::{StreamExt as _, stream};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

#[cfg(test)]
mod calls;
mod checks;
#[cfg(test)]
mod fake;
mod record;
mod retry;
mod steps;
mod untag;

use checks::{IndexTags, TagsByDigest};
use steps::waves;
pub use steps::{Step, steps};

use crate::{
    cleanup::upstream::Registry,
    config::CleanupMode,
    index::{AuditAction, AuditState, Index, IndexError, UnixMillis, Write},
    registry::{RegistryClient, RegistryError},
};

/// What became of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepOutcome {
    Deleted,
    Untagged,
    /// Dry run: what enforce would have done.
    WouldDelete,
    WouldUntag,
    /// The tag moved, or another tag points to the digest, since the plan.
    SkippedChanged,
    /// The upstream no longer has the digest.
    SkippedGone,
    /// The run's deadline passed before the step started.
    SkippedDeadline,
    Failed,
}

impl StepOutcome {
    /// The name in reports and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deleted => "deleted",
            Self::Untagged => "untagged",
            Self::WouldDelete => "would-delete",
            Self::WouldUntag => "would-untag",
            Self::SkippedChanged => "skipped-changed",
            Self::SkippedGone => "skipped-gone",
            Self::SkippedDeadline => "skipped-deadline",
            Self::Failed => "failed",
        }
    }

    /// Whether the step removed its tags (or, dry run, would have).
    pub fn removes(self) -> bool {
        matches!(
            self,
            Self::Deleted | Self::Untagged | Self::WouldDelete | Self::WouldUntag
        )
    }
}

/// What became of a step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepReport {
    pub repository: String,
    pub digest: String,
    pub tags: Vec<String>,
    pub action: AuditAction,
    pub outcome: StepOutcome,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("the index: {0}")]
    Index(#[from] IndexError),
    #[error("{0}")]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    Unavailable(String),
    /// What was asked names nothing that can be done (an unknown tag or run).
    #[error("{0}")]
    Request(String),
}

pub struct Executor<'a, R: Registry = RegistryClient> {
    pub client: &'a R,
    pub index: &'a dyn Index,
    pub mode: CleanupMode,
    pub run: String,
    pub concurrency: usize,
    pub deadline: Instant,
    /// When the plan was made: a tag pushed or pulled after it is not touched.
    pub planned_at: UnixMillis,
    /// What the clusters use now, read again during the run.
    guard: Option<&'a super::guard::UsageGuard<'a>>,
    /// The leadership every audit write proves (enforcing runs): a leader that lost it
    /// cannot write the `started` entry, and so never makes the call.
    fence: Option<(&'a crate::leader::Leadership, crate::leader::Term)>,
    /// Repository → its tags in the index (name → digest), read after the plan, and again
    /// when the index has seen a tag pushed to the repository since (see `tags_on`).
    index_tags: Mutex<HashMap<String, IndexTags>>,
    /// Repository → digest → the tags pointing to it upstream, read once per run (every tag
    /// listed, then HEADed): pushes that bypassed the proxy are invisible to the index.
    upstream_tags: Mutex<HashMap<String, Arc<OnceCell<Arc<TagsByDigest>>>>>,
}

impl<'a, R: Registry> Executor<'a, R> {
    pub fn new(
        client: &'a R,
        index: &'a dyn Index,
        mode: CleanupMode,
        run: String,
        concurrency: usize,
        deadline: Instant,
        planned_at: UnixMillis,
    ) -> Self {
        Self {
            client,
            index,
            mode,
            run,
            concurrency: concurrency.max(1),
            deadline,
            planned_at,
            guard: None,
            fence: None,
            index_tags: Mutex::new(HashMap::new()),
            upstream_tags: Mutex::new(HashMap::new()),
        }
    }

    /// Proves `term` of `leadership` with every audit write.
    pub fn fenced_by(
        mut self,
        fence: Option<(&'a crate::leader::Leadership, crate::leader::Term)>,
    ) -> Self {
        self.fence = fence;
        self
    }

    /// Asks `guard` before each step whether a workload uses its image now.
    pub fn guarded_by(mut self, guard: Option<&'a super::guard::UsageGuard<'a>>) -> Self {
        self.guard = guard;
        self
    }

    /// Runs every step, `concurrency` at a time; returns each step's report in step order.
    /// Steps run in waves: a manifest listed by (or the subject of) another that the run
    /// deletes waits for that one, and stays if it was not deleted — a run cut short never
    /// leaves an index without its children, nor a referrer without its subject.
    pub async fn run(&self, steps: Vec<Step>) -> Vec<StepReport> {
        let mut reports: Vec<(u64, StepReport)> = Vec::with_capacity(steps.len());
        let mut by_wave: Vec<Vec<Step>> = Vec::new();
        for (wave, step) in waves(&steps).into_iter().zip(steps) {
            if by_wave.len() <= wave {
                by_wave.resize_with(wave + 1, Vec::new);
            }
            by_wave[wave].push(step);
        }
        let later_waves = by_wave.len() > 1;
        // Repository → digests deleted (or, dry run, that would be) by the waves so far.
        let mut gone: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
        for wave in by_wave {
            let went = |step: &Step, digest: &str| {
                gone.get(&step.repository)
                    .is_some_and(|digests| digests.contains(digest))
            };
            let (ready, held): (Vec<Step>, Vec<Step>) = wave
                .into_iter()
                .partition(|step| step.after.iter().all(|d| went(step, d)));
            for step in held {
                let missing: Vec<&str> = step
                    .after
                    .iter()
                    .filter(|d| !went(&step, d))
                    .map(String::as_str)
                    .collect();
                reports.push((step.seq, self.hold(&step, &missing)));
            }
            let done: Vec<(u64, StepReport)> = stream::iter(ready)
                .map(|step| async move { (step.seq, self.step(step).await) })
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
            for (_, report) in done.iter().filter(|_| later_waves) {
                if report.action == AuditAction::DeleteDigest
                    && (report.outcome.removes() || report.outcome == StepOutcome::SkippedGone)
                {
                    gone.entry(report.repository.clone())
                        .or_default()
                        .insert(report.digest.clone());
                }
            }
            reports.extend(done);
        }
        reports.sort_by_key(|(seq, _)| *seq);
        reports.into_iter().map(|(_, r)| r).collect()
    }

    /// A step whose index or referrer was not deleted: the manifest stays whole.
    fn hold(&self, step: &Step, missing: &[&str]) -> StepReport {
        let detail = format!(
            "kept: {} that lists or refers to it was not deleted",
            missing.join(", ")
        );
        tracing::info!(repository = step.repository, digest = step.digest, %detail, "cleanup step held");
        StepReport {
            repository: step.repository.clone(),
            digest: step.digest.clone(),
            tags: step.tags.clone(),
            action: step.action,
            outcome: StepOutcome::SkippedChanged,
            detail,
            bytes: step.bytes,
        }
    }

    async fn step(&self, step: Step) -> StepReport {
        let report = |outcome: StepOutcome, detail: String| StepReport {
            repository: step.repository.clone(),
            digest: step.digest.clone(),
            tags: step.tags.clone(),
            action: step.action,
            outcome,
            detail,
            bytes: step.bytes,
        };
        if Instant::now() >= self.deadline {
            return report(
                StepOutcome::SkippedDeadline,
                "the run's deadline (cleanup.deadline) passed".into(),
            );
        }
        match self.execute(&step).await {
            Ok((outcome, detail)) => report(outcome, detail),
            Err(error) => {
                tracing::warn!(repository = step.repository, digest = step.digest, %error, "cleanup step failed");
                let _ = self.audit(&step, AuditState::Failed, error.to_string(), None);
                report(StepOutcome::Failed, error.to_string())
            }
        }
    }

    /// The checks, then (enforce) the audited call.
    async fn execute(&self, step: &Step) -> Result<(StepOutcome, String), CleanupError> {
        // One GET of the first tag (of the digest, for an untagged manifest) says where the tag
        // points right now and gives the bytes the audit keeps.
        let reference = step.tags.first().unwrap_or(&step.digest);
        let fetched = self
            .retry(|| self.client.manifest(&step.repository, reference))
            .await?;
        let manifest = match fetched {
            Some(manifest) if manifest.digest == step.digest => match self.changed(step).await? {
                None => manifest,
                Some(why) => return self.skip_changed(step, why),
            },
            Some(manifest) => {
                let why = format!("tag {reference} now points to {}", manifest.digest);
                return self.skip_changed(step, why);
            }
            None if step.tags.is_empty() => {
                if self.mode == CleanupMode::Enforce {
                    // Deleted by someone else: the index forgets it, so later plans stop
                    // planning it (sync, which crawls tags, would never notice).
                    self.index.apply(&[Write::DeleteChecked {
                        repository: step.repository.clone(),
                        digest: step.digest.clone(),
                        tags: Vec::new(),
                    }])?;
                }
                return Ok((
                    StepOutcome::SkippedGone,
                    "the upstream no longer has the digest".into(),
                ));
            }
            None => return self.skip_changed(step, format!("tag {reference} is gone")),
        };
        if self.mode == CleanupMode::DryRun {
            let outcome = match step.action {
                AuditAction::DeleteDigest => StepOutcome::WouldDelete,
                AuditAction::Untag => StepOutcome::WouldUntag,
            };
            return Ok((outcome, String::new()));
        }
        // Written before the call: a crash between the two leaves a `started` entry, with the
        // manifest, for the next run (and restore) to settle.
        self.audit(
            step,
            AuditState::Started,
            String::new(),
            Some((&manifest.media_type, &manifest.body)),
        )?;
        let (outcome, detail, write) = match step.action {
            AuditAction::DeleteDigest => {
                self.retry(|| self.client.delete_manifest(&step.repository, &step.digest))
                    .await?;
                (
                    StepOutcome::Deleted,
                    String::new(),
                    Write::DeleteChecked {
                        repository: step.repository.clone(),
                        digest: step.digest.clone(),
                        tags: step.tags.clone(),
                    },
                )
            }
            AuditAction::Untag => {
                let tag = &step.tags[0];
                let how = self.untag(step, tag).await?;
                (
                    StepOutcome::Untagged,
                    how,
                    Write::DeleteTag {
                        repository: step.repository.clone(),
                        tag: tag.clone(),
                        at: UnixMillis::now(),
                    },
                )
            }
        };
        self.index.apply(&[write])?;
        self.audit(
            step,
            AuditState::Done,
            detail.clone(),
            Some((&manifest.media_type, &manifest.body)),
        )?;
        tracing::info!(
            repository = step.repository,
            digest = step.digest,
            tags = ?step.tags,
            outcome = outcome.as_str(),
            detail,
            "cleanup step done"
        );
        Ok((outcome, detail))
    }
}

/// Counts of outcomes, for the run's summary.
pub fn tally(reports: &[StepReport]) -> BTreeMap<StepOutcome, usize> {
    let mut counts = BTreeMap::new();
    for report in reports {
        *counts.entry(report.outcome).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{config::Config, index::ManifestRecord, mirror::Mirror};

    /// A client for an upstream nothing listens on: these tests make no upstream call.
    fn client() -> RegistryClient {
        let config = Config::load_str(
            std::path::Path::new("test.yaml"),
            "upstream:\n  url: http://127.0.0.1:9\n",
            |_| None,
        )
        .unwrap();
        RegistryClient::new(&config, crate::tls::client_for_upstream(&config).unwrap()).unwrap()
    }

    /// An enforcing executor over `index` for a plan made at `planned_at`.
    fn executor<'a>(
        client: &'a RegistryClient,
        index: &'a dyn Index,
        planned_at: u64,
    ) -> Executor<'a> {
        Executor::new(
            client,
            index,
            CleanupMode::Enforce,
            "run".into(),
            1,
            Instant::now(),
            UnixMillis(planned_at),
        )
    }

    pub(super) fn step(action: AuditAction, digest: &str, tags: &[&str]) -> Step {
        Step {
            seq: 1,
            repository: "team/app".into(),
            digest: digest.into(),
            action,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            bytes: 0,
            reasons: Vec::new(),
            after: Vec::new(),
        }
    }

    fn push(repository: &str, tag: &str, digest: &str) -> Write {
        Write::push(repository, tag, digest, UnixMillis(1))
    }

    /// The index's view of a repository's tags follows pushes during a run when the index
    /// counts them (serve's mirror), and is read once otherwise.
    #[test]
    fn a_tag_pushed_during_the_run_onto_a_planned_digest_is_seen() {
        let client = client();
        let old = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
        let setup = [
            Write::PutManifest(ManifestRecord::bare("team/app", old, "x", UnixMillis(1))),
            push("team/app", "old", old),
            push("other/app", "x", old),
        ];
        let counted = Mirror::new(Arc::new(crate::index::in_memory()));
        let plain = crate::index::in_memory();
        for index in [&counted as &dyn Index, &plain] {
            index.apply(&setup).unwrap();
            let executor = executor(&client, index, 1);
            assert_eq!(executor.tags_on("team/app", old).unwrap(), ["old"]);
            // A rollback re-tags the old image as `prod` while the run goes on.
            index.apply(&[push("team/app", "prod", old)]).unwrap();
            let mut seen = executor.tags_on("team/app", old).unwrap();
            seen.sort();
            if index.tag_pushes("team/app").is_some() {
                assert_eq!(seen, ["old", "prod"]);
            } else {
                // The store alone counts nothing: only a command holding it writes it.
                assert_eq!(seen, ["old"]);
            }
        }
        assert_eq!(counted.tag_pushes("team/app"), Some(2));
        assert_eq!(counted.tag_pushes("nobody/pushed"), Some(0));
    }

    /// A manifest pushed again by digest after the plan (an index's child about to be listed
    /// again) is left alone; the check comes before any upstream call.
    #[tokio::test]
    async fn a_manifest_pushed_again_after_the_plan_is_left_alone() {
        let client = client();
        let digest = "sha256:0000000000000000000000000000000000000000000000000000000000000003";
        let index = crate::index::in_memory();
        let pushed = |at: u64| {
            Write::PutManifest(ManifestRecord::bare(
                "team/app",
                digest,
                "x",
                UnixMillis(at),
            ))
        };
        index.apply(&[pushed(6)]).unwrap();
        let executor = executor(&client, &index, 5);
        let step = step(AuditAction::DeleteDigest, digest, &[]);
        assert_eq!(
            executor.changed(&step).await.unwrap(),
            Some(format!("{digest} was pushed again after the plan"))
        );
    }

    /// A pull through the proxy after the plan (someone uses the image right now) stops the
    /// step; one before it does not.
    #[tokio::test]
    async fn a_tag_pulled_after_the_plan_is_left_alone() {
        let client = client();
        let digest = "sha256:0000000000000000000000000000000000000000000000000000000000000002";
        let index = crate::index::in_memory();
        index.apply(&[push("team/app", "old", digest)]).unwrap();
        let executor = executor(&client, &index, 5);
        let step = step(AuditAction::Untag, digest, &["old"]);
        let pulled = |at: u64| Write::RecordPulls {
            repository: "team/app".into(),
            reference: "old".into(),
            count: 1,
            last: UnixMillis(at),
        };
        index.apply(&[pulled(4)]).unwrap();
        assert_eq!(executor.changed(&step).await.unwrap(), None);
        index.apply(&[pulled(6)]).unwrap();
        assert_eq!(
            executor.changed(&step).await.unwrap().as_deref(),
            Some("old was pulled after the plan")
        );
    }

    #[test]
    fn a_child_waits_for_its_index_and_stays_when_the_index_was_not_deleted() {
        let client = client();
        let index = crate::index::in_memory();
        // The deadline has passed: every step that runs is skipped without a call.
        let executor = executor(&client, &index, 0);
        let mut child = step(AuditAction::DeleteDigest, "sha256:child", &[]);
        child.after = vec!["sha256:index".into()];
        let mut grandchild = step(AuditAction::DeleteDigest, "sha256:grandchild", &[]);
        grandchild.after = vec!["sha256:child".into()];
        let mut parent = step(AuditAction::DeleteDigest, "sha256:index", &["old"]);
        for (seq, step) in [&mut child, &mut grandchild, &mut parent]
            .into_iter()
            .enumerate()
        {
            step.seq = seq as u64 + 1;
        }
        let steps = vec![child, grandchild, parent];
        assert_eq!(waves(&steps), [1, 2, 0]);
        let reports = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(executor.run(steps));
        assert_eq!(reports[2].outcome, StepOutcome::SkippedDeadline);
        for (report, waited_for) in [(&reports[0], "sha256:index"), (&reports[1], "sha256:child")] {
            assert_eq!(report.outcome, StepOutcome::SkippedChanged, "{report:?}");
            assert!(report.detail.contains(waited_for), "{report:?}");
        }
    }
}
