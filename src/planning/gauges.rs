//! What an evaluation tells Prometheus: the index's size, the plan's kept and deletable tags,
//! the health of every source, and images workloads reference that the registry lacks.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Mutex,
};

use super::Loaded;
use crate::{
    config::Config,
    metrics::{self, TOP_REPOSITORIES},
    policy::{self, Plan},
};

/// Label values set by the previous evaluation: series that vanish are set to 0, not left stale.
static DELETABLE: Mutex<Option<HashSet<String>>> = Mutex::new(None);
static MISSING: Mutex<Option<HashSet<(String, String)>>> = Mutex::new(None);
static KEPT: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);

/// Every evaluation replaces the whole set of a labelled gauge: remembers `now` as the labels
/// set, and returns those the previous evaluation set that are gone now (to be set to 0).
fn vanished<K: Clone + Eq + std::hash::Hash>(
    previous: &Mutex<Option<HashSet<K>>>,
    now: HashSet<K>,
) -> Vec<K> {
    let mut previous = previous.lock().unwrap_or_else(|e| e.into_inner());
    let gone = previous
        .iter()
        .flatten()
        .filter(|k| !now.contains(*k))
        .cloned()
        .collect();
    *previous = Some(now);
    gone
}

pub fn record(config: &Config, loaded: &Loaded, plan: &Plan) {
    contents(loaded);
    kept_by_rule(plan);
    deletable(plan);
    sources(config, loaded, plan);
    missing(loaded);
}

/// What the index holds.
fn contents(loaded: &Loaded) {
    let snapshot = &loaded.snapshot;
    let (mut tags, mut manifests, mut linked) = (0usize, 0usize, 0usize);
    for repo in snapshot.repositories.values() {
        tags += repo.tags.len();
        manifests += repo.manifests.len();
        linked += repo.tags.iter().filter(|t| repo.tag_linked(t)).count();
    }
    let ratio = if tags == 0 {
        0.0
    } else {
        linked as f64 / tags as f64
    };
    metrics::index_contents(snapshot.repositories.len(), tags, manifests, ratio);
}

/// Kept tags by the first rule keeping each.
fn kept_by_rule(plan: &Plan) {
    let mut kept: BTreeMap<&'static str, usize> = BTreeMap::new();
    for tag in plan.repositories.iter().flat_map(|r| &r.tags) {
        if let Some(first) = tag.outcomes.iter().find(|o| o.keeps) {
            *kept.entry(first.rule).or_default() += 1;
        } else if tag.keep {
            *kept.entry("other").or_default() += 1;
        }
    }
    // A rule that keeps nothing now (a cluster that came back: `kubernetes-unavailable`) reads
    // 0, not its old count.
    for gone in vanished(&KEPT, kept.keys().copied().collect()) {
        kept.insert(gone, 0);
    }
    metrics::kept_by_rule(&kept.into_iter().collect::<Vec<_>>());
}

/// Deletable, for the largest repositories; the rest summed as `other`.
fn deletable(plan: &Plan) {
    let mut by_bytes: Vec<(&str, usize, u64)> = plan
        .repositories
        .iter()
        .filter(|r| r.deleted.tags > 0)
        .map(|r| (r.repository.as_str(), r.deleted.tags, r.deleted.bytes))
        .collect();
    by_bytes.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)));
    let mut now_set = HashSet::new();
    let (mut other_tags, mut other_bytes) = (0usize, 0u64);
    for (i, (repository, tags, bytes)) in by_bytes.into_iter().enumerate() {
        if i < TOP_REPOSITORIES {
            metrics::deletable(repository.to_string(), tags, bytes);
            now_set.insert(repository.to_string());
        } else {
            other_tags += tags;
            other_bytes += bytes;
        }
    }
    metrics::deletable("other".into(), other_tags, other_bytes);
    now_set.insert("other".into());
    for gone in vanished(&DELETABLE, now_set) {
        metrics::deletable(gone, 0, 0);
    }
}

