//! Cleanup: one evaluation turned into deletions upstream — the one place regkeeper can do
//! harm. A run plans, stops before deleting anything when the circuit breaker trips, and then
//! runs one audited step per digest (see [`executor`]): re-checks right before each call, the
//! audit entry written before the call and completed after, deletion by digest only when no
//! kept tag points to it, tag-only removal otherwise. `dry-run` (the default) does everything but
//! the DELETE/PUT calls.
//!
//! Owns: runs, the breaker, the executor, the tombstone method, history. May call: `config`,
//! `index`, `planning`, `policy`, `registry`, `mirror` (the evaluation it runs over), `leader`
//! (only the leader deletes; its audit writes are fenced), `sources`
//! (usage, re-read before deleting), `manifest` (digests and references of what it restores).

pub mod breaker;
pub mod executor;
pub mod guard;
pub mod history;
pub mod recovery;
pub mod restore;
pub mod schedule;
pub mod tombstone;
pub mod upstream;

use std::{collections::BTreeMap, fmt::Write as _, time::Instant};

use serde::{Deserialize, Serialize};

pub use executor::{CleanupError, StepOutcome, StepReport};

use crate::{
    config::{CleanupMode, Config},
    index::UnixMillis,
    planning::{self, Source},
    policy::Details,
    registry::RegistryClient,
};

/// What one run did.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunReport {
    pub run: String,
    pub mode: CleanupMode,
    pub started: UnixMillis,
    pub finished: UnixMillis,
    /// Why the breaker stopped the run before any deletion (enforce), or would stop an
    /// enforcing run (dry-run: the whole would-delete report is there all the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tripped: Option<String>,
    /// Outcome → steps.
    pub counts: BTreeMap<StepOutcome, usize>,
    /// Tags removed (or, dry-run, that would be).
    pub tags_removed: usize,
    /// Bytes of the digests deleted (or that would be).
    pub bytes_deleted: u64,
    /// What the plan's sources reported (unreadable clusters, clones, …).
    pub warnings: Vec<String>,
    pub steps: Vec<StepReport>,
}

impl RunReport {
    /// Whether every step that was attempted worked (skips are not failures).
    pub fn succeeded(&self) -> bool {
        self.tripped.is_none() && !self.counts.contains_key(&StepOutcome::Failed)
    }

    /// A dry run whose plan an enforcing run would refuse (the breaker).
    pub fn enforce_would_stop(&self) -> bool {
        self.mode == CleanupMode::DryRun && self.tripped.is_some()
    }
}

/// A new run's id: sortable by start time (to the millisecond), then 64 random bits, so two
/// runs never share one — not in one second, not across processes or replicas — and no run's
/// audit entries can land on another's.
pub fn run_id(at: UnixMillis) -> String {
    let mut random = [0u8; 8];
    if getrandom::fill(&mut random).is_err() {
        // No OS randomness (never seen on Linux): the clock's nanoseconds and a per-process
        // counter still tell this process's runs apart.
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        random = (u64::from(nanos) << 32 | (run & 0xffff_ffff)).to_be_bytes();
    }
    let second = planning::format_time(at).replace([':', '-'], "");
    format!(
        "{}.{:03}Z-{:016x}",
        second.trim_end_matches('Z'),
        at.0 % 1000,
        u64::from_be_bytes(random)
    )
}

/// One cleanup: evaluate, check the breaker (`force` skips it), execute.
pub async fn run_once(
    config: &Config,
    source: Source<'_>,
    index: &dyn crate::index::Index,
    client: &RegistryClient,
    leadership: &std::sync::Arc<crate::leader::Leadership>,
    mode: CleanupMode,
    force: bool,
) -> Result<RunReport, CleanupError> {
    let started = UnixMillis::now();
    let clock = Instant::now();
    let run = run_id(started);
    // An enforcing run holds the lock from before its plan to its end (a dry run changes
    // nothing and takes none).
    let lock = match mode {
        CleanupMode::Enforce => Some(recovery::acquire(index, client, &run, leadership).await?),
        CleanupMode::DryRun => None,
    };
    let loaded = planning::load(config, source).await?;
    let (plan, tripped) = decide(config, &loaded, started, force);
    let mut report = RunReport {
        run: run.clone(),
        mode,
        started,
        finished: started,
        tripped: None,
        counts: BTreeMap::new(),
        tags_removed: 0,
        bytes_deleted: 0,
        warnings: plan.warnings.clone(),
        steps: Vec::new(),
    };
    report.tripped = tripped;
    // Only an enforcing run stops: a dry run previews the whole plan and says it would stop.
    if let Some(why) = &report.tripped {
        if mode == CleanupMode::Enforce {
            tracing::error!(
                run,
                why,
                "circuit breaker: the run stops before deleting anything (use --force to override once)"
            );
            report.finished = UnixMillis::now();
            record(index, &report)?;
            if let Some(lock) = lock {
                lock.release();
            }
            return Ok(report);
        }
        tracing::warn!(
            run,
            why,
            "circuit breaker: an enforcing run would stop before deleting anything; previewing the whole plan"
        );
    }
    let steps = executor::steps(&plan);
    tracing::info!(run, ?mode, steps = steps.len(), "cleanup run starts");
    let executor = executor::Executor::new(
        client,
        index,
        mode,
        run.clone(),
        config.cleanup.concurrency,
        clock + config.cleanup.deadline.0,
        started,
    )
    .fenced_by(lock.as_ref().map(|held| (leadership.as_ref(), held.term)));
    report.steps = execute(config, executor, steps).await;
    report.counts = executor::tally(&report.steps);
    for step in &report.steps {
        if step.outcome.removes() {
            report.tags_removed += step.tags.len();
            report.bytes_deleted += step.bytes;
        }
    }
    report.finished = UnixMillis::now();
    tracing::info!(run, counts = ?report.counts, tags = report.tags_removed, "cleanup run finished");
    record(index, &report)?;
    if let Some(lock) = lock {
        lock.release();
    }
    Ok(report)
}

