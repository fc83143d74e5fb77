//! The executor call by call against an in-memory registry: each skip cause, each call shape
//! (digest `DELETE`, tag `DELETE`, tombstone), retries on `Retry-After`, and the deadline.

use std::time::{Duration, Instant};

use super::{Executor, Step, StepOutcome, fake::FakeRegistry, tests::step};
use crate::{
    config::CleanupMode,
    index::{AuditAction, AuditState, Index, UnixMillis, Write, in_memory},
};

const REPO: &str = "team/app";

fn body(name: &str) -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{{"n":"{name}"}}}}"#
    )
}

fn recorded(index: &dyn Index, tag: &str, digest: &str) {
    index
        .apply(&[Write::push(REPO, tag, digest, UnixMillis(1))])
        .unwrap();
}

fn executor<'a>(
    registry: &'a FakeRegistry,
    index: &'a dyn Index,
    deadline: Instant,
) -> Executor<'a, FakeRegistry> {
    Executor::new(
        registry,
        index,
        CleanupMode::Enforce,
        "run-1".into(),
        1,
        deadline,
        UnixMillis(10),
    )
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

async fn run_one(executor: &Executor<'_, FakeRegistry>, step: Step) -> (StepOutcome, String) {
    let reports = executor.run(vec![step]).await;
    (reports[0].outcome, reports[0].detail.clone())
}

#[tokio::test]
async fn an_unchanged_digest_is_deleted_by_digest_after_its_checks() {
    let registry = FakeRegistry::default();
    let old = registry.put(REPO, &["old"], &body("old"));
    let index = in_memory();
    recorded(&index, "old", &old);
    let executor = executor(&registry, &index, soon());
    let (outcome, _) = run_one(&executor, step(AuditAction::DeleteDigest, &old, &["old"])).await;
    assert_eq!(outcome, StepOutcome::Deleted);
    assert!(!registry.has(REPO, &old));
    assert_eq!(
        registry.calls(),
        [
            format!("GET {REPO}:old"),
            format!("LIST {REPO}"),
            format!("HEAD {REPO}:old"),
            format!("DELETE {REPO}@{old}"),
        ]
    );
    assert!(index.tag(REPO, "old").unwrap().is_none());
    let audit = index.audit().unwrap();
    assert_eq!(audit.last().unwrap().state, AuditState::Done);
    assert!(
        !audit.last().unwrap().manifest_base64.is_empty(),
        "restorable"
    );
}

#[tokio::test]
async fn a_tag_moved_since_the_plan_skips_without_a_delete() {
    let registry = FakeRegistry::default();
    let planned = registry.put(REPO, &[], &body("planned"));
    registry.put(REPO, &["v1"], &body("newer"));
    let index = in_memory();
    let executor = executor(&registry, &index, soon());
    let (outcome, why) = run_one(
        &executor,
        step(AuditAction::DeleteDigest, &planned, &["v1"]),
    )
    .await;
    assert_eq!(outcome, StepOutcome::SkippedChanged);
    assert!(why.contains("now points to"), "{why}");
    assert!(registry.calls().iter().all(|c| !c.starts_with("DELETE")));
    assert!(registry.has(REPO, &planned));
}

#[tokio::test]
async fn a_tag_the_plan_did_not_see_keeps_the_digest() {
    // Pushed directly to the registry: the index does not know `hotfix`, the listing does.
    let registry = FakeRegistry::default();
    let digest = registry.put(REPO, &["old", "hotfix"], &body("shared"));
    let index = in_memory();
    recorded(&index, "old", &digest);
    let executor = executor(&registry, &index, soon());
    let (outcome, why) = run_one(
        &executor,
        step(AuditAction::DeleteDigest, &digest, &["old"]),
    )
    .await;
    assert_eq!(outcome, StepOutcome::SkippedChanged);
    assert!(why.contains("hotfix"), "{why}");
    assert!(registry.has(REPO, &digest));
}

#[tokio::test]
async fn an_untagged_manifest_deleted_by_someone_else_is_gone_and_forgotten() {
    let registry = FakeRegistry::default();
    let gone = crate::manifest::sha256_digest(b"never stored");
    let index = in_memory();
    let executor = executor(&registry, &index, soon());
    let (outcome, _) = run_one(&executor, step(AuditAction::DeleteDigest, &gone, &[])).await;
    assert_eq!(outcome, StepOutcome::SkippedGone);
    assert_eq!(registry.calls(), [format!("GET {REPO}:{gone}")]);
}

