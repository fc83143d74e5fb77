//! One evaluation's I/O around the pure policy core: read the index snapshot and the git
//! clones, then hand over the resulting plan (`regkeeper plan`) or one tag's verdicts
//! (`regkeeper explain`); `render` lays them out as tables.
//!
//! Owns: loading inputs. May call: `config`, `index`, `policy`, `sources`, `mirror`.

mod gauges;

use std::{collections::HashMap, time::Instant};

use serde::Serialize;

use crate::{
    config::Config,
    index::{Index, IndexError, UnixMillis},
    mirror::Mirror,
    policy::{self, Action, Details, Inputs, Outcome, Plan, Snapshot, Usage},
    sources::git::GitFacts,
};

/// What was read for an evaluation, and how long each part took.
pub struct Loaded {
    pub snapshot: Snapshot,
    pub git: HashMap<String, Result<GitFacts, String>>,
    pub usage: Usage,
    pub timings: Vec<(&'static str, f64)>,
}

/// Reads the index, every configured git repository and every configured cluster. A git
/// repository or cluster that cannot be read is recorded as such: the plan keeps what it
/// could have kept (`git-unproven`, `kubernetes-unavailable`).
pub async fn load(config: &Config, source: Source<'_>) -> Result<Loaded, IndexError> {
    let mut loaded = off_the_runtime(|| read_local(config, source))?;
    let started = Instant::now();
    loaded.usage = crate::sources::usage::collect(&config.retention).await;
    loaded
        .timings
        .push(("kubernetes and helm", started.elapsed().as_secs_f64()));
    Ok(loaded)
}

/// Where an evaluation's index snapshot comes from.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// Read the index whole (the commands, when `serve` is not running).
    Index(&'a dyn Index),
    /// `serve`'s in-memory mirror, refreshed where writes landed.
    Mirror(&'a Mirror),
}

impl Source<'_> {
    fn snapshot(self) -> Result<Snapshot, IndexError> {
        match self {
            Self::Index(index) => crate::mirror::read::snapshot(index),
            Self::Mirror(mirror) => mirror.snapshot(),
        }
    }
}

/// The blocking part of [`load`]: the index snapshot and the git repositories (usage empty).
pub fn read_local(config: &Config, source: Source<'_>) -> Result<Loaded, IndexError> {
    let mut timings = Vec::new();
    // The index snapshot and the git graphs do not depend on each other: read them together.
    let started = Instant::now();
    let (snapshot, graphs) = std::thread::scope(|scope| {
        let graphs = scope.spawn(|| {
            config
                .retention
                .git_repositories
                .iter()
                .map(|g| (g, GitFacts::load_graph(&g.path, &g.remote)))
                .collect::<Vec<_>>()
        });
        let snapshot = source.snapshot();
        (snapshot, graphs.join())
    });
    let snapshot = snapshot?;
    let graphs = graphs.unwrap_or_default();
    timings.push((
        "index snapshot and git graphs",
        started.elapsed().as_secs_f64(),
    ));
    let mut git = HashMap::new();
    for (repository, graph) in graphs {
        let facts = graph.and_then(|mut facts| {
            facts.note_unreachable(&repository.path, linked_commits(&snapshot))?;
            Ok(facts)
        });
        let facts = facts.map_err(|e| e.to_string());
        if let Err(error) = &facts {
            tracing::warn!(repository = repository.name, %error, "git repository unreadable; its images are kept");
        }
        git.insert(repository.name.clone(), facts);
    }
    Ok(Loaded {
        snapshot,
        git,
        usage: Usage::default(),
        timings,
    })
}

/// Every commit id images are linked to (with repeats).
fn linked_commits(snapshot: &Snapshot) -> impl Iterator<Item = &str> {
    snapshot
        .repositories
        .values()
        .flat_map(|r| r.links.values().flatten().map(|f| &*f.commit))
}

/// Runs disk- or CPU-bound `work` (reading the index and git, evaluating a million tags)
/// without holding up the tasks that share this thread — in `serve`, the index writer and the
/// admin listener's health checks: moved off a multi-threaded runtime's workers, inline
/// elsewhere (a command's own single-threaded runtime, where nothing else waits).
pub fn off_the_runtime<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// The plan for `loaded` as of `now`; `details` for `explain` (every rule's verdict in words).
pub fn plan(config: &Config, loaded: &Loaded, now: UnixMillis, details: Details) -> Plan {
    let (plan, timings) = off_the_runtime(|| {
        policy::evaluate_timed(&Inputs {
            snapshot: &loaded.snapshot,
            git: &loaded.git,
            usage: &loaded.usage,
            retention: &config.retention,
            now,
            details,
            restore_protection: config.cleanup.restore_protection.0,
        })
    });
    tracing::debug!(
        git_walks = timings.git_walks,
        rules_and_plan = timings.rules_and_plan,
        loading = ?loaded.timings,
        "plan evaluated"
    );
    gauges::record(config, loaded, &plan);
    plan
}

/// Keeps only the repositories `filter` names: the repository itself, or every repository
/// under it (`team` → `team/app`, `team/tools/x`).
pub fn only_repositories(plan: &mut Plan, filter: &str) {
    let filter = filter.trim_end_matches('/');
    plan.repositories.retain(|r| {
        r.repository == filter
            || r.repository
                .strip_prefix(filter)
                .is_some_and(|rest| rest.starts_with('/'))
    });
}

/// Every rule's verdict on one tag.
#[derive(Serialize)]
pub struct Explanation<'a> {
    pub at: UnixMillis,
    pub repository: &'a str,
    pub tag: &'a str,
    pub digest: &'a str,
    pub scope: Option<&'a str>,
    pub keep: bool,
    pub rules: &'a [Outcome],
    /// What happens to the tag: `keep`, `untag`, or `delete-digest`.
    pub action: &'static str,
}