/// The plan and whether the breaker trips. Decided without words first: a plan the breaker
/// stops words nothing. One that goes ahead is evaluated again from the same inputs (the same
/// decisions) with every verdict on what it removes worded for the audit log — at most
/// `maxDeletions` tags unless forced.
fn decide(
    config: &Config,
    loaded: &planning::Loaded,
    started: UnixMillis,
    force: bool,
) -> (crate::policy::Plan, Option<String>) {
    let decided = planning::plan(config, loaded, started, Details::Reasons);
    let tripped = if force {
        None
    } else {
        breaker::check(&decided, &config.cleanup)
    };
    let plan = if tripped.is_none() && decided.repositories.iter().any(|r| !r.actions.is_empty()) {
        // Dropped first: two plans of a large registry need not be held at once.
        drop(decided);
        planning::plan(config, loaded, started, Details::Removed)
    } else {
        decided
    };
    (plan, tripped)
}

/// Runs the steps. The clusters are read again right before the first step, and while the
/// steps go on: a workload that starts using an image meanwhile keeps it.
async fn execute(
    config: &Config,
    executor: executor::Executor<'_>,
    steps: Vec<executor::Step>,
) -> Vec<executor::StepReport> {
    let guard = guard::UsageGuard::new(&config.retention).filter(|_| !steps.is_empty());
    if let Some(guard) = &guard {
        guard.refresh().await;
    }
    let executor = executor.guarded_by(guard.as_ref());
    match &guard {
        Some(guard) => tokio::select! {
            steps = executor.run(steps) => steps,
            never = guard.keep_fresh() => match never {},
        },
        None => executor.run(steps).await,
    }
}

/// Repositories that have their own series in the deletion counters (the first ones seen);
/// later ones count as `other`, so the series stay bounded over the process's life.
static COUNTED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn repository_label(repository: &str) -> String {
    let mut counted = COUNTED.lock().unwrap_or_else(|e| e.into_inner());
    if counted.iter().any(|r| r == repository) {
        return repository.to_string();
    }
    if counted.len() < crate::metrics::TOP_REPOSITORIES {
        counted.push(repository.to_string());
        return repository.to_string();
    }
    "other".into()
}

/// Keeps how the run ended, for the schedule and metrics.
fn record(index: &dyn crate::index::Index, report: &RunReport) -> Result<(), CleanupError> {
    let seconds = |at: UnixMillis| at.0 as f64 / 1000.0;
    crate::metrics::cleanup_run(
        seconds(report.started),
        seconds(report.finished),
        report.succeeded(),
        report.tripped.is_some(),
    );
    for step in &report.steps {
        match step.outcome {
            StepOutcome::Deleted | StepOutcome::Untagged => crate::metrics::cleanup_removed(
                repository_label(&step.repository),
                step.tags.len() as u64,
                step.bytes,
            ),
            StepOutcome::WouldDelete | StepOutcome::WouldUntag => {}
            cause => crate::metrics::cleanup_skipped(cause.as_str()),
        }
    }
    index.apply(&[crate::index::Write::CleanupRan(crate::index::CleanupRun {
        run: report.run.clone(),
        mode: match report.mode {
            CleanupMode::DryRun => "dry-run".into(),
            CleanupMode::Enforce => "enforce".into(),
        },
        started: report.started,
        finished: report.finished,
        succeeded: report.succeeded(),
        tripped: report.tripped.clone(),
    })])?;
    Ok(())
}

/// The report as the `apply` command prints it.
pub fn report_table(report: &RunReport) -> String {
    let mut out = String::new();
    let mode = match report.mode {
        CleanupMode::DryRun => "dry-run (nothing was deleted)",
        CleanupMode::Enforce => "enforce",
    };
    let _ = writeln!(out, "run {} — {mode}", report.run);
    for warning in &report.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    match (&report.tripped, report.mode) {
        (Some(why), CleanupMode::Enforce) => {
            let _ = writeln!(out, "STOPPED by the circuit breaker: {why}");
            return out;
        }
        (Some(why), CleanupMode::DryRun) => {
            let _ = writeln!(
                out,
                "an enforcing run would STOP here (circuit breaker): {why}; what it would remove:"
            );
        }
        (None, _) => {}
    }
    for step in &report.steps {
        let what = if step.tags.is_empty() {
            format!("{}@{}", step.repository, step.digest)
        } else {
            format!("{}:{}", step.repository, step.tags.join(","))
        };
        let detail = if step.detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", step.detail)
        };
        let _ = writeln!(out, "{:<16} {what}{detail}", step.outcome.as_str());
    }
    let counts: Vec<String> = report
        .counts
        .iter()
        .map(|(k, v)| format!("{v} {}", k.as_str()))
        .collect();
    let _ = writeln!(
        out,
        "{} tags, {} bytes; {}",
        report.tags_removed,
        report.bytes_deleted,
        if counts.is_empty() {
            "nothing to do".to_string()
        } else {
            counts.join(", ")
        }
    );
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn run_ids_started_in_one_millisecond_differ_and_sort_by_start() {
        let at = crate::index::UnixMillis(1_796_050_984_574);
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| super::run_id(at)).collect();
        assert_eq!(ids.len(), 1000);
        let id = super::run_id(at);
        assert!(id.starts_with("20261130T150304.574Z-"), "{id}");
        assert!(super::run_id(crate::index::UnixMillis(at.0 + 1)) > id);
    }
}
