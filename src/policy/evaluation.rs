//! One evaluation over every repository: the warnings the inputs earn, which scope governs
//! each repository, the git walks, then each repository's plan in parallel.

use super::{
    Inputs, Plan, RepositoryPlan, Snapshot, repository, rules, usage::ImageRef, usage::InUse,
    usage::Usage, workers,
};
use crate::config::{Scope, repository_pattern};

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

/// [`evaluate`](super::evaluate), also saying where the time went (the plan itself does not
/// depend on it).
pub fn evaluate_timed(inputs: &Inputs) -> (Plan, Timings) {
    let started = std::time::Instant::now();
    let mut warnings = input_warnings(inputs);
    let scopes: Vec<(&Scope, Vec<regex::Regex>, Vec<regex::Regex>)> = inputs
        .retention
        .scopes
        .iter()
        .map(|s| (s, compile(&s.include), compile(&s.exclude)))
        .collect();
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
    let repositories = plan_repositories(inputs, &in_scope, &governed, &git);
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

/// What the inputs cost the plan: unreadable clusters and git repositories keep everything
/// they could keep, and images live workloads name that the registry lacks.
fn input_warnings(inputs: &Inputs) -> Vec<String> {
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
    warnings
}

/// Each repository's plan, in the snapshot's order. Repositories are independent once the git
/// walks are done: spread them over the cores, in contiguous runs so the plan keeps the order.
fn plan_repositories(
    inputs: &Inputs,
    in_scope: &[rules::InScope],
    governed: &[Option<usize>],
    git: &[rules::GitOutcomes],
) -> Vec<RepositoryPlan> {
    let usage = rules::usage_by_repository(inputs);
    let jobs: Vec<_> = inputs.snapshot.repositories.iter().zip(governed).collect();
    let run = jobs.len().div_ceil(workers()).max(1);
    std::thread::scope(|threads| {
        let handles: Vec<_> = jobs
            .chunks(run)
            .map(|chunk| {
                let usage = &usage;
                threads.spawn(move || {
                    chunk
                        .iter()
                        .map(|((name, repo), slot)| match slot {
                            Some(slot) => repository::evaluate_repository(
                                name,
                                repo,
                                in_scope[*slot].scope,
                                &git[*slot],
                                usage.get(name.as_str()).map_or(&[][..], Vec::as_slice),
                                inputs,
                            ),
                            None => repository::untouched(name, repo),
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
    })
}

fn compile(patterns: &[String]) -> Vec<regex::Regex> {
    // Validated with the config; an invalid pattern matches nothing.
    patterns
        .iter()
        .filter_map(|p| repository_pattern(p).ok())
        .collect()
}