#[derive(Debug, thiserror::Error)]
#[error("the index knows no tag {0}")]
pub struct UnknownTag(pub String);

pub fn explain<'a>(plan: &'a Plan, reference: &str) -> Result<Explanation<'a>, UnknownTag> {
    let unknown = || UnknownTag(reference.to_string());
    let (repository, tag) = reference
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .ok_or_else(unknown)?;
    let repo = plan
        .repositories
        .iter()
        .find(|r| r.repository == repository)
        .ok_or_else(unknown)?;
    let verdict = repo
        .tags
        .iter()
        .find(|t| *t.tag == *tag)
        .ok_or_else(unknown)?;
    let action = repo
        .actions
        .iter()
        .find_map(|a| match a {
            Action::DeleteDigest { tags, .. } if tags.iter().any(|t| **t == *tag) => {
                Some("delete-digest")
            }
            Action::Untag { tag: t, .. } if **t == *tag => Some("untag"),
            _ => None,
        })
        .unwrap_or("keep");
    Ok(Explanation {
        at: plan.at,
        repository: &repo.repository,
        tag: &verdict.tag,
        digest: &verdict.digest,
        scope: repo.scope.as_deref(),
        keep: verdict.keep,
        rules: &verdict.outcomes,
        action,
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_time(at: UnixMillis) -> String {
    crate::calendar::format_millis(at.0)
}

/// `--at`: an RFC 3339 time (`2026-12-07T09:00:00Z`, `+02:00` offsets), a date (`2026-12-07`,
/// midnight UTC), or an offset from `now` (`+3d`, `-12h`).
pub fn parse_time(text: &str, now: UnixMillis) -> Result<UnixMillis, String> {
    let text = text.trim();
    if let Some(offset) = text.strip_prefix('+').or_else(|| text.strip_prefix('-')) {
        let duration: crate::config::HumanDuration = offset.parse()?;
        let millis = duration.0.as_millis() as u64;
        return Ok(UnixMillis(if text.starts_with('+') {
            now.0.saturating_add(millis)
        } else {
            now.0.saturating_sub(millis)
        }));
    }
    // Unix seconds (`date +%s`): all digits, and too long to be a year.
    if text.len() > 4 && text.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = text
            .parse()
            .map_err(|_| format!("{text:?} is too large for Unix seconds"))?;
        return Ok(UnixMillis(secs.saturating_mul(1000)));
    }
    let bad = |why: String| {
        format!(
            "{text:?} is not a time (2026-12-07, 2026-12-07T09:00:00Z, +3d, -12h, Unix seconds): {why}"
        )
    };
    // An offset or `Z` makes it an instant; without one, a civil date or date-time is UTC.
    let at = match text.parse::<jiff::Timestamp>() {
        Ok(at) => at,
        Err(instant) => {
            let civil = text
                .parse::<jiff::civil::DateTime>()
                .or_else(|_| {
                    text.parse::<jiff::civil::Date>()
                        .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
                })
                .map_err(|_| bad(instant.to_string()))?;
            civil
                .to_zoned(jiff::tz::TimeZone::UTC)
                .map_err(|e| bad(e.to_string()))?
                .timestamp()
        }
    };
    u64::try_from(at.as_millisecond())
        .map(UnixMillis)
        .map_err(|_| bad("before 1970".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{RepositoryPlan, TagPlan, Totals};

    #[test]
    fn a_failed_cluster_is_said_once_and_repositories_filter_by_name_or_parent() {
        let tag = |name: &str| TagPlan {
            tag: name.into(),
            digest: "sha256:d".into(),
            pushed: UnixMillis(1),
            keep: true,
            reasons: vec![
                "kubernetes-unavailable: prod could not be read, so nothing it might run is deleted"
                    .into(),
            ],
            outcomes: Vec::new(),
        };
        let repo = |name: &str| RepositoryPlan {
            repository: name.into(),
            scope: Some("all".into()),
            kept: Totals::default(),
            deleted: Totals::default(),
            tags: vec![tag("v1"), tag("v2")],
            actions: Vec::new(),
        };
        let mut plan = Plan {
            at: UnixMillis(1),
            repositories: vec![repo("team/app"), repo("team/tools/x"), repo("teams/y")],
            warnings: vec![
                "kubernetes cluster prod could not be listed: everything in scope is kept".into(),
            ],
        };
        let table = crate::render::plan_table(&plan, true);
        assert_eq!(table.matches("could not be read").count(), 0, "{table}");
        assert_eq!(table.matches("could not be listed").count(), 1, "{table}");
        assert!(
            table.contains("keep    v1  kubernetes-unavailable\n"),
            "{table}"
        );
        only_repositories(&mut plan, "team");
        let names: Vec<&str> = plan
            .repositories
            .iter()
            .map(|r| r.repository.as_str())
            .collect();
        assert_eq!(names, ["team/app", "team/tools/x"]);
    }

    /// With one worker, a task spawned beside blocking work runs only if the work was moved
    /// off the worker.
    #[test]
    fn blocking_work_leaves_the_runtime_to_other_tasks() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            tokio::spawn(async {
                let (ran, seen) = std::sync::mpsc::channel();
                tokio::spawn(async move { ran.send(()).unwrap() });
                super::off_the_runtime(|| {
                    seen.recv_timeout(std::time::Duration::from_secs(30))
                        .expect("the other task never ran: the worker was held")
                });
            })
            .await
            .unwrap();
        });
    }

    #[test]
    fn times_parse_and_print() {
        let now = UnixMillis(1_700_000_000_000);
        let at = parse_time("2026-12-07T09:30:00Z", now).unwrap();
        assert_eq!(format_time(at), "2026-12-07T09:30:00Z");
        assert_eq!(parse_time("2026-12-07T11:30:00+02:00", now).unwrap(), at);
        assert_eq!(
            format_time(parse_time("2026-12-07", now).unwrap()),
            "2026-12-07T00:00:00Z"
        );
        assert_eq!(parse_time("+1d", now).unwrap().0, now.0 + 86_400_000);
        assert_eq!(parse_time("-2h", now).unwrap().0, now.0 - 7_200_000);
        assert!(parse_time("next monday", now).is_err());
        assert_eq!(parse_time("1796050984", now).unwrap().0, 1_796_050_984_000);
        assert!(parse_time("2026-13-01", now).is_err());
        // Calendar-checked: there is no 31 February (the hand-written parser took it as 3 March).
        assert!(parse_time("2026-02-31", now).is_err());
        assert!(parse_time("2026-02-31T00:00:00Z", now).is_err());
        // A date-time without an offset is UTC; fractions of a second are kept.
        assert_eq!(parse_time("2026-12-07T09:30:00", now).unwrap(), at);
        assert_eq!(
            parse_time("2026-12-07T09:30:00.5Z", now).unwrap().0,
            at.0 + 500
        );
        assert_eq!(format_time(UnixMillis(0)), "1970-01-01T00:00:00Z");
    }
}