/// Whether each source was read.
fn sources(config: &Config, loaded: &Loaded, plan: &Plan) {
    let now = plan.at.0 as f64 / 1000.0;
    for (name, facts) in &loaded.git {
        metrics::source("git", name.clone(), facts.is_ok(), now);
    }
    let failed = |list: &[String], name: &str| {
        list.iter()
            .any(|f| f == name || f.starts_with(&format!("{name}:")))
    };
    for cluster in &config.retention.kubernetes.clusters {
        let name = &cluster.name;
        let usage = &loaded.usage;
        metrics::source(
            "kubernetes",
            name.clone(),
            !failed(&usage.kubernetes_unavailable, name),
            now,
        );
        metrics::source(
            "helm",
            name.clone(),
            !failed(&usage.helm_unavailable, name),
            now,
        );
    }
}

/// Images in use that the registry lacks, by namespace and workload kind (`ns/Kind/name …`).
fn missing(loaded: &Loaded) {
    let mut missing: BTreeMap<(String, String), usize> = BTreeMap::new();
    for used in policy::missing_images(&loaded.snapshot, &loaded.usage) {
        let mut parts = used.by.split('/');
        let namespace = parts.next().unwrap_or("").to_string();
        let kind = parts.next().unwrap_or("").to_string();
        *missing.entry((namespace, kind)).or_default() += 1;
    }
    for (namespace, kind) in vanished(&MISSING, missing.keys().cloned().collect()) {
        metrics::missing_images(namespace, kind, 0);
    }
    for ((namespace, kind), count) in &missing {
        metrics::missing_images(namespace.clone(), kind.clone(), *count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Outcome, RepositoryPlan, TagPlan, Totals};

    fn plan_keeping_by(rule: &'static str) -> Plan {
        Plan {
            at: crate::index::UnixMillis(1),
            warnings: Vec::new(),
            repositories: vec![RepositoryPlan {
                repository: "team/app".into(),
                scope: Some("all".into()),
                kept: Totals::default(),
                deleted: Totals::default(),
                tags: vec![TagPlan {
                    tag: "v1".into(),
                    digest: "sha256:d".into(),
                    pushed: crate::index::UnixMillis(1),
                    keep: true,
                    reasons: Vec::new(),
                    outcomes: vec![Outcome {
                        rule,
                        keeps: true,
                        detail: String::new(),
                    }],
                }],
                actions: Vec::new(),
            }],
        }
    }

    #[test]
    fn a_rule_that_keeps_nothing_any_more_reads_zero() {
        metrics::install().unwrap();
        let config = crate::config::Config::load_str(
            std::path::Path::new("test.yaml"),
            "upstream:\n  url: http://127.0.0.1:9\n",
            |_| None,
        )
        .unwrap();
        let loaded = Loaded {
            snapshot: Default::default(),
            git: Default::default(),
            usage: Default::default(),
            timings: Vec::new(),
        };
        let series = |rule: &str| format!("{}{{rule=\"{rule}\"}}", metrics::TAGS_KEPT);
        let value = |text: &str, rule: &str| -> Option<String> {
            text.lines()
                .find(|l| l.starts_with(&series(rule)))
                .map(|l| l.rsplit(' ').next().unwrap_or_default().to_string())
        };
        record(&config, &loaded, &plan_keeping_by("kubernetes-unavailable"));
        let first = metrics::render();
        assert_eq!(
            value(&first, "kubernetes-unavailable").as_deref(),
            Some("1"),
            "{first}"
        );
        // The cluster came back: the same tag is kept by another rule.
        record(&config, &loaded, &plan_keeping_by("untracked"));
        let second = metrics::render();
        assert_eq!(
            value(&second, "kubernetes-unavailable").as_deref(),
            Some("0"),
            "{second}"
        );
        assert_eq!(
            value(&second, "untracked").as_deref(),
            Some("1"),
            "{second}"
        );
    }
}