#[tokio::test]
async fn untagging_uses_a_tag_delete_where_the_registry_removes_tags_alone() {
    let registry = FakeRegistry::deleting_tags();
    let digest = registry.put(REPO, &["keep", "old"], &body("kept"));
    let index = in_memory();
    let executor = executor(&registry, &index, soon());
    let (outcome, how) = run_one(&executor, step(AuditAction::Untag, &digest, &["old"])).await;
    assert_eq!(
        (outcome, how.as_str()),
        (StepOutcome::Untagged, "tag delete")
    );
    assert_eq!(registry.tag(REPO, "keep").as_deref(), Some(digest.as_str()));
    assert_eq!(registry.tag(REPO, "old"), None);
    // The probe ran on throwaway tags first, never on the real image.
    let calls = registry.calls();
    let probe = calls
        .iter()
        .position(|c| c.contains("regkeeper-probe"))
        .unwrap();
    let real = calls
        .iter()
        .position(|c| c == &format!("DELETE {REPO}:old"))
        .unwrap();
    assert!(probe < real, "{calls:#?}");
}

#[tokio::test]
async fn untagging_uses_the_tombstone_where_tags_cannot_be_deleted() {
    let registry = FakeRegistry::default();
    let digest = registry.put(REPO, &["keep", "old"], &body("kept"));
    let index = in_memory();
    let executor = executor(&registry, &index, soon());
    let (outcome, how) = run_one(&executor, step(AuditAction::Untag, &digest, &["old"])).await;
    assert_eq!(outcome, StepOutcome::Untagged);
    assert!(how.starts_with("tombstone sha256:"), "{how}");
    let tombstone = how.trim_start_matches("tombstone ");
    assert!(!registry.has(REPO, tombstone), "the tombstone is deleted");
    assert!(registry.has(REPO, &digest), "the kept digest stays");
    assert_eq!(registry.tag(REPO, "keep").as_deref(), Some(digest.as_str()));
    assert_eq!(registry.tag(REPO, "old"), None);
    let calls = registry.calls();
    assert!(
        calls.contains(&format!("PUT {REPO}:old"))
            && !calls.contains(&format!("DELETE {REPO}@{digest}")),
        "{calls:#?}"
    );
}

#[tokio::test]
async fn a_busy_registry_is_asked_again_after_its_retry_after() {
    let registry = FakeRegistry::default();
    let old = registry.put(REPO, &["old"], &body("old"));
    let index = in_memory();
    registry.busy_for(2);
    let executor = executor(&registry, &index, soon());
    let (outcome, _) = run_one(&executor, step(AuditAction::DeleteDigest, &old, &["old"])).await;
    assert_eq!(outcome, StepOutcome::Deleted);
    let gets = registry
        .calls()
        .iter()
        .filter(|c| *c == &format!("GET {REPO}:old"))
        .count();
    assert_eq!(gets, 3, "two busy answers, then the real one");
}

#[tokio::test]
async fn nothing_starts_after_the_deadline() {
    let registry = FakeRegistry::default();
    let old = registry.put(REPO, &["old"], &body("old"));
    let index = in_memory();
    let executor = executor(&registry, &index, Instant::now());
    let (outcome, _) = run_one(&executor, step(AuditAction::DeleteDigest, &old, &["old"])).await;
    assert_eq!(outcome, StepOutcome::SkippedDeadline);
    assert!(registry.calls().is_empty());
    assert!(registry.has(REPO, &old));
}

/// A leader that lost the lease (paused past it; another took over) writes no `started`
/// entry, and so makes no call that deletes: the fence fails the entry's batch.
#[tokio::test]
async fn a_leader_that_lost_the_lease_deletes_nothing() {
    let registry = FakeRegistry::default();
    let old = registry.put(REPO, &["old"], &body("old"));
    let index: std::sync::Arc<dyn Index> = std::sync::Arc::new(in_memory());
    recorded(index.as_ref(), "old", &old);
    let ttl = Duration::from_millis(200);
    let paused = crate::leader::Leadership::new(index.clone(), ttl, false);
    let term = paused.claim().unwrap().expect("the lease is free");
    // Paused past the lease (no renewal ran): another process takes over.
    std::thread::sleep(ttl * 2);
    let other = crate::leader::Leadership::new(index.clone(), Duration::from_secs(30), false);
    assert!(other.claim().unwrap().is_some());

    let fenced_out = executor(&registry, index.as_ref(), soon()).fenced_by(Some((&paused, term)));
    let (outcome, detail) =
        run_one(&fenced_out, step(AuditAction::DeleteDigest, &old, &["old"])).await;
    assert_eq!(outcome, StepOutcome::Failed, "{detail}");
    assert!(detail.contains("not the leader"), "{detail}");
    assert!(registry.has(REPO, &old));
    assert!(
        registry.calls().iter().all(|c| !c.starts_with("DELETE")),
        "{:?}",
        registry.calls()
    );
    assert!(index.audit().unwrap().is_empty(), "nothing recorded");

    // The same run, still leading, goes ahead.
    let leading = executor(&registry, index.as_ref(), soon())
        .fenced_by(Some((&other, other.claim().unwrap().unwrap())));
    let (outcome, _) = run_one(&leading, step(AuditAction::DeleteDigest, &old, &["old"])).await;
    assert_eq!(outcome, StepOutcome::Deleted);
}
